//! The fake [`ConsensusStore`](crate::ConsensusStore): members of one [`FakeCluster`] share one state and one leader.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, LeaderHint, Result};
use crate::id::{ClientRequestId, MemberId, ShortId};
use crate::plan::lowest_free_short_id;
use crate::store::{
    CasOutcome, ConsensusBackend, ConsensusConfig, ConsensusStatus, ConsensusStore, Endpoints, Entries,
    KeyMeta, Watch, WatchEvent, WatchLog, WriteOp, WriteOutcome, WriteRequest,
};

use super::lock;
/// The state every member of a [`FakeCluster`] shares: one store, one leader.
#[derive(Debug, Default)]
pub struct Shared {
    /// The key-value data.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Bumped by every key change, as the contract's revisions are.
    pub revision: u64,
    /// The revisions of every key in `data`.
    pub meta: BTreeMap<String, KeyMeta>,
    /// Bumped by every applied write and membership change (the log index).
    pub index: u64,
    /// Who holds which short id.
    pub short_ids: BTreeMap<MemberId, ShortId>,
    /// First answer of every write with a request id.
    pub answered: HashMap<ClientRequestId, WriteOutcome>,
    /// How often each request id arrived at the leader.
    pub arrivals: HashMap<ClientRequestId, u32>,
    /// Writes applied (not counting answered retries).
    pub applied: u64,
    /// The leader every member sees.
    pub leader: Option<MemberId>,
    /// Bumped on every leader change.
    pub term: u64,
    /// Voters and where they are reached.
    pub voters: BTreeMap<MemberId, Endpoints>,
    /// Nonvoters and where they are reached.
    pub nonvoters: BTreeMap<MemberId, Endpoints>,
    /// Raft membership changes made, in order, as `"add"`, `"promote"`,
    /// `"demote"`, `"remove"` or `"endpoints"` with the member.
    pub membership_changes: Vec<(&'static str, MemberId)>,
    /// True once some member formed the cluster.
    pub initialized: bool,
    /// The next this many writes are applied, then answered with a timeout
    /// (the answer is "lost").
    pub lose_answers: u32,
    /// Each write waits up to this long (varying) before it is applied.
    pub max_write_delay: Option<Duration>,
    delay_seed: u64,
}

struct Core {
    shared: Mutex<Shared>,
    log: WatchLog,
    statuses: Mutex<Vec<(MemberId, watch::Sender<ConsensusStatus>)>>,
}

impl Core {
    fn new(ids: &[MemberId]) -> Arc<Core> {
        let statuses = ids
            .iter()
            .map(|&id| (id, watch::channel(ConsensusStatus { member_id: id, ..Default::default() }).0))
            .collect();
        Arc::new(Core {
            shared: Mutex::new(Shared::default()),
            log: WatchLog::new(0, 4096, 100_000, 64 << 20),
            statuses: Mutex::new(statuses),
        })
    }

    fn status_of(s: &Shared, id: MemberId) -> ConsensusStatus {
        ConsensusStatus {
            member_id: id,
            leader: s.leader,
            term: s.term,
            last_log_index: Some(s.index),
            applied_index: Some(s.index),
            voters: s.voters.clone(),
            nonvoters: s.nonvoters.clone(),
            store_bytes: s.data.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
            ..Default::default()
        }
    }

    /// Tells every member's status watchers what changed.
    fn publish_status(&self) {
        let statuses = lock(&self.statuses);
        let s = lock(&self.shared);
        for (id, tx) in statuses.iter() {
            let next = Core::status_of(&s, *id);
            tx.send_if_modified(|cur| {
                let changed = *cur != next;
                *cur = next;
                changed
            });
        }
    }
}

/// A cluster of fake members sharing one store. Cheap to clone.
#[derive(Clone)]
pub struct FakeCluster {
    core: Arc<Core>,
    /// The members, each a [`ConsensusStore`].
    pub members: Vec<Arc<FakeStore>>,
}

impl FakeCluster {
    /// `n` members, every one a voter, the first one leading.
    pub fn new(n: usize) -> Self {
        let ids: Vec<MemberId> = (0..n).map(|_| MemberId::generate()).collect();
        let core = Core::new(&ids);
        let members = ids.iter().map(|&id| Arc::new(FakeStore::new(id, core.clone()))).collect();
        {
            let mut s = lock(&core.shared);
            s.initialized = true;
            for &id in &ids {
                s.voters.insert(id, Endpoints::default());
            }
        }
        let c = FakeCluster { core, members };
        c.set_leader(if n > 0 { Some(0) } else { None });
        c
    }

