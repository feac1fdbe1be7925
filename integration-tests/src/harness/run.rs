//! [`FaultRun`]: one fault scenario from start to verdict — a cluster of agent
//! processes, a workload recording its history, the short-id monitor, the faults
//! the scenario injects, the recoveries it waits for, and a [`Summary`] judged by
//! every invariant of [`invariants`](super::invariants).
//!
//! On a failed invariant the run keeps its directory (configuration, data
//! directories, every member's log) and writes the history there as
//! `history.json` (replay with [`History::read_json`] and
//! [`check`](crate::checker::check)).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use cluster_service::ServiceClient;
use cluster_testkit::holds_within;
use tokio::time::Instant;

use super::client::{Workload, WorkloadSpec, WorkloadStats, final_reads};
use super::cluster::{ClusterSpec, ProcessCluster};
use super::invariants::{
    ShortIdMonitor, check_history, live_start_line_duplicates, lost_write_keys, wait_caught_up,
    wait_members_agree, wait_voters,
};
use super::proxy::Proxy;
use crate::history::{History, HistoryRecorder, Outcome};

/// How a scenario runs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// A name for messages.
    pub name: String,
    /// The cluster.
    pub cluster: ClusterSpec,
    /// The workload.
    pub workload: WorkloadSpec,
    /// How long a recovery (leader, voters, agreement, a write) may take.
    pub recovery_deadline: Duration,
}

impl RunSpec {
    /// A scenario named `name` on `cluster` with the default workload.
    pub fn new(name: impl Into<String>, cluster: ClusterSpec) -> Self {
        RunSpec {
            name: name.into(),
            cluster,
            workload: WorkloadSpec::default(),
            recovery_deadline: Duration::from_secs(60),
        }
    }
}

/// Runs blocking harness work (process starts wait on their start lines) from async code.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A scenario in progress; needs a multi-threaded tokio runtime.
#[derive(Debug)]
pub struct FaultRun {
    /// The cluster, for the scenario's faults.
    pub cluster: ProcessCluster,
    spec: RunSpec,
    recorder: HistoryRecorder,
    workload: Option<Workload>,
    monitor: Option<ShortIdMonitor>,
    faults: Vec<String>,
    recoveries: Vec<Duration>,
    problems: Vec<String>,
    started: Instant,
    /// When the last fault ended (or was injected, for one that does not end by itself).
    fault_end: Option<Instant>,
}

impl FaultRun {
    /// Starts the cluster, waits until it is settled, then starts the monitor and
    /// the workload.
    pub async fn start(spec: RunSpec) -> Result<FaultRun> {
        let cluster_spec = spec.cluster.clone();
        let cluster = blocking(|| ProcessCluster::start(cluster_spec))?;
        let recorder = HistoryRecorder::new();
        let mut run = FaultRun {
            cluster,
            spec,
            recorder,
            workload: None,
            monitor: None,
            faults: Vec::new(),
            recoveries: Vec::new(),
            problems: Vec::new(),
            started: Instant::now(),
            fault_end: None,
        };
        let deadline = run.spec.recovery_deadline;
        wait_voters(&mut run.cluster, deadline).await?;
        wait_members_agree(&mut run.cluster, deadline).await?;
        let addrs = run.cluster.service_addrs();
        let id = run.cluster.cluster_id().to_owned();
        run.monitor = Some(ShortIdMonitor::start(&addrs, &id, Duration::from_millis(200))?);
        run.workload = Some(Workload::start(&addrs, &id, run.recorder.clone(), run.spec.workload.clone())?);
        Ok(run)
    }

    /// Notes a fault the scenario injected.
    pub fn fault(&mut self, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(fault = %what, "fault injected");
        self.faults.push(what);
        self.fault_ended();
    }

    /// Notes that the last fault ended now (a heal, a resume, a restart): recovery
    /// times count from here.
    pub fn fault_ended(&mut self) {
        self.fault_end = Some(Instant::now());
    }

