//! Clusters of real members: loopback UDP, or chitchat's in-memory transport
//! where links must be cut.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::time::Duration;

use cluster_core::{MemberId, MemberState, Membership, MembershipConfig, MembershipEvent};
use cluster_gossip::{ChannelTransport, Gossip, GossipError, GossipTransport};
use cluster_testkit::gossip::*;
use cluster_testkit::{DEADLINE, init_tracing, wait_until};

fn ids(members: &[Gossip]) -> BTreeSet<MemberId> {
    members.iter().map(Gossip::member_id).collect()
}

#[tokio::test]
async fn five_members_converge_with_their_tags() {
    init_tracing();
    let members = start_cluster(5, "converge", GossipTransport::Udp).await;
    let all = ids(&members);
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    for g in &members {
        let seen: BTreeMap<MemberId, String> =
            g.members().into_iter().map(|m| (m.id, m.tags.get("n").cloned().unwrap_or_default())).collect();
        let expected: BTreeMap<MemberId, String> =
            members.iter().enumerate().map(|(i, m)| (m.member_id(), i.to_string())).collect();
        assert_eq!(seen, expected);
        assert!(g.members().iter().all(|m| m.state == MemberState::Alive && m.tags.len() == 1));
    }
    for g in &members {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn a_tag_change_is_one_updated_event_on_every_member() {
    init_tracing();
    let members = start_cluster(3, "updated", GossipTransport::Udp).await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    let mut subs = Vec::new();
    for g in &members {
        let mut sub = g.subscribe();
        drain_replay(&mut sub, 3).await;
        subs.push(sub);
    }
    let changed = members[0].member_id();
    members[0].set_tag("color", "blue").await.expect("tag set");
    for sub in &mut subs {
        let (e, before) = next_matching(sub, "the update", |e| about(e) == Some(changed)).await;
        assert!(before.is_empty(), "unexpected events {before:?}");
        let MembershipEvent::Updated(m) = e else { panic!("expected Updated, got {e:?}") };
        assert_eq!(m.tags.get("color").map(String::as_str), Some("blue"));
    }
    // A second change marks the end: nothing may come between the two.
    members[0].remove_tags(["color"]).await.expect("tag removed");
    for sub in &mut subs {
        let (e, before) = next_matching(sub, "the removal", |e| about(e) == Some(changed)).await;
        assert!(before.is_empty(), "unexpected events {before:?}");
        let MembershipEvent::Updated(m) = e else { panic!("expected Updated, got {e:?}") };
        assert!(!m.tags.contains_key("color"), "{m:?}");
    }
    for g in &members {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn graceful_leave_is_reported_left_not_failed() {
    init_tracing();
    let mut members = start_cluster(3, "leave", GossipTransport::Udp).await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    let leaver = members.pop().expect("three members");
    let mut subs: Vec<_> = members.iter().map(Gossip::subscribe).collect();
    leaver.leave().await.expect("leaves");
    assert!(!leaver.is_running());
    for sub in &mut subs {
        let (e, _) = next_matching(sub, "the departure", |e| {
            about(e) == Some(leaver.member_id()) && !matches!(e, MembershipEvent::Joined(_))
        })
        .await;
        let MembershipEvent::Left(m) = e else { panic!("expected Left, got {e:?}") };
        assert_eq!(m.state, MemberState::Left);
    }
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    assert_eq!(leaver.leave().await, Err(GossipError::Stopped));
    for g in &members {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn a_stopped_member_fails_and_its_restart_joins_again() {
    init_tracing();
    let mut members = start_cluster(3, "restart", GossipTransport::Udp).await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    let stopped = members.pop().expect("three members");
    let (id, old_generation) = (stopped.member_id(), stopped.generation());
    let mut subs: Vec<_> = members.iter().map(Gossip::subscribe).collect();
    for sub in &mut subs {
        drain_replay(sub, 3).await;
    }
    stopped.stop().await.expect("stops");
    for sub in &mut subs {
        let (e, before) = next_matching(sub, "the failure", |e| about(e) == Some(id)).await;
        assert!(before.is_empty(), "unexpected events {before:?}");
        assert!(matches!(e, MembershipEvent::Failed(ref m) if m.generation == old_generation), "{e:?}");
    }
    let restarted = Gossip::start(
        fast_config("restart")
            .with_member_id(id)
            .with_generation(old_generation + 1)
            .with_seeds([members[0].gossip_addr().to_string()]),
    )
    .await
    .expect("restarts");
    for sub in &mut subs {
        let (e, before) = next_matching(sub, "the return", |e| about(e) == Some(id)).await;
        assert!(before.is_empty(), "unexpected events {before:?}");
        assert!(matches!(e, MembershipEvent::Joined(ref m) if m.generation == old_generation + 1), "{e:?}");
    }
    members.push(restarted);
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    for g in &members {
        assert_eq!(g.members().iter().filter(|m| m.id == id).count(), 1, "one member, not two");
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn a_partition_fails_the_other_side_and_healing_rejoins_it() {
    init_tracing();
    let transport = ChannelTransport::with_mtu(65_507);
    let members = start_cluster(4, "partition", GossipTransport::Channel(transport.clone())).await;
    let all = ids(&members);
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    let (left, right) = members.split_at(2);
    let mut subs: Vec<_> = members.iter().map(Gossip::subscribe).collect();
    for sub in &mut subs {
        drain_replay(sub, 4).await;
    }
    for a in left {
        for b in right {
            transport.remove_link(a.gossip_addr(), b.gossip_addr()).await;
        }
    }
    let left_ids = ids(left);
    let right_ids = ids(right);
    for (i, sub) in subs.iter_mut().enumerate() {
        let others = if i < 2 { &right_ids } else { &left_ids };
        let mut failed = BTreeSet::new();
        while failed != *others {
            let (e, before) = next_matching(
                sub,
                "failures across the cut",
                |e| matches!(e, MembershipEvent::Failed(m) if others.contains(&m.id)),
            )
            .await;
            assert!(before.is_empty(), "unexpected events {before:?}");
            failed.extend(about(&e));
        }
    }
    wait_converged(&left.iter().collect::<Vec<_>>(), &left_ids).await;
    wait_converged(&right.iter().collect::<Vec<_>>(), &right_ids).await;
    for a in left {
        for b in right {
            transport.add_link(a.gossip_addr(), b.gossip_addr()).await;
        }
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let others = if i < 2 { &right_ids } else { &left_ids };
        let mut joined = BTreeSet::new();
        while joined != *others {
            let (e, before) = next_matching(
                sub,
                "joins after healing",
                |e| matches!(e, MembershipEvent::Joined(m) if others.contains(&m.id)),
            )
            .await;
            assert!(before.is_empty(), "unexpected events {before:?}");
            joined.extend(about(&e));
        }
    }
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    for g in &members {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn clusters_with_different_ids_never_merge() {
    init_tracing();
    let a = start_cluster(2, "cluster-a", GossipTransport::Udp).await;
    // Cluster b is seeded on a member of cluster a too: it talks to it, and is refused.
    let b0 = Gossip::start(fast_config("cluster-b").with_seeds([a[0].gossip_addr().to_string()]))
        .await
        .expect("starts");
    let b1 = Gossip::start(
        fast_config("cluster-b").with_seeds([b0.gossip_addr().to_string(), a[1].gossip_addr().to_string()]),
    )
    .await
    .expect("starts");
    let b = [b0, b1];
    wait_converged(&a.iter().collect::<Vec<_>>(), &ids(&a)).await;
    wait_converged(&b.iter().collect::<Vec<_>>(), &ids(&b)).await;
    // Let many rounds pass, measured by tag changes travelling within each cluster.
    for round in 0..10 {
        let v = round.to_string();
        a[0].set_tag("round", &v).await.expect("tag set");
        b[0].set_tag("round", &v).await.expect("tag set");
        wait_until(DEADLINE, "both clusters saw the round", || async {
            let seen = |g: &Gossip, from: MemberId| {
                g.members().iter().any(|m| m.id == from && m.tags.get("round") == Some(&v))
            };
            seen(&a[1], a[0].member_id()) && seen(&b[1], b[0].member_id())
        })
        .await;
        for g in &a {
            assert_eq!(view(g), ids(&a));
        }
        for g in &b {
            assert_eq!(view(g), ids(&b));
        }
    }
    for g in a.iter().chain(&b) {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn garbage_datagrams_do_not_disturb_a_member() {
    init_tracing();
    let members = start_cluster(2, "garbage", GossipTransport::Udp).await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    let mut sub = members[1].subscribe();
    drain_replay(&mut sub, 2).await;
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = members[0].gossip_addr();
    let mut payloads: Vec<Vec<u8>> =
        vec![vec![], vec![0], vec![0xff; 8], b"junk".to_vec(), vec![0xab; 60_000]];
    // Plausible prefixes of chitchat messages, with lengths that lie.
    for tag in 0u8..8 {
        payloads.push(vec![tag, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        payloads.push(vec![0, tag, 0xff, 0xff, 0xff, 0x7f]);
    }
    for _ in 0..20 {
        for p in &payloads {
            sender.send_to(p, target).expect("send");
        }
    }
    members[0].set_tag("still", "alive").await.expect("tag set");
    let (e, before) =
        next_matching(&mut sub, "the update after garbage", |e| about(e) == Some(members[0].member_id()))
            .await;
    assert!(before.is_empty(), "unexpected events {before:?}");
    assert!(matches!(e, MembershipEvent::Updated(ref m) if m.tags.contains_key("still")), "{e:?}");
    assert!(members[0].is_running());
    for g in &members {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn a_slow_subscriber_gets_a_resync() {
    init_tracing();
    let mut config = fast_config("resync");
    config.event_buffer = 2;
    let g = Gossip::start(config).await.expect("starts");
    wait_until(DEADLINE, "the member sees itself", || async { g.members().len() == 1 }).await;
    let mut slow = g.subscribe();
    for i in 0..5 {
        let v = i.to_string();
        g.set_tag("i", &v).await.expect("tag set");
        wait_until(DEADLINE, "the change is published", || async {
            g.members().first().and_then(|m| m.tags.get("i").cloned()) == Some(v.clone())
        })
        .await;
    }
    assert!(matches!(slow.recv().await, Some(MembershipEvent::Joined(_))), "the replay comes first");
    match slow.recv().await {
        Some(MembershipEvent::Resync(members)) => {
            assert_eq!(members.len(), 1);
            assert_eq!(members[0].tags.get("i").map(String::as_str), Some("4"));
        }
        other => panic!("expected a Resync, got {other:?}"),
    }
    g.stop().await.expect("stops");
}

#[tokio::test]
async fn leave_is_bounded_when_peers_cannot_acknowledge() {
    init_tracing();
    // A leave timeout well below the failure detection time: the wait must end on the timeout.
    let a = Gossip::start(fast_config("bounded-leave").with_leave_timeout(Duration::from_millis(200)))
        .await
        .expect("starts");
    let b = Gossip::start(fast_config("bounded-leave").with_seeds([a.gossip_addr().to_string()]))
        .await
        .expect("starts");
    let both = [a, b];
    wait_converged(&both.iter().collect::<Vec<_>>(), &ids(&both)).await;
    let [a, b] = both;
    // The peer vanishes, but is still live in a's view: no ack can come.
    b.stop().await.expect("stops");
    let left = tokio::time::timeout(DEADLINE, a.leave()).await;
    assert_eq!(left, Ok(Ok(())));
    assert!(!a.is_running());
}

#[tokio::test]
async fn port_zero_reserved_tags_and_the_membership_trait() {
    init_tracing();
    let config = MembershipConfig {
        generation: 1,
        tags: BTreeMap::from([("a".to_owned(), "1".to_owned())]),
        ..fast_config("trait").membership
    };
    let g = <Gossip as Membership>::start(config.clone()).await.expect("starts");
    assert_ne!(Membership::gossip_addr(&g).port(), 0);
    assert_eq!(Membership::member_id(&g), config.member_id);
    let refused =
        Membership::set_tags(&g, BTreeMap::from([("__cgc.leaving".to_owned(), "1".to_owned())])).await;
    assert!(matches!(refused, Err(cluster_core::Error::BadRequest(_))), "{refused:?}");
    // The bound port is taken: a second member on it fails with a bind error.
    let clash = Gossip::start(fast_config("trait").with_listen_addr(g.gossip_addr())).await;
    assert!(
        matches!(clash, Err(GossipError::Bind { kind: std::io::ErrorKind::AddrInUse, .. })),
        "{:?}",
        clash.err()
    );
    Membership::stop(&g).await.expect("stops");
    assert_eq!(Membership::set_tags(&g, BTreeMap::new()).await, Err(cluster_core::Error::ShuttingDown));
    assert!(Membership::members(&g).is_empty());
}

/// Drops every third datagram and delivers every other one twice, late.
struct Lossy(std::sync::atomic::AtomicU64);

impl cluster_gossip::sim::LinkPolicy for Lossy {
    fn fate(&self, _: std::net::SocketAddr, _: std::net::SocketAddr) -> Vec<Duration> {
        match self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3 {
            0 => Vec::new(),
            1 => vec![Duration::from_millis(30), Duration::from_millis(90)],
            _ => vec![Duration::from_millis(10)],
        }
    }
}

#[tokio::test]
async fn members_converge_on_a_simulated_network_that_loses_and_duplicates() {
    init_tracing();
    let network = cluster_gossip::sim::SimNetwork::new(std::sync::Arc::new(Lossy(Default::default())));
    let members = start_cluster(3, "simulated", GossipTransport::Sim(network)).await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &ids(&members)).await;
    for g in &members {
        g.stop().await.expect("stops");
    }
}
