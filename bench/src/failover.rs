//! Figure 3: `kill -9` the leader while a write is sent every 10 ms; the time
//! from the kill to the first successful write sent after it. A fresh 3-member
//! cluster (durable) per repetition, ours and etcd's.
//!
//! Ours is also split into where the time goes, from the survivors' status
//! polled every 5 ms: kill → a survivor's term grows (its election timer
//! fired: detection), → a survivor names the new leader (the election), → the
//! first acknowledged write (commit of the new term plus the client finding
//! the leader).
//!
//! With `--cpu-hog`: busy loops on every core beside the cluster (child
//! processes at the agents' own priority); failover is measured again under
//! them, and a fresh cluster under a light write load (one write every 10 ms)
//! is watched for `--hog-secs`, counting term changes without any kill:
//! spurious elections, given per hour. `--raft-timing hb,min,max` (ms, several
//! separated by `;`) repeats all of it with other raft timing.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster_service::ServiceClient;
use tokio::process::Command;

use crate::Ctx;
use crate::kv::{VALUE, key};
use crate::procs::{CarbonCluster, ETCD_ELECTION_MS, ETCD_HEARTBEAT_MS, EtcdCluster, Proc};
use crate::report::{Better, Measured, Row};

const TICK: Duration = Duration::from_millis(10);
const PER_WRITE: Duration = Duration::from_secs(3);
const GIVE_UP: Duration = Duration::from_secs(15);

/// Raft timing in ms: heartbeat, election timeout min, max.
pub type Timing = (u64, u64, u64);

/// The agents' default raft timing, as the README gives it.
const DEFAULT_TIMING: Timing = (50, 150, 300);

/// Sends `write(n)` every 10 ms, each in its own task bounded by `PER_WRITE`; calls
/// `kill` after 1 s; returns the time from the kill to the first success among the
/// writes sent after it.
async fn measure<W, F, K, KF>(write: W, kill: K) -> Result<Duration>
where
    W: Fn(u64) -> F,
    F: Future<Output = bool> + Send + 'static,
    K: FnOnce() -> KF,
    KF: Future<Output = Result<()>>,
{
    let first_ok: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let mut n = 0u64;
    let mut ticker = tokio::time::interval(TICK);
    // Warm up one second of writes before the kill.
    while start.elapsed() < Duration::from_secs(1) {
        ticker.tick().await;
        let w = write(n);
        n += 1;
        tokio::spawn(async move { tokio::time::timeout(PER_WRITE, w).await });
    }
    kill().await?;
    let killed = Instant::now();
    loop {
        ticker.tick().await;
        if let Some(t) = *first_ok.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(t - killed);
        }
        if killed.elapsed() > GIVE_UP {
            bail!("no write succeeded within {GIVE_UP:?} of the kill");
        }
        let w = write(n);
        n += 1;
        let first_ok = first_ok.clone();
        tokio::spawn(async move {
            if let Ok(true) = tokio::time::timeout(PER_WRITE, w).await {
                let now = Instant::now();
                let mut f = first_ok.lock().unwrap_or_else(|e| e.into_inner());
                if f.is_none_or(|t| now < t) {
                    *f = Some(now);
                }
            }
        });
    }
}

/// One failover of ours: total seconds, and the split (detection, election)
/// when the survivors were seen going through it.
#[derive(Debug, Clone, Copy)]
struct Failover {
    total: f64,
    detection: Option<f64>,
    election: Option<f64>,
}