    /// The faults injected so far.
    pub fn faults(&self) -> &[String] {
        &self.faults
    }

    /// What the workload did so far.
    pub fn workload_stats(&self) -> WorkloadStats {
        self.workload.as_ref().map(Workload::stats).unwrap_or_default()
    }

    /// Writes acknowledged so far (sets, deletes, and compare-and-sets that
    /// replaced the value): a scenario waits on it to see the cluster progress.
    pub fn acknowledged_writes(&self) -> usize {
        let history = self.recorder.history();
        history
            .operations
            .iter()
            .filter(|op| {
                matches!(
                    op.outcome,
                    Outcome::SetOk { .. } | Outcome::DeleteOk { .. } | Outcome::CasOk { succeeded: true, .. }
                )
            })
            .count()
    }

    /// True once the workload spent its operations or its time.
    pub fn workload_finished(&self) -> bool {
        self.workload.as_ref().is_none_or(Workload::is_finished)
    }

    /// Waits for a leader the live members agree on, and returns its index.
    pub async fn wait_leader(&mut self) -> Result<usize> {
        let mut leader = None;
        let cluster = &mut self.cluster;
        holds_within(self.spec.recovery_deadline, async || {
            leader = cluster.leader().await;
            leader.is_some()
        })
        .await;
        leader.ok_or_else(|| anyhow!("no leader within {:?}", self.spec.recovery_deadline))
    }

    /// Waits until the cluster recovered from the last fault: (d) the voter count
    /// is back, (e) the live members agree on the live members, a write goes
    /// through, and every live member applied it. Returns the recovery time, counted from the end of the last fault
    /// ([`FaultRun::fault_ended`]); a recovery that does not happen within the
    /// deadline (counted from this call) is recorded as a failed invariant.
    pub async fn recover(&mut self) -> Duration {
        let start = Instant::now();
        let since = self.fault_end.take().unwrap_or(start);
        let deadline = self.spec.recovery_deadline;
        let result = async {
            wait_voters(&mut self.cluster, deadline).await?;
            wait_members_agree(&mut self.cluster, deadline.saturating_sub(start.elapsed())).await?;
            self.probe_write(deadline.saturating_sub(start.elapsed())).await?;
            wait_caught_up(&mut self.cluster, deadline.saturating_sub(start.elapsed())).await.map(|_| ())
        }
        .await;
        let took = since.elapsed();
        match result {
            Ok(()) => self.recoveries.push(took),
            Err(e) => {
                let fault = self.faults.last().cloned().unwrap_or_default();
                self.problems.push(format!("no recovery after {fault:?}: {e:#}"));
            }
        }
        took
    }

    async fn probe_write(&self, deadline: Duration) -> Result<()> {
        let mut options = crate::harness::security::client_options(self.cluster.cluster_id());
        options.op_timeout = deadline.max(Duration::from_secs(1));
        let client = ServiceClient::new(self.cluster.service_addrs(), options).map_err(|e| anyhow!("{e}"))?;
        client.set("probe", b"x".to_vec()).await.map(|_| ()).map_err(|e| anyhow!("probe write failed: {e}"))
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.fault(format!("kill m{i}"));
        self.cluster.agent(i).kill()
    }

