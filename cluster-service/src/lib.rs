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
//!   Its admin requests (liveness, keyring) are answered by the member's
//!   [`MemberAdmin`](cluster_core::MemberAdmin), export and force leave on
//!   the store (module `admin`), and what it executes for a caller is timed
//!   for a [`ServiceObserver`](cluster_core::ServiceObserver).
//! - [`Router`] is the one leader-routed key-value store, with one options
//!   struct ([`RouterOptions`]) and one retry loop, in two forms:
//!   [`Proxy`] ([`Router::local`]), the store handle a member gives its
//!   users, runs writes and consistent reads on the member's own store when
//!   it leads (a direct call, no wire request) and forwards them to the
//!   leader otherwise; [`ServiceClient`] ([`Router::remote`]) reaches a
//!   cluster from any program, given some members' service addresses. Both
//!   retry across leader changes until [`RouterOptions::op_timeout`], and
//!   offer the same reads (`get`, `get_prefix`, `members`, `status`, …),
//!   routed by their target.
//! - One dispatch ([`execute`]) runs a [`Request`] against a store: the
//!   server runs what it is sent with it, a [`Proxy`] what its own member
//!   serves.
//! - Reads a member does not hold (a client member's user keys:
//!   [`ConsensusStore::remote_reads`](cluster_core::ConsensusStore::remote_reads))
//!   its [`Proxy`] sends to a replica as a [`Request::ReadAt`]: served once
//!   the replica's state reached the revision the member's earlier reads
//!   showed, answered with the revision it was served at. The member's
//!   server forwards such reads and watches for other programs
//!   ([`ServerConfig::forward`]).
//! - Watches: [`Router::watch`] streams the changes under a prefix from a
//!   revision on; a client's watch (a streamed [`Request::Watch`]) goes on
//!   at another member when its member dies, from the last revision seen + 1.
//!   A revision a member no longer remembers is refused with
//!   [`Error::Compacted`](cluster_core::Error::Compacted), never skipped.
//! - [`protocol`] is what travels: [`Request`] and [`Response`] in core's
//!   [wire frames](cluster_core::wire) (cluster id, version, size limit, request ids).
//!
//! Every write carries a [`ClientRequestId`](cluster_core::ClientRequestId)
//! reused by all its retries, so a write whose answer was lost and that is
//! retried at a new leader is applied at most once and answers as the first
//! attempt did. The errors are core's [`Error`](cluster_core::Error), as
//! members answer them.
//!
//! Bad input never panics a server: a frame it cannot read is answered with a
//! typed error under its request id (a foreign cluster id, another protocol
//! version, an unknown request kind; the connection goes on), or under
//! [`protocol::CONNECTION_ERROR_ID`] before the connection is closed (garbage,
//! a frame shorter than its header, a length over the limit). Connections are the RPC layer's
//! (`cluster-rpc`): bounded in number (in total, per address, for clients),
//! in requests in flight, frame size and time ([`ServerConfig::limits`]), so a
//! client that stops reading or trickles bytes cannot make the server grow.
//!
//! A one-member cluster (its store from `cluster-consensus`), served and used:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use cluster_consensus::RaftStore;
//! use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
//! use cluster_core::{ConsensusConfig, ConsensusStore, Error, MemberId, RaftTiming};
//! use cluster_service::{Router, RouterOptions, ServerConfig, ServiceServer};
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cluster_core::Result<()> {
//! // Bind the service port first: the member's raft endpoints carry its address.
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let store = Arc::new(
//!     RaftStore::open(ConsensusConfig {
//!         member_id: MemberId::generate(),
//!         cluster_id: "demo".into(),
//!         raft_listen_addr: "127.0.0.1:0".parse().expect("an address"),
//!         advertise_host: "127.0.0.1".into(),
//!         service_addr: listener.local_addr()?.to_string(),
//!         data_dir: None,
//!         timing: RaftTiming::default(),
//!         max_frame_len: DEFAULT_MAX_FRAME_LEN,
//!         rpc_timeout: Duration::from_secs(1),
//!         limits: Default::default(),
//!     })
//!     .await?,
//! );
//! store.bootstrap().await?;
//!
//! // Every member serves its store on the service port…
//! let server = ServiceServer::serve(listener, store.clone(), ServerConfig::new("demo"))?;
//!
//! // …and gives its users a proxy: it works whoever leads, and waits out elections.
//! let kv = Router::local(store.clone(), RouterOptions::new("demo"));
//! assert!(kv.set("greeting", "hello").await?);
//! assert_eq!(kv.consistent_get("greeting").await?, Some(b"hello".to_vec()));
//! assert!(matches!(kv.set("carbon-grid/x", "no").await, Err(Error::Forbidden(_))));
//!
//! // Any program reaches the cluster with some members' service addresses.
//! let client = Router::remote([server.local_addr().to_string()], RouterOptions::new("demo"))?;
//! assert!(!client.set("greeting", "hi").await?);
//! assert_eq!(client.consistent_get("greeting").await?, Some(b"hi".to_vec()));
//! assert_eq!(client.status().await?.leader, Some(store.member_id()));
//!
//! server.shutdown().await;
//! store.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod admin;
pub mod authz;
mod dispatch;
mod local;
pub mod protocol;
mod remote;
mod retry;
mod router;
mod server;

pub use dispatch::{execute, members};
pub use protocol::{Request, Response};
pub use retry::Backoff;
pub use router::{Local, Proxy, Remote, Router, RouterOptions, ServiceClient, Target};
pub use server::{ServerConfig, ServiceServer};
