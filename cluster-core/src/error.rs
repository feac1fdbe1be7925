//! The one error type of `cluster-core`, shared by every backend contract.
//!
//! Every variant carries owned, plain data so that an error can cross the wire
//! (the forwarding service sends store errors back to its callers) and be
//! cloned into several waiting callers.

use serde::{Deserialize, Serialize};

use crate::id::{IdError, MemberId};

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the current leader can be reached, as known by the member that
/// answered [`Error::NotLeader`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's member id.
    pub member_id: MemberId,
    /// The leader's forwarding-service address (`host:port`), when known.
    pub service_addr: Option<String>,
}

/// Everything that can go wrong in the model, the codec and the backend
/// contracts. Variants are grouped by what a caller can do about them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    // ---- bad input: fix the input, retrying will not help ----
    /// A member id that is not a ULID.
    #[error("invalid member id {input:?}: {reason}")]
    InvalidMemberId {
        /// The text that was parsed.
        input: String,
        /// Why it is not a ULID.
        reason: String,
    },
    /// A short id that is not a positive integer.
    #[error("invalid short id {input:?}: must be a positive integer")]
    InvalidShortId {
        /// The text or number that was given.
        input: String,
    },
    /// A raft role that is not `leader`, `voter` or `nonvoter`.
    #[error("invalid raft role {input:?}: expected leader, voter or nonvoter")]
    InvalidRole {
        /// The text that was parsed.
        input: String,
    },
    /// A membership tag that member metadata needs is absent.
    #[error("tag {tag:?} is missing")]
    MissingTag {
        /// The name of the missing tag.
        tag: String,
    },
    /// A membership tag holds a value that does not parse.
    #[error("tag {tag:?} has a bad value {value:?}: {reason}")]
    BadTag {
        /// The name of the tag.
        tag: String,
        /// Its value.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A consensus key that is not of the form the caller asked for.
    #[error("key {key:?} is not {expected}")]
    BadKey {
        /// The key.
        key: String,
        /// What kind of key was expected.
        expected: String,
    },
    /// A request the receiver cannot serve as sent (reserved key, empty key, …).
    #[error("bad request: {0}")]
    BadRequest(String),

    // ---- wire: the peer speaks something else ----
    /// A frame longer than the configured maximum (sent or received).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame shorter than its header.
    #[error("truncated frame: {len} bytes, the header alone needs {needed}")]
    TruncatedFrame {
        /// The frame's length.
        len: usize,
        /// The bytes the header needs.
        needed: usize,
    },
    /// A frame that does not start with this project's magic bytes.
    #[error("not a Carbon Grid frame (bad magic bytes)")]
    BadMagic,
    /// A frame of another protocol version.
    #[error("protocol version {found} is not supported (this member speaks {expected})")]
    VersionMismatch {
        /// This member's version.
        expected: u16,
        /// The peer's version.
        found: u16,
    },
    /// A frame from another cluster. The message never names the cluster the
    /// member belongs to: an outsider must not learn it from an error reply.
    #[error(
        "frame from cluster {found:?} refused: this member belongs to another cluster (check the cluster id)"
    )]
    ClusterMismatch {
        /// The cluster id the frame carried.
        found: String,
    },
    /// A frame whose body does not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A value that could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// An I/O error on a connection or a file; `kind` keeps the operating
    /// system's class of it (also across the wire), see [`Error::io_kind`].
    #[error("i/o error: {detail}")]
    Io {
        /// What failed, as the OS reported it (e.g. address in use, refused).
        kind: IoKind,
        /// What was being done and the OS's message.
        detail: String,
    },

    // ---- consensus: retry elsewhere or later ----
    /// This member is not the leader; retry at the leader.
    #[error("not the leader{}", match .0 { Some(h) => format!(" (leader is {})", h.member_id), None => " (no leader known)".to_owned() })]
    NotLeader(Option<LeaderHint>),
    /// The operation did not finish in time; it may or may not have taken effect.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No member could be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The member is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A raft membership change could not be made (another is in progress,
    /// the member is unknown, …). Usually worth retrying after the next change.
    #[error("membership change refused: {0}")]
    MembershipChange(String),
    /// The storage failed; the member cannot continue safely.
    #[error("storage failure: {0}")]
    Storage(String),
    /// This member's stored raft state is corrupt: a write-ahead log record
    /// that is not a torn tail, a snapshot that fails its checksum, a state
    /// file that does not open. Starting with it could lose acknowledged
    /// writes or cast a second vote in a term, so the member refuses to
    /// start; `detail` says what to do (reset the raft state, keeping the
    /// member id). Retrying will not help.
    #[error("corrupt raft state in {path}{}: {detail}", match .offset { Some(o) => format!(" at byte offset {o}"), None => String::new() })]
    CorruptState {
        /// The file.
        path: String,
        /// Where in it, when known.
        offset: Option<u64>,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A watcher or subscriber fell behind and missed changes; read the
    /// current state again.
    #[error("fell behind and missed {missed} changes")]
    Lagged {
        /// How many changes were missed.
        missed: u64,
    },
    /// Something this member did not expect; a bug worth reporting.
    #[error("internal error: {0}")]
    Internal(String),

    // ---- authorization: use other credentials ----
    /// The caller's credentials do not allow the operation (a client writing
    /// a key the cluster reserves, an operation only members may issue).
    #[error("forbidden: {0}")]
    Forbidden(String),
    // ---- quota: shrink the write or free space; retrying as is will not help ----
    // (Last, so that the variants before keep their wire numbers.)
    /// A write past one of the store's quotas: a key or value too long, or
    /// a store too full. Reads and deletes still work; deleting keys makes
    /// room again for the store quota.
    #[error("quota exceeded: {quota} would be {size} bytes, the limit is {limit}")]
    QuotaExceeded {
        /// Which quota.
        quota: Quota,
        /// The size the write asked for (key, value, or the store after the write).
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    // ---- watch history: start from a newer revision ----
    /// A watch asked to start at a revision older than the member still
    /// remembers (like etcd's "compacted"): read the prefix again (its
    /// revision says where to watch from) and watch from there.
    #[error("revision {requested} is compacted: this member replays changes from revision {oldest} on")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision the member can replay.
        oldest: u64,
    },
}

