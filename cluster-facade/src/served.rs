//! What a member's forwarding service serves: its consensus store, timed for
//! [`Metrics`], with gossip's view of the members ([`LivenessTable`]) that a
//! bare store does not have.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cluster_core::{
    ConsensusProgress, ConsensusStatus, ConsensusStore, Endpoints, Entries, Error, KeyMeta, Liveness,
    MemberId, MemberState, MembershipEvent, MembershipEvents, Result, ShortId, Watch, WriteOutcome,
    WriteRequest,
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

/// The store a member's service serves: its own, timed, with gossip's view.
pub(crate) struct ServedStore<S> {
    pub(crate) store: Arc<S>,
    pub(crate) liveness: LivenessTable,
    pub(crate) metrics: Metrics,
}

impl<S: ConsensusStore> ConsensusStore for ServedStore<S> {
    fn member_id(&self) -> MemberId {
        self.store.member_id()
    }

    fn raft_addr(&self) -> SocketAddr {
        self.store.raft_addr()
    }

    fn status(&self) -> ConsensusStatus {
        self.store.status()
    }

    fn status_changes(&self) -> watch::Receiver<ConsensusStatus> {
        self.store.status_changes()
    }

    async fn is_initialized(&self) -> Result<bool> {
        self.store.is_initialized().await
    }

    async fn bootstrap(&self) -> Result<()> {
        self.store.bootstrap().await
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.store.get(key)
    }

    fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.store.get_prefix(prefix)
    }

    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        self.store.get_prefix_with_revision(prefix)
    }

    async fn progress(&self) -> ConsensusProgress {
        self.store.progress().await
    }

    fn liveness(&self) -> BTreeMap<MemberId, Liveness> {
        self.liveness.liveness(&self.store.status(), &self.store.short_ids().unwrap_or_default())
    }

    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>> {
        self.store.short_ids()
    }

    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.store.get_with_meta(key)
    }

    async fn consistent_get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        let start = Instant::now();
        let r = self.store.consistent_get_with_meta(key).await;
        if r.is_ok() {
            self.metrics.observe_read(start.elapsed());
        }
        r
    }

    async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let start = Instant::now();
        let r = self.store.consistent_get(key).await;
        if r.is_ok() {
            self.metrics.observe_read(start.elapsed());
        }
        r
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let start = Instant::now();
        let r = self.store.write(request).await;
        // A follower's quick "not the leader" is no write: do not time it.
        if !matches!(r, Err(Error::NotLeader(_))) {
            self.metrics.observe_write(start.elapsed(), r.is_ok());
        }
        r
    }

    fn watch(&self, prefix: &str) -> Watch {
        self.store.watch(prefix)
    }

    fn watch_from(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        self.store.watch_from(prefix, from_revision)
    }

    async fn add_nonvoter(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.store.add_nonvoter(member, endpoints).await
    }

    async fn promote(&self, member: MemberId) -> Result<()> {
        self.store.promote(member).await
    }

    async fn demote(&self, member: MemberId) -> Result<()> {
        self.store.demote(member).await
    }

    async fn remove(&self, member: MemberId) -> Result<()> {
        self.store.remove(member).await
    }

    async fn set_endpoints(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.store.set_endpoints(member, endpoints).await
    }

    async fn shutdown(&self) -> Result<()> {
        // The member shuts its store down itself, after the service.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::Member;

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
}
