//! [`Proxy`]: the store handle a member gives its users. Every operation
//! works on every member, whoever leads: local reads read the local store;
//! writes and consistent reads run on the local store when this member leads
//! and are forwarded to the leader's service otherwise, retried across leader
//! changes until the operation's deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
use cluster_core::{
    CasOutcome, ClientRequestId, ConsensusStatus, ConsensusStore, Error, MemberId, MemberInfo, Result,
    WatchEvent, WriteOutcome, WriteRequest,
};
use cluster_rpc::Security;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::client::{ServiceRpc, call, rpc_client};
use crate::protocol::{self, Request, Response};
use crate::retry::{Attempt, Backoff, RetryPolicy, retry};
use crate::server;

/// How a [`Proxy`] forwards and retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyOptions {
    /// The cluster id carried by forwarded frames.
    pub cluster_id: String,
    /// The largest frame sent or accepted.
    pub max_frame_len: usize,
    /// How long connecting to the leader may take.
    pub connect_timeout: Duration,
    /// How long one attempt (local or forwarded) may take.
    pub attempt_timeout: Duration,
    /// How long one operation may take, retries across leader changes included.
    pub op_timeout: Duration,
    /// The pauses between attempts; a pause ends early when a new leader is known.
    pub backoff: Backoff,
    /// Plain TCP or mutual TLS to the leader's service (not in config files).
    #[serde(skip)]
    pub security: Security,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            cluster_id: String::new(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(15),
            backoff: Backoff::default(),
            security: Security::default(),
        }
    }
}

impl ProxyOptions {
    /// The defaults, for `cluster_id`.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        ProxyOptions { cluster_id: cluster_id.into(), ..ProxyOptions::default() }
    }
}

/// The store handle of a member: the whole consensus store, whatever this
/// member's role. Cheap to clone; clones share one connection to the leader.
///
/// Writes made with [`set`](Self::set), [`delete`](Self::delete) and
/// [`compare_and_set`](Self::compare_and_set) refuse keys under
/// `carbon-grid/` (reserved for the cluster); [`write`](Self::write), which
/// the cluster itself uses, does not.
pub struct Proxy<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Proxy<S> {
    fn clone(&self) -> Self {
        Proxy { inner: self.inner.clone() }
    }
}

impl<S> std::fmt::Debug for Proxy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("options", &self.inner.opts).finish_non_exhaustive()
    }
}

struct Inner<S> {
    store: Arc<S>,
    opts: ProxyOptions,
    rpc: ServiceRpc,
    /// Attempts sent to another member's service, for metrics.
    forwarded: AtomicU64,
}

/// Where one attempt runs.
enum Target {
    Local,
    Remote(String),
}

impl<S: ConsensusStore> Proxy<S> {
    /// A proxy over this member's `store`.
    pub fn new(store: Arc<S>, options: ProxyOptions) -> Self {
        let rpc = rpc_client(
            &options.cluster_id,
            options.max_frame_len,
            options.connect_timeout,
            &options.security,
        );
        Proxy { inner: Arc::new(Inner { store, opts: options, rpc, forwarded: AtomicU64::new(0) }) }
    }

    /// The local store.
    pub fn store(&self) -> &Arc<S> {
        &self.inner.store
    }

    /// The options in use.
    pub fn options(&self) -> &ProxyOptions {
        &self.inner.opts
    }

    /// How many attempts (writes and consistent reads) this proxy sent to
    /// another member because it did not lead; counts every retry.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// What this member knows about consensus now.
    pub fn status(&self) -> ConsensusStatus {
        self.inner.store.status()
    }

