//! Feeds a member's raft port random frames and mutated valid frames (from a
//! seeded generator) and prints how many panics they caused: 0 is the only
//! good answer. The cluster must still commit writes afterwards.
//!
//! ```sh
//! cargo run -p cluster-consensus --example raft_fuzz -- [SEED] [FRAMES_PER_KIND]
//! ```
//!
//! Defaults: seed 1, 100,000 random and 100,000 mutated frames, half sent to
//! a follower, half to the leader. `tests/raft_fuzz.rs` runs a short version.

use std::process::ExitCode;
use std::time::Duration;

use cluster_core::ConsensusStore;
use cluster_core::testsuite::fuzz::long_run;
use cluster_testkit::LocalCluster;
use cluster_testkit::fuzz::raft as fuzz;

fn main() -> ExitCode {
    long_run(100_000, |seed, per_kind| async move {
        let cluster = LocalCluster::builder(3).start().await;
        let leader = cluster.leader().await;
        let follower = cluster
            .members
            .iter()
            .find(|m| m.member_id() != leader.member_id())
            .expect("3 members")
            .store
            .clone();
        let mut total = fuzz::Report::default();
        for (i, target) in [follower, leader].iter().enumerate() {
            let templates = fuzz::templates(target, "test-cluster");
            let half = |n: u64| if i == 0 { n / 2 } else { n - n / 2 };
            let r = fuzz::feed(
                target.raft_addr(),
                "test-cluster",
                &templates,
                seed.wrapping_add(i as u64),
                half(per_kind),
                half(per_kind),
            )
            .await;
            println!("target {} ({}): {r:?}", target.member_id(), if i == 0 { "follower" } else { "leader" });
            total.random += r.random;
            total.mutated += r.mutated;
            total.answered += r.answered;
        }
        let serves =
            fuzz::cluster_still_serves(&cluster.stores(), "after-fuzz", Duration::from_secs(60)).await;
        let stopped = fuzz::stopped(&cluster.stores());
        println!(
            "{} random + {} mutated frames, {} answered; raft stopped on: {stopped:?}; cluster serves: {serves:?}",
            total.random, total.mutated, total.answered,
        );
        cluster.shutdown().await;
        stopped.is_empty() && serves.is_ok()
    })
}