    /// Restarts member `i` from its data directory and waits for its start line.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.fault(format!("restart m{i}"));
        blocking(|| self.cluster.restart(i))
    }

    /// Restarts member `i` from its data directory on new ports (see
    /// [`ProcessCluster::restart_on_new_ports`]).
    pub async fn restart_on_new_ports(&mut self, i: usize) -> Result<()> {
        self.fault(format!("restart m{i} on new ports"));
        blocking(|| self.cluster.restart_on_new_ports(i))
    }

    /// Stops member `i` gracefully (SIGTERM: it leaves the cluster).
    pub fn terminate(&mut self, i: usize) -> Result<()> {
        self.fault(format!("graceful stop of m{i}"));
        let timeout = Duration::from_millis(self.cluster.spec().config.leave_ms) + Duration::from_secs(30);
        let status = blocking(|| self.cluster.agent(i).terminate(timeout))?;
        if !status.success() {
            self.problems.push(format!("m{i} exited with {status} after SIGTERM"));
        }
        Ok(())
    }

    /// Starts a new member that joins the cluster (loopback clusters), and returns
    /// its index. The workload keeps its members; the invariants include the new one.
    pub async fn join(&mut self) -> Result<usize> {
        self.fault(format!("join of m{}", self.cluster.len()));
        blocking(|| self.cluster.add_member())
    }

    /// Restarts every stopped member at once and waits for their start lines.
    pub async fn restart_stopped(&mut self) -> Result<()> {
        self.fault("restart every stopped member");
        blocking(|| self.cluster.restart_stopped())
    }

    /// Pauses member `i` (SIGSTOP).
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.fault(format!("pause m{i}"));
        self.cluster.agent(i).pause()
    }

    /// Resumes member `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.fault_ended();
        self.cluster.agent(i).resume()
    }

    /// Cuts the network between groups of members (a cluster built `with_netns`).
    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<()> {
        self.fault(format!("partition {groups:?}"));
        self.cluster.partition(groups)
    }

    /// Changes the network through the proxy (a cluster built `with_proxy`):
    /// `shape` sets the rules of the links, `what` names the fault.
    pub fn shape(&mut self, what: impl Into<String>, shape: impl FnOnce(&Proxy)) -> Result<()> {
        let proxy = self
            .cluster
            .proxy()
            .ok_or_else(|| anyhow!("shaping the network needs a cluster built with_proxy()"))?;
        shape(proxy);
        self.fault(what);
        Ok(())
    }

    /// Removes every network cut (and behind the proxy, every delay and loss).
    pub fn heal(&mut self) -> Result<()> {
        self.fault_ended();
        self.cluster.heal()
    }

    /// Lets the workload run for `pace` (pacing between faults, not a correctness wait).
    pub async fn pace(&self, pace: Duration) {
        tokio::time::sleep(pace).await;
    }

    /// Stops the workload, reads every key, stops the monitor, and judges the run.
    pub async fn finish(mut self) -> Summary {
        let stats = match self.workload.take() {
            Some(workload) => workload.stop().await,
            None => WorkloadStats::default(),
        };
        // Recover first, so that the final reads see a working cluster.
        let _ = self.cluster.heal();
        self.recover().await;
        let addrs = self.cluster.service_addrs();
        let id = self.cluster.cluster_id().to_owned();
        if let Err(e) =
            final_reads(&addrs, &id, &self.recorder, stats.keys_used, self.spec.recovery_deadline).await
        {
            self.problems.push(format!("final reads: {e:#}"));
        }
        let monitor = match self.monitor.take() {
            Some(monitor) => monitor.stop().await,
            None => Default::default(),
        };
        let mut duplicates = monitor.duplicates;
        for (short_id, holders) in live_start_line_duplicates(&mut self.cluster) {
            duplicates.push(format!("live processes both report short id {short_id}: {holders:?}"));
        }
        if monitor.answered == 0 {
            self.problems.push(format!("the short-id monitor got no answer in {} polls", monitor.polls));
        }
        let history = self.recorder.history();
        let violation = check_history(&history).err();
        let lost_writes = if violation.is_some() { lost_write_keys(&history) } else { Vec::new() };
        let mut summary = Summary {
            name: self.spec.name.clone(),
            stats,
            history_ops: history.operations.len(),
            unknown: history.unknown_count(),
            faults: self.faults.len(),
            violation,
            lost_writes,
            duplicate_short_ids: duplicates,
            monitor_polls: monitor.polls,
            recoveries: self.recoveries.clone(),
            problems: self.problems.clone(),
            elapsed: self.started.elapsed(),
            evidence: None,
        };
        if !summary.is_ok() {
            summary.evidence = Some(self.keep_evidence(&history));
        }
        summary
    }

    fn keep_evidence(&mut self, history: &History) -> PathBuf {
        let dir = self.cluster.keep_dir();
        if let Err(e) = history.write_json(dir.join("history.json")) {
            eprintln!("cannot write the history to {}: {e}", dir.display());
        }
        eprintln!("{}", self.cluster.log_tails(30));
        dir
    }
}

