//! # cluster-consensus
//!
//! The strongly consistent key-value store of Carbon Grid Cluster, on
//! [openraft](https://docs.rs/openraft/0.9). [`RaftStore`] implements core's
//! [`ConsensusStore`](cluster_core::ConsensusStore) contract: string keys, byte
//! values, one total order of writes, linearizable reads on the leader,
//! watches by key prefix, short ids chosen inside the state machine, and raft
//! membership control (nonvoters, voters, removal).
//!
//! ```
//! use cluster_consensus::RaftStore;
//! use cluster_core::{ConsensusConfig, ConsensusStore, ConsensusStoreExt, MemberId, RaftTiming};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> cluster_core::Result<()> {
//! // Plain TCP with default limits; `open_with(config, cluster_rpc::Settings)`
//! // (the `ConsensusBackend` factory) sets the raft port's limits and TLS.
//! let store = RaftStore::open(ConsensusConfig {
//!     member_id: MemberId::generate(),
//!     cluster_id: "docs".to_owned(),
//!     raft_listen_addr: "127.0.0.1:0".parse().unwrap(), // 0: any free port
//!     advertise_host: "127.0.0.1".to_owned(),
//!     service_addr: "127.0.0.1:7001".to_owned(),
//!     data_dir: None, // in memory; a directory makes it durable
//!     timing: RaftTiming::default(),
//!     max_frame_len: cluster_core::wire::DEFAULT_MAX_FRAME_LEN,
//!     rpc_timeout: Duration::from_secs(1),
//!     limits: Default::default(), // quotas: key, value and store bytes
//! })
//! .await?;
//! store.bootstrap().await?; // a one-voter cluster; others join with `add_nonvoter` + `promote`
//!
//! assert!(store.set("greeting", b"hello".to_vec()).await?); // created
//! assert_eq!(store.consistent_get("greeting").await?, Some(b"hello".to_vec()));
//! assert_eq!(store.get_prefix("greet")?.len(), 1);
//! let me = store.member_id();
//! assert_eq!(store.allocate_short_id(me).await?.get(), 1);
//! store.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## How it is built
//!
//! - `typecfg` (private; [`TypeConfig`], [`Raft`] and the types a caller of
//!   [`RaftStore::raft`] meets are re-exported): the openraft types. The raft
//!   node id is the `MemberId`, the node data is core's `Endpoints` (raft and
//!   service addresses).
//! - `state_machine`: the ordered map with its revision, the short-id table,
//!   the table of answered request ids (a retried write is applied at most
//!   once, FIFO-bounded to `REMEMBERED_REQUESTS`), the feed of
//!   watchers, and snapshots that hold all of it; [`snapshot_data`] holds a
//!   snapshot's bytes and checks a received one before raft installs it.
//! - `log_store`: the raft log in memory, written through by one writer
//!   thread that group-commits to its own segmented write-ahead log (one
//!   `fdatasync` per batch; vote, purge point and snapshot in redb) (feature `durable`, on by default). The
//!   state machine reloads from the persisted snapshot on open; raft then
//!   re-applies the committed log after it.
//! - `network`: raft RPC over TCP with core's wire codec (cluster id and
//!   version checked, bounded frames), one multiplexed connection per peer;
//!   `network::guard` checks every request before openraft sees it
//!   (bounded terms and indexes, the sender's membership, snapshot offsets
//!   and size).
//! - [`quota`]: the key, value and store quotas, checked before a write is
//!   proposed, and the constant bounds checked in apply.
//! - writes are group-committed: concurrent writes on the leader share one
//!   log entry (one fsync per member), answered one by one.
//! - [`store`]: [`RaftStore`], the handle, opened through core's
//!   `ConsensusBackend` with its network settings (`cluster_rpc::Settings`)
//!   in named steps (`store::open`); an internal module maps openraft's errors to
//!   `cluster_core::Error` variants a caller can act on (`NotLeader` with the
//!   leader's service address, `Timeout`, `Unreachable`, `ShuttingDown`,
//!   `MembershipChange`, `Storage`).
//!
//! - [`recovery`]: the raft-safe reset of a member whose raft state is
//!   corrupt: the state moved aside, votes refused until the leader has taken
//!   the member out of the voters, and why that is safe.
//!
//! Opening durable storage checks its integrity: a corrupt write-ahead log
//! record (not a torn tail), a snapshot that fails its checksum or a redb
//! file that does not open fails with [`cluster_core::Error::CorruptState`],
//! naming the file and what to do.
//!
//! Both storages pass openraft's own storage suite (`src/storage_suite.rs`).

mod batcher;
mod delete_prefix;
mod encoding;
mod error;
pub(crate) mod log_store;
pub(crate) mod network;
pub mod quota;
pub mod recovery;
pub mod runtime;
pub mod snapshot_data;
// `KvState` is `pub` for the `testsuite` re-export below; without that
// feature nothing outside the crate reaches it, and that is intended.
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))]
pub(crate) mod state_machine;
#[cfg(test)]
mod storage_suite;
pub mod store;
mod typecfg;

#[cfg(feature = "durable")]
pub use log_store::durable::WAL_DIR;
pub use store::RaftStore;
// The raft types a caller of `RaftStore::raft()` meets (its metrics carry log
// ids and votes); the rest of the type configuration stays inside.
pub use typecfg::{LogId, Raft, TypeConfig, Vote, WriteBatch, WriteResponse};

/// Internals this crate's own tests need to write raft frames raw (feature
/// `testsuite`, which only the crate's dev-dependency on itself turns on).
/// Not API: nothing here is stable.
#[cfg(feature = "testsuite")]
#[doc(hidden)]
pub mod testsuite {
    pub use crate::network::guard::{GuardError, TERM_STEP};
    pub use crate::network::{RaftRequest, RaftRpc, RaftRpcReply};
    pub use crate::state_machine::KvState;
}
