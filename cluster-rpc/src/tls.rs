//! Mutual TLS (placeholder: being written).
/// placeholder
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// member
    Member,
    /// client
    Client,
}
/// placeholder
pub struct Tls;
/// placeholder
pub struct TlsFiles;
/// placeholder
#[derive(Debug, thiserror::Error)]
#[error("tls")]
pub struct TlsError;
