//! Test helpers: an in-memory fake of `ConsensusStore` whose leader the test
//! switches; waits and logs come from the kit (`cluster_core::testsuite`).
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_core::{
    CasOutcome, ClientRequestId, ConsensusConfig, ConsensusStatus, ConsensusStore, Endpoints, Error,
    LeaderHint, MemberId, Result, ShortId, Watch, WatchEvent, WriteOp, WriteOutcome, WriteRequest,
};
use tokio::sync::{broadcast, watch};

pub use cluster_core::testsuite::{init_tracing, wait_until};

pub const CLUSTER: &str = "test-cluster";

/// The state every fake member shares: one store, one leader.
#[derive(Default)]
pub struct Shared {
    pub data: BTreeMap<String, Vec<u8>>,
    pub revision: u64,
    /// First answer of every write with a request id.
    pub answered: HashMap<ClientRequestId, WriteOutcome>,
    /// How often each request id arrived at the leader.
    pub arrivals: HashMap<ClientRequestId, u32>,
    /// Writes applied (not counting answered retries).
    pub applied: u64,
    pub leader: Option<MemberId>,
    pub term: u64,
    pub endpoints: BTreeMap<MemberId, Endpoints>,
    /// The next this many writes are applied, then answered with a timeout
    /// (the answer is "lost").
    pub lose_answers: u32,
    /// Each write waits up to this long (random) before it is applied.
    pub max_write_delay: Option<Duration>,
}

/// A cluster of fake members sharing one store.
#[derive(Clone)]
pub struct FakeCluster {
    shared: Arc<Mutex<Shared>>,
    pub members: Vec<Arc<FakeStore>>,
}

impl FakeCluster {
    /// `n` members, the first one leading.
    pub fn new(n: usize) -> Self {
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let (events, _) = broadcast::channel(1024);
        let members: Vec<Arc<FakeStore>> = (0..n)
            .map(|_| {
                let id = MemberId::generate();
                let (status_tx, _) = watch::channel(ConsensusStatus { member_id: id, ..Default::default() });
                Arc::new(FakeStore {
                    id,
                    shared: shared.clone(),
                    status_tx,
                    events: events.clone(),
                    shut_down: AtomicBool::new(false),
                    gets: AtomicU64::new(0),
                    refusals: AtomicU64::new(0),
                })
            })
            .collect();
        {
            let mut s = shared.lock().unwrap();
            for m in &members {
                s.endpoints.insert(m.id, Endpoints::default());
            }
        }
        let c = FakeCluster { shared, members };
        c.set_leader(Some(0));
        c
    }

    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    pub fn member(&self, i: usize) -> Arc<FakeStore> {
        self.members[i].clone()
    }

    /// Makes member `i` (or nobody) the leader, as every member sees it.
    pub fn set_leader(&self, i: Option<usize>) {
        {
            let mut s = self.shared();
            s.leader = i.map(|i| self.members[i].id);
            s.term += 1;
        }
        self.publish();
    }

    pub fn set_service_addr(&self, i: usize, addr: SocketAddr) {
        self.shared().endpoints.insert(
            self.members[i].id,
            Endpoints { raft_addr: String::new(), service_addr: addr.to_string() },
        );
        self.publish();
    }

    fn publish(&self) {
        for m in &self.members {
            let status = m.status();
            m.status_tx.send_replace(status);
        }
    }
}

/// One fake member.
pub struct FakeStore {
    pub id: MemberId,
    shared: Arc<Mutex<Shared>>,
    status_tx: watch::Sender<ConsensusStatus>,
    events: broadcast::Sender<WatchEvent>,
    pub shut_down: AtomicBool,
    /// Local reads served.
    pub gets: AtomicU64,
    /// Writes and consistent reads refused because this member does not lead.
    pub refusals: AtomicU64,
}