/// The quotas of the consensus store (see [`Error::QuotaExceeded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Quota {
    /// The bytes of one key.
    KeyBytes,
    /// The bytes of one value.
    ValueBytes,
    /// The bytes of every key and value in the store.
    StoreBytes,
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quota::KeyBytes => "the key",
            Quota::ValueBytes => "the value",
            Quota::StoreBytes => "the store",
        })
    }
}

impl Error {
    /// True for errors after which the same operation may succeed if retried
    /// (possibly at another member): not leader, timeout, unreachable, a
    /// membership change in progress.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader(_) | Error::Timeout(_) | Error::Unreachable(_) | Error::MembershipChange(_)
        )
    }

    /// What the caller can do about this error; see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidMemberId { .. }
            | Error::InvalidShortId { .. }
            | Error::InvalidRole { .. }
            | Error::MissingTag { .. }
            | Error::BadTag { .. }
            | Error::BadKey { .. }
            | Error::BadRequest(_) => ErrorKind::Invalid,
            Error::FrameTooLarge { .. }
            | Error::TruncatedFrame { .. }
            | Error::BadMagic
            | Error::VersionMismatch { .. }
            | Error::ClusterMismatch { .. }
            | Error::Malformed(_) => ErrorKind::Protocol,
            Error::NotLeader(_) => ErrorKind::NotLeader,
            Error::Timeout(_)
            | Error::Unreachable(_)
            | Error::ShuttingDown
            | Error::MembershipChange(_)
            | Error::Io { .. } => ErrorKind::Unavailable,
            Error::Storage(_) | Error::CorruptState { .. } => ErrorKind::Storage,
            Error::Lagged { .. } | Error::Compacted { .. } => ErrorKind::Resync,
            Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::QuotaExceeded { .. } => ErrorKind::Quota,
            Error::Encode(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The operating system's class of an [`Error::Io`] (address in use,
    /// connection refused, disk full, …); `None` for every other error.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { kind, .. } => Some((*kind).into()),
            _ => None,
        }
    }

    /// An [`Error::Io`] that says what was being done (`context`) and keeps
    /// the error's kind.
    pub fn io(context: impl std::fmt::Display, e: &std::io::Error) -> Self {
        Error::Io { kind: e.kind().into(), detail: format!("{context}: {e}") }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io { kind: e.kind().into(), detail: e.to_string() }
    }
}

