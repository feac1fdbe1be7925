use proptest::prelude::*;

use super::*;
use crate::plan::voters::{PlanMember, VoterChange, plan_voters_preferring};
use RaftMembership::*;

fn id(n: u64) -> MemberId {
    MemberId::from(n)
}

fn c(n: u64, raft: RaftMembership, health: Health, zone: Option<&str>) -> ReplicaCandidate {
    ReplicaCandidate { id: id(n), raft, health, zone: zone.map(str::to_owned) }
}

const B3: ReplicaBound = ReplicaBound { voters: 3, replicas: 3 };

#[test]
fn the_set_fills_up_to_the_bound_oldest_first_and_no_further() {
    let mut ms = vec![c(1, Voter, Health::Healthy, None)];
    ms.extend((2..=7).map(|n| c(n, Absent, Health::Healthy, None)));
    let plan = plan_replicas(&ms, B3, id(1));
    assert_eq!(plan.add, vec![id(2), id(3)]);
    assert_eq!(plan.surplus, vec![]);
    assert_eq!(plan.voter_preference, vec![id(2), id(3)]);
    assert!(plan.keeps(id(1), &ms) && plan.keeps(id(3), &ms) && !plan.keeps(id(4), &ms));
}

#[test]
fn a_full_set_adds_no_one() {
    let ms = [
        c(1, Voter, Health::Healthy, None),
        c(2, Voter, Health::Healthy, None),
        c(3, Voter, Health::Healthy, None),
        c(4, Absent, Health::Healthy, None),
    ];
    assert_eq!(plan_replicas(&ms, B3, id(1)), ReplicaPlan::default());
}

#[test]
fn a_suspect_replica_keeps_its_place_a_gone_one_is_replaced() {
    let mut ms = vec![
        c(1, Voter, Health::Healthy, None),
        c(2, Voter, Health::Healthy, None),
        c(3, Voter, Health::Suspect, None),
        c(4, Absent, Health::Healthy, None),
        c(5, Absent, Health::Healthy, None),
    ];
    assert_eq!(plan_replicas(&ms, B3, id(1)).add, vec![]);
    ms[2].health = Health::Gone;
    let plan = plan_replicas(&ms, B3, id(1));
    assert_eq!(plan.add, vec![id(4)]);
    assert_eq!(plan.voter_preference, vec![id(4)]);
}

/// A failed replica leaves raft after its grace (when it counts as gone)
/// whether or not a member can replace it: the set does not wait for a
/// replacement, nor for the failed member's short id to be reaped.
#[test]
fn a_gone_voter_no_member_can_replace_leaves_raft() {
    // Three members, a bound of 5: the old leader (1) crashed past its grace, 2 leads now.
    let ms = [
        c(1, Voter, Health::Gone, None),
        c(2, Voter, Health::Healthy, None),
        c(3, Voter, Health::Healthy, None),
    ];
    let bound = ReplicaBound { voters: 3, replicas: 5 };
    let plan = plan_replicas(&ms, bound, id(2));
    assert_eq!(plan, ReplicaPlan::default(), "no one to add, no one surplus");
    let after = apply_plan(&ms, bound, id(2));
    let raft: Vec<_> = after.iter().map(|m| (m.id, m.raft)).collect();
    assert_eq!(raft, vec![(id(1), Absent), (id(2), Voter), (id(3), Voter)]);
    // The same with nonvoters and client members around: promoted, replaced, removed.
    let ms = [
        c(1, Voter, Health::Gone, None),
        c(2, Voter, Health::Healthy, None),
        c(3, Voter, Health::Healthy, None),
        c(4, Nonvoter, Health::Gone, None),
        c(5, Nonvoter, Health::Healthy, None),
    ];
    let after = apply_plan(&ms, bound, id(2));
    let raft: Vec<_> = after.iter().map(|m| (m.id, m.raft)).collect();
    assert_eq!(raft, vec![(id(1), Absent), (id(2), Voter), (id(3), Voter), (id(4), Absent), (id(5), Voter)]);
}

