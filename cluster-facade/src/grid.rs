//! Grid events: which members with a short id are live. A member is live
//! by gossip; its short id is the one this member's applied state machine
//! holds for it — never a gossip tag, which a member that was away can still
//! carry after its id was reaped and given to another. The state machine
//! cannot hold one id twice, so neither can the grid view.
//!
//! Each subscriber first receives the live members as `Joined`, then every
//! change; one that falls behind is brought up to date with the
//! `Joined`/`Left` events of the difference, so it never misses a net change
//! and never blocks the cluster.

use std::collections::{BTreeMap, VecDeque};

use cluster_core::member::{join_host_port, tag};
use cluster_core::{
    EventHub, GridEventKind, GridMemberEvent, Member, MemberId, MemberState, ShortId, Subscription,
};

type Live = BTreeMap<MemberId, GridMemberEvent>;

/// What the hub sends: one change, or the whole live set after a lag.
#[derive(Debug, Clone)]
pub(crate) enum Feed {
    Change(GridMemberEvent),
    Resync(Live),
}

/// The hub of grid events of one member.
pub(crate) type GridHub = EventHub<Live, Feed>;

pub(crate) fn hub(capacity: usize) -> GridHub {
    EventHub::new(
        Live::new(),
        capacity,
        |live| live.values().cloned().map(Feed::Change).collect(),
        |live| Feed::Resync(live.clone()),
    )
}

/// The grid view of a live gossip member holding `short_id`.
fn grid_entry(m: &Member, short_id: ShortId) -> Option<GridMemberEvent> {
    let host = m.tags.get(tag::HOST)?;
    let port: u16 = m.tags.get(tag::GRID_PORT)?.parse().ok()?;
    Some(GridMemberEvent {
        kind: GridEventKind::Joined,
        short_id,
        grid_addr: join_host_port(host, port),
        member_id: m.id,
    })
}

/// The events that turn `from` into `to`: departures first.
fn diff(from: &Live, to: &Live) -> Vec<GridMemberEvent> {
    let mut out = Vec::new();
    for (id, old) in from {
        if to.get(id) != Some(old) {
            out.push(GridMemberEvent { kind: GridEventKind::Left, ..old.clone() });
        }
    }
    for (id, new) in to {
        if from.get(id) != Some(new) {
            out.push(new.clone());
        }
    }
    out
}

/// Brings the hub in line with the live members and the short ids held.
pub(crate) fn refresh(hub: &GridHub, live: &[Member], short_ids: &BTreeMap<MemberId, ShortId>) {
    let next: Live = live
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .filter_map(|m| grid_entry(m, *short_ids.get(&m.id)?).map(|e| (m.id, e)))
        .collect();
    hub.publish(|current| {
        let events = diff(current, &next).into_iter().map(Feed::Change).collect();
        *current = next;
        (events, ())
    });
}

/// A subscription to grid events; see [`Cluster::grid_events`](crate::Cluster::grid_events).
pub struct GridEvents {
    sub: Subscription<Live, Feed>,
    seen: Live,
    ready: VecDeque<GridMemberEvent>,
}

impl GridEvents {
    pub(crate) fn new(hub: &GridHub) -> Self {
        GridEvents { sub: hub.subscribe(), seen: Live::new(), ready: VecDeque::new() }
    }

    /// The next grid event; `None` once the member shut down.
    pub async fn recv(&mut self) -> Option<GridMemberEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                self.track(&e);
                return Some(e);
            }
            match self.sub.recv().await? {
                Feed::Change(e) => self.ready.push_back(e),
                Feed::Resync(live) => self.ready.extend(diff(&self.seen, &live)),
            }
        }
    }

    /// The members this subscriber has been told are live.
    pub fn live(&self) -> impl Iterator<Item = &GridMemberEvent> {
        self.seen.values()
    }

    /// The events as a `Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = GridMemberEvent> + Send {
        futures::stream::unfold(self, |mut s| async move { s.recv().await.map(|e| (e, s)) })
    }

    fn track(&mut self, e: &GridMemberEvent) {
        match e.kind {
            GridEventKind::Left => {
                self.seen.remove(&e.member_id);
            }
            _ => {
                self.seen.insert(e.member_id, e.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::MemberInfo;

    fn member(n: u64) -> Member {
        let info = MemberInfo::new(MemberId::from(n), "127.0.0.1", 1, 2, 3, 5000 + n as u16);
        Member {
            id: info.member_id,
            generation: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            tags: info.to_tags(),
            state: MemberState::Alive,
        }
    }

    fn ids(pairs: &[(u64, u32)]) -> BTreeMap<MemberId, ShortId> {
        pairs.iter().map(|(m, s)| (MemberId::from(*m), ShortId::new(*s).unwrap())).collect()
    }

    #[tokio::test]
    async fn joined_once_it_holds_a_short_id_then_left() {
        let h = hub(16);
        let mut sub = GridEvents::new(&h);
        refresh(&h, &[member(1)], &ids(&[]));
        refresh(&h, &[member(1)], &ids(&[(1, 1)]));
        refresh(&h, &[member(1)], &ids(&[(1, 1)])); // no change, no event
        refresh(&h, &[], &ids(&[(1, 1)]));
        let e = sub.recv().await.unwrap();
        assert_eq!(
            (e.kind, e.short_id.get(), e.grid_addr.as_str()),
            (GridEventKind::Joined, 1, "127.0.0.1:5001")
        );
        assert_eq!(sub.recv().await.unwrap().kind, GridEventKind::Left);
        assert!(sub.sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_stale_short_id_tag_is_ignored() {
        // Member 1 was away, its id 2 was reaped and given to member 2; it
        // comes back still tagged 2. Only the state machine's ids count.
        let h = hub(16);
        let mut sub = GridEvents::new(&h);
        let mut stale = member(1);
        stale.tags.insert(tag::SHORT_ID.into(), "2".into());
        refresh(&h, &[stale, member(2)], &ids(&[(2, 2)]));
        let e = sub.recv().await.unwrap();
        assert_eq!((e.member_id, e.short_id.get()), (MemberId::from(2), 2));
        assert!(sub.sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn late_and_slow_subscribers_see_the_net_changes() {
        let h = hub(2);
        refresh(&h, &[member(1)], &ids(&[(1, 1)]));
        let mut late = GridEvents::new(&h);
        assert_eq!(late.recv().await.unwrap().member_id, MemberId::from(1));
        // Fall behind: 1 leaves, 2..6 join one by one.
        let mut live = Vec::new();
        let mut held = Vec::new();
        refresh(&h, &live, &ids(&held));
        for n in 2..7u64 {
            live.push(member(n));
            held.push((n, n as u32));
            refresh(&h, &live, &ids(&held));
        }
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(late.recv().await.unwrap());
        }
        assert_eq!(got[0].kind, GridEventKind::Left);
        assert_eq!(late.live().count(), 5);
    }
}
