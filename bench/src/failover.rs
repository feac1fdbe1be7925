//! Figure 3: `kill -9` the leader while a write is sent every 10 ms; the time
//! from the kill to the first successful write sent after it. A fresh 3-member
//! cluster (durable) per repetition, ours and etcd's.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::Ctx;
use crate::kv::{VALUE, key};
use crate::procs::{CarbonCluster, ETCD_ELECTION_MS, ETCD_HEARTBEAT_MS, EtcdCluster};
use crate::report::{Better, Measured, Row};

const TICK: Duration = Duration::from_millis(10);
const PER_WRITE: Duration = Duration::from_secs(3);
const GIVE_UP: Duration = Duration::from_secs(15);

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

async fn ours_once(ctx: &Ctx, rep: usize) -> Result<f64> {
    let mut c = CarbonCluster::start(&ctx.carbon, &ctx.dir, 3, true, &format!("fo{rep}")).await?;
    let leader = c.leader().await?;
    let client = c.client(&[0, 1, 2])?;
    let agents = &mut c.agents;
    let d = measure(
        |n| {
            let client = client.clone();
            async move { client.set(&key(1_000_000 + n), VALUE.to_vec()).await.is_ok() }
        },
        move || async move {
            agents[leader].proc.kill9().await;
            Ok(())
        },
    )
    .await?;
    Ok(d.as_secs_f64())
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

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut ours_err = None;
    let mut etcd_err = None;
    for rep in 0..ctx.reps {
        match ours_once(ctx, rep).await {
            Ok(s) => ours.push(s),
            Err(e) => ours_err = Some(format!("{e:#}")),
        }
        ctx.log(format!("failover rep {rep} ours: {ours:?} {ours_err:?}"));
        if ctx.have_etcd {
            match etcd_once(ctx, rep).await {
                Ok(s) => theirs.push(s),
                Err(e) => etcd_err = Some(format!("{e:#}")),
            }
            ctx.log(format!("failover rep {rep} etcd: {theirs:?} {etcd_err:?}"));
        }
    }
    let m = |v: &[f64], err: Option<String>| match (v.is_empty(), err) {
        (true, Some(e)) => Measured::NotMeasured(e),
        _ => Measured::from_samples(v, "failover"),
    };
    let peer = if ctx.have_etcd { m(&theirs, etcd_err) } else { Measured::NotMeasured("etcd not installed".into()) };
    let o = m(&ours, ours_err);
    ctx.report.rows.push(Row {
        figure: "3 failover".into(),
        case: "kill -9 the leader, a write every 10 ms, 3 members, durable".into(),
        metric: "kill → first successful write".into(),
        unit: "s".into(),
        better: Better::Lower,
        ours: o,
        peer_name: "etcd".into(),
        peer_case: format!("same; heartbeat {ETCD_HEARTBEAT_MS} ms, election timeout {ETCD_ELECTION_MS} ms"),
        peer: Some(peer),
        note: "ours: default raft settings (heartbeat 50 ms, election timeout 150–300 ms); \
               a fresh cluster per repetition; each write bounded by 3 s"
            .into(),
    });
    Ok(())
}
