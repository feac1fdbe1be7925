//! The consensus store contract: the strongly consistent key-value store
//! that every member reads and writes. `cluster-consensus` implements it on
//! openraft; `cluster-service` forwards it to the leader.
//!
//! By concern: the operations and their answers (`op`), the status types
//! (`status`), the configuration a backend opens with (`config`), and the
//! contract itself here: [`ConsensusStore`] is what an open store does,
//! [`ConsensusBackend`] how one is opened, with the settings of its network
//! as a type of its own (core knows no network, so it never carries them).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::id::{MemberId, ShortId};
pub use crate::watch_log::{Watch, WatchLog};

mod config;
mod op;
mod status;

pub use config::{ConsensusConfig, ConsensusLimits, RaftTiming};
pub use op::{
    CasOutcome, Entries, KeyMeta, WatchEvent, WriteOp, WriteOutcome, WriteRequest, Writer, check_key,
    entry_bytes,
};
pub use status::{ConsensusProgress, ConsensusStatus, Endpoints, Liveness, MemberStatus};

/// A strongly consistent key-value store with raft membership control.
///
/// Guarantees an implementation gives:
/// - writes ([`write`](ConsensusStore::write)) are applied in one total order
///   on every member, and acknowledged only once committed; on a member that
///   does not lead they fail fast with [`Error::NotLeader`] and a hint;
/// - a write with a `request_id` is applied at most once, however often it is
///   retried, and every retry gets the first answer;
/// - [`consistent_get`](ConsensusStore::consistent_get) is linearizable: the
///   leader confirms its leadership with a quorum first (read index);
/// - [`get`](ConsensusStore::get) and [`get_prefix`](ConsensusStore::get_prefix)
///   read this member's applied state: fast, possibly stale, never torn;
/// - [`watch`](ConsensusStore::watch) sees every applied change under its
///   prefix, in revision order, on every member;
/// - short ids: the lowest free id is chosen inside the state machine, so two
///   members never hold the same id, and a member that holds one gets it back;
/// - with a data directory, nothing acknowledged is lost across a crash.
pub trait ConsensusStore: Send + Sync + Sized + 'static {
    /// This member's id.
    fn member_id(&self) -> MemberId;

    /// The raft RPC address bound (the real port when 0 was asked).
    fn raft_addr(&self) -> SocketAddr;

    /// What this member knows about consensus now.
    fn status(&self) -> ConsensusStatus;

    /// Every change of [`status`](ConsensusStore::status): leader, term,
    /// membership, applied index.
    fn status_changes(&self) -> watch::Receiver<ConsensusStatus>;

    /// True if this member was part of a cluster before (state on disk).
    fn is_initialized(&self) -> impl Future<Output = Result<bool>> + Send;

    /// Forms a new cluster with this member as its only voter. Harmless on a
    /// member that is already part of a cluster.
    fn bootstrap(&self) -> impl Future<Output = Result<()>> + Send;

    /// Local read of the applied state (may be stale).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Local read of `key` with its revisions (may be stale).
    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>>;

    /// Linearizable read of `key` with its revisions; on the leader only.
    fn consistent_get_with_meta(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Vec<u8>, KeyMeta)>>> + Send;

    /// Local read of every key starting with `prefix`, in key order.
    fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Like [`get_prefix`](ConsensusStore::get_prefix), with the revision
    /// of the state it read: the entries are exactly the store's at that
    /// revision. A backend without revisions answers 0.
    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        Ok((0, self.get_prefix(prefix)?))
    }

    /// The revision of this member's applied state (what its local reads
    /// show). The default reads it with
    /// [`get_prefix_with_revision`](Self::get_prefix_with_revision) of a
    /// prefix keys seldom start with.
    fn applied_revision(&self) -> Result<u64> {
        Ok(self.get_prefix_with_revision("\u{0}")?.0)
    }

    /// How far along consensus is here (commit index, snapshot, quorum
    /// contact); a backend that does not know answers the default.
    fn progress(&self) -> impl Future<Output = ConsensusProgress> + Send {
        std::future::ready(ConsensusProgress::default())
    }

    /// The short ids held now, by this member's applied state.
    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>>;

    /// Linearizable read; on the leader only.
    fn consistent_get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Applies a write through the log; on the leader only.
    fn write(&self, request: WriteRequest) -> impl Future<Output = Result<WriteOutcome>> + Send;

    /// Watches every applied change under `prefix`.
    fn watch(&self, prefix: &str) -> Watch;

    /// Watches every change under `prefix` of revision `from_revision` or
    /// later (`None`: from now), replaying those already applied first.
    /// [`Error::Compacted`] when this member no longer remembers them; a
    /// backend without a history can only watch from its next revision on.
    fn watch_from(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        let Some(requested) = from_revision else { return Ok(self.watch(prefix)) };
        // Subscribed before the revision is read: every change after that
        // revision reaches the watch.
        let mut watch = self.watch(prefix);
        let revision = self.applied_revision()?;
        if requested <= revision {
            return Err(Error::Compacted { requested, oldest: revision + 1 });
        }
        watch.from_revision = requested;
        Ok(watch)
    }

    /// Told by this member's own router that the leader, at service address
    /// `leader_service_addr`, answered a write or a linearizable read
    /// forwarded from here: the member's later local reads must not miss
    /// what that answer reflected (see [`read_barrier`](Self::read_barrier)).
    /// The default does nothing.
    fn answered_by_leader(&self, _leader_service_addr: &str) {}

    /// Waits, before a local read of `scope` made through this member's own
    /// router, until this member's local state holds at least what every
    /// answer reported by [`answered_by_leader`](Self::answered_by_leader)
    /// reflected: a member's local reads then never miss its own
    /// acknowledged writes nor what its linearizable reads returned. For a
    /// scope read elsewhere ([`remote_reads`](Self::remote_reads)) it only
    /// learns that floor, which the next `remote_reads` then names. A
    /// store that cannot get there in time answers an error the router
    /// retries. The default waits for nothing.
    fn read_barrier(&self, _scope: KeyScope<'_>) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Where a read of `scope` is served when this member's own state does
    /// not hold it: a client member holds only the cluster's records (under
    /// `carbon-grid/`) and reads every other key at a replica. `None` (the
    /// default): this member's state holds it. The router sends such a read
    /// to the replicas named, no older than the revision named, and reports
    /// the revision it was served at with
    /// [`observed_revision`](Self::observed_revision).
    fn remote_reads(&self, _scope: KeyScope<'_>) -> Option<RemoteReads> {
        None
    }

    /// A read served elsewhere ([`remote_reads`](Self::remote_reads)) showed
    /// the store at `revision`: this member's later reads must show it at
    /// least, so they never go back. The default does nothing.
    fn observed_revision(&self, _revision: u64) {}

    /// Adds a member as nonvoter and waits until it caught up with the log; on the leader only.
    fn add_nonvoter(&self, member: MemberId, endpoints: Endpoints)
    -> impl Future<Output = Result<()>> + Send;

    /// Makes a nonvoter a voter; on the leader only.
    fn promote(&self, member: MemberId) -> impl Future<Output = Result<()>> + Send;

    /// Makes a voter a nonvoter; on the leader only.
    fn demote(&self, member: MemberId) -> impl Future<Output = Result<()>> + Send;

    /// Removes a member from raft (voter or nonvoter); on the leader only.
    fn remove(&self, member: MemberId) -> impl Future<Output = Result<()>> + Send;

    /// Changes where a member of raft is reached — it restarted on other
    /// ports or another address — keeping its role; on the leader only.
    fn set_endpoints(
        &self,
        member: MemberId,
        endpoints: Endpoints,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Stops raft and closes storage.
    fn shutdown(&self) -> impl Future<Output = Result<()>> + Send;
}

/// The keys a read covers: one key, or every key under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope<'a> {
    /// One key.
    Key(&'a str),
    /// Every key under a prefix (`""`: every key).
    Prefix(&'a str),
}

impl KeyScope<'_> {
    /// True if every key of the scope is under `prefix`.
    pub fn is_within(&self, prefix: &str) -> bool {
        match self {
            KeyScope::Key(key) => key.starts_with(prefix),
            KeyScope::Prefix(p) => p.starts_with(prefix),
        }
    }
}

/// Where a member's read is served when its own state does not hold it
/// ([`ConsensusStore::remote_reads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReads {
    /// The service addresses of the members that hold it, in the order to try them.
    pub replicas: Vec<String>,
    /// The revision the answer must show at least: what this member's
    /// reads showed or its leader answers reflected before.
    pub min_revision: u64,
}

