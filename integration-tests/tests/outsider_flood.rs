//! Issue 22's line on outsiders: with 2,000 outsider connections held on the
//! raft, service and HTTP ports of every member of a 3-member cluster of
//! `carbon agent` processes, killing the leader still gives a new leader and
//! a write within 3 s. (Before, 2,046 idle connections on the followers' raft ports
//! left the cluster without a leader for 20 s.)
//!
//! The outsiders are idle TCP connections from 8 loopback addresses (there is
//! a per-address cap), opened on all six ports at once just before the kill,
//! so that every port's handshake places are full of strangers when the
//! members reconnect. The HTTP port closes what is past its caps as soon as
//! it accepts it: those connections cost the member no descriptor for long.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster_core::testsuite::net::connect_from;
use cluster_core::testsuite::{DEADLINE, init_tracing, wait_until};
use integration_tests::harness::cluster::{ClusterSpec, ProcessCluster};
use tokio::net::TcpStream;

/// Outsider connections per port.
const PER_PORT: usize = 2000;
/// Loopback addresses the outsiders come from: 127.0.0.2 and up.
const SOURCES: usize = 8;
/// The contract: a new leader and a write within this long after the kill.
const FAILOVER: Duration = Duration::from_secs(3);

/// The soft and hard limits on this process's descriptors, from procfs.
fn nofile() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line.split_whitespace().skip(3).map(|n| match n {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    });
    Some((numbers.next()??, numbers.next()??))
}

/// Raises the soft descriptor limit to the hard one (with util-linux's
/// `prlimit`, so the test needs no libc binding); `Err` says why the test
/// cannot hold `needed` descriptors.
fn raise_nofile(needed: u64) -> Result<(), String> {
    let (soft, hard) = nofile().ok_or("cannot read /proc/self/limits")?;
    if soft < hard {
        let raised = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
        if !matches!(raised, Ok(s) if s.success()) {
            return Err(format!("cannot raise the soft limit {soft} to the hard limit {hard} ({raised:?})"));
        }
    }
    let (soft, _) = nofile().ok_or("cannot read /proc/self/limits")?;
    if soft < needed {
        return Err(format!("{soft} descriptors allowed (hard limit {hard}), {needed} needed"));
    }
    Ok(())
}

/// `count` idle connections to `to`, spread over the outsiders' addresses;
/// those the member refuses at once are simply not kept.
async fn outsiders(to: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let source = [127, 0, 0, 2 + (i % SOURCES) as u8];
        if let Ok(stream) = connect_from(source, to).await {
            held.push(stream);
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_under_outsider_floods_is_replaced_and_writes_go_on_within_3_s() {
    init_tracing();
    // The agents inherit the raised limit too.
    let needed = (PER_PORT * 3 * 3 + 1000) as u64;
    if let Err(why) = raise_nofile(needed) {
        eprintln!("skipped: this test holds {needed} connections and {why}");
        return;
    }
    let mut spec = ClusterSpec::new(3, 3);
    spec.config.http = true;
    let mut cluster = ProcessCluster::start(spec).expect("the cluster starts");
    let mut leader = None;
    wait_until(DEADLINE, "a leader", async || {
        leader = cluster.leader().await;
        leader.is_some()
    })
    .await;
    let leader = leader.expect("a leader");
    // Every member's voters are in place before the flood.
    let opts = cluster.probe_options();
    wait_until(DEADLINE, "three voters", || {
        let cluster = &cluster;
        async move { cluster.status_of(leader).await.is_ok_and(|s| s.voters.len() == 3) }
    })
    .await;

    // 2,000 outsiders on the raft, service and HTTP port of every member, at once.
    let mut ports = Vec::new();
    for i in 0..3 {
        let line = cluster.agent(i).start_line().expect("started").clone();
        ports.extend([line.raft, line.service, line.http.expect("the agents serve HTTP")]);
    }
    let floods = futures::future::join_all(ports.iter().map(|&port| outsiders(port, PER_PORT))).await;
    let opened: usize = floods.iter().map(Vec::len).sum();
    eprintln!("{opened} outsider connections opened on {} ports", ports.len());

    let killed = Instant::now();
    cluster.agent(leader).kill().expect("kill the leader");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // Through each survivor in turn (each forwards to the leader it knows),
    // until one write is acknowledged.
    let mut took = None;
    wait_until(DEADLINE, "a write after the kill", async || {
        for &i in &survivors {
            let Ok(client) = cluster.client_of(i, opts.clone()) else { continue };
            if client.set("after-the-kill", "v").await.is_ok() {
                took = Some(killed.elapsed());
                return true;
            }
        }
        false
    })
    .await;
    let took = took.expect("a write after the kill");
    eprintln!("a write went through {took:?} after the leader was killed");
    let new_leader = cluster.leader().await;
    assert!(new_leader.is_some_and(|l| l != leader), "new leader {new_leader:?}, killed {leader}");
    assert!(took < FAILOVER, "the first write after the kill took {took:?}");
    drop(floods);
}
