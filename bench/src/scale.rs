//! Figure 7: how cost grows with the cluster (issues 17 and 24).
//!
//! Raft: for each size in `--scale-sizes` (default 3, 5, 10, 30, 50, 100),
//! that many `carbon agent` processes on loopback, durable, with a bounded
//! replica set (`--replicas`, `--scale-replicas`, default 5: 3 voters, 2
//! nonvoters, every other member a client member with no raft log); and, for
//! contrast, each size in `--scale-all-sizes` (default 3, 10, 30, 50) with
//! every member a replica (3 voters, the rest raft learners that receive
//! every entry). Per size: durable write throughput and latency with 16
//! clients at the leader; the CPU of the leader, of a follower voter, of a
//! nonvoter and of a client member over each load window
//! (`/proc/<pid>/stat`); the CPU of the leader and of each client member over
//! an idle window (no load); resident memory of every member and of the
//! client members (VmRSS); the time one more agent takes from spawn to holding
//! its short id; and the time the replica set takes to be back at its bound
//! in the leader's status after a follower voter is killed (SIGKILL).
//!
//! Gossip: for each size in `--gossip-sizes` (default 10, 50, 100, 500,
//! 1000), `cluster-gossip` members in this one process: over real UDP on
//! loopback by default, or chitchat's in-memory `ChannelTransport`
//! (`--gossip-transport channel`). Convergence, failure detection and
//! graceful leave, as in figure 5.
//!
//! Output ([`crate::scale_report`]): rows of the main table, pivot tables (one
//! column per size) as a section of results.md, and one PNG chart per curve.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use cluster_gossip::{ChannelTransport, GossipTransport};

use crate::Ctx;
use crate::gossip::{GOSSIP_INTERVAL, ours_once_with};
use crate::idle::{TICKS_PER_S, cpu_ticks, rss_mib};
use crate::kv::{Kv, Op, drive};
use crate::procs::CarbonCluster;
use crate::report::{Better, Measured};
use crate::scale_report::{Curve, NONE, draw, measured, rows_without_peer, section};

/// Clients of the write load at every size.
const CLIENTS: usize = 16;

/// The idle window: no load, after the members settled for [`SETTLE`].
const IDLE: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(3);

/// The `--replicas` of the every-member-replicates curve: above any size.
const EVERY_MEMBER: usize = 10_000;

/// What one cluster size measured; each Vec holds one sample per repetition,
/// except `rss` and `client_rss` (one per member) and `client_idle_cpu` (one
/// per client member).
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
    client_cpu: Vec<f64>,
    leader_idle_cpu: Vec<f64>,
    client_idle_cpu: Vec<f64>,
    rss: Vec<f64>,
    leader_rss: Vec<f64>,
    client_rss: Vec<f64>,
    join: Vec<f64>,
    heal: Vec<f64>,
    /// The machine's 1-minute load average at the end of each load window
    /// (the machine is shared: other processes compete for its cores).
    load: Vec<f64>,
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

/// The 1-minute load average of the machine.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// A member's part in raft, by the leader's status.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Leader,
    Voter,
    Nonvoter,
    Client,
}

