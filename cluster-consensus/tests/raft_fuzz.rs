//! A short run of `examples/raft_fuzz.rs`: 1,000 random and 1,000 mutated
//! valid frames to a follower and to the leader of a 3-member cluster; no
//! panic, every frame answered, raft running everywhere, writes commit.
//! (A frame forged with the leader's identity can make a follower's log
//! diverge; without authentication raft cannot tell, so one member may lag.)

use cluster_core::ConsensusStore;
use cluster_core::testsuite::fuzz::{count_panics, panics};
use cluster_testkit::fuzz::raft as fuzz;
use cluster_testkit::{DEADLINE, LocalCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_cause_no_panic() {
    cluster_testkit::init_tracing();
    count_panics();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let follower =
        cluster.members.iter().find(|m| m.member_id() != leader.member_id()).unwrap().store.clone();
    for (seed, target) in [(7, follower), (8, leader)] {
        let templates = fuzz::templates(&target, "test-cluster");
        let report = fuzz::feed(target.raft_addr(), "test-cluster", &templates, seed, 500, 500).await;
        assert_eq!(report.random + report.mutated, 1000);
        // Every frame is answered, or was on a connection the server closed
        // after a frame whose header it could not read.
        assert_eq!(report.answered + report.unanswered, 1000, "{report:?}");
        assert!(report.unanswered <= 32 * report.reconnects, "{report:?}");
        assert!(report.refused > 0 && !report.guarded.is_empty() && report.by_raft > 0, "{report:?}");
    }
    assert_eq!(panics(), 0, "panics while fuzzing");
    assert_eq!(fuzz::stopped(&cluster.stores()), vec![]);
    let lagging = fuzz::cluster_still_serves(&cluster.stores(), "after-fuzz", DEADLINE).await.unwrap();
    assert!(lagging.len() <= 1, "a write commits, so a majority applies it: {lagging:?}");
    cluster.shutdown().await;
}
