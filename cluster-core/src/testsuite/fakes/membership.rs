//! The fake [`Membership`](crate::Membership): a [`FakeNetwork`] whose members the test makes join, change and leave.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::hub::EventHub;
use crate::id::MemberId;
use crate::member::tag;
use crate::membership::{
    Member, MemberState, MemberTable, Membership, MembershipConfig, MembershipEvent, MembershipEvents,
    membership_hub,
};

use super::{FAKE_CLUSTER_ID, lock};

/// One member of a [`FakeNetwork`].
struct Entry {
    member: Member,
    cluster_id: String,
    /// The events of a running handle; `None` for a member the test drives.
    hub: Option<EventHub<MemberTable, MembershipEvent>>,
}

#[derive(Default)]
struct Net {
    members: BTreeMap<MemberId, Entry>,
    next_port: u16,
}

impl Net {
    /// Tells every live handle of `cluster_id` (`about`'s own included)
    /// about `event`, a change of `about`.
    fn broadcast(&self, cluster_id: &str, about: MemberId, event: &MembershipEvent) {
        for entry in self.members.values() {
            let Some(hub) = &entry.hub else { continue };
            if entry.cluster_id != cluster_id || entry.member.state != MemberState::Alive {
                continue;
            }
            hub.publish(|table| {
                match event {
                    MembershipEvent::Joined(m) | MembershipEvent::Updated(m) => {
                        table.insert(about, m.clone());
                    }
                    _ => {
                        table.remove(&about);
                    }
                }
                (vec![event.clone()], ())
            });
        }
    }

    fn fake_addr(&mut self) -> SocketAddr {
        self.next_port = self.next_port.wrapping_add(1).max(1);
        SocketAddr::from(([127, 0, 0, 1], 40_000u16.wrapping_add(self.next_port)))
    }
}

/// A gossip network in memory: members started on it ([`start`](Self::start))
/// see each other at once when they share a cluster id (seeds do not
/// matter); the test adds members of [`FAKE_CLUSTER_ID`] (or the id given to
/// [`with_cluster_id`](Self::with_cluster_id)) and makes them change, leave
/// and fail. Cheap to clone.
#[derive(Clone)]
pub struct FakeNetwork {
    net: Arc<Mutex<Net>>,
    cluster_id: String,
}

impl Default for FakeNetwork {
    fn default() -> Self {
        FakeNetwork::with_cluster_id(FAKE_CLUSTER_ID)
    }
}

impl std::fmt::Debug for FakeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeNetwork").field("cluster_id", &self.cluster_id).finish_non_exhaustive()
    }
}

impl FakeNetwork {
    /// A network whose test-driven members belong to `cluster_id`.
    pub fn with_cluster_id(cluster_id: impl Into<String>) -> Self {
        FakeNetwork { net: Arc::default(), cluster_id: cluster_id.into() }
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        lock(&self.net)
    }

    /// Starts a member on this network, as [`Membership::start`] would.
    pub async fn start(&self, config: MembershipConfig) -> Result<FakeMembership> {
        let mut net = self.net();
        let gossip_addr = match config.advertise_addr {
            Some(a) => a,
            None if config.listen_addr.port() != 0 => config.listen_addr,
            None => net.fake_addr(),
        };
        let member = Member {
            id: config.member_id,
            generation: config.generation,
            gossip_addr,
            tags: config.tags,
            state: MemberState::Alive,
        };
        let hub = membership_hub(1024);
        // It sees the live members of its cluster, and itself.
        hub.publish(|table| {
            for e in net.members.values() {
                if e.cluster_id == config.cluster_id && e.member.state == MemberState::Alive {
                    table.insert(e.member.id, e.member.clone());
                }
            }
            table.insert(member.id, member.clone());
            (Vec::new(), ())
        });
        net.broadcast(&config.cluster_id, member.id, &MembershipEvent::Joined(member.clone()));
        net.members.insert(
            member.id,
            Entry { member, cluster_id: config.cluster_id.clone(), hub: Some(hub.clone()) },
        );
        Ok(FakeMembership {
            id: config.member_id,
            gossip_addr,
            cluster_id: config.cluster_id,
            net: self.clone(),
            hub,
        })
    }

