//! The guard's checks, one refusal at a time.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{CommittedLeaderId, Entry, SnapshotMeta, StoredMembership};

use super::*;
use crate::typecfg::{TypeConfig, WriteBatch};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

fn id(n: u64) -> MemberId {
    MemberId::from(n)
}

fn membership(voters: &[u64], learners: &[u64]) -> Membership<MemberId, Endpoints> {
    let nodes: BTreeMap<MemberId, Endpoints> =
        voters.iter().chain(learners).map(|n| (id(*n), Endpoints::default())).collect();
    Membership::new(vec![voters.iter().map(|n| id(*n)).collect::<BTreeSet<_>>()], nodes)
}

const LIMITS: GuardLimits = GuardLimits { max_snapshot_bytes: 1 << 20 };

fn log_id(term: u64, leader: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, id(leader)), index)
}

/// Member 1 in term 5: no vote cast, no leader known, nothing applied.
fn view_at_term_5() -> View {
    View { member_id: id(1), current_term: 5, voted_for: None, leader_committed: false, last_applied: None }
}

fn check(view: &View, rpc: &RaftRpc) -> Result<(), GuardError> {
    check_rpc(view, &LIMITS, &mut None, rpc)
}

fn append(term: u64, leader: u64, prev: Option<LogId>, entries: Vec<Entry<TypeConfig>>) -> RaftRpc {
    RaftRpc::AppendEntries(AppendEntriesRequest {
        vote: Vote::new_committed(term, id(leader)),
        prev_log_id: prev,
        entries,
        leader_commit: None,
    })
}

fn blank(log_id: LogId) -> Entry<TypeConfig> {
    Entry { log_id, payload: EntryPayload::Blank }
}

fn normal(log_id: LogId) -> Entry<TypeConfig> {
    Entry { log_id, payload: EntryPayload::Normal(WriteBatch::default()) }
}

fn vote(term: u64, candidate: u64) -> RaftRpc {
    RaftRpc::Vote(VoteRequest { vote: Vote::new(term, id(candidate)), last_log_id: None })
}

#[test]
fn a_certified_caller_speaks_only_for_itself() {
    let append = append(5, 2, None, Vec::new());
    for rpc in [vote(6, 2), append.clone(), chunk(2, "s", 0, 1, true)] {
        assert_eq!(check_sender(Some(id(2)), &rpc), Ok(()));
        assert_eq!(
            check_sender(Some(id(3)), &rpc),
            Err(GuardError::NotTheSender { claimed: id(2), certified: id(3) })
        );
        // No identity (plain TCP, older certificates): the claim stands.
        assert_eq!(check_sender(None, &rpc), Ok(()));
    }
    assert_eq!(check_sender(Some(id(3)), &RaftRpc::AppliedIndex), Ok(()));
}

#[test]
fn a_request_meant_for_another_member_is_refused() {
    assert_eq!(check_target(id(1), id(1)), Ok(()));
    assert_eq!(check_target(id(2), id(1)), Err(GuardError::NotTheTarget { to: id(2), receiver: id(1) }));
}

fn chunk(leader: u64, snapshot: &str, offset: u64, len: usize, done: bool) -> RaftRpc {
    RaftRpc::InstallSnapshot(InstallSnapshotRequest {
        vote: Vote::new_committed(5, id(leader)),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(5, leader, 10)),
            last_membership: StoredMembership::new(Some(log_id(1, leader, 1)), membership(&[1, 2, 3], &[])),
            snapshot_id: snapshot.to_owned(),
        },
        offset,
        data: vec![0; len],
        done,
    })
}

#[test]
fn terms_are_bounded_relative_to_ours_and_absolutely() {
    let view = view_at_term_5();
    assert_eq!(check(&view, &vote(6, 2)), Ok(()));
    assert_eq!(check(&view, &vote(5 + TERM_STEP, 2)), Ok(()));
    assert!(matches!(check(&view, &vote(6 + TERM_STEP, 2)), Err(GuardError::TermTooHigh { .. })));
    assert!(matches!(check(&view, &append(u64::MAX, 2, None, vec![])), Err(GuardError::TermTooHigh { .. })));
    let high = View { current_term: MAX_TERM - 1, ..view };
    assert_eq!(check(&high, &vote(MAX_TERM, 2)), Ok(()));
    assert!(matches!(
        check(&high, &vote(MAX_TERM + 1, 2)),
        Err(GuardError::TermTooHigh { limit: MAX_TERM, .. })
    ));
    // A member already at u64::MAX (restored before the guard existed) does not overflow.
    let top = View { current_term: u64::MAX, ..view };
    assert!(check(&top, &vote(u64::MAX, 2)).is_err());
}

