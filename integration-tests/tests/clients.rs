//! Issue 24, a client member cut from every replica, in one process on
//! simulated time: gossip on the simulation's datagram network, raft and
//! the service on `cluster_rpc::memnet` (`integration_tests::sim`'s
//! networks), so the cut covers every port and no root is needed.
//!
//! What a user of the cut member's `Cluster` relies on: its writes and its
//! reads of user keys (a client member reads them at a replica) fail with a
//! typed `Unavailable` error within the operation timeout (no hang), its
//! local view of the cluster's records (`members()`) stays, and after the
//! heal its watch goes on with no gap and no repeat, while neither its reads
//! nor its view ever went backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster_core::ErrorKind;
use cluster_facade::{Cluster, ClusterConfig, RaftRole};
use cluster_gossip::sim::SimNetwork;
use cluster_testkit::wait_until;
use futures::StreamExt;
use integration_tests::sim::{Faults, gossip_addr, member_ip};
use tokio::time::Instant;

const MEMBERS: usize = 5;
/// The operation timeout of every member's store.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Generous, in simulated time.
const DEADLINE: Duration = Duration::from_secs(300);

/// Member slot `i` on the simulated networks: 3 replicas (all voters), so
/// two of the five are client members.
fn config(i: usize, faults: &Faults) -> ClusterConfig {
    let mut c = ClusterConfig {
        cluster_id: "clients".into(),
        host: member_ip(i).to_string(),
        gossip_port: gossip_addr(i).port(),
        grid_port: 7000,
        http_port: None,
        network: faults.net(i),
        num_voters: 3,
        replicas: 3,
        ..ClusterConfig::default()
    };
    if i > 0 {
        c.seeds = vec![gossip_addr(0).to_string()];
    }
    c.timeouts.operation_ms = OP_TIMEOUT.as_millis() as u64;
    c.timeouts.failure_grace_ms = 3_000;
    c.timeouts.short_id_reap_ms = 600_000;
    c
}

/// Faults of a seed with short links (at most 20 ms), found from seed 1 on.
fn quiet_faults() -> Faults {
    (1..).map(Faults::new).find(|f| f.max_delay() <= Duration::from_millis(20)).expect("a seed")
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    wait_until(DEADLINE, what, || std::future::ready(cond())).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_member_cut_from_every_replica_fails_writes_keeps_its_view_and_resumes() {
    let faults = quiet_faults();
    SimNetwork::install(Some(SimNetwork::new(Arc::new(faults.clone()))));
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(Cluster::start(config(i, &faults)).await.expect("a member starts"));
    }
    wait("3 replicas, 2 client members, every member recorded", || {
        members.iter().filter(|m| m.raft_role() == RaftRole::Client).count() == 2
            && members.iter().all(|m| m.members().is_ok_and(|r| r.len() == MEMBERS))
    })
    .await;
    let cut = members.iter().position(|m| m.raft_role() == RaftRole::Client).expect("a client member");
    let writer = members.iter().position(|m| m.raft_role().votes()).expect("a voter");
    let client = members[cut].clone();
    let write = |i: usize| {
        let store = members[writer].store().clone();
        async move { store.set(&format!("w/{i:02}"), vec![i as u8]).await.expect("a write") }
    };

    // The cut member's watch, from what it reads before anything is written.
    let (from, _) = client.store().get_prefix_with_revision("w/").await.expect("a read at a replica");
    let mut stream = Box::pin(client.store().watch("w/", Some(from + 1)));
    // Its reads (user keys at replicas, records in its view), sampled all
    // along: neither may ever go back. Reads fail while it is cut off.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut reads, mut view) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if let Ok((revision, _)) = client.store().get_prefix_with_revision("w/").await {
                    assert!(revision >= reads, "the client's reads went back from {reads} to {revision}");
                    reads = revision;
                }
                let (revision, _) = client
                    .store()
                    .get_prefix_with_revision("carbon-grid/")
                    .await
                    .expect("a read of its view");
                assert!(revision >= view, "the client's view went back from {view} to {revision}");
                view = revision;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            reads
        })
    };
    for i in 0..10 {
        write(i).await;
    }
    wait_until(DEADLINE, "the cut member reads the first writes", async || {
        client.store().get("w/09").await.ok().flatten().is_some()
    })
    .await;
    let listed = client.members().expect("its members").len();

    // Cut both ways from every other member, on every port.
    for j in (0..MEMBERS).filter(|&j| j != cut) {
        faults.cut(cut, j);
        faults.cut(j, cut);
    }
    let started = Instant::now();
    let err = client.store().set("isolated", b"x".to_vec()).await.expect_err("a write while cut off");
    let took = started.elapsed();
    eprintln!("a write through the cut client member: {err} (kind {:?}) after {took:?}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Unavailable, "a typed error: {err}");
    assert!(took <= OP_TIMEOUT + Duration::from_secs(5), "the write hung for {took:?}");
    let started = Instant::now();
    let err = client.store().get("w/09").await.expect_err("a read of a user key while cut off");
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "a typed error: {err}");
    assert!(took <= OP_TIMEOUT + Duration::from_secs(5), "the read hung for {took:?}");
    // Its local view stays: the members.
    assert_eq!(client.members().expect("its members").len(), listed);
    // The others go on, past the cut member's failure grace.
    for i in 10..20 {
        write(i).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(client.members().expect("its members").len(), listed, "its view stays while cut off");

    faults.heal();
    // Its watch goes on: every change once, in order.
    let events: Vec<_> = tokio::time::timeout(DEADLINE, (&mut stream).take(20).collect::<Vec<_>>())
        .await
        .expect("20 events after the heal");
    let keys: Vec<String> = events.iter().map(|e| e.as_ref().expect("an event").key.clone()).collect();
    assert_eq!(keys, (0..20).map(|i| format!("w/{i:02}")).collect::<Vec<_>>(), "no gap, no repeat");
    let revisions: Vec<u64> = events.iter().map(|e| e.as_ref().expect("an event").revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "revisions only grow: {revisions:?}");
    // And it writes again, and reads what it wrote.
    client.store().set("healed", b"1".to_vec()).await.expect("a write after the heal");
    assert_eq!(client.store().get("healed").await.expect("a read after the heal"), Some(b"1".to_vec()));

    stop.store(true, Ordering::Relaxed);
    let last = sampler.await.expect("reads and view never went back");
    assert!(last > 0);
    for m in members {
        let _ = tokio::time::timeout(Duration::from_secs(30), m.abort()).await;
    }
    SimNetwork::install(None);
}
