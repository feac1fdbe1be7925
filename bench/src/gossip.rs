//! Figure 5: gossip membership. Ours: `cluster-gossip` members in this process
//! (the library on its own, the cluster's default settings); serf: `serf agent`
//! processes (lan profile), all joining the first, observed over their RPC port.
//! For 3, 10 and 30 members: time until all see all, until all others report a
//! `kill -9` (ours: an abrupt stop) as failed, until all others report a graceful leave.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use cluster_core::{FailureDetection, MemberId};
use cluster_gossip::{Gossip, GossipConfig, GossipKey, GossipTransport, Keyring};
use rmpv::Value;

use crate::Ctx;
use crate::procs::{SerfAgent, spawn_serf, wait_listening};
use crate::report::{Better, Measured, Row};

pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(5);
const DEADLINE: Duration = Duration::from_secs(40);

#[derive(Default)]
struct Times {
    converge: Vec<f64>,
    failed: Vec<f64>,
    left: Vec<f64>,
    errors: Vec<String>,
}

// ------------------------------------------------------------------ ours

fn config(cluster: &str) -> GossipConfig {
    GossipConfig::default()
        .with_cluster_id(cluster)
        .with_gossip_interval(GOSSIP_INTERVAL)
        .with_failure_detection(FailureDetection {
            phi_threshold: 8.0,
            initial_interval: GOSSIP_INTERVAL,
            dead_member_grace: Duration::from_secs(3600),
        })
}

async fn time_until(since: Instant, poll: Duration, mut cond: impl FnMut() -> bool) -> Result<f64> {
    while !cond() {
        if since.elapsed() > DEADLINE {
            bail!("not within {DEADLINE:?}");
        }
        tokio::time::sleep(poll).await;
    }
    Ok(since.elapsed().as_secs_f64())
}

fn sees(g: &Gossip, id: MemberId) -> bool {
    g.members().iter().any(|m| m.id == id)
}

async fn ours_once(n: usize, rep: usize, keyring: Option<Keyring>) -> Result<(f64, f64, f64)> {
    ours_once_with(n, &format!("{rep}"), GossipTransport::Udp, POLL, keyring).await
}

/// A keyring of one fresh key: every datagram sealed with AES-256-GCM.
fn sealed() -> Option<Keyring> {
    Some(Keyring::new(GossipKey::generate()))
}

/// CPU of this process, in % of one core, while `n` converged members gossip
/// for `secs` with nothing else going on.
async fn idle_cpu(n: usize, tag: &str, keyring: Option<Keyring>, secs: f64) -> Result<f64> {
    let cluster = format!("bench-gossip-idle-{n}-{tag}");
    let config = |cluster: &str| {
        let c = config(cluster);
        match &keyring {
            Some(k) => c.with_keyring(k.clone()),
            None => c,
        }
    };
    let first = Gossip::start(config(&cluster)).await?;
    let seed = first.gossip_addr().to_string();
    let mut members = vec![first];
    for _ in 1..n {
        members.push(Gossip::start(config(&cluster).with_seeds([seed.clone()])).await?);
    }
    let result = async {
        time_until(Instant::now(), POLL, || members.iter().all(|g| g.members().len() == n))
            .await
            .context("converge")?;
        let pid = std::process::id();
        let before = crate::idle::cpu_ticks(pid)?;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let after = crate::idle::cpu_ticks(pid)?;
        Ok::<_, anyhow::Error>(after.saturating_sub(before) as f64 / crate::idle::TICKS_PER_S / secs * 100.0)
    }
    .await;
    for g in &members {
        let _ = g.stop().await;
    }
    result
}

