//! Helpers shared by the facade's tests: a fast test configuration and a
//! local cluster builder. Waits and logs come from the kit
//! (`cluster_core::testsuite`).
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

use cluster_facade::{Cluster, ClusterConfig, RaftRole};

pub mod http;

pub use cluster_core::testsuite::{DEADLINE, init_tracing, wait_until};

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

/// Starts `n` members like [`start_cluster`], each configuration changed by `tweak`.
pub async fn start_cluster_with(
    n: usize,
    num_voters: usize,
    tweak: impl Fn(&mut ClusterConfig),
) -> Vec<Cluster> {
    let mut c = config(vec![], num_voters);
    tweak(&mut c);
    let first = Cluster::start(c).await.expect("first member starts");
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for _ in 1..n {
        let mut c = config(vec![seed.clone()], num_voters);
        tweak(&mut c);
        members.push(Cluster::start(c).await.expect("member joins"));
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
