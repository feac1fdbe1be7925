//! Shared test helpers: fast settings, starting a local cluster, waiting on a
//! condition with a deadline, reading events.

#![allow(dead_code, unreachable_pub)]

pub mod forge;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use cluster_core::{FailureDetection, MemberId, MembershipEvent, MembershipEvents};
use cluster_gossip::{Gossip, GossipConfig, GossipTransport, Keyring};

/// Generous: the machine may be loaded. Only failures wait this long.
pub const DEADLINE: Duration = Duration::from_secs(30);

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
    let mut members: Vec<Gossip> = Vec::new();
    for i in 0..n {
        let mut c = fast_config(cluster_id).with_tag("n", i.to_string()).with_transport(transport.clone());
        if let Some(first) = members.first() {
            c = c.with_seeds([first.gossip_addr().to_string()]);
        }
        members.push(Gossip::start(c).await.expect("member starts"));
    }
    members
}

/// Starts `n` members on loopback UDP sealing with `keyring`, seeded on member 0.
pub async fn start_keyed(n: usize, cluster_id: &str, keyring: &Keyring) -> Vec<Gossip> {
    let mut members: Vec<Gossip> = Vec::new();
    for i in 0..n {
        let mut c = fast_config(cluster_id).with_tag("n", i.to_string()).with_keyring(keyring.clone());
        if let Some(first) = members.first() {
            c = c.with_seeds([first.gossip_addr().to_string()]);
        }
        members.push(Gossip::start(c).await.expect("member starts"));
    }
    members
}

/// Member ids each member sees live.
pub fn view(g: &Gossip) -> BTreeSet<MemberId> {
    g.members().iter().map(|m| m.id).collect()
}

/// Waits until every member sees exactly `expected`.
pub async fn wait_converged(members: &[&Gossip], expected: &BTreeSet<MemberId>) {
    wait_until("all members see the expected set", || async { members.iter().all(|g| view(g) == *expected) })
        .await;
}

/// Polls `cond` every 20 ms until it holds; panics after [`DEADLINE`].
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