#[test]
fn log_ids_are_bounded_by_index_and_by_the_vote_term() {
    let view = view_at_term_5();
    let huge = append(5, 2, Some(log_id(5, 2, u64::MAX)), vec![]);
    assert!(matches!(check(&view, &huge), Err(GuardError::IndexTooHigh { .. })));
    let above = append(5, 2, Some(log_id(6, 2, 3)), vec![]);
    assert!(matches!(check(&view, &above), Err(GuardError::LogAboveVote { .. })));
    // At an applied index, nothing above what was applied there.
    let applied = View { last_applied: Some(log_id(4, 2, 10)), ..view };
    let ok = append(5, 2, Some(log_id(4, 2, 9)), vec![normal(log_id(4, 2, 10))]);
    assert_eq!(check(&applied, &ok), Ok(()));
    assert_eq!(check(&applied, &append(5, 2, Some(log_id(3, 2, 9)), vec![])), Ok(()));
    let below = append(5, 2, Some(log_id(4, 2, 10)), vec![normal(log_id(3, 2, 11))]);
    assert!(matches!(check(&applied, &below), Err(GuardError::ConflictsWithApplied { .. })));
    let other = append(5, 2, Some(log_id(3, 2, 10)), vec![]);
    assert!(matches!(check(&applied, &other), Err(GuardError::ConflictsWithApplied { .. })));
    let above = append(5, 2, Some(log_id(5, 2, 9)), vec![]);
    assert!(matches!(check(&applied, &above), Err(GuardError::ConflictsWithApplied { .. })));
    let above = append(5, 2, Some(log_id(4, 2, 9)), vec![normal(log_id(5, 2, 10))]);
    assert!(matches!(check(&applied, &above), Err(GuardError::ConflictsWithApplied { .. })));
    let next = append(5, 2, Some(log_id(4, 2, 10)), vec![normal(log_id(5, 2, 11))]);
    assert_eq!(check(&applied, &next), Ok(()));
    let candidate =
        RaftRpc::Vote(VoteRequest { vote: Vote::new(6, id(2)), last_log_id: Some(log_id(7, 2, 1)) });
    assert!(matches!(check(&view, &candidate), Err(GuardError::LogAboveVote { .. })));
}

#[test]
fn a_term_has_one_leader() {
    let view = View { last_applied: Some(log_id(4, 3, 10)), ..view_at_term_5() };
    // The sender's term names the sender; an applied term names its leader.
    let other = append(5, 2, Some(log_id(4, 3, 10)), vec![normal(log_id(5, 3, 11))]);
    assert!(matches!(check(&view, &other), Err(GuardError::TwoLeadersInTerm { .. })));
    let commit = RaftRpc::AppendEntries(AppendEntriesRequest {
        vote: Vote::new_committed(5, id(2)),
        prev_log_id: Some(log_id(4, 3, 10)),
        entries: vec![],
        leader_commit: Some(log_id(4, 2, 9)),
    });
    assert!(matches!(check(&view, &commit), Err(GuardError::TwoLeadersInTerm { .. })));
    let good = append(5, 2, Some(log_id(4, 3, 10)), vec![normal(log_id(5, 2, 11))]);
    assert_eq!(check(&view, &good), Ok(()));
}

#[test]
fn entries_must_follow_the_previous_log_id() {
    let view = view_at_term_5();
    let prev = Some(log_id(4, 2, 7));
    let good = append(5, 2, prev, vec![normal(log_id(4, 2, 8)), blank(log_id(5, 2, 9))]);
    assert_eq!(check(&view, &good), Ok(()));
    let from_start = append(5, 2, None, vec![blank(log_id(1, 2, 0)), blank(log_id(1, 2, 1))]);
    assert_eq!(check(&view, &from_start), Ok(()));
    let gap = append(5, 2, prev, vec![normal(log_id(4, 2, 9))]);
    assert!(matches!(check(&view, &gap), Err(GuardError::EntriesOutOfOrder(_))));
    let back = append(5, 2, prev, vec![normal(log_id(3, 2, 8))]);
    assert!(matches!(check(&view, &back), Err(GuardError::EntriesOutOfOrder(_))));
    let empty = Membership::new(vec![BTreeSet::new()], ());
    let bad =
        append(5, 2, prev, vec![Entry { log_id: log_id(5, 2, 8), payload: EntryPayload::Membership(empty) }]);
    assert!(matches!(check(&view, &bad), Err(GuardError::BadMembership(_))));
    let none = Membership::new(vec![], ());
    let bad =
        append(5, 2, prev, vec![Entry { log_id: log_id(5, 2, 8), payload: EntryPayload::Membership(none) }]);
    assert!(matches!(check(&view, &bad), Err(GuardError::BadMembership(_))));
}

