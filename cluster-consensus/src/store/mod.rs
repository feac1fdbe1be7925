//! [`RaftStore`]: the handle that implements core's [`ConsensusStore`] on
//! openraft. It owns the raft instance, the raft RPC listener, the task that
//! turns raft metrics into [`ConsensusStatus`], and the storage.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_core::{
    ConsensusBackend, ConsensusConfig, ConsensusLimits, ConsensusProgress, ConsensusStatus, ConsensusStore,
    Endpoints, Entries, Error, KeyMeta, LeaderHint, MemberId, Quota, Result, ShortId, Watch, WatchLog,
    WriteOutcome, WriteRequest,
};
use openraft::error::InitializeError;
use openraft::metrics::WaitError;
use openraft::{ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batcher::WriteBatcher;
use crate::error::IntoStoreError;
use crate::log_store::LogStore;
use crate::network::client::{BatchLimits, NetworkFactory, RaftClient};
use crate::network::guard::{GuardLimits, RaftGuard};
use crate::network::server::{ServerContext, serve};
use crate::network::{RaftRpc, RaftRpcReply};
use crate::recovery::VoteGate;
#[cfg(feature = "durable")]
use crate::state_machine::SnapshotVault;
use crate::state_machine::{SharedState, StateMachine};
use crate::typecfg::Raft;

/// Capacity of the watch channel: a watcher further behind gets `Error::Lagged`.
const WATCH_CAPACITY: usize = 4096;
/// How many past changes a member keeps for watches from an old revision;
/// older ones get `Error::Compacted`.
const WATCH_HISTORY_EVENTS: usize = 10_000;
/// The most bytes of keys and values kept for watches from an old revision.
const WATCH_HISTORY_BYTES: usize = 16 << 20;
/// The smallest frame limit that still carries useful snapshot chunks.
const MIN_FRAME_LEN: usize = 64 * 1024;
/// The largest snapshot chunk (openraft's default).
const MAX_SNAPSHOT_CHUNK: usize = 3 * 1024 * 1024;
/// The most bytes of log entries sent in one AppendEntries.
const MAX_APPEND_BYTES: usize = 256 * 1024;
/// How long `add_nonvoter` waits for the nonvoter to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The consensus store of one member, on openraft. Cheap to clone: clones
/// share the member.
///
/// Call [`shutdown`](ConsensusStore::shutdown) before dropping the last
/// handle: it stops raft, the listener and every task, and releases the data
/// directory.
#[derive(Clone)]
pub struct RaftStore {
    inner: Arc<Inner>,
}

struct Inner {
    member_id: MemberId,
    raft: Raft,
    state: SharedState,
    events: Arc<WatchLog>,
    status: watch::Receiver<ConsensusStatus>,
    raft_addr: SocketAddr,
    endpoints: Endpoints,
    client: RaftClient,
    server: Mutex<Option<cluster_rpc::Server>>,
    batcher: WriteBatcher,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    #[cfg(feature = "durable")]
    durable: Mutex<Option<crate::log_store::durable::DurableWriter>>,
    op_timeout: Duration,
    votes: VoteGate,
    limits: ConsensusLimits,
    alarm: Arc<QuotaAlarm>,
    span: tracing::Span,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The openraft configuration for `config`, validated.
pub fn raft_config(config: &ConsensusConfig) -> Result<openraft::Config> {
    let ceiling = cluster_core::wire::MAX_FRAME_LEN_CEILING;
    if config.max_frame_len < MIN_FRAME_LEN || config.max_frame_len > ceiling {
        return Err(Error::BadRequest(format!(
            "max_frame_len: {} bytes is not between {MIN_FRAME_LEN} and {ceiling}",
            config.max_frame_len
        )));
    }
    if let Some((field, problem)) = config.limits.problems().into_iter().next() {
        return Err(Error::BadRequest(format!("limits.{field}: {problem}")));
    }
    let t = &config.timing;
    let raft = openraft::Config {
        cluster_name: config.cluster_id.clone(),
        heartbeat_interval: ms(t.heartbeat_interval),
        election_timeout_min: ms(t.election_timeout_min),
        election_timeout_max: ms(t.election_timeout_max),
        install_snapshot_timeout: ms(config.rpc_timeout.max(Duration::from_secs(2))),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries.max(1)),
        max_in_snapshot_log_to_keep: t.keep_entries_after_snapshot,
        // A chunk plus its header must fit in one frame.
        snapshot_max_chunk_size: (config.max_frame_len / 2).min(MAX_SNAPSHOT_CHUNK) as u64,
        ..Default::default()
    };
    raft.validate().map_err(|e| Error::BadRequest(format!("timing: {e}")))
}

/// The store quota alarm: raised when a write is refused because the store
/// is full, lowered once the store shrank below its size then (something
/// was deleted) or a growing write was admitted.
#[derive(Debug)]
struct QuotaAlarm {
    /// The store size when a write was last refused; `u64::MAX`: no alarm.
    raised_at: AtomicU64,
}

impl QuotaAlarm {
    const NONE: u64 = u64::MAX;

    fn raise(&self, store_bytes: u64) {
        self.raised_at.store(store_bytes, Ordering::Relaxed);
    }

    fn lower(&self) {
        self.raised_at.store(Self::NONE, Ordering::Relaxed);
    }

    /// Whether this member refused a write for the store quota since the
    /// store last shrank below its size then.
    fn refused(&self, store_bytes: u64) -> bool {
        let at = self.raised_at.load(Ordering::Relaxed);
        at != Self::NONE && store_bytes >= at
    }
}

fn status_of(
    m: &RaftMetrics<MemberId, Endpoints>,
    reset_pending: Option<String>,
    state: &SharedState,
    limits: &ConsensusLimits,
    alarm: &QuotaAlarm,
) -> ConsensusStatus {
    let store_bytes = state.read().store_bytes;
    let membership = m.membership_config.membership();
    let voter_ids: BTreeSet<MemberId> = membership.voter_ids().collect();
    let mut voters = BTreeMap::new();
    let mut nonvoters = BTreeMap::new();
    for (id, node) in membership.nodes() {
        if voter_ids.contains(id) {
            voters.insert(*id, node.clone());
        } else {
            nonvoters.insert(*id, node.clone());
        }
    }
    ConsensusStatus {
        member_id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        voters,
        nonvoters,
        reset_pending,
        store_bytes,
        quota_alarm: crate::quota::alarm(limits, store_bytes, alarm.refused(store_bytes)),
    }
}

fn advertised(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn wait_error(e: WaitError) -> Error {
    match e {
        WaitError::Timeout(t, msg) => Error::Timeout(format!("{msg} (waited {t:?})")),
        WaitError::ShuttingDown => Error::ShuttingDown,
    }
}

/// A restarted member never leads without an election.
///
/// openraft 0.9 restores a member whose persisted vote is committed for
/// itself as leader at once, in the same term, and answers read-index reads
/// from the committed index it persisted. That index may trail writes already
/// acknowledged (openraft allows it to be persisted lazily, and the log store
/// does so to save an fsync per write), so such a leader could serve a stale
/// read — the fault tests caught one after the whole cluster was killed and
/// restarted. The vote keeps its term and candidate, so voting stays safe,
/// but is stored as not committed: the member starts as a follower, and
/// whoever leads next wins a new term and commits a blank entry before it
/// serves a read.
async fn forget_leadership(log: &mut LogStore) -> Result<()> {
    use openraft::storage::RaftLogStorage;
    let vote = log.read_vote().await.map_err(|e| Error::Storage(e.to_string()))?;
    if let Some(mut vote) = vote.filter(|v| v.committed) {
        vote.committed = false;
        log.save_vote(&vote).await.map_err(|e| Error::Storage(e.to_string()))?;
    }
    Ok(())
}

/// How often a member with a pending reset looks for the leader's note.
const RESET_POLL: Duration = Duration::from_millis(100);

/// Ends a pending reset once this member has applied the leader's note that
/// it is out of the voters (see [`crate::recovery`]): removes the marker,
/// lets votes through and allows elections again.
async fn watch_reset(
    raft: Raft,
    state: SharedState,
    votes: VoteGate,
    reset_id: String,
    dir: std::path::PathBuf,
    cancel: CancellationToken,
) {
    let key = cluster_core::keys::raft_reset_key(raft.metrics().borrow().id);
    let mut poll = tokio::time::interval(RESET_POLL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = poll.tick() => {}
        }
        let noted = state.read().data.get(&key).is_some_and(|v| v.as_slice() == reset_id.as_bytes());
        if !noted {
            continue;
        }
        let cleared = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || crate::recovery::clear_reset(&dir)
        })
        .await;
        match cleared {
            Ok(Ok(())) => {
                votes.release();
                raft.runtime_config().elect(true);
                tracing::info!(reset = %reset_id, "out of the voters and caught up: this member votes again");
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot end the pending reset; retrying"),
            Err(e) => tracing::warn!(error = %e, "cannot end the pending reset; retrying"),
        }
    }
}

