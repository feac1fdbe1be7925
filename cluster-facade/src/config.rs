//! [`ClusterConfig`]: everything a member needs to start, with `Default`,
//! serde (TOML) and one validation step that names every bad field.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cluster_core::{ConsensusLimits, FailureDetection, RaftTiming};
use serde::{Deserialize, Serialize};

use crate::operator::HttpLimits;

/// The configuration of one member. A duration is written as text
/// (`leave_ms = "2s"`, `handshake_timeout = "250ms"`), or in the older forms:
/// a number of milliseconds for the `*_ms` fields, `{ secs = 5, nanos = 0 }`
/// in `[limits]`.
///
/// ```
/// use cluster_facade::ClusterConfig;
/// let config: ClusterConfig = toml::from_str(r#"
///     cluster_id = "prod"
///     host = "127.0.0.1"
///     gossip_port = 7946
///     seeds = ["127.0.0.1:7947"]
///     num_voters = 3
/// "#).unwrap();
/// assert!(config.validate().is_ok());
/// assert_eq!(config.raft_port, 0); // a free port, reported once started
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Members of other clusters are refused, in gossip and on every TCP port.
    pub cluster_id: String,
    /// The address every port binds on; also the one others reach this
    /// member at, unless `advertise_host` says otherwise.
    pub host: String,
    /// The address others reach this member at, when `host` is not it: a
    /// wildcard bind (`0.0.0.0`, `::`) needs one.
    pub advertise_host: Option<String>,
    /// Gossip (UDP) port; 0 picks a free one.
    pub gossip_port: u16,
    /// Raft RPC (TCP) port; 0 picks a free one.
    pub raft_port: u16,
    /// Forwarding-service (TCP) port; 0 picks a free one.
    pub service_port: u16,
    /// The data grid's port, published to the other members; 0 picks a free
    /// one and holds it until the grid takes it
    /// ([`take_grid_listener`](crate::ClusterOf::take_grid_listener)).
    pub grid_port: u16,
    /// The operators' HTTP API (health, metrics, JSON KV); none: off, 0: a free port.
    pub http_port: Option<u16>,
    /// Gossip addresses (`host:port`) of members to join; empty forms a new cluster.
    pub seeds: Vec<String>,
    /// How many voters the cluster keeps; the other members are nonvoters.
    pub num_voters: usize,
    /// How many members hold the raft log (the replica set): `num_voters`
    /// voters and `replicas - num_voters` nonvoters. Every other member is a
    /// client member: gossip, member id, short id and records, no log and no
    /// vote; it reaches the store through the replicas. At least
    /// `num_voters`; default 5. Only the leader's value counts.
    pub replicas: usize,
    /// Where the member id and the raft state live; none keeps them in memory.
    pub data_dir: Option<PathBuf>,
    /// Extra tags this member publishes in gossip.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Timeouts of the choreography and the housekeeping.
    pub timeouts: Timeouts,
    /// Gossip settings.
    pub gossip: GossipSettings,
    /// Raft settings.
    pub raft: RaftSettings,
    /// Gossip encryption keys, standard base64 of 32 random bytes each
    /// (`carbon keys generate`); the first is primary. Empty: gossip is not
    /// encrypted (unless the keyring file holds keys).
    pub gossip_keys: GossipKeys,
    /// Where the gossip keyring is kept (mode 0600). Default: `gossip-keyring.json`
    /// in `data_dir` when there is one. When the file exists it wins over
    /// `gossip_keys`: it holds the ring as the last rotation left it.
    pub gossip_keyring_file: Option<PathBuf>,
    /// `[limits]`: bounds of the raft and service ports and of their clients
    /// (the frame limit is `raft.max_frame_bytes`, the request timeout
    /// `timeouts.operation_ms`), and of the HTTP port (the `http_*` fields).
    #[serde(deserialize_with = "crate::duration::limits")]
    pub limits: Limits,
    /// Mutual TLS from files (`[tls]` in TOML: `ca_cert`, `cert`, `key` and
    /// optionally `crl`, in
    /// PEM; `carbon tls init` makes them). Loaded at start into
    /// [`security`](ClusterConfig::security) unless that is set already.
    pub tls: Option<cluster_rpc::TlsFiles>,
    /// Plain TCP or mutual TLS on the raft and service ports, given in code
    /// (certificates made in memory, a [`Tls`](cluster_rpc::Tls) the program
    /// reloads itself). Not read from the config file: see [`tls`](ClusterConfig::tls).
    #[serde(skip)]
    pub security: cluster_rpc::Security,
    /// The network the raft and service ports listen on and this member's
    /// raft, service and proof clients connect through: real TCP by default;
    /// an in-memory network ([`cluster_rpc::memnet`], feature `memnet`) in a
    /// simulation. Gossip (UDP), the grid and HTTP ports are not on it. Given
    /// in code only, not read from the config file.
    #[serde(skip)]
    pub network: cluster_rpc::Net,
    /// The store's quotas (`[quota]` in TOML): key, value and store bytes,
    /// and the largest snapshot received.
    pub quota: ConsensusLimits,
}

