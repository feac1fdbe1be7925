//! Floods of hostile datagrams against one member on loopback UDP: 100,000
//! random ones and 100,000 mutated copies of a valid sealed one. Nothing
//! crashes, no member is added, and the log gets a few lines, not one per
//! datagram.
//!
//! Each test runs on a current-thread runtime with a thread-local tracing
//! subscriber, so it counts exactly the warnings its own members write.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use cluster_gossip::{Gossip, GossipKey, Keyring};
use cluster_testkit::gossip::*;
use cluster_testkit::{DEADLINE, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

const FLOOD: usize = 100_000;

/// Collects every warning or error (target and file:line).
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Warnings {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        if *m.level() <= Level::WARN {
            let line = format!("{} {}:{}", m.target(), m.file().unwrap_or("?"), m.line().unwrap_or(0));
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    }
}

impl Warnings {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Sends `count` datagrams made by `make`, yielding every few so the member
/// (on the same thread) reads them rather than the kernel dropping them.
async fn flood(to: SocketAddr, count: usize, mut make: impl FnMut(&mut StdRng) -> Vec<u8>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let mut rng = StdRng::seed_from_u64(13);
    for i in 0..count {
        let d = make(&mut rng);
        // A refused or dropped send is fine: only the member's behaviour counts.
        let _ = socket.send_to(&d, to).await;
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

fn random_datagram(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..1_500);
    let mut d = vec![0u8; len];
    rng.fill(&mut d[..]);
    d
}

/// A copy of `valid` with 1 to 8 bytes changed, sometimes cut or extended.
fn mutated(valid: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut d = valid.to_vec();
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..d.len());
        d[at] ^= rng.random_range(1..=255u8);
    }
    match rng.random_range(0..10) {
        0 => d.truncate(rng.random_range(0..d.len())),
        1 => d.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
        _ => {}
    }
    d
}

#[tokio::test(flavor = "current_thread")]
async fn floods_on_a_keyed_member_add_nothing_and_log_little() {
    let warnings = Warnings::default();
    let _guard = warnings.install();
    let ring = Keyring::new(GossipKey::generate());
    let members = start_keyed(2, "flood", &ring).await;
    let all: BTreeSet<_> = members.iter().map(Gossip::member_id).collect();
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    let valid = capture_sealed("flood", &ring).await;
    let target = members[0].gossip_addr();

    flood(target, FLOOD, random_datagram).await;
    flood(target, FLOOD, |rng| mutated(&valid, rng)).await;

    // The member still gossips with its peer, and no one else got in.
    let heard = members[1].datagram_stats().accepted;
    wait_until(DEADLINE, "the flooded member still gossips", || async {
        members[1].datagram_stats().accepted > heard + 10
    })
    .await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    let stats = members[0].datagram_stats();
    assert!(stats.unauthenticated > (FLOOD / 2) as u64, "the flood barely reached the member: {stats:?}");
    assert_eq!(stats.rejected, 0, "something unsealed reached the parser: {stats:?}");
    let lines = warnings.lines();
    assert!(lines.len() <= 3, "{} warnings for {} datagrams: {lines:#?}", lines.len(), 2 * FLOOD);
    for g in &members {
        g.stop().await.expect("stops");
    }
}

/// chitchat warns once per Syn of another cluster and per BadCluster: on a
/// plaintext member, those are refused (and counted) before chitchat.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_on_a_plaintext_member_logs_little() {
    let warnings = Warnings::default();
    let _guard = warnings.install();
    let members = start_cluster(2, "plain-flood", cluster_gossip::GossipTransport::Udp).await;
    let all: BTreeSet<_> = members.iter().map(Gossip::member_id).collect();
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    let fake = forge::fake_member("127.0.0.1:9".parse().expect("addr"));
    let bad_cluster = forge::bad_cluster();
    let mut i = 0u64;
    flood(members[0].gossip_addr(), FLOOD, |rng| {
        i += 1;
        match i % 3 {
            0 => forge::syn("another-cluster", &fake, i),
            1 => bad_cluster.clone(),
            _ => random_datagram(rng),
        }
    })
    .await;
    wait_converged(&members.iter().collect::<Vec<_>>(), &all).await;
    let stats = members[0].datagram_stats();
    assert!(stats.rejected > (FLOOD / 2) as u64, "the flood barely reached the member: {stats:?}");
    let lines = warnings.lines();
    assert!(lines.len() <= 3, "{} warnings for {FLOOD} datagrams: {lines:#?}", lines.len());
    for g in &members {
        g.stop().await.expect("stops");
    }
}
