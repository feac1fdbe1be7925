//! The one agent-process harness: a member as a real `carbon agent` process —
//! which binary ([`binary`]), how it is started ([`AgentSpec`]), what it prints
//! ([`StartLine`], the ready line, its log), and the faults a process can
//! suffer (SIGKILL, SIGSTOP/SIGCONT, SIGTERM, a restart from its data
//! directory). Used by `cluster-facade`'s program tests and by the fault
//! scenarios of `integration-tests`.
//!
//! # Ports
//!
//! An agent started with port 0 takes ports from the OS and reports them in its
//! start line. With [`AgentSpec::ports`] set, [`Agent::restart`] passes the
//! ports of the last start explicitly, so that seeds and a workload's addresses
//! stay valid; [`Agent::restart_on_new_ports`] lets the OS choose again.
//!
//! ```no_run
//! use cluster_testkit::agent::{Agent, AgentSpec};
//!
//! let spec = AgentSpec::new("m0").arg("--cluster-id").arg("demo");
//! let mut agent = Agent::start(spec); // once it printed its start line
//! agent.wait_ready();
//! println!("service at {}", agent.service());
//! assert!(agent.stop().success());
//! ```

pub mod binary;
pub mod start_line;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cluster_core::testsuite::{DEADLINE, holds_within_blocking};

pub use binary::carbon_binary;
pub use start_line::{Ports, StartLine};

/// Where an agent's stderr (its log) goes.
#[derive(Debug, Clone, Default)]
pub enum Log {
    /// The test's own stderr.
    #[default]
    Inherit,
    /// A file, appended to across restarts.
    File(PathBuf),
    /// Kept line by line for [`Agent::wait_log`].
    Lines,
}

/// How to start one agent.
#[derive(Debug, Clone, Default)]
pub struct AgentSpec {
    /// A name for logs and messages (`m0`, `m1`, …).
    pub name: String,
    /// The `carbon` binary (`None`: [`carbon_binary`]).
    pub binary: Option<PathBuf>,
    /// The host the agent binds and is reached at (`None`: its configuration's).
    pub host: Option<IpAddr>,
    /// Its ports (0: from the OS); `None`: no port flags (its configuration's).
    /// When set, a restart keeps the ports of the last start line.
    pub ports: Option<Ports>,
    /// Gossip addresses of members to join.
    pub seeds: Vec<String>,
    /// Its data directory (member id and raft state); `None`: as configured
    /// (in memory by default, so a restart is a new member).
    pub data_dir: Option<PathBuf>,
    /// The configuration file (`None`: the defaults and the flags).
    pub config_file: Option<PathBuf>,
    /// More arguments for every start (security flags, the cluster id, …).
    pub args: Vec<String>,
    /// Where its stderr goes.
    pub log: Log,
    /// A command the agent runs under, e.g. `ip netns exec <ns>` or
    /// `sh -c 'ulimit -n 600 && exec "$0" "$@"'` (empty: none). The wrapper
    /// gets the binary and its arguments after its own and must exec the
    /// agent, so that signals reach it by the child's pid.
    pub wrapper: Vec<String>,
}

impl AgentSpec {
    /// An agent named `name` with the defaults: the workspace's binary, its
    /// configuration's ports, stderr inherited.
    pub fn new(name: impl Into<String>) -> Self {
        AgentSpec { name: name.into(), ..AgentSpec::default() }
    }

    /// This binary instead of [`carbon_binary`] (in `cluster-facade`'s tests:
    /// `env!("CARGO_BIN_EXE_carbon")`).
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// With this configuration file.
    pub fn config(mut self, config: impl Into<PathBuf>) -> Self {
        self.config_file = Some(config.into());
        self
    }

    /// Joining the members at these gossip addresses.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Its stderr kept line by line for [`Agent::wait_log`].
    pub fn logged(mut self) -> Self {
        self.log = Log::Lines;
        self
    }

    /// Run under `wrapper` (see [`AgentSpec::wrapper`]).
    pub fn wrapper<S: Into<String>>(mut self, wrapper: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }
}

/// Every line `from` gives, sent to the receiver as it comes (so the agent
/// never blocks on a full pipe).
fn forward_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// A running (or stopped) `carbon agent` process; killed on drop.
#[derive(Debug)]
pub struct Agent {
    spec: AgentSpec,
    child: Option<Child>,
    start_line: Option<StartLine>,
    stdout: Option<mpsc::Receiver<String>>,
    log: Option<mpsc::Receiver<String>>,
    /// Stdout lines [`Agent::wait_ready`] read past, for [`Agent::start_line`].
    skipped: Mutex<Vec<String>>,
    ready: AtomicBool,
    paused: bool,
}

impl Agent {
    /// Spawns the agent; [`Agent::wait_started`] waits for its start line.
    pub fn spawn(spec: AgentSpec) -> Result<Agent> {
        let mut agent = Agent {
            spec,
            child: None,
            start_line: None,
            stdout: None,
            log: None,
            skipped: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            paused: false,
        };
        agent.spawn_process(&[])?;
        Ok(agent)
    }

