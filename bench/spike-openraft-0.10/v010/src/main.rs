//! openraft 0.10.0-alpha.37 side of the spike: 3 in-process nodes, durable log store,
//! in-memory state machine, in-process mpsc/oneshot network. Kept line-by-line parallel
//! to ../v09/src/main.rs; see ../README.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::error::{Fatal, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Config, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftNetworkFactory,
    RaftNetworkV2, RaftSnapshotBuilder, SnapshotPolicy, StoredMembership,
};
use spike_common::{save_vote_file, Args, LogWriter, Req, Resp};
use tokio::sync::{mpsc, oneshot};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Req,
        R = Resp,
        NodeId = u64,
        Node = BasicNode,
);

type NodeId = u64;
type C = TypeConfig;
type Entry = openraft::type_config::alias::EntryOf<C>;
type LogId = LogIdOf<C>;
type Vote = VoteOf<C>;
/// Snapshot payload: the JSON-serialized key/value map (0.10: chosen by the state machine,
/// no longer a `RaftTypeConfig` type).
type SnapshotData = Vec<u8>;
type Snapshot = SnapshotOf<C, SnapshotData>;
type Raft = openraft::Raft<C, StateMachine>;

// =============================================================================================
// Log store
// =============================================================================================

#[derive(Default)]
struct LogInner {
    log: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

/// Durable append-only log. Entries live in memory for reads; the writer thread makes them
/// durable and then fires the flush callback. Also used as its own `LogReader`.
#[derive(Clone)]
struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    writer: LogWriter,
    vote_path: PathBuf,
    fsync: bool,
}

impl LogStore {
    fn new(dir: PathBuf, fsync: bool, sync_delay: Duration) -> io::Result<Self> {
        Ok(LogStore {
            inner: Arc::default(),
            writer: LogWriter::spawn_with_delay(&dir.join("raft.log"), fsync, sync_delay)?,
            vote_path: dir.join("vote.json"),
            fsync,
        })
    }

    /// Truncate/purge: in memory, plus a marker record in the log file (no callback).
    fn marker(&self, kind: &str, log_id: &Option<LogId>) -> io::Result<()> {
        let line = format!("{{\"{kind}\":{}}}\n", serde_json::to_string(log_id).unwrap());
        self.writer.submit(line.into_bytes(), None)
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }

    // 0.10: read_vote moved from RaftLogStorage to RaftLogReader.
    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().unwrap().vote.clone())
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let inner = self.inner.lock().unwrap();
        let last = inner.log.iter().next_back().map(|(_, e)| e.log_id.clone()).or(inner.last_purged.clone());
        Ok(LogState { last_purged_log_id: inner.last_purged.clone(), last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = serde_json::to_vec(vote).map_err(io::Error::other)?;
        save_vote_file(&self.vote_path, &bytes, self.fsync)?;
        self.inner.lock().unwrap().vote = Some(vote.clone());
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().unwrap().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().unwrap().committed.clone())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut buf = Vec::with_capacity(256);
        {
            let mut inner = self.inner.lock().unwrap();
            for entry in entries {
                serde_json::to_writer(&mut buf, &entry).map_err(io::Error::other)?;
                buf.push(b'\n');
                inner.log.insert(entry.log_id.index, entry);
            }
        }
        self.writer.submit(buf, Some(Box::new(move |res| callback.io_completed(res))))
    }

    // 0.10: `truncate(since)` became `truncate_after(last_to_keep)`.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map(|l| l.index + 1).unwrap_or(0);
        self.inner.lock().unwrap().log.split_off(&from);
        self.marker("truncate_after", &last_log_id)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.log = inner.log.split_off(&(log_id.index + 1));
            inner.last_purged = Some(log_id.clone());
        }
        self.marker("purge_upto", &Some(log_id))
    }
}

// =============================================================================================
// State machine
// =============================================================================================

#[derive(Default)]
struct SmInner {
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<C>,
    kv: BTreeMap<String, String>,
    snapshot: Option<(SnapshotMetaOf<C>, SnapshotData)>,
}

#[derive(Clone, Default)]
struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let mut inner = self.inner.lock().unwrap();
        let data = serde_json::to_vec(&inner.kv).map_err(io::Error::other)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: inner.last_applied.clone(),
            last_membership: inner.membership.clone(),
        };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembershipOf<C>), io::Error> {
        let inner = self.inner.lock().unwrap();
        Ok((inner.last_applied.clone(), inner.membership.clone()))
    }

    // 0.10: entries come as a stream of (entry, responder); the response is sent through the
    // responder instead of being returned as a Vec.
    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let resp = {
                let mut inner = self.inner.lock().unwrap();
                inner.last_applied = Some(entry.log_id.clone());
                match entry.payload {
                    EntryPayload::Blank => Resp::default(),
                    EntryPayload::Normal(req) => Resp { prev: inner.kv.insert(req.key, req.value) },
                    EntryPayload::Membership(m) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id.clone()), m);
                        Resp::default()
                    }
                }
            };
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: SnapshotData) -> Result<(), io::Error> {
        let kv = serde_json::from_slice(&snapshot).map_err(io::Error::other)?;
        let mut inner = self.inner.lock().unwrap();
        inner.kv = kv;
        inner.last_applied = meta.last_log_id.clone();
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: data.clone() }))
    }
}

