//! The test kit above `cluster-core`: what the tests of more than one crate
//! need once real backends are involved.
//!
//! `cluster-core`'s `testsuite` feature stays the kit of the lowest layer
//! (fakes of the backend contracts, contract suites, [`wait_until`], test
//! configurations, hostile connections); this crate re-exports it as
//! [`testsuite`] so that a test has one import, and adds:
//!
//! - [`local`]: the in-process cluster — raft members in memory or durable, the
//!   service in front of each, optionally gossip on chitchat's channel
//!   transport ([`LocalCluster`]);
//! - [`agent`]: the one agent-process harness — real `carbon agent` processes,
//!   their data directories, ports, TLS flags, start and ready lines, signals
//!   and restarts ([`Agent`]);
//! - [`rpc`]: a test handler of the RPC layer and its client;
//! - [`gossip`]: fast gossip settings, local gossip clusters, event helpers and
//!   hand-made chitchat datagrams ([`gossip::forge`]);
//! - [`http`]: raw HTTP/1.1 over any stream;
//! - [`fuzz`]: the fuzz drivers of the raft and service ports.
//!
//! It is a dev-dependency only (`publish = false`). Crates below it in the
//! layers (`cluster-rpc`, `cluster-consensus`, …) use it from their
//! integration tests (`tests/*.rs`), never from unit tests in `src/`: cargo
//! builds such a cycle as two crates only for unit tests.
//!
//! ```no_run
//! use cluster_core::ConsensusStore;
//! use cluster_testkit::{DEADLINE, LocalCluster, wait_until};
//!
//! # async fn example() {
//! let cluster = LocalCluster::start(3, 0).await;
//! let leader = cluster.leader_index().await;
//! cluster.members[leader].proxy.set("k", "v").await.expect("a write");
//! let follower = &cluster.members[cluster.follower().await];
//! wait_until(DEADLINE, "the write on a follower", || async {
//!     follower.store.get("k").ok().flatten().is_some()
//! })
//! .await;
//! cluster.shutdown().await;
//! # }
//! ```

pub mod agent;
pub mod fuzz;
pub mod gossip;
pub mod http;
pub mod local;
pub mod rpc;

pub use agent::{Agent, AgentSpec, StartLine, carbon_binary, tls_flags};
pub use cluster_core::testsuite;
pub use cluster_core::testsuite::config::raft_timing;
pub use cluster_core::testsuite::{DEADLINE, holds_within, init_tracing, wait_until, wait_until_blocking};
pub use local::{Builder, LOCAL_CLUSTER_ID, LocalCluster, Member, member_config, router_options};
