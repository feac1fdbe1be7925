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
//! - [`net`] is the network seam under both: a [`Network`](net::Network)
//!   connects and binds, a [`Listener`] accepts byte streams. [`Net`] (in
//!   [`Settings::network`] and [`ClientConfig::network`]) is real TCP by
//!   default; [`serve`] takes any [`Listener`], a `TcpListener` included.
//!   TLS wraps whatever stream the network gives.
//! - `memnet` (feature `memnet`) is a network in memory for tests and
//!   simulation: hosts are addresses, and every link between two has its
//!   delay, jitter, loss, and can be cut one way or both, with every random
//!   choice drawn from one seed and time from tokio (paused time works).
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
//!
//! The same server and client on the in-memory network (feature `memnet`),
//! two hosts with 50 ms between them, under paused time:
//!
//! ```
//! # #[cfg(feature = "memnet")]
//! # mod memnet_example {
//! # use std::time::Duration;
//! # use cluster_rpc::{Answer, Caller, Client, ClientConfig, Handler, HandlerFuture, Reply, ServerConfig, serve};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)]
//! # enum Echo { Text(String), Refused(cluster_core::Error) }
//! # impl Answer for Echo {
//! #     fn refused(error: cluster_core::Error) -> Self { Echo::Refused(error) }
//! #     fn into_refusal(self) -> Result<cluster_core::Error, Self> {
//! #         match self { Echo::Refused(e) => Ok(e), other => Err(other) }
//! #     }
//! # }
//! # struct Upper;
//! # impl Handler for Upper {
//! #     type Request = String;
//! #     type Answer = Echo;
//! #     fn handle(&self, _caller: Caller, request: String) -> HandlerFuture<Echo> {
//! #         Box::pin(async move { Reply::One(Echo::Text(request.to_uppercase())) })
//! #     }
//! # }
//! use cluster_rpc::memnet::{Link, MemNetwork};
//!
//! # pub async fn run() -> Result<(), cluster_rpc::RpcError> {
//! let network = MemNetwork::new(1); // the seed of every random choice
//! network.set_default_link(Link { delay: Duration::from_millis(50), ..Link::default() });
//! let (a, b) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
//!
//! let listener = network.host(a).bind("10.0.0.1:7000".parse().unwrap()).await.expect("a port");
//! let server = serve(listener, Upper, ServerConfig { cluster_id: "demo".into(), ..ServerConfig::default() })?;
//! let client: Client<String, Echo> = Client::new(ClientConfig {
//!     cluster_id: "demo".into(),
//!     network: network.host(b),
//!     ..ClientConfig::default()
//! });
//! let started = tokio::time::Instant::now();
//! let answer = client.call("10.0.0.1:7000", &"hello".to_owned(), Duration::from_secs(5)).await?;
//! assert!(matches!(answer, Echo::Text(t) if t == "HELLO"));
//! // A connect (there and back), the request, the answer: 4 × 50 ms of virtual time.
//! assert!(started.elapsed() >= Duration::from_millis(200));
//!
//! // Partitioned: the call ends at its deadline with a typed error.
//! network.partition(a, b);
//! let cut = client.call("10.0.0.1:7000", &"hello".to_owned(), Duration::from_secs(1)).await;
//! assert!(matches!(cut, Err(cluster_rpc::RpcError::Timeout { .. })));
//! network.heal(a, b);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! # }
//! # #[cfg(feature = "memnet")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), cluster_rpc::RpcError> { memnet_example::run().await }
//! # #[cfg(not(feature = "memnet"))]
//! # fn main() {}
//! ```

mod budget;
mod client;
mod error;
mod frame;
mod limits;
mod log_limit;
#[cfg(feature = "memnet")]
pub mod memnet;
pub mod net;
mod security;
mod server;
pub mod stats;
pub mod tls;

pub use client::{AnswerStream, Client, ClientConfig};
pub use error::{RpcError, chain};
pub use frame::Answer;
pub use limits::{Limits, MAX_FRAME_LEN_CEILING};
pub use log_limit::RateLimitedLog;
pub use net::{Listener, Net};
pub use security::Security;
pub use server::{Access, Caller, Handler, HandlerFuture, Reply, Server, ServerConfig, serve};
pub use stats::{RpcStats, stats};
pub use tls::{Role, Tls, TlsError, TlsFiles, peer_role};

/// What a backend needs to run its servers and clients: the limits, the
/// security and the network. The raft store takes it as its typed network
/// settings (`cluster_core::ConsensusBackend::Network`) when it is opened.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Every bound.
    pub limits: Limits,
    /// Plain TCP or mutual TLS.
    pub security: Security,
    /// The network servers listen on and clients connect through: real
    /// TCP by default.
    pub network: Net,
}
