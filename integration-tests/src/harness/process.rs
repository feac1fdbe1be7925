//! One member as a real `carbon agent` process: the configuration file the
//! agents of a fault scenario share ([`AgentConfig`]); the process itself
//! (the binary, its start line; kill, pause, resume, terminate, restart) is
//! the test kit's one agent harness, [`cluster_testkit::agent`], re-exported
//! here.

pub use cluster_testkit::agent::{Agent, AgentSpec, Log, Ports, StartLine, carbon_binary};

/// The configuration file every agent of a test cluster shares: fast failure
/// handling so that faults resolve within seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The cluster id.
    pub cluster_id: String,
    /// How many voters the cluster keeps.
    pub num_voters: usize,
    /// How many members hold the raft log; the others are client members.
    pub replicas: usize,
    /// A failed member is removed from raft after this.
    pub failure_grace_ms: u64,
    /// A failed member's short id is freed after this.
    pub short_id_reap_ms: u64,
    /// A graceful stop waits this long for peers to see the leave.
    pub leave_ms: u64,
    /// A store operation's deadline inside the agent.
    pub operation_ms: u64,
    /// How long an agent may take to obtain its short id.
    pub start_ms: u64,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    pub election_timeout_min_ms: u64,
    /// Raft election timeout, upper bound.
    pub election_timeout_max_ms: u64,
    /// Whether the agents also serve the operators' HTTP API (on a port the
    /// OS picks; the start line names it).
    pub http: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            cluster_id: "faults".into(),
            num_voters: 3,
            replicas: 5,
            failure_grace_ms: 1_000,
            short_id_reap_ms: 30_000,
            leave_ms: 3_000,
            operation_ms: 10_000,
            start_ms: 60_000,
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            http: false,
        }
    }
}

impl AgentConfig {
    /// The TOML text of this configuration (host, ports, seeds and data directory
    /// are passed as flags).
    pub fn to_toml(&self) -> String {
        let (keys, tables) = super::security::agent_toml();
        let text = format!(
            "cluster_id = {:?}\nnum_voters = {}\nreplicas = {}\n{keys}\n[timeouts]\nstart_ms = {}\noperation_ms = {}\n\
             failure_grace_ms = {}\nshort_id_reap_ms = {}\nleave_ms = {}\n\n[raft]\nheartbeat_ms = {}\n\
             election_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n",
            self.cluster_id,
            self.num_voters,
            self.replicas,
            self.start_ms,
            self.operation_ms,
            self.failure_grace_ms,
            self.short_id_reap_ms,
            self.leave_ms,
            self.heartbeat_ms,
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
        );
        // A top-level key: it goes before the first table.
        let http = if self.http { "http_port = 0\n" } else { "" };
        format!("{http}{text}{tables}")
    }
}
