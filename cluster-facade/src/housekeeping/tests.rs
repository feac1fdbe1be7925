//! One test per decision of the housekeeping, on the kit's fake membership
//! and fake store, with paused time: each runs in well under a second.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_core::testsuite::fakes::{FakeCluster, FakeMembership, FakeNetwork, FakeStore};
use cluster_core::testsuite::wait_until;
use cluster_core::{
    ConsensusStore, ConsensusStoreExt, GridEventKind, MemberId, MemberInfo, MembershipConfig, RaftRole,
    ShortId, keys,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Housekeeper, Settings};
use crate::grid::{self, GridEvents, GridHub};
use crate::proof::MemberProofs;

const GRACE: Duration = Duration::from_secs(10);
const REAP: Duration = Duration::from_secs(60);

/// The member under test (fake store member 0, leading) and its gossip.
struct Rig {
    cluster: FakeCluster,
    net: FakeNetwork,
    store: Arc<FakeStore>,
    grid: GridHub,
    short_id: watch::Receiver<Option<ShortId>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A member's tags on host 127.0.0.1 with ports from `n`.
fn info(id: MemberId, n: u16) -> MemberInfo {
    MemberInfo::new(id, "127.0.0.1", 7000 + n, 8000 + n, 9000 + n, 5700 + n)
}

fn settings(interval: Duration) -> Settings {
    // Plain transport: no certificate to prove, every admitted member counts.
    let proofs = MemberProofs::new(
        cluster_rpc::Security::Plain,
        cluster_rpc::Net::tcp(),
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    Settings {
        num_voters: 3,
        replicas: 5,
        failure_grace: GRACE,
        short_id_reap: REAP,
        interval,
        proofs: Arc::new(proofs),
    }
}

impl Rig {
    /// Housekeeping of member 0 of `cluster`.
    async fn start(settings: Settings, cluster: FakeCluster) -> Rig {
        let store = cluster.member(0);
        let net = FakeNetwork::default();
        let me = info(store.id, 0);
        let membership: FakeMembership = net
            .start(MembershipConfig {
                member_id: store.id,
                generation: 1,
                cluster_id: "test-cluster".to_owned(),
                listen_addr: SocketAddr::from(([127, 0, 0, 1], me.gossip_port)),
                advertise_addr: None,
                seeds: Vec::new(),
                gossip_interval: Duration::from_millis(100),
                failure_detection: Default::default(),
                tags: me.to_tags(),
                encryption: Default::default(),
            })
            .await
            .expect("the fake starts");
        let membership = Arc::new(membership);
        let grid = grid::hub(64);
        let (own, short_id) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let events = cluster_core::Membership::subscribe(&*membership);
        let keeper = Housekeeper::new(membership, store.clone(), settings, grid.clone(), own);
        let task = tokio::spawn(keeper.run(events, stop_rx));
        Rig { cluster, net, store, grid, short_id, stop, task }
    }

    /// Member `n` joins gossip; returns its id.
    fn join(&self, n: u16) -> MemberId {
        let id = MemberId::generate();
        self.net.join(id, info(id, n).to_tags());
        id
    }

    fn voters(&self) -> BTreeSet<MemberId> {
        self.store.status().voters.keys().copied().collect()
    }

    fn short_id_of(&self, id: MemberId) -> Option<ShortId> {
        self.store.short_ids().expect("the fake reads").get(&id).copied()
    }

    fn record(&self, id: MemberId) -> Option<MemberInfo> {
        let key = keys::member_key(id);
        let bytes = self.store.get(&key).expect("the fake reads")?;
        Some(keys::decode_member_record(&key, &bytes).expect("records decode"))
    }

    /// The members with a role key under `prefix`.
    fn marked(&self, prefix: &str, parse: fn(&str) -> cluster_core::Result<MemberId>) -> BTreeSet<MemberId> {
        let kvs = self.store.get_prefix(prefix).expect("the fake reads");
        kvs.iter().filter_map(|(k, _)| parse(k).ok()).collect()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.expect("housekeeping ends cleanly");
    }
}

/// How long a wait may take in paused time (so exactly as long as needed):
/// ten minutes of virtual time.
const VIRTUAL: Duration = Duration::from_secs(600);

/// Lets virtual time run until `when`: what must still hold then is checked after.
async fn at(when: Instant) {
    tokio::time::sleep_until(when).await;
}

fn short(n: u32) -> ShortId {
    ShortId::new(n).expect("a valid short id")
}

#[tokio::test(start_paused = true)]
async fn a_new_member_is_added_as_nonvoter_then_promoted() {
    let rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    let b = rig.join(1);
    wait_until(VIRTUAL, "b is a voter", async || rig.voters().contains(&b)).await;
    let changes: Vec<_> =
        rig.cluster.shared().membership_changes.iter().filter(|(_, id)| *id == b).copied().collect();
    assert_eq!(changes, [("add", b), ("promote", b)]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_voter_is_removed_after_the_grace_not_before() {
    let rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    let (b, c) = (rig.join(1), rig.join(2));
    wait_until(VIRTUAL, "three voters", async || rig.voters().len() == 3).await;
    let failed_at = Instant::now();
    rig.net.fail(c);
    at(failed_at + GRACE - Duration::from_millis(100)).await;
    assert!(rig.voters().contains(&c), "a failed voter is kept during its grace");
    wait_until(VIRTUAL, "c is out of raft", async || !rig.store.status().all_members().contains(&c)).await;
    let took = failed_at.elapsed();
    assert!(took >= GRACE && took < GRACE + Duration::from_secs(1), "removed after {took:?}");
    assert_eq!(rig.voters(), BTreeSet::from([rig.store.id, b]));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_leader_no_member_can_replace_leaves_raft_after_the_grace_not_the_reap() {
    // Three voters, a bound of 5 (no member to replace one): 1 leads, then crashes.
    let cluster = FakeCluster::new(3);
    cluster.set_leader(Some(1));
    let rig = Rig::start(settings(Duration::from_secs(1)), cluster).await;
    let (old, other) = (rig.cluster.member(1).id, rig.cluster.member(2).id);
    rig.net.join(old, info(old, 1).to_tags());
    rig.net.join(other, info(other, 2).to_tags());
    at(Instant::now() + Duration::from_secs(2)).await;
    let failed_at = Instant::now();
    rig.net.fail(old);
    // This member wins the election a moment later.
    at(failed_at + Duration::from_secs(1)).await;
    rig.cluster.set_leader(Some(0));
    at(failed_at + GRACE - Duration::from_millis(100)).await;
    assert!(rig.voters().contains(&old), "a failed voter is kept during its grace");
    wait_until(VIRTUAL, "the old leader is out of raft", async || {
        !rig.store.status().all_members().contains(&old)
    })
    .await;
    let took = failed_at.elapsed();
    assert!(
        took >= GRACE && took < GRACE + Duration::from_secs(1),
        "removed after {took:?}, not at the reap"
    );
    assert_eq!(rig.voters(), BTreeSet::from([rig.store.id, other]));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn records_follow_raft() {
    let mut rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    let b = rig.join(1);
    let me = rig.store.id;
    wait_until(VIRTUAL, "b is recorded as voter", async || {
        rig.record(b).is_some_and(|r| r.raft_role == RaftRole::Voter && r.short_id.is_some())
    })
    .await;
    let leader = rig.record(me).expect("the leader's record");
    assert_eq!(leader.raft_role, RaftRole::Leader);
    let held: BTreeSet<Option<ShortId>> = [leader.short_id, rig.record(b).and_then(|r| r.short_id)].into();
    assert_eq!(held, BTreeSet::from([Some(short(1)), Some(short(2))]), "records carry the short ids");
    assert_eq!(rig.marked(keys::VOTERS_PREFIX, keys::parse_voter_key), BTreeSet::from([me, b]));
    assert_eq!(rig.store.get(keys::LEADER_KEY).unwrap(), Some(me.to_string().into_bytes()));
    // The member's own short id follows the state machine.
    rig.short_id.wait_for(|s| *s == leader.short_id).await.expect("housekeeping runs");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn records_follow_a_promotion_and_a_removal() {
    let rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    let me = rig.store.id;
    let (b, c) = (rig.join(1), rig.join(2));
    wait_until(VIRTUAL, "three voters", async || rig.voters().len() == 3).await;
    let d = rig.join(3);
    wait_until(VIRTUAL, "d is recorded as nonvoter", async || {
        rig.record(d).is_some_and(|r| r.raft_role == RaftRole::Nonvoter)
            && rig.marked(keys::NONVOTERS_PREFIX, keys::parse_nonvoter_key) == BTreeSet::from([d])
    })
    .await;
    // b fails: after its grace it leaves raft and d takes its place.
    rig.net.fail(b);
    wait_until(VIRTUAL, "d is recorded as voter, b not at all", async || {
        rig.record(d).is_some_and(|r| r.raft_role == RaftRole::Voter) && rig.record(b).is_none()
    })
    .await;
    assert_eq!(rig.marked(keys::VOTERS_PREFIX, keys::parse_voter_key), BTreeSet::from([me, c, d]));
    assert!(rig.marked(keys::NONVOTERS_PREFIX, keys::parse_nonvoter_key).is_empty());
    assert_eq!(rig.voters(), BTreeSet::from([me, c, d]));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_members_short_id_is_reaped_after_the_reap_timeout() {
    let rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    // Three voters: one can fail and the other two still commit.
    let (_, b) = (rig.join(2), rig.join(1));
    wait_until(VIRTUAL, "three voters with short ids", async || {
        rig.voters().len() == 3 && rig.short_id_of(b).is_some()
    })
    .await;
    let held = rig.short_id_of(b);
    let mut events = GridEvents::new(&rig.grid);
    let failed_at = Instant::now();
    rig.net.fail(b);
    at(failed_at + REAP - Duration::from_millis(100)).await;
    assert_eq!(rig.short_id_of(b), held, "held until the reap timeout");
    // Out of raft, it is still listed (as failed, by who reads liveness),
    // with the short id it holds: `force-leave '#N'` can name it.
    let record = rig.record(b).expect("its record stays until the reap");
    assert_eq!((record.raft_role, record.short_id), (RaftRole::Nonvoter, held));
    wait_until(VIRTUAL, "b's short id is freed", async || rig.short_id_of(b).is_none()).await;
    let took = failed_at.elapsed();
    assert!(took >= REAP && took < REAP + Duration::from_secs(1), "reaped after {took:?}");
    wait_until(VIRTUAL, "b's record goes with its short id", async || rig.record(b).is_none()).await;
    // Grid events: b left when it failed (it is no longer live).
    let mut left = false;
    while let Some(e) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await.ok().flatten() {
        left |= e.member_id == b && e.kind == GridEventKind::Left;
    }
    assert!(left, "grid events report b left");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_member_back_before_the_reap_keeps_its_short_id() {
    let rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    let (b, c) = (rig.join(1), rig.join(2));
    wait_until(VIRTUAL, "b and c hold short ids", async || {
        rig.short_id_of(b).is_some() && rig.short_id_of(c).is_some()
    })
    .await;
    let held = rig.short_id_of(b);
    rig.net.fail(b);
    wait_until(VIRTUAL, "b is out of raft after its grace", async || {
        !rig.store.status().all_members().contains(&b)
    })
    .await;
    // Back after the grace, before the reap: a new incarnation of the same member.
    rig.net.join(b, info(b, 1).to_tags());
    wait_until(VIRTUAL, "b is a voter again", async || rig.voters().contains(&b)).await;
    at(Instant::now() + REAP * 2).await;
    assert_eq!(rig.short_id_of(b), held, "b kept its short id");
    assert_eq!(rig.record(b).and_then(|r| r.short_id), held);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_change_re_plans_at_once() {
    // A tick an hour apart: only the leader change can explain a quick plan.
    let interval = Duration::from_secs(3600);
    let other = MemberId::generate();
    let cluster = FakeCluster::new(1);
    cluster.set_leader_id(Some(other));
    let rig = Rig::start(settings(interval), cluster).await;
    let b = rig.join(1);
    at(Instant::now() + Duration::from_secs(5)).await;
    assert!(rig.cluster.shared().membership_changes.is_empty(), "a follower changes nothing");
    assert_eq!(rig.short_id_of(b), None);
    let became_leader = Instant::now();
    rig.cluster.set_leader(Some(0));
    wait_until(VIRTUAL, "b is a voter with a short id", async || {
        rig.voters().contains(&b) && rig.short_id_of(b).is_some()
    })
    .await;
    assert!(became_leader.elapsed() < Duration::from_secs(1), "planned {:?} after", became_leader.elapsed());
    let leader_key = rig.store.get(keys::LEADER_KEY).unwrap();
    assert_eq!(leader_key, Some(rig.store.id.to_string().into_bytes()));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn grid_events_and_the_own_short_id_follow_the_records_without_polling() {
    // A follower (member 1 leads), ticking once an hour: only the store's
    // watch can bring the leader's writes to it in time.
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(1));
    let mut rig = Rig::start(settings(Duration::from_secs(3600)), cluster).await;
    let leader = rig.cluster.member(1);
    let me = rig.store.id;
    let b = rig.join(1);
    let mut events = GridEvents::new(&rig.grid);
    let started = Instant::now();
    for (id, n) in [(me, 0), (b, 1)] {
        let short_id = leader.allocate_short_id(id).await.expect("the leader writes");
        let record = MemberInfo { short_id: Some(short_id), ..info(id, n) };
        leader.set(&keys::member_key(id), record.to_bytes()).await.expect("the leader writes");
    }
    let mut joined = BTreeSet::new();
    while joined.len() < 2 {
        let e = events.recv().await.expect("housekeeping runs");
        assert_eq!(e.kind, GridEventKind::Joined);
        joined.insert(e.member_id);
    }
    assert_eq!(joined, BTreeSet::from([me, b]));
    rig.short_id.wait_for(Option::is_some).await.expect("housekeeping runs");
    assert!(started.elapsed() < Duration::from_millis(1), "followed after {:?}", started.elapsed());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_phantom_at_a_members_addresses_is_never_admitted() {
    let rig = Rig::start(settings(Duration::from_secs(1)), FakeCluster::new(1)).await;
    let b = rig.join(1);
    wait_until(VIRTUAL, "b is a voter", async || rig.voters().contains(&b)).await;
    // A made-up member whose raft and service addresses are b's, gossiping from its own port.
    let phantom = MemberId::generate();
    let mut tags = info(phantom, 1);
    tags.gossip_port = 7050;
    rig.net.join(phantom, tags.to_tags());
    // A later member is admitted: housekeeping has seen the phantom by then.
    let c = rig.join(2);
    wait_until(VIRTUAL, "c holds a short id and a record", async || {
        rig.short_id_of(c).is_some() && rig.record(c).is_some_and(|r| r.short_id.is_some())
    })
    .await;
    at(Instant::now() + Duration::from_secs(30)).await;
    assert!(!rig.store.status().all_members().contains(&phantom), "the phantom is in raft");
    assert_eq!(rig.short_id_of(phantom), None);
    assert_eq!(rig.record(phantom), None);
    assert_eq!(rig.short_id_of(c), Some(short(3)), "the phantom never held a short id");
    rig.stop().await;
}
