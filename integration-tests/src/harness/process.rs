//! One member as a real `carbon agent` process: where the binary comes from,
//! how an agent is configured and started, and the faults a process can suffer
//! (SIGKILL, SIGSTOP/SIGCONT, SIGTERM, a restart from its data directory).
//!
//! # Finding the `carbon` binary
//!
//! `env!("CARGO_BIN_EXE_carbon")` exists only in `cluster-facade`'s own tests, and
//! `cargo test -p integration-tests` does not build other packages' binaries. So
//! [`carbon_binary`] (once per test process):
//!
//! 1. uses `$CARBON_BIN` if it is set (a prebuilt binary, e.g. a release build);
//! 2. else runs `cargo build -p cluster-facade --bin carbon` with the cargo that runs
//!    the tests (`$CARGO`), into the target directory and profile of the running test
//!    executable (`<target>/<profile>/deps/<test>` → `<target>/<profile>/carbon`).
//!    Cargo rebuilds only what is stale and is a no-op (about a second) otherwise, so
//!    the binary always matches the sources under test;
//! 3. if cargo cannot be run, falls back to an existing `<target>/<profile>/carbon`.
//!
//! # Ports
//!
//! An agent started with port 0 takes ports from the OS and reports them in its start
//! line (`member <id> short_id <n> gossip <addr> raft <addr> service <addr> grid <addr>`).
//! [`Agent::restart`] passes the ports of the last start explicitly, so that seeds
//! and the workload's addresses stay valid; [`Agent::restart_on_new_ports`] lets the
//! OS choose again (the leader must then update the member's raft endpoints and
//! record; a scenario checks it).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Variables `cargo test` sets for the crate under test, besides `CARGO_PKG_*`.
const CRATE_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The `carbon` binary the harness runs; see the module documentation.
pub fn carbon_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| locate_binary().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn locate_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CARBON_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("CARBON_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    // <target>/<profile>/deps/<test executable>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let target_dir =
        profile_dir.parent().ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let profile_name = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let profile = if profile_name == "debug" { "dev" } else { profile_name };
    let binary = profile_dir.join("carbon");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--quiet", "-p", "cluster-facade", "--bin", "carbon", "--profile", profile])
        .env("CARGO_TARGET_DIR", target_dir);
    // `cargo test` gives the test process the variables of its own crate
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …). ring's build script tracks them,
    // so passing them on made this build rebuild ring and everything above it
    // (minutes), and the next plain `cargo test` rebuild them back.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("CARGO_PKG_") || CRATE_VARS.contains(&k)) {
            build.env_remove(key);
        }
    }
    if let Some(manifest_dir) = option_env!("CARGO_MANIFEST_DIR") {
        build.current_dir(manifest_dir);
    }
    match build.status() {
        Ok(status) if status.success() && binary.is_file() => Ok(binary),
        Ok(status) if binary.is_file() => {
            eprintln!("warning: `cargo build --bin carbon` failed ({status}); using the existing binary");
            Ok(binary)
        }
        Ok(status) => {
            bail!("`cargo build --bin carbon` failed ({status}) and {} is missing", binary.display())
        }
        Err(e) if binary.is_file() => {
            eprintln!("warning: cannot run cargo ({e}); using the existing {}", binary.display());
            Ok(binary)
        }
        Err(e) => bail!("cannot run cargo to build carbon ({e}) and {} is missing", binary.display()),
    }
}

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

/// The ports of an agent; 0 lets the OS choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    /// Gossip (UDP).
    pub gossip: u16,
    /// Raft RPC (TCP).
    pub raft: u16,
    /// Forwarding service (TCP).
    pub service: u16,
    /// Data grid.
    pub grid: u16,
}

/// What an agent prints once it holds its short id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartLine {
    /// The member id (a ULID, as text).
    pub member_id: String,
    /// The short id.
    pub short_id: u64,
    /// The gossip address.
    pub gossip: SocketAddr,
    /// The raft address.
    pub raft: SocketAddr,
    /// The service address.
    pub service: SocketAddr,
    /// The grid address.
    pub grid: SocketAddr,
    /// The HTTP API's address, when the agent serves it.
    pub http: Option<SocketAddr>,
}

