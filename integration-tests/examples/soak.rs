//! The soak: a longer fault run with more operations and random faults, one at a
//! time, each followed by a bounded recovery; then the checker and every invariant.
//!
//! ```sh
//! CARBON_SOAK_SECS=600 CARGO_TARGET_DIR=/work/target-faults \
//!     cargo run --release -p integration-tests --example soak
//! ```
//!
//! Environment: `CARBON_SOAK_SECS` (default 300), `CARBON_SOAK_SEED` (default 1),
//! `CARBON_SOAK_CLIENTS` (default 8), `CARBON_BIN` (a prebuilt `carbon`; otherwise it
//! is built like in the tests). As root with `ip netns`, members run in network
//! namespaces and partitions join the faults. Prints operations, faults injected,
//! unknown outcomes, violations, lost writes, duplicate short ids and recovery
//! times p50/p99/max; exits 1 if an invariant failed.

use std::time::Duration;

use integration_tests::harness::cluster::ClusterSpec;
use integration_tests::harness::netns::NetLab;
use integration_tests::harness::run::{FaultRun, RunSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let secs = env_u64("CARBON_SOAK_SECS", 300);
    let seed = env_u64("CARBON_SOAK_SEED", 1);
    let netns = match NetLab::unavailable() {
        None => true,
        Some(why) => {
            eprintln!("partitions skipped: {why}");
            false
        }
    };
    let mut cluster = ClusterSpec::new(5, 3);
    if netns {
        cluster = cluster.with_netns();
    }
    let mut spec = RunSpec::new(format!("soak {secs} s seed {seed} netns {netns}"), cluster);
    spec.workload.clients = usize::try_from(env_u64("CARBON_SOAK_CLIENTS", 8)).unwrap_or(8);
    spec.workload.keys = 6;
    spec.workload.seed = seed;
    spec.workload.pace = Duration::from_millis(2);
    // Shorter than the tests' 10 s: more operations end unknown, as in Jepsen.
    spec.workload.op_timeout = Duration::from_secs(4);
    spec.workload.max_ops = u64::MAX;
    spec.workload.max_duration = Duration::from_secs(secs + 600);
    spec.workload.rotate_keys_every = Some(Duration::from_secs(30));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut run = FaultRun::start(spec).await?;
    let n = run.cluster.len();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..4_000))).await;
        let leader = run.wait_leader().await.ok();
        let victim = match (leader, rng.random_bool(0.5)) {
            (Some(leader), true) => leader,
            _ => rng.random_range(0..n),
        };
        let kinds = if netns { 5 } else { 3 };
        match rng.random_range(0..kinds) {
            0 => {
                run.kill(victim)?;
                run.recover().await;
                run.restart(victim).await?;
            }
            1 => {
                run.kill(victim)?;
                run.restart(victim).await?;
            }
            2 => {
                run.pause(victim)?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..4_000))).await;
                run.resume(victim)?;
            }
            3 => {
                let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
                run.partition(&[&[victim], &others])?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..5_000))).await;
                run.heal()?;
            }
            _ => {
                let minority = [victim, (victim + 1) % n];
                let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
                run.partition(&[&minority, &majority])?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..5_000))).await;
                run.heal()?;
            }
        }
        run.recover().await;
        let stats = run.workload_stats();
        eprintln!(
            "[{:>4} s left] faults {} ops {} unknown {} — last fault: {}",
            end.saturating_duration_since(Instant::now()).as_secs(),
            run.faults().len(),
            stats.ops,
            stats.unknown,
            run.faults().last().map(String::as_str).unwrap_or("-"),
        );
    }
    let summary = run.finish().await;
    println!("{summary}");
    if !summary.is_ok() {
        std::process::exit(1);
    }
    Ok(())
}
