//! Figure 7: how cost grows with the cluster (issue 17).
//!
//! Raft: for each size in `--scale-sizes` (default 3, 10, 30, 50), that many
//! `carbon agent` processes on loopback (durable, 3 voters, the rest
//! nonvoters, i.e. raft learners that receive every entry): durable write
//! throughput and latency with 16 clients at the leader, the CPU of the leader,
//! of a follower voter and of a nonvoter over each load window
//! (`/proc/<pid>/stat`), resident memory of every member (VmRSS), and the time
//! one more agent takes from spawn to holding its short id.
//!
//! Gossip: for each size in `--gossip-sizes` (default 10, 50, 100),
//! `cluster-gossip` members in this one process (100 agent processes do not fit
//! the machine): over real UDP on loopback by default, or chitchat's in-memory
//! `ChannelTransport` (`--gossip-transport channel`). Convergence, failure
//! detection and graceful leave, as in figure 5.
//!
//! Output: rows of the main table, a pivot table (one column per size) as its
//! own section of results.md, and one PNG chart per curve next to it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use cluster_gossip::{ChannelTransport, GossipTransport};

use crate::Ctx;
use crate::chart::{self, Labels};
use crate::gossip::{GOSSIP_INTERVAL, ours_once_with};
use crate::idle::{TICKS_PER_S, cpu_ticks, rss_mib};
use crate::kv::{Kv, Op, drive};
use crate::procs::CarbonCluster;
use crate::report::{Better, Measured, Row};
use crate::stats::Summary;

/// Clients of the write load at every size.
const CLIENTS: usize = 16;

/// What one cluster size measured; each Vec holds one sample per repetition,
/// except `rss` (one per member).
#[derive(Default)]
struct Sized {
    ops: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    leader_cpu: Vec<f64>,
    /// Leader CPU time per acknowledged write, µs: what the leader spends per
    /// write whether or not it shares its cores with the other members.
    leader_us_per_write: Vec<f64>,
    /// CPU time of all members together per acknowledged write, µs.
    cluster_us_per_write: Vec<f64>,
    voter_cpu: Vec<f64>,
    nonvoter_cpu: Vec<f64>,
    rss: Vec<f64>,
    leader_rss: Vec<f64>,
    join: Vec<f64>,
    errors: u64,
    failure: Option<String>,
}

/// Gossip figures of one size.
#[derive(Default)]
struct GossipSized {
    converge: Vec<f64>,
    failed: Vec<f64>,
    left: Vec<f64>,
    failure: Option<String>,
}

/// CPU % of one core of each pid between two tick readings.
fn cpu_pct(before: &[Option<u64>], pids: &[u32], secs: f64) -> Vec<Option<f64>> {
    pids.iter()
        .zip(before)
        .map(|(&pid, b)| {
            let a = cpu_ticks(pid).ok()?;
            Some(a.saturating_sub((*b)?) as f64 / TICKS_PER_S / secs * 100.0)
        })
        .collect()
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

async fn one_size(ctx: &Ctx, n: usize, out: &mut Sized) -> Result<()> {
    let t = Instant::now();
    let mut c = CarbonCluster::start(&ctx.carbon, &ctx.dir, n, true, &format!("sc{n}")).await?;
    c.wait_members(n, Duration::from_secs(60 + 2 * n as u64)).await?;
    ctx.log(format!("scale n={n}: {n} agents up and in raft after {:.1} s", t.elapsed().as_secs_f64()));
    let leader = c.leader().await?;
    let kv = Kv::Ours(c.client(&[leader])?);
    let pids: Vec<u32> = c.agents.iter().map(|a| a.pid().unwrap_or(0)).collect();
    let status = c.client(&[leader])?.status_of(&c.agents[leader].service).await?;
    let is_voter = |i: usize| status.voters.keys().any(|id| id.to_string() == c.agents[i].member_id);
    for rep in 0..ctx.reps {
        let before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p).ok()).collect();
        let t = Instant::now();
        let point = drive(&kv, Op::Write, CLIENTS, ctx.secs).await?;
        let cpu = cpu_pct(&before, &pids, t.elapsed().as_secs_f64());
        ctx.log(format!("scale n={n} rep {rep}: {point:?}, leader CPU {:?} %", cpu[leader]));
        if point.ops_per_s > 0.0 {
            out.ops.push(point.ops_per_s);
            out.p50.push(point.p50_ms);
            out.p99.push(point.p99_ms);
        }
        out.errors += point.errors;
        if let Some(l) = cpu[leader] {
            out.leader_cpu.push(l);
            if point.ops_per_s > 0.0 {
                out.leader_us_per_write.push(l / 100.0 * 1e6 / point.ops_per_s);
                let all: f64 = cpu.iter().flatten().sum();
                out.cluster_us_per_write.push(all / 100.0 * 1e6 / point.ops_per_s);
            }
        }
        let others = |voter: bool| {
            cpu.iter()
                .enumerate()
                .filter(move |&(i, _)| i != leader && is_voter(i) == voter)
                .filter_map(|(_, c)| *c)
        };
        out.voter_cpu.extend(mean(others(true)));
        out.nonvoter_cpu.extend(mean(others(false)));
    }
    for (i, &pid) in pids.iter().enumerate() {
        if let Ok(r) = rss_mib(pid) {
            out.rss.push(r);
            if i == leader {
                out.leader_rss.push(r);
            }
        }
    }
    for rep in 0..ctx.reps {
        let took = c.add().await.context("joining agent")?;
        ctx.log(format!("scale n={n} join rep {rep}: {:.3} s", took.as_secs_f64()));
        out.join.push(took.as_secs_f64());
        let last = c.agents.len() - 1;
        c.leave(last).await?;
        c.wait_members(n, Duration::from_secs(60)).await.context("after the joiner left")?;
    }
    Ok(())
}

