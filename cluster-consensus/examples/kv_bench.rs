//! Write and read figures of a local 3-member cluster, in memory and durable.
//!
//! `cargo run --release -p cluster-consensus --example kv_bench [ops]`
//!
//! Prints throughput and p50/p99 latency of `set` with 1, 16 and 64
//! concurrent writers on the leader (32-byte keys, 64-byte values), and of
//! linearizable gets. No assertions: figures only.

use std::time::{Duration, Instant};

use cluster_consensus::RaftStore;
use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
use cluster_core::{ConsensusConfig, ConsensusStore, ConsensusStoreExt, MemberId, RaftTiming};

fn config(data_dir: Option<std::path::PathBuf>) -> ConsensusConfig {
    ConsensusConfig {
        member_id: MemberId::generate(),
        cluster_id: "bench".to_owned(),
        raft_listen_addr: "127.0.0.1:0".parse().expect("an address"),
        advertise_host: "127.0.0.1".to_owned(),
        service_addr: "127.0.0.1:1".to_owned(),
        data_dir,
        timing: RaftTiming {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
            ..RaftTiming::default()
        },
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        rpc_timeout: Duration::from_secs(1),
        limits: Default::default(),
    }
}

async fn cluster(durable: bool, dir: &std::path::Path) -> cluster_core::Result<Vec<RaftStore>> {
    let mut members: Vec<RaftStore> = Vec::new();
    for i in 0..3 {
        let data_dir = durable.then(|| dir.join(format!("m{i}")));
        let store = RaftStore::open(config(data_dir)).await?;
        if i == 0 {
            store.bootstrap().await?;
        } else {
            members[0].add_nonvoter(store.member_id(), store.endpoints().clone()).await?;
            ConsensusStore::promote(&members[0], store.member_id()).await?;
        }
        members.push(store);
    }
    Ok(members)
}

fn report(name: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{name:<40} {:>9.0} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}

async fn writes(leader: &RaftStore, writers: usize, ops: usize, label: &str) -> cluster_core::Result<()> {
    let per_writer = ops / writers;
    let value = vec![7u8; 64];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let leader = leader.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let key = format!("bench/{w:04}/{i:020}");
                let t = Instant::now();
                leader.set(&key, value.clone()).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, cluster_core::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| cluster_core::Error::Internal(e.to_string()))??);
    }
    report(&format!("{label} set, {writers} writers"), all, start.elapsed());
    Ok(())
}

async fn reads(leader: &RaftStore, ops: usize, label: &str) -> cluster_core::Result<()> {
    let start = Instant::now();
    let mut lat = Vec::with_capacity(ops);
    for i in 0..ops {
        let t = Instant::now();
        leader.consistent_get(&format!("bench/0000/{:020}", i % 100)).await?;
        lat.push(t.elapsed());
    }
    report(&format!("{label} linearizable get, 1 reader"), lat, start.elapsed());
    Ok(())
}

#[tokio::main]
async fn main() -> cluster_core::Result<()> {
    let ops: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    for durable in [false, true] {
        let label = if durable { "durable" } else { "memory" };
        let dir = std::env::temp_dir().join(format!("kv_bench-{}", MemberId::generate()));
        let members = cluster(durable, &dir).await?;
        let leader = members.iter().find(|m| m.status().is_leader()).cloned().unwrap_or(members[0].clone());
        writes(&leader, 1, ops / 2, label).await?;
        writes(&leader, 16, ops, label).await?;
        writes(&leader, 64, ops * 2, label).await?;
        reads(&leader, ops / 2, label).await?;
        for m in &members {
            m.shutdown().await?;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
