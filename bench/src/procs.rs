//! Peer and agent processes on loopback: start, wait until ready, kill.
//! Every child is killed when its handle drops, and its data lives in a
//! temporary directory removed at the end of the run. A `carbon agent` is the
//! fault harness's process (`integration_tests::harness::process`): one way to
//! start an agent and read its start line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster_service::{RouterOptions, ServiceClient};
use integration_tests::harness::process::{self, AgentSpec, Log, Ports};
use tokio::process::{Child, Command};

/// A free loopback port (TCP and UDP both free at the time of asking).
/// Never hands out the same port twice in one run.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if !given.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    std::fs::File::create(dir.join(format!("{name}.log"))).context("create log file")
}

// ---------------------------------------------------------------- carbon

/// One `carbon agent`: the fault harness's process (integration-tests), and
/// the start line it printed.
pub struct Agent {
    pub process: process::Agent,
    pub member_id: String,
    pub service: String,
    pub gossip: String,
}

impl Agent {
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        // Only fails if the process is already gone, which is what was asked.
        let _ = self.process.kill();
    }
}

/// Three (or more) `carbon agent` processes forming one cluster.
pub struct CarbonCluster {
    pub agents: Vec<Agent>,
    pub cluster_id: String,
    carbon: PathBuf,
    dir: PathBuf,
    durable: bool,
    tag: String,
    config: Option<PathBuf>,
    /// Agents spawned so far (names stay unique when agents come and go).
    spawned: usize,
    /// How the bench's clients connect (TLS with a client certificate when
    /// the agents run on TLS).
    security: cluster_facade::rpc::Security,
    /// The CA directory that gives each agent a member certificate of its
    /// own (naming its member id), when the agents run on TLS.
    certs: Option<PathBuf>,
    /// `--replicas` given to every agent (the agent's default, 5, when `None`).
    replicas: Option<usize>,
}

/// What the `start_*` forms add to [`CarbonCluster::start`].
#[derive(Default)]
struct Extras {
    /// `--config` given to every agent.
    config: Option<PathBuf>,
    /// With TLS: the clients' security and the CA directory of the members' certificates.
    tls: Option<(cluster_facade::rpc::Security, PathBuf)>,
    /// `--replicas` given to every agent.
    replicas: Option<usize>,
}

impl CarbonCluster {
    /// Starts `n` agents, the first forming the cluster and the others seeded on it,
    /// durable (a data dir each under `dir`) or in memory; waits until every agent
    /// reports the same leader and `n` voters.
    pub async fn start(carbon: &Path, dir: &Path, n: usize, durable: bool, tag: &str) -> Result<Self> {
        Self::start_with(carbon, dir, n, durable, tag, None).await
    }

    /// [`start`](Self::start), every agent also given `--config <config>` (a
    /// TOML file, e.g. other raft timing).
    pub async fn start_with(
        carbon: &Path,
        dir: &Path,
        n: usize,
        durable: bool,
        tag: &str,
        config: Option<PathBuf>,
    ) -> Result<Self> {
        Self::start_full(carbon, dir, n, durable, tag, Extras { config, ..Extras::default() }).await
    }

    /// [`start`](Self::start) with `--replicas <replicas>` given to every
    /// agent: raft runs on at most that many members, every other member is
    /// a client member.
    pub async fn start_replicas(
        carbon: &Path,
        dir: &Path,
        n: usize,
        durable: bool,
        tag: &str,
        replicas: usize,
    ) -> Result<Self> {
        let extras = Extras { replicas: Some(replicas), ..Extras::default() };
        Self::start_full(carbon, dir, n, durable, tag, extras).await
    }

