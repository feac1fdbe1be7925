//! Encrypted gossip through the facade: a member without the cluster's key
//! never gets into raft or the records, and a key rotation under writes
//! fails no write and reports no member gone.

mod common;

use std::collections::BTreeSet;
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cluster_facade::{Cluster, ClusterConfig, GossipKey, GossipKeys};
use common::*;

fn keyed(seeds: Vec<String>, key: Option<&GossipKey>) -> ClusterConfig {
    let mut c = config(seeds, 3);
    c.gossip_keys = GossipKeys(key.map(|k| vec![k.to_base64()]).unwrap_or_default());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_without_the_key_never_reach_raft_or_the_records() {
    init_tracing();
    let key = GossipKey::generate();
    let first = Cluster::start(keyed(vec![], Some(&key))).await.expect("starts");
    let seed = first.addresses().gossip.to_string();
    let second = Cluster::start(keyed(vec![seed.clone()], Some(&key))).await.expect("joins");
    let members = vec![first, second];
    wait_until(DEADLINE, "two keyed members vote and are recorded", || ready(settled(&members, 2, 0))).await;

    let outsider = |key: Option<GossipKey>| {
        let mut c = keyed(vec![seed.clone()], key.as_ref());
        c.timeouts.start_ms = 4_000;
        Cluster::start(c)
    };
    let (wrong_key, no_key) = tokio::join!(outsider(Some(GossipKey::generate())), outsider(None));
    assert!(wrong_key.is_err(), "a member with another key got a short id");
    assert!(no_key.is_err(), "a member without a key got a short id");

    let ids: BTreeSet<_> = members.iter().map(Cluster::member_id).collect();
    for m in &members {
        let s = m.consensus_status();
        assert_eq!(s.all_members(), ids, "raft membership");
        let recorded: BTreeSet<_> = m.members().expect("records").iter().map(|r| r.member_id).collect();
        assert_eq!(recorded, ids, "records");
    }
    shutdown_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotation_under_writes_fails_no_write_and_loses_no_member() {
    init_tracing();
    let old = GossipKey::generate();
    let first = Cluster::start(keyed(vec![], Some(&old))).await.expect("starts");
    let seed = first.addresses().gossip.to_string();
    let mut members = vec![first];
    for _ in 0..2 {
        members.push(Cluster::start(keyed(vec![seed.clone()], Some(&old))).await.expect("joins"));
    }
    wait_until(DEADLINE, "three members vote and are recorded", || ready(settled(&members, 3, 0))).await;
    let mut events: Vec<_> = members.iter().map(Cluster::grid_events).collect();

    // Writes through a voter that is not necessarily the leader, all along.
    let (stop, written, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (m, stop, written, failed) = (members[1].clone(), stop.clone(), written.clone(), failed.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match m.store().set(&format!("rotation/{i}"), i.to_le_bytes().to_vec()).await {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        })
    };
    // Between the steps, let the workload (and gossip) run on.
    let progress = |n: u64| {
        let written = written.clone();
        let from = written.load(Ordering::Relaxed);
        async move {
            wait_until(DEADLINE, "writes go on", || ready(written.load(Ordering::Relaxed) >= from + n)).await
        }
    };
    progress(20).await;
    let new = GossipKey::generate();
    let rings: Vec<_> = members.iter().map(|m| m.gossip_keyring().expect("keyed")).collect();
    for r in &rings {
        r.install(new.clone()).expect("installs");
    }
    progress(20).await;
    for r in &rings {
        r.use_key(&new).expect("uses");
    }
    progress(20).await;
    for r in &rings {
        r.remove(&old).expect("removes");
    }
    progress(50).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer ends");

    assert_eq!(failed.load(Ordering::Relaxed), 0, "writes failed during the rotation");
    for r in &rings {
        assert_eq!(r.keys().keys(), std::slice::from_ref(&new));
    }
    assert!(settled(&members, 3, 0), "the cluster changed during the rotation");
    for e in &mut events {
        // Only the replay of the three live members: no member left or failed.
        let mut seen = 0;
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(10), e.recv()).await {
            assert_eq!(ev.kind, cluster_facade::GridEventKind::Joined, "rotation caused {ev:?}");
            seen += 1;
        }
        assert_eq!(seen, 3);
    }
    shutdown_all(members).await;
}
