//! The record plan: which writes bring the cluster's own records in the
//! store (member metadata, role keys, leader key, short ids) in line with
//! what gossip and raft show now. Run by the leader; pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::{MemberId, ShortId};
use crate::member::MemberInfo;
use crate::role::RaftRole;

/// What the leader knows now.
#[derive(Debug, Clone, Default)]
pub struct RecordFacts {
    /// The leader (the member planning).
    pub leader: MemberId,
    /// Members alive in gossip, as their tags describe them.
    pub live: Vec<MemberInfo>,
    /// Voters in raft.
    pub voters: BTreeSet<MemberId>,
    /// Nonvoters in raft.
    pub nonvoters: BTreeSet<MemberId>,
    /// Live members kept out of the replica set: recorded with role `client`.
    pub clients: BTreeSet<MemberId>,
    /// Short ids held, by the state machine.
    pub short_ids: BTreeMap<MemberId, ShortId>,
    /// Member records in the store.
    pub recorded: BTreeMap<MemberId, MemberInfo>,
    /// Voter keys in the store.
    pub voter_keys: BTreeSet<MemberId>,
    /// Nonvoter keys in the store.
    pub nonvoter_keys: BTreeSet<MemberId>,
    /// The leader key's value in the store.
    pub leader_key: Option<MemberId>,
    /// Members whose departure is final (left, or failed past the reap
    /// timeout): their short id is freed and their record dropped.
    pub released: BTreeSet<MemberId>,
}

/// One write to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// Allocate (or get back) the member's short id.
    AllocateShortId(MemberId),
    /// Free the member's short id.
    ReleaseShortId(MemberId),
    /// Write the member's record.
    PutMember(MemberInfo),
    /// Drop the member's record.
    DeleteMember(MemberId),
    /// Mark the member as voter.
    PutVoterKey(MemberId),
    /// Drop the member's voter mark.
    DeleteVoterKey(MemberId),
    /// Mark the member as nonvoter.
    PutNonvoterKey(MemberId),
    /// Drop the member's nonvoter mark.
    DeleteNonvoterKey(MemberId),
    /// Record the leader.
    PutLeader(MemberId),
}