async fn gossip_size(n: usize, reps: usize, transport: &str, out: &mut GossipSized) {
    // Polling every member's view costs CPU that gossip needs at 100 members.
    let poll = if n > 30 { Duration::from_millis(20) } else { Duration::from_millis(5) };
    for rep in 0..reps {
        let t = match transport {
            "channel" => GossipTransport::Channel(ChannelTransport::with_mtu(65_507)),
            _ => GossipTransport::Udp,
        };
        let tag = format!("scale-{rep}");
        match tokio::time::timeout(Duration::from_secs(180), ours_once_with(n, &tag, t, poll, None)).await {
            Ok(Ok((c, f, l))) => {
                out.converge.push(c);
                out.failed.push(f);
                out.left.push(l);
            }
            Ok(Err(e)) => out.failure = Some(format!("{e:#}")),
            Err(_) => out.failure = Some("took over 180 s".into()),
        }
    }
}

fn measured(v: &[f64], failure: &Option<String>, what: &str) -> Measured {
    match (v.is_empty(), failure) {
        (true, Some(f)) => Measured::NotMeasured(f.clone()),
        _ => Measured::from_samples(v, what),
    }
}

/// One curve: its file, labels, unit, and the samples per x.
struct Curve {
    file: &'static str,
    metric: &'static str,
    unit: &'static str,
    better: Better,
    spread: &'static str,
    points: Vec<(usize, Measured)>,
}

