//! The raft guard: every raft RPC is checked here before openraft sees it.
//!
//! openraft trusts its peers. Fed a hostile or corrupt frame it panics
//! (`term + 1` overflows once a vote of term `u64::MAX` is persisted, so the
//! raft core dies again on every restart; a debug assertion fires on entries
//! that do not follow `prev_log_id`), or it aborts the process (a snapshot
//! chunk at offset 2^40 makes the receiving buffer seek and grow to 1 TiB).
//! [`RaftGuard::check`] refuses such frames with a typed [`GuardError`],
//! which the server answers to the caller instead of calling openraft, and
//! logs at most once per [`LOG_INTERVAL`] per source, with a count.
//!
//! # What is refused, and why the bounds are safe
//!
//! - **Terms.** A term grows by one per election, at most once per election
//!   timeout (≥ 150 ms in practice), so a legitimate term is tiny: 2^32
//!   elections take 20 years at one per 150 ms. A term is refused if it is
//!   more than [`TERM_STEP`] (2^32) above this member's current term, or above
//!   [`MAX_TERM`] (`u64::MAX / 2`), whichever is lower. The relative bound
//!   keeps one forged frame from moving the cluster's term far; the absolute
//!   one makes overflow unreachable even for a peer that ratchets the term up
//!   2^32 at a time: a member that accepted [`MAX_TERM`] still has 2^63
//!   elections before `term + 1` overflows. The price: a peer that could
//!   forge 2^31 accepted frames could pin the term at the ceiling, after which
//!   elections above it are refused (the cluster stops electing, no member
//!   panics); and a member that missed such a ratchet while down may find the
//!   leader's term more than 2^32 above its own. Both need frames that pass
//!   openraft's own vote checks, i.e. a peer with member credentials.
//!   Every log id in a request (previous, entries, commit, last log of a
//!   candidate, snapshot) must also have a term no higher than the sender's
//!   vote: raft never creates a log entry above its leader's term.
//! - **Indexes** above [`MAX_INDEX`] (`u64::MAX / 2`): openraft computes
//!   `index + 1` in many places; a legitimate log at a million entries a
//!   second reaches 2^63 in 290,000 years. No relative bound: a new learner
//!   at index 0 legitimately hears of a leader's log millions of entries ahead.
//! - **Shape of AppendEntries**: entries must follow `prev_log_id` one index
//!   at a time with non-decreasing terms (openraft asserts it); a log id at
//!   an index this member already applied may not be greater than its last
//!   applied log id, nor one at a later index below it, nor another at its
//!   index (log ids only grow along a log, and a leader's log holds what this
//!   member applied; openraft asserts it for the committed part, and takes a
//!   previous log id at a committed index as matching without comparing);
//!   a log id of a
//!   term names that term's leader (the sender's, for the sender's term; the
//!   one of this member's last applied entry, for that term), since raft
//!   elects one leader per term and openraft's invariants (committed ≤ last
//!   log id) fail otherwise; and every
//!   membership (in an entry or a snapshot) must have one or two non-empty
//!   configs whose voters all have an address.
//! - **Who may send** (the sender is the member id in the request's vote;
//!   without TLS it is a claim, with member certificates the transport ties
//!   it to the peer):
//!   - nothing claims to come from this member itself (a member never sends
//!     raft RPC to itself; a frame that did would make the leader follow its
//!     own forged entries);
//!   - a **Vote** comes from a voter of this member's membership (any config
//!     of a joint one): only voters campaign. A member with no membership
//!     yet (waiting to be added, or one that lost its log) refuses every
//!     Vote: its vote is not needed by any legitimate candidate, since a
//!     member is added as a nonvoter and catches up before it is promoted,
//!     and a member that lost its log must not vote (raft's safety). A
//!     candidate's vote is never committed; a committed one is refused;
//!   - an **AppendEntries** or **InstallSnapshot** carries a committed vote
//!     (a leader's always is; openraft asserts it), and once this member
//!     knows the leader of its term, no other member may claim that term.
//!     Membership is deliberately not checked: a member's view of it lags
//!     (a newly elected leader it has not heard of yet; a removed, paused
//!     leader that must hear this member's higher vote in openraft's answer
//!     to step down). Refusing those stranded members in the fault tests;
//!     who may reach the raft port at all is mutual TLS's job (members only).
//! - **Snapshot chunks**: the offset must be 0 (a new or restarted
//!   snapshot), the bytes received so far of the snapshot in progress, or
//!   the offset of its last chunk again (openraft resends a chunk whose
//!   answer was lost). The end of a chunk may not pass
//!   [`GuardLimits::max_snapshot_bytes`]. Like openraft's own receiving
//!   buffer, the guard follows one snapshot at a time, so its memory is
//!   bounded.
//!
//! The decision is a pure function ([`check_rpc`]) of the request, what this
//! member knows ([`View`]) and the snapshot in progress; [`RaftGuard`] feeds
//! it from raft's metrics and keeps the snapshot progress and the log
//! counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_core::{Endpoints, MemberId};
use openraft::{EntryPayload, Membership, RaftMetrics};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::RaftRpc;
use crate::typecfg::{LogId, Vote};

