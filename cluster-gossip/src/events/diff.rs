//! The membership diff: from successive views of the live chitchat nodes to
//! joined / updated / left / failed events. Pure: no I/O, time is passed in.
//!
//! Members are keyed by member id and only the highest generation counts: a
//! restarted member is one member. The rules, per member id:
//! - not present (unknown, left or failed) and now live → `Joined`;
//! - present and its tags or address changed → `Updated`;
//! - present and now carrying the leaving key → `Left` (at once, without
//!   waiting for the failure detector);
//! - present and no longer live → `Failed`;
//! - present and a higher generation appears → `Failed` for the old
//!   incarnation (unless it announced its leave), then `Joined` for the new;
//! - an incarnation older than one already seen is ignored;
//! - a departed member is forgotten after the grace period.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_core::{Member, MemberId, MemberState, MemberTable, MembershipEvent};

use crate::member::Observed;

#[derive(Debug)]
struct Known {
    member: Member,
    /// When it departed (left or failed), for forgetting it.
    since: Instant,
}

/// What this member knows of every member it saw, present or departed.
#[derive(Debug)]
pub(crate) struct Tracker {
    known: BTreeMap<MemberId, Known>,
    grace: Duration,
}

impl Tracker {
    /// A tracker that forgets departed members `grace` after they departed.
    pub(crate) fn new(grace: Duration) -> Self {
        Tracker { known: BTreeMap::new(), grace }
    }

    /// Takes the new set of live nodes and returns the events since the last view.
    pub(crate) fn observe(
        &mut self,
        live: impl IntoIterator<Item = Observed>,
        now: Instant,
    ) -> Vec<MembershipEvent> {
        // Highest generation per member id.
        let mut newest: BTreeMap<MemberId, Observed> = BTreeMap::new();
        for o in live {
            match newest.get(&o.id) {
                Some(seen) if seen.generation >= o.generation => {}
                _ => {
                    newest.insert(o.id, o);
                }
            }
        }
        let mut events = Vec::new();
        for (id, o) in &newest {
            self.observe_live(*id, o, now, &mut events);
        }
        for known in self.known.values_mut() {
            let m = &mut known.member;
            if m.state == MemberState::Alive && newest.get(&m.id).is_none_or(|o| o.generation < m.generation)
            {
                m.state = MemberState::Failed;
                known.since = now;
                events.push(MembershipEvent::Failed(m.clone()));
            }
        }
        events
    }

    fn observe_live(&mut self, id: MemberId, o: &Observed, now: Instant, events: &mut Vec<MembershipEvent>) {
        let alive = || Known { member: o.to_member(MemberState::Alive), since: now };
        let Some(known) = self.known.get_mut(&id) else {
            if o.leaving {
                // Never saw it alive: remember its departure, say nothing.
                self.known.insert(id, Known { member: o.to_member(MemberState::Left), since: now });
            } else {
                let k = alive();
                events.push(MembershipEvent::Joined(k.member.clone()));
                self.known.insert(id, k);
            }
            return;
        };
        let m = &mut known.member;
        if o.generation < m.generation {
            return;
        }
        if o.generation > m.generation {
            if m.state == MemberState::Alive {
                m.state = MemberState::Failed;
                events.push(MembershipEvent::Failed(m.clone()));
            }
            *known = if o.leaving {
                Known { member: o.to_member(MemberState::Left), since: now }
            } else {
                let k = alive();
                events.push(MembershipEvent::Joined(k.member.clone()));
                k
            };
            return;
        }
        match (m.state, o.leaving) {
            (MemberState::Alive, true) => {
                *m = o.to_member(MemberState::Left);
                known.since = now;
                events.push(MembershipEvent::Left(m.clone()));
            }
            (MemberState::Alive, false) if m.tags != o.tags || m.gossip_addr != o.addr => {
                *m = o.to_member(MemberState::Alive);
                events.push(MembershipEvent::Updated(m.clone()));
            }
            // Back from a failure (a healed partition, a false suspicion).
            (MemberState::Failed, false) => {
                *known = alive();
                events.push(MembershipEvent::Joined(known.member.clone()));
            }
            // A failed member seen leaving after all: it is gone either way.
            (MemberState::Failed, true) => m.state = MemberState::Left,
            // Unchanged; or a member that left, which stays left for this generation.
            _ => {}
        }
    }

    /// Forgets members that departed more than the grace period ago.
    pub(crate) fn forget_departed(&mut self, now: Instant) {
        let grace = self.grace;
        self.known.retain(|_, k| k.member.state == MemberState::Alive || now.duration_since(k.since) < grace);
    }

    /// When the next departed member is to be forgotten, if any departed.
    pub(crate) fn next_forget(&self) -> Option<Instant> {
        self.known
            .values()
            .filter(|k| k.member.state != MemberState::Alive)
            .filter_map(|k| k.since.checked_add(self.grace))
            .min()
    }

    /// How many members it remembers, present or departed.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.known.len()
    }
}

