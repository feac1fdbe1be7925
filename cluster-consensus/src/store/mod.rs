//! [`RaftStore`]: the handle that implements core's [`ConsensusStore`] on
//! openraft, and its [`ConsensusBackend`] factory. It owns the raft instance,
//! the raft RPC listener, the task that turns raft metrics into
//! [`ConsensusStatus`] (`status`), and the storage. Opening it, step by step,
//! is `open`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use cluster_core::{
    ConsensusBackend, ConsensusConfig, ConsensusLimits, ConsensusProgress, ConsensusStatus, ConsensusStore,
    Endpoints, Entries, Error, KeyMeta, LeaderHint, MemberId, Quota, Result, ShortId, Watch, WatchLog,
    WriteOutcome, WriteRequest,
};
use openraft::error::InitializeError;
use openraft::metrics::WaitError;
use openraft::{ChangeMembers, ServerState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batcher::WriteBatcher;
use crate::error::IntoStoreError;
use crate::network::client::RaftClient;
use crate::network::{RaftRpc, RaftRpcReply};
use crate::recovery::VoteGate;
use crate::state_machine::SharedState;
use crate::typecfg::Raft;
use status::{QuotaAlarm, status_of};

mod open;
mod status;

pub use open::raft_config;

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
    /// The bound of one raft RPC round trip ([`ConsensusConfig::rpc_timeout`](cluster_core::ConsensusConfig::rpc_timeout)).
    rpc_timeout: Duration,
    votes: VoteGate,
    limits: ConsensusLimits,
    alarm: Arc<QuotaAlarm>,
    span: tracing::Span,
}

fn wait_error(e: WaitError) -> Error {
    match e {
        WaitError::Timeout(t, msg) => Error::Timeout(format!("{msg} (waited {t:?})")),
        WaitError::ShuttingDown => Error::ShuttingDown,
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
            // A round trip, with a connect first: on slow links more than a
            // second, and a probe cut short at a fixed bound would never answer.
            let ttl = left.min(self.inner.rpc_timeout);
            let reply =
                crate::network::client::call(&self.inner.client, addr, member, RaftRpc::AppliedIndex, ttl)
                    .await;
            if let Ok(RaftRpcReply::AppliedIndex(Some(applied))) = reply
                && applied >= index
            {
                return Ok(());
            }
            tracing::debug!(%member, index, ?reply, ?ttl, "nonvoter not caught up yet");
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
        open::open(config, network, span.clone()).instrument(span).await
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