/// How a consensus backend is opened: the typed factory of its store.
///
/// What the store needs beyond [`ConsensusConfig`] to reach the other
/// members is the backend's own type, [`Network`](ConsensusBackend::Network):
/// the raft store takes the RPC layer's limits and TLS (`cluster_rpc::Settings`),
/// an in-memory fake takes nothing. Whoever opens a store names that type, so
/// the settings arrive as they were built: core carries no untyped value, and
/// a backend cannot be handed settings it does not understand.
pub trait ConsensusBackend: ConsensusStore {
    /// What the backend's network needs (limits, security); its `Default`
    /// is the backend's defaults (plain TCP, default limits).
    type Network: Clone + Default + Send + Sync + 'static;

    /// Opens (or reopens from its data directory) this member's store and
    /// starts its network (raft RPC). It does not join or form a cluster by
    /// itself.
    fn open_with(
        config: ConsensusConfig,
        network: Self::Network,
    ) -> impl Future<Output = Result<Self>> + Send;
}

/// Typed shortcuts over [`ConsensusStore::write`], for every store.
pub trait ConsensusStoreExt: ConsensusStore {
    /// Sets `key`; true if it was created.
    fn set(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<bool>> + Send {
        let req = WriteRequest::set(key, value);
        async move { self.write(req).await?.into_created() }
    }

    /// Deletes `key`; true if it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        let req = WriteRequest::delete(key);
        async move { self.write(req).await?.into_existed() }
    }

    /// Compare-and-set; see [`WriteOp::CompareAndSet`].
    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<CasOutcome>> + Send {
        let req = WriteRequest::compare_and_set(key, expected, new);
        async move { self.write(req).await?.into_cas() }
    }

    /// The short id of `member`, allocated if it holds none.
    fn allocate_short_id(&self, member: MemberId) -> impl Future<Output = Result<ShortId>> + Send {
        let req = WriteRequest::new(WriteOp::AllocateShortId { member });
        async move { self.write(req).await?.into_short_id() }
    }

    /// Frees the short id of `member`; true if it held one.
    fn release_short_id(&self, member: MemberId) -> impl Future<Output = Result<bool>> + Send {
        let req = WriteRequest::new(WriteOp::ReleaseShortId { member });
        async move { self.write(req).await?.into_released() }
    }
}

impl<T: ConsensusStore> ConsensusStoreExt for T {}

/// The error for an answer that does not match its operation.
pub fn unexpected(op: &str, outcome: &WriteOutcome) -> Error {
    Error::Internal(format!("{op} was answered with {outcome:?}"))
}
