//! # cluster-rpc
//!
//! The one RPC layer under every TCP protocol of Carbon Grid Cluster (raft RPC
//! and the forwarding service).
//!
//! - [`tls`]: mutual TLS with rustls: the cluster's certificate authority,
//!   member and client certificates (the [`Role`] is written in the
//!   certificate), reloading from disk without a restart.

pub mod tls;

pub use tls::{Role, Tls, TlsError, TlsFiles};
