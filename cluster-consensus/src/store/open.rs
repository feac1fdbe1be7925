//! Opening a [`RaftStore`], in named steps: the raft configuration, a
//! pending reset, the storage (durable or in memory), the raft port, raft
//! itself with its network, its RPC server, and the tasks that follow it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{ConsensusConfig, Endpoints, Error, Result, WatchLog};
use openraft::SnapshotPolicy;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::status::{QuotaAlarm, status_task};
use super::{Inner, RaftStore};
use crate::batcher::WriteBatcher;
use crate::error::IntoStoreError;
use crate::log_store::LogStore;
use crate::network::client::{BatchLimits, NetworkFactory, RaftClient};
use crate::network::guard::{GuardLimits, RaftGuard};
use crate::network::server::{ServerContext, serve};
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
/// How often a member with a pending reset looks for the leader's note.
const RESET_POLL: Duration = Duration::from_millis(100);

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

/// The storage a store opens on: the raft log, the state machine and, when
/// durable, the writer thread to close at shutdown.
struct Storage {
    log: LogStore,
    sm: StateMachine,
    #[cfg(feature = "durable")]
    durable: Option<crate::log_store::durable::DurableWriter>,
}

/// Opens the store of `config` with the `network` settings of its raft port
/// and client, in the span of the member.
pub(super) async fn open(
    config: ConsensusConfig,
    mut network: cluster_rpc::Settings,
    span: tracing::Span,
) -> Result<RaftStore> {
    let mut raft_config = raft_config(&config)?;
    let member_id = config.member_id;
    let votes = VoteGate::new(pending_reset(&config)?);
    if let Some(id) = votes.pending() {
        tracing::warn!(reset = %id, "raft state was reset: no votes and no elections until this member is out of the voters");
        raft_config.enable_elect = false;
    }
    let events = Arc::new(WatchLog::new(0, WATCH_CAPACITY, WATCH_HISTORY_EVENTS, WATCH_HISTORY_BYTES));
    let storage = open_storage(&config, events.clone()).await?;
    let state = storage.sm.shared();

    let listener = network
        .network
        .bind(config.raft_listen_addr)
        .await
        .map_err(|e| Error::io(format_args!("cannot listen on {}", config.raft_listen_addr), &e))?;
    let raft_addr = listener.local_addr()?;
    let endpoints = Endpoints {
        raft_addr: advertised(&config.advertise_host, raft_addr.port()),
        service_addr: config.service_addr.clone(),
    };

    network.limits.max_frame_len = config.max_frame_len;
    let client = RaftClient::new(cluster_rpc::ClientConfig {
        cluster_id: config.cluster_id.clone(),
        limits: network.limits.clone(),
        security: network.security.clone(),
        network: network.network.clone(),
    });
    let mut log = storage.log;
    forget_leadership(&mut log).await?;
    let factory =
        NetworkFactory::new(member_id, client.clone(), BatchLimits { max_append_bytes: MAX_APPEND_BYTES });
    let raft = Raft::new(member_id, Arc::new(raft_config), factory, log, storage.sm)
        .await
        .map_err(|e| e.into_store_error())?;

    let server = serve_raft(listener, &raft, &votes, &config, &network, &span)?;
    let cancel = CancellationToken::new();
    let alarm = Arc::new(QuotaAlarm { raised_at: AtomicU64::new(QuotaAlarm::NONE) });
    let (status, status_task) =
        status_task(raft.clone(), raft.metrics(), &votes, &state, &config.limits, &alarm, cancel.clone());
    let mut tasks: Vec<JoinHandle<()>> = vec![tokio::spawn(status_task.instrument(span.clone()))];
    if let (Some(reset_id), Some(dir)) = (votes.pending(), config.data_dir.clone()) {
        let watcher = watch_reset(raft.clone(), state.clone(), votes.clone(), reset_id, dir, cancel.clone());
        tasks.push(tokio::spawn(watcher.instrument(span.clone())));
    }
    let (batcher, batcher_task) = WriteBatcher::spawn(raft.clone(), cancel.clone());
    tasks.push(batcher_task);
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
            tasks: Mutex::new(tasks),
            #[cfg(feature = "durable")]
            durable: Mutex::new(storage.durable),
            op_timeout: (config.rpc_timeout * 10).max(Duration::from_secs(5)),
            rpc_timeout: config.rpc_timeout,
            votes,
            limits: config.limits.clone(),
            alarm,
            span,
        }),
    })
}

/// The id of a reset of this member's raft state that is not over yet (see
/// [`crate::recovery`]); `None` without a data directory or a reset.
fn pending_reset(config: &ConsensusConfig) -> Result<Option<String>> {
    let Some(dir) = &config.data_dir else { return Ok(None) };
    crate::recovery::pending_reset(dir).map_err(|e| match e {
        crate::recovery::ResetError::BadMarker { path, reason } => Error::CorruptState {
            path: path.display().to_string(),
            offset: None,
            detail: format!("{reason}; run `carbon agent --reset-raft-state` again"),
        },
        other => Error::Storage(other.to_string()),
    })
}

/// The log and state machine: durable in the data directory (its integrity
/// checked, a corrupt one refused naming the file), else in memory.
#[cfg(feature = "durable")]
async fn open_storage(config: &ConsensusConfig, events: Arc<WatchLog>) -> Result<Storage> {
    let Some(dir) = &config.data_dir else {
        let sm = StateMachine::new(None, None, events).map_err(|e| Error::Storage(e.to_string()))?;
        return Ok(Storage { log: LogStore::in_memory(), sm, durable: None });
    };
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
    let sm = match StateMachine::new(opened.snapshot, Some(vault), events) {
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
    let log = LogStore::durable(opened.log, opened.writer.clone());
    Ok(Storage { log, sm, durable: Some(opened.writer) })
}

/// The log and state machine in memory; a data directory needs the
/// `durable` feature.
#[cfg(not(feature = "durable"))]
async fn open_storage(config: &ConsensusConfig, events: Arc<WatchLog>) -> Result<Storage> {
    if config.data_dir.is_some() {
        return Err(Error::BadRequest(
            "data_dir: durable storage needs the `durable` feature of cluster-consensus".to_owned(),
        ));
    }
    let sm = StateMachine::new(None, None, events).map_err(|e| Error::Storage(e.to_string()))?;
    Ok(Storage { log: LogStore::in_memory(), sm })
}

/// Serves raft RPC on `listener`, every request checked by the guard first.
fn serve_raft(
    listener: cluster_rpc::Listener,
    raft: &Raft,
    votes: &VoteGate,
    config: &ConsensusConfig,
    network: &cluster_rpc::Settings,
    span: &tracing::Span,
) -> Result<cluster_rpc::Server> {
    let guard_limits = GuardLimits { max_snapshot_bytes: config.limits.max_snapshot_bytes };
    let ctx = ServerContext {
        raft: raft.clone(),
        votes: votes.clone(),
        guard: Arc::new(RaftGuard::new(raft.metrics(), guard_limits)),
    };
    let _entered = span.enter();
    serve(listener, ctx, &config.cluster_id, network).map_err(|e| Error::BadRequest(cluster_rpc::chain(&e)))
}

fn advertised(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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
