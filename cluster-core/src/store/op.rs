//! The operations that change the store, their answers, and what a reader
//! sees of a key: its revisions and its changes.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::{ClientRequestId, MemberId, ShortId};

use super::unexpected;

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

/// Entries of the store, `(key, value)` in key order.
pub type Entries = Vec<(String, Vec<u8>)>;
