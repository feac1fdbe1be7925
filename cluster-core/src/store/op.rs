//! The operations that change the store, their rules, their answers, and
//! what a reader sees of a key: its revisions and its changes.
//!
//! An operation is defined once, here: its type ([`WriteOp`]), who may ask
//! it ([`WriteOp::needs`]), its rules ([`WriteOp::check`]: keys, the
//! cluster's reserved prefix) and its sizes ([`WriteOp::check_sizes`],
//! [`WriteOp::growth`]). Every surface reaches it through these: the
//! `carbon` program and the router before sending, the service's
//! authorization by the caller's certificate, the store's admission against
//! its configured limits, and the state machine's apply against the bounds
//! every member shares.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Quota, Result};
use crate::id::{ClientRequestId, MemberId, ShortId};
use crate::keys;

use super::{ConsensusLimits, unexpected};

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
    /// Delete every key that starts with `prefix` (not empty), in one
    /// change: one log entry, one revision, one delete event per key at it.
    /// The cluster's keys (under [`keys::RESERVED_PREFIX`]) are deleted
    /// only by a prefix under it, which only the cluster may ask
    /// ([`WriteOp::deletes`]): a user's `"c"` leaves `carbon-grid/` alone.
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

/// Who makes a write, which decides what it may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Writer {
    /// A user: keys outside [`keys::RESERVED_PREFIX`] only, and no
    /// operation on the cluster's own state (short ids, the revision).
    User,
    /// The cluster itself: a member's own process, or a caller proven to be
    /// a member by its certificate. Every operation.
    Cluster,
}

/// The rule every key shares, read or written: it is not empty.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() { Err(Error::BadRequest("the key must not be empty".to_owned())) } else { Ok(()) }
}

/// What one key and its value count for the store quota.
pub fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
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
            | WriteOp::AdvanceRevision { .. }
            | WriteOp::DeletePrefix { .. } => None,
        }
    }

    /// Whether a [`DeletePrefix`](WriteOp::DeletePrefix) of `prefix`
    /// deletes `key`: the key starts with the prefix, and is a user's key
    /// unless the prefix itself is the cluster's.
    pub fn deletes(prefix: &str, key: &str) -> bool {
        key.starts_with(prefix) && (keys::is_reserved(prefix) || !keys::is_reserved(key))
    }

    /// The values this operation carries (to store or to compare with).
    fn values(&self) -> [Option<&[u8]>; 2] {
        match self {
            WriteOp::Set { value, .. } => [Some(value), None],
            WriteOp::CompareAndSet { expected, new, .. } => [expected.as_deref(), new.as_deref()],
            _ => [None, None],
        }
    }

    /// The writer this operation needs: [`Writer::Cluster`] for the
    /// cluster's keys (under [`keys::RESERVED_PREFIX`]) and its own state
    /// (short ids, the revision), [`Writer::User`] for the rest.
    pub fn needs(&self) -> Writer {
        match self {
            WriteOp::DeletePrefix { prefix } if !keys::is_reserved(prefix) => Writer::User,
            _ => match self.key() {
                Some(key) if !keys::is_reserved(key) => Writer::User,
                _ => Writer::Cluster,
            },
        }
    }

    /// The operation's rules, for `writer`: its key is not empty, and a
    /// user changes neither the cluster's keys nor its state
    /// ([`Error::Forbidden`]). Sizes are [`check_sizes`](Self::check_sizes)'.
    pub fn check(&self, writer: Writer) -> Result<()> {
        if let Some(key) = self.key() {
            check_key(key)?;
        }
        if let WriteOp::DeletePrefix { prefix } = self
            && prefix.is_empty()
        {
            return Err(Error::BadRequest(
                "the prefix of a prefix delete must not be empty (it would delete every key)".to_owned(),
            ));
        }
        if writer == Writer::User && self.needs() == Writer::Cluster {
            return Err(Error::Forbidden(match self {
                WriteOp::DeletePrefix { prefix } => format!(
                    "prefix {prefix:?} is under {:?}, which the cluster reserves for itself",
                    keys::RESERVED_PREFIX
                ),
                _ => match self.key() {
                    Some(key) => format!(
                        "key {key:?} is under {:?}, which the cluster reserves for itself",
                        keys::RESERVED_PREFIX
                    ),
                    None => format!("{} is the cluster's own operation", self.name()),
                },
            }));
        }
        Ok(())
    }

    /// The key and value bounds of `limits`: a key over `max_key_bytes` or
    /// a value over `max_value_bytes` is [`Error::QuotaExceeded`]. A delete
    /// is always within them: a key too long to exist is simply not there.
    pub fn check_sizes(&self, limits: &ConsensusLimits) -> Result<()> {
        let too_long = |quota, size: usize, limit: usize| {
            if size > limit {
                Err(Error::QuotaExceeded { quota, size: size as u64, limit: limit as u64 })
            } else {
                Ok(())
            }
        };
        if let Some(key) = self.key()
            && !matches!(self, WriteOp::Delete { .. })
        {
            too_long(Quota::KeyBytes, key.len(), limits.max_key_bytes)?;
        }
        for value in self.values().into_iter().flatten() {
            too_long(Quota::ValueBytes, value.len(), limits.max_value_bytes)?;
        }
        Ok(())
    }

    /// How many bytes the store grows by if this operation succeeds (0 if
    /// it shrinks or stays), as the store quota counts them
    /// ([`entry_bytes`]). `value_len` reads the applied state: the length
    /// of a key's value, if it has one.
    pub fn growth(&self, value_len: impl Fn(&str) -> Option<usize>) -> u64 {
        let (key, new) = match self {
            WriteOp::Set { key, value } => (key, value),
            WriteOp::CompareAndSet { key, new: Some(new), .. } => (key, new),
            _ => return 0,
        };
        let old = value_len(key).map_or(0, |len| (key.len() + len) as u64);
        entry_bytes(key, new).saturating_sub(old)
    }

    /// A short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            WriteOp::Set { .. } => "set",
            WriteOp::Delete { .. } => "delete",
            WriteOp::CompareAndSet { .. } => "compare-and-set",
            WriteOp::AllocateShortId { .. } => "allocate short id",
            WriteOp::ReleaseShortId { .. } => "release short id",
            WriteOp::AdvanceRevision { .. } => "advance revision",
            WriteOp::DeletePrefix { .. } => "delete prefix",
        }
    }
}