    /// [`start`](Self::start) as production runs it: mutual TLS on the raft
    /// and service ports (a CA and certificates made for the run by the
    /// same code as `carbon tls init`) and AES-GCM sealed gossip.
    pub async fn start_secure(carbon: &Path, dir: &Path, n: usize, durable: bool, tag: &str) -> Result<Self> {
        use cluster_facade::rpc::tls::generate::write_bundle;
        let certs = dir.join(format!("{tag}-certs"));
        // The CA and the client certificate; each agent gets its own member
        // certificate when it is spawned.
        let bundle = write_bundle(&certs, &format!("bench-{tag}"), 0)?;
        let config = dir.join(format!("{tag}-secure.toml"));
        let key = cluster_facade::GossipKey::generate().to_base64();
        let toml = format!("gossip_keys = [{key:?}]\n");
        std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
        let client = cluster_facade::rpc::Tls::from_files(bundle.client.clone())?;
        let security = cluster_facade::rpc::Security::Tls(client);
        let extras = Extras { config: Some(config), tls: Some((security, certs)), replicas: None };
        Self::start_full(carbon, dir, n, durable, tag, extras).await
    }

    async fn start_full(
        carbon: &Path,
        dir: &Path,
        n: usize,
        durable: bool,
        tag: &str,
        extras: Extras,
    ) -> Result<Self> {
        let Extras { config, tls, replicas } = extras;
        let (security, certs) = match tls {
            Some((security, certs)) => (security, Some(certs)),
            None => (cluster_facade::rpc::Security::Plain, None),
        };
        let mut c = CarbonCluster {
            agents: Vec::new(),
            cluster_id: format!("bench-{tag}"),
            carbon: carbon.to_path_buf(),
            dir: dir.to_path_buf(),
            durable,
            tag: tag.to_string(),
            config,
            spawned: 0,
            security,
            certs,
            replicas,
        };
        for _ in 0..n {
            c.add().await?;
        }
        c.wait_ready(n.min(3), Duration::from_secs(30)).await?;
        Ok(c)
    }

    /// Spawns one more agent, seeded on the first, and waits for its start line
    /// (printed once it holds its short id); returns the time from spawn to it.
    pub async fn add(&mut self) -> Result<Duration> {
        let name = format!("carbon-{}-{}", self.tag, self.spawned);
        self.spawned += 1;
        let mut args: Vec<String> =
            ["--cluster-id", &self.cluster_id, "--num-voters", "3"].map(String::from).to_vec();
        if let Some(r) = self.replicas {
            args.extend(["--replicas".to_owned(), r.to_string()]);
        }
        if let Some(certs) = &self.certs {
            let issued = cluster_facade::rpc::tls::generate::issue_into(
                certs,
                certs,
                cluster_facade::rpc::Role::Member,
                None,
            )?;
            for (flag, path) in [
                ("--tls-ca", &issued.files.ca_cert),
                ("--tls-cert", &issued.files.cert),
                ("--tls-key", &issued.files.key),
            ] {
                args.extend([flag.to_owned(), path.display().to_string()]);
            }
        }
        let spec = AgentSpec {
            name: name.clone(),
            binary: Some(self.carbon.clone()),
            host: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ports: Some(Ports::default()),
            seeds: self.agents.first().map(|first| first.gossip.clone()).into_iter().collect(),
            data_dir: self.durable.then(|| self.dir.join(&name)),
            config_file: self.config.clone(),
            args,
            log: Log::File(self.dir.join(format!("{name}.log"))),
            wrapper: Vec::new(),
        };
        let t = Instant::now();
        let mut process = process::Agent::spawn(spec)?;
        // The harness waits on a plain thread: keep this worker's other tasks moving.
        let line = tokio::task::block_in_place(|| process.wait_started(Duration::from_secs(40)).cloned())?;
        let took = t.elapsed();
        self.agents.push(Agent {
            process,
            member_id: line.member_id,
            service: line.service.to_string(),
            gossip: line.gossip.to_string(),
        });
        Ok(took)
    }

    /// Stops agent `i` with SIGTERM (a graceful leave), waits for it to exit
    /// (SIGKILL after 10 s), and forgets it.
    pub async fn leave(&mut self, i: usize) -> Result<()> {
        let mut agent = self.agents.remove(i);
        tokio::task::block_in_place(|| agent.process.terminate(Duration::from_secs(10)))?;
        Ok(())
    }

