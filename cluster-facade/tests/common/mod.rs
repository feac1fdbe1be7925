//! Helpers shared by the facade's tests: a fast test configuration, a local
//! cluster builder, and waiting on a condition with a deadline.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use cluster_facade::{Cluster, ClusterConfig, RaftRole};

/// Generous: a loaded 2-core machine is slow, and a wait ends as soon as its condition holds.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A configuration with quick failure handling, ports from the OS, in memory.
pub fn config(seeds: Vec<String>, num_voters: usize) -> ClusterConfig {
    let mut c = ClusterConfig { seeds, num_voters, cluster_id: "facade-test".into(), ..Default::default() };
    c.timeouts.failure_grace_ms = 1_000;
    c.timeouts.short_id_reap_ms = 30_000;
    c.timeouts.leave_ms = 5_000;
    c.timeouts.start_ms = 60_000;
    c.timeouts.operation_ms = 30_000;
    c
}

/// Waits until `cond` holds, or panics after [`DEADLINE`] naming what it waited for.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_until`] with an async condition.
pub async fn wait_until_async<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let start = tokio::time::Instant::now();
    while !cond().await {
        assert!(start.elapsed() < DEADLINE, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `n` members, the first forming the cluster and the others joining it.
pub async fn start_cluster(n: usize, num_voters: usize) -> Vec<Cluster> {
    let first = Cluster::start(config(vec![], num_voters)).await.expect("first member starts");
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for _ in 1..n {
        members.push(Cluster::start(config(vec![seed.clone()], num_voters)).await.expect("member joins"));
    }
    members
}

/// How many members vote.
pub fn voters(members: &[Cluster]) -> usize {
    members.iter().filter(|m| m.raft_role().votes()).count()
}

/// The index of the leader, if one of `members` leads.
pub fn leader(members: &[Cluster]) -> Option<usize> {
    members.iter().position(|m| m.raft_role() == RaftRole::Leader)
}

/// True when every member's raft view shows exactly `voters` voters and
/// `nonvoters` nonvoters, and the store recorded every one of them.
pub fn settled(members: &[Cluster], voters: usize, nonvoters: usize) -> bool {
    let Some(l) = leader(members) else { return false };
    let s = members[l].consensus_status();
    s.voters.len() == voters
        && s.nonvoters.len() == nonvoters
        && members[l].members().is_ok_and(|r| {
            r.len() == members.len()
                && r.iter().all(|m| m.short_id.is_some() && s.role_of(m.member_id) == Some(m.raft_role))
        })
}

/// Shuts every member down gracefully.
pub async fn shutdown_all(members: Vec<Cluster>) {
    for m in members {
        m.shutdown().await.expect("graceful shutdown");
    }
}