    /// Spawns the agent and waits for its start line; panics if it prints none.
    pub fn start(spec: AgentSpec) -> Agent {
        let mut agent = Agent::spawn(spec).expect("carbon agent starts");
        if let Err(e) = agent.wait_started(DEADLINE) {
            panic!("{e:#}");
        }
        agent
    }

    /// `n` agents of `spec`, the first forming the cluster and the others
    /// seeded on it, each once it printed its start line.
    pub fn start_cluster(spec: &AgentSpec, n: usize) -> Vec<Agent> {
        let first = Agent::start(AgentSpec { name: format!("{}0", spec.name), ..spec.clone() });
        let seed = first.gossip();
        let mut agents = vec![first];
        for i in 1..n {
            let name = format!("{}{i}", spec.name);
            agents.push(Agent::start(AgentSpec { name, ..spec.clone() }.seeds([seed.clone()])));
        }
        agents
    }

    /// Spawns the agent with `extra` arguments after the usual ones.
    fn spawn_process(&mut self, extra: &[&str]) -> Result<()> {
        let spec = &self.spec;
        let binary = match &spec.binary {
            Some(binary) => binary.clone(),
            None => carbon_binary()?,
        };
        if let Some(dir) = &spec.data_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
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
        if let Some(host) = spec.host {
            cmd.args(["--host", &host.to_string()]);
        }
        if let Some(ports) = spec.ports {
            cmd.args(["--gossip-port", &ports.gossip.to_string()])
                .args(["--raft-port", &ports.raft.to_string()])
                .args(["--service-port", &ports.service.to_string()])
                .args(["--grid-port", &ports.grid.to_string()]);
        }
        if let Some(dir) = &spec.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        for seed in &spec.seeds {
            cmd.args(["--seed", seed]);
        }
        cmd.args(&spec.args).args(extra);
        let stderr = match &spec.log {
            Log::Inherit => Stdio::inherit(),
            Log::Lines => Stdio::piped(),
            Log::File(path) => {
                if std::env::var_os("RUST_LOG").is_none() {
                    cmd.env("RUST_LOG", "warn,openraft=error");
                }
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                Stdio::from(file)
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {} ({})", spec.name, binary.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout of {}", spec.name))?;
        self.stdout = Some(forward_lines(stdout));
        self.log = child.stderr.take().map(forward_lines);
        self.child = Some(child);
        self.start_line = None;
        self.skipped.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
        self.ready = AtomicBool::new(false);
        self.paused = false;
        Ok(())
    }