impl ConsensusLimits {
    /// The bounds the state machine checks every entry against in apply:
    /// [`MAX_ENTRY_FIELD_BYTES`](Self::MAX_ENTRY_FIELD_BYTES) for keys and
    /// values, constants rather than one member's configuration, so that
    /// every member decides alike.
    pub fn entry_bounds() -> Self {
        ConsensusLimits {
            max_key_bytes: Self::MAX_ENTRY_FIELD_BYTES,
            max_value_bytes: Self::MAX_ENTRY_FIELD_BYTES,
            ..ConsensusLimits::default()
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

    /// Delete every key under `prefix`; see [`WriteOp::DeletePrefix`].
    pub fn delete_prefix(prefix: &str) -> Self {
        WriteRequest::new(WriteOp::DeletePrefix { prefix: prefix.to_owned() })
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
    /// Answer to `DeletePrefix`: how many keys it deleted.
    DeletedPrefix {
        /// The number of keys deleted.
        deleted: u64,
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

    /// The answer to a `DeletePrefix`: how many keys it deleted.
    pub fn into_deleted(self) -> Result<u64> {
        match self {
            WriteOutcome::DeletedPrefix { deleted } => Ok(deleted),
            other => Err(unexpected("delete prefix", &other)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, len: usize) -> WriteOp {
        WriteOp::Set { key: key.into(), value: vec![7; len] }
    }

    #[test]
    fn users_write_their_keys_and_the_cluster_writes_every_key() {
        let member = MemberId::generate();
        let users = [set("a", 1), WriteOp::Delete { key: "a/b".into() }];
        let cluster = [
            set(&keys::member_key(member), 1),
            WriteOp::Delete { key: keys::LEADER_KEY.into() },
            WriteOp::CompareAndSet { key: "carbon-grid/x".into(), expected: None, new: None },
            WriteOp::AllocateShortId { member },
            WriteOp::ReleaseShortId { member },
            WriteOp::AdvanceRevision { revision: 9 },
        ];
        for op in &users {
            assert_eq!(op.needs(), Writer::User, "{op:?}");
            assert_eq!(op.check(Writer::User), Ok(()), "{op:?}");
            assert_eq!(op.check(Writer::Cluster), Ok(()), "{op:?}");
        }
        for op in &cluster {
            assert_eq!(op.needs(), Writer::Cluster, "{op:?}");
            assert!(matches!(op.check(Writer::User), Err(Error::Forbidden(_))), "{op:?}");
            assert_eq!(op.check(Writer::Cluster), Ok(()), "{op:?}");
        }
    }

    #[test]
    fn the_empty_key_is_nobodys() {
        for writer in [Writer::User, Writer::Cluster] {
            for op in [set("", 1), WriteOp::Delete { key: String::new() }] {
                assert!(matches!(op.check(writer), Err(Error::BadRequest(_))), "{op:?}");
            }
        }
        assert!(check_key("").is_err() && check_key("k").is_ok());
    }

    #[test]
    fn a_prefix_delete_refuses_the_empty_prefix_and_users_the_clusters_prefix() {
        let delete = |p: &str| WriteOp::DeletePrefix { prefix: p.into() };
        for writer in [Writer::User, Writer::Cluster] {
            assert!(matches!(delete("").check(writer), Err(Error::BadRequest(_))));
        }
        assert_eq!(delete("app/").check(Writer::User), Ok(()));
        let reserved = delete(keys::MEMBERS_PREFIX);
        assert!(matches!(reserved.check(Writer::User), Err(Error::Forbidden(m)) if m.contains("reserves")));
        assert_eq!(reserved.check(Writer::Cluster), Ok(()));
        // A user's prefix that also covers the cluster's keys leaves them alone.
        assert_eq!(delete("c").check(Writer::User), Ok(()));
        assert!(WriteOp::deletes("c", "cache/x") && !WriteOp::deletes("c", "carbon-grid/members/x"));
        assert!(WriteOp::deletes("carbon-grid/", "carbon-grid/members/x"));
        assert!(!WriteOp::deletes("app/", "apps"));
        assert_eq!(delete("app/").growth(|_| Some(10)), 0);
    }

    #[test]
    fn sizes_are_checked_against_the_limits_deletes_always_pass() {
        let l = ConsensusLimits { max_key_bytes: 8, max_value_bytes: 100, ..Default::default() };
        assert_eq!(set("k", 100).check_sizes(&l), Ok(()));
        assert_eq!(
            set("k", 101).check_sizes(&l),
            Err(Error::QuotaExceeded { quota: Quota::ValueBytes, size: 101, limit: 100 })
        );
        assert_eq!(
            set("123456789", 1).check_sizes(&l),
            Err(Error::QuotaExceeded { quota: Quota::KeyBytes, size: 9, limit: 8 })
        );
        let cas = WriteOp::CompareAndSet { key: "k".into(), expected: Some(vec![0; 101]), new: None };
        assert!(matches!(cas.check_sizes(&l), Err(Error::QuotaExceeded { quota: Quota::ValueBytes, .. })));
        assert_eq!(WriteOp::Delete { key: "123456789".into() }.check_sizes(&l), Ok(()));
        let max = ConsensusLimits::MAX_ENTRY_FIELD_BYTES;
        assert_eq!(set("k", max).check_sizes(&ConsensusLimits::entry_bounds()), Ok(()));
        assert!(set("k", max + 1).check_sizes(&ConsensusLimits::entry_bounds()).is_err());
    }

    #[test]
    fn growth_counts_what_a_write_adds() {
        let absent = |_: &str| None;
        let ten = |_: &str| Some(10);
        assert_eq!(set("ab", 5).growth(absent), 7);
        assert_eq!(set("ab", 15).growth(ten), 5);
        assert_eq!(set("ab", 5).growth(ten), 0);
        assert_eq!(WriteOp::Delete { key: "ab".into() }.growth(absent), 0);
        let cas_delete = WriteOp::CompareAndSet { key: "ab".into(), expected: None, new: None };
        assert_eq!(cas_delete.growth(absent), 0);
    }
}