impl RaftStore {
    /// Opens (or reopens from its data directory) this member's store on
    /// plain TCP with the RPC layer's default limits: [`open_with`] with the
    /// default network settings.
    ///
    /// [`open_with`]: ConsensusBackend::open_with
    pub async fn open(config: ConsensusConfig) -> Result<Self> {
        Self::open_with(config, cluster_rpc::Settings::default()).await
    }

    async fn open_inner(
        config: ConsensusConfig,
        mut settings: cluster_rpc::Settings,
        span: tracing::Span,
    ) -> Result<Self> {
        let mut raft_config = raft_config(&config)?;
        let member_id = config.member_id;
        let pending = match &config.data_dir {
            Some(dir) => crate::recovery::pending_reset(dir).map_err(|e| match e {
                crate::recovery::ResetError::BadMarker { path, reason } => Error::CorruptState {
                    path: path.display().to_string(),
                    offset: None,
                    detail: format!("{reason}; run `carbon agent --reset-raft-state` again"),
                },
                other => Error::Storage(other.to_string()),
            })?,
            None => None,
        };
        if let Some(id) = &pending {
            tracing::warn!(reset = %id, "raft state was reset: no votes and no elections until this member is out of the voters");
            raft_config.enable_elect = false;
        }
        let votes = VoteGate::new(pending);
        let raft_config = Arc::new(raft_config);
        let events = Arc::new(WatchLog::new(0, WATCH_CAPACITY, WATCH_HISTORY_EVENTS, WATCH_HISTORY_BYTES));

        #[cfg(feature = "durable")]
        let (log_store, sm, durable) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
                let path = dir.join("raft.redb");
                let redb = path.clone();
                let opened = tokio::task::spawn_blocking(move || crate::log_store::durable::open(&path))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?
                    .map_err(|e| match e.corruption() {
                        Some((file, offset)) => {
                            tracing::error!(file = %file.display(), ?offset, error = %e, "corrupt raft state: refusing to start");
                            Error::CorruptState { path: file.display().to_string(), offset, detail: e.detail() }
                        }
                        None => Error::Storage(format!("cannot open {}: {e}", dir.display())),
                    })?;
                let vault: Arc<dyn SnapshotVault> = Arc::new(opened.writer.clone());
                let sm = match StateMachine::new(opened.snapshot, Some(vault), events.clone()) {
                    Ok(sm) => sm,
                    Err(e) => {
                        opened.writer.close();
                        return Err(Error::CorruptState {
                            path: redb.display().to_string(),
                            offset: None,
                            detail: format!(
                                "the snapshot's state does not decode: {e}; {}",
                                crate::log_store::durable::RECOVERY_HINT
                            ),
                        });
                    }
                };
                (LogStore::durable(opened.log, opened.writer.clone()), sm, Some(opened.writer))
            }
            None => (
                LogStore::in_memory(),
                StateMachine::new(None, None, events.clone()).map_err(|e| Error::Storage(e.to_string()))?,
                None,
            ),
        };
        #[cfg(not(feature = "durable"))]
        let (log_store, sm) = {
            if config.data_dir.is_some() {
                return Err(Error::BadRequest(
                    "data_dir: durable storage needs the `durable` feature of cluster-consensus".to_owned(),
                ));
            }
            let sm =
                StateMachine::new(None, None, events.clone()).map_err(|e| Error::Storage(e.to_string()))?;
            (LogStore::in_memory(), sm)
        };
        let state = sm.shared();

        let listener = TcpListener::bind(config.raft_listen_addr)
            .await
            .map_err(|e| Error::io(format_args!("cannot listen on {}", config.raft_listen_addr), &e))?;
        let raft_addr = listener.local_addr()?;
        let endpoints = Endpoints {
            raft_addr: advertised(&config.advertise_host, raft_addr.port()),
            service_addr: config.service_addr.clone(),
        };

        let cancel = CancellationToken::new();
        settings.limits.max_frame_len = config.max_frame_len;
        let client = RaftClient::new(cluster_rpc::ClientConfig {
            cluster_id: config.cluster_id.clone(),
            limits: settings.limits.clone(),
            security: settings.security.clone(),
        });
        let limits = BatchLimits { max_append_bytes: MAX_APPEND_BYTES };
        let network = NetworkFactory::new(member_id, client.clone(), limits);
        let mut log_store = log_store;
        forget_leadership(&mut log_store).await?;
        let raft = Raft::new(member_id, raft_config, network, log_store, sm)
            .await
            .map_err(|e| e.into_store_error())?;

        let guard_limits = GuardLimits { max_snapshot_bytes: config.limits.max_snapshot_bytes };
        let server_ctx = ServerContext {
            raft: raft.clone(),
            votes: votes.clone(),
            guard: Arc::new(RaftGuard::new(raft.metrics(), guard_limits)),
        };
        let server = {
            let _entered = span.enter();
            serve(listener, server_ctx, &config.cluster_id, &settings)
                .map_err(|e| Error::BadRequest(cluster_rpc::chain(&e)))?
        };

        let mut metrics = raft.metrics();
        let mut gate = votes.subscribe();
        let alarm = Arc::new(QuotaAlarm { raised_at: AtomicU64::new(QuotaAlarm::NONE) });
        let (status_tx, status) =
            watch::channel(status_of(&metrics.borrow(), votes.pending(), &state, &config.limits, &alarm));
        let status_cancel = cancel.clone();
        let (status_state, status_limits, status_alarm) =
            (state.clone(), config.limits.clone(), alarm.clone());
        let status_task = tokio::spawn(
            async move {
                loop {
                    tokio::select! {
                        _ = status_cancel.cancelled() => break,
                        changed = metrics.changed() => {
                            if changed.is_err() {
                                break;
                            }
                        }
                        changed = gate.changed() => {
                            if changed.is_err() {
                                break;
                            }
                        }
                    }
                    let now = status_of(
                        &metrics.borrow_and_update(),
                        gate.borrow_and_update().clone(),
                        &status_state,
                        &status_limits,
                        &status_alarm,
                    );
                    status_tx.send_if_modified(|s| {
                        if *s == now {
                            false
                        } else {
                            *s = now;
                            true
                        }
                    });
                }
            }
            .instrument(span.clone()),
        );
        let mut tasks = vec![status_task];
        if let (Some(reset_id), Some(dir)) = (votes.pending(), config.data_dir.clone()) {
            let watcher =
                watch_reset(raft.clone(), state.clone(), votes.clone(), reset_id, dir, cancel.clone());
            tasks.push(tokio::spawn(watcher.instrument(span.clone())));
        }
        let (batcher, batcher_task) = WriteBatcher::spawn(raft.clone(), cancel.clone());
        tracing::info!(raft_addr = %endpoints.raft_addr, durable = config.data_dir.is_some(), "consensus store open");

        Ok(RaftStore {
            inner: Arc::new(Inner {
                member_id,
                raft,
                state,
                events,
                status,
                raft_addr,
                endpoints,
                client,
                server: Mutex::new(Some(server)),
                batcher,
                cancel,
                tasks: Mutex::new({
                    tasks.push(batcher_task);
                    tasks
                }),
                #[cfg(feature = "durable")]
                durable: Mutex::new(durable),
                op_timeout: (config.rpc_timeout * 10).max(Duration::from_secs(5)),
                votes,
                limits: config.limits.clone(),
                alarm,
                span,
            }),
        })
    }

    /// The openraft instance, for what the contract does not cover (metrics,
    /// triggering a snapshot in tests, …).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Where this member is reached (raft and service addresses).
    pub fn endpoints(&self) -> &Endpoints {
        &self.inner.endpoints
    }

    /// True once [`shutdown`](ConsensusStore::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The index of the last log entry this member applied, exactly as its
    /// local reads see it (the status may lag a little behind).
    pub fn applied_index(&self) -> Option<u64> {
        self.inner.state.read().last_applied.map(|l| l.index)
    }

    /// The revision of this member's applied state.
    pub fn revision(&self) -> u64 {
        self.inner.state.read().revision
    }

    /// The quota check before proposing (see [`crate::quota`]); raises or
    /// lowers the store quota alarm.
    fn admit(&self, op: &cluster_core::WriteOp) -> Result<()> {
        let state = self.inner.state.read();
        let value_len = |key: &str| state.data.get(key).map(Vec::len);
        match crate::quota::admit(&self.inner.limits, state.store_bytes, value_len, op) {
            Err(e @ Error::QuotaExceeded { quota: Quota::StoreBytes, .. }) => {
                self.inner.alarm.raise(state.store_bytes);
                tracing::warn!(parent: &self.inner.span, store_bytes = state.store_bytes, "store quota alarm: write refused");
                Err(e)
            }
            Err(e) => Err(e),
            Ok(()) => {
                if crate::quota::growth(value_len, op) > 0 {
                    self.inner.alarm.lower();
                }
                Ok(())
            }
        }
    }

    /// Completes a leader hint with the leader's service address from the
    /// membership this member knows.
    fn complete_hint(&self, e: Error) -> Error {
        match e {
            Error::NotLeader(Some(LeaderHint { member_id, service_addr: None })) => {
                let service_addr = self
                    .status()
                    .voters
                    .get(&member_id)
                    .map(|e| e.service_addr.clone())
                    .filter(|a| !a.is_empty());
                Error::NotLeader(Some(LeaderHint { member_id, service_addr }))
            }
            other => other,
        }
    }

    async fn bounded<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Ok(r) => r.map_err(|e| self.complete_hint(e)),
            Err(_) => Err(Error::Timeout(format!("{what} took more than {:?}", self.inner.op_timeout))),
        }
    }

    async fn change_membership(
        &self,
        what: &str,
        change: ChangeMembers<MemberId, Endpoints>,
        retain: bool,
    ) -> Result<()> {
        let raft = &self.inner.raft;
        self.bounded(what, async {
            raft.change_membership(change, retain).await.map_err(|e| e.into_store_error())
        })
        .await
        .map(|_| ())
    }

    /// Waits until `member` applied the log up to `index`, by asking it.
    async fn wait_applied(&self, member: MemberId, addr: &str, index: u64, deadline: Instant) -> Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!("nonvoter {member} did not apply up to {index}")));
            }
            let ttl = left.min(Duration::from_secs(1));
            if let Ok(RaftRpcReply::AppliedIndex(Some(applied))) =
                crate::network::client::call(&self.inner.client, addr, member, RaftRpc::AppliedIndex, ttl)
                    .await
                && applied >= index
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10).min(left)).await;
        }
    }

    async fn add_nonvoter_inner(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        let raft = &self.inner.raft;
        let addr = endpoints.raft_addr.clone();
        self.bounded("adding a nonvoter", async {
            raft.add_learner(member, endpoints, false).await.map_err(|e| e.into_store_error())
        })
        .await?;
        // Everything this leader applied, the membership change included.
        let target = self.applied_index().unwrap_or(0);
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        let metrics = raft
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |m| {
                    m.state != ServerState::Leader
                        || m.replication
                            .as_ref()
                            .and_then(|r| r.get(&member).copied().flatten())
                            .is_some_and(|l| l.index >= target)
                },
                "nonvoter replicated",
            )
            .await
            .map_err(wait_error)?;
        if metrics.state != ServerState::Leader {
            return Err(self.complete_hint(Error::NotLeader(
                metrics.current_leader.map(|member_id| LeaderHint { member_id, service_addr: None }),
            )));
        }
        self.wait_applied(member, &addr, target, deadline).await
    }
}