/// What a caller can do about an [`Error`]: the class that decides between
/// retrying, fixing the request, and calling an operator. Match it with a
/// wildcard arm: classes may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is wrong (a bad key, id, tag or argument): fix it;
    /// retrying it as is will not help.
    Invalid,
    /// The peer speaks another protocol, version or cluster id: fix the
    /// address or the configuration.
    Protocol,
    /// This member is not the leader; retry at the leader, which the error
    /// names when known. The KV router does this on its own.
    NotLeader,
    /// Nothing answered in time, the member is stopping or reconfiguring, or
    /// a connection failed: retry later or elsewhere. A write that failed
    /// this way may or may not have taken effect.
    Unavailable,
    /// The caller's credentials (its certificate's role) do not allow it.
    Forbidden,
    /// A key, a value or the store would exceed its quota: shrink the write
    /// or delete keys; reads and deletes still work.
    Quota,
    /// A watch missed changes (it fell behind, or its start revision is
    /// compacted): read the prefix again and watch from that read's revision.
    Resync,
    /// This member's storage failed or its raft state is corrupt: it needs
    /// an operator (see docs/recovery.md).
    Storage,
    /// A bug: something this member did not expect.
    Internal,
}

/// The class of an I/O error, as [`std::io::ErrorKind`] has it, in a form
/// that crosses the wire. Kinds without a counterpart here travel as
/// [`IoKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum IoKind {
    /// See [`std::io::ErrorKind::NotFound`].
    NotFound,
    /// See [`std::io::ErrorKind::PermissionDenied`].
    PermissionDenied,
    /// See [`std::io::ErrorKind::ConnectionRefused`].
    ConnectionRefused,
    /// See [`std::io::ErrorKind::ConnectionReset`].
    ConnectionReset,
    /// See [`std::io::ErrorKind::ConnectionAborted`].
    ConnectionAborted,
    /// See [`std::io::ErrorKind::NotConnected`].
    NotConnected,
    /// See [`std::io::ErrorKind::AddrInUse`].
    AddrInUse,
    /// See [`std::io::ErrorKind::AddrNotAvailable`].
    AddrNotAvailable,
    /// See [`std::io::ErrorKind::BrokenPipe`].
    BrokenPipe,
    /// See [`std::io::ErrorKind::AlreadyExists`].
    AlreadyExists,
    /// See [`std::io::ErrorKind::InvalidInput`].
    InvalidInput,
    /// See [`std::io::ErrorKind::InvalidData`].
    InvalidData,
    /// See [`std::io::ErrorKind::TimedOut`].
    TimedOut,
    /// See [`std::io::ErrorKind::UnexpectedEof`].
    UnexpectedEof,
    /// See [`std::io::ErrorKind::StorageFull`].
    StorageFull,
    /// See [`std::io::ErrorKind::HostUnreachable`].
    HostUnreachable,
    /// See [`std::io::ErrorKind::NetworkUnreachable`].
    NetworkUnreachable,
    /// Any other kind.
    Other,
}

/// The pairs of [`IoKind`] and [`std::io::ErrorKind`], one list for both directions.
const IO_KINDS: [(IoKind, std::io::ErrorKind); 17] = {
    use std::io::ErrorKind as K;
    [
        (IoKind::NotFound, K::NotFound),
        (IoKind::PermissionDenied, K::PermissionDenied),
        (IoKind::ConnectionRefused, K::ConnectionRefused),
        (IoKind::ConnectionReset, K::ConnectionReset),
        (IoKind::ConnectionAborted, K::ConnectionAborted),
        (IoKind::NotConnected, K::NotConnected),
        (IoKind::AddrInUse, K::AddrInUse),
        (IoKind::AddrNotAvailable, K::AddrNotAvailable),
        (IoKind::BrokenPipe, K::BrokenPipe),
        (IoKind::AlreadyExists, K::AlreadyExists),
        (IoKind::InvalidInput, K::InvalidInput),
        (IoKind::InvalidData, K::InvalidData),
        (IoKind::TimedOut, K::TimedOut),
        (IoKind::UnexpectedEof, K::UnexpectedEof),
        (IoKind::StorageFull, K::StorageFull),
        (IoKind::HostUnreachable, K::HostUnreachable),
        (IoKind::NetworkUnreachable, K::NetworkUnreachable),
    ]
};