/// How far above this member's current term a request's term may be.
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))] // tests write it raw: `crate::testsuite`
pub const TERM_STEP: u64 = 1 << 32;
/// No term above this is accepted (see the module doc).
pub(crate) const MAX_TERM: u64 = u64::MAX / 2;
/// No log index above this is accepted.
pub(crate) const MAX_INDEX: u64 = u64::MAX / 2;
/// Repeated refusals from one source are logged at most once per interval.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Sources whose refusals are counted separately; more share one counter.
const LOGGED_SOURCES: usize = 1024;

/// Why a raft RPC was refused. It travels back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(not(feature = "testsuite"), allow(unreachable_pub))] // tests write it raw: `crate::testsuite`
pub enum GuardError {
    /// A term too far above this member's, or past the ceiling.
    #[error("{what} has term {term}, above the limit of {limit}")]
    TermTooHigh {
        /// Which part of the request.
        what: String,
        /// The term found.
        term: u64,
        /// The highest term accepted now.
        limit: u64,
    },
    /// A log index past the ceiling.
    #[error("{what} has index {index}, above the limit of {limit}")]
    IndexTooHigh {
        /// Which part of the request.
        what: String,
        /// The index found.
        index: u64,
        /// The highest index accepted.
        limit: u64,
    },
    /// A log id with a term above the sender's vote.
    #[error("{what} has term {term}, above the sender's vote term {vote_term}")]
    LogAboveVote {
        /// Which part of the request.
        what: String,
        /// The log id's term.
        term: u64,
        /// The vote's term.
        vote_term: u64,
    },
    /// A log id out of order with this member's last applied one: greater
    /// at an earlier index, smaller at a later one, or another at its index.
    #[error("{what} {log_id} is out of order with this member's last applied log id")]
    ConflictsWithApplied {
        /// Which part of the request.
        what: String,
        /// The log id.
        log_id: String,
    },
    /// A log id whose term had another leader (raft elects one per term).
    #[error("{what} {log_id} names another leader for its term")]
    TwoLeadersInTerm {
        /// Which part of the request.
        what: String,
        /// The log id.
        log_id: String,
    },
    /// Entries that do not follow the previous log id one by one.
    #[error("entries out of order: {0}")]
    EntriesOutOfOrder(String),
    /// A membership raft cannot work with.
    #[error("malformed membership: {0}")]
    BadMembership(String),
    /// The request claims to come from this member.
    #[error("request claims to come from this member")]
    FromSelf,
    /// A vote request with a committed vote (candidates never send one).
    #[error("vote request from {member} carries a committed vote")]
    CommittedVoteRequest {
        /// The candidate.
        member: MemberId,
    },
    /// A replication request whose vote is not committed (a leader's always is).
    #[error("{rpc} from {member} carries a vote that is not committed")]
    UncommittedLeaderVote {
        /// The RPC.
        rpc: String,
        /// The claimed sender.
        member: MemberId,
    },
    /// A snapshot chunk not at the bytes received so far.
    #[error("snapshot {snapshot_id:?} chunk at offset {offset}, expected {expected}")]
    SnapshotOffset {
        /// The snapshot.
        snapshot_id: String,
        /// The chunk's offset.
        offset: u64,
        /// The offset expected (0 if no such snapshot is in progress).
        expected: u64,
    },
    /// A snapshot past the size bound.
    #[error("snapshot {snapshot_id:?} would reach {end} bytes, above the limit of {max}")]
    SnapshotTooLarge {
        /// The snapshot.
        snapshot_id: String,
        /// Where the chunk would end (saturated).
        end: u64,
        /// The bound.
        max: u64,
    },
    // New variants go last: the enum travels in bincode, by variant index.
    /// The request claims another sender than the member the connection's
    /// certificate names: one member posing as another.
    #[error("request claims to come from member {claimed}, but the certificate names member {certified}")]
    NotTheSender {
        /// The sender the request's vote names.
        claimed: MemberId,
        /// The member the caller's certificate names.
        certified: MemberId,
    },
    /// The request is meant for another member than the one it reached:
    /// two members answer at one address (a copied configuration, a
    /// phantom in gossip). Refused, so that nothing sent to one is ever
    /// counted as the other's answer.
    #[error("request meant for member {to} reached member {receiver}")]
    NotTheTarget {
        /// The member the sender meant to reach.
        to: MemberId,
        /// The member that received it.
        receiver: MemberId,
    },
}

