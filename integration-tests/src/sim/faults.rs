//! The simulated network's faults, every one drawn from the seed, on both
//! networks of a simulation: gossip's datagrams ([`cluster_gossip::sim`])
//! and raft's and the service's streams ([`cluster_rpc::memnet`]).
//!
//! - **Delay**: each directed link between two members has a base delay,
//!   drawn once per seed and link up to the seed's latency class (at most
//!   [`MAX_LINK_DELAY`]), plus a jitter per datagram or chunk (hence
//!   reordering of datagrams; a stream keeps its byte order).
//! - **Loss**: a datagram is lost; a stream's chunk is retransmitted 200 ms
//!   later (memnet's model of TCP).
//! - **Duplication** of gossip datagrams: a datagram arrives twice, each
//!   copy with its own jitter (streams do not duplicate: TCP drops them).
//! - **Cuts**, one way (hence one-way, bridge and full partitions): datagrams
//!   are dropped, stream bytes stall until the cut heals.
//! - **Slow** members: every datagram and chunk to or from one takes longer.
//! - **Paused** members: nothing reaches or leaves one until it resumes;
//!   then what was held is delivered (datagrams late, stream bytes in order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_gossip::sim::LinkPolicy;
use cluster_rpc::Net;
use cluster_rpc::memnet::{Link, MemNetwork};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// The largest base delay of a link.
pub const MAX_LINK_DELAY: Duration = Duration::from_millis(500);
/// The latency classes a seed draws from: the largest base delay of its links.
const LATENCY_CLASSES_MS: [u64; 5] = [2, 20, 100, 250, 500];
/// The gossip port of every member (each member has an address of its own).
pub const GOSSIP_PORT: u16 = 7946;
/// The most members a simulation has.
pub const MAX_MEMBERS: usize = 9;

/// The address of member slot `i` on both simulated networks.
pub fn member_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1))
}

/// The gossip address of member slot `i`.
pub fn gossip_addr(i: usize) -> SocketAddr {
    SocketAddr::new(member_ip(i), GOSSIP_PORT)
}

/// The state of the gossip links, changed by the nemesis while the simulation runs.
#[derive(Debug, Default)]
struct Links {
    /// Datagrams sent so far per directed link.
    sent: BTreeMap<(IpAddr, IpAddr), u64>,
    /// Directed links that carry nothing.
    cut: BTreeSet<(IpAddr, IpAddr)>,
    /// Members whose every datagram, in and out, takes this much longer.
    slow: BTreeMap<IpAddr, Duration>,
    /// Members paused until then: their datagrams wait.
    paused: BTreeMap<IpAddr, Instant>,
    /// Chance of losing a datagram (or a chunk), in per mille.
    loss: u32,
    /// Chance of delivering a datagram twice, in per mille.
    duplicate: u32,
}

