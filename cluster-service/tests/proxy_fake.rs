//! The proxy against fake stores: local when leading, forwarded otherwise,
//! waiting for a new leader, idempotent retries, the operation deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cluster_core::{
    ConsensusStore, Error, MemberId, MemberInfo, WriteOp, WriteOutcome, WriteRequest, Writer, keys,
};
use cluster_service::{Backoff, Proxy, Request, Response, RouterOptions, ServerConfig, ServiceServer};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster, FakeStore};
use cluster_testkit::wait_until;
use tokio::net::TcpListener;

const LONG: Duration = Duration::from_secs(30);

fn options() -> RouterOptions {
    let mut o = RouterOptions::new(CLUSTER);
    o.op_timeout = LONG;
    o.backoff = Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(50), multiplier: 2 };
    o
}

async fn serve(cluster: &FakeCluster, i: usize) -> ServiceServer {
    let server =
        ServiceServer::bind("127.0.0.1:0", cluster.member(i), ServerConfig::new(CLUSTER)).await.unwrap();
    cluster.set_service_addr(i, server.local_addr());
    server
}

#[tokio::test]
async fn a_follower_forwards_every_operation_to_the_leader() {
    cluster_testkit::init_tracing();
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(1));
    let server = serve(&cluster, 1).await;
    let proxy = Proxy::new(cluster.member(0), options());

    assert!(proxy.set("k", "v").await.unwrap());
    assert_eq!(proxy.consistent_get("k").await.unwrap(), Some(b"v".to_vec()));
    let cas = proxy.compare_and_set("k", Some(b"v".to_vec()), Some(b"w".to_vec())).await.unwrap();
    assert!(cas.succeeded);
    assert_eq!(proxy.get("k").await.unwrap(), Some(b"w".to_vec()));
    assert_eq!(proxy.get_prefix("").await.unwrap().len(), 1);
    assert!(proxy.delete("k").await.unwrap());
    assert!(matches!(proxy.delete("carbon-grid/members/x").await, Err(Error::Forbidden(_))));
    let info = MemberInfo::new(MemberId::generate(), "h", 1, 2, 3, 4);
    let record =
        WriteRequest::new(WriteOp::Set { key: keys::member_key(info.member_id), value: info.to_bytes() });
    // A user's write of the cluster's record is refused before it leaves;
    // written as the cluster and forwarded over plain TCP, nobody can prove
    // to be a member, so the leader refuses it too.
    assert!(matches!(proxy.write(record.clone()).await, Err(Error::Forbidden(_))));
    assert!(matches!(proxy.write_as(Writer::Cluster, record.clone()).await, Err(Error::Forbidden(_))));
    cluster.member(1).write(record).await.unwrap();
    assert_eq!(proxy.members().await.unwrap(), vec![info]);
    // Every write ran on the leader; the follower refused none (the proxy asked the leader directly).
    assert_eq!(cluster.member(0).refusals.load(Ordering::SeqCst), 0);
    // A set, a consistent get, a cas, a delete and the record written as the
    // cluster went out; the user's delete and write of a reserved key were
    // refused before they left.
    assert_eq!(proxy.forwarded(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn the_leader_runs_operations_locally() {
    let cluster = FakeCluster::new(2);
    // No server anywhere: nothing can be forwarded.
    let proxy = Proxy::new(cluster.member(0), options());
    assert!(proxy.set("k", "v").await.unwrap());
    assert_eq!(proxy.consistent_get("k").await.unwrap(), Some(b"v".to_vec()));
    let watch_proxy = proxy.clone();
    let mut watch = std::pin::pin!(watch_proxy.watch("k", None));
    assert!(!proxy.set("k", "w").await.unwrap());
    assert_eq!(futures::StreamExt::next(&mut watch).await.unwrap().unwrap().value, Some(b"w".to_vec()));
    assert_eq!(proxy.forwarded(), 0);
}

#[tokio::test]
async fn a_leading_proxy_refuses_a_users_write_of_the_clusters_keys_and_takes_the_clusters_own() {
    let cluster = FakeCluster::new(2);
    let proxy = Proxy::new(cluster.member(0), options());
    let info = MemberInfo::new(MemberId::generate(), "h", 1, 2, 3, 4);
    let record =
        WriteRequest::new(WriteOp::Set { key: keys::member_key(info.member_id), value: info.to_bytes() });
    // This member leads: nothing is forwarded, and still a user cannot write
    // the cluster's keys, short ids or revision.
    assert!(matches!(proxy.write(record.clone()).await, Err(Error::Forbidden(_))));
    let raw = WriteRequest::new(WriteOp::Set { key: "carbon-grid/x".into(), value: b"no".to_vec() });
    assert!(matches!(proxy.write(raw).await, Err(Error::Forbidden(_))));
    let short = WriteRequest::new(WriteOp::AllocateShortId { member: info.member_id });
    assert!(matches!(proxy.write(short.clone()).await, Err(Error::Forbidden(_))));
    assert!(matches!(proxy.write(WriteRequest::set("user/a", "1")).await, Ok(WriteOutcome::Set { .. })));
    assert!(proxy.members().await.unwrap().is_empty());
    // The cluster's own writes, said so, run.
    proxy.write_as(Writer::Cluster, record).await.unwrap();
    assert_eq!(proxy.members().await.unwrap(), vec![info]);
    assert!(matches!(proxy.write_as(Writer::Cluster, short).await, Ok(WriteOutcome::ShortId(_))));
    assert_eq!(proxy.forwarded(), 0);
}

#[tokio::test]
async fn a_proxy_sends_admin_requests_to_the_leader_and_answers_the_others_itself() {
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(1));
    let server = serve(&cluster, 1).await;
    let proxy = Proxy::new(cluster.member(0), options());
    assert!(proxy.set("k", "v").await.unwrap());
    let before = proxy.forwarded();
    // An export needs the leader: it goes to the leader's service.
    match proxy.request(Request::Export).await.unwrap() {
        Response::Export { entries, .. } => assert!(entries.contains(&("k".into(), b"v".to_vec()))),
        other => panic!("an export answered with {other:?}"),
    }
    assert_eq!(proxy.forwarded(), before + 1);
    // A status is this member's own: answered here.
    match proxy.request(Request::Status).await.unwrap() {
        Response::Status(status) => assert_eq!(status.member_id, cluster.member(0).id),
        other => panic!("a status answered with {other:?}"),
    }
    assert_eq!(proxy.forwarded(), before + 1);
    // An error answer is an error, not an answer.
    let watch = Request::Watch { prefix: "k".into(), from_revision: None };
    assert!(matches!(proxy.request(watch).await, Err(Error::BadRequest(_))));
    server.shutdown().await;
}

#[tokio::test]
async fn a_pause_ends_when_a_new_leader_is_known() {
    let cluster = FakeCluster::new(2);
    // Member 1 "leads" at an address that accepts and drops every connection.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cluster.set_service_addr(1, dead.local_addr().unwrap());
    cluster.set_leader(Some(1));
    let mut o = options();
    o.op_timeout = Duration::from_secs(120);
    // Pauses of 10 to 20 s: the write must not wait one out.
    o.backoff = Backoff { initial: Duration::from_secs(20), max: Duration::from_secs(20), multiplier: 1 };
    let proxy = Proxy::new(cluster.member(0), o);
    let started = Instant::now();
    let write = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.set("k", "v").await }
    });
    // The first attempt reached the dead leader…
    drop(tokio::time::timeout(LONG, dead.accept()).await.expect("an attempt").unwrap());
    // …then this member is elected.
    cluster.set_leader(Some(0));
    assert!(write.await.unwrap().unwrap());
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_forwarded_retry_after_a_lost_answer_is_applied_once() {
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(1));
    let server = serve(&cluster, 1).await;
    cluster.shared().lose_answers = 2;
    let proxy = Proxy::new(cluster.member(0), options());
    assert!(proxy.set("once", "v").await.unwrap());
    {
        let s = cluster.shared();
        assert_eq!(s.applied, 1);
        assert_eq!(s.arrivals.values().copied().collect::<Vec<_>>(), vec![3]);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_leader_an_operation_fails_at_its_deadline() {
    let cluster = FakeCluster::new(2);
    cluster.set_leader(None);
    let mut o = options();
    o.op_timeout = Duration::from_millis(200);
    let proxy = Proxy::new(cluster.member(0), o);
    let r = proxy.set("k", "v").await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    let r = proxy.consistent_get("k").await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    // A store that shuts down answers at once: retrying cannot help.
    cluster.set_leader(Some(0));
    cluster.member(0).shut_down.store(true, Ordering::SeqCst);
    assert_eq!(proxy.set("k", "v").await, Err(Error::ShuttingDown));
}

#[tokio::test]
async fn a_stream_of_writes_survives_a_leader_change() {
    let cluster = FakeCluster::new(3);
    cluster.set_leader(Some(1));
    let s1 = serve(&cluster, 1).await;
    let s2 = serve(&cluster, 2).await;
    let proxy = Proxy::new(cluster.member(0), options());
    let n = 200;
    let writer = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            for i in 0..n {
                assert!(proxy.set(&format!("w/{i:04}"), i.to_string()).await?);
            }
            Ok::<_, Error>(())
        }
    });
    wait_until(LONG, "some writes", || {
        let c = cluster.clone();
        async move { c.shared().applied >= 50 }
    })
    .await;
    // The leader stops: its store refuses, its service goes away, then member 2 is elected.
    let old: Arc<FakeStore> = cluster.member(1);
    old.shut_down.store(true, Ordering::SeqCst);
    s1.shutdown().await;
    cluster.set_leader(None);
    cluster.set_leader(Some(2));
    writer.await.unwrap().unwrap();
    assert_eq!(cluster.shared().applied, n);
    assert_eq!(proxy.get_prefix("w/").await.unwrap().len(), n as usize);
    s2.shutdown().await;
}