/// The bounds the guard enforces that come from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuardLimits {
    /// The largest snapshot received.
    pub max_snapshot_bytes: u64,
}

/// What this member knows that the decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    /// This member.
    pub member_id: MemberId,
    /// Its current term.
    pub current_term: u64,
    /// The member its vote is for in that term (the leader it follows, or
    /// the candidate it voted for), if any.
    pub voted_for: Option<MemberId>,
    /// Whether that vote is committed: a leader of `current_term` is known.
    pub leader_committed: bool,
    /// The last log id it applied.
    pub last_applied: Option<LogId>,
}

/// The snapshot being received: whose, which, and how far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotProgress {
    /// The leader sending it.
    pub leader: MemberId,
    /// Its id.
    pub snapshot_id: String,
    /// Bytes received so far (the end of the furthest chunk).
    pub received: u64,
    /// The offset of the last chunk (a resend of it is accepted).
    pub last_offset: u64,
}

fn term_limit(current_term: u64) -> u64 {
    current_term.saturating_add(TERM_STEP).min(MAX_TERM)
}

fn check_vote(view: &View, what: &str, vote: &Vote) -> Result<(), GuardError> {
    let limit = term_limit(view.current_term);
    let term = vote.leader_id().term;
    if term > limit {
        return Err(GuardError::TermTooHigh { what: what.to_owned(), term, limit });
    }
    if vote.leader_id().node_id == view.member_id {
        return Err(GuardError::FromSelf);
    }
    Ok(())
}

fn check_log_id(vote: &Vote, what: &str, log_id: Option<&LogId>) -> Result<(), GuardError> {
    let Some(log_id) = log_id else { return Ok(()) };
    if log_id.index > MAX_INDEX {
        return Err(GuardError::IndexTooHigh {
            what: what.to_owned(),
            index: log_id.index,
            limit: MAX_INDEX,
        });
    }
    let vote_term = vote.leader_id().term;
    if log_id.leader_id.term > vote_term {
        return Err(GuardError::LogAboveVote {
            what: what.to_owned(),
            term: log_id.leader_id.term,
            vote_term,
        });
    }
    Ok(())
}