async fn one_size(ctx: &Ctx, n: usize, replicas: usize, tag: &str, out: &mut Sized) -> Result<()> {
    let t = Instant::now();
    let mut c = CarbonCluster::start_replicas(&ctx.carbon, &ctx.dir, n, true, tag, replicas).await?;
    c.wait_members(n, Duration::from_secs(60 + 2 * n as u64)).await?;
    ctx.log(format!(
        "scale {tag}: {n} agents up, replica set at its bound after {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let leader = c.leader().await?;
    let pids: Vec<u32> = c.agents.iter().map(|a| a.pid().unwrap_or(0)).collect();
    let status = c.client(&[leader])?.status_of(&c.agents[leader].service).await?;
    let parts: Vec<Part> = (0..n)
        .map(|i| {
            let id = &c.agents[i].member_id;
            if i == leader {
                Part::Leader
            } else if status.voters.keys().any(|v| v.to_string() == *id) {
                Part::Voter
            } else if status.nonvoters.keys().any(|v| v.to_string() == *id) {
                Part::Nonvoter
            } else {
                Part::Client
            }
        })
        .collect();
    let of = |cpu: &[Option<f64>], part: Part| -> Option<f64> {
        mean(cpu.iter().zip(&parts).filter(|(_, p)| **p == part).filter_map(|(c, _)| *c))
    };

    // Idle: the members as they are with no load.
    tokio::time::sleep(SETTLE).await;
    let before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p).ok()).collect();
    let t = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle = cpu_pct(&before, &pids, t.elapsed().as_secs_f64());
    out.leader_idle_cpu.extend(idle[leader]);
    for (i, cpu) in idle.iter().enumerate() {
        if parts[i] == Part::Client {
            out.client_idle_cpu.extend(*cpu);
            out.client_rss.extend(rss_mib(pids[i]).ok());
        }
    }
    ctx.log(format!(
        "scale {tag}: idle leader {:?} %, client member mean {:?} %",
        idle[leader],
        of(&idle, Part::Client)
    ));

    let kv = Kv::Ours(c.client(&[leader])?);
    for rep in 0..ctx.reps {
        let before: Vec<Option<u64>> = pids.iter().map(|&p| cpu_ticks(p).ok()).collect();
        let t = Instant::now();
        let point = drive(&kv, Op::Write, CLIENTS, ctx.secs).await?;
        let cpu = cpu_pct(&before, &pids, t.elapsed().as_secs_f64());
        out.load.extend(load_average());
        ctx.log(format!("scale {tag} rep {rep}: {point:?}, leader CPU {:?} %", cpu[leader]));
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
        out.voter_cpu.extend(of(&cpu, Part::Voter));
        out.nonvoter_cpu.extend(of(&cpu, Part::Nonvoter));
        out.client_cpu.extend(of(&cpu, Part::Client));
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
        ctx.log(format!("scale {tag} join rep {rep}: {:.3} s", took.as_secs_f64()));
        out.join.push(took.as_secs_f64());
        let last = c.agents.len() - 1;
        c.leave(last).await?;
        c.wait_members(n, Duration::from_secs(60)).await.context("after the joiner left")?;
    }
    // Heal: only where a client member can take the place of a replica.
    let mut alive = n;
    for rep in 0..ctx.reps {
        if alive <= replicas {
            break;
        }
        let took = c.kill_voter_and_heal(leader).await.with_context(|| format!("heal, repetition {rep}"))?;
        ctx.log(format!("scale {tag} heal rep {rep}: {:.3} s", took.as_secs_f64()));
        out.heal.push(took.as_secs_f64());
        alive -= 1;
    }
    Ok(())
}

async fn gossip_size(n: usize, reps: usize, transport: &str, out: &mut GossipSized) {
    // Polling every member's view costs CPU that gossip needs: the more
    // members, the rarer (each poll reads n views of n members).
    let poll = match n {
        0..=30 => Duration::from_millis(5),
        31..=200 => Duration::from_millis(20),
        _ => Duration::from_millis(200),
    };
    let within = Duration::from_secs(180 + n as u64 / 2);
    for rep in 0..reps {
        let t = match transport {
            "channel" => GossipTransport::Channel(ChannelTransport::with_mtu(65_507)),
            _ => GossipTransport::Udp,
        };
        let tag = format!("scale-{rep}");
        match tokio::time::timeout(within, ours_once_with(n, &tag, t, poll, None)).await {
            Ok(Ok((c, f, l))) => {
                out.converge.push(c);
                out.failed.push(f);
                out.left.push(l);
            }
            Ok(Err(e)) => out.failure = Some(format!("{e:#}")),
            Err(_) => out.failure = Some(format!("took over {within:?}")),
        }
    }
}

/// Runs one raft family: each size with `replicas(n)` as its bound.
async fn family(
    ctx: &mut Ctx,
    sizes: &[usize],
    replicas: impl Fn(usize) -> usize,
    tag: &str,
) -> Vec<(usize, Sized)> {
    let mut raft = Vec::new();
    for &n in sizes {
        let mut s = Sized::default();
        let budget = Duration::from_secs(240 + 8 * n as u64)
            + Duration::from_secs_f64((ctx.secs + 40.0) * ctx.reps as f64);
        let tag = format!("{tag}{n}");
        match tokio::time::timeout(budget, one_size(ctx, n, replicas(n), &tag, &mut s)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => s.failure = Some(format!("{e:#}")),
            Err(_) => s.failure = Some(format!("took over {budget:?}")),
        }
        if let Some(f) = &s.failure {
            ctx.problem(format!("scale {tag}: {f}"));
        }
        raft.push((n, s));
    }
    raft
}

