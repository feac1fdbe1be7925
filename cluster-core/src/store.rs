//! The consensus store contract: the strongly consistent key-value store
//! that every member reads and writes. `cluster-consensus` implements it on
//! openraft; `cluster-service` forwards it to the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::id::{ClientRequestId, MemberId, ShortId};
use crate::role::RaftRole;
pub use crate::watch_log::{Watch, WatchLog};

/// A change to the store, applied through the raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WriteOp {
    /// Set `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// If `key` holds `expected` (`None`: is absent), set it to `new`
    /// (`None`: delete it).
    CompareAndSet {
        /// The key.
        key: String,
        /// The value it must hold, or `None` for absent.
        expected: Option<Vec<u8>>,
        /// The value to store, or `None` to delete.
        new: Option<Vec<u8>>,
    },
    /// Give `member` the lowest free short id, or the one it already holds.
    AllocateShortId {
        /// The member.
        member: MemberId,
    },
    /// Free the short id of `member`.
    ReleaseShortId {
        /// The member.
        member: MemberId,
    },
    /// Raise the store's revision to `revision` if it is lower, changing no
    /// key: a store restored from a backup goes on from the backup's
    /// revision, so watch positions saved against the old cluster keep their
    /// meaning (`carbon snapshot restore`).
    AdvanceRevision {
        /// The revision the store should at least be at.
        revision: u64,
    },
}

impl WriteOp {
    /// The user key this operation changes, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            WriteOp::Set { key, .. } | WriteOp::Delete { key } | WriteOp::CompareAndSet { key, .. } => {
                Some(key)
            }
            WriteOp::AllocateShortId { .. }
            | WriteOp::ReleaseShortId { .. }
            | WriteOp::AdvanceRevision { .. } => None,
        }
    }
}

/// A write with the id that makes its retries idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// What to change.
    pub op: WriteOp,
    /// Retries with the same id are applied at most once.
    pub request_id: Option<ClientRequestId>,
}

impl WriteRequest {
    /// A write with a fresh request id.
    pub fn new(op: WriteOp) -> Self {
        WriteRequest { op, request_id: Some(ClientRequestId::generate()) }
    }

    /// Set `key` to `value`.
    pub fn set(key: &str, value: impl Into<Vec<u8>>) -> Self {
        WriteRequest::new(WriteOp::Set { key: key.to_owned(), value: value.into() })
    }

    /// Delete `key`.
    pub fn delete(key: &str) -> Self {
        WriteRequest::new(WriteOp::Delete { key: key.to_owned() })
    }

    /// Compare-and-set; see [`WriteOp::CompareAndSet`].
    pub fn compare_and_set(key: &str, expected: Option<Vec<u8>>, new: Option<Vec<u8>>) -> Self {
        WriteRequest::new(WriteOp::CompareAndSet { key: key.to_owned(), expected, new })
    }
}

/// The answer of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasOutcome {
    /// Whether the value matched and was replaced.
    pub succeeded: bool,
    /// The value after the operation.
    pub current: Option<Vec<u8>>,
}

/// The answer of a [`WriteOp`], one variant per operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// Answer to `Set`: whether the key was created (did not exist before).
    Set {
        /// True if the key did not exist before.
        created: bool,
    },
    /// Answer to `Delete`: whether the key existed.
    Delete {
        /// True if the key existed.
        existed: bool,
    },
    /// Answer to `CompareAndSet`.
    CompareAndSet(CasOutcome),
    /// Answer to `AllocateShortId`.
    ShortId(ShortId),
    /// Answer to `ReleaseShortId`: whether the member held one.
    Released {
        /// True if the member held a short id.
        held: bool,
    },
    /// Answer to `AdvanceRevision`: the store's revision after it.
    Revision {
        /// The revision.
        revision: u64,
    },
}

impl WriteOutcome {
    /// The answer to a `Set`: whether the key was created.
    pub fn into_created(self) -> Result<bool> {
        match self {
            WriteOutcome::Set { created } => Ok(created),
            other => Err(unexpected("set", &other)),
        }
    }