/// Checks that raft can work with `m`: one or two non-empty configs, every
/// voter with an address.
pub(crate) fn check_membership(m: &Membership<MemberId, Endpoints>) -> Result<(), GuardError> {
    let configs = m.get_joint_config();
    if configs.is_empty() || configs.len() > 2 {
        return Err(GuardError::BadMembership(format!("{} configs, expected 1 or 2", configs.len())));
    }
    if configs.iter().any(|c| c.is_empty()) {
        return Err(GuardError::BadMembership("an empty config".to_owned()));
    }
    if let Some(v) = m.voter_ids().find(|v| m.get_node(v).is_none()) {
        return Err(GuardError::BadMembership(format!("voter {v} has no address")));
    }
    Ok(())
}

/// Checks `log_id` against what this member and the request know of the
/// log: one leader per term (the vote's leader for its term, the leader of
/// this member's last applied entry for that term), and nothing above the
/// last applied log id at an applied index.
fn check_against_log(view: &View, vote: &Vote, what: &str, log_id: Option<&LogId>) -> Result<(), GuardError> {
    let Some(log_id) = log_id else { return Ok(()) };
    let known = [Some(LogId::new(*vote.leader_id(), 0)), view.last_applied];
    for leader in known.iter().flatten().map(|l| &l.leader_id) {
        if log_id.leader_id.term == leader.term && log_id.leader_id.node_id != leader.node_id {
            return Err(GuardError::TwoLeadersInTerm { what: what.to_owned(), log_id: log_id.to_string() });
        }
    }
    if let Some(applied) = view.last_applied.as_ref() {
        // Log ids grow along a log, and a leader's log holds what was applied.
        let before = log_id.index < applied.index && log_id > applied;
        let after = log_id.index >= applied.index && log_id < applied;
        let at = log_id.index == applied.index && log_id != applied;
        if before || after || at {
            return Err(GuardError::ConflictsWithApplied {
                what: what.to_owned(),
                log_id: log_id.to_string(),
            });
        }
    }
    Ok(())
}

/// Who may send a replication RPC (AppendEntries, InstallSnapshot): see the module doc.
fn check_leader(view: &View, rpc: &str, vote: &Vote) -> Result<(), GuardError> {
    let leader = vote.leader_id().node_id;
    if !vote.is_committed() {
        return Err(GuardError::UncommittedLeaderVote { rpc: rpc.to_owned(), member: leader });
    }
    // Raft elects at most one leader per term: once this member knows the
    // leader of its term, another one claiming it is forged. A stale leader
    // (a lower term) and a newer one (a higher term) go through: openraft's
    // answer makes the first step down and this member follow the second.
    let term = vote.leader_id().term;
    if term == view.current_term && view.leader_committed && view.voted_for != Some(leader) {
        return Err(GuardError::TwoLeadersInTerm {
            what: rpc.to_owned(),
            log_id: format!("leader {leader} of term {term}"),
        });
    }
    Ok(())
}

/// The decision for one RPC: `Ok` lets it through to openraft. Updates
/// `progress` for an accepted snapshot chunk.
/// The sender a request claims (its vote's member: the candidate or the
/// leader) must be the member the caller's certificate names, when it names
/// one: otherwise a member (or a stolen member certificate) could speak for
/// any other member, and be counted twice. Without TLS, or with certificates
/// made before identities, the claim is all there is.
pub(crate) fn check_sender(certified: Option<MemberId>, rpc: &RaftRpc) -> Result<(), GuardError> {
    let Some(certified) = certified else { return Ok(()) };
    let claimed = match rpc {
        RaftRpc::AppliedIndex => return Ok(()),
        RaftRpc::Vote(req) => req.vote.leader_id().node_id,
        RaftRpc::AppendEntries(req) => req.vote.leader_id().node_id,
        RaftRpc::InstallSnapshot(req) => req.vote.leader_id().node_id,
    };
    if claimed == certified { Ok(()) } else { Err(GuardError::NotTheSender { claimed, certified }) }
}

