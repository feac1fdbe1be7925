//! [`GossipConfig`]: everything a member needs to start, its defaults and its
//! validation (one place, every problem reported with its field's name).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::ChannelTransport;
use cluster_core::{FailureDetection, MemberId, MembershipConfig};

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
    /// This member's permanent id; also its chitchat node id.
    pub member_id: MemberId,
    /// This incarnation of the member; must grow across restarts of the same
    /// member id. Default: the current unix time in nanoseconds.
    pub generation: u64,
    /// Members only gossip with members of the same cluster id.
    pub cluster_id: String,
    /// Where to listen; port 0 picks a free port ([`Gossip::gossip_addr`](crate::Gossip::gossip_addr)
    /// tells which). Default `127.0.0.1:0`.
    pub listen_addr: SocketAddr,
    /// The address peers reach this member at, when not `listen_addr` (NAT,
    /// `0.0.0.0`). Port 0 means the port actually bound.
    pub advertise_addr: Option<SocketAddr>,
    /// Gossip addresses (`ip:port` or `host:port`) of members to join; empty
    /// forms a new cluster.
    pub seeds: Vec<String>,
    /// Time between gossip rounds. Default 100 ms.
    pub gossip_interval: Duration,
    /// Failure-detector settings; keep `initial_interval` close to `gossip_interval`.
    pub failure_detection: FailureDetection,
    /// The tags published from the start (names must not start with [`RESERVED_PREFIX`]).
    pub tags: BTreeMap<String, String>,
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
    /// Encryption: every datagram is sealed with the ring's primary key and
    /// only datagrams a key of the ring opens are read. `None` (the default,
    /// for tests and quick starts): plaintext gossip, which anyone who can
    /// reach the port can read and join. Needs the UDP transport.
    pub keyring: Option<Keyring>,
    /// Where the keyring is persisted (mode 0600, replaced atomically on
    /// every change). When the file exists it wins over `keyring`: it holds
    /// the ring as the last rotation left it.
    pub keyring_file: Option<PathBuf>,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            member_id: MemberId::generate(),
            generation: generation_now(),
            cluster_id: "carbon-grid".to_owned(),
            listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise_addr: None,
            seeds: Vec::new(),
            gossip_interval: Duration::from_millis(100),
            failure_detection: FailureDetection::default(),
            tags: BTreeMap::new(),
            transport: GossipTransport::Udp,
            leave_timeout: Duration::from_secs(3),
            tombstone_grace: Duration::from_secs(15 * 60),
            event_buffer: 1024,
            keyring: None,
            keyring_file: None,
        }
    }
}

/// A generation for a member starting now: unix time in nanoseconds, which
/// grows across restarts.
pub fn generation_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or_default()
}

impl From<MembershipConfig> for GossipConfig {
    fn from(c: MembershipConfig) -> Self {
        GossipConfig {
            member_id: c.member_id,
            generation: c.generation,
            cluster_id: c.cluster_id,
            listen_addr: c.listen_addr,
            advertise_addr: c.advertise_addr,
            seeds: c.seeds,
            gossip_interval: c.gossip_interval,
            failure_detection: c.failure_detection,
            tags: c.tags,
            keyring: Keyring::from_keys(c.encryption.keys.into_iter().map(GossipKey::from_bytes)).ok(),
            keyring_file: c.encryption.keyring_file,
            ..GossipConfig::default()
        }
    }
}

impl GossipConfig {
    /// Sets the member id.
    pub fn with_member_id(mut self, id: MemberId) -> Self {
        self.member_id = id;
        self
    }

    /// Sets the generation.
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Sets the cluster id.
    pub fn with_cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = cluster_id.into();
        self
    }

    /// Sets the listen address.
    pub fn with_listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen_addr = addr;
        self
    }

    /// Sets the advertised address.
    pub fn with_advertise_addr(mut self, addr: SocketAddr) -> Self {
        self.advertise_addr = Some(addr);
        self
    }

    /// Sets the seeds.
    pub fn with_seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the gossip interval.
    pub fn with_gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self
    }

    /// Sets the failure-detector settings.
    pub fn with_failure_detection(mut self, fd: FailureDetection) -> Self {
        self.failure_detection = fd;
        self
    }

    /// Adds one initial tag.
    pub fn with_tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(name.into(), value.into());
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
        self.keyring = Some(keyring);
        self
    }

    /// Persists the keyring in `path` (and reads it from there when it exists).
    pub fn with_keyring_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.keyring_file = Some(path.into());
        self
    }

    /// Checks the configuration; the error lists every problem with its field.
    pub fn validate(&self) -> Result<(), GossipError> {
        let mut problems = Vec::new();
        if self.cluster_id.is_empty() {
            problems.push("cluster_id: must not be empty".to_owned());
        }
        if self.gossip_interval.is_zero() {
            problems.push("gossip_interval: must be more than zero".to_owned());
        }
        let fd = &self.failure_detection;
        if !(fd.phi_threshold.is_finite() && fd.phi_threshold > 0.0) {
            problems
                .push(format!("failure_detection.phi_threshold: must be positive, not {}", fd.phi_threshold));
        }
        if fd.initial_interval.is_zero() {
            problems.push("failure_detection.initial_interval: must be more than zero".to_owned());
        }
        if self.listen_addr.ip().is_unspecified()
            && self.advertise_addr.is_none_or(|a| a.ip().is_unspecified())
        {
            problems.push(format!(
                "advertise_addr: required when listen_addr ({}) is a wildcard address",
                self.listen_addr
            ));
        }
        for seed in &self.seeds {
            if !seed.contains(':') {
                problems.push(format!("seeds: {seed:?} is not host:port"));
            }
        }
        for name in self.tags.keys().filter(|n| is_reserved(n)) {
            problems.push(format!("tags: {name:?} starts with the reserved prefix {RESERVED_PREFIX:?}"));
        }
        if self.leave_timeout.is_zero() {
            problems.push("leave_timeout: must be more than zero".to_owned());
        }
        if self.event_buffer == 0 {
            problems.push("event_buffer: must be at least 1".to_owned());
        }
        if matches!(self.transport, GossipTransport::Channel(_) | GossipTransport::Sim(_))
            && (self.keyring.is_some() || self.keyring_file.is_some())
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
        c.listen_addr = "0.0.0.0:0".parse().unwrap_or(c.listen_addr);
        c.gossip_interval = Duration::ZERO;
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
        assert_eq!(
            (g.member_id, g.generation, g.cluster_id, g.seeds),
            (m.member_id, 7, m.cluster_id, m.seeds)
        );
        assert_eq!(g.tags, m.tags);
        let ring = g.keyring.unwrap_or_else(|| panic!("keys were given"));
        assert_eq!(ring.keys(), [GossipKey::from_bytes([3; 32]), GossipKey::from_bytes([4; 32])]);
    }
}