impl FakeStore {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    fn check_leader(&self) -> Result<()> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let s = self.shared();
        if s.leader == Some(self.id) {
            return Ok(());
        }
        self.refusals.fetch_add(1, Ordering::SeqCst);
        let hint = s.leader.map(|l| LeaderHint {
            member_id: l,
            service_addr: s.endpoints.get(&l).map(|e| e.service_addr.clone()).filter(|a| !a.is_empty()),
        });
        Err(Error::NotLeader(hint))
    }

    fn apply(&self, s: &mut Shared, op: WriteOp) -> Result<WriteOutcome> {
        let change = |s: &mut Shared, key: &str, value: Option<Vec<u8>>| {
            let old = match &value {
                Some(v) => s.data.insert(key.to_owned(), v.clone()),
                None => s.data.remove(key),
            };
            s.revision += 1;
            let _ = self.events.send(WatchEvent { key: key.to_owned(), value, revision: s.revision });
            old
        };
        Ok(match op {
            WriteOp::Set { key, value } => {
                WriteOutcome::Set { created: change(s, &key, Some(value)).is_none() }
            }
            WriteOp::Delete { key } => WriteOutcome::Delete { existed: change(s, &key, None).is_some() },
            WriteOp::CompareAndSet { key, expected, new } => {
                if s.data.get(&key) == expected.as_ref() {
                    change(s, &key, new.clone());
                    WriteOutcome::CompareAndSet(CasOutcome { succeeded: true, current: new })
                } else {
                    WriteOutcome::CompareAndSet(CasOutcome {
                        succeeded: false,
                        current: s.data.get(&key).cloned(),
                    })
                }
            }
            WriteOp::AllocateShortId { .. } => WriteOutcome::ShortId(ShortId::new(1)?),
            WriteOp::ReleaseShortId { .. } => WriteOutcome::Released { held: false },
            _ => return Err(Error::BadRequest("unknown op".into())),
        })
    }
}

impl ConsensusStore for FakeStore {
    async fn open(_config: ConsensusConfig) -> Result<Self> {
        Err(Error::Internal("build fakes with FakeCluster".into()))
    }

    fn member_id(&self) -> MemberId {
        self.id
    }

    fn raft_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn status(&self) -> ConsensusStatus {
        let s = self.shared();
        ConsensusStatus {
            member_id: self.id,
            leader: s.leader,
            term: s.term,
            last_log_index: Some(s.revision),
            applied_index: Some(s.revision),
            voters: s.endpoints.clone(),
            nonvoters: BTreeMap::new(),
            ..Default::default()
        }
    }

    fn status_changes(&self) -> watch::Receiver<ConsensusStatus> {
        self.status_tx.subscribe()
    }

    async fn is_initialized(&self) -> Result<bool> {
        Ok(true)
    }

    async fn bootstrap(&self) -> Result<()> {
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Ok(self.shared().data.get(key).cloned())
    }

    fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let s = self.shared();
        Ok(s.data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>> {
        Ok(BTreeMap::new())
    }

    async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.check_leader()?;
        Ok(self.shared().data.get(key).cloned())
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        self.check_leader()?;
        let delay = self.shared().max_write_delay;
        if let Some(max) = delay {
            let ms = rand::random_range(0..=max.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut s = self.shared();
        let first = request.request_id.and_then(|id| {
            *s.arrivals.entry(id).or_default() += 1;
            s.answered.get(&id).cloned()
        });
        let outcome = match first {
            Some(first) => first,
            None => {
                let outcome = self.apply(&mut s, request.op)?;
                s.applied += 1;
                if let Some(id) = request.request_id {
                    s.answered.insert(id, outcome.clone());
                }
                outcome
            }
        };
        if s.lose_answers > 0 {
            s.lose_answers -= 1;
            return Err(Error::Timeout("the answer was lost".into()));
        }
        Ok(outcome)
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch::new(prefix, self.events.subscribe())
    }

    async fn add_nonvoter(&self, _member: MemberId, _endpoints: Endpoints) -> Result<()> {
        Err(Error::Internal("not in the fake".into()))
    }

    async fn promote(&self, _member: MemberId) -> Result<()> {
        Err(Error::Internal("not in the fake".into()))
    }

    async fn demote(&self, _member: MemberId) -> Result<()> {
        Err(Error::Internal("not in the fake".into()))
    }

    async fn remove(&self, _member: MemberId) -> Result<()> {
        Err(Error::Internal("not in the fake".into()))
    }

    async fn set_endpoints(&self, _member: MemberId, _endpoints: Endpoints) -> Result<()> {
        Err(Error::Internal("not in the fake".into()))
    }

    async fn shutdown(&self) -> Result<()> {
        self.shut_down.store(true, Ordering::SeqCst);
        Ok(())
    }
}
