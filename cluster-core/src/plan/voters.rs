//! The voter plan: which raft membership changes keep the cluster at its
//! wanted number of voters, without ever risking quorum.
//!
//! The plan is a sequence of single changes. Each keeps a quorum of healthy
//! voters in the configuration before it and in the one after it — what
//! raft's joint consensus needs to commit the change. Rules, in order:
//! 1. a healthy member not in raft is added as a nonvoter;
//! 2. a gone nonvoter is removed;
//! 3. gone voters are removed — before their replacement is promoted: a dead
//!    voter beside its replacement makes four voters with one dead, which
//!    the replacement's own failure would leave without a quorum (found by
//!    the simulation, seeds 1146 and 2866); without it, three voters with
//!    one dead survive no other failure either, and the replacement's
//!    failure costs nothing. Removing a gone voter never costs the quorum
//!    (it is not counted on);
//! 4. healthy nonvoters are promoted (oldest first) while fewer voters than
//!    wanted are not gone;
//! 5. while more voters than wanted remain, suspect voters and then the
//!    newest healthy ones are demoted. The leader is never demoted or removed.
//!
//! Without a healthy quorum nothing can commit, so the plan is empty.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::MemberId;

/// How a member is doing, by what the leader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Alive in gossip.
    Healthy,
    /// Failed, but still within its grace period: keep it, do not count on it.
    Suspect,
    /// Left, or failed past its grace period: remove it.
    Gone,
}

/// A member's place in raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftMembership {
    /// Votes.
    Voter,
    /// Replicates without voting.
    Nonvoter,
    /// Not in raft.
    Absent,
}

/// One member as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanMember {
    /// The member.
    pub id: MemberId,
    /// Its place in raft now.
    pub raft: RaftMembership,
    /// Its health now.
    pub health: Health,
}

/// One raft membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VoterChange {
    /// Add as a nonvoter (learner).
    AddNonvoter(MemberId),
    /// Make a nonvoter a voter.
    Promote(MemberId),
    /// Make a voter a nonvoter.
    Demote(MemberId),
    /// Remove from raft.
    Remove(MemberId),
}

/// The changes to make, in order. `leader` is the member that will carry
/// them out; `wanted_voters` below 1 counts as 1.
pub fn plan_voters(members: &[PlanMember], wanted_voters: usize, leader: MemberId) -> Vec<VoterChange> {
    plan_voters_preferring(members, wanted_voters, leader, &[])
}

