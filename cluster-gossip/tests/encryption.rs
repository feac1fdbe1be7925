//! Encrypted gossip on loopback UDP: outsiders (no key, another key, forged
//! or altered datagrams) never become members; keys rotate without a failure.

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_core::{MemberId, MembershipEvent};
use cluster_gossip::{Gossip, GossipKey, Keyring};
use cluster_testkit::gossip::*;
use cluster_testkit::{DEADLINE, init_tracing, wait_until};
use tokio::net::UdpSocket;

fn ids(members: &[Gossip]) -> BTreeSet<MemberId> {
    members.iter().map(Gossip::member_id).collect()
}

async fn stop_all(members: &[Gossip]) {
    for g in members {
        g.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn members_without_the_key_never_join_a_keyed_cluster() {
    init_tracing();
    let ring = Keyring::new(GossipKey::generate());
    let members = start_keyed(2, "keyed", &ring).await;
    let seed = members[0].gossip_addr().to_string();
    let wrong_key = Gossip::start(
        fast_config("keyed").with_keyring(Keyring::new(GossipKey::generate())).with_seeds([seed.clone()]),
    )
    .await
    .expect("starts");
    let no_key = Gossip::start(fast_config("keyed").with_seeds([seed])).await.expect("starts");
    let keyed = ids(&members);
    wait_converged(&members.iter().collect::<Vec<_>>(), &keyed).await;
    // Both outsiders keep knocking: wait until the seed dropped plenty of their datagrams.
    wait_until(DEADLINE, "the seed dropped 20 unauthenticated datagrams", || async {
        members[0].datagram_stats().unauthenticated >= 20
    })
    .await;
    for g in &members {
        assert_eq!(view(g), keyed, "an outsider got in");
        assert_eq!(g.datagram_stats().rejected, 0);
    }
    assert_eq!(view(&wrong_key), BTreeSet::from([wrong_key.member_id()]));
    assert_eq!(view(&no_key), BTreeSet::from([no_key.member_id()]));
    // The keyed members never answer an outsider, so it learns nothing.
    assert_eq!(no_key.datagram_stats().accepted, 0);
    assert_eq!(wrong_key.datagram_stats().accepted, 0);
    stop_all(&members).await;
    stop_all(&[wrong_key, no_key]).await;
}

/// Sends `datagram` from `socket` to `to`, `times` times, 20 ms apart,
/// with a growing heartbeat when `make` uses it.
async fn knock(socket: &UdpSocket, to: std::net::SocketAddr, times: u64, make: impl Fn(u64) -> Vec<u8>) {
    for i in 0..times {
        socket.send_to(&make(i + 1), to).await.expect("sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn forged_syn_synack_and_ack_never_add_a_member() {
    init_tracing();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let fake = forge::fake_member(attacker.local_addr().expect("addr"));
    let fake_id: MemberId = fake.node_id.parse().expect("a member id");

    // Control: a plaintext member takes the unsolicited SynAck (no
    // cluster id) and reports the made-up member. The forgery is real.
    let open = Gossip::start(fast_config("forged")).await.expect("starts");
    let target = open.gossip_addr();
    let sender = async {
        for hb in 1.. {
            attacker.send_to(&forge::syn_ack(&fake, hb), target).await.expect("sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = sender => {}
        () = wait_until(DEADLINE, "the plaintext member reports the fake member", || async { view(&open).contains(&fake_id) }) => {}
    }
    open.stop().await.expect("stops");

    // A keyed cluster: the same forgeries, unsealed, sealed with another key,
    // and a captured sealed datagram with its body changed.
    let ring = Keyring::new(GossipKey::generate());
    let members = start_keyed(2, "forged", &ring).await;
    let keyed = ids(&members);
    wait_converged(&members.iter().collect::<Vec<_>>(), &keyed).await;
    let target = members[0].gossip_addr();
    let cluster_id = "forged";
    let fake = forge::fake_member(attacker.local_addr().expect("addr"));
    knock(&attacker, target, 50, |hb| forge::syn_ack(&fake, hb)).await;
    knock(&attacker, target, 50, |hb| forge::syn(cluster_id, &fake, hb)).await;
    knock(&attacker, target, 50, |_| forge::ack(&fake)).await;

    // A sealed datagram captured off the wire.
    let captured = capture_sealed(cluster_id, &ring).await;
    assert!(captured.len() > 33, "a sealed datagram has a header, a body and a tag");
    knock(&attacker, target, 50, |i| {
        let mut d = captured.clone();
        let at = 17 + (i as usize * 7) % (d.len() - 17);
        d[at] ^= 0x5a; // one changed byte in the body or the tag
        d
    })
    .await;
    knock(&attacker, target, 50, |hb| {
        // The captured header (version, key id, nonce) on a forged body.
        let mut d = captured[..17].to_vec();
        d.extend(forge::syn_ack(&fake, hb + 1000));
        d.extend(&captured[captured.len() - 16..]);
        d
    })
    .await;
    wait_until(DEADLINE, "the target counted every forgery as unauthenticated", || async {
        members[0].datagram_stats().unauthenticated >= 250
    })
    .await;
    for g in &members {
        assert_eq!(view(g), keyed, "a forged member got in");
        assert_eq!(g.datagram_stats().rejected, 0);
    }
    stop_all(&members).await;
}

#[tokio::test]
async fn rotating_the_key_loses_no_member_and_fails_nothing() {
    init_tracing();
    let old = GossipKey::generate();
    let new = GossipKey::generate();
    let members = start_keyed(3, "rotation", &Keyring::new(old.clone())).await;
    let all = ids(&members);
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    let mut subs = Vec::new();
    for g in &members {
        let mut sub = g.subscribe();
        drain_replay(&mut sub, 3).await;
        subs.push(sub);
    }
    let rings: Vec<_> = members.iter().map(|g| g.keyring().expect("keyed").clone()).collect();
    // Each step waits until every member accepted fresh datagrams under it.
    let step = |what: &'static str| {
        let before: Vec<u64> = members.iter().map(|g| g.datagram_stats().accepted).collect();
        let members = &members;
        async move {
            wait_until(DEADLINE, what, || async {
                members.iter().zip(&before).all(|(g, b)| g.datagram_stats().accepted >= b + 20)
            })
            .await
        }
    };
    for r in &rings {
        assert!(r.install(new.clone()).expect("installs"));
    }
    step("gossip flows with the new key installed").await;
    for r in &rings {
        assert!(r.use_key(&new).expect("uses"));
    }
    step("gossip flows sealed with the new key").await;
    for r in &rings {
        assert!(matches!(r.remove(&new), Err(cluster_gossip::GossipError::RemovePrimary { .. })));
        assert!(r.remove(&old).expect("removes"));
        assert_eq!(r.keys().keys(), std::slice::from_ref(&new));
    }
    step("gossip flows with the old key gone").await;
    for (g, sub) in members.iter().zip(&mut subs) {
        while let Some(e) = sub.try_recv() {
            assert!(
                !matches!(e, MembershipEvent::Failed(_) | MembershipEvent::Left(_)),
                "rotation caused {e:?}"
            );
        }
        assert_eq!(view(g), all);
        assert_eq!(g.datagram_stats().unauthenticated, 0, "a datagram failed to open during rotation");
    }
    // An outsider holding only the old key is now shut out.
    let late = Gossip::start(
        fast_config("rotation")
            .with_keyring(Keyring::new(old))
            .with_seeds([members[0].gossip_addr().to_string()]),
    )
    .await
    .expect("starts");
    wait_until(DEADLINE, "the old key is refused", || async {
        members[0].datagram_stats().unauthenticated >= 5
    })
    .await;
    assert_eq!(view(&members[0]), all);
    late.stop().await.expect("stops");
    stop_all(&members).await;
}
