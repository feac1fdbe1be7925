//! `carbon agent`: runs one member until SIGINT or SIGTERM; SIGHUP reloads
//! what can be reloaded and never ends it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use cluster_facade::core::keys;
use cluster_facade::{Cluster, ClusterConfig, ClusterError, decode_gossip_key};

use crate::exit::Failure;

/// Flags of `carbon agent`; each overrides the config file.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// A TOML configuration file (see the README for every field).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address (IP) every port binds on; `0.0.0.0` or `::` binds all
    /// interfaces and needs --advertise-host.
    #[arg(long)]
    pub host: Option<String>,
    /// The address (IP) others reach this member at, when --host is not it.
    #[arg(long, value_name = "IP")]
    pub advertise_host: Option<String>,
    /// The operators' HTTP API (health, metrics, JSON KV); 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
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
    /// How many members hold the raft log (voters and nonvoters); every
    /// other member is a client member.
    #[arg(long)]
    pub replicas: Option<usize>,
    /// The cluster id; members of other clusters are refused.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The gossip encryption key (base64, from `carbon keys generate`); it
    /// becomes the primary key. A keyring file already in the data directory
    /// wins over it (it holds the ring as the last rotation left it).
    #[arg(long, env = "CARBON_GOSSIP_KEY", hide_env_values = true, value_name = "KEY")]
    pub gossip_key: Option<String>,
    /// Run without the protections a member on a non-loopback address needs
    /// (mutual TLS, gossip encryption). For trusted networks and experiments only.
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Before starting, move this member's raft state aside (renamed with a
    /// timestamp, not deleted) and rejoin with an empty one, keeping the
    /// member id: what to do when the member refused to start because its
    /// raft state is corrupt (exit code 6). It does not vote until the
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
        if let Some(v) = &self.advertise_host {
            config.advertise_host = Some(v.clone());
        }
        if let Some(v) = self.http_port {
            config.http_port = Some(v);
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
        if let Some(v) = self.replicas {
            config.replicas = v;
        }
        if let Some(v) = &self.cluster_id {
            config.cluster_id = v.clone();
        }
        if let Some(key) = &self.gossip_key {
            decode_gossip_key(key).map_err(|p| Failure::usage(format!("--gossip-key: {p}")))?;
            config.gossip_keys.0.retain(|k| k.trim() != key.trim());
            config.gossip_keys.0.insert(0, key.trim().to_owned());
        }
        if let Some(files) = self.tls.files()? {
            config.tls = Some(files);
        }
        config.validate().map_err(|errs| {
            let lines: Vec<String> = errs.0.iter().map(|p| format!("  {p}")).collect();
            Failure::usage(format!("invalid configuration:\n{}", lines.join("\n")))
        })?;
        if !self.insecure {
            secure_enough(&config)?;
        }
        Ok(config)
    }
}

/// Secure by default: a member others can reach over a network encrypts its
/// gossip, or is told in one line what to pass.
fn secure_enough(config: &ClusterConfig) -> Result<(), Failure> {
    let loopback = config.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    let keyring_on_disk = config.gossip_keyring_path().is_some_and(|p| p.exists());
    let mut missing = Vec::new();
    if config.tls.is_none() && matches!(config.security, cluster_facade::rpc::Security::Plain) {
        missing.push("--tls-ca/--tls-cert/--tls-key (make them with `carbon tls init DIR`)");
    }
    if config.gossip_keys.0.is_empty() && !keyring_on_disk {
        missing.push("--gossip-key KEY (make one with `carbon keys generate`)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "host {} is not a loopback address: pass {}, or --insecure",
        config.host,
        missing.join(" and ")
    )))
}