fn cell(m: &Measured) -> String {
    match m {
        Measured::Value(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
        Measured::NotMeasured(why) if why == NONE => NONE.to_string(),
        Measured::NotMeasured(why) => format!("not measured: {why}"),
    }
}

/// A cell with nothing to measure (no nonvoter in a cluster of 3).
const NONE: &str = "—";

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The pivot table of `curves` (one column per size) and the chart links.
fn section(title: &str, intro: &str, curves: &[Curve], charts: &[(String, Result<()>)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{intro}\n");
    let mut sizes: Vec<usize> = curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let _ = write!(md, "| {title} | unit |");
    for s in &sizes {
        let _ = write!(md, " {s} members |");
    }
    let _ = write!(md, "\n| --- | --- |");
    for _ in &sizes {
        let _ = write!(md, " --- |");
    }
    md.push('\n');
    for c in curves {
        let _ = write!(md, "| {} | {} |", c.metric, c.unit);
        for s in &sizes {
            let v = c.points.iter().find(|p| p.0 == *s).map_or_else(|| "—".to_string(), |p| cell(&p.1));
            let _ = write!(md, " {v} |");
        }
        md.push('\n');
    }
    md.push('\n');
    for (file, r) in charts {
        match r {
            Ok(()) => {
                let _ = writeln!(md, "- [{file}]({file})");
            }
            Err(e) => {
                let _ = writeln!(md, "- {file}: not drawn: {e:#}");
            }
        }
    }
    md
}

/// One chart per curve that has at least one measured point.
fn draw(out: &Path, curves: &[Curve], x: &str) -> Vec<(String, Result<()>)> {
    curves
        .iter()
        .filter(|c| c.points.iter().any(|p| matches!(p.1, Measured::Value(_))))
        .map(|c| {
            let points: Vec<chart::Point> = c
                .points
                .iter()
                .filter_map(|(n, m)| match m {
                    Measured::Value(Summary { median, min, max, .. }) => {
                        Some(chart::Point { x: *n as f64, median: *median, min: *min, max: *max })
                    }
                    Measured::NotMeasured(_) => None,
                })
                .collect();
            let y = format!("{} ({})", c.metric, c.unit);
            let labels = Labels { title: c.metric, x, y: &y, spread: c.spread };
            let r = std::fs::create_dir_all(out)
                .map_err(anyhow::Error::from)
                .and_then(|()| chart::line(&out.join(c.file), &labels, &points));
            (c.file.to_string(), r)
        })
        .collect()
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let sizes = ctx.scale_sizes.clone();
    let mut raft: Vec<(usize, Sized)> = Vec::new();
    for &n in &sizes {
        let mut s = Sized::default();
        let budget =
            Duration::from_secs(240 + 6 * n as u64) + Duration::from_secs_f64(ctx.secs * ctx.reps as f64);
        match tokio::time::timeout(budget, one_size(ctx, n, &mut s)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => s.failure = Some(format!("{e:#}")),
            Err(_) => s.failure = Some(format!("took over {budget:?}")),
        }
        if let Some(f) = &s.failure {
            ctx.problem(format!("scale n={n}: {f}"));
        }
        raft.push((n, s));
    }
    let gossip_sizes = ctx.gossip_sizes.clone();
    let transport = ctx.gossip_transport.clone();
    let mut gossip: Vec<(usize, GossipSized)> = Vec::new();
    for &n in &gossip_sizes {
        let mut g = GossipSized::default();
        gossip_size(n, ctx.reps, &transport, &mut g).await;
        ctx.log(format!(
            "scale gossip n={n}: {:?} / {:?} / {:?} {:?}",
            g.converge, g.failed, g.left, g.failure
        ));
        if let Some(f) = &g.failure {
            ctx.problem(format!("scale gossip n={n}: {f}"));
        }
        gossip.push((n, g));
    }

    let per_rep = "median, bars min–max over repetitions";
    let curve = |file, metric, unit, better, spread, f: &dyn Fn(&Sized) -> &Vec<f64>| Curve {
        file,
        metric,
        unit,
        better,
        spread,
        points: raft.iter().map(|(n, s)| (*n, measured(f(s), &s.failure, metric))).collect(),
    };
    let mut raft_curves = vec![
        curve(
            "scale-write-throughput.png",
            "durable write throughput, 16 clients",
            "ops/s",
            Better::Higher,
            per_rep,
            &|s| &s.ops,
        ),
        curve("scale-write-p50.png", "durable write p50, 16 clients", "ms", Better::Lower, per_rep, &|s| {
            &s.p50
        }),
        curve("scale-write-p99.png", "durable write p99, 16 clients", "ms", Better::Lower, per_rep, &|s| {
            &s.p99
        }),
        curve(
            "scale-leader-cpu.png",
            "leader CPU under the write load",
            "% of a core",
            Better::Lower,
            per_rep,
            &|s| &s.leader_cpu,
        ),
        curve(
            "scale-leader-cpu-per-write.png",
            "leader CPU per acknowledged write",
            "µs",
            Better::Lower,
            per_rep,
            &|s| &s.leader_us_per_write,
        ),
        curve(
            "scale-cluster-cpu-per-write.png",
            "CPU of all members per acknowledged write",
            "µs",
            Better::Lower,
            per_rep,
            &|s| &s.cluster_us_per_write,
        ),
        curve(
            "scale-voter-cpu.png",
            "follower voter CPU (mean)",
            "% of a core",
            Better::Lower,
            per_rep,
            &|s| &s.voter_cpu,
        ),
        curve(
            "scale-nonvoter-cpu.png",
            "nonvoter CPU (mean per nonvoter)",
            "% of a core",
            Better::Lower,
            per_rep,
            &|s| &s.nonvoter_cpu,
        ),
        curve(
            "scale-rss.png",
            "resident memory per member (VmRSS)",
            "MiB",
            Better::Lower,
            "median, bars min–max over the members",
            &|s| &s.rss,
        ),
        curve(
            "scale-leader-rss.png",
            "leader resident memory (VmRSS)",
            "MiB",
            Better::Lower,
            "after the load",
            &|s| &s.leader_rss,
        ),
        curve("scale-join.png", "join: spawn → holding a short id", "s", Better::Lower, per_rep, &|s| {
            &s.join
        }),
    ];
    // A cluster of 3 has no nonvoter: nothing to measure there.
    for c in raft_curves.iter_mut().filter(|c| c.file == "scale-nonvoter-cpu.png") {
        for (n, m) in c.points.iter_mut() {
            if *n <= 3 && matches!(m, Measured::NotMeasured(w) if w.starts_with("no successful sample")) {
                *m = Measured::NotMeasured(NONE.into());
            }
        }
    }
    let gcurve = |file, metric, f: &dyn Fn(&GossipSized) -> &Vec<f64>| Curve {
        file,
        metric,
        unit: "s",
        better: Better::Lower,
        spread: per_rep,
        points: gossip.iter().map(|(n, g)| (*n, measured(f(g), &g.failure, metric))).collect(),
    };
    let gossip_curves = vec![
        gcurve("scale-gossip-converge.png", "gossip: all see all (from the first start)", &|g| &g.converge),
        gcurve("scale-gossip-failure.png", "gossip: all others drop a stopped member", &|g| &g.failed),
        gcurve("scale-gossip-leave.png", "gossip: all others see a graceful leave", &|g| &g.left),
    ];
    let out = ctx.out.clone();
    let raft_charts = draw(&out, &raft_curves, "members (3 voters, the rest nonvoters)");
    let gossip_charts = draw(&out, &gossip_curves, "gossip members");
    for (f, r) in raft_charts.iter().chain(&gossip_charts) {
        if let Err(e) = r {
            ctx.problem(format!("chart {f}: {e:#}"));
        }
    }
    let transport_said = match transport.as_str() {
        "channel" => "chitchat's in-memory ChannelTransport (no sockets)",
        _ => "real UDP on 127.0.0.1",
    };
    let errors: Vec<String> = raft
        .iter()
        .filter(|(_, s)| s.errors > 0)
        .map(|(n, s)| format!("{n} members: {}", s.errors))
        .collect();
    let mut intro = format!(
        "Raft: `carbon agent` processes on loopback, durable (a data dir each), 3 voters and the rest \
         nonvoters (raft learners that receive every entry from the leader); {CLIENTS} clients write to \
         the leader back to back ({} s per repetition after a 0.3 s warm-up, {} repetitions); CPU from \
         /proc/<pid>/stat utime+stime over each load window (100 % = one core; the machine has {} cores \
         shared by every process, so past a few members the members compete for them: CPU per write \
         is the figure that carries over to one member per machine); join = spawn of one more agent → \
         its start line (it holds a short id), then it leaves gracefully.",
        ctx.secs,
        ctx.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if !errors.is_empty() {
        let _ = write!(intro, " Failed writes: {}.", errors.join(", "));
    }
    let gossip_intro = format!(
        "Gossip: `cluster-gossip` members all in the bench process (100 agent processes do not fit this \
         machine), over {transport_said}, gossip interval {} ms, phi 8; views polled every 5 ms (20 ms above \
         30 members); failure = a member stopped abruptly, dropped from every other view.",
        GOSSIP_INTERVAL.as_millis()
    );
    let mut md = section("raft", &intro, &raft_curves, &raft_charts);
    md.push('\n');
    md.push_str(&section("gossip", &gossip_intro, &gossip_curves, &gossip_charts));
    ctx.report.sections.push(("7 Scale".into(), md));

    let durable = |n: usize| format!("{n} members (3 voters, {} nonvoters), durable", n.saturating_sub(3));
    ctx.report.rows.extend(rows_without_peer("7 scale", &raft_curves, durable));
    let in_process = |n: usize| format!("{n} members in one process, {transport_said}");
    ctx.report.rows.extend(rows_without_peer("7 scale gossip", &gossip_curves, in_process));
    if raft.is_empty() && gossip.is_empty() {
        return Err(anyhow!("no size to measure (SCALE_SIZES and SCALE_GOSSIP_SIZES empty)"));
    }
    Ok(())
}

/// One result row per point of `curves`, with no peer to compare against.
fn rows_without_peer(figure: &str, curves: &[Curve], case: impl Fn(usize) -> String) -> Vec<Row> {
    let mut rows = Vec::new();
    for c in curves {
        for (n, m) in &c.points {
            rows.push(Row {
                figure: figure.into(),
                case: case(*n),
                metric: c.metric.into(),
                unit: c.unit.into(),
                better: c.better,
                ours: m.clone(),
                peer_name: String::new(),
                peer_case: "no peer run".into(),
                peer: None,
                note: String::new(),
            });
        }
    }
    rows
}
