//! `carbon-bench`: Carbon Grid Cluster side by side with etcd and serf (issue 9).
//! Run through `bash bench/run.sh`, which builds everything, installs the peers
//! and passes the paths; see the README's "Benchmarks" section.

mod chart;
mod failover;
mod gossip;
mod idle;
mod join;
mod kv;
mod procs;
mod profile;
mod report;
mod scale;
mod scale_report;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use crate::report::Report;

#[derive(Debug, Parser)]
#[command(about = "Carbon Grid Cluster vs etcd and serf, on loopback")]
struct Args {
    /// The release `carbon` binary.
    #[arg(long)]
    carbon: PathBuf,
    /// Where results.md and results.json go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A scratch directory for data dirs and logs (a fresh temporary one by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Repetitions of every figure.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per load point (figures 1 and 2).
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Figure families to run (comma separated): idle, kv, failover, join, gossip, scale; and
    /// profile (strace of the durable write path, not in the default run).
    #[arg(long, default_value = "idle,kv,failover,join,gossip,scale")]
    only: String,
    /// Scale family: cluster sizes of `carbon agent` processes with a bounded
    /// replica set (`--scale-replicas`), comma separated.
    #[arg(long, default_value = "3,5,10,30,50,100")]
    scale_sizes: String,
    /// Scale family: the replica bound (`carbon agent --replicas`) of `--scale-sizes`.
    #[arg(long, default_value_t = 5)]
    scale_replicas: usize,
    /// Scale family: cluster sizes where every member is a replica (the
    /// contrast curve), comma separated; empty for none.
    #[arg(long, default_value = "3,10,30,50")]
    scale_all_sizes: String,
    /// Scale family: sizes of the in-process gossip clusters (comma separated).
    #[arg(long, default_value = "10,50,100,500,1000")]
    gossip_sizes: String,
    /// Scale family: gossip over `udp` (loopback sockets) or `channel` (chitchat's in-memory transport).
    #[arg(long, default_value = "udp")]
    gossip_transport: String,
    /// Failover family: also measure under busy loops on every core, and count spurious elections.
    #[arg(long)]
    cpu_hog: bool,
    /// Failover family: the window in which spurious elections are counted under the CPU hog.
    #[arg(long, default_value_t = 180.0)]
    hog_secs: f64,
    /// Failover family: other raft timing to measure too, `heartbeat,min,max` in ms, several separated by `;`.
    #[arg(long, default_value = "")]
    raft_timing: String,
    /// The command lines that produced this run, recorded in the results.
    #[arg(long = "command")]
    commands: Vec<String>,
    /// Machine and version facts as JSON (collected by run.sh).
    #[arg(long, default_value = "{}")]
    machine: String,
    #[arg(long, default_value = "{}")]
    versions: String,
}

/// What every figure family shares.
pub struct Ctx {
    pub carbon: PathBuf,
    /// Where results.md goes (the scale charts go beside it).
    pub out: PathBuf,
    pub scale_sizes: Vec<usize>,
    /// The replica bound of `scale_sizes`.
    pub scale_replicas: usize,
    /// Sizes where every member is a replica.
    pub scale_all_sizes: Vec<usize>,
    pub gossip_sizes: Vec<usize>,
    pub gossip_transport: String,
    pub cpu_hog: bool,
    pub hog_secs: f64,
    pub raft_timings: Vec<failover::Timing>,
    pub dir: PathBuf,
    pub reps: usize,
    pub secs: f64,
    pub have_etcd: bool,
    pub have_serf: bool,
    pub report: Report,
    started: Instant,
}

impl Ctx {
    pub fn log(&self, msg: impl AsRef<str>) {
        eprintln!("[{:>6.1} s] {}", self.started.elapsed().as_secs_f64(), msg.as_ref());
    }

    pub fn problem(&mut self, msg: String) {
        self.log(format!("PROBLEM: {msg}"));
        self.report.problems.push(msg);
    }
}

fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tmp;
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let carbon = std::fs::canonicalize(&args.carbon).with_context(|| format!("{}", args.carbon.display()))?;
    let sizes = |s: &str, what: &str| -> Result<Vec<usize>> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<usize>().with_context(|| format!("{what}: {x:?}")))
            .collect()
    };
    let mut raft_timings = Vec::new();
    for t in args.raft_timing.split(';').map(str::trim).filter(|t| !t.is_empty()) {
        let v = sizes(t, "--raft-timing")?;
        match v[..] {
            [h, a, b] if h < a && a < b => raft_timings.push((h as u64, a as u64, b as u64)),
            _ => {
                anyhow::bail!("--raft-timing {t:?}: want heartbeat,min,max in ms with heartbeat < min < max")
            }
        }
    }
    if !matches!(args.gossip_transport.as_str(), "udp" | "channel") {
        anyhow::bail!("--gossip-transport: udp or channel, not {:?}", args.gossip_transport);
    }
    let mut ctx = Ctx {
        carbon,
        out: args.out.clone(),
        scale_sizes: sizes(&args.scale_sizes, "--scale-sizes")?,
        scale_replicas: args.scale_replicas.max(3),
        scale_all_sizes: sizes(&args.scale_all_sizes, "--scale-all-sizes")?,
        gossip_sizes: sizes(&args.gossip_sizes, "--gossip-sizes")?,
        gossip_transport: args.gossip_transport.clone(),
        cpu_hog: args.cpu_hog,
        hog_secs: args.hog_secs.max(1.0),
        raft_timings,
        dir,
        reps: args.reps.max(1),
        secs: args.secs,
        have_etcd: procs::have("etcd"),
        have_serf: procs::have("serf"),
        report: Report {
            started: now(),
            machine: serde_json::from_str(&args.machine).context("--machine")?,
            versions: serde_json::from_str(&args.versions).context("--versions")?,
            commands: args.commands.clone(),
            ..Report::default()
        },
        started: Instant::now(),
    };
    if !ctx.have_etcd {
        ctx.problem("etcd is not installed: its figures are not measured".into());
    }
    if !ctx.have_serf {
        ctx.problem("serf is not installed: its figures are not measured".into());
    }
    ctx.report.settings = vec![
        format!("{} repetitions of every figure; {} s per load point after a 0.3 s warm-up", ctx.reps, ctx.secs),
        "loopback only (127.0.0.1); keys 32 bytes, values 64 bytes; N clients = N concurrent tasks sharing one client \
         (one ServiceClient / one etcd-client Client)"
            .into(),
        "ours: 3 `carbon agent` processes (release build), default raft settings (heartbeat 50 ms, election \
         150–300 ms), gossip interval 100 ms, phi 8; durable = --data-dir on ext4"
            .into(),
        format!(
            "etcd: 3 processes, data on the same ext4, heartbeat {} ms, election timeout {} ms (defaults)",
            procs::ETCD_HEARTBEAT_MS,
            procs::ETCD_ELECTION_MS
        ),
        "serf: `serf agent -profile lan` processes all joining the first; views polled over each agent's RPC \
         port every 5 ms; ours: cluster-gossip members in the bench process, polled every 5 ms"
            .into(),
    ];
    let only: Vec<&str> = args.only.split(',').map(str::trim).collect();
    let families: [(&str, &str); 7] = [
        ("idle", "6 idle"),
        ("kv", "1–2 kv"),
        ("failover", "3 failover"),
        ("join", "4 join"),
        ("gossip", "5 gossip"),
        ("scale", "7 scale"),
        ("profile", "8 profile"),
    ];
    for (name, title) in families {
        if !only.contains(&name) {
            continue;
        }
        ctx.log(format!("figure family {title}"));
        let r = match name {
            "idle" => idle::run(&mut ctx).await,
            "kv" => kv::run(&mut ctx).await,
            "failover" => failover::run(&mut ctx).await,
            "join" => join::run(&mut ctx).await,
            "scale" => scale::run(&mut ctx).await,
            "profile" => profile::run(&mut ctx).await,
            _ => gossip::run(&mut ctx).await,
        };
        if let Err(e) = r {
            ctx.problem(format!("figure family {title} stopped: {e:#}"));
        }
    }
    ctx.report.finished = now();
    ctx.report.write(&args.out)?;
    ctx.log(format!("wrote {}/results.md and results.json", args.out.display()));
    print!("{}", ctx.report.markdown());
    Ok(())
}