/// `[limits]` in TOML: the RPC layer's bounds and the HTTP port's, in one
/// table (the HTTP port's fields start with `http_`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The raft and service ports' bounds (`max_connections`, …).
    #[serde(flatten)]
    pub rpc: cluster_rpc::Limits,
    /// The HTTP port's bounds (`http_max_connections`, …).
    #[serde(flatten)]
    pub http: HttpLimits,
}

// The RPC layer's fields were all of `[limits]` before the HTTP port had any:
// code that reads `config.limits.max_connections` keeps working.
impl std::ops::Deref for Limits {
    type Target = cluster_rpc::Limits;

    fn deref(&self) -> &cluster_rpc::Limits {
        &self.rpc
    }
}

impl std::ops::DerefMut for Limits {
    fn deref_mut(&mut self) -> &mut cluster_rpc::Limits {
        &mut self.rpc
    }
}

/// Gossip keys in base64. Secret: `Debug` shows how many, never a key.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GossipKeys(pub Vec<String>);

impl fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKeys({} keys)", self.0.len())
    }
}

/// The keyring file's name in the data directory.
pub const GOSSIP_KEYRING_FILE: &str = "gossip-keyring.json";

/// One base64 gossip key as its 32 bytes; the error never repeats the key.
/// The decoding is core's, the one the gossip backend uses too; this adds
/// where to get a good key.
pub fn decode_gossip_key(text: &str) -> Result<[u8; 32], String> {
    cluster_core::gossip_key::decode_gossip_key(text)
        .map_err(|e| format!("{e} (generate one with `carbon keys generate`)"))
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_id: "carbon-grid".to_owned(),
            host: "127.0.0.1".to_owned(),
            advertise_host: None,
            gossip_port: 0,
            raft_port: 0,
            service_port: 0,
            grid_port: 0,
            http_port: None,
            seeds: Vec::new(),
            num_voters: 3,
            replicas: 5,
            data_dir: None,
            tags: Default::default(),
            timeouts: Timeouts::default(),
            gossip: GossipSettings::default(),
            raft: RaftSettings::default(),
            gossip_keys: GossipKeys::default(),
            gossip_keyring_file: None,
            limits: Limits::default(),
            tls: None,
            security: cluster_rpc::Security::default(),
            network: cluster_rpc::Net::default(),
            quota: ConsensusLimits::default(),
        }
    }
}

/// Timeouts, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// `Cluster::start` fails if the member holds no short id by then.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub start_ms: u64,
    /// A store operation gives up after this long, across retries and failovers.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub operation_ms: u64,
    /// A failed member is removed from raft after this grace period.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub failure_grace_ms: u64,
    /// A failed member's short id stays reserved this long, so it keeps it if it comes back.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub short_id_reap_ms: u64,
    /// `shutdown` waits at most this long for peers to see the leave.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub leave_ms: u64,
    /// The leader re-checks the cluster at least this often.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub housekeeping_interval_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start_ms: 30_000,
            operation_ms: 10_000,
            failure_grace_ms: 3_000,
            short_id_reap_ms: 60_000,
            leave_ms: 5_000,
            housekeeping_interval_ms: 500,
        }
    }
}

/// Gossip settings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSettings {
    /// Time between gossip rounds.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub interval_ms: u64,
    /// Phi-accrual suspicion level at which a member is declared failed.
    pub phi_threshold: f64,
    /// How long a failed member is remembered before it is forgotten.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub dead_member_grace_ms: u64,
}