/// A request reaches only the member it is meant for.
pub(crate) fn check_target(to: MemberId, receiver: MemberId) -> Result<(), GuardError> {
    if to == receiver { Ok(()) } else { Err(GuardError::NotTheTarget { to, receiver }) }
}

pub(crate) fn check_rpc(
    view: &View,
    limits: &GuardLimits,
    progress: &mut Option<SnapshotProgress>,
    rpc: &RaftRpc,
) -> Result<(), GuardError> {
    match rpc {
        RaftRpc::AppliedIndex => Ok(()),
        RaftRpc::Vote(req) => {
            check_vote(view, "vote", &req.vote)?;
            check_log_id(&req.vote, "last log id", req.last_log_id.as_ref())?;
            check_against_log(view, &req.vote, "last log id", req.last_log_id.as_ref())?;
            let member = req.vote.leader_id().node_id;
            if req.vote.is_committed() {
                return Err(GuardError::CommittedVoteRequest { member });
            }
            // A candidate outside this member's membership is openraft's to
            // answer: its answer carries this member's vote, which is how a
            // removed or lagging member learns the term and stops campaigning.
            Ok(())
        }
        RaftRpc::AppendEntries(req) => {
            check_vote(view, "vote", &req.vote)?;
            check_log_id(&req.vote, "previous log id", req.prev_log_id.as_ref())?;
            check_log_id(&req.vote, "leader commit", req.leader_commit.as_ref())?;
            check_against_log(view, &req.vote, "previous log id", req.prev_log_id.as_ref())?;
            check_against_log(view, &req.vote, "leader commit", req.leader_commit.as_ref())?;
            let mut prev = req.prev_log_id;
            for entry in &req.entries {
                check_log_id(&req.vote, "entry", Some(&entry.log_id))?;
                check_against_log(view, &req.vote, "entry", Some(&entry.log_id))?;
                let expected = prev.map_or(0, |p| p.index + 1);
                if entry.log_id.index != expected {
                    return Err(GuardError::EntriesOutOfOrder(format!(
                        "entry {} where {expected} was expected",
                        entry.log_id.index
                    )));
                }
                if let Some(p) = prev
                    && entry.log_id.leader_id < p.leader_id
                {
                    return Err(GuardError::EntriesOutOfOrder(format!(
                        "entry {} has a lower leader than the one before",
                        entry.log_id.index
                    )));
                }
                if let EntryPayload::Membership(m) = &entry.payload {
                    check_membership(m)?;
                }
                prev = Some(entry.log_id);
            }
            check_leader(view, "append entries", &req.vote)
        }
        RaftRpc::InstallSnapshot(req) => {
            check_vote(view, "vote", &req.vote)?;
            check_log_id(&req.vote, "snapshot last log id", req.meta.last_log_id.as_ref())?;
            check_log_id(
                &req.vote,
                "snapshot membership log id",
                req.meta.last_membership.log_id().as_ref(),
            )?;
            check_membership(req.meta.last_membership.membership())?;
            check_against_log(view, &req.vote, "snapshot last log id", req.meta.last_log_id.as_ref())?;
            let membership_log_id = req.meta.last_membership.log_id().as_ref();
            check_against_log(view, &req.vote, "snapshot membership log id", membership_log_id)?;
            check_leader(view, "install snapshot", &req.vote)?;
            let snapshot_id = &req.meta.snapshot_id;
            let len = req.data.len() as u64;
            let end = req.offset.saturating_add(len);
            if end > limits.max_snapshot_bytes {
                return Err(GuardError::SnapshotTooLarge {
                    snapshot_id: snapshot_id.clone(),
                    end,
                    max: limits.max_snapshot_bytes,
                });
            }
            let leader = req.vote.leader_id().node_id;
            let next = if req.offset == 0 {
                SnapshotProgress { leader, snapshot_id: snapshot_id.clone(), received: end, last_offset: 0 }
            } else {
                match progress.as_ref() {
                    Some(p) if p.leader == leader && &p.snapshot_id == snapshot_id => {
                        if req.offset == p.received {
                            SnapshotProgress { received: end, last_offset: req.offset, ..p.clone() }
                        } else if req.offset == p.last_offset {
                            SnapshotProgress { received: p.received.max(end), ..p.clone() }
                        } else {
                            return Err(GuardError::SnapshotOffset {
                                snapshot_id: snapshot_id.clone(),
                                offset: req.offset,
                                expected: p.received,
                            });
                        }
                    }
                    _ => {
                        return Err(GuardError::SnapshotOffset {
                            snapshot_id: snapshot_id.clone(),
                            offset: req.offset,
                            expected: 0,
                        });
                    }
                }
            };
            *progress = if req.done { None } else { Some(next) };
            Ok(())
        }
    }
}