#[test]
fn a_returning_replica_makes_the_newest_healthy_nonvoter_surplus() {
    // 3 came back after 4 replaced it (4 not promoted yet: 3 still votes).
    let ms = [
        c(1, Voter, Health::Healthy, None),
        c(2, Voter, Health::Healthy, None),
        c(3, Voter, Health::Healthy, None),
        c(4, Nonvoter, Health::Healthy, None),
        c(5, Absent, Health::Healthy, None),
    ];
    let plan = plan_replicas(&ms, B3, id(1));
    assert_eq!(plan.surplus, vec![id(4)]);
    assert!(plan.add.is_empty() && plan.voter_preference.is_empty());
}

#[test]
fn a_nonvoter_a_missing_voter_needs_is_never_surplus() {
    let ms = [
        c(1, Voter, Health::Healthy, None),
        c(2, Voter, Health::Healthy, None),
        c(3, Nonvoter, Health::Healthy, None),
        c(4, Nonvoter, Health::Healthy, None),
    ];
    let plan = plan_replicas(&ms, B3, id(1));
    assert_eq!(plan.voter_preference, vec![id(3)]);
    assert_eq!(plan.surplus, vec![id(4)]);
}

#[test]
fn replicas_and_voters_spread_across_zones() {
    let ms = [
        c(1, Voter, Health::Healthy, Some("a")),
        c(2, Absent, Health::Healthy, Some("a")),
        c(3, Absent, Health::Healthy, Some("a")),
        c(4, Absent, Health::Healthy, Some("b")),
        c(5, Absent, Health::Healthy, Some("c")),
        c(6, Absent, Health::Healthy, Some("c")),
    ];
    let bound = ReplicaBound { voters: 3, replicas: 5 };
    let plan = plan_replicas(&ms, bound, id(1));
    // b and c first (no replica there yet), then a and c again.
    assert_eq!(plan.add, vec![id(4), id(5), id(2), id(6)]);
    // Voters: one in b and one in c beside the leader in a.
    assert_eq!(&plan.voter_preference[..2], &[id(4), id(5)]);
    let voters = apply_plan(&ms, bound, id(1));
    let zones: BTreeSet<_> =
        voters.iter().filter(|m| m.raft == Voter).map(|m| m.zone.clone().unwrap_or_default()).collect();
    assert_eq!(zones.len(), 3, "{voters:?}");
}

#[test]
fn a_surplus_leaves_the_most_crowded_zone() {
    let ms = [
        c(1, Voter, Health::Healthy, Some("a")),
        c(2, Voter, Health::Healthy, Some("b")),
        c(3, Voter, Health::Healthy, Some("c")),
        c(4, Nonvoter, Health::Healthy, Some("a")),
        c(5, Nonvoter, Health::Healthy, Some("d")),
    ];
    let plan = plan_replicas(&ms, ReplicaBound { voters: 3, replicas: 4 }, id(1));
    assert_eq!(plan.surplus, vec![id(4)]);
}

/// Carries out the replica plan and then the voter plan it feeds, as the
/// leader does, checking every voter change's quorum; the members after.
fn apply_plan(members: &[ReplicaCandidate], bound: ReplicaBound, leader: MemberId) -> Vec<ReplicaCandidate> {
    let plan = plan_replicas(members, bound, leader);
    let planned: Vec<PlanMember> = members
        .iter()
        .filter(|m| m.raft != Absent || plan.add.contains(&m.id))
        .map(|m| PlanMember {
            id: m.id,
            raft: m.raft,
            health: if plan.surplus.contains(&m.id) { Health::Gone } else { m.health },
        })
        .collect();
    let changes = plan_voters_preferring(&planned, bound.voters, leader, &plan.voter_preference);
    let healthy = |ms: &[ReplicaCandidate], x: MemberId| {
        x == leader || ms.iter().any(|m| m.id == x && m.health == Health::Healthy)
    };
    let quorum = |ms: &[ReplicaCandidate]| {
        let v: Vec<MemberId> = ms.iter().filter(|m| m.raft == Voter).map(|m| m.id).collect();
        !v.is_empty() && v.iter().filter(|x| healthy(ms, **x)).count() * 2 > v.len()
    };
    let mut after = members.to_vec();
    for change in changes {
        let before = after.clone();
        let (target, to) = match change {
            VoterChange::AddNonvoter(x) => (x, Nonvoter),
            VoterChange::Promote(x) => (x, Voter),
            VoterChange::Demote(x) => (x, Nonvoter),
            VoterChange::Remove(x) => (x, Absent),
        };
        after.iter_mut().find(|m| m.id == target).expect("a known member").raft = to;
        assert!(quorum(&before) && quorum(&after), "{change:?} loses quorum: {before:?} -> {after:?}");
    }
    after
}

