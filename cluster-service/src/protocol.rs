//! The forwarding-service protocol: what a client asks ([`Request`]) and what
//! a member answers ([`Response`]), carried in core's wire frames.
//!
//! Every frame carries a request id chosen by the client and echoed by the
//! answer, so one connection carries many requests at once and answers may
//! come in any order. A frame the server cannot read is answered with
//! [`Response::Err`] under its request id when the header was readable, or
//! under [`CONNECTION_ERROR_ID`] (after which the server closes the
//! connection) when it was not.

use cluster_core::wire::WireCodec;
use std::collections::BTreeMap;

use cluster_core::{
    ConsensusStatus, Error, KeyMeta, KeyScope, KeyringChange, KeyringState, Liveness, MemberId, MemberInfo,
    MemberStatus, Result, WatchEvent, WriteOutcome, WriteRequest,
};
use serde::{Deserialize, Serialize};

/// The request id under which the server reports an error that belongs to no
/// request (a frame whose header could not be read). Clients never use it.
pub const CONNECTION_ERROR_ID: u64 = 0;

/// One operation asked of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// The member's local (possibly stale) value of `key`.
    Get {
        /// The key.
        key: String,
    },
    /// A linearizable read of `key`; served by the leader only.
    ConsistentGet {
        /// The key.
        key: String,
    },
    /// The member's local entries under `prefix`, in key order.
    GetPrefix {
        /// The prefix.
        prefix: String,
    },
    /// A write (set, delete, compare-and-set, and the short-id operations the
    /// cluster itself sends); served by the leader only.
    Write(WriteRequest),
    /// Every [`MemberInfo`] the member's store holds.
    Members,
    /// What the member knows about consensus.
    Status,
    /// The whole store with its revision, read linearizably; served by the
    /// leader only. For backups (`carbon snapshot save`).
    Export,
    /// Removes a member from raft now, frees its short id and drops its
    /// records, without waiting for the failure grace or the reap timeout;
    /// served by the leader only. For members that will not come back.
    ForceLeave {
        /// The member to remove.
        member: MemberId,
    },
    /// Gossip's view of the members, as the member asked sees it.
    Liveness,
    /// A stream of [`Response::Event`]s: every change under `prefix` applied
    /// by the member asked, from `from_revision` on (`None`: from now),
    /// replaying past changes first. It fails with
    /// [`Error::Compacted`] when the member no longer remembers
    /// `from_revision`, and ends with [`Error::Lagged`] when the caller fell
    /// too far behind: watch again from the last revision seen + 1.
    Watch {
        /// The prefix.
        prefix: String,
        /// The first revision wanted.
        from_revision: Option<u64>,
    },
    /// Like `GetPrefix`, with the revision the entries are of: a watch from
    /// that revision + 1 misses and repeats nothing.
    GetPrefixWithRevision {
        /// The prefix.
        prefix: String,
    },
    /// The gossip keyring of the member asked (members only: it holds keys).
    KeyringList,
    /// Changes the gossip keyring of the member asked, persisting it (members
    /// only). A rotation is install on every member, use on every member,
    /// remove on every member: `carbon keys` sends each step to each member.
    KeyringChange(KeyringChange),
    /// The member's status in the shape every surface shows
    /// ([`MemberStatus`]: `Status` with its progress, short id and role).
    MemberStatus,
    /// The value of `key` with its create and last-change revision
    /// ([`KeyMeta`]); `consistent`: a linearizable read, served by the
    /// leader only, else the member's local state.
    GetWithMeta {
        /// The key.
        key: String,
        /// Read at the leader after it confirmed its leadership.
        consistent: bool,
    },
    /// `read`, a read of the member's local state ([`Request::reads_local_state`]),
    /// served once the member's state reached `min_revision`, and answered
    /// with [`Response::ReadAt`]: the revision it was served at, so that the
    /// caller's next read at any member never shows an older state. A
    /// member that does not get there soon answers [`Error::Timeout`]: ask
    /// another. How a client member reads the keys it does not hold.
    ReadAt {
        /// The revision the member's state must show at least.
        min_revision: u64,
        /// The read.
        read: Box<Request>,
    },
}

