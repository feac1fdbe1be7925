//! Gossip for tests: fast settings, starting a local gossip cluster, reading
//! membership events, capturing a sealed datagram; [`forge`] writes chitchat
//! datagrams by hand.

pub mod forge;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_core::{FailureDetection, MemberId, MembershipEvent, MembershipEvents};
use cluster_gossip::{Gossip, GossipConfig, GossipTransport, Keyring};
use tokio::net::UdpSocket;

use cluster_core::testsuite::{DEADLINE, wait_until};

/// Gossip every 100 ms, failure detector tuned to it.
pub fn fast_config(cluster_id: &str) -> GossipConfig {
    GossipConfig::default()
        .with_cluster_id(cluster_id)
        .with_gossip_interval(Duration::from_millis(100))
        .with_failure_detection(FailureDetection {
            phi_threshold: 8.0,
            initial_interval: Duration::from_millis(100),
            dead_member_grace: Duration::from_secs(3600),
        })
        .with_leave_timeout(Duration::from_secs(5))
}

/// Starts `n` members; member `i` has tag `n=i` and the others seed on member 0.
pub async fn start_cluster(n: usize, cluster_id: &str, transport: GossipTransport) -> Vec<Gossip> {
    start_with(n, cluster_id, |c| c.with_transport(transport.clone())).await
}

/// Starts `n` members on loopback UDP sealing with `keyring`, seeded on member 0.
pub async fn start_keyed(n: usize, cluster_id: &str, keyring: &Keyring) -> Vec<Gossip> {
    start_with(n, cluster_id, |c| c.with_keyring(keyring.clone())).await
}

/// Starts `n` members of [`fast_config`] changed by `with`; member `i` has tag
/// `n=i` and the others seed on member 0.
async fn start_with(n: usize, cluster_id: &str, with: impl Fn(GossipConfig) -> GossipConfig) -> Vec<Gossip> {
    let mut members: Vec<Gossip> = Vec::new();
    for i in 0..n {
        let mut c = with(fast_config(cluster_id).with_tag("n", i.to_string()));
        if let Some(first) = members.first() {
            c = c.with_seeds([first.gossip_addr().to_string()]);
        }
        members.push(Gossip::start(c).await.expect("member starts"));
    }
    members
}

/// A sealed datagram captured off the wire: a keyed member of `cluster_id`
/// with `spy` as its seed sends it a Syn.
pub async fn capture_sealed(cluster_id: &str, ring: &Keyring) -> Vec<u8> {
    let spy = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let talker = Gossip::start(
        fast_config(cluster_id)
            .with_keyring(ring.clone())
            .with_seeds([spy.local_addr().expect("addr").to_string()]),
    )
    .await
    .expect("starts");
    let mut buf = vec![0u8; 65_536];
    let (n, _) =
        tokio::time::timeout(DEADLINE, spy.recv_from(&mut buf)).await.expect("a Syn came").expect("recv");
    talker.stop().await.expect("stops");
    buf.truncate(n);
    buf
}

/// Member ids each member sees live.
pub fn view(g: &Gossip) -> BTreeSet<MemberId> {
    g.members().iter().map(|m| m.id).collect()
}

/// Waits until every member sees exactly `expected`.
pub async fn wait_converged(members: &[&Gossip], expected: &BTreeSet<MemberId>) {
    wait_until(DEADLINE, "all members see the expected set", || async {
        members.iter().all(|g| view(g) == *expected)
    })
    .await;
}

/// Receives events until one satisfies `pred`; returns it and the events before it.
pub async fn next_matching(
    sub: &mut MembershipEvents,
    what: &str,
    mut pred: impl FnMut(&MembershipEvent) -> bool,
) -> (MembershipEvent, Vec<MembershipEvent>) {
    let mut skipped = Vec::new();
    let result = tokio::time::timeout(DEADLINE, async {
        loop {
            match sub.recv().await {
                Some(e) if pred(&e) => return e,
                Some(e) => skipped.push(e),
                None => panic!("subscription ended while waiting for {what}"),
            }
        }
    })
    .await;
    match result {
        Ok(e) => (e, skipped),
        Err(_) => panic!("timed out waiting for {what}; saw {skipped:?}"),
    }
}

/// The member an event is about.
pub fn about(e: &MembershipEvent) -> Option<MemberId> {
    match e {
        MembershipEvent::Joined(m)
        | MembershipEvent::Updated(m)
        | MembershipEvent::Left(m)
        | MembershipEvent::Failed(m) => Some(m.id),
        _ => None,
    }
}

/// Reads the replayed `Joined` events of a fresh subscription (it has `n`).
pub async fn drain_replay(sub: &mut MembershipEvents, n: usize) {
    for _ in 0..n {
        match sub.recv().await {
            Some(MembershipEvent::Joined(_)) => {}
            other => panic!("expected a replayed Joined, got {other:?}"),
        }
    }
}
