//! The openraft type configuration: which types raft carries.
//!
//! The raft node id is the [`MemberId`] itself, the node data is core's
//! [`Endpoints`] (raft address and service address), a log entry carries a
//! [`WriteBatch`] of core [`WriteRequest`]s (concurrent writes share one log
//! entry, hence one fsync) and the state machine answers a [`WriteResponse`].

use cluster_core::{Endpoints, Error, MemberId, WriteOutcome, WriteRequest};
use serde::{Deserialize, Serialize};

/// The writes of one log entry, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WriteBatch(pub Vec<WriteRequest>);

/// What the state machine answers for one log entry: per write of its batch,
/// the outcome or the refusal of a write it could not apply (e.g. an
/// operation this build does not know); empty for raft's own entries (blank,
/// membership).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WriteResponse(pub Vec<Result<WriteOutcome, Error>>);

openraft::declare_raft_types!(
    /// The openraft type configuration of the cluster's key-value store.
    pub TypeConfig:
        D = WriteBatch,
        R = WriteResponse,
        NodeId = MemberId,
        Node = Endpoints,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot_data::SnapshotData,
        AsyncRuntime = crate::runtime::Runtime,
);

/// The raft instance of this crate.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<MemberId>;
/// A log entry.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// A vote.
pub type Vote = openraft::Vote<MemberId>;
/// A storage error as openraft wants it.
pub(crate) type StorageError = openraft::StorageError<MemberId>;
/// Membership as stored with its log id.
pub(crate) type StoredMembership = openraft::StoredMembership<MemberId, Endpoints>;
/// Snapshot metadata.
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<MemberId, Endpoints>;
/// A snapshot.
pub(crate) type Snapshot = openraft::Snapshot<TypeConfig>;
