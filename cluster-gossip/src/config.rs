//! [`GossipConfig`]: everything a member needs to start, its defaults and its
//! validation (one place, every problem reported with its field's name).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::ChannelTransport;
use cluster_core::{FailureDetection, GossipEncryption, MemberId, MembershipConfig};

use crate::error::GossipError;
use crate::keyring::{GossipKey, Keyring};
use crate::keys::{RESERVED_PREFIX, is_reserved};

/// How members exchange gossip.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum GossipTransport {
    /// Real UDP datagrams (the default).
    #[default]
    Udp,
    /// chitchat's in-memory transport: every member started with a clone of the
    /// same [`ChannelTransport`] can reach the others, and links can be cut
    /// ([`ChannelTransport::remove_link`]) and healed ([`ChannelTransport::add_link`]).
    /// Port 0 picks a free logical port. For tests.
    Channel(ChannelTransport),
    /// A simulated network with per-link faults, for deterministic
    /// simulation ([`SimNetwork`](crate::sim::SimNetwork)). For tests.
    Sim(crate::sim::SimNetwork),
}

impl fmt::Debug for GossipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GossipTransport::Udp => f.write_str("Udp"),
            GossipTransport::Channel(_) => f.write_str("Channel"),
            GossipTransport::Sim(_) => f.write_str("Sim"),
        }
    }
}

/// The configuration of one gossip member.
///
/// A plain struct: set fields directly or chain the `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use cluster_gossip::GossipConfig;
///
/// let config = GossipConfig::default()
///     .with_cluster_id("orders")
///     .with_seeds(["127.0.0.1:7946"])
///     .with_gossip_interval(Duration::from_millis(50))
///     .with_tag("role", "cache");
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// What every membership backend starts with (the contract's
    /// [`MembershipConfig`]): the member's permanent id (also its chitchat
    /// node id), its generation (must grow across restarts; default: the
    /// current unix time in ns), the cluster id (members only gossip within
    /// it; default `carbon-grid`), the listen address (port 0 picks a free
    /// one, [`Gossip::gossip_addr`](crate::Gossip::gossip_addr) tells which;
    /// default `127.0.0.1:0`), the advertised address (NAT, `0.0.0.0`; port 0
    /// means the port bound), the seeds (`host:port`; empty forms a new
    /// cluster), the gossip interval (default 100 ms), failure detection
    /// (keep `initial_interval` close to the gossip interval), the initial
    /// tags (names must not start with [`RESERVED_PREFIX`]), and encryption:
    /// with keys, every datagram is sealed with the primary (the first) and
    /// only datagrams a key of the ring opens are read (needs the UDP
    /// transport); without (the default, for tests and quick starts) gossip
    /// is plaintext, which anyone who can reach the port can read and join.
    /// The keyring file (mode 0600, replaced atomically on every change)
    /// wins over the keys when it exists: it holds the ring as the last
    /// rotation left it.
    pub membership: MembershipConfig,
    /// UDP (default) or chitchat's in-memory transport for tests.
    pub transport: GossipTransport,
    /// The longest [`Gossip::leave`](crate::Gossip::leave) waits for peers to
    /// acknowledge the departure before it stops anyway. Default 3 s.
    pub leave_timeout: Duration,
    /// How long removed tags are remembered as tombstones (so late peers learn
    /// the removal). Default 15 min.
    pub tombstone_grace: Duration,
    /// Events buffered per subscriber before it receives a `Resync`. Default 1024.
    pub event_buffer: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            membership: MembershipConfig {
                member_id: MemberId::generate(),
                generation: generation_now(),
                cluster_id: "carbon-grid".to_owned(),
                listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                advertise_addr: None,
                seeds: Vec::new(),
                gossip_interval: Duration::from_millis(100),
                failure_detection: FailureDetection::default(),
                tags: BTreeMap::new(),
                encryption: GossipEncryption::default(),
            },
            transport: GossipTransport::Udp,
            leave_timeout: Duration::from_secs(3),
            tombstone_grace: Duration::from_secs(15 * 60),
            event_buffer: 1024,
        }
    }
}

/// A generation for a member starting now: unix time in nanoseconds, which
/// grows across restarts.
pub fn generation_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default()
}

impl From<MembershipConfig> for GossipConfig {
    fn from(membership: MembershipConfig) -> Self {
        GossipConfig { membership, ..GossipConfig::default() }
    }
}

impl GossipConfig {
    /// Sets the member id.
    pub fn with_member_id(mut self, id: MemberId) -> Self {
        self.membership.member_id = id;
        self
    }