#[test]
fn votes_are_openraft_s_to_weigh_but_never_from_self_or_committed() {
    let view = view_at_term_5();
    assert_eq!(check(&view, &vote(6, 3)), Ok(()));
    // Outside this member's (possibly stale) membership: openraft answers
    // with this member's vote, which tells a removed member the term.
    assert_eq!(check(&view, &vote(6, 99)), Ok(()));
    assert_eq!(check(&view, &vote(6, 1)), Err(GuardError::FromSelf));
    let committed = RaftRpc::Vote(VoteRequest { vote: Vote::new_committed(6, id(2)), last_log_id: None });
    assert_eq!(check(&view, &committed), Err(GuardError::CommittedVoteRequest { member: id(2) }));
}

#[test]
fn replication_needs_a_committed_leader_vote_not_a_known_member() {
    let view = view_at_term_5();
    assert_eq!(check(&view, &append(5, 2, None, vec![])), Ok(()));
    // A leader elected under a membership this member has not received
    // yet, or a stale one that must hear this member's vote to step down.
    assert_eq!(check(&view, &append(5, 99, None, vec![])), Ok(()));
    assert_eq!(check(&view, &append(4, 99, None, vec![])), Ok(()));
    // But once the leader of the term is known, another one is forged.
    let known = View { voted_for: Some(id(2)), leader_committed: true, ..view };
    assert_eq!(check(&known, &append(5, 2, None, vec![])), Ok(()));
    assert!(matches!(check(&known, &append(5, 99, None, vec![])), Err(GuardError::TwoLeadersInTerm { .. })));
    assert_eq!(check(&known, &append(6, 99, None, vec![])), Ok(()));
    let uncommitted = RaftRpc::AppendEntries(AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(5, id(2)),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    });
    assert!(matches!(check(&view, &uncommitted), Err(GuardError::UncommittedLeaderVote { .. })));
}

#[test]
fn snapshot_chunks_follow_the_bytes_received() {
    let view = view_at_term_5();
    let mut p = None;
    let mut run = |rpc: &RaftRpc| check_rpc(&view, &LIMITS, &mut p, rpc);
    assert!(matches!(
        run(&chunk(2, "s", 100, 10, false)),
        Err(GuardError::SnapshotOffset { expected: 0, .. })
    ));
    assert_eq!(run(&chunk(2, "s", 0, 100, false)), Ok(()));
    assert_eq!(
        run(&chunk(2, "s", 1 << 40, 10, false)),
        Err(GuardError::SnapshotTooLarge { snapshot_id: "s".into(), end: (1 << 40) + 10, max: 1 << 20 })
    );
    assert!(matches!(
        run(&chunk(2, "s", 150, 10, false)),
        Err(GuardError::SnapshotOffset { expected: 100, .. })
    ));
    assert!(matches!(
        run(&chunk(3, "s", 100, 10, false)),
        Err(GuardError::SnapshotOffset { expected: 0, .. })
    ));
    assert!(matches!(
        run(&chunk(2, "t", 100, 10, false)),
        Err(GuardError::SnapshotOffset { expected: 0, .. })
    ));
    assert_eq!(run(&chunk(2, "s", 100, 50, false)), Ok(()));
    assert_eq!(run(&chunk(2, "s", 100, 50, false)), Ok(()), "a resent chunk");
    assert_eq!(run(&chunk(2, "s", 150, 50, true)), Ok(()));
    // Done: the next chunk of it has nothing to follow.
    assert!(matches!(
        run(&chunk(2, "s", 200, 10, false)),
        Err(GuardError::SnapshotOffset { expected: 0, .. })
    ));
    assert!(matches!(run(&chunk(2, "s", u64::MAX, 10, false)), Err(GuardError::SnapshotTooLarge { .. })));
    // A restart at offset 0 replaces the snapshot in progress.
    assert_eq!(run(&chunk(2, "s", 0, 10, false)), Ok(()));
    assert_eq!(run(&chunk(3, "u", 0, 10, false)), Ok(()));
    assert!(matches!(run(&chunk(2, "s", 10, 10, false)), Err(GuardError::SnapshotOffset { .. })));
}

#[test]
fn refusals_are_logged_once_per_interval_per_source() {
    let mut log = RefusalLog::default();
    let t0 = Instant::now();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    assert_eq!(log.record(a, t0), Some(1));
    assert_eq!(log.record(a, t0 + Duration::from_secs(1)), None);
    assert_eq!(log.record(b, t0 + Duration::from_secs(1)), Some(1));
    assert_eq!(log.record(a, t0 + Duration::from_secs(2)), None);
    assert_eq!(log.record(a, t0 + LOG_INTERVAL + Duration::from_secs(1)), Some(3));
    for i in 0..LOGGED_SOURCES as u32 * 2 {
        let _ = log.record(IpAddr::from(std::net::Ipv4Addr::from(i + 1000)), t0);
    }
    assert!(log.sources.len() <= LOGGED_SOURCES);
}
