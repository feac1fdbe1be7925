//! Figures for the forwarding service over real raft members (in memory, one
//! process, loopback): write throughput and latency through a follower's
//! proxy against the leader's own proxy, for 1, 16 and 64 concurrent callers,
//! and the time from the leader's stop to the first forwarded write that
//! succeeds.
//!
//! Run with `cargo run -p cluster-service --release --example forward_bench`.
//! It prints figures and asserts nothing.

// The write future spawned per caller is deep; with the test kit in the
// graph rustc needs more than its default query depth to lay it out.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster_consensus::RaftStore;
use cluster_service::Proxy;
use cluster_testkit::LocalCluster;

const RUN: Duration = Duration::from_secs(3);

/// Callers writing through `proxy` for `RUN`; returns (ops/s, p50, p99).
async fn measure(proxy: &Proxy<RaftStore>, callers: usize, tag: &str) -> (f64, Duration, Duration) {
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let proxy = proxy.clone();
            let seq = seq.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < RUN {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    proxy.set(&format!("bench/{tag}/{n}"), n.to_le_bytes().to_vec()).await.expect("write");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (all.len() as f64 / elapsed.as_secs_f64(), pct(0.50), pct(0.99))
}

#[tokio::main]
async fn main() {
    // Logs only when asked for (RUST_LOG=...): figures stay readable.
    if std::env::var_os("RUST_LOG").is_some() {
        cluster_testkit::init_tracing();
    }
    let cluster = LocalCluster::start(3, 0).await;
    let leader = cluster.leader_index().await;
    let follower = cluster.follower().await;
    println!("3 voters in memory, loopback; {RUN:?} per row; timing {:?}", cluster_testkit::raft_timing());
    println!("{:<28} {:>8} {:>12} {:>10} {:>10}", "path", "callers", "writes/s", "p50", "p99");
    for callers in [1, 16, 64] {
        for (name, i) in [("leader (local)", leader), ("follower (forwarded)", follower)] {
            let tag = format!("{callers}-{i}");
            let (rate, p50, p99) = measure(&cluster.members[i].proxy, callers, &tag).await;
            println!("{name:<28} {callers:>8} {rate:>12.0} {:>10.2?} {:>10.2?}", p50, p99);
        }
    }
    cluster.shutdown().await;

    println!("\nleader stop -> first successful write through a follower's proxy");
    for run in 1..=3 {
        let cluster = LocalCluster::start(3, 0).await;
        let leader = cluster.leader_index().await;
        let follower = cluster.follower().await;
        let proxy = cluster.members[follower].proxy.clone();
        proxy.set("warm", "up").await.expect("warm-up write");
        let stopped_at = Instant::now();
        cluster.members[leader].stop().await;
        let stop_took = stopped_at.elapsed();
        proxy.set("after-failover", "x").await.expect("write after failover");
        let total = stopped_at.elapsed();
        println!(
            "run {run}: {} ms (of which stopping the leader {} ms)",
            total.as_millis(),
            stop_took.as_millis()
        );
        cluster.shutdown().await;
    }
}