/// `n` gossip members in this process over `transport`, views polled every
/// `poll`: (all see all from the first start, all others drop an abruptly
/// stopped member, all others drop a member that left), in seconds.
pub async fn ours_once_with(
    n: usize,
    tag: &str,
    transport: GossipTransport,
    poll: Duration,
    keyring: Option<Keyring>,
) -> Result<(f64, f64, f64)> {
    let cluster = format!("bench-gossip-{n}-{tag}");
    let config = |cluster: &str| {
        let c = config(cluster).with_transport(transport.clone());
        match &keyring {
            Some(k) => c.with_keyring(k.clone()),
            None => c,
        }
    };
    let started = Instant::now();
    let first = Gossip::start(config(&cluster)).await?;
    let seed = first.gossip_addr().to_string();
    let mut members = vec![first];
    for _ in 1..n {
        members.push(Gossip::start(config(&cluster).with_seeds([seed.clone()])).await?);
    }
    let converge = time_until(started, poll, || members.iter().all(|g| g.members().len() == n)).await;
    let result = async {
        let converge = converge.context("converge")?;
        let stopped = members.pop().ok_or_else(|| anyhow!("no member"))?;
        let id = stopped.member_id();
        let t = Instant::now();
        stopped.stop().await?;
        let failed = time_until(t, poll, || members.iter().all(|g| !sees(g, id))).await.context("failure")?;
        let leaver = members.pop().ok_or_else(|| anyhow!("no member"))?;
        let id = leaver.member_id();
        let t = Instant::now();
        let leave = leaver.leave();
        let others = &members;
        let (_, left) = tokio::join!(leave, time_until(t, poll, || others.iter().all(|g| !sees(g, id))));
        Ok::<_, anyhow::Error>((converge, failed, left.context("leave")?))
    }
    .await;
    for g in &members {
        let _ = g.stop().await;
    }
    result
}

// ------------------------------------------------------------------ serf RPC

