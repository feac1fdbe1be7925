//! What a member knows about consensus and about other members, in the
//! shapes every surface reports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{MemberId, ShortId};
use crate::role::RaftRole;

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
