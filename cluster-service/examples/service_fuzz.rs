//! Feeds a service server random frames and mutated valid frames (seeded)
//! and prints how many panics they caused: 0 is the only good answer.
//!
//! ```sh
//! cargo run -p cluster-service --example service_fuzz -- [SEED] [FRAMES_PER_KIND]
//! ```
//!
//! Defaults: seed 1, 100,000 random and 100,000 mutated frames.
//! `tests/service_fuzz.rs` runs a short version.

use std::process::ExitCode;

use cluster_core::testsuite::fuzz::long_run;
use cluster_service::{ServerConfig, ServiceServer};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster};

fn main() -> ExitCode {
    long_run(100_000, |seed, per_kind| async move {
        let cluster = FakeCluster::new(1);
        cluster.set_leader(Some(0));
        let server = ServiceServer::bind("127.0.0.1:0", cluster.member(0), ServerConfig::new(CLUSTER))
            .await
            .expect("a port");
        cluster.set_service_addr(0, server.local_addr());
        let report =
            cluster_testkit::fuzz::service::feed(server.local_addr(), CLUSTER, seed, per_kind, per_kind)
                .await;
        println!(
            "{} random + {} mutated frames, {} answered, {} reconnects",
            report.random, report.mutated, report.answered, report.reconnects
        );
        server.shutdown().await;
        true
    })
}