impl RaftStore {
    /// Waits until this member, as leader, confirmed its leadership with a
    /// quorum and applied everything committed before: a read after it is
    /// linearizable.
    async fn linearizable(&self) -> Result<()> {
        let raft = &self.inner.raft;
        self.bounded("linearizable read", async {
            raft.ensure_linearizable().await.map_err(|e| e.into_store_error())
        })
        .await?;
        Ok(())
    }
}

impl ConsensusBackend for RaftStore {
    /// The limits and TLS of the raft port and of raft's client (the frame
    /// limit is [`ConsensusConfig::max_frame_len`]).
    type Network = cluster_rpc::Settings;

    async fn open_with(config: ConsensusConfig, network: cluster_rpc::Settings) -> Result<Self> {
        let span = tracing::info_span!("consensus", member = %config.member_id);
        Self::open_inner(config, network, span.clone()).instrument(span).await
    }
}

impl ConsensusStore for RaftStore {
    fn member_id(&self) -> MemberId {
        self.inner.member_id
    }

    fn raft_addr(&self) -> SocketAddr {
        self.inner.raft_addr
    }

    fn status(&self) -> ConsensusStatus {
        // Straight from raft's metrics: never behind `status_changes`.
        status_of(
            &self.inner.raft.metrics().borrow(),
            self.inner.votes.pending(),
            &self.inner.state,
            &self.inner.limits,
            &self.inner.alarm,
        )
    }