impl StartLine {
    /// Parses `member <id> short_id <n> gossip <addr> raft <addr> service <addr> grid <addr>`.
    pub fn parse(line: &str) -> Result<StartLine> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| -> Result<&str> {
            let at = words.iter().position(|w| *w == key).ok_or_else(|| anyhow!("no {key} in {line:?}"))?;
            words.get(at + 1).copied().ok_or_else(|| anyhow!("nothing after {key} in {line:?}"))
        };
        let addr = |key: &str| -> Result<SocketAddr> {
            after(key)?.parse().with_context(|| format!("bad {key} address in {line:?}"))
        };
        Ok(StartLine {
            member_id: after("member")?.to_owned(),
            short_id: after("short_id")?.parse().with_context(|| format!("bad short id in {line:?}"))?,
            gossip: addr("gossip")?,
            raft: addr("raft")?,
            service: addr("service")?,
            grid: addr("grid")?,
            http: if words.contains(&"http") { Some(addr("http")?) } else { None },
        })
    }

    /// The ports of this start line.
    pub fn ports(&self) -> Ports {
        Ports {
            gossip: self.gossip.port(),
            raft: self.raft.port(),
            service: self.service.port(),
            grid: self.grid.port(),
        }
    }
}

/// How to start one agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// A name for logs and messages (`m0`, `m1`, …).
    pub name: String,
    /// The `carbon` binary (`None`: [`carbon_binary`]).
    pub binary: Option<PathBuf>,
    /// The host the agent binds and is reached at.
    pub host: IpAddr,
    /// Its ports (0: from the OS, only for the first start).
    pub ports: Ports,
    /// Gossip addresses of members to join.
    pub seeds: Vec<String>,
    /// Its data directory (member id and raft state); `None`: in memory, so a
    /// restart is a new member.
    pub data_dir: Option<PathBuf>,
    /// The configuration file (`None`: the defaults and the flags).
    pub config_file: Option<PathBuf>,
    /// More arguments for every start (security flags, the cluster id, …).
    pub args: Vec<String>,
    /// Where its stderr (logs) goes; appended to across restarts.
    pub log_file: PathBuf,
    /// A command the agent runs under, e.g. `ip netns exec <ns>` (empty: none). The
    /// wrapper must exec the agent, so that signals reach it by the child's pid.
    pub wrapper: Vec<String>,
}

/// A running (or stopped) `carbon agent` process; killed on drop.
#[derive(Debug)]
pub struct Agent {
    spec: AgentSpec,
    child: Option<Child>,
    start_line: Option<StartLine>,
    pending: Option<mpsc::Receiver<String>>,
    paused: bool,
}

impl Agent {
    /// Spawns the agent; [`Agent::wait_started`] waits for its start line.
    pub fn spawn(spec: AgentSpec) -> Result<Agent> {
        let mut agent = Agent { spec, child: None, start_line: None, pending: None, paused: false };
        agent.spawn_process()?;
        Ok(agent)
    }

    fn spawn_process(&mut self) -> Result<()> {
        self.spawn_process_with(&[])
    }