    /// The shared state, for knobs and assertions. Call
    /// [`publish`](Self::publish) after changing raft membership here.
    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.core.shared)
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> Arc<FakeStore> {
        self.members[i].clone()
    }

    /// Makes member `i` (or nobody) the leader, as every member sees it.
    pub fn set_leader(&self, i: Option<usize>) {
        self.set_leader_id(i.map(|i| self.members[i].id));
    }

    /// Makes `id` (any member id, a fake one or not) or nobody the leader.
    pub fn set_leader_id(&self, id: Option<MemberId>) {
        {
            let mut s = self.shared();
            s.leader = id;
            s.term += 1;
        }
        self.publish();
    }

    /// Sets where member `i`'s forwarding service is reached.
    pub fn set_service_addr(&self, i: usize, addr: SocketAddr) {
        let id = self.members[i].id;
        {
            let mut s = self.shared();
            let endpoints = Endpoints { raft_addr: String::new(), service_addr: addr.to_string() };
            match s.nonvoters.get_mut(&id) {
                Some(e) => *e = endpoints,
                None => {
                    s.voters.insert(id, endpoints);
                }
            }
        }
        self.publish();
    }

    /// Sends every member's status to its watchers (after a change made
    /// through [`shared`](Self::shared)).
    pub fn publish(&self) {
        self.core.publish_status();
    }
}

/// One fake member of a [`FakeCluster`].
pub struct FakeStore {
    /// Its member id.
    pub id: MemberId,
    core: Arc<Core>,
    status_rx: watch::Receiver<ConsensusStatus>,
    /// Set: every write and consistent read fails with `ShuttingDown`.
    pub shut_down: AtomicBool,
    /// Local reads served.
    pub gets: AtomicU64,
    /// Writes and consistent reads refused because this member does not lead.
    pub refusals: AtomicU64,
}

impl std::fmt::Debug for FakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStore").field("id", &self.id).finish_non_exhaustive()
    }
}

