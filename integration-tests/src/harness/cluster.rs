//! [`ProcessCluster`]: a cluster of `carbon agent` processes on loopback, or each
//! in its own network namespace ([`NetLab`]) when the test partitions the network,
//! and optionally with every member behind the [`Proxy`] (delay, loss, one-way
//! cuts): each agent then advertises its front IP (`--advertise-host`, the same
//! ports), so gossip, raft and service traffic between members, and the test's
//! clients, reach it through the proxy.
//!
//! The cluster owns a temporary directory holding the shared configuration file,
//! each member's data directory and each member's log (`m<i>.log`, stderr of every
//! run appended). [`ProcessCluster::keep_dir`] keeps it after the test, for a
//! failure's evidence.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cluster_core::{ConsensusStatus, MemberInfo};
use cluster_service::{RouterOptions, ServiceClient};

use super::netns::NetLab;
use super::process::{Agent, AgentConfig, AgentSpec, Log, Ports};
use super::proxy::{Protocol, ProxiedMember, Proxy, ProxySpec, Route};

/// Ports every member uses inside its own namespace (no other member binds there).
const NETNS_PORTS: Ports = Ports { gossip: 7100, raft: 7101, service: 7102, grid: 7103 };

/// How to build a [`ProcessCluster`].
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many members.
    pub members: usize,
    /// The agents' shared configuration (`num_voters` included).
    pub config: AgentConfig,
    /// Each member in its own network namespace (needs root; see [`NetLab`]).
    pub netns: bool,
    /// Every member behind the [`Proxy`] (needs `netns`).
    pub proxy: bool,
    /// The proxy's seed (`None`: `$CARBON_PROXY_SEED`, else a random one).
    pub proxy_seed: Option<u64>,
    /// How long a member may take to print its start line.
    pub start_timeout: Duration,
}

impl ClusterSpec {
    /// `members` members keeping `num_voters` voters, on loopback.
    pub fn new(members: usize, num_voters: usize) -> Self {
        ClusterSpec {
            members,
            config: AgentConfig { num_voters, ..AgentConfig::default() },
            netns: false,
            proxy: false,
            proxy_seed: None,
            start_timeout: Duration::from_secs(60),
        }
    }

    /// Each member in its own network namespace.
    pub fn with_netns(mut self) -> Self {
        self.netns = true;
        self
    }

    /// Each member in its own network namespace, behind the [`Proxy`].
    pub fn with_proxy(mut self) -> Self {
        self.netns = true;
        self.proxy = true;
        self
    }
}

/// A cluster of agent processes; every process is killed and every namespace
/// deleted on drop.
#[derive(Debug)]
pub struct ProcessCluster {
    spec: ClusterSpec,
    // Declared before the proxy, the lab and the directory: processes end first.
    agents: Vec<Agent>,
    proxy: Option<Proxy>,
    lab: Option<NetLab>,
    dir: tempfile::TempDir,
    keep: bool,
}

impl ProcessCluster {
    /// Starts the members one after the other (the first forms the cluster, the
    /// others join it) and waits for every start line.
    pub fn start(spec: ClusterSpec) -> Result<ProcessCluster> {
        let dir =
            tempfile::Builder::new().prefix("carbon-faults-").tempdir().context("cannot create a tempdir")?;
        let config_file = dir.path().join("agent.toml");
        std::fs::write(&config_file, spec.config.to_toml()).context("cannot write the agent config")?;
        let mut lab = if spec.netns || spec.proxy { Some(NetLab::new(spec.members)?) } else { None };
        let proxy = match lab.as_mut() {
            Some(lab) if spec.proxy => Some(start_proxy(lab, spec.proxy_seed)?),
            _ => None,
        };
        let mut cluster = ProcessCluster { spec, agents: Vec::new(), proxy, lab, dir, keep: false };
        for _ in 0..cluster.spec.members {
            cluster.add_member()?;
        }
        Ok(cluster)
    }