    fn status_changes(&self) -> watch::Receiver<ConsensusStatus> {
        self.inner.status.clone()
    }

    async fn is_initialized(&self) -> Result<bool> {
        self.inner.raft.is_initialized().await.map_err(|e| e.into_store_error())
    }

    async fn bootstrap(&self) -> Result<()> {
        let raft = &self.inner.raft;
        if let Some(id) = self.inner.votes.pending() {
            // Its old cluster still counts it: a new one beside it would split the brain.
            return Err(Error::BadRequest(format!(
                "the raft state of this member was reset (reset {id}): it rejoins its cluster through \
                 seeds and never bootstraps a new one"
            )));
        }
        if self.is_initialized().await? {
            return Ok(());
        }
        let members = BTreeMap::from([(self.inner.member_id, self.inner.endpoints.clone())]);
        match raft.initialize(members).await {
            Ok(()) => {}
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => return Ok(()),
            Err(e) => return Err(e.into_store_error()),
        }
        tracing::info!(parent: &self.inner.span, "bootstrapped a one-voter cluster");
        raft.wait(Some(self.inner.op_timeout))
            .metrics(|m| m.current_leader.is_some(), "leader after bootstrap")
            .await
            .map_err(wait_error)?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.state.read().data.get(key).cloned())
    }

    fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.get_prefix_with_revision(prefix)?.1)
    }

    fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, Entries)> {
        // One read guard: the entries and the revision are of the same state.
        let state = self.inner.state.read();
        let entries = state
            .data
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((state.revision, entries))
    }

    async fn progress(&self) -> ConsensusProgress {
        let (snapshot_index, quorum_ack_age) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            let age = if m.state == ServerState::Leader {
                m.millis_since_quorum_ack.map(Duration::from_millis)
            } else {
                None
            };
            (m.snapshot.map(|l| l.index), age)
        };
        // The commit index is not in openraft 0.9's metrics; ask the core,
        // bounded, as a stuck core must not stall a health check.
        let committed = tokio::time::timeout(
            Duration::from_millis(500),
            self.inner.raft.with_raft_state(|st| st.committed.map(|l| l.index)),
        )
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
        ConsensusProgress { committed_index: committed, snapshot_index, quorum_ack_age }
    }

    fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>> {
        Ok(self.inner.state.read().short_ids.clone())
    }

    async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.linearizable().await?;
        self.get(key)
    }

    fn get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        let state = self.inner.state.read();
        Ok(state.data.get(key).map(|v| (v.clone(), state.meta.get(key).copied().unwrap_or_default())))
    }

    async fn consistent_get_with_meta(&self, key: &str) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.linearizable().await?;
        self.get_with_meta(key)
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        self.admit(&request.op)?;
        let batcher = &self.inner.batcher;
        self.bounded("write", batcher.write(request)).await
    }

    fn watch(&self, prefix: &str) -> Watch {
        match self.inner.events.watch(prefix, None) {
            Ok(watch) => watch,
            // Never happens (a watch from now has nothing to replay); a
            // watch that ends at once is the answer of a stopped store.
            Err(_) => Watch::ended(prefix),
        }
    }

    fn watch_from(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        self.inner.events.watch(prefix, from_revision)
    }

    async fn add_nonvoter(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        self.add_nonvoter_inner(member, endpoints).instrument(self.inner.span.clone()).await
    }

    async fn promote(&self, member: MemberId) -> Result<()> {
        self.change_membership("promoting", ChangeMembers::AddVoterIds(BTreeSet::from([member])), false).await
    }

    async fn demote(&self, member: MemberId) -> Result<()> {
        if !self.status().voters.contains_key(&member) {
            return Ok(());
        }
        self.change_membership("demoting", ChangeMembers::RemoveVoters(BTreeSet::from([member])), true).await
    }

    async fn remove(&self, member: MemberId) -> Result<()> {
        let status = self.status();
        if status.voters.contains_key(&member) {
            self.change_membership(
                "removing a voter",
                ChangeMembers::RemoveVoters(BTreeSet::from([member])),
                false,
            )
            .await
        } else if status.nonvoters.contains_key(&member) {
            self.change_membership(
                "removing a nonvoter",
                ChangeMembers::RemoveNodes(BTreeSet::from([member])),
                false,
            )
            .await
        } else {
            Ok(())
        }
    }

    async fn set_endpoints(&self, member: MemberId, endpoints: Endpoints) -> Result<()> {
        // SetNodes only changes where a member is reached: its id, and so its
        // vote and log, stay the same process's, which is what makes it safe.
        let change = ChangeMembers::SetNodes(std::collections::BTreeMap::from([(member, endpoints)]));
        self.change_membership("setting endpoints", change, true).await
    }

    async fn shutdown(&self) -> Result<()> {
        let inner = &self.inner;
        inner.cancel.cancel();
        let server = inner.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            server.shutdown().await;
        }
        if let Err(e) = inner.raft.shutdown().await {
            tracing::warn!(parent: &inner.span, error = %e, "raft ended with an error");
        }
        inner.client.close();
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        inner.events.close();
        #[cfg(feature = "durable")]
        {
            let durable = inner.durable.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(writer) = durable {
                tokio::task::spawn_blocking(move || writer.close())
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))?;
            }
        }
        tracing::info!(parent: &inner.span, "consensus store shut down");
        Ok(())
    }
}
