//! `carbon agent`: runs one member until SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use cluster_facade::{Cluster, ClusterConfig, ClusterError};

use crate::exit::Failure;

/// Flags of `carbon agent`; each overrides the config file.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// A TOML configuration file (see the README for every field).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The host (IP address) others reach this member at.
    #[arg(long)]
    pub host: Option<String>,
    /// Gossip (UDP) port; 0 picks a free one.
    #[arg(long)]
    pub gossip_port: Option<u16>,
    /// Raft RPC (TCP) port; 0 picks a free one.
    #[arg(long)]
    pub raft_port: Option<u16>,
    /// Forwarding-service (TCP) port; 0 picks a free one.
    #[arg(long)]
    pub service_port: Option<u16>,
    /// The data grid's port; 0 picks a free one.
    #[arg(long)]
    pub grid_port: Option<u16>,
    /// Gossip address of a member to join (repeatable).
    #[arg(long = "seed", value_name = "ADDR")]
    pub seeds: Vec<String>,
    /// Where the member id and raft state are kept; without it, in memory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How many voters the cluster keeps.
    #[arg(long)]
    pub num_voters: Option<usize>,
    /// The cluster id; members of other clusters are refused.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Before starting, move this member's raft state aside (renamed with a
    /// timestamp, not deleted) and rejoin with an empty one, keeping the
    /// member id: what to do when the member refused to start because its
    /// raft state is corrupt (exit code 5). It does not vote until the
    /// leader has taken it out of the voters; see docs/recovery.md.
    #[arg(long)]
    pub reset_raft_state: bool,
}

impl AgentArgs {
    /// The configuration: the file, then the flags over it, then validated.
    pub(crate) fn config(&self) -> Result<ClusterConfig, Failure> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str::<ClusterConfig>(&text)
                    .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
            }
            None => ClusterConfig::default(),
        };
        if let Some(v) = &self.host {
            config.host = v.clone();
        }
        if let Some(v) = self.gossip_port {
            config.gossip_port = v;
        }
        if let Some(v) = self.raft_port {
            config.raft_port = v;
        }
        if let Some(v) = self.service_port {
            config.service_port = v;
        }
        if let Some(v) = self.grid_port {
            config.grid_port = v;
        }
        if !self.seeds.is_empty() {
            config.seeds = self.seeds.clone();
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = Some(v.clone());
        }
        if let Some(v) = self.num_voters {
            config.num_voters = v;
        }
        if let Some(v) = &self.cluster_id {
            config.cluster_id = v.clone();
        }
        config.validate().map_err(|errs| {
            let lines: Vec<String> = errs.0.iter().map(|p| format!("  {p}")).collect();
            Failure::usage(format!("invalid configuration:\n{}", lines.join("\n")))
        })?;
        Ok(config)
    }
}

/// Runs the member until a signal, then leaves gracefully.
pub(crate) async fn run(args: AgentArgs) -> Result<(), Failure> {
    let config = args.config()?;
    if args.reset_raft_state {
        let report = cluster_facade::reset_raft_state(&config).map_err(|e| Failure::usage(e.to_string()))?;
        let moved = match &report.moved_to {
            Some(path) => format!("moved the old raft state to {}", path.display()),
            None => "there was no raft state".to_owned(),
        };
        tracing::warn!(reset = %report.reset_id, "raft state reset: {moved}");
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "carbon: raft state reset ({moved}); rejoining without a vote until out of the voters (reset {})",
            report.reset_id
        );
    }
    let cluster = match Cluster::start(config).await {
        Ok(cluster) => cluster,
        Err(ClusterError::Start { source: source @ cluster_core::Error::CorruptState { .. }, .. }) => {
            return Err(Failure::corrupt(format!("cannot start the member: {source}")));
        }
        Err(e) => return Err(Failure::other(anyhow::Error::new(e).context("cannot start the member"))),
    };
    let start_line = |short_id| {
        let a = cluster.addresses();
        let line = format!(
            "member {} short_id {short_id} gossip {} raft {} service {} grid {}",
            cluster.member_id(),
            a.gossip,
            a.raft,
            a.service,
            a.grid
        );
        // Whoever started us may have stopped reading: that must not stop the member.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let mut printed = cluster.short_id();
    start_line(printed);
    // A member away longer than the reap timeout gets a new short id when it
    // is back: say so in the same form, so scripts always know the current one.
    let mut short_id = cluster.watch_short_id();
    let announce = async {
        while short_id.changed().await.is_ok() {
            let now = *short_id.borrow_and_update();
            if let Some(id) = now.filter(|id| *id != printed) {
                printed = id;
                start_line(id);
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        signal = wait_for_signal() => signal.map_err(Failure::other)?,
        _ = announce => {}
    }
    tracing::info!("signal received: leaving the cluster");
    cluster.shutdown().await.context("graceful shutdown failed").map_err(Failure::other)?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