impl Request {
    /// A short name for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Get { .. } => "get",
            Request::ConsistentGet { .. } => "consistent get",
            Request::GetPrefix { .. } => "get prefix",
            Request::Write(_) => "write",
            Request::Members => "members",
            Request::Status => "status",
            Request::Export => "export",
            Request::ForceLeave { .. } => "force leave",
            Request::Liveness => "liveness",
            Request::Watch { .. } => "watch",
            Request::GetPrefixWithRevision { .. } => "get prefix with revision",
            Request::KeyringList => "keyring list",
            Request::KeyringChange(_) => "keyring change",
            Request::MemberStatus => "member status",
            Request::GetWithMeta { .. } => "get with revisions",
            Request::ReadAt { read, .. } => read.kind(),
        }
    }

    /// True if only the leader can serve it.
    pub fn needs_leader(&self) -> bool {
        matches!(
            self,
            Request::ConsistentGet { .. }
                | Request::Write(_)
                | Request::Export
                | Request::ForceLeave { .. }
                | Request::GetWithMeta { consistent: true, .. }
        )
    }

    /// True for the reads a member answers from its own applied state (keys
    /// and records): a member's router holds them behind its
    /// [read barrier](cluster_core::ConsensusStore::read_barrier), in step
    /// with what the leader answered that member.
    pub fn reads_local_state(&self) -> bool {
        matches!(
            self,
            Request::Get { .. }
                | Request::GetPrefix { .. }
                | Request::GetPrefixWithRevision { .. }
                | Request::GetWithMeta { consistent: false, .. }
                | Request::Members
                | Request::ReadAt { .. }
        )
    }

    /// The keys a read of the local kind covers ([`reads_local_state`](Self::reads_local_state));
    /// `None` for any other request.
    pub fn scope(&self) -> Option<KeyScope<'_>> {
        match self {
            Request::Get { key } | Request::GetWithMeta { key, consistent: false } => {
                Some(KeyScope::Key(key))
            }
            Request::GetPrefix { prefix } | Request::GetPrefixWithRevision { prefix } => {
                Some(KeyScope::Prefix(prefix))
            }
            Request::Members => Some(KeyScope::Prefix(cluster_core::keys::MEMBERS_PREFIX)),
            Request::ReadAt { read, .. } => read.scope(),
            _ => None,
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answer to `Get` and `ConsistentGet`.
    Value(Option<Vec<u8>>),
    /// Answer to `GetPrefix`.
    Entries(Vec<(String, Vec<u8>)>),
    /// Answer to `Write`.
    Written(WriteOutcome),
    /// Answer to `Members`.
    Members(Vec<MemberInfo>),
    /// Answer to `Status`.
    Status(Box<ConsensusStatus>),
    /// Answer to `Export`: every entry of the store at `revision`.
    Export {
        /// The store's revision the entries are of.
        revision: u64,
        /// Every entry, in key order, the cluster's own records included.
        entries: Vec<(String, Vec<u8>)>,
    },
    /// Answer to `ForceLeave`: what there was to remove.
    ForceLeft(ForceLeft),
    /// Answer to `Liveness`.
    Liveness(BTreeMap<MemberId, Liveness>),
    /// The request failed; [`Error::NotLeader`] carries the leader the member knows.
    Err(Error),
    /// One part of the answer to `Watch`.
    Event(WatchEvent),
    /// Answer to `GetPrefixWithRevision`.
    EntriesAt {
        /// The store's revision the entries are of.
        revision: u64,
        /// The entries under the prefix, in key order.
        entries: Vec<(String, Vec<u8>)>,
    },
    /// Answer to `KeyringList` and `KeyringChange`: the ring after it.
    Keyring(KeyringState),
    /// Answer to `MemberStatus`.
    MemberStatus(Box<MemberStatus>),
    /// Answer to `GetWithMeta`.
    ValueWithMeta(Option<(Vec<u8>, KeyMeta)>),
    /// Answer to `ReadAt`: the read's answer and the revision of the state it read.
    ReadAt {
        /// The store's revision the read was served at (at least the one asked).
        revision: u64,
        /// The read's answer.
        answer: Box<Response>,
    },
}

impl Response {
    /// A short name for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Value(_) => "value",
            Response::Entries(_) => "entries",
            Response::Written(_) => "written",
            Response::Members(_) => "members",
            Response::Status(_) => "status",
            Response::Export { .. } => "export",
            Response::ForceLeft(_) => "force left",
            Response::Liveness(_) => "liveness",
            Response::Err(_) => "error",
            Response::Event(_) => "event",
            Response::EntriesAt { .. } => "entries at",
            Response::Keyring(_) => "keyring",
            Response::MemberStatus(_) => "member status",
            Response::ValueWithMeta(_) => "value with revisions",
            Response::ReadAt { .. } => "read at",
        }
    }
}

/// What a forced leave found to remove; all false: no such member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceLeft {
    /// It was a voter or nonvoter of raft.
    pub was_in_raft: bool,
    /// It held a short id, now free.
    pub held_short_id: bool,
    /// The cluster had a member record of it.
    pub had_record: bool,
}

impl cluster_rpc::Answer for Response {
    fn refused(error: Error) -> Self {
        Response::Err(error)
    }

    fn into_refusal(self) -> Result<Error, Self> {
        match self {
            Response::Err(e) => Ok(e),
            other => Err(other),
        }
    }
}

