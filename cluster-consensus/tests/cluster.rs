//! Three members in one process on loopback TCP.

use cluster_consensus::RaftStore;
use cluster_core::{ConsensusStore, ConsensusStoreExt, Error, RaftRole, RaftTiming, WriteOp, WriteRequest};
use cluster_testkit::{DEADLINE, LocalCluster, raft_timing, wait_until};
use std::future::ready;

fn applied(store: &RaftStore) -> u64 {
    store.applied_index().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_followers_point_at_the_leader() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    assert_eq!(leader.status().voters.len(), 3);
    for i in 0..20 {
        assert!(leader.set(&format!("k/{i:02}"), vec![i]).await.unwrap());
    }
    assert!(!leader.set("k/00", vec![9]).await.unwrap());
    cluster.wait_applied(applied(&leader)).await;
    for m in &cluster.members {
        assert_eq!(m.get("k/00").unwrap(), Some(vec![9]));
        let all = m.get_prefix("k/").unwrap();
        assert_eq!(all.len(), 20);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "prefix read in key order");
        assert!(m.get_prefix("k/1").unwrap().iter().all(|(k, _)| k.starts_with("k/1")));
    }
    let follower = cluster.members.iter().find(|m| !m.status().is_leader()).unwrap();
    assert_eq!(follower.status().role(), Some(RaftRole::Voter));
    match follower.set("x", vec![1]).await {
        Err(Error::NotLeader(Some(hint))) => {
            assert_eq!(hint.member_id, leader.member_id());
            let service = &cluster.members[cluster.leader_index().await].service_addr;
            assert_eq!(hint.service_addr.as_ref(), Some(service));
        }
        other => panic!("expected NotLeader with a hint, got {other:?}"),
    }
    assert!(matches!(follower.consistent_get("k/00").await, Err(Error::NotLeader(_))));
    assert_eq!(leader.consistent_get("k/00").await.unwrap(), Some(vec![9]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_every_acknowledged_write() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let old = cluster.leader().await;
    for i in 0..50u8 {
        old.set(&format!("k{i}"), vec![i]).await.unwrap();
    }
    let old_index = cluster.members.iter().position(|m| m.member_id() == old.member_id()).unwrap();
    cluster.stop(old_index).await;
    let new = cluster.leader().await;
    assert_ne!(new.member_id(), old.member_id());
    for i in 0..50u8 {
        assert_eq!(new.consistent_get(&format!("k{i}")).await.unwrap(), Some(vec![i]));
    }
    assert!(new.set("after", vec![1]).await.unwrap());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonvoter_receives_the_data_but_does_not_vote() {
    cluster_testkit::init_tracing();
    let mut cluster = LocalCluster::builder(2).start().await;
    let leader = cluster.leader().await;
    leader.set("before", vec![1]).await.unwrap();
    let nonvoter = cluster.open_new().await;
    leader.add_nonvoter(nonvoter.member_id(), nonvoter.endpoints().clone()).await.unwrap();
    // add_nonvoter returns once it applied what the leader had.
    assert_eq!(nonvoter.get("before").unwrap(), Some(vec![1]));
    leader.set("after", vec![2]).await.unwrap();
    cluster.wait_applied(applied(&leader)).await;
    assert_eq!(nonvoter.get("after").unwrap(), Some(vec![2]));
    let status = leader.status();
    assert!(status.nonvoters.contains_key(&nonvoter.member_id()));
    assert!(!status.voters.contains_key(&nonvoter.member_id()));
    assert_eq!(nonvoter.status().role(), Some(RaftRole::Nonvoter));
    assert_eq!(nonvoter.raft().metrics().borrow().state, openraft::ServerState::Learner);
    // Not a voter: its vote is never needed, so a write commits with the
    // two voters and is acknowledged even when it would stall a 3-voter quorum.
    assert!(matches!(nonvoter.set("x", vec![]).await, Err(Error::NotLeader(Some(_)))));

    // Promote, demote, remove.
    let id = nonvoter.member_id();
    leader.promote(id).await.unwrap();
    wait_until(DEADLINE, "promoted", || ready(leader.status().voters.contains_key(&id))).await;
    leader.demote(id).await.unwrap();
    wait_until(DEADLINE, "demoted", || ready(leader.status().nonvoters.contains_key(&id))).await;
    leader.remove(id).await.unwrap();
    wait_until(DEADLINE, "removed", || ready(!leader.status().all_members().contains(&id))).await;
    let follower = cluster
        .members
        .iter()
        .find(|m| m.member_id() != leader.member_id() && m.member_id() != nonvoter.member_id())
        .unwrap()
        .store
        .clone();
    leader.remove(follower.member_id()).await.unwrap();
    wait_until(DEADLINE, "one voter left", || ready(leader.status().voters.len() == 1)).await;
    cluster.shutdown().await;
}

fn snapshot_timing() -> RaftTiming {
    RaftTiming { snapshot_after_entries: 20, keep_entries_after_snapshot: 0, ..raft_timing() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_after_purge_catches_up_by_snapshot() {
    cluster_testkit::init_tracing();
    let mut cluster = LocalCluster::builder(1).timing(snapshot_timing()).start().await;
    let leader = cluster.leader().await;
    for i in 0..100u32 {
        leader.set(&format!("k{i:03}"), i.to_be_bytes().to_vec()).await.unwrap();
    }
    leader.allocate_short_id(leader.member_id()).await.unwrap();
    let mut metrics = leader.raft().metrics();
    tokio::time::timeout(DEADLINE, metrics.wait_for(|m| m.purged.is_some_and(|p| p.index > 50)))
        .await
        .expect("log purged in time")
        .unwrap();
    let late = cluster.open_new().await;
    leader.add_nonvoter(late.member_id(), late.endpoints().clone()).await.unwrap();
    assert!(late.raft().metrics().borrow().snapshot.is_some(), "caught up by snapshot");
    assert_eq!(late.get_prefix("k").unwrap(), leader.get_prefix("k").unwrap());
    assert_eq!(late.short_ids().unwrap(), leader.short_ids().unwrap());
    assert_eq!(late.revision(), leader.revision());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_over_10_mb_installs_on_a_new_member() {
    cluster_testkit::init_tracing();
    let timing = RaftTiming { snapshot_after_entries: 12, keep_entries_after_snapshot: 0, ..raft_timing() };
    let mut cluster = LocalCluster::builder(1).timing(timing.clone()).start().await;
    let leader = cluster.leader().await;
    let value: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for i in 0..12 {
        leader.set(&format!("big{i:02}"), value.clone()).await.unwrap();
    }
    let big_until = 13; // indexes 0 (membership) and 1 (blank), then 12 big values
    let mut metrics = leader.raft().metrics();
    // Keep no `Ref` of the metrics: it would block raft from publishing them.
    let first = tokio::time::timeout(DEADLINE, metrics.wait_for(|m| m.snapshot.is_some())).await.is_ok();
    assert!(first, "a first snapshot was built");
    // Small writes, then a snapshot holding every big value: the log left
    // after purging holds only small entries (openraft bounds an
    // AppendEntries by the heartbeat interval).
    for i in 0..4 {
        leader.set(&format!("small{i:02}"), vec![1]).await.unwrap();
    }
    leader.raft().trigger().snapshot().await.unwrap();
    let purged =
        tokio::time::timeout(DEADLINE, metrics.wait_for(|m| m.purged.is_some_and(|p| p.index >= big_until)))
            .await
            .is_ok();
    assert!(purged, "log not purged: {:?}", leader.raft().metrics().borrow().clone());
    let late = cluster.open_new().await;
    leader.add_nonvoter(late.member_id(), late.endpoints().clone()).await.unwrap();
    assert!(
        late.raft().metrics().borrow().snapshot.is_some_and(|s| s.index >= big_until),
        "caught up by snapshot"
    );
    let got = late.get_prefix("big").unwrap();
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|(_, v)| *v == value));
    cluster.shutdown().await;
}

#[cfg(feature = "durable")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_reopened_from_their_directories_keep_their_state() {
    cluster_testkit::init_tracing();
    let timing = RaftTiming { snapshot_after_entries: 30, ..raft_timing() };
    let mut cluster = LocalCluster::builder(3).durable(true).timing(timing).start().await;
    let leader = cluster.leader().await;
    for i in 0..80u8 {
        leader.set(&format!("k{i:02}"), vec![i]).await.unwrap();
    }
    let holder = leader.member_id();
    let id = leader.allocate_short_id(holder).await.unwrap();
    let index = applied(&leader);
    let term_before = leader.status().term;
    cluster.wait_applied(index).await;
    cluster.shutdown().await;

    cluster.restart_all().await;
    for m in &cluster.members {
        assert!(m.is_initialized().await.unwrap());
        m.bootstrap().await.unwrap(); // harmless when initialized
    }
    let leader = cluster.leader().await;
    // Leadership after a restart comes from an election, never from the old
    // leader resuming in its term: a resumed leader trusts a committed index
    // persisted lazily, and can serve a stale read (found by the fault tests).
    assert!(
        leader.status().term > term_before,
        "the leader resumed in term {} without an election",
        leader.status().term
    );
    cluster.wait_applied(index).await;
    for m in &cluster.members {
        assert_eq!(m.get_prefix("k").unwrap().len(), 80, "member {}", m.member_id());
        assert_eq!(m.get("k79").unwrap(), Some(vec![79]));
        assert_eq!(m.short_ids().unwrap().get(&holder), Some(&id));
    }
    assert_eq!(leader.allocate_short_id(holder).await.unwrap(), id, "the same short id after a restart");
    assert_eq!(leader.consistent_get("k00").await.unwrap(), Some(vec![0]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_is_applied_once() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(1).start().await;
    let leader = cluster.leader().await;
    let req = WriteRequest::new(WriteOp::Set { key: "k".into(), value: vec![1] });
    let first = leader.write(req.clone()).await.unwrap();
    let revision = leader.revision();
    leader.delete("k").await.unwrap();
    let retry = leader.write(req).await.unwrap();
    assert_eq!(retry, first);
    assert_eq!(leader.get("k").unwrap(), None, "the retry did not set the key again");
    assert_eq!(leader.revision(), revision + 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_semantics() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(1).start().await;
    let s = cluster.leader().await;
    let o = s.compare_and_set("k", None, Some(vec![1])).await.unwrap();
    assert!(o.succeeded && o.current == Some(vec![1]));
    let o = s.compare_and_set("k", None, Some(vec![2])).await.unwrap();
    assert!(!o.succeeded && o.current == Some(vec![1]));
    let o = s.compare_and_set("k", Some(vec![9]), Some(vec![2])).await.unwrap();
    assert!(!o.succeeded && o.current == Some(vec![1]));
    let o = s.compare_and_set("k", Some(vec![1]), Some(vec![2])).await.unwrap();
    assert!(o.succeeded && o.current == Some(vec![2]));
    let o = s.compare_and_set("k", Some(vec![2]), None).await.unwrap();
    assert!(o.succeeded && o.current.is_none());
    assert_eq!(s.get("k").unwrap(), None);
    let o = s.compare_and_set("absent", None, None).await.unwrap();
    assert!(o.succeeded && o.current.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ids_are_lowest_free_idempotent_and_released() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(1).start().await;
    let s = cluster.leader().await;
    let members: Vec<_> = (1..=4u64).map(cluster_core::MemberId::from).collect();
    for (i, m) in members.iter().enumerate() {
        assert_eq!(s.allocate_short_id(*m).await.unwrap().get(), i as u32 + 1);
    }
    assert_eq!(s.allocate_short_id(members[2]).await.unwrap().get(), 3);
    assert!(s.release_short_id(members[1]).await.unwrap());
    assert!(!s.release_short_id(members[1]).await.unwrap());
    let newcomer = cluster_core::MemberId::from(99);
    assert_eq!(s.allocate_short_id(newcomer).await.unwrap().get(), 2);
    assert_eq!(s.short_ids().unwrap().len(), 4);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_changes_in_revision_order_on_every_member() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(3).start().await;
    let leader = cluster.leader().await;
    let follower = cluster.members.iter().find(|m| !m.status().is_leader()).unwrap();
    let mut on_follower = follower.watch("w/");
    let mut on_leader = leader.watch("w/");
    for i in 0..10u8 {
        leader.set(&format!("w/{i}"), vec![i]).await.unwrap();
        leader.set("other", vec![i]).await.unwrap();
    }
    leader.delete("w/0").await.unwrap();
    for watch in [&mut on_follower, &mut on_leader] {
        let mut last = 0;
        for i in 0..10u8 {
            let e = tokio::time::timeout(DEADLINE, watch.recv()).await.unwrap().unwrap().unwrap();
            assert_eq!((e.key.as_str(), e.value.as_deref()), (format!("w/{i}").as_str(), Some(&[i][..])));
            assert!(e.revision > last);
            last = e.revision;
        }
        let e = tokio::time::timeout(DEADLINE, watch.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!((e.key.as_str(), e.value), ("w/0", None));
        assert!(e.revision > last);
    }
    cluster.shutdown().await;
    assert!(on_follower.recv().await.is_none(), "a watch ends when the store stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_task_and_releases_the_port() {
    cluster_testkit::init_tracing();
    let cluster = LocalCluster::builder(1).start().await;
    let s = cluster.leader().await;
    let addr = s.raft_addr();
    let mut status = s.status_changes();
    s.shutdown().await.unwrap();
    // The sender is gone once the status task ended; changes may still be queued.
    while status.changed().await.is_ok() {}
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
    assert!(matches!(s.set("k", vec![]).await, Err(Error::ShuttingDown)));
    s.shutdown().await.unwrap(); // twice is fine
}