impl Default for GossipSettings {
    fn default() -> Self {
        GossipSettings { interval_ms: 100, phi_threshold: 8.0, dead_member_grace_ms: 3_600_000 }
    }
}

impl GossipSettings {
    /// As core's failure-detector settings.
    pub fn failure_detection(&self) -> FailureDetection {
        FailureDetection {
            phi_threshold: self.phi_threshold,
            initial_interval: Duration::from_millis(self.interval_ms),
            dead_member_grace: Duration::from_millis(self.dead_member_grace_ms),
        }
    }
}

/// Raft settings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSettings {
    /// The leader's heartbeat interval. openraft 0.9 also bounds each
    /// AppendEntries by it: keep it above a connect plus a round trip.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout.
    #[serde(deserialize_with = "crate::duration::millis")]
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many log entries.
    pub snapshot_after_entries: u64,
    /// The largest frame on the raft and service ports, in bytes.
    pub max_frame_bytes: usize,
}

impl Default for RaftSettings {
    fn default() -> Self {
        let t = RaftTiming::default();
        RaftSettings {
            heartbeat_ms: t.heartbeat_interval.as_millis() as u64,
            election_timeout_min_ms: t.election_timeout_min.as_millis() as u64,
            election_timeout_max_ms: t.election_timeout_max.as_millis() as u64,
            snapshot_after_entries: t.snapshot_after_entries,
            max_frame_bytes: cluster_core::wire::DEFAULT_MAX_FRAME_LEN,
        }
    }
}

impl RaftSettings {
    /// As core's raft timing.
    pub fn timing(&self) -> RaftTiming {
        RaftTiming {
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            election_timeout_min: Duration::from_millis(self.election_timeout_min_ms),
            election_timeout_max: Duration::from_millis(self.election_timeout_max_ms),
            snapshot_after_entries: self.snapshot_after_entries,
            ..RaftTiming::default()
        }
    }
}

