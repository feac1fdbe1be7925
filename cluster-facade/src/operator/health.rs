//! [`Readiness`]: whether a member can serve now, decided from what it knows
//! about consensus, without I/O (the HTTP API's `/health/ready` and the
//! agent's ready line use it).

use std::time::Duration;

use cluster_core::{ConsensusProgress, ConsensusStatus, MemberId, ShortId};
use serde::Serialize;

/// Committed entries a member may still have to apply and count as ready.
pub const READY_MAX_APPLY_LAG: u64 = 1000;

/// Whether a member can serve, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// True when every check passed.
    pub ready: bool,
    /// This member's short id, if it holds one.
    pub short_id: Option<ShortId>,
    /// The leader this member knows.
    pub leader: Option<MemberId>,
    /// The last committed index this member knows.
    pub committed_index: Option<u64>,
    /// The last index it applied.
    pub applied_index: Option<u64>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub quorum_ack_age_ms: Option<u64>,
    /// Every check that failed, in words.
    pub problems: Vec<String>,
}

impl Readiness {
    /// Decides from this member's view. A leader whose quorum has not
    /// acknowledged it for `lost_after` counts as having lost its quorum (a
    /// follower cut off from the leader stops knowing one at its next
    /// election timeout).
    pub fn assess(
        short_id: Option<ShortId>,
        status: &ConsensusStatus,
        progress: &ConsensusProgress,
        lost_after: Duration,
    ) -> Readiness {
        let mut problems = Vec::new();
        if short_id.is_none() {
            problems.push("holds no short id".to_owned());
        }
        match status.leader {
            None => problems.push("no leader known (no quorum, or an election is running)".to_owned()),
            Some(_) if status.is_leader() => match progress.quorum_ack_age {
                Some(age) if age <= lost_after => {}
                Some(age) => problems.push(format!(
                    "leads, but no quorum acknowledged it for {} ms: the quorum is lost",
                    age.as_millis()
                )),
                None => problems.push("leads, but no quorum acknowledged it yet".to_owned()),
            },
            Some(_) => {}
        }
        // Without a commit index (a backend that does not say), the last log
        // index bounds it from above.
        let committed = progress.committed_index.or(status.last_log_index);
        let applied = status.applied_index;
        let lag = committed.unwrap_or(0).saturating_sub(applied.unwrap_or(0));
        if lag > READY_MAX_APPLY_LAG {
            problems.push(format!("{lag} committed entries not applied yet"));
        }
        Readiness {
            ready: problems.is_empty(),
            short_id,
            leader: status.leader,
            committed_index: committed,
            applied_index: applied,
            quorum_ack_age_ms: progress
                .quorum_ack_age
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::Endpoints;

    const LOST: Duration = Duration::from_millis(900);

    fn status(me: MemberId, leader: Option<MemberId>) -> ConsensusStatus {
        let mut s = ConsensusStatus { member_id: me, leader, applied_index: Some(10), ..Default::default() };
        s.voters.insert(me, Endpoints::default());
        s
    }

    fn progress(committed: u64, age_ms: Option<u64>) -> ConsensusProgress {
        ConsensusProgress {
            committed_index: Some(committed),
            quorum_ack_age: age_ms.map(Duration::from_millis),
            ..Default::default()
        }
    }

    #[test]
    fn a_follower_with_a_leader_and_little_to_apply_is_ready() {
        let me = MemberId::generate();
        let r = Readiness::assess(
            Some(ShortId::new(1).unwrap()),
            &status(me, Some(MemberId::generate())),
            &progress(12, None),
            LOST,
        );
        assert!(r.ready, "{r:?}");
    }

    #[test]
    fn no_short_id_no_leader_or_a_long_apply_lag_is_not_ready() {
        let me = MemberId::generate();
        let r =
            Readiness::assess(None, &status(me, None), &progress(10 + READY_MAX_APPLY_LAG + 1, None), LOST);
        assert!(!r.ready);
        assert_eq!(r.problems.len(), 3, "{r:?}");
    }

    #[test]
    fn a_leader_without_quorum_contact_is_not_ready() {
        let me = MemberId::generate();
        let id = Some(ShortId::new(1).unwrap());
        assert!(Readiness::assess(id, &status(me, Some(me)), &progress(10, Some(50)), LOST).ready);
        let r = Readiness::assess(id, &status(me, Some(me)), &progress(10, Some(1500)), LOST);
        assert!(!r.ready && r.problems[0].contains("quorum"), "{r:?}");
    }
}