/// The codec of the server side: sends [`Response`]s, receives [`Request`]s.
pub type ServerCodec = WireCodec<Response, Request>;
/// The codec of the client side: sends [`Request`]s, receives [`Response`]s.
pub type ClientCodec = WireCodec<Request, Response>;

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(request: &str, response: &Response) -> Error {
    Error::Internal(format!("{request} was answered with {}", response.kind()))
}

impl Response {
    /// The typed answer to `Get` or `ConsistentGet`.
    pub(crate) fn into_value(self) -> Result<Option<Vec<u8>>> {
        match self {
            Response::Value(v) => Ok(v),
            Response::Err(e) => Err(e),
            other => Err(unexpected("get", &other)),
        }
    }

    /// The typed answer to `GetPrefix`.
    pub(crate) fn into_entries(self) -> Result<Vec<(String, Vec<u8>)>> {
        match self {
            Response::Entries(v) => Ok(v),
            Response::Err(e) => Err(e),
            other => Err(unexpected("get prefix", &other)),
        }
    }

    /// The typed answer to `GetPrefixWithRevision`.
    pub(crate) fn into_entries_at(self) -> Result<(u64, cluster_core::Entries)> {
        match self {
            Response::EntriesAt { revision, entries } => Ok((revision, entries)),
            Response::Err(e) => Err(e),
            other => Err(unexpected("get prefix with revision", &other)),
        }
    }

    /// The typed answer to `Write`.
    pub(crate) fn into_outcome(self) -> Result<WriteOutcome> {
        match self {
            Response::Written(o) => Ok(o),
            Response::Err(e) => Err(e),
            other => Err(unexpected("write", &other)),
        }
    }

    /// The typed answer to `Members`.
    pub(crate) fn into_members(self) -> Result<Vec<MemberInfo>> {
        match self {
            Response::Members(m) => Ok(m),
            Response::Err(e) => Err(e),
            other => Err(unexpected("members", &other)),
        }
    }

    /// The typed answer to `GetWithMeta`.
    pub(crate) fn into_value_with_meta(self) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        match self {
            Response::ValueWithMeta(v) => Ok(v),
            Response::Err(e) => Err(e),
            other => Err(unexpected("get with revisions", &other)),
        }
    }

    /// The typed answer to `MemberStatus`.
    pub(crate) fn into_member_status(self) -> Result<MemberStatus> {
        match self {
            Response::MemberStatus(s) => Ok(*s),
            Response::Err(e) => Err(e),
            other => Err(unexpected("member status", &other)),
        }
    }

    /// The typed answer to `Status`.
    pub(crate) fn into_status(self) -> Result<ConsensusStatus> {
        match self {
            Response::Status(s) => Ok(*s),
            Response::Err(e) => Err(e),
            other => Err(unexpected("status", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use cluster_core::wire::Frame;
    use cluster_core::{LeaderHint, MemberId, WriteOp};
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn requests_and_responses_roundtrip() {
        let mut client = ClientCodec::new("c", 1 << 16);
        let mut server = ServerCodec::new("c", 1 << 16);
        let requests = [
            Request::Get { key: "a".into() },
            Request::ConsistentGet { key: "b".into() },
            Request::GetPrefix { prefix: "p/".into() },
            Request::Write(WriteRequest::new(WriteOp::Set { key: "k".into(), value: vec![1] })),
            Request::Members,
            Request::Status,
            Request::Export,
            Request::ForceLeave { member: MemberId::generate() },
            Request::Liveness,
            Request::Watch { prefix: "w/".into(), from_revision: Some(7) },
            Request::GetPrefixWithRevision { prefix: "p/".into() },
            Request::MemberStatus,
            Request::GetWithMeta { key: "k".into(), consistent: true },
            Request::ReadAt { min_revision: 9, read: Box::new(Request::Get { key: "u".into() }) },
        ];
        let mut buf = BytesMut::new();
        for (i, r) in requests.iter().enumerate() {
            client.encode(Frame { request_id: i as u64 + 1, body: r.clone() }, &mut buf).unwrap();
        }
        for (i, r) in requests.iter().enumerate() {
            let f = server.decode(&mut buf).unwrap().unwrap().unwrap();
            assert_eq!((f.request_id, &f.body), (i as u64 + 1, r));
        }
        let hint = LeaderHint { member_id: MemberId::generate(), service_addr: Some("h:1".into()) };
        let answer = Response::Err(Error::NotLeader(Some(hint)));
        server.encode(Frame { request_id: 9, body: answer.clone() }, &mut buf).unwrap();
        assert_eq!(client.decode(&mut buf).unwrap().unwrap().unwrap().body, answer);
        let answer = Response::ReadAt { revision: 12, answer: Box::new(Response::Value(Some(vec![3]))) };
        server.encode(Frame { request_id: 10, body: answer.clone() }, &mut buf).unwrap();
        assert_eq!(client.decode(&mut buf).unwrap().unwrap().unwrap().body, answer);
    }
}