    /// Spawns the agent with `extra` arguments after the usual ones.
    fn spawn_process_with(&mut self, extra: &[&str]) -> Result<()> {
        let spec = &self.spec;
        let binary = match &spec.binary {
            Some(binary) => binary.clone(),
            None => carbon_binary()?,
        };
        if let Some(dir) = &spec.data_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .with_context(|| format!("cannot open {}", spec.log_file.display()))?;
        let mut cmd = match spec.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&binary);
                cmd
            }
            None => Command::new(&binary),
        };
        cmd.arg("agent");
        if let Some(config) = &spec.config_file {
            cmd.arg("--config").arg(config);
        }
        cmd.args(["--host", &spec.host.to_string()])
            .args(["--gossip-port", &spec.ports.gossip.to_string()])
            .args(["--raft-port", &spec.ports.raft.to_string()])
            .args(["--service-port", &spec.ports.service.to_string()])
            .args(["--grid-port", &spec.ports.grid.to_string()]);
        if let Some(dir) = &spec.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        for seed in &spec.seeds {
            cmd.args(["--seed", seed]);
        }
        cmd.args(&spec.args);
        cmd.args(extra);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn,openraft=error");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {} ({})", spec.name, binary.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout of {}", spec.name))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            // The first line is the start line; the agent prints it again when
            // its short id changes. Everything is drained so the agent never blocks.
            while let Some(Ok(line)) = lines.next() {
                if line.starts_with("member ") {
                    let _ = tx.send(line);
                }
            }
        });
        self.child = Some(child);
        self.pending = Some(rx);
        self.start_line = None;
        self.paused = false;
        Ok(())
    }

    /// Waits up to `timeout` for the start line (at once if already read).
    pub fn wait_started(&mut self, timeout: Duration) -> Result<&StartLine> {
        if self.start_line.is_none()
            && let Some(rx) = self.pending.as_ref()
        {
            let line = match rx.recv_timeout(timeout) {
                Ok(line) => line,
                Err(e) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    bail!(
                        "{} printed no start line within {timeout:?} ({e}; exit status {status:?}); log: {}",
                        self.spec.name,
                        self.spec.log_file.display()
                    );
                }
            };
            let parsed = StartLine::parse(&line)?;
            // Later restarts keep the ports and the seeds stay valid.
            self.spec.ports = parsed.ports();
            self.start_line = Some(parsed);
        }
        self.start_line.as_ref().ok_or_else(|| anyhow!("{} was never started", self.spec.name))
    }

    /// The last start line read, if any: the agent prints a new one when its
    /// short id changes.
    pub fn start_line(&mut self) -> Option<&StartLine> {
        if let Some(rx) = self.pending.as_ref() {
            while let Ok(line) = rx.try_recv() {
                if let Ok(parsed) = StartLine::parse(&line) {
                    self.start_line = Some(parsed);
                }
            }
        }
        self.start_line.as_ref()
    }

    /// The last start line read, without looking for a newer one (the member
    /// id and the addresses never change within one run of the agent).
    pub fn known_start_line(&self) -> Option<&StartLine> {
        self.start_line.as_ref()
    }

    /// The spec (its ports are those of the last start line once read).
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// Replaces the seeds used by the next restart.
    pub fn set_seeds(&mut self, seeds: Vec<String>) {
        self.spec.seeds = seeds;
    }

    /// The service address `host:port`, once the agent has started.
    pub fn service_addr(&self) -> Option<String> {
        self.start_line.as_ref().map(|s| s.service.to_string())
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process exists (paused counts as running).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// True while the process is stopped with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("{} is not running", self.spec.name))?;
        let status =
            Command::new("kill").args([signal, &pid.to_string()]).status().context("cannot run kill")?;
        if !status.success() {
            bail!("kill {signal} {pid} ({}) failed: {status}", self.spec.name);
        }
        Ok(())
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().with_context(|| format!("cannot kill {}", self.spec.name))?;
            child.wait().with_context(|| format!("cannot reap {}", self.spec.name))?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process stays, but does nothing until [`Agent::resume`].
    pub fn pause(&mut self) -> Result<()> {
        self.signal("-STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Agent::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal("-CONT")?;
        self.paused = false;
        Ok(())
    }

    /// SIGTERM (a graceful leave), then waits up to `timeout` for the exit; SIGKILL after.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if self.paused {
            self.resume()?;
        }
        self.signal("-TERM")?;
        self.await_exit(timeout, &format!("stop within {timeout:?} of SIGTERM"))
    }

    /// Starts the process again from its data directory on ports from the OS (new
    /// ones, most likely). Wait with [`Agent::wait_started`].
    pub fn restart_on_new_ports(&mut self) -> Result<()> {
        self.kill()?;
        self.spec.ports = Ports::default();
        self.spawn_process()
    }

    /// Starts the process again from its data directory, on the ports of its last
    /// start (killing it first if it still runs). Wait with [`Agent::wait_started`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_process()
    }

    /// Like [`Agent::restart`], with `extra` arguments for this run only
    /// (e.g. `--reset-raft-state`).
    pub fn restart_with_args(&mut self, extra: &[&str]) -> Result<()> {
        self.kill()?;
        self.spawn_process_with(extra)
    }

    /// Waits up to `timeout` for the process to end by itself (a refused
    /// start) and returns its exit status; kills it if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.await_exit(timeout, &format!("exit within {timeout:?}"))
    }

    /// Polls the process until it exits or `timeout` passes; kills it then and
    /// fails with "<name> did not <what>".
    fn await_exit(&mut self, timeout: Duration, what: &str) -> Result<ExitStatus> {
        let started = Instant::now();
        let mut child = self.child.take().ok_or_else(|| anyhow!("{} is not running", self.spec.name))?;
        loop {
            if let Some(status) = child.try_wait().context("cannot wait for the agent")? {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not {what}", self.spec.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_line_parses() {
        let line = "member 01J0000000000000000000000A short_id 3 gossip 127.0.0.1:1 raft 127.0.0.1:2 \
                    service 127.0.0.1:3 grid 127.0.0.1:4";
        let s = StartLine::parse(line).expect("parses");
        assert_eq!(s.short_id, 3);
        assert_eq!(s.ports(), Ports { gossip: 1, raft: 2, service: 3, grid: 4 });
        assert!(StartLine::parse("member x short_id y").is_err());
    }
}