    /// The answer to a `Delete`: whether the key existed.
    pub fn into_existed(self) -> Result<bool> {
        match self {
            WriteOutcome::Delete { existed } => Ok(existed),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// The answer to a `CompareAndSet`.
    pub fn into_cas(self) -> Result<CasOutcome> {
        match self {
            WriteOutcome::CompareAndSet(o) => Ok(o),
            other => Err(unexpected("compare-and-set", &other)),
        }
    }

    /// The answer to an `AllocateShortId`.
    pub fn into_short_id(self) -> Result<ShortId> {
        match self {
            WriteOutcome::ShortId(id) => Ok(id),
            other => Err(unexpected("allocate short id", &other)),
        }
    }

    /// The answer to an `AdvanceRevision`: the store's revision after it.
    pub fn into_revision(self) -> Result<u64> {
        match self {
            WriteOutcome::Revision { revision } => Ok(revision),
            other => Err(unexpected("advance revision", &other)),
        }
    }

    /// The answer to a `ReleaseShortId`: whether the member held one.
    pub fn into_released(self) -> Result<bool> {
        match self {
            WriteOutcome::Released { held } => Ok(held),
            other => Err(unexpected("release short id", &other)),
        }
    }
}

/// The revisions of one key, as etcd keeps them: the revision of the change
/// that created it (since it last did not exist) and of its last change.
/// Locks and elections order their waiters by `create_revision`; a
/// compare on `mod_revision` tells whether a key changed since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The revision of the change that created the key.
    pub create_revision: u64,
    /// The revision of the key's last change.
    pub mod_revision: u64,
}

/// One applied change, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The key.
    pub key: String,
    /// The new value, or `None` if the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The store's revision after this change; grows with every change.
    pub revision: u64,
}

/// Where a member of raft is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Endpoints {
    /// `host:port` of its raft RPC.
    pub raft_addr: String,
    /// `host:port` of its forwarding service.
    pub service_addr: String,
}

/// What a member knows about consensus now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsensusStatus {
    /// This member.
    pub member_id: MemberId,
    /// The leader it knows, if any.
    pub leader: Option<MemberId>,
    /// The current term.
    pub term: u64,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry it applied (committed and applied).
    pub applied_index: Option<u64>,
    /// The voters and where they are reached.
    pub voters: BTreeMap<MemberId, Endpoints>,
    /// The nonvoters (learners) and where they are reached.
    pub nonvoters: BTreeMap<MemberId, Endpoints>,
    /// The reset id while this member's raft state was reset and it waits
    /// to be taken out of the voters: it neither votes nor stands for
    /// election until then.
    #[serde(default)]
    pub reset_pending: Option<String>,
    /// The bytes of every key and value in this member's applied state
    /// (what the store quota counts).
    pub store_bytes: u64,
    /// The store quota alarm: the store is within one largest write of its
    /// quota, or this member refused a write because the store is full and
    /// nothing was deleted since. Writes that grow the store may be refused;
    /// reads and deletes still work.
    pub quota_alarm: bool,
}

impl ConsensusStatus {
    /// This member's role: `None` when it is not (yet) part of raft.
    pub fn role(&self) -> Option<RaftRole> {
        self.role_of(self.member_id)
    }

    /// A member's role by this member's knowledge.
    pub fn role_of(&self, id: MemberId) -> Option<RaftRole> {
        if self.leader == Some(id) && self.voters.contains_key(&id) {
            Some(RaftRole::Leader)
        } else if self.voters.contains_key(&id) {
            Some(RaftRole::Voter)
        } else if self.nonvoters.contains_key(&id) {
            Some(RaftRole::Nonvoter)
        } else {
            None
        }
    }

    /// The forwarding-service address of the leader, if known.
    pub fn leader_service_addr(&self) -> Option<&str> {
        let leader = self.leader?;
        self.voters.get(&leader).map(|e| e.service_addr.as_str())
    }

    /// True if this member leads.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.member_id)
    }

    /// Every member of raft.
    pub fn all_members(&self) -> BTreeSet<MemberId> {
        self.voters.keys().chain(self.nonvoters.keys()).copied().collect()
    }
}