    /// A member the test drives joins (or comes back with a higher
    /// generation) with `tags`; its gossip address comes from its `host`
    /// and gossip-port tags when they parse. Returns it as members see it.
    pub fn join(&self, id: MemberId, tags: BTreeMap<String, String>) -> Member {
        let mut net = self.net();
        let from_tags = tags
            .get(tag::HOST)
            .zip(tags.get(tag::GOSSIP_PORT))
            .and_then(|(h, p)| Some(SocketAddr::new(h.parse().ok()?, p.parse().ok()?)));
        let gossip_addr = match from_tags {
            Some(a) => a,
            None => net.fake_addr(),
        };
        let generation = net.members.get(&id).map_or(1, |e| e.member.generation + 1);
        let member = Member { id, generation, gossip_addr, tags, state: MemberState::Alive };
        net.broadcast(&self.cluster_id, id, &MembershipEvent::Joined(member.clone()));
        net.members
            .insert(id, Entry { member: member.clone(), cluster_id: self.cluster_id.clone(), hub: None });
        member
    }

    /// A live member the test drives publishes `tags` (all of them, replacing the old).
    pub fn set_tags(&self, id: MemberId, tags: BTreeMap<String, String>) {
        let mut net = self.net();
        let Some(entry) = net.members.get_mut(&id) else { return };
        if entry.member.state != MemberState::Alive || entry.member.tags == tags {
            return;
        }
        entry.member.tags = tags;
        let (member, cluster_id) = (entry.member.clone(), entry.cluster_id.clone());
        net.broadcast(&cluster_id, id, &MembershipEvent::Updated(member));
    }

    /// A member announces its departure: every member sees it `Left`.
    pub fn leave(&self, id: MemberId) {
        self.depart(id, MemberState::Left);
    }

    /// A member stops answering: every member sees it `Failed`.
    pub fn fail(&self, id: MemberId) {
        self.depart(id, MemberState::Failed);
    }

    fn depart(&self, id: MemberId, state: MemberState) {
        let mut net = self.net();
        let Some(entry) = net.members.get_mut(&id) else { return };
        if entry.member.state != MemberState::Alive {
            return;
        }
        entry.member.state = state;
        let (member, cluster_id) = (entry.member.clone(), entry.cluster_id.clone());
        let event = match state {
            MemberState::Left => MembershipEvent::Left(member),
            _ => MembershipEvent::Failed(member),
        };
        net.broadcast(&cluster_id, id, &event);
    }

    fn update_own(&self, id: MemberId, edit: impl FnOnce(&mut BTreeMap<String, String>)) -> Result<()> {
        let mut net = self.net();
        let Some(entry) = net.members.get_mut(&id) else {
            return Err(Error::ShuttingDown);
        };
        if entry.member.state != MemberState::Alive {
            return Err(Error::ShuttingDown);
        }
        let before = entry.member.tags.clone();
        edit(&mut entry.member.tags);
        if entry.member.tags == before {
            return Ok(());
        }
        let (member, cluster_id) = (entry.member.clone(), entry.cluster_id.clone());
        net.broadcast(&cluster_id, id, &MembershipEvent::Updated(member));
        Ok(())
    }
}

/// A member started on a [`FakeNetwork`].
pub struct FakeMembership {
    id: MemberId,
    gossip_addr: SocketAddr,
    cluster_id: String,
    net: FakeNetwork,
    hub: EventHub<MemberTable, MembershipEvent>,
}

impl std::fmt::Debug for FakeMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMembership")
            .field("id", &self.id)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl FakeMembership {
    /// The network it runs on, to drive the other members.
    pub fn network(&self) -> &FakeNetwork {
        &self.net
    }
}

impl Membership for FakeMembership {
    /// A member alone on a network of its own; use [`FakeNetwork::start`] for more.
    async fn start(config: MembershipConfig) -> Result<Self> {
        FakeNetwork::with_cluster_id(config.cluster_id.clone()).start(config).await
    }

    fn member_id(&self) -> MemberId {
        self.id
    }

    fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<()> {
        self.net.update_own(self.id, |t| t.extend(tags))
    }

    async fn remove_tags(&self, names: Vec<String>) -> Result<()> {
        self.net.update_own(self.id, |t| {
            for n in &names {
                t.remove(n);
            }
        })
    }

    fn members(&self) -> Vec<Member> {
        self.hub.read(|t| t.values().cloned().collect())
    }

    fn subscribe(&self) -> MembershipEvents {
        self.hub.subscribe()
    }

    async fn leave(&self) -> Result<()> {
        self.net.leave(self.id);
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        self.net.fail(self.id);
        Ok(())
    }
}