/// Prints one line and flushes it. Whoever started us may have stopped
/// reading: that must not stop the member.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Runs the member until a signal, then leaves gracefully.
///
/// It prints a start line once it holds its short id
/// (`member <id> short_id <n> gossip <addr> raft <addr> service <addr> grid <addr> [http <addr>]`),
/// again whenever its short id changes, and `ready member <id> leader <id>`
/// once a linearizable read through the leader succeeded: from then on a
/// write can be served. After a whole-cluster restart the first line comes
/// before a quorum is back; the second only with it.
pub(crate) async fn run(args: AgentArgs) -> Result<(), Failure> {
    // Before anything else: a signal that comes while the member starts must
    // not kill it with the default action (SIGHUP's is to end the process).
    let mut signals = Signals::install().map_err(Failure::other)?;
    let config = args.config()?;
    if args.reset_raft_state {
        let report = cluster_facade::reset_raft_state(&config).map_err(|e| Failure::usage(e.to_string()))?;
        let moved = match &report.moved_to {
            Some(path) => format!("moved the old raft state to {}", path.display()),
            None => "there was no raft state".to_owned(),
        };
        tracing::warn!(reset = %report.reset_id, "raft state reset: {moved}");
        crate::tell(&format!(
            "raft state reset ({moved}); rejoining without a vote until out of the voters (reset {})",
            report.reset_id
        ));
    }
    // TLS from files: loaded here (a bad file is a usage error naming it) and
    // reloaded on SIGHUP or when the files change, for new connections.
    let mut config = config;
    let reload = tokio_util::sync::CancellationToken::new();
    let _stop_reloading = reload.clone().drop_guard();
    let reloads_tls = config.tls.is_some();
    if let Some(files) = config.tls.clone() {
        let tls = cluster_facade::rpc::Tls::from_files(files).map_err(|e| Failure::usage(e.to_string()))?;
        if tls.role() != cluster_facade::rpc::Role::Member {
            return Err(Failure::usage(
                "--tls-cert is a client certificate: a member needs a member certificate (carbon tls init)",
            ));
        }
        tls.spawn_reloader(std::time::Duration::from_secs(5), reload.clone());
        config.security = cluster_facade::rpc::Security::Tls(tls);
    }
    cluster_facade::fit_descriptors(&mut config);
    let starting = Cluster::start(config);
    tokio::pin!(starting);
    let cluster = loop {
        tokio::select! {
            started = &mut starting => break started,
            signal = signals.next() => match signal {
                Signal::Reload => hangup(reloads_tls),
                Signal::Stop(name) => {
                    // Nothing to leave yet: dropping the start stops what it began.
                    tracing::info!("{name} while starting: stopping");
                    return Ok(());
                }
            },
        }
    };
    let cluster = match cluster {
        Ok(cluster) => cluster,
        Err(ClusterError::Start { source: source @ cluster_core::Error::CorruptState { .. }, .. }) => {
            return Err(Failure::corrupt(format!("cannot start the member: {source}")));
        }
        Err(e @ ClusterError::OtherCluster { .. }) => return Err(Failure::usage(e.to_string())),
        Err(e @ ClusterError::IdentityMismatch { .. }) => {
            return Err(Failure::usage(format!("cannot start the member: {e}")));
        }
        Err(e) => return Err(Failure::other(anyhow::Error::new(e).context("cannot start the member"))),
    };
    // The lines on stdout, until a signal to stop.
    let stop = {
        let start_line = |short_id| {
            let a = cluster.addresses();
            let http = a.http.map(|h| format!(" http {h}")).unwrap_or_default();
            say(&format!(
                "member {} short_id {short_id} gossip {} raft {} service {} grid {}{http}",
                cluster.member_id(),
                a.gossip,
                a.raft,
                a.service,
                a.grid
            ));
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
        let ready = async {
            // The proxy retries across elections until its operation timeout;
            // keep asking until a leader with a quorum answers.
            loop {
                match cluster.store().consistent_get(keys::LEADER_KEY).await {
                    Ok(_) => break,
                    Err(e) => tracing::info!(error = %e, "not ready to serve writes yet"),
                }
            }
            let leader =
                cluster.consensus_status().leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
            say(&format!("ready member {} leader {leader}", cluster.member_id()));
            std::future::pending::<()>().await
        };
        tokio::pin!(announce, ready);
        loop {
            tokio::select! {
                signal = signals.next() => match signal {
                    Signal::Reload => hangup(reloads_tls),
                    Signal::Stop(name) => break name,
                },
                _ = &mut announce => {}
                _ = &mut ready => {}
            }
        }
    };
    let leave_ms = cluster.config().timeouts.leave_ms;
    tracing::info!("{stop}: leaving… (at most {leave_ms} ms; send it again to leave at once)");
    let started = std::time::Instant::now();
    let shutdown = cluster.shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            done = &mut shutdown => {
                done.context("graceful shutdown failed").map_err(Failure::other)?;
                tracing::info!(waited_ms = started.elapsed().as_millis() as u64, "left the cluster");
                return Ok(());
            }
            signal = signals.next() => match signal {
                Signal::Reload => hangup(reloads_tls),
                Signal::Stop(name) => {
                    // The operator will not wait: stop here. What is
                    // acknowledged is on disk; peers that did not hear the
                    // leave see a failure, as after a crash.
                    tracing::warn!("{name} again: leaving at once, without waiting for the peers");
                    return Ok(());
                }
            },
        }
    }
}

/// What a signal asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGINT or SIGTERM (named): leave the cluster and end.
    Stop(&'static str),
    /// SIGHUP: reload what can be reloaded; never end.
    Reload,
}

/// The signals the agent handles, installed once for its whole life.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// The next signal.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// SIGHUP: with TLS files, the reloader (which listens for it too) reloads
/// the certificates; without, there is nothing to reload, and a reload
/// signal must never end a member.
fn hangup(reloads_tls: bool) {
    if reloads_tls {
        tracing::info!("SIGHUP: reloading the TLS certificates");
    } else {
        tracing::info!("SIGHUP: nothing to reload (no TLS files); the member keeps running");
    }
}
