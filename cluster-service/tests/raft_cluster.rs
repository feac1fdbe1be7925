//! The service over real raft members: every operation from a follower and a
//! nonvoter, and a stream of writes across the leader's stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster_core::{
    ConsensusStore, ConsensusStoreExt, MemberInfo, RaftRole, WriteOp, WriteRequest, Writer, keys,
};
use cluster_testkit::{DEADLINE, LocalCluster, init_tracing, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_from_a_follower_and_a_nonvoter() {
    init_tracing();
    let cluster = LocalCluster::start(3, 1).await;
    let leader = &cluster.members[cluster.leader_index().await];
    let follower = cluster.follower().await;
    let nonvoter = cluster.nonvoter();

    // The cluster records its members, as the facade does.
    for m in &cluster.members {
        let info = MemberInfo::new(m.id(), "127.0.0.1", 1, m.store.raft_addr().port(), 2, 3);
        let op = WriteOp::Set { key: keys::member_key(m.id()), value: info.to_bytes() };
        leader.proxy.write_as(Writer::Cluster, WriteRequest::new(op)).await.expect("member record");
    }

    for (name, i) in [("follower", follower), ("nonvoter", nonvoter)] {
        let m = &cluster.members[i];
        let p = &m.proxy;
        let c = m.client();
        let k = |s: &str| format!("{name}/{s}");

        // Through the proxy.
        assert!(p.set(&k("p"), "1").await.unwrap());
        assert!(!p.set(&k("p"), "2").await.unwrap());
        assert_eq!(p.consistent_get(&k("p")).await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(leader.store.consistent_get(&k("p")).await.unwrap(), Some(b"2".to_vec()));
        let cas = p.compare_and_set(&k("p"), Some(b"2".to_vec()), Some(b"3".to_vec())).await.unwrap();
        assert!(cas.succeeded);
        let cas = p.compare_and_set(&k("p"), Some(b"2".to_vec()), None).await.unwrap();
        assert_eq!((cas.succeeded, cas.current), (false, Some(b"3".to_vec())));
        assert!(p.set(&k("gone"), "x").await.unwrap());
        assert!(p.delete(&k("gone")).await.unwrap());
        assert!(!p.delete(&k("gone")).await.unwrap());

        // Through the member's service, with a client that knows only this member.
        assert!(c.set(&k("c"), "a").await.unwrap());
        assert_eq!(c.consistent_get(&k("c")).await.unwrap(), Some(b"a".to_vec()));
        let cas = c.compare_and_set(&k("c"), None, Some(b"b".to_vec())).await.unwrap();
        assert!(!cas.succeeded);
        assert!(c.delete(&k("c")).await.unwrap());
        assert_eq!(c.consistent_get(&k("c")).await.unwrap(), None);

        // Local reads match the leader's once this member caught up.
        cluster.wait_caught_up().await;
        assert_eq!(p.get(&k("p")).await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(c.get(&k("p")).await.unwrap(), Some(b"3".to_vec()));
        assert_eq!(p.get_prefix("").await.unwrap(), leader.store.get_prefix("").unwrap());
        assert_eq!(c.get_prefix(&k("")).await.unwrap(), leader.store.get_prefix(&k("")).unwrap());
        let from_leader = cluster_service::members(&leader.store).unwrap();
        assert_eq!(from_leader.len(), 4);
        assert_eq!(p.members().await.unwrap(), from_leader);
        assert_eq!(c.members().await.unwrap(), from_leader);

        let status = c.status().await.unwrap();
        assert_eq!(status.leader, Some(leader.id()));
        assert_eq!(status.member_id, m.id());
        let role = if name == "nonvoter" { RaftRole::Nonvoter } else { RaftRole::Voter };
        assert_eq!(status.role(), Some(role));
        assert_eq!(
            status.voters.keys().collect::<Vec<_>>(),
            leader.store.status().voters.keys().collect::<Vec<_>>()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_writes_through_a_follower_survives_the_leaders_stop() {
    init_tracing();
    let cluster = LocalCluster::start(3, 0).await;
    let old_leader = cluster.leader_index().await;
    let follower = cluster.follower().await;
    let proxy = cluster.members[follower].proxy.clone();
    // Every applied change under the prefix, as the follower applies it.
    let mut watch = std::pin::pin!(proxy.watch("s/", None));

    const WRITERS: usize = 4;
    const PER_WRITER: usize = 60;
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let proxy = proxy.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let key = format!("s/{w}/{i:03}");
                    // A write applied twice would answer "not created" the second time.
                    let created = proxy.set(&key, format!("{w}-{i}")).await?;
                    assert!(created, "{key} answered as already existing");
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, cluster_core::Error>(())
            })
        })
        .collect();

    // Stop the leader in the middle of the stream.
    let quarter = WRITERS * PER_WRITER / 4;
    wait_until(DEADLINE, "a quarter of the writes acknowledged", || {
        std::future::ready(acked.load(Ordering::SeqCst) >= quarter)
    })
    .await;
    cluster.members[old_leader].stop().await;
    for w in writers {
        w.await.expect("writer task").expect("no error reaches the caller");
    }
    let new_leader = cluster.leader_index().await;
    assert_ne!(new_leader, old_leader);

    // Every acknowledged write is there, exactly once.
    let total = WRITERS * PER_WRITER;
    let entries = cluster.members[new_leader].store.get_prefix("s/").unwrap();
    assert_eq!(entries.len(), total);
    // A marker written last: every change before it was seen once, and no
    // write was applied a second time before it.
    assert!(proxy.set("s/~end", "").await.unwrap());
    let mut changes: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let event = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut watch))
            .await
            .expect("in time")
            .expect("open")
            .unwrap();
        if event.key == "s/~end" {
            break;
        }
        *changes.entry(event.key).or_default() += 1;
    }
    assert_eq!(changes.len(), total);
    assert!(changes.values().all(|&n| n == 1), "a write was applied twice");
    // The store's own shortcut agrees with the proxy about the new leader.
    assert!(cluster.members[new_leader].store.set("after", b"x".to_vec()).await.unwrap());
    cluster.shutdown().await;
}
