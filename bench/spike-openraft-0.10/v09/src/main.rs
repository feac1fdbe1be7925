//! openraft 0.9.25 (storage-v2) side of the spike: 3 in-process nodes, durable log store,
//! in-memory state machine, in-process mpsc/oneshot network. See ../README.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Config, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftNetwork, RaftNetworkFactory, RaftSnapshotBuilder, SnapshotMeta, SnapshotPolicy,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use spike_common::{save_vote_file, Args, LogWriter, Req, Resp};
use tokio::sync::{mpsc, oneshot};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Req,
        R = Resp,
        NodeId = u64,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

type NodeId = u64;
type Raft = openraft::Raft<TypeConfig>;
type SE = StorageError<NodeId>;

// =============================================================================================
// Log store
// =============================================================================================

#[derive(Default)]
struct LogInner {
    log: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
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
    fn marker(&self, kind: &str, log_id: &LogId<NodeId>) -> Result<(), SE> {
        let line = format!("{{\"{kind}\":{}}}\n", serde_json::to_string(log_id).unwrap());
        self.writer.submit(line.into_bytes(), None).map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SE> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SE> {
        let inner = self.inner.lock().unwrap();
        let last = inner.log.iter().next_back().map(|(_, e)| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SE> {
        let bytes = serde_json::to_vec(vote).unwrap();
        save_vote_file(&self.vote_path, &bytes, self.fsync).map_err(|e| StorageIOError::write_vote(&e))?;
        self.inner.lock().unwrap().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SE> {
        Ok(self.inner.lock().unwrap().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SE> {
        self.inner.lock().unwrap().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SE> {
        Ok(self.inner.lock().unwrap().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut buf = Vec::with_capacity(256);
        {
            let mut inner = self.inner.lock().unwrap();
            for entry in entries {
                serde_json::to_writer(&mut buf, &entry).map_err(|e| StorageIOError::write_logs(&e))?;
                buf.push(b'\n');
                inner.log.insert(entry.log_id.index, entry);
            }
        }
        self.writer
            .submit(buf, Some(Box::new(move |res| callback.log_io_completed(res))))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SE> {
        self.inner.lock().unwrap().log.split_off(&log_id.index);
        self.marker("truncate_since", &log_id)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SE> {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.log = inner.log.split_off(&(log_id.index + 1));
            inner.last_purged = Some(log_id);
        }
        self.marker("purge_upto", &log_id)
    }
}

// =============================================================================================
// State machine
// =============================================================================================

#[derive(Default)]
struct SmInner {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    kv: BTreeMap<String, String>,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

#[derive(Clone, Default)]
struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<openraft::Snapshot<TypeConfig>, SE> {
        let mut inner = self.inner.lock().unwrap();
        let data = serde_json::to_vec(&inner.kv).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id: format!("{:?}", inner.last_applied),
        };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(openraft::Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SE> {
        let inner = self.inner.lock().unwrap();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Resp>, SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().unwrap();
        let mut out = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Resp::default()),
                EntryPayload::Normal(req) => {
                    let prev = inner.kv.insert(req.key, req.value);
                    out.push(Resp { prev });
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Resp::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SE> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SE> {
        let data = snapshot.into_inner();
        let kv = serde_json::from_slice(&data).map_err(|e| StorageIOError::write_state_machine(&e))?;
        let mut inner = self.inner.lock().unwrap();
        inner.kv = kv;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<openraft::Snapshot<TypeConfig>>, SE> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.snapshot.as_ref().map(|(meta, data)| openraft::Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

// =============================================================================================
// Network: every RPC is a message on the target node's mpsc, answered through a oneshot.
// =============================================================================================

type Reply<T, E> = oneshot::Sender<Result<T, E>>;

enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>, Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(VoteRequest<NodeId>, Reply<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(
        InstallSnapshotRequest<TypeConfig>,
        Reply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    FullSnapshot(Vote<NodeId>, openraft::Snapshot<TypeConfig>, Reply<SnapshotResponse<NodeId>, Fatal<NodeId>>),
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
                    Rpc::Snapshot(req, tx) => drop(tx.send(raft.install_snapshot(req).await)),
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
    target: NodeId,
    tx: mpsc::Sender<Rpc>,
}

impl Connection {
    async fn call<T, E, E2>(&self, make: impl FnOnce(Reply<T, E>) -> Rpc) -> Result<T, E2>
    where
        E: std::error::Error + 'static,
        E2: From<Unreachable>,
    {
        let (tx, rx) = oneshot::channel();
        let unreachable = |e: &dyn std::error::Error| Unreachable::new(&io::Error::other(e.to_string()));
        self.tx.send(make(tx)).await.map_err(|e| unreachable(&e))?;
        let res = rx.await.map_err(|e| unreachable(&e))?;
        // The remote's Raft API errors are all Fatal (node shutting down) => unreachable.
        res.map_err(|e| E2::from(Unreachable::new(&e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection { target, tx: self.router[&target].clone() }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(|tx| Rpc::Append(rpc, tx)).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(|tx| Rpc::Snapshot(rpc, tx)).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(|tx| Rpc::Vote(rpc, tx)).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: openraft::Snapshot<TypeConfig>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let _ = self.target;
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
    let run_dir = spike_common::make_run_dir(&args.data, "v09", &ids).expect("create data dir");

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
    println!("{}", stats.line("v09", &args));

    for (_, r) in rafts {
        let _ = r.shutdown().await;
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
}
