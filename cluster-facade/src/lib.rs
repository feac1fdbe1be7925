//! # Carbon Grid Cluster
//!
//! The cluster layer of a data grid, with no outside coordination service.
//! Start a [`Cluster`] on every member: members find each other by gossip,
//! agree through raft on a strongly consistent key-value store that every
//! member reads and writes, and each receive a short unique integer id.
//!
//! ```no_run
//! use cluster_facade::{Cluster, ClusterConfig, GridEventKind};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // The first member forms a cluster; the others name it as a seed.
//! let first = Cluster::start(ClusterConfig::default()).await?;
//! let second = Cluster::start(ClusterConfig {
//!     seeds: vec![first.addresses().gossip.to_string()],
//!     ..ClusterConfig::default()
//! })
//! .await?;
//! assert_ne!(first.short_id(), second.short_id());
//!
//! // Every member reads and writes, whoever leads.
//! let store = second.store();
//! store.set("greeting", b"hello".to_vec()).await?;
//! assert_eq!(store.consistent_get("greeting").await?, Some(b"hello".to_vec()));
//!
//! // Grid events: the live members first, then every change.
//! let mut events = first.grid_events();
//! while let Some(event) = events.recv().await {
//!     if event.kind == GridEventKind::Joined {
//!         println!("member {} at {}", event.short_id, event.grid_addr);
//!     }
//! #   break;
//! }
//! second.shutdown().await?; // peers see it leave, not fail
//! first.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## What a member does
//!
//! [`ClusterOf::start`] runs the choreography: identity (a member id created
//! once and kept in the data directory), consensus, membership, the
//! forwarding service; it returns once the member holds its short id.
//! Whichever member leads keeps the cluster in order: new members join raft
//! as nonvoters, are given a short id, and are promoted while there are
//! fewer voters than [`ClusterConfig::num_voters`]; departed members are
//! removed and their short ids freed (at once after a graceful leave, after
//! a reap timeout after a failure). Every decision comes from the pure
//! planners of `cluster_core::plan`.
//!
//! ## Operating a member
//!
//! With [`ClusterConfig::http_port`] a member serves the operators' HTTP API:
//! `/health/live`, `/health/ready` (see [`Readiness`]), `/v1/status`,
//! `/v1/members`, a JSON key-value API under `/v1/kv/{key}` (values in
//! base64, or raw with `?raw`), a watch as newline-delimited JSON under
//! `/v1/watch/{prefix}`, and `/metrics` in Prometheus text (see
//! [`Metrics`]); every error is JSON. The port is bounded by the `http_*`
//! fields of `[limits]` ([`HttpLimits`]), and [`fit_descriptors`] keeps the
//! ports' connection caps under the process's descriptor limit.
//! [`ClusterOf::readiness`], [`ClusterOf::liveness`] and
//! [`ClusterOf::metrics`] give the same to a program that embeds the member.
//!
//! A member whose raft state is corrupt refuses to start
//! ([`cluster_core::Error::CorruptState`]); [`reset_raft_state`] moves that
//! state aside, keeping the member id, and the leader takes the member out of
//! the voters before it votes again (`docs/recovery.md`).
//!
//! ## Features
//!
//! - `gossip-chitchat` (default): membership on chitchat (`cluster-gossip`).
//! - `consensus-openraft` (default): the store on openraft (`cluster-consensus`).
//! - `durable` (default): durable storage in the data directory (redb).
//! - `cli` (default): the `carbon` program.
//!
//! With both backend features, [`Cluster`] names the member type; without
//! them, bring your own backends through [`ClusterOf`].

mod client_feed;
mod client_view;
mod cluster;
mod config;
mod data_dir;
mod descriptors;
mod duration;
mod error;
mod grid;
mod housekeeping;
mod identity;
mod member_store;
mod operated;
mod operator;
mod proof;
#[cfg(feature = "consensus-openraft")]
mod replicas;
mod reset;
mod served;

pub use cluster::{Addresses, ClusterOf};
pub use config::{
    ClusterConfig, ConfigErrors, ConfigProblem, GOSSIP_KEYRING_FILE, GossipKeys, GossipSettings, Limits,
    RaftSettings, Timeouts, decode_gossip_key,
};
pub use descriptors::{DescriptorBudget, RESERVED_DESCRIPTORS, fit_descriptors};
pub use error::ClusterError;
pub use grid::GridEvents;
pub use member_store::MemberStore;
pub use operator::{ConsensusGauges, HttpLimits, Metrics, READY_MAX_APPLY_LAG, Readiness};
#[cfg(feature = "consensus-openraft")]
pub use reset::{ResetReport, reset_raft_state};

pub use cluster_core::{
    self as core, CasOutcome, ConsensusProgress, ConsensusStatus, ConsensusStore, ConsensusStoreExt, Error,
    ErrorKind, GridEventKind, GridMemberEvent, Liveness, MemberId, MemberInfo, Membership, RaftRole, ShortId,
    Watch, WatchEvent,
};
/// Gossip keys and the live keyring ([`ClusterOf::gossip_keyring`]).
#[cfg(feature = "gossip-chitchat")]
pub use cluster_gossip::{GossipKey, KeyringHandle};
pub use cluster_rpc as rpc;
pub use cluster_service::{self as service, Proxy, ServiceClient};

/// A member over the default backends: gossip on chitchat, consensus on openraft.
#[cfg(all(feature = "gossip-chitchat", feature = "consensus-openraft"))]
pub type Cluster = ClusterOf<cluster_gossip::Gossip, cluster_consensus::RaftStore>;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