    /// The bound on raft members the agents run with (`--replicas`, the
    /// agent's default 5 when not given).
    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(5)
    }

    /// Waits until the leader's view holds exactly `min(n, replicas)` raft
    /// members (voters and nonvoters), `min(n, 3)` of them voters: a
    /// cluster of `n` members whose replica set is at its bound (every
    /// member beyond it is a client member, which holds its short id once
    /// its start line is printed).
    pub async fn wait_members(&self, n: usize, within: Duration) -> Result<()> {
        let raft = n.min(self.replicas());
        let deadline = Instant::now() + within;
        let client = self.client(&(0..self.agents.len().min(3)).collect::<Vec<_>>())?;
        let mut seen = (0, 0);
        loop {
            let addr = match client.status().await {
                Ok(s) => s.leader.and_then(|leader| {
                    self.agents.iter().find(|a| a.member_id == leader.to_string()).map(|a| a.service.clone())
                }),
                Err(_) => None,
            };
            if let Some(addr) = addr
                && let Ok(l) = client.status_of(&addr).await
            {
                seen = (l.voters.len(), l.nonvoters.len());
                if seen.0 == n.min(3) && seen.0 + seen.1 == raft {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "raft does not hold {raft} members within {within:?} (voters, nonvoters seen: {seen:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills (SIGKILL) a follower voter (not `leader`) and returns the time
    /// until the leader's status holds 3 voters and [`replicas`](Self::replicas)
    /// raft members again, the killed one not among them: the replica set
    /// healed by a client member taking its place.
    pub async fn kill_voter_and_heal(&mut self, leader: usize) -> Result<Duration> {
        let addr = self.agents[leader].service.clone();
        let client = self.client(&[leader])?;
        let status = client.status_of(&addr).await?;
        let victim = (0..self.agents.len())
            .filter(|&i| i != leader)
            .find(|&i| status.voters.keys().any(|v| v.to_string() == self.agents[i].member_id))
            .context("no follower voter to kill")?;
        let gone = self.agents[victim].member_id.clone();
        let want = self.replicas();
        let t = Instant::now();
        self.agents[victim].kill9();
        let deadline = t + Duration::from_secs(60);
        loop {
            if let Ok(s) = client.status_of(&addr).await {
                let set: Vec<String> =
                    s.voters.keys().chain(s.nonvoters.keys()).map(|m| m.to_string()).collect();
                if s.voters.len() == 3 && set.len() == want && !set.contains(&gone) {
                    return Ok(t.elapsed());
                }
            }
            if Instant::now() > deadline {
                bail!("the replica set is not back at {want} members within 60 s of killing {gone}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn client_options(&self) -> RouterOptions {
        let mut options = RouterOptions::new(self.cluster_id.clone());
        options.security = self.security.clone();
        options
    }

    /// A client of the given agents' service ports.
    pub fn client(&self, which: &[usize]) -> Result<ServiceClient> {
        let addrs: Vec<String> = which.iter().map(|&i| self.agents[i].service.clone()).collect();
        Ok(ServiceClient::new(addrs, self.client_options())?)
    }

    /// Index of the leader, as every live agent reports it.
    pub async fn wait_ready(&self, voters: usize, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        let index: HashMap<&str, usize> =
            self.agents.iter().enumerate().map(|(i, a)| (a.member_id.as_str(), i)).collect();
        let client = self.client(&(0..self.agents.len()).collect::<Vec<_>>())?;
        loop {
            let mut leaders = Vec::new();
            for a in &self.agents {
                match client.status_of(&a.service).await {
                    Ok(s) if s.voters.len() == voters => leaders.push(s.leader.map(|l| l.to_string())),
                    _ => leaders.push(None),
                }
            }
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| x.as_deref() == Some(l.as_str()))
                && let Some(&i) = index.get(l.as_str())
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("carbon cluster not ready within {within:?}: leaders seen {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader's index now.
    pub async fn leader(&self) -> Result<usize> {
        self.wait_ready(3, Duration::from_secs(20)).await
    }

    pub fn pids(&self) -> Vec<u32> {
        self.agents.iter().filter_map(Agent::pid).collect()
    }
}

// ---------------------------------------------------------------- etcd

pub struct EtcdMember {
    pub proc: Proc,
    pub client_url: String,
}

/// Three `etcd` processes forming one cluster, data on disk under `dir`.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
}

/// etcd's election settings, stated in the results.
pub const ETCD_HEARTBEAT_MS: u64 = 100;
pub const ETCD_ELECTION_MS: u64 = 1000;

impl EtcdCluster {
    pub async fn start(dir: &Path, n: usize, tag: &str) -> Result<Self> {
        let mut peers = Vec::new();
        for i in 0..n {
            peers.push((format!("etcd-{tag}-{i}"), free_port()?, free_port()?));
        }
        let initial: Vec<String> =
            peers.iter().map(|(name, _, p)| format!("{name}=http://127.0.0.1:{p}")).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (name, client_port, peer_port) in &peers {
            let data = dir.join(name);
            let client_url = format!("http://127.0.0.1:{client_port}");
            let peer_url = format!("http://127.0.0.1:{peer_port}");
            let child = Command::new("etcd")
                .args(["--name", name])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &format!("bench-{tag}")])
                .args(["--heartbeat-interval", &ETCD_HEARTBEAT_MS.to_string()])
                .args(["--election-timeout", &ETCD_ELECTION_MS.to_string()])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file(dir, name)?)
                .kill_on_drop(true)
                .spawn()
                .context("spawn etcd")?;
            members.push(EtcdMember { proc: Proc { child }, client_url });
        }
        let c = EtcdCluster { members };
        c.wait_leader(&[], Duration::from_secs(30)).await?;
        Ok(c)
    }

    pub fn urls(&self, which: &[usize]) -> Vec<String> {
        which.iter().map(|&i| self.members[i].client_url.clone()).collect()
    }

    /// Index of the leader all members (but `skip`) agree on.
    pub async fn wait_leader(&self, skip: &[usize], within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let mut ids = Vec::new(); // (member id, leader id)
            for (i, m) in self.members.iter().enumerate() {
                if skip.contains(&i) {
                    continue;
                }
                let got = async {
                    let opts = etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_millis(500));
                    let mut c = etcd_client::Client::connect([m.client_url.as_str()], Some(opts)).await?;
                    let s = c.status().await?;
                    Ok::<_, etcd_client::Error>((i, s.header().map_or(0, |h| h.member_id()), s.leader()))
                }
                .await;
                ids.push(got.ok());
            }
            if ids.iter().all(Option::is_some) {
                let ids: Vec<(usize, u64, u64)> = ids.into_iter().flatten().collect();
                let leader = ids[0].2;
                if leader != 0
                    && ids.iter().all(|x| x.2 == leader)
                    && let Some(x) = ids.iter().find(|x| x.1 == leader)
                {
                    return Ok(x.0);
                }
            }
            if Instant::now() > deadline {
                bail!("etcd cluster has no agreed leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.proc.pid()).collect()
    }
}

// ---------------------------------------------------------------- serf

pub struct SerfAgent {
    pub proc: Proc,
    pub name: String,
    pub bind: String,
    pub rpc: String,
}

/// Spawns one `serf agent` (lan profile, the default).
pub fn spawn_serf(dir: &Path, name: &str, join: Option<&str>) -> Result<SerfAgent> {
    let bind = format!("127.0.0.1:{}", free_port()?);
    let rpc = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new("serf");
    cmd.arg("agent").args(["-bind", &bind, "-rpc-addr", &rpc, "-node", name, "-profile", "lan"]);
    if let Some(j) = join {
        cmd.args(["-join", j]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log_file(dir, name)?)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn serf")?;
    Ok(SerfAgent { proc: Proc { child }, name: name.to_string(), bind, rpc })
}

/// Whether an executable is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_exec(&d.join(program))))
        .unwrap_or(false)
}

fn is_exec(p: &Path) -> bool {
    p.is_file()
}

/// Waits until a TCP port accepts connections (a serf agent's RPC port).
pub async fn wait_listening(addr: &str, within: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if t.elapsed() > within {
            bail!("{addr} not listening within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