fn arb_members() -> impl Strategy<Value = Vec<ReplicaCandidate>> {
    let raft = prop_oneof![Just(Voter), Just(Nonvoter), Just(Absent), Just(Absent)];
    let health =
        prop_oneof![Just(Health::Healthy), Just(Health::Healthy), Just(Health::Suspect), Just(Health::Gone)];
    let zone = prop_oneof![Just(None), Just(Some("a")), Just(Some("b")), Just(Some("c"))];
    proptest::collection::vec((raft, health, zone), 1..14).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (raft, health, zone))| c(i as u64 + 1, raft, health, zone))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_set_never_grows_past_its_bound_and_never_loses_quorum(
        mut members in arb_members(),
        voters in 1usize..5,
        extra in 0usize..4,
        leader_pick in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let leader = leader_pick.get(&members).id;
        for m in members.iter_mut().filter(|m| m.id == leader) {
            m.raft = Voter;
            m.health = Health::Healthy;
        }
        let bound = ReplicaBound { voters, replicas: voters + extra };
        let plan = plan_replicas(&members, bound, leader);
        let counted = |ms: &[ReplicaCandidate]| {
            ms.iter().filter(|m| m.raft != Absent && (m.health != Health::Gone || m.id == leader)).count()
        };
        let before = counted(&members);
        // Never more than the bound through additions.
        prop_assert!(plan.add.is_empty() || before + plan.add.len() <= bound.size());
        // Adds only healthy members out of raft; takes out only healthy nonvoters, never the leader.
        for a in &plan.add {
            prop_assert!(members.iter().any(|m| m.id == *a && m.raft == Absent && m.health == Health::Healthy));
        }
        for s in &plan.surplus {
            prop_assert!(*s != leader);
            prop_assert!(members.iter().any(|m| m.id == *s && m.raft == Nonvoter && m.health == Health::Healthy));
        }
        prop_assert!(plan.add.is_empty() || plan.surplus.is_empty());
        // Deterministic, whatever the order of the facts.
        let mut shuffled = members.clone();
        let len = shuffled.len();
        for i in 0..len {
            shuffled.swap(i, (seed.rotate_left(i as u32) as usize) % len);
        }
        prop_assert_eq!(plan_replicas(&shuffled, bound, leader), plan.clone());
        // Carried out with the voter plan: quorum-safe at every step (checked
        // inside); the set ends at its bound, or as close as healthy members allow.
        let after = apply_plan(&members, bound, leader);
        let now = counted(&after);
        let voters_before: Vec<_> = members.iter().filter(|m| m.raft == Voter).collect();
        let quorum = voters_before.iter().filter(|m| m.health == Health::Healthy).count() * 2 > voters_before.len();
        let waiting = members.iter().filter(|m| m.raft == Absent && m.health == Health::Healthy).count();
        if quorum {
            // A gone replica leaves raft, whether or not a member replaces it.
            prop_assert!(
                after.iter().all(|m| m.health != Health::Gone || m.id == leader || m.raft == Absent),
                "a gone member stays in raft: {:?}", after
            );
            if before <= bound.size() {
                prop_assert_eq!(now, bound.size().min(before + waiting));
            } else {
                prop_assert!(now >= bound.size() && now <= before, "{} -> {} (bound {})", before, now, bound.size());
            }
        } else {
            prop_assert_eq!(now, before, "nothing changes without a quorum");
        }
    }
}
