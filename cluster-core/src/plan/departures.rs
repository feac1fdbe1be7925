//! The departure clock: when a member that is not live counts as gone from
//! raft (after the failure grace) and when its short id is freed (after the
//! reap timeout). A member that left gracefully is gone at once.
//!
//! Pure: membership events and the time go in ([`Departures::observe`],
//! `now` on every question), decisions come out ([`Departures::health`],
//! [`Departures::released`], [`Departures::next_deadline`]). The loop that
//! runs it reads the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::id::MemberId;
use crate::membership::MembershipEvent;
use crate::plan::voters::Health;

/// How a member departed, as this member saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It announced that it leaves: final at once.
    Left,
    /// It failed (or was missing from gossip) at `since`.
    Failed {
        /// When it was first seen gone.
        since: Instant,
    },
}

/// How long a failed member is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepartureTimeouts {
    /// A failed voter or nonvoter stays in raft this long (it may come back).
    pub failure_grace: Duration,
    /// A failed member keeps its short id this long.
    pub short_id_reap: Duration,
}

/// The members this member saw depart, and since when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Departures {
    by_member: BTreeMap<MemberId, Departure>,
}

impl Departures {
    /// No departures known.
    pub fn new() -> Self {
        Departures::default()
    }

    /// Takes in a membership event seen at `now`: a member that is live
    /// again is no longer departed; a departure starts its clock.
    pub fn observe(&mut self, event: &MembershipEvent, now: Instant) {
        match event {
            MembershipEvent::Joined(m) | MembershipEvent::Updated(m) => {
                self.by_member.remove(&m.id);
            }
            MembershipEvent::Left(m) => {
                self.by_member.insert(m.id, Departure::Left);
            }
            MembershipEvent::Failed(m) => {
                self.by_member.insert(m.id, Departure::Failed { since: now });
            }
            MembershipEvent::Resync(live) => {
                let live: BTreeSet<MemberId> = live.iter().map(|m| m.id).collect();
                self.by_member.retain(|id, _| !live.contains(id));
            }
        }
    }

    /// `id` is known to the cluster (raft, a short id) but not live, and no
    /// departure of it was seen (this member learned of it later, or became
    /// leader later): its clock starts `now`, unless it already runs.
    pub fn note_missing(&mut self, id: MemberId, now: Instant) {
        self.by_member.entry(id).or_insert(Departure::Failed { since: now });
    }

    /// How `id` is doing at `now`: healthy when `live`, gone once it left
    /// or failed past the grace, suspect otherwise.
    pub fn health(&self, id: MemberId, live: bool, now: Instant, t: &DepartureTimeouts) -> Health {
        if live {
            return Health::Healthy;
        }
        match self.by_member.get(&id) {
            Some(Departure::Left) => Health::Gone,
            Some(Departure::Failed { since }) if now.saturating_duration_since(*since) >= t.failure_grace => {
                Health::Gone
            }
            _ => Health::Suspect,
        }
    }

