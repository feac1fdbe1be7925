//! The rules of the directed links between proxied members, and what each link
//! did: [`LinkRule`] says what happens to traffic from one member to another,
//! `Links` holds the rule, the random generators and the counts of every link,
//! shared by the proxy's tasks.
//!
//! Every random choice of a link is drawn from a generator of that link alone,
//! seeded from the proxy's seed and the link (and, apart, for UDP and TCP). So
//! for one seed, the same sequence of datagrams on one link meets the same fate,
//! whatever the other links carry: the counts of lost and duplicated datagrams
//! are reproducible, though the timing of real processes is not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

/// The first retransmission timeout of a lost TCP chunk (Linux's minimum RTO);
/// it doubles with each further loss of the same chunk.
pub const TCP_RETRANSMIT: Duration = Duration::from_millis(200);

/// A lost TCP chunk is retransmitted at most this many times in the model; the
/// last retransmission always arrives.
const MAX_RETRANSMITS: u32 = 6;

/// What happens to traffic on one directed link (from one member to another).
///
/// The default is a clean link: no delay, no loss, no duplication, not cut.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkRule {
    /// The mean one-way delay.
    pub delay: Duration,
    /// Each datagram or TCP chunk is delayed by `delay` ± up to `jitter`
    /// (uniformly, never below zero).
    pub jitter: Duration,
    /// The probability (0..=1) that a datagram is lost; for TCP, that a chunk
    /// is lost and retransmitted (see the [module](super) documentation).
    pub loss: f64,
    /// The probability (0..=1) that a datagram arrives twice (UDP only: TCP
    /// removes duplicates itself).
    pub duplicate: f64,
    /// The link is cut in this direction: datagrams are dropped, TCP bytes are
    /// held (the connection stalls) until the cut is healed.
    pub cut: bool,
}

impl LinkRule {
    /// A clean link.
    pub fn clean() -> Self {
        LinkRule::default()
    }

    /// A link that delays by `delay` ± `jitter`.
    pub fn delayed(delay: Duration, jitter: Duration) -> Self {
        LinkRule { delay, jitter, ..LinkRule::default() }
    }

    /// A link cut in this direction.
    pub fn cut() -> Self {
        LinkRule { cut: true, ..LinkRule::default() }
    }

    /// This rule, also losing `loss` (0..=1) of the datagrams or TCP chunks.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// This rule, also duplicating `duplicate` (0..=1) of the datagrams.
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// One delay drawn from `delay` ± `jitter`.
    fn sample_delay(&self, rng: &mut StdRng) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        let jitter = self.jitter.as_secs_f64();
        let offset = rng.random_range(-jitter..=jitter);
        Duration::from_secs_f64((self.delay.as_secs_f64() + offset).max(0.0))
    }

    fn chance(p: f64, rng: &mut StdRng) -> bool {
        p > 0.0 && rng.random_bool(p.min(1.0))
    }
}

/// The fate of one datagram: lost (or cut), or delivered once or twice, each
/// copy after its own delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Dropped: the link is cut.
    Cut,
    /// Dropped: lost.
    Lost,
    /// Delivered after each of these delays (two for a duplicate).
    Deliver(Vec<Duration>),
}

/// What one directed link did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams that came in on the link.
    pub datagrams: u64,
    /// Datagrams lost (dropped by the loss rate).
    pub lost: u64,
    /// Datagrams dropped because the link was cut.
    pub cut: u64,
    /// Datagrams delivered twice.
    pub duplicated: u64,
    /// TCP chunks that came in on the link.
    pub chunks: u64,
    /// TCP chunks "lost" and retransmitted (delayed by a retransmission timeout).
    pub retransmitted: u64,
    /// TCP bytes that came in on the link.
    pub tcp_bytes: u64,
}

#[derive(Debug)]
struct LinkState {
    rule: LinkRule,
    udp_rng: StdRng,
    tcp_rng: StdRng,
    stats: LinkStats,
}

/// A source or destination of proxied traffic: a member, or someone else (a
/// client of the test), whose traffic is never shaped.
pub(crate) type Party = Option<usize>;

/// The rules, generators and counts of every directed link, and a signal when
/// a rule changes (for TCP bytes held by a cut).
#[derive(Debug)]
pub(crate) struct Links {
    seed: u64,
    sources: Vec<IpAddr>,
    state: Mutex<HashMap<(usize, usize), LinkState>>,
    changed: watch::Sender<u64>,
}

