//! Feeds a service server random frames and mutated valid frames (seeded)
//! and prints how many panics they caused: 0 is the only good answer.
//!
//! ```sh
//! cargo run -p cluster-service --example service_fuzz -- [SEED] [FRAMES_PER_KIND]
//! ```
//!
//! Defaults: seed 1, 100,000 random and 100,000 mutated frames.
//! `tests/service_fuzz.rs` runs a short version.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fuzz/mod.rs"]
mod fuzz;

use std::process::ExitCode;
use std::time::Instant;

use cluster_service::{ServerConfig, ServiceServer};
use common::{CLUSTER, FakeCluster};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (seed, per_kind) = cluster_core::testsuite::fuzz::seed_and_frames(100_000);
    fuzz::count_panics();
    let cluster = FakeCluster::new(1);
    cluster.set_leader(Some(0));
    let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), ServerConfig::new(CLUSTER))
        .await
        .expect("a port");
    cluster.set_service_addr(0, server.local_addr());
    let started = Instant::now();
    let report = fuzz::feed(server.local_addr(), CLUSTER, seed, per_kind, per_kind).await;
    let panics = fuzz::panics();
    println!(
        "seed {seed}: {} random + {} mutated frames in {:.1?}, {} answered, {} reconnects; panics: {panics}",
        report.random,
        report.mutated,
        started.elapsed(),
        report.answered,
        report.reconnects
    );
    server.shutdown().await;
    if panics == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