/// [`plan_voters`], promoting the nonvoters in `prefer` first, in its order
/// (the replica plan's zone spread), then the others, oldest first.
pub fn plan_voters_preferring(
    members: &[PlanMember],
    wanted_voters: usize,
    leader: MemberId,
    prefer: &[MemberId],
) -> Vec<VoterChange> {
    let wanted = wanted_voters.max(1);
    let health: BTreeMap<MemberId, Health> = members.iter().map(|m| (m.id, m.health)).collect();
    let healthy = |id: &MemberId| health.get(id) == Some(&Health::Healthy) || *id == leader;
    let gone = |id: &MemberId| health.get(id) == Some(&Health::Gone) && *id != leader;
    let quorum = |voters: &BTreeSet<MemberId>| {
        !voters.is_empty() && voters.iter().filter(|v| healthy(v)).count() * 2 > voters.len()
    };

    let mut voters: BTreeSet<MemberId> =
        members.iter().filter(|m| m.raft == RaftMembership::Voter).map(|m| m.id).collect();
    let mut nonvoters: BTreeSet<MemberId> =
        members.iter().filter(|m| m.raft == RaftMembership::Nonvoter).map(|m| m.id).collect();
    if !quorum(&voters) {
        return Vec::new();
    }
    let mut plan = Vec::new();

    // 1. healthy members not in raft join as nonvoters.
    for m in members.iter().filter(|m| m.raft == RaftMembership::Absent && m.health == Health::Healthy) {
        if nonvoters.insert(m.id) {
            plan.push(VoterChange::AddNonvoter(m.id));
        }
    }
    // 2. gone nonvoters leave.
    for id in nonvoters.iter().filter(|id| gone(id)).copied().collect::<Vec<_>>() {
        nonvoters.remove(&id);
        plan.push(VoterChange::Remove(id));
    }
    // 3. gone voters leave first.
    for id in voters.iter().filter(|id| gone(id)).copied().collect::<Vec<_>>() {
        let mut next = voters.clone();
        next.remove(&id);
        if quorum(&next) {
            voters = next;
            plan.push(VoterChange::Remove(id));
        }
    }
    // 4. promote healthy nonvoters, preferred then oldest first, up to the wanted count.
    let mut candidates: Vec<MemberId> = nonvoters.iter().filter(|id| healthy(id)).copied().collect();
    let rank = |id: &MemberId| prefer.iter().position(|p| p == id).unwrap_or(usize::MAX);
    candidates.sort_by_key(|id| (rank(id), *id));
    candidates.reverse(); // pop() takes the first
    while voters.iter().filter(|v| !gone(v)).count() < wanted {
        let Some(id) = candidates.pop() else { break };
        let mut next = voters.clone();
        next.insert(id);
        if quorum(&next) {
            voters = next;
            nonvoters.remove(&id);
            plan.push(VoterChange::Promote(id));
        }
    }
    // 5. demote extras: suspects first, then the newest healthy voters.
    let mut extras: Vec<MemberId> = voters.iter().filter(|v| !healthy(v) && !gone(v)).copied().collect();
    extras.extend(voters.iter().rev().filter(|v| healthy(v) && **v != leader));
    for id in extras {
        if voters.iter().filter(|v| !gone(v)).count() <= wanted {
            break;
        }
        let mut next = voters.clone();
        next.remove(&id);
        if quorum(&next) {
            voters = next;
            nonvoters.insert(id);
            plan.push(VoterChange::Demote(id));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use RaftMembership::*;
    use proptest::prelude::*;

    fn id(n: u64) -> MemberId {
        MemberId::from(n)
    }

    fn m(n: u64, raft: RaftMembership, health: Health) -> PlanMember {
        PlanMember { id: id(n), raft, health }
    }

    /// Applies a plan to the members, checking every step's quorum on the way.
    fn apply(members: &[PlanMember], plan: &[VoterChange], leader: MemberId) -> Vec<PlanMember> {
        let healthy = |ms: &[PlanMember], x: &MemberId| {
            *x == leader || ms.iter().any(|m| m.id == *x && m.health == Health::Healthy)
        };
        let voters = |ms: &[PlanMember]| -> Vec<MemberId> {
            ms.iter().filter(|m| m.raft == Voter).map(|m| m.id).collect()
        };
        let quorum = |ms: &[PlanMember]| {
            let v = voters(ms);
            !v.is_empty() && v.iter().filter(|x| healthy(ms, x)).count() * 2 > v.len()
        };
        let mut ms = members.to_vec();
        for change in plan {
            let before = ms.clone();
            let (target, to) = match *change {
                VoterChange::AddNonvoter(x) => (x, Nonvoter),
                VoterChange::Promote(x) => (x, Voter),
                VoterChange::Demote(x) => (x, Nonvoter),
                VoterChange::Remove(x) => (x, Absent),
            };
            assert!(target != leader || to == Voter, "plan touches the leader: {change:?}");
            let member = ms.iter_mut().find(|m| m.id == target).expect("planned for an unknown member");
            match change {
                VoterChange::AddNonvoter(_) => assert_eq!(member.raft, Absent),
                VoterChange::Promote(_) => assert_eq!(member.raft, Nonvoter),
                VoterChange::Demote(_) => assert_eq!(member.raft, Voter),
                VoterChange::Remove(_) => assert_ne!(member.raft, Absent),
            }
            member.raft = to;
            assert!(quorum(&before) && quorum(&ms), "{change:?} loses quorum: {before:?} -> {ms:?}");
        }
        ms
    }

    #[test]
    fn a_new_member_joins_and_is_promoted() {
        let ms = [m(1, Voter, Health::Healthy), m(2, Absent, Health::Healthy)];
        let plan = plan_voters(&ms, 3, id(1));
        assert_eq!(plan, vec![VoterChange::AddNonvoter(id(2)), VoterChange::Promote(id(2))]);
    }

    #[test]
    fn stays_at_wanted_voters() {
        let ms = [
            m(1, Voter, Health::Healthy),
            m(2, Voter, Health::Healthy),
            m(3, Voter, Health::Healthy),
            m(4, Absent, Health::Healthy),
        ];
        assert_eq!(plan_voters(&ms, 3, id(1)), vec![VoterChange::AddNonvoter(id(4))]);
    }

    #[test]
    fn a_suspect_voter_is_kept_until_gone() {
        let mut ms = vec![
            m(1, Voter, Health::Healthy),
            m(2, Voter, Health::Healthy),
            m(3, Voter, Health::Suspect),
            m(4, Nonvoter, Health::Healthy),
        ];
        assert_eq!(plan_voters(&ms, 3, id(1)), vec![]);
        ms[2].health = Health::Gone;
        // The dead voter leaves before its replacement votes: never four
        // voters with one dead (seeds 1146 and 2866).
        assert_eq!(plan_voters(&ms, 3, id(1)), vec![VoterChange::Remove(id(3)), VoterChange::Promote(id(4))]);
    }

    #[test]
    fn the_oldest_nonvoter_is_promoted() {
        let ms = [
            m(1, Voter, Health::Healthy),
            m(7, Nonvoter, Health::Healthy),
            m(5, Nonvoter, Health::Healthy),
            m(6, Nonvoter, Health::Suspect),
        ];
        assert_eq!(plan_voters(&ms, 2, id(1)), vec![VoterChange::Promote(id(5))]);
    }

    #[test]
    fn extras_are_demoted_suspects_first_never_the_leader() {
        let ms = [
            m(1, Voter, Health::Healthy),
            m(2, Voter, Health::Healthy),
            m(3, Voter, Health::Suspect),
            m(4, Voter, Health::Healthy),
            m(5, Voter, Health::Healthy),
        ];
        assert_eq!(plan_voters(&ms, 3, id(5)), vec![VoterChange::Demote(id(3)), VoterChange::Demote(id(4))]);
    }

    #[test]
    fn no_quorum_no_plan() {
        let ms = [
            m(1, Voter, Health::Healthy),
            m(2, Voter, Health::Gone),
            m(3, Voter, Health::Suspect),
            m(4, Nonvoter, Health::Healthy),
        ];
        assert_eq!(plan_voters(&ms, 3, id(1)), vec![]);
    }

    #[test]
    fn gone_nonvoters_and_voters_are_removed() {
        let ms = [
            m(1, Voter, Health::Healthy),
            m(2, Voter, Health::Healthy),
            m(3, Voter, Health::Gone),
            m(4, Nonvoter, Health::Gone),
        ];
        assert_eq!(plan_voters(&ms, 3, id(1)), vec![VoterChange::Remove(id(4)), VoterChange::Remove(id(3))]);
    }

    fn arb_members() -> impl Strategy<Value = Vec<PlanMember>> {
        let raft = prop_oneof![Just(Voter), Just(Nonvoter), Just(Absent)];
        let health = prop_oneof![Just(Health::Healthy), Just(Health::Suspect), Just(Health::Gone)];
        proptest::collection::vec((raft, health), 1..10).prop_map(|v| {
            v.into_iter().enumerate().map(|(i, (raft, health))| m(i as u64 + 1, raft, health)).collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_plan_is_safe_complete_and_stable(
            mut members in arb_members(),
            wanted in 1usize..6,
            leader_pick in any::<prop::sample::Index>(),
        ) {
            // The leader is a healthy voter.
            let leader = leader_pick.get(&members).id;
            for mm in members.iter_mut().filter(|mm| mm.id == leader) {
                mm.raft = Voter;
                mm.health = Health::Healthy;
            }
            let plan = plan_voters(&members, wanted, leader);
            let after = apply(&members, &plan, leader);
            // Stable: nothing more to do.
            prop_assert_eq!(plan_voters(&after, wanted, leader), vec![]);
            let voters: Vec<_> = after.iter().filter(|x| x.raft == Voter).collect();
            let had_quorum = !plan.is_empty() || {
                let v: Vec<_> = members.iter().filter(|x| x.raft == Voter).collect();
                v.iter().filter(|x| x.health == Health::Healthy).count() * 2 > v.len()
            };
            if had_quorum {
                // Complete: no gone member left, no healthy member outside raft.
                prop_assert!(after.iter().all(|x| x.health != Health::Gone || x.raft == Absent));
                prop_assert!(after.iter().all(|x| x.health != Health::Healthy || x.raft != Absent));
                // Balanced: the wanted count, or every healthy member already votes.
                let healthy_nonvoters = after.iter().filter(|x| x.raft == Nonvoter && x.health == Health::Healthy).count();
                prop_assert!(voters.len() == wanted || (voters.len() < wanted && healthy_nonvoters == 0)
                    || voters.len() > wanted, "voters {} wanted {}", voters.len(), wanted);
                if voters.len() > wanted {
                    // Only kept because demoting more would lose quorum.
                    prop_assert!(voters.iter().filter(|x| x.health != Health::Healthy).count() > 0
                        || voters.iter().all(|x| x.id == leader));
                }
            }
        }
    }
}
