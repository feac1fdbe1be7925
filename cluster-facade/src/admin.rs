//! A member's admin surface: what its forwarding service answers beyond the
//! consensus store ([`MemberAdmin`]: gossip's view of the members, kept in a
//! [`LivenessTable`], and the gossip keyring), and the timing of what the
//! service executes for [`Metrics`] ([`ServiceObserver`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{
    ConsensusStatus, ConsensusStore, KeyringControl, Liveness, MemberAdmin, MemberId, MemberState,
    MembershipEvent, MembershipEvents, ServiceObserver, ShortId,
};
use tokio::sync::watch;

use crate::operator::Metrics;

/// The last gossip state of every member this member heard of, fed by its
/// membership events. Cheap to clone: clones share the table.
#[derive(Clone, Default)]
pub(crate) struct LivenessTable {
    states: Arc<Mutex<BTreeMap<MemberId, MemberState>>>,
}

impl LivenessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MemberId, MemberState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, event: &MembershipEvent) {
        let mut states = self.lock();
        match event {
            MembershipEvent::Joined(m) | MembershipEvent::Updated(m) => {
                states.insert(m.id, MemberState::Alive);
            }
            MembershipEvent::Left(m) => {
                states.insert(m.id, MemberState::Left);
            }
            MembershipEvent::Failed(m) => {
                states.insert(m.id, MemberState::Failed);
            }
            MembershipEvent::Resync(live) => {
                for state in states.values_mut() {
                    if *state == MemberState::Alive {
                        *state = MemberState::Failed;
                    }
                }
                for m in live {
                    states.insert(m.id, MemberState::Alive);
                }
            }
            _ => {}
        }
    }

    /// Follows `events` until they end or `stop` turns true.
    pub(crate) async fn follow(self, mut events: MembershipEvents, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                event = events.recv() => match event {
                    Some(e) => self.apply(&e),
                    None => break,
                },
            }
        }
    }

    /// Each member's liveness: gossip's state, and `Suspect` for a member
    /// gossip gave up on that raft still holds (the leader has not removed
    /// it yet), or that raft holds and gossip never saw. A member out of
    /// raft that still holds a short id (in `short_ids`) and that gossip
    /// never saw here (this member joined later) is `Failed`: it is listed
    /// until its short id is reaped.
    pub(crate) fn liveness(
        &self,
        status: &ConsensusStatus,
        short_ids: &BTreeMap<MemberId, ShortId>,
    ) -> BTreeMap<MemberId, Liveness> {
        let in_raft = status.all_members();
        let mut out: BTreeMap<MemberId, Liveness> = self
            .lock()
            .iter()
            .map(|(id, state)| {
                let l = match state {
                    MemberState::Alive => Liveness::Alive,
                    MemberState::Left => Liveness::Left,
                    _ if in_raft.contains(id) => Liveness::Suspect,
                    _ => Liveness::Failed,
                };
                (*id, l)
            })
            .collect();
        for id in in_raft {
            out.entry(id).or_insert(Liveness::Suspect);
        }
        for id in short_ids.keys() {
            out.entry(*id).or_insert(Liveness::Failed);
        }
        out.insert(status.member_id, Liveness::Alive);
        out
    }
}

/// A member's admin surface, as its service answers it: gossip's view of the
/// members over its store's state, and its gossip keyring.
pub(crate) struct Admin<S> {
    pub(crate) store: Arc<S>,
    pub(crate) liveness: LivenessTable,
    pub(crate) keyring: Option<Arc<dyn KeyringControl>>,
}

impl<S> std::fmt::Debug for Admin<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("keyring", &self.keyring.is_some()).finish_non_exhaustive()
    }
}

impl<S: ConsensusStore> MemberAdmin for Admin<S> {
    fn liveness(&self) -> BTreeMap<MemberId, Liveness> {
        self.liveness.liveness(&self.store.status(), &self.store.short_ids().unwrap_or_default())
    }

    fn keyring(&self) -> Option<&dyn KeyringControl> {
        self.keyring.as_deref()
    }
}

/// The service times the writes and linearizable reads it executes for its
/// callers into the operator metrics (the HTTP API times its own).
impl ServiceObserver for Metrics {
    fn write(&self, took: Duration, ok: bool) {
        self.observe_write(took, ok);
    }

    fn read(&self, took: Duration) {
        self.observe_read(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::{Endpoints, Member};

    fn member(id: MemberId) -> Member {
        Member {
            id,
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().expect("an address"),
            tags: BTreeMap::new(),
            state: MemberState::Alive,
        }
    }

    #[test]
    fn failed_members_still_in_raft_are_suspect() {
        let (me, a, b, c) =
            (MemberId::generate(), MemberId::generate(), MemberId::generate(), MemberId::generate());
        let t = LivenessTable::default();
        t.apply(&MembershipEvent::Joined(member(a)));
        t.apply(&MembershipEvent::Failed(member(b)));
        t.apply(&MembershipEvent::Failed(member(c)));
        let mut status = ConsensusStatus { member_id: me, ..Default::default() };
        status.voters.insert(b, Endpoints::default());
        let l = t.liveness(&status, &BTreeMap::new());
        assert_eq!(l[&a], Liveness::Alive);
        assert_eq!(l[&b], Liveness::Suspect);
        assert_eq!(l[&c], Liveness::Failed);
        assert_eq!(l[&me], Liveness::Alive);
        t.apply(&MembershipEvent::Resync(vec![member(c)]));
        let l = t.liveness(&status, &BTreeMap::new());
        assert_eq!((l[&a], l[&c]), (Liveness::Failed, Liveness::Alive));
        // A member holding a short id that gossip never showed here is failed.
        let unseen = MemberId::generate();
        let short_ids = BTreeMap::from([(unseen, ShortId::new(7).expect("a short id"))]);
        assert_eq!(t.liveness(&status, &short_ids)[&unseen], Liveness::Failed);
    }

    #[test]
    fn the_admin_surface_reads_gossip_over_the_store() {
        let cluster = cluster_core::testsuite::fakes::FakeCluster::new(2);
        cluster.set_leader(Some(0));
        let store = cluster.member(0);
        let other = cluster.member(1).member_id();
        let admin = Admin { store: store.clone(), liveness: LivenessTable::default(), keyring: None };
        admin.liveness.apply(&MembershipEvent::Left(member(other)));
        let l = MemberAdmin::liveness(&admin);
        assert_eq!((l[&store.member_id()], l[&other]), (Liveness::Alive, Liveness::Left));
        assert!(admin.keyring().is_none());
    }
}
