//! Helpers shared by the facade's tests: a fast test configuration and a
//! local cluster builder of `Cluster`s, and the `carbon` binary of this
//! package for the kit's agent harness (`cluster_testkit::agent`). Waits and
//! logs come from the kit.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::time::Duration;

use std::path::Path;
use std::process::Command;

use cluster_facade::{Cluster, ClusterConfig, RaftRole};
pub use cluster_testkit::agent::{Agent, AgentSpec, tls_flags};

pub use cluster_testkit::{DEADLINE, init_tracing, wait_until};

/// The `carbon` program of this build (cargo builds it for this package's tests).
pub fn carbon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carbon"))
}

/// `carbon ARGS` against `service` of cluster `cluster_id`, with these TLS
/// flags only (the `CARBON_TLS_*` variables of the test's environment
/// removed), answering within `timeout` (`carbon`'s `--timeout`).
pub fn carbon_tls_client(
    args: &[&str],
    service: &str,
    cluster_id: &str,
    tls: &[String],
    timeout: &str,
) -> std::process::Output {
    carbon()
        .args(args)
        .args(["--service", service, "--cluster-id", cluster_id, "--timeout", timeout])
        .args(tls)
        .env_remove("CARBON_TLS_CA")
        .env_remove("CARBON_TLS_CERT")
        .env_remove("CARBON_TLS_KEY")
        .output()
        .unwrap()
}

/// An agent of this build's `carbon` (the kit finds the binary itself
/// elsewhere; here cargo names it).
pub fn spec() -> AgentSpec {
    AgentSpec::new("carbon").binary(env!("CARGO_BIN_EXE_carbon"))
}

/// `carbon agent ARGS`, once it printed its start line.
pub fn agent(args: &[String]) -> Agent {
    Agent::start(spec().args(args.iter().cloned()))
}

/// Like [`agent`], with its log lines kept for `Agent::wait_log`.
pub fn agent_logged(args: &[String]) -> Agent {
    Agent::start(spec().args(args.iter().cloned()).logged())
}

/// An agent of configuration file `config` seeded on `seeds`.
pub fn agent_of(config: &Path, seeds: &[&str]) -> Agent {
    Agent::start(spec().config(config).seeds(seeds.iter().copied()))
}

/// `n` agents of configuration file `config`, the first forming the cluster.
pub fn agents_of(config: &Path, n: usize) -> Vec<Agent> {
    Agent::start_cluster(&spec().config(config), n)
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