/// A member's status as operators see it, in one shape for every surface
/// (`carbon status --json`, the HTTP API's `/v1/status`, the service's
/// [`MemberStatus`] request): [`ConsensusStatus`], its progress
/// ([`ConsensusProgress`]: committed and snapshot index), and the member's
/// short id and role. Flat, so that the JSON of each surface has the same
/// field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberStatus {
    /// This member.
    pub member_id: MemberId,
    /// Its short id, once it holds one.
    pub short_id: Option<ShortId>,
    /// Its raft role by its own knowledge; `Client` while it is out of
    /// raft with a short id (a client member); `None` while it joins.
    pub role: Option<RaftRole>,
    /// The leader it knows, if any.
    pub leader: Option<MemberId>,
    /// The current term.
    pub term: u64,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry known committed, if the backend knows it.
    pub committed_index: Option<u64>,
    /// Index of the last entry it applied.
    pub applied_index: Option<u64>,
    /// Index of the last entry in its newest snapshot, if any.
    pub snapshot_index: Option<u64>,
    /// The voters and where they are reached.
    pub voters: BTreeMap<MemberId, Endpoints>,
    /// The nonvoters and where they are reached.
    pub nonvoters: BTreeMap<MemberId, Endpoints>,
    /// See [`ConsensusStatus::reset_pending`].
    pub reset_pending: Option<String>,
    /// See [`ConsensusStatus::store_bytes`].
    pub store_bytes: u64,
    /// See [`ConsensusStatus::quota_alarm`].
    pub quota_alarm: bool,
}

impl MemberStatus {
    /// The status of a member from what its store knows and its short id.
    pub fn new(status: ConsensusStatus, progress: &ConsensusProgress, short_id: Option<ShortId>) -> Self {
        MemberStatus {
            // Out of raft with a short id: a client member of the replica set.
            role: status.role().or(short_id.map(|_| RaftRole::Client)),
            short_id,
            member_id: status.member_id,
            leader: status.leader,
            term: status.term,
            last_log_index: status.last_log_index,
            committed_index: progress.committed_index,
            applied_index: status.applied_index,
            snapshot_index: progress.snapshot_index,
            voters: status.voters,
            nonvoters: status.nonvoters,
            reset_pending: status.reset_pending,
            store_bytes: status.store_bytes,
            quota_alarm: status.quota_alarm,
        }
    }
}

/// Entries of the store, `(key, value)` in key order.
pub type Entries = Vec<(String, Vec<u8>)>;

/// How far along consensus is on a member, beyond [`ConsensusStatus`]: what
/// readiness checks and metrics need. Read on demand, never pushed: some
/// fields (the quorum acknowledgement's age) change on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsensusProgress {
    /// Index of the last entry known committed, if the backend knows it.
    pub committed_index: Option<u64>,
    /// Index of the last entry in the newest snapshot, if any.
    pub snapshot_index: Option<u64>,
    /// On the leader: how long ago a quorum of voters last acknowledged it.
    /// `None` on other members, and on a leader no quorum acknowledged yet.
    /// A leader that lost its quorum sees this grow without bound.
    pub quorum_ack_age: Option<Duration>,
}

/// How a member is doing in gossip, as the member asked sees it, for
/// operators: gossip's [`MemberState`](crate::MemberState) plus `Suspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Liveness {
    /// Heartbeats arrive.
    Alive,
    /// The failure detector gave up on it, and the leader has not taken it
    /// out of raft yet: it may be paused or cut off, and may come back.
    Suspect,
    /// The failure detector gave up on it and it is out of raft.
    Failed,
    /// It announced that it leaves.
    Left,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Failed => "failed",
            Liveness::Left => "left",
        })
    }
}

/// Raft timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftTiming {
    /// The leader's heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Followers start an election after a random time in
    /// `[election_timeout_min, election_timeout_max)` without a leader.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// A snapshot is taken after this many log entries since the last.
    pub snapshot_after_entries: u64,
    /// Log entries kept before the last snapshot (for slow followers).
    pub keep_entries_after_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_after_entries: 5000,
            keep_entries_after_snapshot: 1000,
        }
    }
}