/// The writes to make, short ids first (records carry them).
pub fn plan_records(f: &RecordFacts) -> Vec<RecordChange> {
    let mut plan = Vec::new();
    let live: BTreeMap<MemberId, &MemberInfo> =
        f.live.iter().filter(|m| !f.released.contains(&m.member_id)).map(|m| (m.member_id, m)).collect();

    for id in live.keys().filter(|id| !f.short_ids.contains_key(id)) {
        plan.push(RecordChange::AllocateShortId(*id));
    }
    for id in f.released.iter().filter(|id| f.short_ids.contains_key(id)) {
        plan.push(RecordChange::ReleaseShortId(*id));
    }

    let role_of = |id: &MemberId| {
        if *id == f.leader {
            RaftRole::Leader
        } else if f.voters.contains(id) {
            RaftRole::Voter
        } else if f.clients.contains(id) && !f.nonvoters.contains(id) {
            RaftRole::Client
        } else {
            RaftRole::Nonvoter
        }
    };
    // A record is written once the member holds its short id, so that every
    // record carries one.
    for (id, info) in &live {
        let Some(short_id) = f.short_ids.get(id).copied() else { continue };
        let mut want = (*info).clone();
        want.short_id = Some(short_id);
        want.raft_role = role_of(id);
        if f.recorded.get(id) != Some(&want) {
            plan.push(RecordChange::PutMember(want));
        }
    }
    // A record shows a member of the cluster: one that is live, in raft, or
    // holds its short id. A failed member out of raft keeps its short id
    // until it is released (a member that comes back gets it again), and
    // its record with it, as a nonvoter: operators list it as `failed`
    // (with its short id, which `force-leave '#N'` names) until it is
    // reaped. The record goes with the short id.
    for (id, info) in &f.recorded {
        let in_raft = f.voters.contains(id) || f.nonvoters.contains(id);
        if live.contains_key(id) || in_raft {
            continue;
        }
        let held = f.short_ids.get(id).copied().filter(|_| !f.released.contains(id));
        if held.is_none() {
            plan.push(RecordChange::DeleteMember(*id));
        } else if !matches!(info.raft_role, RaftRole::Nonvoter | RaftRole::Client) || info.short_id != held {
            // It carries the short id it holds, like every record; a client
            // member stays one.
            let mut out_of_raft = info.clone();
            out_of_raft.raft_role =
                if info.raft_role == RaftRole::Client { RaftRole::Client } else { RaftRole::Nonvoter };
            out_of_raft.short_id = held;
            plan.push(RecordChange::PutMember(out_of_raft));
        }
    }

    for id in f.voters.difference(&f.voter_keys) {
        plan.push(RecordChange::PutVoterKey(*id));
    }
    for id in f.voter_keys.difference(&f.voters) {
        plan.push(RecordChange::DeleteVoterKey(*id));
    }
    for id in f.nonvoters.difference(&f.nonvoter_keys) {
        plan.push(RecordChange::PutNonvoterKey(*id));
    }
    for id in f.nonvoter_keys.difference(&f.nonvoters) {
        plan.push(RecordChange::DeleteNonvoterKey(*id));
    }
    if f.leader_key != Some(f.leader) {
        plan.push(RecordChange::PutLeader(f.leader));
    }
    plan
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn info(n: u64) -> MemberInfo {
        MemberInfo::new(MemberId::from(n), "127.0.0.1", 1, 2, 3, 4)
    }

    fn sid(n: u32) -> ShortId {
        ShortId::new(n).unwrap()
    }

    /// Applies record changes to the facts, as the store would.
    fn apply(f: &mut RecordFacts, plan: &[RecordChange]) {
        for c in plan {
            match c {
                RecordChange::AllocateShortId(id) => {
                    let next = crate::plan::lowest_free_short_id(f.short_ids.values().copied()).unwrap();
                    f.short_ids.entry(*id).or_insert(next);
                }
                RecordChange::ReleaseShortId(id) => {
                    f.short_ids.remove(id);
                }
                RecordChange::PutMember(m) => {
                    f.recorded.insert(m.member_id, m.clone());
                }
                RecordChange::DeleteMember(id) => {
                    f.recorded.remove(id);
                }
                RecordChange::PutVoterKey(id) => {
                    f.voter_keys.insert(*id);
                }
                RecordChange::DeleteVoterKey(id) => {
                    f.voter_keys.remove(id);
                }
                RecordChange::PutNonvoterKey(id) => {
                    f.nonvoter_keys.insert(*id);
                }
                RecordChange::DeleteNonvoterKey(id) => {
                    f.nonvoter_keys.remove(id);
                }
                RecordChange::PutLeader(id) => f.leader_key = Some(*id),
            }
        }
    }

    fn settle(f: &mut RecordFacts) {
        // Rounds: the first allocates, the next records the ids.
        for _ in 0..3 {
            let plan = plan_records(f);
            apply(f, &plan);
        }
        assert_eq!(plan_records(f), vec![], "not stable: {f:?}");
    }

    #[test]
    fn a_new_cluster_records_everything() {
        let leader = MemberId::from(1);
        let mut f = RecordFacts {
            leader,
            live: vec![info(1), info(2)],
            voters: [leader, MemberId::from(2)].into(),
            ..Default::default()
        };
        settle(&mut f);
        assert_eq!(f.short_ids[&leader], sid(1));
        assert_eq!(f.short_ids[&MemberId::from(2)], sid(2));
        assert_eq!(f.recorded[&leader].raft_role, RaftRole::Leader);
        assert_eq!(f.recorded[&leader].short_id, Some(sid(1)));
        assert_eq!(f.recorded[&MemberId::from(2)].raft_role, RaftRole::Voter);
        assert_eq!(f.voter_keys.len(), 2);
        assert_eq!(f.leader_key, Some(leader));
    }

    #[test]
    fn a_client_member_holds_a_short_id_and_a_client_record_but_no_role_key() {
        let leader = MemberId::from(1);
        let client = MemberId::from(2);
        let mut f = RecordFacts {
            leader,
            live: vec![info(1), info(2)],
            voters: [leader].into(),
            clients: [client].into(),
            ..Default::default()
        };
        settle(&mut f);
        assert_eq!(f.recorded[&client].raft_role, RaftRole::Client);
        assert_eq!(f.recorded[&client].short_id, Some(sid(2)));
        assert!(!f.voter_keys.contains(&client) && !f.nonvoter_keys.contains(&client));
        // It fails: it stays a client, with its short id, until released.
        f.live.retain(|m| m.member_id != client);
        f.clients.clear();
        settle(&mut f);
        assert_eq!(f.recorded[&client].raft_role, RaftRole::Client);
        // The leader makes it a replica when it is back: it becomes a nonvoter.
        f.live.push(info(2));
        f.nonvoters.insert(client);
        settle(&mut f);
        assert_eq!(f.recorded[&client].raft_role, RaftRole::Nonvoter);
        assert!(f.nonvoter_keys.contains(&client));
    }

    #[test]
    fn a_failed_member_keeps_its_id_until_released() {
        let leader = MemberId::from(1);
        let gone = MemberId::from(2);
        let mut f = RecordFacts {
            leader,
            live: vec![info(1), info(2)],
            voters: [leader].into(),
            ..Default::default()
        };
        f.nonvoters.insert(gone);
        settle(&mut f);
        // It fails: while still in raft, its record stays.
        f.live.retain(|m| m.member_id != gone);
        settle(&mut f);
        assert!(f.recorded.contains_key(&gone));
        // It leaves raft: its role key goes; its short id stays reserved, and
        // its record with it (listed as failed until reaped).
        f.nonvoters.clear();
        settle(&mut f);
        assert!(f.short_ids.contains_key(&gone));
        assert_eq!(f.recorded[&gone].short_id, f.short_ids.get(&gone).copied());
        assert!(f.nonvoter_keys.is_empty());
        // Reaped: the id is free for the next member, the record gone.
        f.released.insert(gone);
        settle(&mut f);
        assert!(!f.short_ids.contains_key(&gone));
        assert!(!f.recorded.contains_key(&gone));
        f.released.clear();
        f.live.push(info(3));
        settle(&mut f);
        assert_eq!(f.short_ids[&MemberId::from(3)], sid(2));
    }

    #[test]
    fn a_failed_voter_out_of_raft_is_recorded_as_a_nonvoter_until_released() {
        let leader = MemberId::from(1);
        let gone = MemberId::from(2);
        let mut f = RecordFacts {
            leader,
            live: vec![info(1), info(2)],
            voters: [leader, gone].into(),
            ..Default::default()
        };
        settle(&mut f);
        assert_eq!(f.recorded[&gone].raft_role, RaftRole::Voter);
        f.live.retain(|m| m.member_id != gone);
        f.voters.remove(&gone);
        settle(&mut f);
        assert_eq!(f.recorded[&gone].raft_role, RaftRole::Nonvoter, "a voter no more");
        assert_eq!(f.recorded[&gone].short_id, Some(sid(2)));
        // Released and recorded in one round: both go.
        f.released.insert(gone);
        let plan = plan_records(&f);
        assert!(plan.contains(&RecordChange::ReleaseShortId(gone)), "{plan:?}");
        assert!(plan.contains(&RecordChange::DeleteMember(gone)), "{plan:?}");
    }

    #[test]
    fn a_released_member_still_in_gossip_is_not_reallocated() {
        let leader = MemberId::from(1);
        let mut f = RecordFacts { leader, live: vec![info(1), info(2)], ..Default::default() };
        settle(&mut f);
        f.released.insert(MemberId::from(2));
        settle(&mut f);
        assert!(!f.short_ids.contains_key(&MemberId::from(2)));
    }

    /// Members 1..=6: ids are drawn from bit masks over them.
    const POOL: u64 = 6;

    fn ids(mask: u8) -> BTreeSet<MemberId> {
        (1..=POOL).filter(|n| mask & (1 << (n - 1)) != 0).map(MemberId::from).collect()
    }

    /// Any facts a leader may meet, however stale or contradictory the store
    /// is against gossip and raft (member 1 is the leader, live and voter).
    fn any_facts() -> impl Strategy<Value = RecordFacts> {
        (
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
            proptest::collection::vec(proptest::option::of(1u32..8), POOL as usize),
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), proptest::option::of(1..=POOL)),
        )
            .prop_map(
                |((live, voters, nonvoters, released), held, (rec, stale, vk, nk, leader_key))| {
                    let leader = MemberId::from(1);
                    let voters: BTreeSet<_> = ids(voters | 1);
                    let nonvoters = ids(nonvoters).difference(&voters).copied().collect();
                    let mut short_ids = BTreeMap::new();
                    for (n, h) in (1..=POOL).zip(held) {
                        // The state machine never hands one id to two members.
                        if let Some(h) = h.filter(|h| !short_ids.values().any(|v: &ShortId| v.get() == *h)) {
                            short_ids.insert(MemberId::from(n), sid(h));
                        }
                    }
                    let recorded = ids(rec)
                        .into_iter()
                        .map(|id| {
                            let mut m = info_of(id);
                            // Some records are stale: wrong role or short id.
                            if ids(stale).contains(&id) {
                                m.raft_role = RaftRole::Voter;
                                m.short_id = Some(sid(7));
                            }
                            (id, m)
                        })
                        .collect();
                    RecordFacts {
                        leader,
                        live: ids(live | 1).into_iter().map(info_of).collect(),
                        voters,
                        nonvoters,
                        clients: BTreeSet::new(),
                        short_ids,
                        recorded,
                        voter_keys: ids(vk),
                        nonvoter_keys: ids(nk),
                        leader_key: leader_key.map(MemberId::from),
                        released: ids(released & !1),
                    }
                },
            )
    }

    fn info_of(id: MemberId) -> MemberInfo {
        MemberInfo::new(id, "127.0.0.1", 1, 2, 3, 4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_plan_never_frees_a_held_id_it_should_keep(f in any_facts()) {
            let plan = plan_records(&f);
            prop_assert_eq!(&plan, &plan_records(&f), "the same facts give the same plan");
            for change in &plan {
                match change {
                    // Only a final departure frees an id, and only one that is held.
                    RecordChange::ReleaseShortId(id) => {
                        prop_assert!(f.released.contains(id) && f.short_ids.contains_key(id), "{change:?}");
                    }
                    // Never a second id, never one for a member that is gone.
                    RecordChange::AllocateShortId(id) => {
                        prop_assert!(!f.short_ids.contains_key(id) && !f.released.contains(id), "{change:?}");
                    }
                    // A record carries the id the member holds, and its role.
                    RecordChange::PutMember(m) => {
                        prop_assert_eq!(m.short_id, f.short_ids.get(&m.member_id).copied());
                        prop_assert!(!f.released.contains(&m.member_id));
                    }
                    _ => {}
                }
            }
        }

        #[test]
        fn plans_settle_on_the_truth_and_then_change_nothing(f in any_facts()) {
            let mut f = f;
            settle(&mut f); // asserts that the next plan is empty
            let live: BTreeSet<MemberId> =
                f.live.iter().map(|m| m.member_id).filter(|id| !f.released.contains(id)).collect();
            for id in &live {
                let held = f.short_ids.get(id).copied();
                prop_assert!(held.is_some(), "live member {} has no short id", id);
                prop_assert_eq!(f.recorded.get(id).and_then(|m| m.short_id), held);
            }
            for id in &f.released {
                prop_assert!(!f.short_ids.contains_key(id));
            }
            let held: Vec<ShortId> = f.short_ids.values().copied().collect();
            let distinct: BTreeSet<ShortId> = held.iter().copied().collect();
            prop_assert_eq!(held.len(), distinct.len(), "two members hold one short id");
            for (id, info) in &f.recorded {
                let in_raft = f.voters.contains(id) || f.nonvoters.contains(id);
                // A record shows a live member, one in raft, or a departed
                // one that still holds its short id (listed as failed).
                prop_assert!(live.contains(id) || in_raft || f.short_ids.contains_key(id));
                if !live.contains(id) && !in_raft {
                    prop_assert_eq!(info.raft_role, RaftRole::Nonvoter);
                    prop_assert_eq!(info.short_id, f.short_ids.get(id).copied());
                }
            }
            prop_assert_eq!(&f.voter_keys, &f.voters);
            prop_assert_eq!(&f.nonvoter_keys, &f.nonvoters);
            prop_assert_eq!(f.leader_key, Some(f.leader));
        }
    }
}
