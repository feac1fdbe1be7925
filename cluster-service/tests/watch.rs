//! The key watch over the service, on real raft members: latency across
//! members, resumption after the watcher's member stops, the typed error for
//! a forgotten revision, and the bound on a watcher that does not read.

use std::pin::pin;
use std::time::{Duration, Instant};

use cluster_core::{ConsensusStore, Error, RaftTiming, WatchEvent};
use cluster_rpc::{ClientConfig, RpcError};
use cluster_service::{Request, Response, ServiceClient};
use cluster_testkit::{
    DEADLINE, LOCAL_CLUSTER_ID as CLUSTER, LocalCluster, init_tracing, raft_timing, router_options,
    wait_until,
};
use futures::{Stream, StreamExt};

/// The next event of `events`, within the deadline.
async fn next(events: &mut (impl Stream<Item = cluster_core::Result<WatchEvent>> + Unpin)) -> WatchEvent {
    match tokio::time::timeout(DEADLINE, events.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("no event: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_write_made_through_another_member_within_a_second() {
    init_tracing();
    let cluster = LocalCluster::start(3, 0).await;
    let leader = cluster.leader_index().await;
    let watcher = &cluster.members[(leader + 1) % 3];
    // Written through the other follower: forwarded to the leader, applied everywhere.
    let writer = &cluster.members[(leader + 2) % 3].proxy;
    let client = watcher.client();
    let events = tokio::sync::Mutex::new(Box::pin(client.watch("w/", None)));

    // A watch from now opens at its first poll: write until it saw a write.
    let opening = &events;
    wait_until(DEADLINE, "the watch to open", move || async move {
        writer.set("w/open", "x").await.expect("write");
        // Cancelling `next` keeps the stream's progress: nothing is lost.
        let mut events = opening.lock().await;
        match tokio::time::timeout(Duration::from_millis(300), events.next()).await {
            Ok(Some(event)) => event.expect("an event").key == "w/open",
            _ => false,
        }
    })
    .await;
    let mut events = events.into_inner();
    for i in 0..5 {
        let key = format!("w/{i}");
        writer.set(&key, "v").await.expect("write");
        let acked = Instant::now();
        let mut event = next(&mut events).await;
        while event.key == "w/open" {
            event = next(&mut events).await;
        }
        let took = acked.elapsed();
        assert_eq!((event.key.as_str(), event.value.as_deref()), (key.as_str(), Some(&b"v"[..])));
        assert!(took < Duration::from_secs(1), "the event came {took:?} after the write's answer");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_at_another_member_with_every_revision_once() {
    init_tracing();
    let cluster = LocalCluster::start(3, 0).await;
    let leader = cluster.leader_index().await;
    let first = (leader + 1) % 3;
    // The watcher starts at a follower, and knows the other members too.
    let addrs = [first, (leader + 2) % 3, leader].map(|i| cluster.members[i].service_addr.clone());
    let client = ServiceClient::new(addrs, router_options(CLUSTER)).expect("client");
    let writer = cluster.members[leader].proxy.clone();
    let (revision, _) = client.get_prefix_with_revision("r/").await.expect("list");
    let mut events = pin!(client.watch("r/", Some(revision + 1)));

    const N: usize = 60;
    let mut seen: Vec<WatchEvent> = Vec::new();
    for i in 0..N {
        if i == N / 2 {
            // Stream what was written so far from the first member, then stop it.
            while seen.len() < N / 2 {
                seen.push(next(&mut events).await);
            }
            cluster.members[first].stop().await;
        }
        writer.set(&format!("r/{i:03}"), format!("{i}")).await.expect("write");
    }
    writer.set("r/zzz", "end").await.expect("write");
    loop {
        let event = next(&mut events).await;
        if event.key == "r/zzz" {
            break;
        }
        seen.push(event);
    }
    let keys: Vec<String> = seen.iter().map(|e| e.key.clone()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("r/{i:03}")).collect();
    assert_eq!(keys, expected, "every write once, in order");
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision), "revisions grow");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_the_member_forgot_fails_with_compacted() {
    init_tracing();
    // Snapshots every 10 entries, no log kept behind them: a new member
    // starts from a snapshot and cannot replay what came before it.
    let timing = RaftTiming { snapshot_after_entries: 10, keep_entries_after_snapshot: 0, ..raft_timing() };
    let mut cluster = LocalCluster::builder(1).timing(timing).start().await;
    let old = &cluster.members[0];
    for i in 0..30 {
        old.proxy.set(&format!("c/{i:02}"), "v").await.expect("write");
    }
    wait_until(DEADLINE, "a snapshot", || async { old.store.progress().await.snapshot_index.is_some() })
        .await;
    cluster.open_new().await;
    let (old, new) = (&cluster.members[0], &cluster.members[1]);
    old.store.add_nonvoter(new.id(), new.store.endpoints().clone()).await.expect("add the new member");

    // The member that applied every write replays them all…
    let mut replay = pin!(old.client().watch("c/", Some(1)));
    assert_eq!(next(&mut replay).await.key, "c/00");
    // …the new one says it cannot, with a typed error, and ends the stream.
    let mut refused = pin!(new.client().watch("c/", Some(1)));
    match tokio::time::timeout(DEADLINE, refused.next()).await.expect("an answer") {
        Some(Err(Error::Compacted { requested: 1, oldest })) => assert!(oldest > 1, "{oldest}"),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(refused.next().await.is_none(), "the stream ends after the error");
    // From the revision a list gives, the new member watches fine.
    let (revision, entries) = new.client().get_prefix_with_revision("c/").await.expect("list");
    assert_eq!(entries.len(), 30);
    let mut resumed = pin!(new.client().watch("c/", Some(revision + 1)));
    old.proxy.set("c/next", "v").await.expect("write");
    assert_eq!(next(&mut resumed).await.key, "c/next");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cut_at_a_bound_and_the_library_resumes_without_loss() {
    init_tracing();
    let cluster = LocalCluster::start(1, 0).await;
    let member = &cluster.members[0];
    let client = member.client();
    let (revision, _) = client.get_prefix_with_revision("s/").await.expect("list");
    let from = Some(revision + 1);

    // A bare RPC stream that nobody reads, and a library watch, opened and then left alone.
    let rpc: cluster_rpc::Client<Request, Response> =
        cluster_rpc::Client::new(ClientConfig { cluster_id: CLUSTER.into(), ..ClientConfig::default() });
    let request = Request::Watch { prefix: "s/".into(), from_revision: from };
    let mut raw = rpc.stream(&member.service_addr, &request).await.expect("stream");
    let mut lib = pin!(client.watch("s/", from));
    member.proxy.set("s/open", "x").await.expect("write");
    assert_eq!(next(&mut lib).await.key, "s/open");

    const N: usize = 600;
    for i in 0..N {
        member.proxy.set(&format!("s/{i:04}"), "v").await.expect("write");
    }

    // The unread stream holds a bounded number of events, then says it was cut.
    let mut buffered = 0;
    loop {
        match tokio::time::timeout(DEADLINE, raw.next()).await.expect("in time") {
            Some(Ok(Response::Event(_))) => buffered += 1,
            Some(Err(RpcError::Lagged { .. })) => break,
            other => panic!("expected events then Lagged, got {other:?}"),
        }
    }
    assert!(buffered < N, "a reader that does not read buffered all {buffered} events");

    // The library resumed from the last revision it yielded: all, once, in order.
    let mut keys = Vec::new();
    for _ in 0..N {
        keys.push(next(&mut lib).await.key);
    }
    let expected: Vec<String> = (0..N).map(|i| format!("s/{i:04}")).collect();
    assert_eq!(keys, expected);
    drop(raw);
    cluster.shutdown().await;
}
