//! Figures 1 and 2: write and read throughput/latency, ours (3 `carbon agent`
//! processes driven by `ServiceClient`) against etcd (3 processes driven by
//! the `etcd-client` crate). Keys 32 bytes, values 64 bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use cluster_service::ServiceClient;

use crate::Ctx;
use crate::procs::{CarbonCluster, EtcdCluster};
use crate::report::{Better, Measured, Row};
use crate::stats::Latencies;

pub const VALUE: [u8; 64] = [b'v'; 64];
pub const PRELOAD: u64 = 1000;

/// A 32-byte key.
pub fn key(n: u64) -> String {
    format!("bench/{n:026}")
}

/// What one load point sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Write,
    LinRead,
    LocalRead,
}

/// One client handle of either side; cheap to clone, shared by the tasks of a point.
#[derive(Clone)]
pub enum Kv {
    Ours(ServiceClient),
    Etcd(etcd_client::KvClient),
}

impl Kv {
    async fn run(&mut self, op: Op, n: u64) -> Result<()> {
        let k = key(n);
        match (self, op) {
            (Kv::Ours(c), Op::Write) => drop(c.set(&k, VALUE.to_vec()).await?),
            (Kv::Ours(c), Op::LinRead) => drop(c.consistent_get(&k).await?),
            (Kv::Ours(c), Op::LocalRead) => drop(c.get(&k).await?),
            (Kv::Etcd(c), Op::Write) => drop(c.put(k, VALUE.to_vec(), None).await?),
            (Kv::Etcd(c), Op::LinRead) => drop(c.get(k, None).await?),
            (Kv::Etcd(c), Op::LocalRead) => {
                drop(c.get(k, Some(etcd_client::GetOptions::new().with_serializable())).await?)
            }
        }
        Ok(())
    }
}

