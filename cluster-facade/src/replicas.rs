//! The facade's side of the bounded replica set: the leader's replica plan
//! from what it knows ([`plan`], over core's pure
//! [`plan_replicas`](cluster_core::plan::plan_replicas)), and the replicas
//! a client member can follow, from gossip ([`gossip_replicas`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cluster_core::plan::{
    Health, PlanMember, RaftMembership, ReplicaBound, ReplicaCandidate, ReplicaPlan, ZONE_TAG, plan_replicas,
};
use cluster_core::{MemberId, MemberInfo, Membership, RaftRole, member::tag};

use crate::client_feed::ReplicaSource;

/// The replica plan for the voter planner's members, and those members as
/// the voter planner should see them: members kept out of the set are left
/// out (they stay client members), surplus nonvoters count as gone (the
/// voter plan takes them out of raft).
pub(crate) fn plan(
    members: Vec<PlanMember>,
    live: &BTreeMap<MemberId, MemberInfo>,
    bound: ReplicaBound,
    leader: MemberId,
) -> (ReplicaPlan, Vec<PlanMember>) {
    let candidates: Vec<ReplicaCandidate> = members
        .iter()
        .map(|m| ReplicaCandidate {
            id: m.id,
            raft: m.raft,
            health: m.health,
            zone: live.get(&m.id).and_then(|i| i.extra_tags.get(ZONE_TAG).cloned()),
        })
        .collect();
    let plan = plan_replicas(&candidates, bound, leader);
    let added: BTreeSet<MemberId> = plan.add.iter().copied().collect();
    let members = members
        .into_iter()
        .filter(|m| m.raft != RaftMembership::Absent || added.contains(&m.id))
        .map(|m| PlanMember {
            health: if plan.surplus.contains(&m.id) { Health::Gone } else { m.health },
            ..m
        })
        .collect();
    (plan, members)
}

/// The replicas alive in gossip, by their `raft_role` tags, this member
/// excluded: where a client member's view is fed from.
pub(crate) fn gossip_replicas<M: Membership>(membership: Arc<M>) -> ReplicaSource {
    let me = membership.member_id();
    Arc::new(move || {
        membership
            .members()
            .into_iter()
            .filter(|m| m.id != me)
            .filter_map(|m| {
                let role: RaftRole = m.tags.get(tag::RAFT_ROLE)?.parse().ok()?;
                let info = MemberInfo::from_tags(m.id, &m.tags).ok()?;
                role.replicates().then(|| (info.service_addr(), role == RaftRole::Leader))
            })
            .collect()
    })
}