/// Polls the survivors every 5 ms from `since`: when one first shows a term
/// above `term0`, and when one first names a leader other than `old`.
async fn watch_election(
    client: ServiceClient,
    survivors: Vec<String>,
    old: String,
    term0: u64,
    since: Instant,
) -> (Option<Duration>, Option<Duration>) {
    let mut term_seen = None;
    while since.elapsed() < GIVE_UP {
        for addr in &survivors {
            if let Ok(s) = client.status_of(addr).await {
                if s.term > term0 && term_seen.is_none() {
                    term_seen = Some(since.elapsed());
                }
                if s.leader.is_some_and(|l| l.to_string() != old) && s.term > term0 {
                    return (term_seen.or(Some(since.elapsed())), Some(since.elapsed()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (term_seen, None)
}

/// A TOML file giving the agents other raft timing, or `None` for the defaults.
fn timing_file(ctx: &Ctx, t: Option<Timing>) -> Result<Option<PathBuf>> {
    let Some(t) = t else { return Ok(None) };
    let path = ctx.dir.join(format!("raft-{}-{}-{}.toml", t.0, t.1, t.2));
    std::fs::write(
        &path,
        format!(
            "[raft]\nheartbeat_ms = {}\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n",
            t.0, t.1, t.2
        ),
    )?;
    Ok(Some(path))
}

async fn ours_once(ctx: &Ctx, tag: &str, timing: Option<Timing>) -> Result<Failover> {
    let config = timing_file(ctx, timing)?;
    let mut c = CarbonCluster::start_with(&ctx.carbon, &ctx.dir, 3, true, tag, config).await?;
    let leader = c.leader().await?;
    let client = c.client(&[0, 1, 2])?;
    let term0 = client.status_of(&c.agents[leader].service).await?.term;
    let old = c.agents[leader].member_id.clone();
    let survivors: Vec<String> =
        c.agents.iter().enumerate().filter(|&(i, _)| i != leader).map(|(_, a)| a.service.clone()).collect();
    let status_client = c.client(&[0, 1, 2])?;
    let watcher = Arc::new(Mutex::new(None));
    let agents = &mut c.agents;
    let w = watcher.clone();
    let d = measure(
        |n| {
            let client = client.clone();
            async move { client.set(&key(1_000_000 + n), VALUE.to_vec()).await.is_ok() }
        },
        move || async move {
            let since = Instant::now();
            agents[leader].kill9();
            let task = tokio::spawn(watch_election(status_client, survivors, old, term0, since));
            *w.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            Ok(())
        },
    )
    .await?;
    let task = watcher.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (term_seen, leader_seen) = match task {
        Some(t) => tokio::time::timeout(GIVE_UP, t).await.ok().and_then(Result::ok).unwrap_or((None, None)),
        None => (None, None),
    };
    Ok(Failover {
        total: d.as_secs_f64(),
        detection: term_seen.map(|t| t.as_secs_f64()),
        election: match (term_seen, leader_seen) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        },
    })
}

/// Busy loops on every core, killed when dropped.
struct CpuHog(Vec<Proc>);

impl CpuHog {
    fn start() -> Result<CpuHog> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut v = Vec::new();
        for _ in 0..cores {
            let child = Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("spawn a busy loop")?;
            v.push(Proc { child });
        }
        Ok(CpuHog(v))
    }
}

/// Term changes and leader changes seen in a fresh 3-member cluster, with no
/// kill, over `secs` of one write every 10 ms; and the writes that failed.
async fn spurious(ctx: &Ctx, tag: &str, timing: Option<Timing>, secs: f64) -> Result<(u64, u64, u64, u64)> {
    let config = timing_file(ctx, timing)?;
    let c = CarbonCluster::start_with(&ctx.carbon, &ctx.dir, 3, true, tag, config).await?;
    c.leader().await?;
    let client = c.client(&[0, 1, 2])?;
    let addrs: Vec<String> = c.agents.iter().map(|a| a.service.clone()).collect();
    let mut term0 = 0;
    for a in &addrs {
        term0 = term0.max(client.status_of(a).await?.term);
    }
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let window = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    let mut next_poll = Instant::now();
    let (mut term, mut leader, mut leader_changes) = (term0, None::<String>, 0u64);
    let mut n = 0u64;
    while t.elapsed() < window {
        ticker.tick().await;
        let (client2, failed, sent) = (client.clone(), failed.clone(), sent.clone());
        n += 1;
        tokio::spawn(async move {
            sent.fetch_add(1, Ordering::Relaxed);
            let ok = matches!(
                tokio::time::timeout(PER_WRITE, client2.set(&key(2_000_000 + n), VALUE.to_vec())).await,
                Ok(Ok(_))
            );
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_millis(100);
            for a in &addrs {
                if let Ok(s) = client.status_of(a).await {
                    term = term.max(s.term);
                    if let Some(l) = s.leader.map(|l| l.to_string()) {
                        if leader.as_ref().is_some_and(|old| *old != l) {
                            leader_changes += 1;
                        }
                        leader = Some(l);
                    }
                }
            }
        }
    }
    drop(c);
    Ok((term - term0, leader_changes, sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
}

async fn etcd_once(ctx: &Ctx, rep: usize) -> Result<f64> {
    let mut e = EtcdCluster::start(&ctx.dir, 3, &format!("fo{rep}")).await?;
    let leader = e.wait_leader(&[], Duration::from_secs(20)).await?;
    let client = etcd_client::Client::connect(e.urls(&[0, 1, 2]), None).await?;
    let kv = client.kv_client();
    let members = &mut e.members;
    let d = measure(
        |n| {
            let mut kv = kv.clone();
            async move { kv.put(key(1_000_000 + n), VALUE.to_vec(), None).await.is_ok() }
        },
        move || async move {
            members[leader].proc.kill9().await;
            Ok(())
        },
    )
    .await?;
    Ok(d.as_secs_f64())
}

fn timing_name(t: Option<Timing>) -> String {
    let (h, a, b) = t.unwrap_or(DEFAULT_TIMING);
    let d = if t.is_none() { " (defaults)" } else { "" };
    format!("heartbeat {h} ms, election timeout {a}–{b} ms{d}")
}

/// Failovers of ours with `timing`, `reps` times; `hog` only labels the log.
async fn ours_reps(ctx: &Ctx, timing: Option<Timing>, hog: bool) -> (Vec<Failover>, Option<String>) {
    let mut got = Vec::new();
    let mut err = None;
    for rep in 0..ctx.reps {
        let tag = format!("fo{}{rep}{}", if hog { "h" } else { "" }, timing.map_or(0, |t| t.0));
        match ours_once(ctx, &tag, timing).await {
            Ok(f) => got.push(f),
            Err(e) => err = Some(format!("{e:#}")),
        }
        ctx.log(format!(
            "failover rep {rep} ours ({}{}): {:?} {err:?}",
            timing_name(timing),
            if hog { ", CPU hog" } else { "" },
            got.last()
        ));
    }
    (got, err)
}

fn m(v: &[f64], err: Option<String>) -> Measured {
    match (v.is_empty(), err) {
        (true, Some(e)) => Measured::NotMeasured(e),
        _ => Measured::from_samples(v, "failover"),
    }
}

fn ours_row(case: String, metric: &str, unit: &str, ours: Measured, note: String) -> Row {
    Row {
        figure: "3 failover".into(),
        case,
        metric: metric.into(),
        unit: unit.into(),
        better: Better::Lower,
        ours,
        peer_name: String::new(),
        peer_case: "—".into(),
        peer: None,
        note,
    }
}

/// The split rows of some failovers. The survivors are polled every 5 ms, so
/// a write can succeed before the poll that sees its leader: the last part is
/// then counted as 0, and the split has a resolution of about 5–10 ms.
fn split_rows(case: &str, got: &[Failover]) -> Vec<Row> {
    let det: Vec<f64> = got.iter().filter_map(|f| f.detection).collect();
    let ele: Vec<f64> = got.iter().filter_map(|f| f.election).collect();
    let rest: Vec<f64> =
        got.iter().filter_map(|f| Some((f.total - f.detection? - f.election?).max(0.0))).collect();
    vec![
        ours_row(
            case.into(),
            "split: kill → a survivor's term grows (detection)",
            "s",
            m(&det, None),
            String::new(),
        ),
        ours_row(
            case.into(),
            "split: → a survivor names the new leader (election)",
            "s",
            m(&ele, None),
            String::new(),
        ),
        ours_row(
            case.into(),
            "split: → first acknowledged write (commit + client)",
            "s",
            m(&rest, None),
            String::new(),
        ),
    ]
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let mut timings: Vec<Option<Timing>> = vec![None];
    timings.extend(ctx.raft_timings.iter().copied().map(Some));
    for (ti, &timing) in timings.iter().enumerate() {
        let (got, ours_err) = ours_reps(ctx, timing, false).await;
        let ours: Vec<f64> = got.iter().map(|f| f.total).collect();
        let mut theirs = Vec::new();
        let mut etcd_err = None;
        // etcd once, beside our defaults.
        if ti == 0 && ctx.have_etcd {
            for rep in 0..ctx.reps {
                match etcd_once(ctx, rep).await {
                    Ok(s) => theirs.push(s),
                    Err(e) => etcd_err = Some(format!("{e:#}")),
                }
                ctx.log(format!("failover rep {rep} etcd: {theirs:?} {etcd_err:?}"));
            }
        }
        let case =
            format!("kill -9 the leader, a write every 10 ms, 3 members, durable; {}", timing_name(timing));
        let peer = if ti > 0 {
            None
        } else if ctx.have_etcd {
            Some(m(&theirs, etcd_err))
        } else {
            Some(Measured::NotMeasured("etcd not installed".into()))
        };
        ctx.report.rows.push(Row {
            figure: "3 failover".into(),
            case: case.clone(),
            metric: "kill → first successful write".into(),
            unit: "s".into(),
            better: Better::Lower,
            ours: m(&ours, ours_err),
            peer_name: if peer.is_some() { "etcd".into() } else { String::new() },
            peer_case: format!(
                "same; heartbeat {ETCD_HEARTBEAT_MS} ms, election timeout {ETCD_ELECTION_MS} ms"
            ),
            peer,
            note: "a fresh cluster per repetition; each write bounded by 3 s; the split is read from the \
                   survivors' status polled every 5 ms"
                .into(),
        });
        ctx.report.rows.extend(split_rows(&case, &got));

        if ctx.cpu_hog {
            let hog = CpuHog::start()?;
            ctx.log(format!("CPU hog on {} cores ({})", hog.0.len(), timing_name(timing)));
            let (got, err) = ours_reps(ctx, timing, true).await;
            let ours: Vec<f64> = got.iter().map(|f| f.total).collect();
            let hcase = format!("{case}; CPU hog on every core");
            ctx.report.rows.push(ours_row(
                hcase.clone(),
                "kill → first successful write",
                "s",
                m(&ours, err),
                "busy loops (`sh -c 'while :; do :; done'`), one per core, at the agents' priority".into(),
            ));
            ctx.report.rows.extend(split_rows(&hcase, &got));
            let secs = ctx.hog_secs;
            let tag = format!("sp{}", timing.map_or(0, |t| t.0));
            let r = spurious(ctx, &tag, timing, secs).await;
            ctx.log(format!(
                "spurious elections over {secs} s under the CPU hog ({}): {r:?}",
                timing_name(timing)
            ));
            let per_hour = |x: u64| x as f64 * 3600.0 / secs;
            let (elections, changes, note) = match r {
                Ok((terms, changes, sent, failed)) => (
                    Measured::from_samples(&[per_hour(terms)], "elections"),
                    Measured::from_samples(&[per_hour(changes)], "leader changes"),
                    format!(
                        "over one window of {secs} s: {terms} term changes, {changes} leader changes, no kill; \
                         {failed} of {sent} writes (one every 10 ms, each bounded by 3 s) failed"
                    ),
                ),
                Err(e) => {
                    let w = format!("{e:#}");
                    (Measured::NotMeasured(w.clone()), Measured::NotMeasured(w), String::new())
                }
            };
            ctx.report.rows.push(ours_row(
                hcase.clone(),
                "spurious elections (term changes, no kill)",
                "per hour",
                elections,
                note,
            ));
            ctx.report.rows.push(ours_row(
                hcase,
                "leader changes, no kill",
                "per hour",
                changes,
                String::new(),
            ));
            drop(hog);
        }
    }
    Ok(())
}