/// One repetition's figures.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// `clients` tasks sending `op` back to back for `secs` (after a short warm-up).
pub async fn drive(kv: &Kv, op: Op, clients: usize, secs: f64) -> Result<Point> {
    let seq = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let warm = Duration::from_millis(300);
    let run = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut kv = kv.clone();
        let seq = seq.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut done = 0u64;
            loop {
                let now = Instant::now();
                if now >= t0 + warm + run {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let n = if op == Op::Write { n } else { n % PRELOAD };
                let ok = kv.run(op, n).await.is_ok();
                let end = Instant::now();
                if now >= t0 + warm && end <= t0 + warm + run {
                    if ok {
                        lat.push(end - now);
                        done += 1;
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (lat, done)
        }));
    }
    let mut all = Latencies::default();
    let mut done = 0;
    for t in tasks {
        let (l, d) = t.await?;
        all.0.extend(l.0);
        done += d;
    }
    Ok(Point {
        ops_per_s: done as f64 / run.as_secs_f64(),
        p50_ms: all.quantile_ms(0.50).unwrap_or(f64::NAN),
        p99_ms: all.quantile_ms(0.99).unwrap_or(f64::NAN),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// A load point: a name, what is sent, how many clients, and per-side handles.
struct Spec {
    case: String,
    op: Op,
    clients: usize,
    ours: Option<Kv>,
    etcd: Option<Kv>,
    peer_case: String,
}

#[derive(Default)]
struct Collected {
    ops: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    failure: Option<String>,
}

impl Collected {
    fn add(&mut self, r: Result<Point>) {
        match r {
            Ok(p) if p.ops_per_s > 0.0 => {
                self.ops.push(p.ops_per_s);
                self.p50.push(p.p50_ms);
                self.p99.push(p.p99_ms);
                self.errors += p.errors;
            }
            Ok(p) => self.failure = Some(format!("no operation succeeded ({} errors)", p.errors)),
            Err(e) => self.failure = Some(format!("{e:#}")),
        }
    }

    fn measured(&self, which: &[f64], what: &str) -> Measured {
        match (&self.failure, which.is_empty()) {
            (Some(f), true) => Measured::NotMeasured(f.clone()),
            _ => Measured::from_samples(which, what),
        }
    }
}

async fn preload(kv: &Kv) -> Result<()> {
    let mut kv = kv.clone();
    for n in 0..PRELOAD {
        kv.run(Op::Write, n).await?;
    }
    Ok(())
}

async fn etcd_kv(urls: Vec<String>) -> Result<Kv> {
    let c = etcd_client::Client::connect(urls, None).await?;
    Ok(Kv::Etcd(c.kv_client()))
}

/// The plain-TCP durable case a TLS case is compared with.
fn plain_case(op: Op, clients: usize) -> String {
    match op {
        Op::Write => format!("write, durable, to the leader, {clients} clients"),
        _ => format!("linearizable read at the leader, {clients} clients"),
    }
}

/// Figures 1 and 2.
pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let secs = ctx.secs;
    let reps = ctx.reps;
    let counts = [1usize, 16, 64];

    // etcd first: one cluster for writes and reads.
    let etcd = if ctx.have_etcd {
        match EtcdCluster::start(&ctx.dir, 3, "kv").await {
            Ok(c) => Some(c),
            Err(e) => {
                ctx.problem(format!("etcd for figures 1–2 not measured: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    let mut etcd_leader_kv = None;
    let mut etcd_follower_kv = None;
    if let Some(e) = &etcd {
        let l = e.wait_leader(&[], Duration::from_secs(20)).await?;
        let f = (l + 1) % 3;
        etcd_leader_kv = Some(etcd_kv(e.urls(&[l])).await?);
        etcd_follower_kv = Some(etcd_kv(e.urls(&[f])).await?);
        if let Some(kv) = &etcd_leader_kv {
            preload(kv).await?;
        }
    }

    // Our durable figures on plain TCP, by case, for the TLS pass to compare with.
    let mut plain: HashMap<String, Collected> = HashMap::new();
    // In memory, durable, then durable on mutual TLS with sealed gossip.
    for (durable, secure) in [(false, false), (true, false), (true, true)] {
        let mode = match (durable, secure) {
            (false, _) => "in memory",
            (true, false) => "durable",
            (true, true) => "durable, TLS",
        };
        let tag = match (durable, secure) {
            (false, _) => "kvm",
            (true, false) => "kvd",
            (true, true) => "kvt",
        };
        let started = if secure {
            CarbonCluster::start_secure(&ctx.carbon, &ctx.dir, 3, durable, tag).await
        } else {
            CarbonCluster::start(&ctx.carbon, &ctx.dir, 3, durable, tag).await
        };
        let cluster = match started {
            Ok(c) => c,
            Err(e) => {
                ctx.problem(format!("ours ({mode}) for figures 1–2 not measured: {e:#}"));
                continue;
            }
        };
        let l = cluster.leader().await?;
        let f = (l + 1) % 3;
        let ours_leader = Kv::Ours(cluster.client(&[l])?);
        let ours_follower = Kv::Ours(cluster.client(&[f])?);
        preload(&ours_leader).await?;

        let mut specs = Vec::new();
        if secure {
            // What TLS costs: the leader's writes and linearizable reads, the
            // same cases as on plain TCP (the peer column is ours without TLS).
            for &c in &counts {
                for (op, what) in [(Op::Write, "write"), (Op::LinRead, "linearizable read")] {
                    let at = if op == Op::Write { "to" } else { "at" };
                    specs.push(Spec {
                        case: format!("{what}, {mode}, {at} the leader, {c} clients"),
                        op,
                        clients: c,
                        ours: Some(ours_leader.clone()),
                        etcd: None,
                        peer_case: plain_case(op, c),
                    });
                }
            }
        }
        for &c in counts.iter().filter(|_| !secure) {
            specs.push(Spec {
                case: format!("write, {mode}, to the leader, {c} clients"),
                op: Op::Write,
                clients: c,
                ours: Some(ours_leader.clone()),
                etcd: etcd_leader_kv.clone(),
                peer_case: format!("put to the leader, {c} clients"),
            });
            specs.push(Spec {
                case: format!("write, {mode}, to a follower, {c} clients"),
                op: Op::Write,
                clients: c,
                ours: Some(ours_follower.clone()),
                etcd: etcd_follower_kv.clone(),
                peer_case: format!("put to a follower (forwarded), {c} clients"),
            });
        }
        if durable && !secure {
            for &c in &[1usize, 16, 64] {
                specs.push(Spec {
                    case: format!("linearizable read at the leader, {c} clients"),
                    op: Op::LinRead,
                    clients: c,
                    ours: Some(ours_leader.clone()),
                    etcd: etcd_leader_kv.clone(),
                    peer_case: format!("linearizable get at the leader, {c} clients"),
                });
                specs.push(Spec {
                    case: format!("local read at a follower, {c} clients"),
                    op: Op::LocalRead,
                    clients: c,
                    ours: Some(ours_follower.clone()),
                    etcd: etcd_follower_kv.clone(),
                    peer_case: format!("serializable get at a follower, {c} clients"),
                });
            }
        }
        // etcd is durable only: it is measured once, alongside our durable pass.
        let with_etcd = durable && !secure;
        let mut ours_c: Vec<Collected> = specs.iter().map(|_| Collected::default()).collect();
        let mut etcd_c: Vec<Collected> = specs.iter().map(|_| Collected::default()).collect();
        for rep in 0..reps {
            for (i, s) in specs.iter().enumerate() {
                if let Some(kv) = &s.ours {
                    let r = drive(kv, s.op, s.clients, secs).await;
                    ctx.log(format!("rep {rep} ours {}: {r:?}", s.case));
                    ours_c[i].add(r);
                }
                if with_etcd && let Some(kv) = &s.etcd {
                    let r = drive(kv, s.op, s.clients, secs).await;
                    ctx.log(format!("rep {rep} etcd {}: {r:?}", s.peer_case));
                    etcd_c[i].add(r);
                }
            }
        }
        for (i, s) in specs.iter().enumerate() {
            let fig = if s.op == Op::Write { "1 write" } else { "2 read" };
            let peer_for = |c: &Collected, which: &dyn Fn(&Collected) -> &Vec<f64>, what: &str| {
                if !ctx.have_etcd {
                    Some(Measured::NotMeasured("etcd not installed".into()))
                } else if etcd.is_none() {
                    Some(Measured::NotMeasured("etcd did not start".into()))
                } else {
                    Some(c.measured(which(c), what))
                }
            };
            let mut note = String::new();
            if (s.case.contains("to a follower") || s.case.contains("at a follower")) && s.op == Op::Write {
                note.push_str(
                    "ours: the follower answers not-leader with the leader's address and the \
                     client re-sends to the leader (a redirect, not a server-side forward); etcd's \
                     follower forwards the proposal itself. ",
                );
            }
            if ours_c[i].errors > 0 || etcd_c[i].errors > 0 {
                note.push_str(&format!("errors: ours {}, etcd {}", ours_c[i].errors, etcd_c[i].errors));
            }
            let peer_name = if secure { "ours, plain TCP" } else { "etcd" };
            let mk = |metric: &str, unit: &str, better, o: Measured, p: Option<Measured>, note: String| Row {
                figure: fig.into(),
                case: s.case.clone(),
                metric: metric.into(),
                unit: unit.into(),
                better,
                ours: o,
                peer_name: peer_name.into(),
                peer_case: s.peer_case.clone(),
                peer: p,
                note,
            };
            let (o, e) = (&ours_c[i], &etcd_c[i]);
            let baseline = plain.get(&s.peer_case);
            let pe = |w: &dyn Fn(&Collected) -> &Vec<f64>, what| {
                if with_etcd {
                    peer_for(e, w, what)
                } else if secure {
                    Some(baseline.map_or_else(
                        || Measured::NotMeasured("the plain TCP pass did not run".into()),
                        |b| b.measured(w(b), what),
                    ))
                } else {
                    None
                }
            };
            let peer_ops = pe(&|c| &c.ops, "throughput");
            let peer_p50 = pe(&|c| &c.p50, "p50");
            let peer_p99 = pe(&|c| &c.p99, "p99");
            let rows = vec![
                mk("throughput", "ops/s", Better::Higher, o.measured(&o.ops, "throughput"), peer_ops, note),
                mk("p50 latency", "ms", Better::Lower, o.measured(&o.p50, "p50"), peer_p50, String::new()),
                mk("p99 latency", "ms", Better::Lower, o.measured(&o.p99, "p99"), peer_p99, String::new()),
            ];
            ctx.report.rows.extend(rows);
        }
        if durable && !secure {
            for (s, c) in specs.iter().zip(ours_c) {
                plain.insert(s.case.clone(), c);
            }
        }
        drop(cluster);
    }
    drop(etcd);
    Ok(())
}