    /// Notes what a stdout line says: a start line (the first, or a new
    /// short id) or the ready line.
    fn read_line(&mut self, line: &str) -> Result<()> {
        if line.starts_with("member ") {
            self.start_line = Some(StartLine::parse(line)?);
        } else if line.starts_with("ready ") {
            self.ready.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the start line (at once if already read).
    pub fn wait_started(&mut self, timeout: Duration) -> Result<&StartLine> {
        self.read_skipped();
        let deadline = Instant::now() + timeout;
        while self.start_line.is_none() {
            let Some(rx) = self.stdout.as_ref() else { break };
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.read_line(&line)?,
                Err(e) => {
                    let status = self.try_wait();
                    bail!(
                        "{} printed no start line within {timeout:?} ({e}; exit status {status:?}); log: {:?}",
                        self.spec.name,
                        self.spec.log
                    );
                }
            }
        }
        let started =
            self.start_line.as_ref().ok_or_else(|| anyhow!("{} was never started", self.spec.name))?;
        // Later restarts keep the ports and the seeds stay valid.
        if self.spec.ports.is_some() {
            self.spec.ports = Some(started.ports());
        }
        Ok(started)
    }

    /// Waits for the line that says the member can serve a write; panics
    /// after the kit's deadline.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        let rx = self.stdout.as_ref().expect("the agent runs");
        while !self.ready.load(Ordering::SeqCst) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("ready ") => self.ready.store(true, Ordering::SeqCst),
                Ok(line) => self.skipped.lock().unwrap_or_else(|p| p.into_inner()).push(line),
                Err(e) => panic!("{}: no ready line: {e}", self.spec.name),
            }
        }
    }

    /// Reads the lines [`Agent::wait_ready`] read past.
    fn read_skipped(&mut self) {
        let skipped = std::mem::take(self.skipped.get_mut().unwrap_or_else(|p| p.into_inner()));
        for line in skipped {
            // A line that does not parse leaves the last good one.
            let _ = self.read_line(&line);
        }
    }

    /// Waits for a log line containing `text` (the agent must log to
    /// [`Log::Lines`]); returns it. Lines before it are dropped.
    pub fn wait_log(&self, text: &str) -> String {
        let log = self.log.as_ref().expect("an agent started with Log::Lines");
        let deadline = Instant::now() + DEADLINE;
        loop {
            match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(e) => panic!("{}: no log line with {text:?}: {e}", self.spec.name),
            }
        }
    }

    /// The last start line read, if any: the agent prints a new one when its
    /// short id changes.
    pub fn start_line(&mut self) -> Option<&StartLine> {
        self.read_skipped();
        let pending: Vec<String> = self.stdout.as_ref().map(|rx| rx.try_iter().collect()).unwrap_or_default();
        for line in pending {
            // A line that does not parse leaves the last good one.
            let _ = self.read_line(&line);
        }
        self.start_line.as_ref()
    }

    /// The last start line read, without looking for a newer one (the member
    /// id and the addresses never change within one run of the agent).
    pub fn known_start_line(&self) -> Option<&StartLine> {
        self.start_line.as_ref()
    }

    fn started(&self) -> &StartLine {
        self.start_line
            .as_ref()
            .unwrap_or_else(|| panic!("{} has not printed its start line", self.spec.name))
    }

    /// Its member id (once started).
    pub fn member_id(&self) -> String {
        self.started().member_id.clone()
    }

    /// Its service address `host:port` (once started).
    pub fn service(&self) -> String {
        self.started().service.to_string()
    }

    /// Its gossip address `host:port` (once started).
    pub fn gossip(&self) -> String {
        self.started().gossip.to_string()
    }

    /// Its raft address `host:port` (once started).
    pub fn raft(&self) -> String {
        self.started().raft.to_string()
    }

    /// Its grid address `host:port` (once started).
    pub fn grid(&self) -> String {
        self.started().grid.to_string()
    }

    /// Its HTTP address `host:port`, when it serves the HTTP API.
    pub fn http(&self) -> Option<String> {
        self.started().http.map(|a| a.to_string())
    }

    /// The service address `host:port`, once the agent has started.
    pub fn service_addr(&self) -> Option<String> {
        self.start_line.as_ref().map(|s| s.service.to_string())
    }

    /// The spec (its ports are those of the last start line once read).
    pub fn spec(&self) -> &AgentSpec {
        &self.spec
    }

    /// Replaces the seeds used by the next restart.
    pub fn set_seeds(&mut self, seeds: Vec<String>) {
        self.spec.seeds = seeds;
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status if it ended, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// True while the process exists (paused counts as running).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// True while the process is stopped with [`Agent::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Resident memory of the process in bytes (Linux), while it runs.
    pub fn resident_memory(&self) -> Option<u64> {
        cluster_core::testsuite::net::resident_memory_of(self.pid()?)
    }

    /// Sends signal `name` (`TERM`, `HUP`, `STOP`, …) to the process.
    pub fn signal(&self, name: &str) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("{} is not running", self.spec.name))?;
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{name} {pid} ({}) failed: {status}", self.spec.name);
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
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Agent::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal("CONT")?;
        self.paused = false;
        Ok(())
    }

    /// SIGTERM (a graceful leave), then waits up to `timeout` for the exit; SIGKILL after.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if self.paused {
            self.resume()?;
        }
        self.signal("TERM")?;
        self.await_exit(timeout, &format!("stop within {timeout:?} of SIGTERM"))
    }

    /// SIGTERM, then waits for the exit (the kit's deadline); panics if it
    /// does not stop.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate(DEADLINE).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts the process again from its data directory on ports from the OS (new
    /// ones, most likely). Wait with [`Agent::wait_started`].
    pub fn restart_on_new_ports(&mut self) -> Result<()> {
        self.kill()?;
        if self.spec.ports.is_some() {
            self.spec.ports = Some(Ports::default());
        }
        self.spawn_process(&[])
    }

    /// Starts the process again from its data directory, on the ports of its last
    /// start (killing it first if it still runs). Wait with [`Agent::wait_started`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_process(&[])
    }

    /// Like [`Agent::restart`], with `extra` arguments for this run only
    /// (e.g. `--reset-raft-state`).
    pub fn restart_with_args(&mut self, extra: &[&str]) -> Result<()> {
        self.kill()?;
        self.spawn_process(extra)
    }

    /// Waits up to `timeout` for the process to end by itself (a refused
    /// start) and returns its exit status; kills it if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.await_exit(timeout, &format!("exit within {timeout:?}"))
    }

    /// Waits until the process exits or `timeout` passes; kills it then and
    /// fails with "<name> did not <what>".
    fn await_exit(&mut self, timeout: Duration, what: &str) -> Result<ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("{} is not running", self.spec.name))?;
        let mut status = None;
        let exited = holds_within_blocking(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(status) if exited => Ok(status),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not {what}", self.spec.name)
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            // A stopped agent must run again to die of SIGKILL cleanly.
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The flags that give a command the certificate `name` (`member-1`,
/// `client`, …) of the `carbon tls init` directory `dir`, and its CA.
pub fn tls_flags(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--tls-cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--tls-key".into(),
        dir.join(format!("{name}-key.pem")).display().to_string(),
    ]
}