/// A connection to one serf agent's RPC port (msgpack: header, then body).
struct SerfRpc {
    w: TcpStream,
    r: BufReader<TcpStream>,
    seq: u64,
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Map(pairs.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_map()?.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().unwrap_or_default().to_string(),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

impl SerfRpc {
    fn connect(addr: &str) -> Result<SerfRpc> {
        let w = TcpStream::connect(addr)?;
        w.set_nodelay(true)?;
        w.set_read_timeout(Some(Duration::from_secs(5)))?;
        let r = BufReader::new(w.try_clone()?);
        let mut c = SerfRpc { w, r, seq: 0 };
        c.call("handshake", Some(map(&[("Version", Value::from(1))])), false)?;
        Ok(c)
    }

    fn call(&mut self, command: &str, body: Option<Value>, answer: bool) -> Result<Option<Value>> {
        let seq = self.seq;
        self.seq += 1;
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &map(&[("Command", command.into()), ("Seq", seq.into())]))?;
        if let Some(b) = body {
            rmpv::encode::write_value(&mut buf, &b)?;
        }
        self.w.write_all(&buf)?;
        let header = rmpv::decode::read_value(&mut self.r)?;
        let err = get(&header, "Error").map(text).unwrap_or_default();
        if !err.is_empty() {
            bail!("serf rpc {command}: {err}");
        }
        if answer { Ok(Some(rmpv::decode::read_value(&mut self.r)?)) } else { Ok(None) }
    }

    /// name → status ("alive", "failed", "leaving", "left").
    fn members(&mut self) -> Result<HashMap<String, String>> {
        let body = self.call("members", None, true)?.ok_or_else(|| anyhow!("no body"))?;
        let list = get(&body, "Members").and_then(Value::as_array).ok_or_else(|| anyhow!("no Members"))?;
        Ok(list.iter().filter_map(|m| Some((text(get(m, "Name")?), text(get(m, "Status")?)))).collect())
    }
}

/// Polls every agent's view until `cond` holds for all; seconds since `since`.
fn serf_until(
    rpcs: &mut [SerfRpc],
    since: Instant,
    cond: impl Fn(&HashMap<String, String>) -> bool,
) -> Result<f64> {
    loop {
        let mut all = true;
        for r in rpcs.iter_mut() {
            if !cond(&r.members()?) {
                all = false;
                break;
            }
        }
        if all {
            return Ok(since.elapsed().as_secs_f64());
        }
        if since.elapsed() > DEADLINE {
            bail!("not within {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    }
}

async fn serf_once(ctx: &Ctx, n: usize, rep: usize) -> Result<(f64, f64, f64)> {
    let dir = ctx.dir.join(format!("serf-{n}-{rep}"));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let mut agents: Vec<SerfAgent> = vec![spawn_serf(&dir, &format!("s{rep}-0"), None)?];
    // Others join the first once it listens (serf exits when -join fails).
    wait_listening(&agents[0].rpc, Duration::from_secs(10)).await?;
    let join = agents[0].bind.clone();
    for i in 1..n {
        agents.push(spawn_serf(&dir, &format!("s{rep}-{i}"), Some(&join))?);
    }
    // RPC connections, retried until each agent listens.
    let mut rpcs = Vec::new();
    for a in &agents {
        let t = Instant::now();
        loop {
            match SerfRpc::connect(&a.rpc) {
                Ok(c) => break rpcs.push(c),
                Err(e) if t.elapsed() > Duration::from_secs(10) => {
                    return Err(e.context(format!("serf rpc {}", a.rpc)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
    let res = tokio::task::block_in_place(|| -> Result<(f64, f64, f64)> {
        let converge = serf_until(&mut rpcs, started, |m| {
            names.iter().all(|nm| m.get(nm).map(String::as_str) == Some("alive"))
        })
        .context("converge")?;
        Ok((converge, 0.0, 0.0))
    })?;
    // kill -9 the last one.
    let mut victim = agents.pop().ok_or_else(|| anyhow!("no agent"))?;
    rpcs.pop();
    let t = Instant::now();
    victim.proc.kill9().await;
    let vname = victim.name.clone();
    let failed = tokio::task::block_in_place(|| {
        serf_until(&mut rpcs, t, |m| m.get(&vname).map(String::as_str) == Some("failed"))
    })
    .context("failure")?;
    // A graceful leave of the next one, asked over its RPC.
    let leaver = agents.len() - 1;
    let lname = agents[leaver].name.clone();
    let mut lrpc = rpcs.pop().ok_or_else(|| anyhow!("no rpc"))?;
    let t = Instant::now();
    let left = tokio::task::block_in_place(|| {
        // "leave" answers once the agent left; watch the others meanwhile.
        let h = std::thread::spawn(move || lrpc.call("leave", None, false));
        let left = serf_until(&mut rpcs, t, |m| m.get(&lname).map(String::as_str) == Some("left"));
        let _ = h.join();
        left
    })
    .context("leave")?;
    drop(agents);
    Ok((res.0, failed, left))
}

// ------------------------------------------------------------------ figure

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    for n in [3usize, 10, 30] {
        let mut ours = Times::default();
        let mut sealed_times = Times::default();
        let mut serf = Times::default();
        for rep in 0..ctx.reps {
            for (times, keyring) in [(&mut ours, None), (&mut sealed_times, sealed())] {
                match tokio::time::timeout(Duration::from_secs(90), ours_once(n, rep, keyring)).await {
                    Ok(Ok((c, f, l))) => {
                        times.converge.push(c);
                        times.failed.push(f);
                        times.left.push(l);
                    }
                    Ok(Err(e)) => times.errors.push(format!("{e:#}")),
                    Err(_) => times.errors.push("took over 90 s".into()),
                }
            }
            if ctx.have_serf {
                match tokio::time::timeout(Duration::from_secs(90), serf_once(ctx, n, rep)).await {
                    Ok(Ok((c, f, l))) => {
                        serf.converge.push(c);
                        serf.failed.push(f);
                        serf.left.push(l);
                    }
                    Ok(Err(e)) => serf.errors.push(format!("{e:#}")),
                    Err(_) => serf.errors.push("took over 90 s".into()),
                }
            }
            ctx.log(format!(
                "gossip n={n} rep {rep}: ours {:?}/{:?}/{:?} {:?}; serf {:?}/{:?}/{:?} {:?}",
                ours.converge,
                ours.failed,
                ours.left,
                ours.errors,
                serf.converge,
                serf.failed,
                serf.left,
                serf.errors
            ));
        }
        let m = |v: &[f64], t: &Times, what: &str| {
            if v.is_empty() {
                Measured::NotMeasured(t.errors.first().cloned().unwrap_or_else(|| format!("no {what}")))
            } else {
                Measured::from_samples(v, what)
            }
        };
        let peer = |v: &[f64], what: &str| {
            Some(if ctx.have_serf {
                m(v, &serf, what)
            } else {
                Measured::NotMeasured("serf not installed".into())
            })
        };
        let mut note = String::new();
        if !ours.errors.is_empty() || !serf.errors.is_empty() {
            note = format!("failed repetitions: ours {:?}; serf {:?}", ours.errors, serf.errors);
        }
        let rows = [
            ("all see all (from the first start)", &ours.converge, &serf.converge, note.clone()),
            ("all others report a killed member failed", &ours.failed, &serf.failed, String::new()),
            ("all others report a graceful leave", &ours.left, &serf.left, String::new()),
        ];
        for (metric, o, s, note) in rows {
            let row = Row {
                figure: "5 gossip".into(),
                case: format!("{n} members"),
                metric: metric.into(),
                unit: "s".into(),
                better: Better::Lower,
                ours: m(o, &ours, metric),
                peer_name: "serf".into(),
                peer_case: format!("{n} serf agents, lan profile"),
                peer: peer(s, metric),
                note,
            };
            ctx.report.rows.push(row);
        }
        // What sealing every datagram costs, against our own plaintext.
        let sealed_rows = [
            ("all see all (from the first start)", &sealed_times.converge, &ours.converge),
            ("all others report a killed member failed", &sealed_times.failed, &ours.failed),
            ("all others report a graceful leave", &sealed_times.left, &ours.left),
        ];
        for (metric, o, plain) in sealed_rows {
            ctx.report.rows.push(Row {
                figure: "5 gossip".into(),
                case: format!("{n} members, encrypted (AES-256-GCM)"),
                metric: metric.into(),
                unit: "s".into(),
                better: Better::Lower,
                ours: m(o, &sealed_times, metric),
                peer_name: "ours, plaintext".into(),
                peer_case: format!("{n} members"),
                peer: Some(m(plain, &ours, metric)),
                note: String::new(),
            });
        }
    }
    // Idle CPU of 30 converged members in this process, sealed and not.
    let n = 30;
    let (mut plain, mut enc) = (Times::default(), Times::default());
    for rep in 0..ctx.reps {
        for (times, keyring) in [(&mut plain, None), (&mut enc, sealed())] {
            match idle_cpu(n, &format!("{rep}"), keyring, 10.0).await {
                Ok(cpu) => times.converge.push(cpu),
                Err(e) => times.errors.push(format!("{e:#}")),
            }
        }
        ctx.log(format!("gossip idle CPU n={n} rep {rep}: plaintext {:?}, encrypted {:?}", plain.converge, enc.converge));
    }
    let measured = |t: &Times| {
        if t.converge.is_empty() {
            Measured::NotMeasured(t.errors.first().cloned().unwrap_or_default())
        } else {
            Measured::from_samples(&t.converge, "idle CPU")
        }
    };
    ctx.report.rows.push(Row {
        figure: "5 gossip".into(),
        case: format!("{n} members in one process, encrypted (AES-256-GCM), idle 10 s"),
        metric: "CPU of all members together".into(),
        unit: "% of a core".into(),
        better: Better::Lower,
        ours: measured(&enc),
        peer_name: "ours, plaintext".into(),
        peer_case: format!("{n} members in one process, idle 10 s"),
        peer: Some(measured(&plain)),
        note: String::new(),
    });
    Ok(())
}
