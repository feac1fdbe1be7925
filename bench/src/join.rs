//! Figure 4: time from `Cluster::start` to holding a short id, for a member
//! joining a running cluster of 3 and of 10 (in memory, all in this process,
//! the library's default settings). The joiner leaves gracefully after each
//! repetition, so every repetition joins a cluster of the same size.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cluster_facade::{Cluster, ClusterConfig};

use crate::Ctx;
use crate::report::{Better, Measured, Row};

fn config(cluster_id: &str, seed: Option<&str>) -> ClusterConfig {
    ClusterConfig {
        cluster_id: cluster_id.to_string(),
        host: "127.0.0.1".into(),
        seeds: seed.map(|s| vec![s.to_string()]).unwrap_or_default(),
        ..ClusterConfig::default()
    }
}

async fn join_times(n: usize, reps: usize) -> Result<Vec<f64>> {
    let id = format!("bench-join-{n}");
    let first = Cluster::start(config(&id, None)).await.context("first member")?;
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for i in 1..n {
        members.push(Cluster::start(config(&id, Some(&seed))).await.with_context(|| format!("member {i}"))?);
    }
    // Let the voters settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut times = Vec::new();
    let mut result = Ok(());
    for _ in 0..reps {
        let t = Instant::now();
        match Cluster::start(config(&id, Some(&seed))).await {
            Ok(j) => {
                times.push(t.elapsed().as_secs_f64());
                let _ = tokio::time::timeout(Duration::from_secs(10), j.shutdown()).await;
            }
            Err(e) => {
                result = Err(anyhow::Error::from(e).context("joiner"));
                break;
            }
        }
    }
    for m in members.into_iter().rev() {
        let _ = tokio::time::timeout(Duration::from_secs(2), m.abort()).await;
    }
    result.map(|()| times)
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    for n in [3usize, 10] {
        let got = tokio::time::timeout(Duration::from_secs(120), join_times(n, ctx.reps)).await;
        let ours = match got {
            Ok(Ok(t)) => Measured::from_samples(&t, "join"),
            Ok(Err(e)) => Measured::NotMeasured(format!("{e:#}")),
            Err(_) => Measured::NotMeasured("took over 120 s".into()),
        };
        ctx.log(format!("join n={n}: {ours:?}"));
        ctx.report.rows.push(Row {
            figure: "4 join".into(),
            case: format!("a member joins a running cluster of {n} (in memory, in process)"),
            metric: "Cluster::start → holding a short id".into(),
            unit: "s".into(),
            better: Better::Lower,
            ours,
            peer_name: String::new(),
            peer_case: "no peer equivalent".into(),
            peer: None,
            note: String::new(),
        });
    }
    Ok(())
}
