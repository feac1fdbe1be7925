//! How a member's router keeps its reads in step, on fake stores: it tells
//! the store what the leader answered it and lets the store hold back local
//! reads until they reflect it (`ConsensusStore::answered_by_leader`,
//! `read_barrier`); it reads what the member does not hold at a replica
//! (`remote_reads`, as a client member does), as a read at a revision
//! (`Request::ReadAt`), which servers also get as raw, hostile frames.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{
    ConsensusStatus, ConsensusStore, ConsensusStoreExt, Endpoints, Entries, Error, KeyMeta, KeyScope,
    MemberId, RemoteReads, Result, ShortId, Watch, WriteOp, WriteOutcome, WriteRequest,
};
use cluster_service::{Proxy, Request, Response, RouterOptions, ServerConfig, ServiceClient, ServiceServer};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster, FakeStore};
use futures::StreamExt;
use tokio::sync::watch;

const LONG: Duration = Duration::from_secs(30);

fn options() -> RouterOptions {
    let mut o = RouterOptions::new(CLUSTER);
    o.op_timeout = LONG;
    o
}

/// A fake member's store that records the router's calls of the hooks.
/// With `replicas`, it holds only the keys under `mine/` (a client member
/// holds only the cluster's records) and reads the others there, recording
/// the revisions its reads were served at.
struct Member {
    inner: Arc<FakeStore>,
    replicas: Vec<String>,
    answered: Mutex<Vec<String>>,
    barriers: AtomicU64,
    observed: Mutex<Vec<u64>>,
}

impl Member {
    fn new(inner: Arc<FakeStore>, replicas: Vec<String>) -> Arc<Self> {
        Arc::new(Member {
            inner,
            replicas,
            answered: Mutex::default(),
            barriers: AtomicU64::new(0),
            observed: Mutex::default(),
        })
    }
    fn holds(&self, scope: KeyScope<'_>) -> bool {
        self.replicas.is_empty() || scope.is_within("mine/")
    }
    fn refused() -> Error {
        Error::Unreachable("not held here".into())
    }
}

impl ConsensusStore for Member {
    fn member_id(&self) -> MemberId {
        self.inner.member_id()
    }
    fn raft_addr(&self) -> SocketAddr {
        self.inner.raft_addr()
    }
    fn status(&self) -> ConsensusStatus {
        self.inner.status()
    }
    fn status_changes(&self) -> watch::Receiver<ConsensusStatus> {
        self.inner.status_changes()
    }
    async fn is_initialized(&self) -> Result<bool> {
        self.inner.is_initialized().await
    }
    async fn bootstrap(&self) -> Result<()> {
        self.inner.bootstrap().await
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if !self.holds(KeyScope::Key(key)) {
            return Err(Self::refused());
        }
        self.inner.get(key)
    }
    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.inner.get_with_meta(key)
    }
    async fn consistent_get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.inner.consistent_get_with_meta(key).await
    }
    fn get_prefix(&self, prefix: &str) -> Result<Entries> {
        Ok(self.get_prefix_with_revision(prefix)?.1)
    }
    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        if !self.holds(KeyScope::Prefix(prefix)) {
            return Err(Self::refused());
        }
        self.inner.get_prefix_with_revision(prefix)
    }
    fn applied_revision(&self) -> Result<u64> {
        self.inner.applied_revision()
    }
    fn remote_reads(&self, scope: KeyScope<'_>) -> Option<RemoteReads> {
        let floor = self.observed.lock().unwrap().iter().copied().max().unwrap_or(0);
        (!self.holds(scope)).then(|| RemoteReads { replicas: self.replicas.clone(), min_revision: floor })
    }
    fn observed_revision(&self, revision: u64) {
        self.observed.lock().unwrap().push(revision);
    }
    fn answered_by_leader(&self, leader_service_addr: &str) {
        self.answered.lock().unwrap().push(leader_service_addr.to_owned());
    }
    async fn read_barrier(&self, _scope: KeyScope<'_>) -> Result<()> {
        self.barriers.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>> {
        self.inner.short_ids()
    }
    async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.consistent_get(key).await
    }
    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        self.inner.write(request).await
    }
    fn watch(&self, prefix: &str) -> Watch {
        self.inner.watch(prefix)
    }
    fn watch_from(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        if !self.holds(KeyScope::Prefix(prefix)) {
            return Err(Self::refused());
        }
        self.inner.watch_from(prefix, from_revision)
    }
    async fn add_nonvoter(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.inner.add_nonvoter(member, endpoints).await
    }
    async fn promote(&self, member: MemberId) -> Result<()> {
        self.inner.promote(member).await
    }
    async fn demote(&self, member: MemberId) -> Result<()> {
        self.inner.demote(member).await
    }
    async fn remove(&self, member: MemberId) -> Result<()> {
        self.inner.remove(member).await
    }
    async fn set_endpoints(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.inner.set_endpoints(member, endpoints).await
    }
    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }
}

