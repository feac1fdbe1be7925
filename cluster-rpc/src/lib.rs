//! # cluster-rpc
//!
//! The one RPC layer under every TCP protocol of Carbon Grid Cluster: raft RPC
//! (`cluster-consensus`) and the forwarding service (`cluster-service`) are
//! thin adapters over it. It owns the connection handling that outsiders can
//! reach, so the limits are written once:
//!
//! - [`serve`] runs a [`Handler`] on a listener. It admits connections within
//!   [`Limits`]: unauthenticated ones in a small handshake budget of their
//!   own, authenticated ones in total, per peer address, a smaller budget for
//!   callers with client certificates, and a pool of their own for members,
//!   so members' own traffic always finds a place. It closes handshakes, idle
//!   connections and frames that take too long, reads into buffers that grow
//!   only as bytes arrive (large frames only within a per-server byte
//!   budget), counts queued answers in bytes per connection and per server,
//!   and runs at most [`Limits::max_in_flight_per_connection`] requests per
//!   connection, each holding its place until its answer is written: past
//!   that, and while the peer does not read its answers, it stops reading.
//!   A handler answers once ([`Reply::One`]) or with a stream
//!   ([`Reply::Stream`]) that the caller can cancel. Refused frames (another
//!   cluster, another version, malformed) get a typed error answer, never
//!   naming this cluster's id; repeated bad input from one source is logged
//!   once per 10 s with a count ([`RateLimitedLog`]).
//! - [`Client`] calls servers: one multiplexed connection per address,
//!   request ids, a deadline per call, reconnection after a failure,
//!   [`Client::call`] and [`Client::stream`]; errors are [`RpcError`].
//! - [`Security`] is plain TCP or mutual TLS ([`tls`]); the server hands the
//!   handler the caller's [`Role`] from its certificate ([`Caller`]).
//!
//! Frames are core's ([`cluster_core::wire`]): a length, magic, version,
//! request id, cluster id and a bincode payload; the magic `CGCS` marks the
//! parts of a streamed answer.
//!
//! A server and a client over plain TCP:
//!
//! ```
//! use std::time::Duration;
//!
//! use cluster_rpc::{Answer, Caller, Client, ClientConfig, Handler, HandlerFuture, Reply, ServerConfig, serve};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Echo { Text(String), Refused(cluster_core::Error) }
//!
//! impl Answer for Echo {
//!     fn refused(error: cluster_core::Error) -> Self { Echo::Refused(error) }
//!     fn into_refusal(self) -> Result<cluster_core::Error, Self> {
//!         match self { Echo::Refused(e) => Ok(e), other => Err(other) }
//!     }
//! }
//!
//! struct Upper;
//!
//! impl Handler for Upper {
//!     type Request = String;
//!     type Answer = Echo;
//!     fn handle(&self, _caller: Caller, request: String) -> HandlerFuture<Echo> {
//!         Box::pin(async move { Reply::One(Echo::Text(request.to_uppercase())) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cluster_rpc::RpcError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
//! let config = ServerConfig { cluster_id: "demo".into(), ..ServerConfig::default() };
//! let server = serve(listener, Upper, config)?;
//!
//! let client: Client<String, Echo> =
//!     Client::new(ClientConfig { cluster_id: "demo".into(), ..ClientConfig::default() });
//! let addr = server.local_addr().to_string();
//! let answer = client.call(&addr, &"hello".to_owned(), Duration::from_secs(5)).await?;
//! assert!(matches!(answer, Echo::Text(t) if t == "HELLO"));
//!
//! // Another cluster's client is refused with a typed error.
//! let stranger: Client<String, Echo> =
//!     Client::new(ClientConfig { cluster_id: "other".into(), ..ClientConfig::default() });
//! let refused = stranger.call(&addr, &"hi".to_owned(), Duration::from_secs(5)).await?;
//! assert!(matches!(refused, Echo::Refused(cluster_core::Error::ClusterMismatch { .. })));
//!
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod budget;
mod client;
mod error;
mod frame;
mod limits;
mod log_limit;
mod security;
mod server;
pub mod stats;
pub mod tls;

pub use client::{AnswerStream, Client, ClientConfig};
pub use error::{RpcError, chain};
pub use frame::Answer;
pub use limits::{Limits, MAX_FRAME_LEN_CEILING};
pub use log_limit::RateLimitedLog;
pub use security::Security;
pub use server::{Access, Caller, Handler, HandlerFuture, Reply, Server, ServerConfig, serve};
pub use stats::{RpcStats, stats};
pub use tls::{Role, Tls, TlsError, TlsFiles, peer_role};

/// What a backend needs to run its servers and clients: the limits and the
/// security. The raft store takes it as its typed network settings
/// (`cluster_core::ConsensusBackend::Network`) when it is opened.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Every bound.
    pub limits: Limits,
    /// Plain TCP or mutual TLS.
    pub security: Security,
}
