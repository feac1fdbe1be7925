//! Mutual TLS (placeholder: being written).
/// placeholder
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