/// A leader (member 0) serving its store, and member 1's store.
async fn leader_and_store() -> (FakeCluster, ServiceServer) {
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(0));
    let server =
        ServiceServer::bind("127.0.0.1:0", cluster.member(0), ServerConfig::new(CLUSTER)).await.unwrap();
    cluster.set_service_addr(0, server.local_addr());
    (cluster, server)
}

fn read_at(min_revision: u64, read: Request) -> Request {
    Request::ReadAt { min_revision, read: Box::new(read) }
}

#[tokio::test]
async fn a_read_at_a_revision_waits_for_it_and_says_where_it_was_served() {
    let (cluster, server) = leader_and_store().await;
    let leader = cluster.member(0);
    leader.set("k", b"1".to_vec()).await.unwrap();
    let now = leader.applied_revision().unwrap();
    let client = ServiceClient::new([server.local_addr().to_string()], options()).unwrap();

    // Reached already: served at once, at the state's revision.
    let answer = client.request(read_at(now, Request::Get { key: "k".into() })).await.unwrap();
    assert_eq!(
        answer,
        Response::ReadAt { revision: now, answer: Box::new(Response::Value(Some(b"1".to_vec()))) }
    );

    // Not reached yet: served once a write gets the member there.
    let ahead = {
        let client = client.clone();
        tokio::spawn(async move { client.request(read_at(now + 1, Request::Get { key: "k".into() })).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!ahead.is_finished(), "answered before the member reached the revision");
    leader.set("k", b"2".to_vec()).await.unwrap();
    let answer = ahead.await.unwrap().unwrap();
    let Response::ReadAt { revision, answer } = answer else { panic!("not a read-at answer: {answer:?}") };
    assert!(revision > now);
    assert_eq!(*answer, Response::Value(Some(b"2".to_vec())));
    server.shutdown().await;
}

#[tokio::test]
async fn hostile_reads_at_a_revision_are_refused_and_the_member_goes_on() {
    let (cluster, server) = leader_and_store().await;
    cluster.member(0).set("k", b"v".to_vec()).await.unwrap();
    let mut one_try = options();
    one_try.op_timeout = Duration::from_secs(5);
    let client = ServiceClient::new([server.local_addr().to_string()], one_try).unwrap();
    let refused = [
        read_at(0, read_at(0, Request::Get { key: "k".into() })),
        read_at(0, Request::Write(WriteRequest::new(WriteOp::Set { key: "k".into(), value: vec![1] }))),
        read_at(0, Request::ConsistentGet { key: "k".into() }),
        read_at(0, Request::Watch { prefix: String::new(), from_revision: None }),
        read_at(0, Request::Status),
        read_at(0, Request::ForceLeave { member: MemberId::generate() }),
        read_at(0, Request::Get { key: String::new() }),
    ];
    for request in refused {
        let err = client.request(request.clone()).await.expect_err("refused");
        assert!(matches!(err, Error::BadRequest(_)), "{request:?}: {err:?}");
    }
    // A revision the member never reaches: a timeout to retry elsewhere, not a hang.
    let err =
        client.request(read_at(u64::MAX, Request::Get { key: "k".into() })).await.expect_err("never reached");
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    // And it still serves.
    assert_eq!(client.get("k").await.unwrap(), Some(b"v".to_vec()));
    server.shutdown().await;
}

#[tokio::test]
async fn a_member_reads_what_it_does_not_hold_at_a_replica_never_older_than_before() {
    let (cluster, server) = leader_and_store().await;
    let leader = cluster.member(0);
    leader.set("mine/a", b"own".to_vec()).await.unwrap();
    leader.set("user/a", b"1".to_vec()).await.unwrap();
    let partial = Member::new(cluster.member(1), vec![server.local_addr().to_string()]);
    let proxy = Proxy::new(partial.clone(), options());

    // What it holds, it reads itself; the rest at the replica.
    assert_eq!(proxy.get("mine/a").await.unwrap(), Some(b"own".to_vec()));
    assert!(partial.observed.lock().unwrap().is_empty(), "a held key went to a replica");
    assert_eq!(proxy.get("user/a").await.unwrap(), Some(b"1".to_vec()));
    let (revision, entries) = proxy.get_prefix_with_revision("user/").await.unwrap();
    assert_eq!(entries, vec![("user/a".to_owned(), b"1".to_vec())]);
    let observed = partial.observed.lock().unwrap().clone();
    assert_eq!(observed.len(), 2, "each read at the replica reports its revision");
    assert!(observed.iter().all(|r| *r >= revision.min(observed[0])));
    // The next read asks for at least what it saw: a replica behind it waits.
    let floor = partial.remote_reads(KeyScope::Key("user/a")).unwrap().min_revision;
    assert_eq!(floor, *observed.iter().max().unwrap());

    // Its watch of keys it does not hold is a replica's.
    let mut events = Box::pin(proxy.watch("user/", Some(revision + 1)));
    leader.set("user/b", b"2".to_vec()).await.unwrap();
    let event = tokio::time::timeout(LONG, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((event.key.as_str(), event.value.as_deref()), ("user/b", Some(&b"2"[..])));
    server.shutdown().await;
}

#[tokio::test]
async fn its_server_serves_what_it_does_not_hold_through_a_replica() {
    let (cluster, replica) = leader_and_store().await;
    let leader = cluster.member(0);
    leader.set("user/a", b"1".to_vec()).await.unwrap();
    let partial = Member::new(cluster.member(1), vec![replica.local_addr().to_string()]);
    let forwarding = ServerConfig { forward: Some(options()), ..ServerConfig::new(CLUSTER) };
    let server = ServiceServer::bind("127.0.0.1:0", partial.clone(), forwarding).await.unwrap();
    let bare = ServiceServer::bind("127.0.0.1:0", partial, ServerConfig::new(CLUSTER)).await.unwrap();
    let client = ServiceClient::new([server.local_addr().to_string()], options()).unwrap();

    assert_eq!(client.get("user/a").await.unwrap(), Some(b"1".to_vec()));
    let (revision, _) = client.get_prefix_with_revision("user/").await.unwrap();
    let mut events = Box::pin(client.watch("user/", Some(revision + 1)));
    leader.set("user/b", b"2".to_vec()).await.unwrap();
    let event = tokio::time::timeout(LONG, events.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event.key, "user/b");
    // A read already at a revision is not forwarded again: refused, to be asked elsewhere.
    let mut short = options();
    short.op_timeout = Duration::from_secs(2);
    let once = ServiceClient::new([server.local_addr().to_string()], short.clone()).unwrap();
    let err = once.request(read_at(0, Request::Get { key: "user/a".into() })).await.expect_err("not held");
    assert!(matches!(err, Error::Timeout(_) | Error::Unreachable(_)), "{err:?}");

    // Without a way to reach the replicas, the member says so.
    let to_bare = ServiceClient::new([bare.local_addr().to_string()], short).unwrap();
    let err = to_bare.get("user/a").await.expect_err("not held, not forwarded");
    assert_eq!(err.kind(), cluster_core::ErrorKind::Unavailable, "{err:?}");
    server.shutdown().await;
    bare.shutdown().await;
    replica.shutdown().await;
}

#[tokio::test]
async fn forwarded_answers_are_reported_and_local_reads_wait_for_the_barrier() {
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(1));
    let server =
        ServiceServer::bind("127.0.0.1:0", cluster.member(1), ServerConfig::new(CLUSTER)).await.unwrap();
    cluster.set_service_addr(1, server.local_addr());
    let store = Member::new(cluster.member(0), Vec::new());
    let proxy = Proxy::new(store.clone(), options());
    let leader = server.local_addr().to_string();

    // Answers the leader gave this member's router are reported, each once.
    proxy.set("k", "v").await.unwrap();
    proxy.consistent_get("k").await.unwrap();
    assert_eq!(*store.answered.lock().unwrap(), vec![leader.clone(), leader.clone()]);
    assert_eq!(store.barriers.load(Ordering::SeqCst), 0, "no local read yet");

    // Every local read of the member's state passes the barrier first.
    assert_eq!(proxy.get("k").await.unwrap(), Some(b"v".to_vec()));
    proxy.get_prefix("").await.unwrap();
    proxy.get_prefix_with_revision("").await.unwrap();
    proxy.get_with_meta("k", false).await.unwrap();
    proxy.members().await.unwrap();
    assert_eq!(store.barriers.load(Ordering::SeqCst), 5);
    // A status is no read of the state; a linearizable read goes to the leader.
    proxy.status().await.unwrap();
    proxy.get_with_meta("k", true).await.unwrap();
    assert_eq!(store.barriers.load(Ordering::SeqCst), 5);
    assert_eq!(store.answered.lock().unwrap().len(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn the_leader_reports_nothing() {
    let cluster = FakeCluster::new(1);
    let store = Member::new(cluster.member(0), Vec::new());
    let proxy = Proxy::new(store.clone(), options());
    proxy.set("k", "v").await.unwrap();
    proxy.consistent_get("k").await.unwrap();
    assert!(store.answered.lock().unwrap().is_empty(), "its own answers are no news");
}