/// The faults of one simulation; clones share them.
///
/// The fate of the n-th datagram of a link is drawn from a generator seeded
/// with the seed, the link and n: it does not depend on the order in which
/// members send on different links (chitchat iterates a `HashSet` of peers).
/// The stream network draws from its own generator, seeded from the seed.
#[derive(Debug, Clone)]
pub struct Faults {
    seed: u64,
    max_delay: Duration,
    links: Arc<Mutex<Links>>,
    streams: MemNetwork,
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

fn ip_bits(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits() as u64,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// Faults drawn from `seed`: a latency class (each link's base delay up
    /// to 2, 20, 100, 250 or [`MAX_LINK_DELAY`] ms), a loss rate up to 5 %
    /// and a duplication rate of gossip datagrams up to 5 % (each copy with
    /// a jitter of its own, so a copy may also arrive before the original's
    /// successors).
    pub fn new(seed: u64) -> Self {
        let mut rng = rng_for(&[seed]);
        let class = LATENCY_CLASSES_MS[rng.random_range(0..LATENCY_CLASSES_MS.len())];
        let links =
            Links { loss: rng.random_range(0..=50), duplicate: rng.random_range(0..=50), ..Links::default() };
        let faults = Faults {
            seed,
            max_delay: Duration::from_millis(class),
            links: Arc::new(Mutex::new(links)),
            streams: MemNetwork::new(seed ^ 0x6d65_6d6e_6574),
        };
        faults.reset_stream_links();
        faults
    }

    /// The largest base delay of this seed's links.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Member slot `i`'s handle of the stream network (raft and service).
    pub fn net(&self, i: usize) -> Net {
        self.streams.host(member_ip(i))
    }

    /// The base delay of the link from `from` to `to`, the same for the
    /// whole run.
    fn base_delay(&self, from: IpAddr, to: IpAddr) -> Duration {
        let ms = self.max_delay.as_millis() as u64;
        Duration::from_millis(rng_for(&[self.seed, ip_bits(from), ip_bits(to)]).random_range(0..=ms))
    }

    /// The stream link from `from` to `to`, slowed by `extra`.
    fn stream_link(&self, from: IpAddr, to: IpAddr, extra: Duration) -> Link {
        let base = self.base_delay(from, to);
        Link {
            delay: base + extra,
            jitter: base / 2 + Duration::from_millis(20),
            loss: f64::from(lock(&self.links).loss) / 1000.0,
            retransmit: Duration::from_millis(200),
        }
    }

    fn reset_stream_links(&self) {
        for a in 0..MAX_MEMBERS {
            for b in (0..MAX_MEMBERS).filter(|&b| b != a) {
                let (from, to) = (member_ip(a), member_ip(b));
                self.streams.set_link(from, to, self.stream_link(from, to, Duration::ZERO));
            }
        }
    }

    /// Cuts the link from member `from` to member `to` (one way).
    pub fn cut(&self, from: usize, to: usize) {
        lock(&self.links).cut.insert((member_ip(from), member_ip(to)));
        self.streams.cut(member_ip(from), member_ip(to));
    }

    /// Makes every datagram and chunk from or to `member` take `extra` longer.
    pub fn slow(&self, member: usize, extra: Duration) {
        let ip = member_ip(member);
        lock(&self.links).slow.insert(ip, extra);
        for other in (0..MAX_MEMBERS).filter(|&o| o != member).map(member_ip) {
            self.streams.set_link(ip, other, self.stream_link(ip, other, extra));
            self.streams.set_link(other, ip, self.stream_link(other, ip, extra));
        }
    }

    /// Pauses `member` for `hold`: nothing reaches or leaves it until then,
    /// and what waited is delivered when it resumes (at [`heal`](Self::heal)).
    pub fn pause(&self, member: usize, hold: Duration) {
        let ip = member_ip(member);
        lock(&self.links).paused.insert(ip, Instant::now() + hold);
        self.streams.isolate(ip);
    }

    /// Heals every cut, slow and paused member (base delays and loss stay).
    pub fn heal(&self) {
        let mut links = lock(&self.links);
        links.cut.clear();
        links.slow.clear();
        links.paused.clear();
        drop(links);
        self.streams.heal_all();
        self.reset_stream_links();
    }

    /// A description of the faults in force, for a failure report.
    pub fn describe(&self) -> String {
        let links = lock(&self.links);
        format!(
            "links up to {:?}, loss {}‰, duplication {}‰, {} links cut, {} slow and {} paused members",
            self.max_delay,
            links.loss,
            links.duplicate,
            links.cut.len(),
            links.slow.len(),
            links.paused.len()
        )
    }
}

impl LinkPolicy for Faults {
    fn fate(&self, from: SocketAddr, to: SocketAddr) -> Vec<Duration> {
        let (from, to) = (from.ip(), to.ip());
        let base = self.base_delay(from, to);
        let mut links = lock(&self.links);
        let n = links.sent.entry((from, to)).or_insert(0);
        *n += 1;
        let mut rng = rng_for(&[self.seed, ip_bits(from), ip_bits(to), *n]);
        if links.cut.contains(&(from, to)) || rng.random_range(0..1000) < links.loss {
            return Vec::new();
        }
        let held = if links.paused.is_empty() {
            Duration::ZERO
        } else {
            let now = Instant::now();
            [from, to]
                .iter()
                .filter_map(|ip| links.paused.get(ip))
                .map(|until| until.saturating_duration_since(now))
                .max()
                .unwrap_or_default()
        };
        let extra = links.slow.get(&from).copied().unwrap_or_default()
            + links.slow.get(&to).copied().unwrap_or_default()
            + held;
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