    /// Sets the generation.
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.membership.generation = generation;
        self
    }

    /// Sets the cluster id.
    pub fn with_cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.membership.cluster_id = cluster_id.into();
        self
    }

    /// Sets the listen address.
    pub fn with_listen_addr(mut self, addr: SocketAddr) -> Self {
        self.membership.listen_addr = addr;
        self
    }

    /// Sets the advertised address.
    pub fn with_advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.membership.advertise_addr = Some(addr);
        self
    }

    /// Sets the seeds.
    pub fn with_seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.membership.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the gossip interval.
    pub fn with_gossip_interval(mut self, interval: Duration) -> Self {
        self.membership.gossip_interval = interval;
        self
    }

    /// Sets the failure-detector settings.
    pub fn with_failure_detection(mut self, fd: FailureDetection) -> Self {
        self.membership.failure_detection = fd;
        self
    }

    /// Adds one initial tag.
    pub fn with_tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.membership.tags.insert(name.into(), value.into());
        self
    }

    /// Chooses the transport.
    pub fn with_transport(mut self, transport: GossipTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the longest wait of a graceful leave.
    pub fn with_leave_timeout(mut self, timeout: Duration) -> Self {
        self.leave_timeout = timeout;
        self
    }

    /// Encrypts gossip with `keyring` (its primary key seals).
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.membership.encryption.keys = keyring.keys().iter().map(|k| *k.as_bytes()).collect();
        self
    }

    /// Persists the keyring in `path` (and reads it from there when it exists).
    pub fn with_keyring_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.membership.encryption.keyring_file = Some(path.into());
        self
    }

    /// True when gossip is to be sealed: keys are given, or a keyring file
    /// (which may hold them).
    pub(crate) fn is_encrypted(&self) -> bool {
        let e = &self.membership.encryption;
        !e.keys.is_empty() || e.keyring_file.is_some()
    }

    /// The keyring the keys make, the first primary; `None` without keys.
    pub(crate) fn keyring(&self) -> Option<Keyring> {
        Keyring::from_keys(self.membership.encryption.keys.iter().copied().map(GossipKey::from_bytes)).ok()
    }

    /// Checks the configuration; the error lists every problem with its field.
    pub fn validate(&self) -> Result<(), GossipError> {
        let mut problems = Vec::new();
        let m = &self.membership;
        if m.cluster_id.is_empty() {
            problems.push("cluster_id: must not be empty".to_owned());
        }
        if m.gossip_interval.is_zero() {
            problems.push("gossip_interval: must be more than zero".to_owned());
        }
        let fd = &m.failure_detection;
        if !(fd.phi_threshold.is_finite() && fd.phi_threshold > 0.0) {
            problems
                .push(format!("failure_detection.phi_threshold: must be positive, not {}", fd.phi_threshold));
        }
        if fd.initial_interval.is_zero() {
            problems.push("failure_detection.initial_interval: must be more than zero".to_owned());
        }
        if m.listen_addr.ip().is_unspecified() && m.advertise_addr.is_none_or(|a| a.ip().is_unspecified()) {
            problems.push(format!(
                "advertise_addr: required when listen_addr ({}) is a wildcard address",
                m.listen_addr
            ));
        }
        for seed in &m.seeds {
            if !seed.contains(':') {
                problems.push(format!("seeds: {seed:?} is not host:port"));
            }
        }
        for name in m.tags.keys().filter(|n| is_reserved(n)) {
            problems.push(format!("tags: {name:?} starts with the reserved prefix {RESERVED_PREFIX:?}"));
        }
        if self.leave_timeout.is_zero() {
            problems.push("leave_timeout: must be more than zero".to_owned());
        }
        if self.event_buffer == 0 {
            problems.push("event_buffer: must be at least 1".to_owned());
        }
        if matches!(self.transport, GossipTransport::Channel(_) | GossipTransport::Sim(_))
            && self.is_encrypted()
        {
            problems.push(
                "keyring: encryption needs the UDP transport (the channel transport carries no bytes to seal)"
                    .to_owned(),
            );
        }
        if problems.is_empty() { Ok(()) } else { Err(GossipError::InvalidConfig { problems }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(GossipConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut c = GossipConfig::default().with_cluster_id("").with_tag("__cgc.leaving", "1");
        c.membership.listen_addr = "0.0.0.0:0".parse().unwrap_or(c.membership.listen_addr);
        c.membership.gossip_interval = Duration::ZERO;
        let Err(GossipError::InvalidConfig { problems }) = c.validate() else { panic!("must fail") };
        let fields: Vec<_> = problems.iter().map(|p| p.split(':').next().unwrap_or("")).collect();
        assert_eq!(fields, ["cluster_id", "gossip_interval", "advertise_addr", "tags"]);
    }

    #[test]
    fn from_membership_config_keeps_the_fields() {
        let m = MembershipConfig {
            member_id: MemberId::generate(),
            generation: 7,
            cluster_id: "c".into(),
            listen_addr: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            advertise_addr: None,
            seeds: vec!["127.0.0.1:1".into()],
            gossip_interval: Duration::from_millis(10),
            failure_detection: FailureDetection::default(),
            tags: BTreeMap::from([("a".into(), "b".into())]),
            encryption: cluster_core::GossipEncryption { keys: vec![[3; 32], [4; 32]], keyring_file: None },
        };
        let g = GossipConfig::from(m.clone());
        assert_eq!(g.membership, m);
        let ring = g.keyring().unwrap_or_else(|| panic!("keys were given"));
        assert_eq!(ring.keys(), [GossipKey::from_bytes([3; 32]), GossipKey::from_bytes([4; 32])]);
    }
}