// =============================================================================================
// Network: every RPC is a message on the target node's mpsc, answered through a oneshot.
// =============================================================================================

type Reply<T, E> = oneshot::Sender<Result<T, E>>;

enum Rpc {
    Append(AppendEntriesRequest<C>, Reply<AppendEntriesResponse<C>, RaftError<C>>),
    Vote(VoteRequest<C>, Reply<VoteResponse<C>, RaftError<C>>),
    PreVote(VoteRequest<C>, Reply<VoteResponse<C>, RaftError<C>>),
    FullSnapshot(Vote, Snapshot, Reply<SnapshotResponse<C>, Fatal<C>>),
}

type Router = Arc<HashMap<NodeId, mpsc::Sender<Rpc>>>;

/// The node-side "server" task: receive RPCs and hand each to its own task.
fn serve(raft: Raft, mut rx: mpsc::Receiver<Rpc>) {
    tokio::spawn(async move {
        while let Some(rpc) = rx.recv().await {
            let raft = raft.clone();
            tokio::spawn(async move {
                match rpc {
                    Rpc::Append(req, tx) => drop(tx.send(raft.append_entries(req).await)),
                    Rpc::Vote(req, tx) => drop(tx.send(raft.vote(req).await)),
                    Rpc::PreVote(req, tx) => drop(tx.send(raft.pre_vote(req).await)),
                    Rpc::FullSnapshot(v, s, tx) => drop(tx.send(raft.install_full_snapshot(v, s).await)),
                }
            });
        }
    });
}

struct NetworkFactory {
    router: Router,
}

struct Connection {
    tx: mpsc::Sender<Rpc>,
}

impl Connection {
    async fn call<T, E, E2>(&self, make: impl FnOnce(Reply<T, E>) -> Rpc) -> Result<T, E2>
    where
        E: std::error::Error + 'static,
        E2: From<Unreachable<C>>,
    {
        let (tx, rx) = oneshot::channel();
        let unreachable = |e: &dyn std::error::Error| Unreachable::new(&io::Error::other(e.to_string()));
        self.tx.send(make(tx)).await.map_err(|e| unreachable(&e))?;
        let res = rx.await.map_err(|e| unreachable(&e))?;
        // The remote's Raft API errors are all Fatal (node shutting down) => unreachable.
        res.map_err(|e| E2::from(Unreachable::new(&e)))
    }
}

impl RaftNetworkFactory<C> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { tx: self.router[&target].clone() }
    }
}

// Default `stream_append` (sequential: one AppendEntries in flight per follower, like 0.9).
impl RaftNetworkV2<C> for Connection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call(|tx| Rpc::Append(rpc, tx)).await
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(|tx| Rpc::Vote(rpc, tx)).await
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(|tx| Rpc::PreVote(rpc, tx)).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        self.call(|tx| Rpc::FullSnapshot(vote, snapshot, tx)).await
    }
}

// =============================================================================================
// main
// =============================================================================================

fn config() -> Arc<Config> {
    let c = Config {
        cluster_name: "spike".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    Arc::new(c.validate().expect("valid config"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let ids = [1u64, 2, 3];
    let run_dir = spike_common::make_run_dir(&args.data, "v010", &ids).expect("create data dir");

    let mut senders = HashMap::new();
    let mut receivers = HashMap::new();
    for id in ids {
        let (tx, rx) = mpsc::channel::<Rpc>(1024);
        senders.insert(id, tx);
        receivers.insert(id, rx);
    }
    let router: Router = Arc::new(senders);

    let mut rafts = BTreeMap::new();
    for id in ids {
        let delay = if id == 1 { args.leader_sync_delay } else { Duration::ZERO };
        let log_store = LogStore::new(run_dir.join(id.to_string()), args.fsync, delay).expect("log store");
        let sm = StateMachine::default();
        let net = NetworkFactory { router: router.clone() };
        let raft = Raft::new(id, config(), net, log_store, sm).await.expect("raft");
        serve(raft.clone(), receivers.remove(&id).unwrap());
        rafts.insert(id, raft);
    }

    let leader = rafts[&1].clone();
    let members: BTreeMap<NodeId, BasicNode> = ids.iter().map(|id| (*id, BasicNode::default())).collect();
    leader.initialize(members).await.expect("initialize");
    leader.wait(Some(Duration::from_secs(10))).current_leader(1, "leader elected").await.expect("no leader");
    let voters: BTreeSet<NodeId> = ids.iter().copied().collect();
    leader
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.membership_config.membership().voter_ids().collect::<BTreeSet<_>>() == voters, "voters")
        .await
        .expect("membership");
    // Wait until the leader's own blank log of this term is applied, i.e. a quorum has acked
    // it (0.10 rejects writes with ForwardToLeader(LeaseExpired) until the first quorum ack).
    leader
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| {
                let applied = m.last_applied.as_ref().map(|l| l.index);
                m.current_leader == Some(1) && m.last_log_index >= Some(1) && applied == m.last_log_index
            },
            "leader log applied",
        )
        .await
        .expect("leader ready");

    let raft = leader.clone();
    let mut stats = spike_common::run_bench(&args, move |req| {
        let raft = raft.clone();
        async move {
            raft.client_write(req).await.expect("client_write");
        }
    })
    .await;
    println!("{}", stats.line("v010", &args));

    for (_, r) in rafts {
        let _ = r.shutdown().await;
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
}