/// Counts refusals per source so that each is logged once per interval.
#[derive(Debug, Default)]
struct RefusalLog {
    sources: HashMap<IpAddr, (Instant, u64)>,
    /// Refusals from sources past [`LOGGED_SOURCES`], since the last report.
    others: u64,
}

impl RefusalLog {
    /// Records one refusal; returns how many refusals to report now
    /// (including this one), or `None` to stay quiet.
    fn record(&mut self, source: IpAddr, now: Instant) -> Option<u64> {
        if !self.sources.contains_key(&source) && self.sources.len() >= LOGGED_SOURCES {
            self.sources.retain(|_, (since, _)| now.duration_since(*since) < LOG_INTERVAL);
            if self.sources.len() >= LOGGED_SOURCES {
                self.others += 1;
                return None;
            }
        }
        match self.sources.get_mut(&source) {
            Some((since, count)) if now.duration_since(*since) < LOG_INTERVAL => {
                *count += 1;
                None
            }
            Some((since, count)) => {
                let report = *count + 1;
                *since = now;
                *count = 0;
                Some(report)
            }
            None => {
                self.sources.insert(source, (now, 0));
                Some(1)
            }
        }
    }
}

/// The guard of one member's raft port. Shared by every connection.
pub(crate) struct RaftGuard {
    metrics: watch::Receiver<RaftMetrics<MemberId, Endpoints>>,
    limits: GuardLimits,
    snapshot: Mutex<Option<SnapshotProgress>>,
    log: Mutex<RefusalLog>,
}

impl RaftGuard {
    /// A guard that reads term and membership from `metrics` (raft's own).
    pub(crate) fn new(
        metrics: watch::Receiver<RaftMetrics<MemberId, Endpoints>>,
        limits: GuardLimits,
    ) -> Self {
        RaftGuard { metrics, limits, snapshot: Mutex::new(None), log: Mutex::new(RefusalLog::default()) }
    }

    /// Checks `rpc` from `source` before raft sees it; a refusal is logged
    /// (rate-limited per source) and returned for the caller. `certified`
    /// is the member the caller's certificate names, if it names one; `to`
    /// the member the request is meant for.
    pub(crate) fn check(
        &self,
        source: IpAddr,
        certified: Option<MemberId>,
        to: MemberId,
        rpc: &RaftRpc,
    ) -> Result<(), GuardError> {
        let receiver = self.metrics.borrow().id;
        let result = check_target(to, receiver).and_then(|()| check_sender(certified, rpc)).and_then(|()| {
            if matches!(rpc, RaftRpc::AppliedIndex) {
                return Ok(());
            }
            let metrics = self.metrics.borrow();
            let view = View {
                member_id: metrics.id,
                current_term: metrics.current_term,
                voted_for: metrics.vote.leader_id().voted_for(),
                leader_committed: metrics.vote.is_committed(),
                last_applied: metrics.last_applied,
            };
            let mut progress = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            check_rpc(&view, &self.limits, &mut progress, rpc)
        });
        if let Err(e) = &result {
            let report = self.log.lock().unwrap_or_else(|p| p.into_inner()).record(source, Instant::now());
            if let Some(count) = report {
                tracing::warn!(%source, refused = count, error = %e, "refused raft input");
            }
        }
        result
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
