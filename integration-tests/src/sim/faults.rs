//! The simulated gossip network's faults, every one drawn from the seed:
//! per-link delay with jitter (hence reordering), loss, duplication, one-way
//! cuts (which make one-way, bridge and full partitions), and slow members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_gossip::sim::LinkPolicy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest base delay of a link.
pub const MAX_LINK_DELAY: Duration = Duration::from_millis(500);

/// The state of the links, changed by the nemesis while the simulation runs.
#[derive(Debug, Default)]
struct Links {
    /// Datagrams sent so far per directed link.
    sent: BTreeMap<(SocketAddr, SocketAddr), u64>,
    /// Directed links that carry nothing.
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Members whose every datagram, in and out, takes this much longer.
    slow: BTreeMap<SocketAddr, Duration>,
    /// Chance of losing a datagram, in per mille.
    loss: u32,
    /// Chance of delivering a datagram twice, in per mille.
    duplicate: u32,
}

/// The faults of one simulation; clones share them.
///
/// The fate of the n-th datagram of a link is drawn from a generator seeded
/// with the seed, the link and n: it does not depend on the order in which
/// members send on different links (chitchat iterates a `HashSet` of peers).
#[derive(Debug, Clone)]
pub struct Faults {
    seed: u64,
    links: Arc<Mutex<Links>>,
}

/// A generator for `parts`, mixed into one seed (SplitMix64 steps).
fn rng_for(parts: &[u64]) -> StdRng {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for part in parts {
        x ^= *part;
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    StdRng::seed_from_u64(x)
}

fn addr_bits(addr: SocketAddr) -> u64 {
    match addr {
        SocketAddr::V4(a) => (u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()),
        SocketAddr::V6(a) => (a.ip().to_bits() as u64) << 16 | u64::from(a.port()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// Faults drawn from `seed`: each link's base delay up to
    /// [`MAX_LINK_DELAY`], a loss rate up to 5 % and a duplication rate up to 5 %.
    pub fn new(seed: u64) -> Self {
        let mut rng = rng_for(&[seed]);
        let links =
            Links { loss: rng.random_range(0..=50), duplicate: rng.random_range(0..=50), ..Links::default() };
        Faults { seed, links: Arc::new(Mutex::new(links)) }
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&self, from: SocketAddr, to: SocketAddr) {
        lock(&self.links).cut.insert((from, to));
    }

    /// Makes every datagram from or to `member` take `extra` longer.
    pub fn slow(&self, member: SocketAddr, extra: Duration) {
        lock(&self.links).slow.insert(member, extra);
    }

    /// Heals every cut and every slow member (delays, loss and duplication stay).
    pub fn heal(&self) {
        let mut links = lock(&self.links);
        links.cut.clear();
        links.slow.clear();
    }

    /// A description of the faults in force, for a failure report.
    pub fn describe(&self) -> String {
        let links = lock(&self.links);
        format!(
            "loss {}‰, duplication {}‰, {} links cut, {} slow members",
            links.loss,
            links.duplicate,
            links.cut.len(),
            links.slow.len()
        )
    }
}

impl LinkPolicy for Faults {
    fn fate(&self, from: SocketAddr, to: SocketAddr) -> Vec<Duration> {
        let mut links = lock(&self.links);
        let link = [self.seed, addr_bits(from), addr_bits(to)];
        let n = links.sent.entry((from, to)).or_insert(0);
        *n += 1;
        let mut rng = rng_for(&[link[0], link[1], link[2], *n]);
        if links.cut.contains(&(from, to)) || rng.random_range(0..1000) < links.loss {
            return Vec::new();
        }
        let base = Duration::from_millis(rng_for(&link).random_range(0..=MAX_LINK_DELAY.as_millis() as u64));
        let extra = links.slow.get(&from).copied().unwrap_or_default()
            + links.slow.get(&to).copied().unwrap_or_default();
        let copies = if rng.random_range(0..1000) < links.duplicate { 2 } else { 1 };
        (0..copies)
            .map(|_| {
                // Jitter up to half the base delay and 20 ms: datagrams of one link overtake each other.
                let jitter = rng.random_range(0..=base.as_millis() as u64 / 2 + 20);
                base + extra + Duration::from_millis(jitter)
            })
            .collect()
    }
}