impl From<std::io::ErrorKind> for IoKind {
    fn from(kind: std::io::ErrorKind) -> Self {
        IO_KINDS.iter().find(|(_, k)| *k == kind).map_or(IoKind::Other, |(ours, _)| *ours)
    }
}

impl From<IoKind> for std::io::ErrorKind {
    fn from(kind: IoKind) -> Self {
        IO_KINDS.iter().find(|(ours, _)| *ours == kind).map_or(std::io::ErrorKind::Other, |(_, k)| *k)
    }
}

/// An id that does not parse is bad input, whichever layer parsed it.
impl From<IdError> for Error {
    fn from(e: IdError) -> Self {
        match e {
            IdError::MemberId { input, reason } => Error::InvalidMemberId { input, reason },
            IdError::ShortId { input } => Error::InvalidShortId { input },
            request @ IdError::RequestId { .. } => Error::BadRequest(request.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{ClientRequestId, ShortId};

    #[test]
    fn an_id_that_does_not_parse_is_bad_input_with_the_same_message() {
        let err = "xyz".parse::<MemberId>().unwrap_err();
        let store_err = Error::from(err.clone());
        assert!(matches!(&store_err, Error::InvalidMemberId { input, .. } if input == "xyz"));
        assert_eq!(store_err.to_string(), err.to_string());
        assert_eq!(store_err.kind(), ErrorKind::Invalid);
        let err = "0".parse::<ShortId>().unwrap_err();
        assert_eq!(Error::from(err.clone()), Error::InvalidShortId { input: "0".into() });
        assert_eq!(Error::from(err.clone()).to_string(), err.to_string());
        let err = "xyz".parse::<ClientRequestId>().unwrap_err();
        assert!(matches!(Error::from(err), Error::BadRequest(m) if m.contains("xyz")));
    }

    #[test]
    fn io_errors_keep_their_kind_across_the_wire() {
        let e = Error::io(
            "cannot listen on 127.0.0.1:7000",
            &std::io::Error::from(std::io::ErrorKind::AddrInUse),
        );
        let bytes = bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap();
        let (back, _): (Error, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back.io_kind(), Some(std::io::ErrorKind::AddrInUse));
        assert!(back.to_string().contains("cannot listen on 127.0.0.1:7000"), "{back}");
        assert_eq!(back.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn every_io_kind_maps_back_to_itself() {
        for (ours, std) in IO_KINDS {
            assert_eq!(IoKind::from(std), ours);
            assert_eq!(std::io::ErrorKind::from(ours), std);
        }
        assert_eq!(IoKind::from(std::io::ErrorKind::Interrupted), IoKind::Other);
    }

    #[test]
    fn kinds_say_what_the_caller_can_do() {
        assert_eq!(Error::NotLeader(None).kind(), ErrorKind::NotLeader);
        assert_eq!(Error::BadRequest("empty key".into()).kind(), ErrorKind::Invalid);
        assert_eq!(Error::BadMagic.kind(), ErrorKind::Protocol);
        assert_eq!(Error::Compacted { requested: 1, oldest: 5 }.kind(), ErrorKind::Resync);
        assert_eq!(
            Error::QuotaExceeded { quota: Quota::ValueBytes, size: 2, limit: 1 }.kind(),
            ErrorKind::Quota
        );
        // Everything retryable is a class that says "try again".
        for e in
            [Error::Timeout("t".into()), Error::Unreachable("u".into()), Error::MembershipChange("m".into())]
        {
            assert!(e.is_retryable());
            assert_eq!(e.kind(), ErrorKind::Unavailable);
        }
    }
}