    /// The local value of `key`: fast, possibly stale.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.store.get(key)
    }

    /// The local entries under `prefix`, in key order: fast, possibly stale.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.store.get_prefix(prefix)
    }

    /// The local entries under `prefix` with the revision they are of: a
    /// [`watch`](Self::watch) from that revision + 1 misses and repeats nothing.
    pub fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, cluster_core::Entries)> {
        self.inner.store.get_prefix_with_revision(prefix)
    }

    /// Every change under `prefix` as this member applies it, from
    /// `from_revision` on (`None`: from now), past ones replayed first; read
    /// locally, so it works on every member, whoever leads.
    ///
    /// The stream fails with [`Error::Compacted`] (at once) when this member
    /// no longer remembers `from_revision`, and with [`Error::Lagged`] when
    /// its reader fell too far behind; both end it. It ends when the store stops.
    pub fn watch(
        &self,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        let first = self.inner.store.watch_from(prefix, from_revision);
        futures::stream::unfold(Some(first), |state| async move {
            match state? {
                Err(e) => Some((Err(e), None)),
                Ok(mut watch) => match watch.recv().await? {
                    Ok(event) => Some((Ok(event), Some(Ok(watch)))),
                    Err(e) => Some((Err(e), None)),
                },
            }
        })
    }

    /// The [`MemberInfo`] of every member in the local store.
    pub fn members(&self) -> Result<Vec<MemberInfo>> {
        server::members(&*self.inner.store)
    }

    /// The linearizable value of `key`: read by the leader after it confirmed
    /// its leadership with a quorum (read index), never from a local guess.
    pub async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.at_leader("consistent get", Request::ConsistentGet { key: key.to_owned() }).await?.into_value()
    }

    /// Sets `key`; true if it was created.
    pub async fn set(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<bool> {
        self.write(protocol::user_write(WriteRequest::set(key, value))?).await?.into_created()
    }

    /// Deletes `key`; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.write(protocol::user_write(WriteRequest::delete(key))?).await?.into_existed()
    }

    /// If `key` holds `expected` (`None`: absent), sets it to `new` (`None`: deletes it).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        let request = WriteRequest::compare_and_set(key, expected, new);
        self.write(protocol::user_write(request)?).await?.into_cas()
    }

    /// Any write, at the leader. A request without an id gets one; every
    /// retry carries the same id, so the write is applied at most once and
    /// a retry after a lost answer gets the first answer.
    pub async fn write(&self, mut request: WriteRequest) -> Result<WriteOutcome> {
        request.request_id.get_or_insert_with(ClientRequestId::generate);
        self.at_leader("write", Request::Write(request)).await?.into_outcome()
    }

    /// Runs `request` at the leader: locally when this member leads, else at
    /// the leader's service; retried until the operation's deadline.
    async fn at_leader(&self, what: &'static str, request: Request) -> Result<Response> {
        let inner = &*self.inner;
        let policy = RetryPolicy {
            what,
            op_timeout: inner.opts.op_timeout,
            attempt_timeout: inner.opts.attempt_timeout,
            backoff: inner.opts.backoff.clone(),
        };
        // The leader the last attempt went to: a pause ends once another is known.
        let tried: std::sync::Mutex<Option<MemberId>> = std::sync::Mutex::new(None);
        let set_tried = |leader| *tried.lock().unwrap_or_else(|e| e.into_inner()) = leader;
        retry(
            &policy,
            |attempt| {
                let request = request.clone();
                let target = inner.target(&attempt);
                set_tried(target.as_ref().map(|(id, _)| *id));
                async move {
                    match target {
                        Some((_, Target::Local)) => match server::execute(&*inner.store, request).await {
                            Response::Err(e) => Err(e),
                            answer => Ok(answer),
                        },
                        Some((_, Target::Remote(addr))) => {
                            inner.forwarded.fetch_add(1, Ordering::Relaxed);
                            call(&inner.rpc, &addr, &request, inner.opts.attempt_timeout).await
                        }
                        None => Err(Error::NotLeader(None)),
                    }
                }
            },
            |delay| {
                let tried = *tried.lock().unwrap_or_else(|e| e.into_inner());
                inner.pause(delay, tried)
            },
        )
        .await
    }
}

impl<S: ConsensusStore> Inner<S> {
    /// The leader named by the last answer, else the one the local store knows.
    fn target(&self, attempt: &Attempt) -> Option<(MemberId, Target)> {
        let me = self.store.member_id();
        if let Some(hint) = attempt.hint() {
            if hint.member_id == me {
                return Some((me, Target::Local));
            }
            if let Some(addr) = hint.service_addr.as_ref().filter(|a| !a.is_empty()) {
                return Some((hint.member_id, Target::Remote(addr.clone())));
            }
        }
        let status = self.store.status();
        let leader = status.leader?;
        if leader == me {
            Some((me, Target::Local))
        } else {
            let addr = status.leader_service_addr().filter(|a| !a.is_empty())?;
            Some((leader, Target::Remote(addr.to_owned())))
        }
    }

    /// Waits `delay`, or less if the local store knows a leader other than
    /// the one `tried` (including one it learnt since that attempt).
    async fn pause(&self, delay: Duration, tried: Option<MemberId>) {
        let mut changes = self.store.status_changes();
        let new_leader = async {
            if changes.wait_for(|s| s.leader.is_some() && s.leader != tried).await.is_err() {
                // The store stopped: no news will come, wait the full delay.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = new_leader => {}
        }
    }
}
