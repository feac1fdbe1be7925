//! The replica plan: which members hold the raft log. Raft runs on a bounded
//! **replica set** — at most `voters` voters and `replicas − voters`
//! nonvoters — and every other member is a client member (no log, no vote).
//!
//! The plan only chooses members; [`plan_voters`](super::plan_voters) still
//! makes every raft change, one at a time and quorum-safe. Rules:
//! 1. the replica set counts every member in raft that is not gone (the
//!    leader always): a suspect replica keeps its place through its grace;
//! 2. while it counts fewer than the bound, healthy members out of raft are
//!    added, each time from the zone (`zone` tag) with the fewest replicas,
//!    the oldest member first (member ids are ULIDs: they sort by age);
//! 3. while it counts more (a failed replica came back after its
//!    replacement was added), healthy nonvoters leave: from the zone with
//!    the most replicas, the newest first, never one that a missing voter
//!    needs; voters and the leader never;
//! 4. nonvoters are promoted in [`ReplicaPlan::voter_preference`] order:
//!    the zone with the fewest voters first, then the oldest.
//!
//! Adding or removing a nonvoter never changes the voters, so no step of
//! this plan can cost the cluster its quorum.

use std::collections::{BTreeMap, BTreeSet};

use super::voters::{Health, RaftMembership};
use crate::id::MemberId;

/// The gossip tag that places a member in a failure zone (a rack, an
/// availability zone): replicas, voters first, are spread across zones.
pub const ZONE_TAG: &str = "zone";

/// One member as the replica planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCandidate {
    /// The member.
    pub id: MemberId,
    /// Its place in raft now.
    pub raft: RaftMembership,
    /// Its health now.
    pub health: Health,
    /// Its `zone` tag, if it has one.
    pub zone: Option<String>,
}

/// How large the replica set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaBound {
    /// The voters wanted (below 1 counts as 1).
    pub voters: usize,
    /// Voters and nonvoters together (below `voters` counts as `voters`).
    pub replicas: usize,
}

impl ReplicaBound {
    /// The number of replicas the set is kept at.
    pub fn size(&self) -> usize {
        self.replicas.max(self.voters.max(1))
    }
}

/// What the leader does about the replica set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// Members out of raft to add as nonvoters, in order.
    pub add: Vec<MemberId>,
    /// Nonvoters to take out of raft: they become client members.
    pub surplus: Vec<MemberId>,
    /// Nonvoters (those added included) in the order they should be
    /// promoted when a voter is missing.
    pub voter_preference: Vec<MemberId>,
}

impl ReplicaPlan {
    /// True if `id` may be in raft after this plan: it is there and not
    /// surplus, or it is added.
    pub fn keeps(&self, id: MemberId, members: &[ReplicaCandidate]) -> bool {
        let in_raft = members.iter().any(|m| m.id == id && m.raft != RaftMembership::Absent);
        (in_raft && !self.surplus.contains(&id)) || self.add.contains(&id)
    }
}

/// The replica plan for `members`, led by `leader`. Pure and deterministic:
/// the order of `members` does not matter.
pub fn plan_replicas(members: &[ReplicaCandidate], bound: ReplicaBound, leader: MemberId) -> ReplicaPlan {
    let size = bound.size();
    let wanted_voters = bound.voters.max(1);
    let by_id: BTreeMap<MemberId, &ReplicaCandidate> = members.iter().map(|m| (m.id, m)).collect();
    let zone = |id: &MemberId| by_id.get(id).and_then(|m| m.zone.clone());
    let healthy = |m: &ReplicaCandidate| m.health == Health::Healthy || m.id == leader;
    let counted: BTreeSet<MemberId> = by_id
        .values()
        .filter(|m| m.raft != RaftMembership::Absent && (m.health != Health::Gone || m.id == leader))
        .map(|m| m.id)
        .collect();
    let voters: BTreeSet<MemberId> = by_id
        .values()
        .filter(|m| m.raft == RaftMembership::Voter && (m.health != Health::Gone || m.id == leader))
        .map(|m| m.id)
        .collect();

    let mut plan = ReplicaPlan::default();
    let mut set = counted.clone();
    // 2. fill free places, spreading across zones.
    let mut absent: Vec<MemberId> =
        by_id.values().filter(|m| m.raft == RaftMembership::Absent && healthy(m)).map(|m| m.id).collect();
    while set.len() < size && !absent.is_empty() {
        let per_zone = zone_counts(set.iter(), &zone);
        // The candidate whose zone has the fewest replicas; the oldest on a tie.
        let (at, _) = absent
            .iter()
            .enumerate()
            .min_by_key(|(_, id)| (per_zone.get(&zone(id)).copied().unwrap_or(0), **id))
            .expect("not empty");
        let id = absent.remove(at);
        set.insert(id);
        plan.add.push(id);
    }

    // 4. promotion order of the healthy nonvoters (before 3: a nonvoter a
    // missing voter needs is not surplus).
    let mut nonvoters: Vec<MemberId> = by_id
        .values()
        .filter(|m| m.raft == RaftMembership::Nonvoter && healthy(m))
        .map(|m| m.id)
        .chain(plan.add.iter().copied())
        .collect();
    let mut chosen_voters = voters.clone();
    while !nonvoters.is_empty() {
        let per_zone = zone_counts(chosen_voters.iter(), &zone);
        let (at, _) = nonvoters
            .iter()
            .enumerate()
            .min_by_key(|(_, id)| (per_zone.get(&zone(id)).copied().unwrap_or(0), **id))
            .expect("not empty");
        let id = nonvoters.remove(at);
        chosen_voters.insert(id);
        plan.voter_preference.push(id);
    }

    // 3. shrink back to the bound.
    let needed = wanted_voters.saturating_sub(voters.len());
    let mut removable: Vec<MemberId> = plan
        .voter_preference
        .iter()
        .skip(needed)
        .filter(|id| counted.contains(id) && **id != leader)
        .copied()
        .collect();
    while set.len() > size && !removable.is_empty() {
        let per_zone = zone_counts(set.iter(), &zone);
        // The member whose zone has the most replicas; the newest on a tie.
        let (at, _) = removable
            .iter()
            .enumerate()
            .max_by_key(|(_, id)| (per_zone.get(&zone(id)).copied().unwrap_or(0), **id))
            .expect("not empty");
        let id = removable.remove(at);
        set.remove(&id);
        plan.surplus.push(id);
    }
    plan.voter_preference.retain(|id| !plan.surplus.contains(id));
    plan
}

/// How many of `ids` are in each zone.
fn zone_counts<'a>(
    ids: impl Iterator<Item = &'a MemberId>,
    zone: &impl Fn(&MemberId) -> Option<String>,
) -> BTreeMap<Option<String>, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(zone(id)).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests;