    /// The members whose departure is final at `now` (left, or failed past
    /// the reap timeout): their short id is freed and their record dropped.
    pub fn released(&self, now: Instant, t: &DepartureTimeouts) -> BTreeSet<MemberId> {
        self.by_member
            .iter()
            .filter(|(_, d)| match d {
                Departure::Left => true,
                Departure::Failed { since } => now.saturating_duration_since(*since) >= t.short_id_reap,
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The next time after `now` a decision changes by the clock alone (a
    /// grace or a reap timeout ends); `None` when none will.
    pub fn next_deadline(&self, now: Instant, t: &DepartureTimeouts) -> Option<Instant> {
        self.by_member
            .values()
            .filter_map(|d| match d {
                Departure::Left => None,
                Departure::Failed { since } => Some([*since + t.failure_grace, *since + t.short_id_reap]),
            })
            .flatten()
            .filter(|at| *at > now)
            .min()
    }

    /// Forgets the departures of members `keep` says no longer matter.
    pub fn retain(&mut self, mut keep: impl FnMut(MemberId) -> bool) {
        self.by_member.retain(|id, _| keep(*id));
    }

    /// The departure of `id`, if one was seen.
    pub fn get(&self, id: MemberId) -> Option<Departure> {
        self.by_member.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::membership::{Member, MemberState};

    const T: DepartureTimeouts =
        DepartureTimeouts { failure_grace: Duration::from_secs(10), short_id_reap: Duration::from_secs(60) };

    fn member(n: u64) -> Member {
        Member {
            id: MemberId::from(n),
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            tags: Default::default(),
            state: MemberState::Alive,
        }
    }

    #[test]
    fn a_failed_member_is_suspect_then_gone_after_the_grace_then_released_after_the_reap() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        let id = MemberId::from(1);
        assert_eq!(d.health(id, true, t0, &T), Health::Healthy);
        d.observe(&MembershipEvent::Failed(member(1)), t0);
        assert_eq!(d.health(id, false, t0 + Duration::from_secs(9), &T), Health::Suspect);
        assert_eq!(d.health(id, false, t0 + T.failure_grace, &T), Health::Gone);
        assert!(d.released(t0 + Duration::from_secs(59), &T).is_empty());
        assert_eq!(d.released(t0 + T.short_id_reap, &T), BTreeSet::from([id]));
        assert_eq!(d.next_deadline(t0, &T), Some(t0 + T.failure_grace));
        assert_eq!(d.next_deadline(t0 + T.failure_grace, &T), Some(t0 + T.short_id_reap));
        assert_eq!(d.next_deadline(t0 + T.short_id_reap, &T), None);
    }

    #[test]
    fn a_left_member_is_gone_and_released_at_once() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        d.observe(&MembershipEvent::Left(member(2)), t0);
        assert_eq!(d.health(MemberId::from(2), false, t0, &T), Health::Gone);
        assert_eq!(d.released(t0, &T), BTreeSet::from([MemberId::from(2)]));
        assert_eq!(d.next_deadline(t0, &T), None);
    }

    #[test]
    fn a_member_back_before_the_reap_keeps_everything() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        d.observe(&MembershipEvent::Failed(member(1)), t0);
        d.observe(&MembershipEvent::Failed(member(2)), t0);
        d.observe(&MembershipEvent::Joined(member(1)), t0 + Duration::from_secs(30));
        // A resync listing member 2 as live clears it too.
        d.observe(&MembershipEvent::Resync(vec![member(2)]), t0 + Duration::from_secs(31));
        assert!(d.released(t0 + Duration::from_secs(3600), &T).is_empty());
        assert_eq!(d.get(MemberId::from(1)), None);
    }

    #[test]
    fn a_missing_member_starts_its_clock_once() {
        let t0 = Instant::now();
        let mut d = Departures::new();
        d.note_missing(MemberId::from(3), t0);
        d.note_missing(MemberId::from(3), t0 + Duration::from_secs(5));
        assert_eq!(d.get(MemberId::from(3)), Some(Departure::Failed { since: t0 }));
        assert_eq!(d.health(MemberId::from(3), false, t0 + T.failure_grace, &T), Health::Gone);
        d.retain(|_| false);
        assert_eq!(d, Departures::new());
    }

    /// One thing that happens to member `who` (1..=3), `after` seconds after
    /// the previous one.
    #[derive(Debug, Clone)]
    enum Step {
        Joined,
        Updated,
        Failed,
        Left,
        /// A resync listing `who` as live (the others untouched).
        Resync,
        /// Known to raft, not live, no event seen.
        Missing,
    }

    fn any_steps() -> impl Strategy<Value = Vec<(Step, u64, u64)>> {
        let step = prop_oneof![
            Just(Step::Joined),
            Just(Step::Updated),
            Just(Step::Failed),
            Just(Step::Left),
            Just(Step::Resync),
            Just(Step::Missing),
        ];
        proptest::collection::vec((step, 1..=3u64, 0..40u64), 0..24)
    }

    /// What the departure clock must say of one member, from the last step
    /// that concerned it alone: the specification, not the implementation.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Last {
        Back,
        Left,
        /// Failed (or missing) since this instant.
        Failed(Instant),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn departures_follow_the_clock_whatever_the_event_order(
            steps in any_steps(),
            grace in 1..60u64,
            reap_extra in 0..60u64,
            probes in proptest::collection::vec(0..200u64, 1..6),
        ) {
            let t = DepartureTimeouts {
                failure_grace: Duration::from_secs(grace),
                short_id_reap: Duration::from_secs(grace + reap_extra),
            };
            let t0 = Instant::now();
            let mut now = t0;
            let mut d = Departures::new();
            let mut last: BTreeMap<MemberId, Last> = BTreeMap::new();
            for (step, who, after) in steps {
                now += Duration::from_secs(after);
                let m = member(who);
                let id = m.id;
                match step {
                    Step::Joined => d.observe(&MembershipEvent::Joined(m), now),
                    Step::Updated => d.observe(&MembershipEvent::Updated(m), now),
                    Step::Failed => d.observe(&MembershipEvent::Failed(m), now),
                    Step::Left => d.observe(&MembershipEvent::Left(m), now),
                    Step::Resync => d.observe(&MembershipEvent::Resync(vec![m]), now),
                    Step::Missing => d.note_missing(id, now),
                }
                let previous = last.get(&id).copied();
                let next = match step {
                    Step::Joined | Step::Updated | Step::Resync => Last::Back,
                    Step::Left => Last::Left,
                    Step::Failed => Last::Failed(now),
                    // A clock already running is not restarted.
                    Step::Missing => match previous {
                        Some(p @ (Last::Left | Last::Failed(_))) => p,
                        _ => Last::Failed(now),
                    },
                };
                last.insert(id, next);
            }
            for probe in probes {
                let at = now + Duration::from_secs(probe);
                let released = d.released(at, &t);
                for who in 1..=3u64 {
                    let id = MemberId::from(who);
                    prop_assert_eq!(d.health(id, true, at, &t), Health::Healthy, "live is healthy");
                    let (gone, freed) = match last.get(&id) {
                        None | Some(Last::Back) => (false, false),
                        Some(Last::Left) => (true, true),
                        Some(Last::Failed(since)) => {
                            let waited = at.duration_since(*since);
                            (waited >= t.failure_grace, waited >= t.short_id_reap)
                        }
                    };
                    let health = d.health(id, false, at, &t);
                    prop_assert_eq!(health == Health::Gone, gone, "member {} at +{:?}: {:?}", who, at - t0, health);
                    prop_assert_eq!(released.contains(&id), freed, "member {} released at +{:?}", who, at - t0);
                }
                // The loop sleeps until the next deadline: nothing may change
                // before it, and something must change at it.
                let decisions = |at: Instant| {
                    let gone: Vec<bool> = (1..=3u64)
                        .map(|n| d.health(MemberId::from(n), false, at, &t) == Health::Gone)
                        .collect();
                    (gone, d.released(at, &t))
                };
                match d.next_deadline(at, &t) {
                    Some(deadline) => {
                        prop_assert!(deadline > at);
                        prop_assert_eq!(decisions(at), decisions(deadline - Duration::from_nanos(1)));
                        prop_assert_ne!(decisions(at), decisions(deadline));
                    }
                    None => prop_assert_eq!(decisions(at), decisions(at + Duration::from_secs(100_000))),
                }
            }
        }
    }
}
