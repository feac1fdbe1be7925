//! A member's router tells its store what the leader answered it, and lets
//! the store hold back local reads until they reflect it
//! (`ConsensusStore::answered_by_leader` and `read_barrier`): on fake stores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{
    ConsensusStatus, ConsensusStore, Endpoints, Entries, KeyMeta, KeyScope, MemberId, Result, ShortId, Watch,
    WriteOutcome, WriteRequest,
};
use cluster_service::{Proxy, RouterOptions, ServerConfig, ServiceServer};
use cluster_testkit::testsuite::fakes::{FAKE_CLUSTER_ID as CLUSTER, FakeCluster, FakeStore};
use std::collections::BTreeMap;
use tokio::sync::watch;

/// A fake member's store that records the router's calls of the two hooks.
struct Hooked {
    inner: Arc<FakeStore>,
    answered: Mutex<Vec<String>>,
    barriers: AtomicU64,
}

impl ConsensusStore for Hooked {
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
        self.inner.get(key)
    }
    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.inner.get_with_meta(key)
    }
    async fn consistent_get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.inner.consistent_get_with_meta(key).await
    }
    fn get_prefix(&self, prefix: &str) -> Result<Entries> {
        self.inner.get_prefix(prefix)
    }
    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        self.inner.get_prefix_with_revision(prefix)
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
    fn answered_by_leader(&self, leader_service_addr: &str) {
        self.answered.lock().unwrap().push(leader_service_addr.to_owned());
    }
    async fn read_barrier(&self, _scope: KeyScope<'_>) -> Result<()> {
        self.barriers.fetch_add(1, Ordering::SeqCst);
        Ok(())
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

fn options() -> RouterOptions {
    let mut o = RouterOptions::new(CLUSTER);
    o.op_timeout = Duration::from_secs(30);
    o
}

#[tokio::test]
async fn forwarded_answers_are_reported_and_local_reads_wait_for_the_barrier() {
    let cluster = FakeCluster::new(2);
    cluster.set_leader(Some(1));
    let server =
        ServiceServer::bind("127.0.0.1:0", cluster.member(1), ServerConfig::new(CLUSTER)).await.unwrap();
    cluster.set_service_addr(1, server.local_addr());
    let store = Arc::new(Hooked {
        inner: cluster.member(0),
        answered: Mutex::default(),
        barriers: AtomicU64::new(0),
    });
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
    let store = Arc::new(Hooked {
        inner: cluster.member(0),
        answered: Mutex::default(),
        barriers: AtomicU64::new(0),
    });
    let proxy = Proxy::new(store.clone(), options());
    proxy.set("k", "v").await.unwrap();
    proxy.consistent_get("k").await.unwrap();
    assert!(store.answered.lock().unwrap().is_empty(), "its own answers are no news");
}