impl FakeStore {
    fn new(id: MemberId, core: Arc<Core>) -> Self {
        let status_rx = {
            let statuses = lock(&core.statuses);
            let tx = statuses.iter().find(|(m, _)| *m == id).map(|(_, tx)| tx);
            match tx {
                Some(tx) => tx.subscribe(),
                None => watch::channel(ConsensusStatus { member_id: id, ..Default::default() }).1,
            }
        };
        FakeStore {
            id,
            core,
            status_rx,
            shut_down: AtomicBool::new(false),
            gets: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.core.shared)
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
            service_addr: s.voters.get(&l).map(|e| e.service_addr.clone()).filter(|a| !a.is_empty()),
        });
        Err(Error::NotLeader(hint))
    }

    fn apply(&self, s: &mut Shared, op: WriteOp) -> Result<WriteOutcome> {
        // The rules every backend applies (the cluster writes here).
        op.check(crate::store::Writer::Cluster)?;
        let log = &self.core.log;
        let change = |s: &mut Shared, key: &str, value: Option<Vec<u8>>| {
            let old = match &value {
                Some(v) => s.data.insert(key.to_owned(), v.clone()),
                None => s.data.remove(key),
            };
            s.revision += 1;
            let revision = s.revision;
            match &value {
                Some(_) => {
                    let meta = s
                        .meta
                        .entry(key.to_owned())
                        .or_insert(KeyMeta { create_revision: revision, mod_revision: revision });
                    meta.mod_revision = revision;
                }
                None => {
                    s.meta.remove(key);
                }
            }
            // Under the state's lock: watchers see changes in revision order.
            log.publish(vec![WatchEvent { key: key.to_owned(), value, revision: s.revision }]);
            old
        };
        Ok(match op {
            WriteOp::Set { key, value } => {
                WriteOutcome::Set { created: change(s, &key, Some(value)).is_none() }
            }
            WriteOp::Delete { key } => {
                let existed = s.data.contains_key(&key);
                if existed {
                    change(s, &key, None);
                }
                WriteOutcome::Delete { existed }
            }
            WriteOp::CompareAndSet { key, expected, new } => {
                let current = s.data.get(&key).cloned();
                if current != expected {
                    WriteOutcome::CompareAndSet(CasOutcome { succeeded: false, current })
                } else {
                    if current.is_some() || new.is_some() {
                        change(s, &key, new.clone());
                    }
                    WriteOutcome::CompareAndSet(CasOutcome { succeeded: true, current: new })
                }
            }
            WriteOp::AllocateShortId { member } => {
                if let Some(id) = s.short_ids.get(&member) {
                    return Ok(WriteOutcome::ShortId(*id));
                }
                let id = lowest_free_short_id(s.short_ids.values().copied())
                    .ok_or_else(|| Error::BadRequest("every short id is taken".to_owned()))?;
                s.short_ids.insert(member, id);
                WriteOutcome::ShortId(id)
            }
            WriteOp::ReleaseShortId { member } => {
                WriteOutcome::Released { held: s.short_ids.remove(&member).is_some() }
            }
            WriteOp::AdvanceRevision { revision } => {
                s.revision = s.revision.max(revision);
                WriteOutcome::Revision { revision: s.revision }
            }
            WriteOp::DeletePrefix { prefix } => {
                let doomed: Vec<String> =
                    s.data.keys().filter(|k| WriteOp::deletes(&prefix, k)).cloned().collect();
                if !doomed.is_empty() {
                    // One change: every key at one revision.
                    s.revision += 1;
                    let revision = s.revision;
                    let mut events = Vec::with_capacity(doomed.len());
                    for key in &doomed {
                        s.data.remove(key);
                        s.meta.remove(key);
                        events.push(WatchEvent { key: key.clone(), value: None, revision });
                    }
                    log.publish(events);
                }
                WriteOutcome::DeletedPrefix { deleted: doomed.len() as u64 }
            }
        })
    }

    /// A raft membership change on the leader: `change` edits the shared state.
    fn change_membership(
        &self,
        what: &'static str,
        member: MemberId,
        change: impl FnOnce(&mut Shared) -> Result<()>,
    ) -> Result<()> {
        self.check_leader()?;
        {
            let mut s = self.shared();
            change(&mut s)?;
            s.index += 1;
            s.membership_changes.push((what, member));
        }
        self.core.publish_status();
        Ok(())
    }

    /// How long the next write waits, below `max` (a fixed sequence: runs repeat).
    fn next_delay(s: &mut Shared, max: Duration) -> Duration {
        // splitmix64: spread enough for tests, no dependency.
        s.delay_seed = s.delay_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s.delay_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let max_ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(z % (max_ms + 1))
    }
}

impl FakeStore {
    /// A lone member that forms its cluster on [`bootstrap`](ConsensusStore::bootstrap).
    pub async fn open(config: ConsensusConfig) -> Result<Self> {
        // Not initialized, no voters, no leader until bootstrap.
        Ok(FakeStore::new(config.member_id, Core::new(&[config.member_id])))
    }
}

impl ConsensusBackend for FakeStore {
    /// An in-memory store has no network to set up.
    type Network = ();

    async fn open_with(config: ConsensusConfig, _network: ()) -> Result<Self> {
        FakeStore::open(config).await
    }
}

impl ConsensusStore for FakeStore {
    fn member_id(&self) -> MemberId {
        self.id
    }