/// A 64-bit mix (SplitMix64's finalizer), so that neighbouring links get
/// unrelated generators.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Links {
    /// The links between the members whose traffic comes from `sources` (by index).
    pub(crate) fn new(seed: u64, sources: Vec<IpAddr>) -> Self {
        let (changed, _) = watch::channel(0);
        Links { seed, sources, state: Mutex::new(HashMap::new()), changed }
    }

    /// The seed every generator derives from.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// The member whose traffic comes from `ip`, if any.
    pub(crate) fn member_of(&self, ip: IpAddr) -> Party {
        self.sources.iter().position(|s| *s == ip)
    }

    /// The number of members.
    pub(crate) fn members(&self) -> usize {
        self.sources.len()
    }

    fn with<T>(&self, from: usize, to: usize, f: impl FnOnce(&mut LinkState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seed = self.seed;
        let link = state.entry((from, to)).or_insert_with(|| {
            let base = mix(seed ^ mix(((from as u64) << 32) | to as u64));
            LinkState {
                rule: LinkRule::default(),
                udp_rng: StdRng::seed_from_u64(mix(base ^ 1)),
                tcp_rng: StdRng::seed_from_u64(mix(base ^ 2)),
                stats: LinkStats::default(),
            }
        });
        f(link)
    }

    /// A shaped link: two different members. Traffic of a member to itself, or
    /// from or to someone else, is never shaped.
    fn shaped(from: Party, to: Party) -> Option<(usize, usize)> {
        match (from, to) {
            (Some(from), Some(to)) if from != to => Some((from, to)),
            _ => None,
        }
    }

    /// Sets the rule of the link `from` → `to` (a link of a member to itself
    /// stays clean), and wakes the TCP bytes waiting for a change.
    pub(crate) fn set(&self, from: usize, to: usize, rule: LinkRule) {
        if from != to {
            self.with(from, to, |link| link.rule = rule);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The rule of the link `from` → `to`.
    pub(crate) fn rule(&self, from: Party, to: Party) -> LinkRule {
        match Self::shaped(from, to) {
            Some((from, to)) => self.with(from, to, |link| link.rule),
            None => LinkRule::default(),
        }
    }

    /// What the link `from` → `to` did so far.
    pub(crate) fn stats(&self, from: usize, to: usize) -> LinkStats {
        self.with(from, to, |link| link.stats)
    }

    /// A receiver that sees every rule change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// True while the link `from` → `to` is cut.
    pub(crate) fn is_cut(&self, from: Party, to: Party) -> bool {
        self.rule(from, to).cut
    }

    /// The fate of one datagram on the link `from` → `to`, counted.
    pub(crate) fn datagram(&self, from: Party, to: Party) -> Fate {
        let Some((from, to)) = Self::shaped(from, to) else { return Fate::Deliver(vec![Duration::ZERO]) };
        self.with(from, to, |link| {
            link.stats.datagrams += 1;
            let rule = link.rule;
            if rule.cut {
                link.stats.cut += 1;
                return Fate::Cut;
            }
            let rng = &mut link.udp_rng;
            if LinkRule::chance(rule.loss, rng) {
                link.stats.lost += 1;
                return Fate::Lost;
            }
            let mut delays = vec![rule.sample_delay(rng)];
            if LinkRule::chance(rule.duplicate, rng) {
                link.stats.duplicated += 1;
                delays.push(rule.sample_delay(rng));
            }
            Fate::Deliver(delays)
        })
    }

    /// The delay of one TCP chunk of `len` bytes on the link `from` → `to`,
    /// counted: the link's delay, plus a retransmission timeout (doubling)
    /// for each loss of the chunk.
    pub(crate) fn chunk(&self, from: Party, to: Party, len: usize) -> Duration {
        let Some((from, to)) = Self::shaped(from, to) else { return Duration::ZERO };
        self.with(from, to, |link| {
            link.stats.chunks += 1;
            link.stats.tcp_bytes += len as u64;
            let rule = link.rule;
            let rng = &mut link.tcp_rng;
            // Each lost copy costs the sender a retransmission timeout; the
            // copy that arrives then crosses the link once.
            let mut waited = Duration::ZERO;
            let mut timeout = TCP_RETRANSMIT;
            let mut tries = 0;
            while tries < MAX_RETRANSMITS && LinkRule::chance(rule.loss, rng) {
                link.stats.retransmitted += 1;
                waited += timeout;
                timeout *= 2;
                tries += 1;
            }
            waited + rule.sample_delay(rng)
        })
    }
}