/// The store's quotas and input bounds, like etcd's `--max-request-bytes`
/// and `--quota-backend-bytes`.
///
/// A write past one fails with [`Error::QuotaExceeded`]; reads and deletes
/// always work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusLimits {
    /// The longest key, in bytes. Default 4 KiB: keys read like paths
    /// (the cluster's own are under 100 bytes, Kubernetes' etcd keys under
    /// 600); a key is copied into every watch event, snapshot and index, so
    /// it stays small, with room for deep user hierarchies.
    pub max_key_bytes: usize,
    /// The longest value, in bytes. Default 1.5 MiB, etcd's request limit.
    pub max_value_bytes: usize,
    /// The most bytes of keys and values in the store. Default 2 GiB,
    /// etcd's default backend quota.
    pub max_store_bytes: u64,
    /// The largest snapshot this member receives from a leader. Default
    /// 4 GiB: twice the store quota, to cover the snapshot's own overhead
    /// (the answers it remembers, lengths, membership).
    pub max_snapshot_bytes: u64,
}

impl ConsensusLimits {
    /// The highest `max_key_bytes` or `max_value_bytes` accepted: the same
    /// bound is applied to every log entry, so it must not depend on one
    /// member's configuration (see the consensus crate's state machine).
    pub const MAX_ENTRY_FIELD_BYTES: usize = 64 * 1024 * 1024;

    /// Every problem with these limits, with the field's name.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let max = Self::MAX_ENTRY_FIELD_BYTES;
        if self.max_key_bytes == 0 || self.max_key_bytes > max {
            out.push(("max_key_bytes", format!("must be between 1 and {max}")));
        }
        if self.max_value_bytes > max {
            out.push(("max_value_bytes", format!("must be at most {max}")));
        }
        if self.max_snapshot_bytes < self.max_store_bytes {
            out.push(("max_snapshot_bytes", "must be at least max_store_bytes".to_owned()));
        }
        out
    }
}

impl Default for ConsensusLimits {
    fn default() -> Self {
        ConsensusLimits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1536 * 1024,
            max_store_bytes: 2 << 30,
            max_snapshot_bytes: 4 << 30,
        }
    }
}

/// What a consensus backend needs to open.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusConfig {
    /// This member's id (the raft node id).
    pub member_id: MemberId,
    /// Frames from other clusters are refused.
    pub cluster_id: String,
    /// Where raft RPC listens; port 0 picks a free one.
    pub raft_listen_addr: SocketAddr,
    /// The host others reach this member at (the raft port is the bound one).
    pub advertise_host: String,
    /// The forwarding-service address others reach this member at.
    pub service_addr: String,
    /// Durable storage here; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Raft timing.
    pub timing: RaftTiming,
    /// The largest frame sent or accepted on the raft port.
    pub max_frame_len: usize,
    /// How long an RPC may take before the peer counts as unreachable.
    pub rpc_timeout: Duration,
    /// Limits and TLS of the raft port and of raft's client, as the RPC layer
    /// defines them (the frame limit stays `max_frame_len`);
    /// [`Transport::default`](crate::wire::Transport) for plain TCP with default limits.
    pub transport: crate::wire::Transport,
    /// Quotas and input bounds.
    pub limits: ConsensusLimits,
}

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
    /// Opens (or reopens from its data directory) this member's store and
    /// starts raft RPC. It does not join or form a cluster by itself.
    fn open(config: ConsensusConfig) -> impl Future<Output = Result<Self>> + Send;

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

    /// How far along consensus is here (commit index, snapshot, quorum
    /// contact); a backend that does not know answers the default.
    fn progress(&self) -> impl Future<Output = ConsensusProgress> + Send {
        std::future::ready(ConsensusProgress::default())
    }

    /// Gossip's view of the members, when a running member serves this
    /// store (the facade supplies it to its forwarding service); a bare
    /// backend knows no gossip and answers an empty map.
    fn liveness(&self) -> BTreeMap<MemberId, Liveness> {
        BTreeMap::new()
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
        // Only the revision is wanted: a prefix no key of ours starts with.
        let (revision, _) = self.get_prefix_with_revision("\u{0}")?;
        if requested <= revision {
            return Err(Error::Compacted { requested, oldest: revision + 1 });
        }
        watch.from_revision = requested;
        Ok(watch)
    }

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