    fn raft_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn status(&self) -> ConsensusStatus {
        Core::status_of(&self.shared(), self.id)
    }

    fn status_changes(&self) -> watch::Receiver<ConsensusStatus> {
        self.status_rx.clone()
    }

    async fn is_initialized(&self) -> Result<bool> {
        Ok(self.shared().initialized)
    }

    async fn bootstrap(&self) -> Result<()> {
        {
            let mut s = self.shared();
            if s.initialized {
                return Ok(());
            }
            s.initialized = true;
            s.voters.insert(self.id, Endpoints::default());
            s.leader = Some(self.id);
            s.term += 1;
            s.index += 1;
        }
        self.core.publish_status();
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Ok(self.shared().data.get(key).cloned())
    }

    fn get_prefix(&self, prefix: &str) -> Result<Entries> {
        Ok(self.get_prefix_with_revision(prefix)?.1)
    }

    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        let s = self.shared();
        let entries = s
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((s.revision, entries))
    }

    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>> {
        Ok(self.shared().short_ids.clone())
    }

    async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.check_leader()?;
        Ok(self.shared().data.get(key).cloned())
    }

    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        let s = self.shared();
        Ok(s.data.get(key).map(|v| (v.clone(), s.meta.get(key).copied().unwrap_or_default())))
    }

    async fn consistent_get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.check_leader()?;
        self.get_with_meta(key)
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        self.check_leader()?;
        let delay = {
            let mut s = self.shared();
            s.max_write_delay.map(|max| FakeStore::next_delay(&mut s, max))
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let outcome = {
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
                    s.index += 1;
                    if let Some(id) = request.request_id {
                        s.answered.insert(id, outcome.clone());
                    }
                    outcome
                }
            };
            if s.lose_answers > 0 {
                s.lose_answers -= 1;
                None
            } else {
                Some(outcome)
            }
        };
        self.core.publish_status();
        outcome.ok_or_else(|| Error::Timeout("the answer was lost".into()))
    }

    fn watch(&self, prefix: &str) -> Watch {
        match self.core.log.watch(prefix, None) {
            Ok(w) => w,
            // Unreachable: a watch from now is never compacted; a closed watch is the safe answer.
            Err(_) => Watch::ended(prefix),
        }
    }

    fn watch_from(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        self.core.log.watch(prefix, from_revision)
    }

    async fn add_nonvoter(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.change_membership("add", member, |s| {
            if !s.voters.contains_key(&member) {
                s.nonvoters.insert(member, endpoints);
            }
            Ok(())
        })
    }

    async fn promote(&self, member: MemberId) -> Result<()> {
        self.change_membership("promote", member, |s| {
            if s.voters.contains_key(&member) {
                return Ok(());
            }
            let endpoints = s.nonvoters.remove(&member).ok_or_else(|| {
                Error::MembershipChange(format!("{member} is not a nonvoter: it cannot be promoted"))
            })?;
            s.voters.insert(member, endpoints);
            Ok(())
        })
    }

    async fn demote(&self, member: MemberId) -> Result<()> {
        self.change_membership("demote", member, |s| {
            if let Some(endpoints) = s.voters.remove(&member) {
                s.nonvoters.insert(member, endpoints);
            }
            Ok(())
        })
    }

    async fn remove(&self, member: MemberId) -> Result<()> {
        self.change_membership("remove", member, |s| {
            s.voters.remove(&member);
            s.nonvoters.remove(&member);
            Ok(())
        })
    }

    async fn set_endpoints(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.change_membership("endpoints", member, |s| {
            match s.voters.get_mut(&member).or_else(|| s.nonvoters.get_mut(&member)) {
                Some(e) => *e = endpoints,
                None => return Err(Error::MembershipChange(format!("{member} is not in raft"))),
            }
            Ok(())
        })
    }

    async fn shutdown(&self) -> Result<()> {
        self.shut_down.store(true, Ordering::SeqCst);
        Ok(())
    }
}