/// The verdict and figures of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The scenario.
    pub name: String,
    /// What the workload did.
    pub stats: WorkloadStats,
    /// Operations in the history (the final reads included).
    pub history_ops: usize,
    /// Operations of unknown outcome in the history.
    pub unknown: usize,
    /// Faults injected.
    pub faults: usize,
    /// (a) The checker's violation, if any.
    pub violation: Option<String>,
    /// (b) Keys that lost an acknowledged write.
    pub lost_writes: Vec<String>,
    /// (c) Duplicate short ids seen.
    pub duplicate_short_ids: Vec<String>,
    /// Member-record polls of the monitor.
    pub monitor_polls: u64,
    /// Time to recover after each fault.
    pub recoveries: Vec<Duration>,
    /// (d), (e) and harness failures: recoveries that did not happen in time.
    pub problems: Vec<String>,
    /// The run's duration.
    pub elapsed: Duration,
    /// Where the evidence of a failure was kept.
    pub evidence: Option<PathBuf>,
}

impl Summary {
    /// True if every invariant held.
    pub fn is_ok(&self) -> bool {
        self.violation.is_none()
            && self.lost_writes.is_empty()
            && self.duplicate_short_ids.is_empty()
            && self.problems.is_empty()
    }

    /// The `q` quantile (0..=1) of the recovery times.
    pub fn recovery_quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.recoveries.clone();
        sorted.sort();
        let last = sorted.len().checked_sub(1)?;
        let index = ((last as f64) * q).round() as usize;
        sorted.get(index.min(last)).copied()
    }

    /// Panics with the summary unless every invariant held.
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()));
        writeln!(f, "scenario {}: {}", self.name, if self.is_ok() { "ok" } else { "FAILED" })?;
        writeln!(
            f,
            "  operations: {} (answered {}, failed {}, unknown {}); history {} ops, {} unknown",
            self.stats.ops,
            self.stats.ok,
            self.stats.failed,
            self.stats.unknown,
            self.history_ops,
            self.unknown
        )?;
        writeln!(f, "  faults injected: {}", self.faults)?;
        writeln!(f, "  linearizability violations: {}", usize::from(self.violation.is_some()))?;
        writeln!(f, "  lost writes (keys): {}", self.lost_writes.len())?;
        writeln!(
            f,
            "  duplicate short ids: {} (monitor polls {})",
            self.duplicate_short_ids.len(),
            self.monitor_polls
        )?;
        writeln!(
            f,
            "  recovery time: n {} p50 {} p99 {} max {}",
            self.recoveries.len(),
            ms(self.recovery_quantile(0.5)),
            ms(self.recovery_quantile(0.99)),
            ms(self.recoveries.iter().max().copied())
        )?;
        writeln!(f, "  elapsed: {:.1} s", self.elapsed.as_secs_f64())?;
        if let Some(v) = &self.violation {
            writeln!(f, "  violation: {v}")?;
        }
        for key in &self.lost_writes {
            writeln!(f, "  lost write on key {key}")?;
        }
        for d in &self.duplicate_short_ids {
            writeln!(f, "  duplicate: {d}")?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        if let Some(dir) = &self.evidence {
            writeln!(f, "  evidence kept in {} (history.json, m<i>.log)", dir.display())?;
        }
        Ok(())
    }
}