/// One bad field: its dotted name and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field, e.g. `raft.heartbeat_ms`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Every problem of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ClusterConfig {
    /// Checks every field and returns every problem found, each with its field's name.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        let mut bad =
            |field: &str, problem: String| problems.push(ConfigProblem { field: field.to_owned(), problem });
        if self.cluster_id.is_empty() {
            bad("cluster_id", "must not be empty".into());
        }
        if self.cluster_id.len() > cluster_core::wire::MAX_CLUSTER_ID_LEN {
            bad("cluster_id", format!("longer than {} bytes", cluster_core::wire::MAX_CLUSTER_ID_LEN));
        }
        if self.host.trim().is_empty() {
            bad("host", "must not be empty".into());
        } else {
            match self.host.parse::<std::net::IpAddr>() {
                Err(_) => bad("host", format!("{:?} is not an IP address", self.host)),
                Ok(ip) if ip.is_unspecified() && self.advertise_host.is_none() => bad(
                    "host",
                    format!(
                        "{} binds every interface, so it says nothing about where others reach this member: set advertise_host",
                        self.host
                    ),
                ),
                Ok(_) => {}
            }
        }
        if let Some(a) = &self.advertise_host {
            match a.parse::<std::net::IpAddr>() {
                Err(_) => bad("advertise_host", format!("{a:?} is not an IP address")),
                Ok(ip) if ip.is_unspecified() => {
                    bad("advertise_host", format!("{a} is a wildcard; name an address others can reach"))
                }
                Ok(_) => {}
            }
        }
        let ports = [
            ("gossip_port", self.gossip_port),
            ("raft_port", self.raft_port),
            ("service_port", self.service_port),
            ("grid_port", self.grid_port),
            ("http_port", self.http_port.unwrap_or(0)),
        ];
        for (i, (name, port)) in ports.iter().enumerate() {
            if *port != 0 && ports[..i].iter().any(|(_, p)| p == port) {
                bad(name, format!("port {port} is used twice"));
            }
        }
        for (i, seed) in self.seeds.iter().enumerate() {
            let ok = seed
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
            if !ok {
                bad(&format!("seeds[{i}]"), format!("{seed:?} is not host:port"));
            }
        }
        if self.num_voters == 0 {
            bad("num_voters", "must be at least 1".into());
        }
        if self.num_voters > 99 {
            bad("num_voters", "more than 99 voters makes every write slow; use at most 99".into());
        }
        if self.replicas < self.num_voters {
            bad(
                "replicas",
                format!(
                    "must be at least num_voters ({}): the replica set holds the voters and the nonvoters",
                    self.num_voters
                ),
            );
        }
        for name in self.tags.keys() {
            if cluster_core::member::tag::RESERVED.contains(&name.as_str()) || name.starts_with("__") {
                bad(&format!("tags.{name}"), "is reserved for the cluster".into());
            }
        }
        let t = &self.timeouts;
        for (name, v) in [
            ("timeouts.start_ms", t.start_ms),
            ("timeouts.operation_ms", t.operation_ms),
            ("timeouts.leave_ms", t.leave_ms),
            ("timeouts.housekeeping_interval_ms", t.housekeeping_interval_ms),
        ] {
            if v == 0 {
                bad(name, "must be greater than 0".into());
            }
        }
        if t.short_id_reap_ms < t.failure_grace_ms {
            bad("timeouts.short_id_reap_ms", "must not be shorter than timeouts.failure_grace_ms".into());
        }
        let g = &self.gossip;
        if g.interval_ms == 0 {
            bad("gossip.interval_ms", "must be greater than 0".into());
        }
        if !(g.phi_threshold.is_finite() && g.phi_threshold > 0.0) {
            bad("gossip.phi_threshold", "must be a positive number".into());
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 {
            bad("raft.heartbeat_ms", "must be greater than 0".into());
        }
        if r.election_timeout_min_ms <= r.heartbeat_ms {
            bad("raft.election_timeout_min_ms", "must be greater than raft.heartbeat_ms".into());
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            bad("raft.election_timeout_max_ms", "must be greater than raft.election_timeout_min_ms".into());
        }
        let ceiling = cluster_core::wire::MAX_FRAME_LEN_CEILING;
        if r.max_frame_bytes < 64 * 1024 || r.max_frame_bytes > ceiling {
            bad("raft.max_frame_bytes", format!("must be between 65536 and {ceiling}"));
        }
        for (name, problem) in self.quota.problems() {
            bad(&format!("quota.{name}"), problem);
        }
        if self.quota.max_value_bytes.saturating_add(self.quota.max_key_bytes) > r.max_frame_bytes / 2 {
            // A write travels in one frame on the service and raft ports.
            bad(
                "quota.max_value_bytes",
                "with quota.max_key_bytes must fit in half of raft.max_frame_bytes".into(),
            );
        }
        for (i, key) in self.gossip_keys.0.iter().enumerate() {
            if let Err(problem) = decode_gossip_key(key) {
                bad(&format!("gossip_keys[{i}]"), problem);
            }
        }
        for problem in self.limits.rpc.problems() {
            match problem.split_once(": ") {
                Some((field, problem)) => bad(&format!("limits.{field}"), problem.to_owned()),
                None => bad("limits", problem),
            }
        }
        for (field, problem) in self.limits.http.problems() {
            bad(&format!("limits.{field}"), problem);
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigErrors(problems)) }
    }

    /// The keyring file: the configured one, else the one in `data_dir`, else none.
    pub fn gossip_keyring_path(&self) -> Option<PathBuf> {
        self.gossip_keyring_file
            .clone()
            .or_else(|| self.data_dir.as_ref().map(|d| d.join(GOSSIP_KEYRING_FILE)))
    }

    /// Gossip encryption as the membership backend takes it (keys that do not
    /// decode are left out: [`validate`](ClusterConfig::validate) reports them).
    pub fn gossip_encryption(&self) -> cluster_core::GossipEncryption {
        cluster_core::GossipEncryption {
            keys: self.gossip_keys.0.iter().filter_map(|k| decode_gossip_key(k).ok()).collect(),
            keyring_file: self.gossip_keyring_path(),
        }
    }

    /// The host others reach this member at: `advertise_host`, else `host`.
    pub fn advertised_host(&self) -> &str {
        self.advertise_host.as_deref().unwrap_or(&self.host)
    }

    /// `Timeouts` as durations.
    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

#[cfg(test)]
mod tests;