/// The curves of one raft family.
fn raft_curves(raft: &[(usize, Sized)], bounded: Option<usize>) -> Vec<Curve> {
    let per_rep = "median, bars min–max over repetitions";
    let curve = |file, metric, unit, better, spread, f: &dyn Fn(&Sized) -> &Vec<f64>| Curve {
        file,
        metric,
        unit,
        better,
        spread,
        points: raft.iter().map(|(n, s)| (*n, measured(f(s), &s.failure, metric))).collect(),
    };
    let core = "% of a core";
    let mut curves = vec![
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
            core,
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
            "follower voter CPU under load (mean)",
            core,
            Better::Lower,
            per_rep,
            &|s| &s.voter_cpu,
        ),
        curve(
            "scale-nonvoter-cpu.png",
            "nonvoter CPU under load (mean per nonvoter)",
            core,
            Better::Lower,
            per_rep,
            &|s| &s.nonvoter_cpu,
        ),
        curve(
            "scale-client-cpu.png",
            "client member CPU under load (mean per client)",
            core,
            Better::Lower,
            per_rep,
            &|s| &s.client_cpu,
        ),
        curve(
            "scale-leader-idle-cpu.png",
            "leader CPU, idle (10 s, no load)",
            core,
            Better::Lower,
            per_rep,
            &|s| &s.leader_idle_cpu,
        ),
        curve(
            "scale-client-idle-cpu.png",
            "client member CPU, idle (10 s, no load)",
            core,
            Better::Lower,
            "median, bars min–max over the client members",
            &|s| &s.client_idle_cpu,
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
            "scale-client-rss.png",
            "client member resident memory (VmRSS), idle",
            "MiB",
            Better::Lower,
            "median, bars min–max over the client members",
            &|s| &s.client_rss,
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
        curve(
            "scale-heal.png",
            "heal: follower voter killed → replica set at its bound",
            "s",
            Better::Lower,
            per_rep,
            &|s| &s.heal,
        ),
        curve(
            "scale-load.png",
            "machine load average (1 min) after the write load",
            "runnable",
            Better::Lower,
            per_rep,
            &|s| &s.load,
        ),
    ];
    // Nothing to measure: no nonvoter in a cluster of 3, no client member
    // up to the bound (or without one), no heal without a client member.
    for c in &mut curves {
        for (n, m) in c.points.iter_mut() {
            let absent = match c.file {
                "scale-nonvoter-cpu.png" => *n <= 3,
                "scale-client-cpu.png"
                | "scale-client-idle-cpu.png"
                | "scale-client-rss.png"
                | "scale-heal.png" => bounded.is_none_or(|r| *n <= r),
                _ => false,
            };
            if absent && matches!(m, Measured::NotMeasured(w) if w.starts_with("no successful sample")) {
                *m = Measured::NotMeasured(NONE.into());
            }
        }
    }
    curves
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let load_before = load_average();
    let r = ctx.scale_replicas;
    let sizes = ctx.scale_sizes.clone();
    let bounded = family(ctx, &sizes, |_| r, &format!("r{r}n")).await;
    let all_sizes = ctx.scale_all_sizes.clone();
    let every = family(ctx, &all_sizes, |_| EVERY_MEMBER, "alln").await;
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
    let load_after = load_average();

    let bounded_curves = raft_curves(&bounded, Some(r));
    let every_curves = raft_curves(&every, None);
    let per_rep = "median, bars min–max over repetitions";
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
    let bounded_name = format!("replicas = {r}");
    let mut families: Vec<(&str, &[Curve])> = Vec::new();
    if !bounded.is_empty() {
        families.push((bounded_name.as_str(), bounded_curves.as_slice()));
    }
    if !every.is_empty() {
        families.push(("every member a replica", every_curves.as_slice()));
    }
    let raft_charts = draw(&out, &families, "members (agent processes on this machine)");
    let gossip_charts = draw(&out, &[("", gossip_curves.as_slice())], "gossip members");
    for (f, r) in raft_charts.iter().chain(&gossip_charts) {
        if let Err(e) = r {
            ctx.problem(format!("chart {f}: {e:#}"));
        }
    }
    let transport_said = match transport.as_str() {
        "channel" => "chitchat's in-memory ChannelTransport (no sockets)",
        _ => "real UDP on 127.0.0.1",
    };
    let errors: Vec<String> = bounded
        .iter()
        .chain(&every)
        .filter(|(_, s)| s.errors > 0)
        .map(|(n, s)| format!("{n} members: {}", s.errors))
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = |l: Option<f64>| l.map_or_else(|| "unknown".to_string(), |l| format!("{l:.1}"));
    let mut intro = format!(
        "Raft: `carbon agent` processes, all on this one machine ({cores} cores) on loopback, durable \
         (a data dir each). **Bounded** (`--replicas {r}`): 3 voters, {} nonvoters, every other member a \
         client member (gossip, a member id, a short id and its records; no raft log, no vote). \
         **Every member a replica** (the contrast, as before issue 24): 3 voters and the rest nonvoters, \
         raft learners that receive every entry. {CLIENTS} clients write to the leader back to back \
         ({} s per repetition after a 0.3 s warm-up, {} repetition(s)); CPU from /proc/<pid>/stat \
         utime+stime over each window (100 % = one core; every member shares the machine's cores, so CPU \
         per write is the figure that carries over to one member per machine). Idle = {} s with no \
         load, {} s after the cluster formed (a client member's figure: the mean over the client \
         members; ticks are 10 ms, so one member's figure over 10 s is a multiple of 0.1 %). Join = \
         spawn of one more agent → its start line (printed once it holds its short id), then it leaves \
         gracefully. Heal = SIGKILL of a follower voter → the leader's status shows 3 voters and {r} \
         raft members again, the killed one not among them (gossip failure detection, the failure \
         grace of 3 s, a learner added, caught up and promoted). **The machine was shared** with other \
         builds while this ran: 1-minute load average {} at the start of the family and {} at its end \
         (see also the load row, after each load window); absolute throughput and latency are lower \
         than on an idle machine, ratios between sizes are less affected.",
        r.saturating_sub(3),
        ctx.secs,
        ctx.reps,
        IDLE.as_secs(),
        SETTLE.as_secs(),
        load(load_before),
        load(load_after),
    );
    if !errors.is_empty() {
        let _ = write!(intro, " Failed writes: {}.", errors.join(", "));
    }
    let gossip_intro = format!(
        "Gossip: `cluster-gossip` members all in the bench process, over {transport_said}, gossip interval \
         {} ms, phi 8; views polled every 5 ms (20 ms above 30 members, 200 ms above 200); failure = a \
         member stopped abruptly, dropped from every other view.",
        GOSSIP_INTERVAL.as_millis()
    );
    let mut md = String::new();
    if !bounded.is_empty() {
        md.push_str(&section(&format!("raft, replicas = {r}"), &intro, &bounded_curves, &raft_charts));
        md.push('\n');
    }
    if !every.is_empty() {
        let said =
            if bounded.is_empty() { intro.clone() } else { "The contrast: every member a replica.".into() };
        let charts = if bounded.is_empty() { raft_charts.as_slice() } else { &[] };
        md.push_str(&section("raft, every member a replica", &said, &every_curves, charts));
        md.push('\n');
    }
    md.push_str(&section("gossip", &gossip_intro, &gossip_curves, &gossip_charts));
    ctx.report.sections.push(("7 Scale".into(), md));

    let case = |n: usize| match n.checked_sub(r) {
        Some(clients) if clients > 0 => {
            format!("{n} members ({r} replicas, {clients} client members), durable")
        }
        _ => format!("{n} members (3 voters, {} nonvoters), durable", n.saturating_sub(3)),
    };
    ctx.report.rows.extend(rows_without_peer("7 scale", &bounded_curves, case));
    let every_case = |n: usize| {
        format!("{n} members, every one a replica (3 voters, {} nonvoters), durable", n.saturating_sub(3))
    };
    ctx.report.rows.extend(rows_without_peer("7 scale, every member a replica", &every_curves, every_case));
    let in_process = |n: usize| format!("{n} members in one process, {transport_said}");
    ctx.report.rows.extend(rows_without_peer("7 scale gossip", &gossip_curves, in_process));
    if bounded.is_empty() && every.is_empty() && gossip.is_empty() {
        return Err(anyhow!(
            "no size to measure (SCALE_SIZES, SCALE_ALL_SIZES and SCALE_GOSSIP_SIZES empty)"
        ));
    }
    Ok(())
}