/// Applies events to the table of live members behind the hub.
pub(crate) fn apply(table: &mut MemberTable, events: &[MembershipEvent]) {
    for e in events {
        match e {
            MembershipEvent::Joined(m) | MembershipEvent::Updated(m) => {
                table.insert(m.id, m.clone());
            }
            MembershipEvent::Left(m) | MembershipEvent::Failed(m) => {
                table.remove(&m.id);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn obs(id: MemberId, generation: u64, tags: &[(&str, &str)]) -> Observed {
        Observed {
            id,
            generation,
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            leaving: false,
        }
    }

    fn leaving(mut o: Observed) -> Observed {
        o.leaving = true;
        o
    }

    fn kinds(events: &[MembershipEvent]) -> Vec<(&'static str, u64)> {
        events
            .iter()
            .map(|e| match e {
                MembershipEvent::Joined(m) => ("joined", m.generation),
                MembershipEvent::Updated(m) => ("updated", m.generation),
                MembershipEvent::Left(m) => ("left", m.generation),
                MembershipEvent::Failed(m) => ("failed", m.generation),
                _ => ("other", 0),
            })
            .collect()
    }

    #[test]
    fn join_update_fail_and_no_duplicates() {
        let (a, now) = (MemberId::generate(), Instant::now());
        let mut t = Tracker::new(Duration::from_secs(60));
        assert_eq!(kinds(&t.observe([obs(a, 1, &[("k", "1")])], now)), [("joined", 1)]);
        assert!(t.observe([obs(a, 1, &[("k", "1")])], now).is_empty());
        assert_eq!(kinds(&t.observe([obs(a, 1, &[("k", "2")])], now)), [("updated", 1)]);
        assert_eq!(kinds(&t.observe([], now)), [("failed", 1)]);
        assert!(t.observe([], now).is_empty());
        // Back after a partition, same generation.
        assert_eq!(kinds(&t.observe([obs(a, 1, &[("k", "2")])], now)), [("joined", 1)]);
    }

    #[test]
    fn leaving_key_means_left_then_silence() {
        let (a, now) = (MemberId::generate(), Instant::now());
        let mut t = Tracker::new(Duration::from_secs(60));
        t.observe([obs(a, 1, &[])], now);
        let ev = t.observe([leaving(obs(a, 1, &[]))], now);
        assert_eq!(kinds(&ev), [("left", 1)]);
        let MembershipEvent::Left(m) = &ev[0] else { unreachable!() };
        assert_eq!(m.state, MemberState::Left);
        assert!(t.observe([leaving(obs(a, 1, &[]))], now).is_empty());
        assert!(t.observe([], now).is_empty(), "a member that left does not fail later");
    }

    #[test]
    fn restart_is_one_member_joined_again() {
        let (a, now) = (MemberId::generate(), Instant::now());
        let mut t = Tracker::new(Duration::from_secs(60));
        t.observe([obs(a, 1, &[])], now);
        assert_eq!(kinds(&t.observe([], now)), [("failed", 1)]);
        // Both incarnations visible (the old one lingering): one member, the newest.
        assert_eq!(kinds(&t.observe([obs(a, 1, &[]), obs(a, 2, &[])], now)), [("joined", 2)]);
        assert!(t.observe([obs(a, 2, &[]), obs(a, 1, &[])], now).is_empty());
        // An old incarnation alone is stale: the new one is gone.
        assert_eq!(kinds(&t.observe([obs(a, 1, &[])], now)), [("failed", 2)]);
    }

    #[test]
    fn restart_before_failure_detected_fails_the_old_incarnation() {
        let (a, now) = (MemberId::generate(), Instant::now());
        let mut t = Tracker::new(Duration::from_secs(60));
        t.observe([obs(a, 1, &[])], now);
        assert_eq!(kinds(&t.observe([obs(a, 2, &[])], now)), [("failed", 1), ("joined", 2)]);
    }

    #[test]
    fn departed_members_are_forgotten_after_grace() {
        let (a, b, now) = (MemberId::generate(), MemberId::generate(), Instant::now());
        let mut t = Tracker::new(Duration::from_secs(10));
        t.observe([obs(a, 1, &[]), obs(b, 1, &[])], now);
        assert_eq!(t.next_forget(), None, "no departed member: nothing to wake up for");
        t.observe([obs(b, 1, &[])], now);
        assert_eq!(t.next_forget(), Some(now + Duration::from_secs(10)));
        t.forget_departed(now + Duration::from_secs(5));
        assert_eq!(t.remembered(), 2);
        t.forget_departed(now + Duration::from_secs(11));
        assert_eq!(t.remembered(), 1);
        assert_eq!(t.next_forget(), None);
    }

    #[test]
    fn apply_keeps_the_live_table() {
        let (a, b, now) = (MemberId::generate(), MemberId::generate(), Instant::now());
        let mut t = Tracker::new(Duration::from_secs(10));
        let mut table = MemberTable::new();
        apply(&mut table, &t.observe([obs(a, 1, &[]), obs(b, 1, &[])], now));
        assert_eq!(table.len(), 2);
        apply(&mut table, &t.observe([obs(b, 1, &[("x", "y")])], now));
        assert_eq!(table.keys().copied().collect::<Vec<_>>(), [b]);
        assert_eq!(table[&b].tags.get("x").map(String::as_str), Some("y"));
    }
}
