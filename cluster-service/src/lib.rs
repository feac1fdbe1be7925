//! # cluster-service
//!
//! The forwarding service of Carbon Grid Cluster: every member, voter or
//! nonvoter, offers the whole consensus store, and reaches the leader
//! transparently, also across leader failovers.
//!
//! - [`ServiceServer`] runs on each member's service port and serves its
//!   [`ConsensusStore`](cluster_core::ConsensusStore): local reads, and writes
//!   and consistent reads when the member leads (else it answers
//!   [`Error::NotLeader`](cluster_core::Error::NotLeader) with the leader it knows).
//! - [`Proxy`] is the store handle a member gives its users: it runs writes
//!   and consistent reads locally when the member leads, forwards them to the
//!   leader otherwise, and retries across leader changes until
//!   [`ProxyOptions::op_timeout`].
//! - [`ServiceClient`] reaches a cluster from any program, given some members'
//!   service addresses.
//! - [`protocol`] is what travels: [`Request`] and [`Response`] in core's
//!   [wire frames](cluster_core::wire) (cluster id, version, size limit, request ids).
//!
//! Every write carries a [`ClientRequestId`](cluster_core::ClientRequestId)
//! reused by all its retries, so a write whose answer was lost and that is
//! retried at a new leader is applied at most once and answers as the first
//! attempt did. Client and proxy share one retry loop ([`Backoff`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use cluster_core::ConsensusStore;
//! use cluster_service::{Proxy, ProxyOptions, ServerConfig, ServiceClient, ClientOptions, ServiceServer};
//!
//! async fn serve<S: ConsensusStore>(store: Arc<S>) -> cluster_core::Result<()> {
//!     // On every member: serve the store on the service port…
//!     let server = ServiceServer::bind("127.0.0.1:0", store.clone(), ServerConfig::new("prod")).await?;
//!     // …and hand users a proxy: it works whoever leads.
//!     let kv = Proxy::new(store, ProxyOptions::new("prod"));
//!     assert!(kv.set("greeting", "hello").await?);
//!     assert_eq!(kv.consistent_get("greeting").await?, Some(b"hello".to_vec()));
//!
//!     // From any program: a client with some members' service addresses.
//!     let client = ServiceClient::new([server.local_addr().to_string()], ClientOptions::new("prod"))?;
//!     assert_eq!(client.get("greeting").await?, Some(b"hello".to_vec()));
//!     println!("leader: {:?}", client.status().await?.leader);
//!
//!     server.shutdown().await;
//!     Ok(())
//! }
//! ```

mod client;
mod connection;
pub mod protocol;
mod proxy;
mod retry;
mod server;

pub use client::{ClientOptions, ServiceClient};
pub use protocol::{Request, Response};
pub use proxy::{Proxy, ProxyOptions};
pub use retry::Backoff;
pub use server::{ServerConfig, ServiceServer, execute, members};