    /// Starts one more member, joining the running ones (the first member forms
    /// the cluster), and waits for its start line; returns its index. In network
    /// namespaces, only the members the lab was made for can be added.
    pub fn add_member(&mut self) -> Result<usize> {
        let i = self.agents.len();
        let (host, ports, wrapper) = match &self.lab {
            Some(lab) if i < lab.len() => (lab.member_ip(i), NETNS_PORTS, lab.wrapper(i)),
            Some(_) => bail!("the network lab has no namespace for a member m{i}"),
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), Ports::default(), Vec::new()),
        };
        let seeds: Vec<String> = self
            .live()
            .into_iter()
            .filter_map(|j| self.agents[j].start_line().map(|s| s.gossip.to_string()))
            .collect();
        let mut args = super::security::member_flags(Some(&self.dir.path().join(format!("m{i}"))));
        if let (Some(lab), Some(_)) = (&self.lab, &self.proxy) {
            args.extend(["--advertise-host".to_owned(), lab.front_ip(i).to_string()]);
        }
        let spec = AgentSpec {
            name: format!("m{i}"),
            binary: None,
            host: Some(host),
            ports: Some(ports),
            seeds,
            data_dir: Some(self.dir.path().join(format!("m{i}"))),
            config_file: Some(self.dir.path().join("agent.toml")),
            args,
            log: Log::File(self.dir.path().join(format!("m{i}.log"))),
            wrapper,
        };
        let mut agent = Agent::spawn(spec)?;
        agent.wait_started(self.spec.start_timeout)?;
        self.agents.push(agent);
        // Restarted members seed from every other member, so any of them can rejoin.
        self.refresh_seeds();
        Ok(i)
    }

    fn refresh_seeds(&mut self) {
        let gossip: Vec<String> =
            self.agents.iter().filter_map(|a| a.known_start_line().map(|s| s.gossip.to_string())).collect();
        for (i, agent) in self.agents.iter_mut().enumerate() {
            let others = gossip.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, g)| g.clone()).collect();
            agent.set_seeds(others);
        }
    }

    /// The spec the cluster was built from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.spec.config.cluster_id
    }

    /// The number of members (running or not).
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True if the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Member `i`.
    pub fn agent(&mut self, i: usize) -> &mut Agent {
        &mut self.agents[i]
    }

    /// The network lab, if the members run in namespaces.
    pub fn lab(&mut self) -> Option<&mut NetLab> {
        self.lab.as_mut()
    }

    /// The network proxy, if the members run behind one.
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// The directory of configuration, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory after the cluster is dropped, and returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        self.keep = true;
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }

    /// The service address of every member (stable: restarts keep the ports).
    pub fn service_addrs(&self) -> Vec<String> {
        self.agents.iter().filter_map(Agent::service_addr).collect()
    }

    /// Indexes of the members whose process runs and is not paused.
    pub fn live(&mut self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|&i| self.agents[i].is_running() && !self.agents[i].is_paused())
            .collect()
    }

    /// The member ids (start lines) of the live members.
    pub fn live_member_ids(&mut self) -> Vec<String> {
        let live = self.live();
        live.iter().filter_map(|&i| self.agents[i].start_line().map(|s| s.member_id.clone())).collect()
    }

    /// The index of the member with this member id.
    pub fn index_of(&self, member_id: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.known_start_line().is_some_and(|s| s.member_id == member_id))
    }

    /// A client of member `i` alone (status, members: that member's own view).
    pub fn client_of(&self, i: usize, options: RouterOptions) -> Result<ServiceClient> {
        let addr = self.agents[i].service_addr().ok_or_else(|| anyhow!("m{i} has not started"))?;
        ServiceClient::new([addr], options).map_err(|e| anyhow!("{e}"))
    }

    /// One-attempt client options with short timeouts, for probes.
    pub fn probe_options(&self) -> RouterOptions {
        let mut options = crate::harness::security::client_options(self.cluster_id());
        options.connect_timeout = Duration::from_millis(500);
        options.attempt_timeout = Duration::from_secs(1);
        options.op_timeout = Duration::from_secs(1);
        options
    }

    /// Member `i`'s view of consensus, asked of it alone.
    pub async fn status_of(&self, i: usize) -> Result<ConsensusStatus> {
        let client = self.client_of(i, self.probe_options())?;
        let addr = self.agents[i].service_addr().unwrap_or_default();
        client.status_of(&addr).await.map_err(|e| anyhow!("status of m{i}: {e}"))
    }

    /// The member records as member `i` holds them.
    pub async fn members_of(&self, i: usize) -> Result<Vec<MemberInfo>> {
        let client = self.client_of(i, self.probe_options())?;
        client.members().await.map_err(|e| anyhow!("members of m{i}: {e}"))
    }

    /// The index of the member that the live members agree leads (a majority of
    /// the answers name it, and it names itself), if any.
    pub async fn leader(&mut self) -> Option<usize> {
        let live = self.live();
        let mut votes = std::collections::BTreeMap::<String, usize>::new();
        for &i in &live {
            if let Ok(status) = self.status_of(i).await
                && let Some(leader) = status.leader
            {
                *votes.entry(leader.to_string()).or_default() += 1;
            }
        }
        let (leader, count) = votes.into_iter().max_by_key(|(_, c)| *c)?;
        let index = self.index_of(&leader)?;
        if count * 2 <= live.len() || !live.contains(&index) {
            return None;
        }
        let own = self.status_of(index).await.ok()?;
        (own.leader.map(|l| l.to_string()) == Some(leader)).then_some(index)
    }

    /// SIGKILLs every member.
    pub fn kill_all(&mut self) -> Result<()> {
        for agent in &mut self.agents {
            agent.kill()?;
        }
        Ok(())
    }

    /// Starts every stopped member again from its data directory, all at once (a
    /// restarted member needs a quorum to report its start line), and waits for
    /// every start line.
    pub fn restart_stopped(&mut self) -> Result<()> {
        let mut restarted = Vec::new();
        for (i, agent) in self.agents.iter_mut().enumerate() {
            if !agent.is_running() {
                agent.restart()?;
                restarted.push(i);
            }
        }
        for i in restarted {
            self.agents[i].wait_started(self.spec.start_timeout)?;
        }
        Ok(())
    }

    /// Restarts member `i` from its data directory and waits for its start line.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.agents[i].restart()?;
        self.agents[i].wait_started(self.spec.start_timeout)?;
        Ok(())
    }

    /// Restarts member `i` from its data directory on new ports (loopback only)
    /// and waits for its start line.
    pub fn restart_on_new_ports(&mut self, i: usize) -> Result<()> {
        if self.lab.is_some() {
            bail!("members in namespaces keep their fixed ports");
        }
        self.agents[i].restart_on_new_ports()?;
        self.agents[i].wait_started(self.spec.start_timeout)?;
        self.refresh_seeds();
        Ok(())
    }

    /// Cuts the network between groups of members (needs [`ClusterSpec::netns`]):
    /// blackhole routes, or behind the proxy, cuts of the proxy's links both ways
    /// (members reach each other only through the proxy there).
    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<()> {
        if let Some(proxy) = &self.proxy {
            for (g, group) in groups.iter().enumerate() {
                for other in &groups[g + 1..] {
                    for (&a, &b) in group.iter().flat_map(|a| other.iter().map(move |b| (a, b))) {
                        proxy.set(a, b, super::proxy::LinkRule::cut());
                        proxy.set(b, a, super::proxy::LinkRule::cut());
                    }
                }
            }
            return Ok(());
        }
        match &mut self.lab {
            Some(lab) => lab.partition(groups),
            None => bail!("partitions need a cluster built with_netns()"),
        }
    }

    /// Removes every network cut, and behind the proxy makes every link clean
    /// (no delay or loss either).
    pub fn heal(&mut self) -> Result<()> {
        if let Some(proxy) = &self.proxy {
            proxy.heal();
        }
        match &mut self.lab {
            Some(lab) => lab.heal(),
            None => Ok(()),
        }
    }

    /// The last `lines` lines of every member's log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.agents.len() {
            let path = self.dir.path().join(format!("m{i}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("---- m{i} ({}) ----\n{}\n", path.display(), tail.join("\n")));
        }
        out
    }
}

/// Gives every member of `lab` a front IP and starts the proxy in front of its
/// gossip, raft and service ports (in its namespace, on [`NETNS_PORTS`]).
fn start_proxy(lab: &mut NetLab, seed: Option<u64>) -> Result<Proxy> {
    lab.add_front_ips()?;
    let members = (0..lab.len())
        .map(|i| {
            let real = |port| std::net::SocketAddr::new(lab.member_ip(i), port);
            let route = |protocol, port| Route { protocol, front_port: port, backend: real(port) };
            ProxiedMember {
                source_ip: lab.member_ip(i),
                front_ip: lab.front_ip(i),
                routes: vec![
                    route(Protocol::Udp, NETNS_PORTS.gossip),
                    route(Protocol::Tcp, NETNS_PORTS.raft),
                    route(Protocol::Tcp, NETNS_PORTS.service),
                ],
            }
        })
        .collect();
    let proxy = Proxy::start(ProxySpec { members, seed })?;
    eprintln!("network proxy seed {0} (CARBON_PROXY_SEED={0} repeats its choices)", proxy.seed());
    Ok(proxy)
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
        }
        if self.keep {
            eprintln!("kept the cluster's directory {}", self.dir.path().display());
        }
    }
}
