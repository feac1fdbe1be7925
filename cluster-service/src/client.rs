//! [`ServiceClient`]: reaches a cluster through the service ports of some of
//! its members, from any program.
//!
//! Reads of the local kind (`get`, `get_prefix`, `members`, `status`) go to
//! any member that answers; writes and consistent reads go to the leader,
//! found by following the "not leader" answers. Each operation is retried
//! (see [`Backoff`]) until [`ClientOptions::op_timeout`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
use cluster_core::{
    CasOutcome, ClientRequestId, ConsensusStatus, Error, MemberInfo, Result, WatchEvent, WriteOutcome,
    WriteRequest,
};
use cluster_rpc::{Limits, Security};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::protocol::{self, Request, Response};
use crate::retry::{Attempt, Backoff, RetryPolicy, retry};

/// The RPC client of the service port: one multiplexed connection per member address.
pub(crate) type ServiceRpc = cluster_rpc::Client<Request, Response>;

/// Sends `request` to `addr` over `rpc` within `timeout`. An error answer
/// comes back as `Err`; a member that is shutting down counts as unreachable.
pub(crate) async fn call(
    rpc: &ServiceRpc,
    addr: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response> {
    match rpc.call(addr, request, timeout).await {
        Ok(Response::Err(Error::ShuttingDown)) => Err(Error::Unreachable(format!("{addr} is shutting down"))),
        Ok(Response::Err(e)) => Err(e),
        Ok(answer) => Ok(answer),
        Err(e) => Err(e.into_core()),
    }
}

/// The RPC client for a cluster id, frame limit, connect timeout and security.
pub(crate) fn rpc_client(
    cluster_id: &str,
    max_frame_len: usize,
    connect_timeout: Duration,
    security: &Security,
) -> ServiceRpc {
    ServiceRpc::new(cluster_rpc::ClientConfig {
        cluster_id: cluster_id.to_owned(),
        limits: Limits { max_frame_len, connect_timeout, ..Limits::default() },
        security: security.clone(),
    })
}

/// How a [`ServiceClient`] connects and retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientOptions {
    /// The cluster the members belong to; frames carry it.
    pub cluster_id: String,
    /// The largest frame sent or accepted.
    pub max_frame_len: usize,
    /// How long connecting to one member may take.
    pub connect_timeout: Duration,
    /// How long one attempt (connect, send, answer) may take.
    pub attempt_timeout: Duration,
    /// How long one operation may take, all its retries included.
    pub op_timeout: Duration,
    /// The pauses between attempts.
    pub backoff: Backoff,
    /// Plain TCP or mutual TLS (not in config files: built from the TLS options).
    #[serde(skip)]
    pub security: Security,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::new("")
    }
}

impl ClientOptions {
    /// The defaults, for `cluster_id`.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        ClientOptions {
            cluster_id: cluster_id.into(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(15),
            backoff: Backoff::default(),
            security: Security::default(),
        }
    }

    pub(crate) fn policy(&self, what: &'static str) -> RetryPolicy {
        RetryPolicy {
            what,
            op_timeout: self.op_timeout,
            attempt_timeout: self.attempt_timeout,
            backoff: self.backoff.clone(),
        }
    }
}

/// A client of the cluster's forwarding service. Cheap to clone: clones share
/// one connection per member address. Connections end when the last clone is
/// dropped.
///
/// Writes made with [`set`](Self::set), [`delete`](Self::delete) and
/// [`compare_and_set`](Self::compare_and_set) refuse keys under
/// `carbon-grid/` (reserved for the cluster); [`write`](Self::write) does not.
#[derive(Clone)]
pub struct ServiceClient {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<String>,
    opts: ClientOptions,
    rpc: ServiceRpc,
    /// The leader's service address as last learnt.
    leader: Mutex<Option<String>>,
    /// The member tried next for reads that any member serves.
    next: AtomicUsize,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient").field("addrs", &self.inner.addrs).finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client of the members at `addrs` (`host:port` of their service
    /// ports). Connects lazily, on the first request.
    pub fn new<A: Into<String>>(addrs: impl IntoIterator<Item = A>, options: ClientOptions) -> Result<Self> {
        let addrs: Vec<String> = addrs.into_iter().map(Into::into).collect();
        if addrs.is_empty() {
            return Err(Error::BadRequest("a service client needs at least one member address".into()));
        }
        let rpc = rpc_client(
            &options.cluster_id,
            options.max_frame_len,
            options.connect_timeout,
            &options.security,
        );
        let inner = Inner { addrs, opts: options, rpc, leader: Mutex::new(None), next: AtomicUsize::new(0) };
        Ok(ServiceClient { inner: Arc::new(inner) })
    }

    /// The local (possibly stale) value of `key` at some member.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.request(Request::Get { key: key.to_owned() }).await?.into_value()
    }

    /// The linearizable value of `key`, read at the leader after it confirmed
    /// its leadership with a quorum.
    pub async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.request(Request::ConsistentGet { key: key.to_owned() }).await?.into_value()
    }

    /// The entries under `prefix` at some member, in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.request(Request::GetPrefix { prefix: prefix.to_owned() }).await?.into_entries()
    }

    /// The entries under `prefix` at some member, in key order, with the
    /// revision they are of: a [`watch`](Self::watch) from that revision + 1
    /// misses and repeats nothing.
    pub async fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, cluster_core::Entries)> {
        self.request(Request::GetPrefixWithRevision { prefix: prefix.to_owned() }).await?.into_entries_at()
    }

    /// Every change under `prefix`, from `from_revision` on (`None`: from
    /// now), in revision order, as the members apply them.
    ///
    /// The stream outlives the member that serves it: when that member dies,
    /// stops or drops a slow reader, the stream goes on at another member's
    /// service, from the last revision it yielded + 1, with no gap and no
    /// repeat. It fails (and ends) with [`Error::Compacted`] when no member
    /// remembers the revision to go on from (a watcher far behind: list the
    /// prefix again with [`get_prefix_with_revision`](Self::get_prefix_with_revision)
    /// and watch from there), and with the last error when no member could be
    /// watched for [`ClientOptions::op_timeout`].
    pub fn watch(
        &self,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> impl futures::Stream<Item = Result<WatchEvent>> + Send + 'static {
        let watcher = Watcher {
            client: self.clone(),
            prefix: prefix.to_owned(),
            next: from_revision,
            stream: None,
            failing_since: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next_event().await?;
            Some((item, watcher))
        })
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
    /// retry carries the same id, so the write is applied at most once.
    pub async fn write(&self, mut request: WriteRequest) -> Result<WriteOutcome> {
        request.request_id.get_or_insert_with(ClientRequestId::generate);
        self.request(Request::Write(request)).await?.into_outcome()
    }

    /// The [`MemberInfo`] of every member, as some member's store holds them.
    pub async fn members(&self) -> Result<Vec<MemberInfo>> {
        self.request(Request::Members).await?.into_members()
    }

    /// What some member knows about consensus (leader, term, indexes, voters).
    pub async fn status(&self) -> Result<ConsensusStatus> {
        self.request(Request::Status).await?.into_status()
    }

    /// What the member at `addr` knows about consensus; one attempt.
    pub async fn status_of(&self, addr: &str) -> Result<ConsensusStatus> {
        call(&self.inner.rpc, addr, &Request::Status, self.inner.opts.attempt_timeout).await?.into_status()
    }

    /// Sends `request` where it can be served (the leader when
    /// [`Request::needs_leader`]), retrying until the operation's deadline.
    pub async fn request(&self, request: Request) -> Result<Response> {
        let policy = self.inner.opts.policy(request.kind());
        let needs_leader = request.needs_leader();
        retry(
            &policy,
            |attempt| {
                let request = request.clone();
                async move {
                    let addr = self.inner.target(&attempt, needs_leader);
                    let answer =
                        call(&self.inner.rpc, &addr, &request, self.inner.opts.attempt_timeout).await;
                    self.inner.learn(&addr, needs_leader, &answer);
                    answer
                }
            },
            tokio::time::sleep,
        )
        .await
    }
}

impl Inner {
    fn leader(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the next attempt goes.
    fn target(&self, attempt: &Attempt, needs_leader: bool) -> String {
        if needs_leader {
            if let Some(addr) = attempt.hint().and_then(|h| h.service_addr.clone()).filter(|a| !a.is_empty())
            {
                return addr;
            }
            let mut leader = self.leader();
            if attempt.last_error.is_none() {
                if let Some(addr) = leader.clone() {
                    return addr;
                }
            } else {
                // The leader we knew failed us without naming another: look around.
                *leader = None;
            }
        }
        // Stay with a member that answers; move on after a failure.
        let n = if attempt.last_error.is_some() {
            self.next.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.next.load(Ordering::Relaxed)
        };
        self.addrs[n % self.addrs.len()].clone()
    }

    /// Remembers the leader from an answer.
    fn learn(&self, addr: &str, needs_leader: bool, answer: &Result<Response>) {
        let mut leader = self.leader();
        match answer {
            Ok(_) if needs_leader => *leader = Some(addr.to_owned()),
            Err(Error::NotLeader(hint)) => {
                *leader = hint.as_ref().and_then(|h| h.service_addr.clone()).filter(|a| !a.is_empty());
            }
            _ => {}
        }
    }
}

/// A watch that resumes at another member: the state behind
/// [`ServiceClient::watch`].
struct Watcher {
    client: ServiceClient,
    prefix: String,
    /// The first revision still wanted: the last one yielded + 1.
    next: Option<u64>,
    /// The member's stream and when it was opened.
    stream: Option<(cluster_rpc::AnswerStream<Response>, Instant)>,
    /// The first of the failures since the last stream that worked.
    failing_since: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    done: bool,
}

impl Watcher {
    /// The next event, or the error that ends the watch.
    async fn next_event(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if self.done {
                return None;
            }
            let Some((stream, opened)) = self.stream.as_mut() else {
                if let Err(e) = self.open().await
                    && let Some(end) = self.fail(e).await
                {
                    return end;
                }
                continue;
            };
            let opened = *opened;
            let why = match stream.next().await {
                Some(Ok(Response::Event(event))) => {
                    // A resumed watch starts at `next`: anything older was yielded.
                    if self.next.is_some_and(|next| event.revision < next) {
                        continue;
                    }
                    self.next = Some(event.revision + 1);
                    self.failing_since = None;
                    self.failures = 0;
                    return Some(Ok(event));
                }
                Some(Ok(Response::Err(e))) if resumable(&e) => e,
                Some(Ok(Response::Err(e))) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(other)) => {
                    self.done = true;
                    return Some(Err(protocol::unexpected("watch", &other)));
                }
                Some(Err(e)) => e.into_core(),
                None => Error::Unreachable("the member ended the watch".to_owned()),
            };
            self.stream = None;
            tracing::debug!(error = %why, "watch stream broke, resuming at another member");
            // A stream that worked for a while counts as a success: the
            // failures start anew.
            if opened.elapsed() >= self.client.inner.opts.attempt_timeout {
                self.failing_since = None;
                self.failures = 0;
            }
            if let Some(end) = self.fail(why).await {
                return end;
            }
        }
    }

    /// Opens the stream at the next member, from `next`. A watch from now
    /// first learns the member's revision, so that a resume misses nothing
    /// that happened after the watch began.
    async fn open(&mut self) -> Result<()> {
        let inner = &self.client.inner;
        let addr = inner.addrs[inner.next.load(Ordering::Relaxed) % inner.addrs.len()].clone();
        let timeout = inner.opts.attempt_timeout;
        if self.next.is_none() {
            // Only the revision is wanted: a prefix that no key starts with.
            let probe = Request::GetPrefixWithRevision { prefix: REVISION_PROBE.to_owned() };
            let (revision, _) = call(&inner.rpc, &addr, &probe, timeout).await?.into_entries_at()?;
            self.next = Some(revision + 1);
        }
        let request = Request::Watch { prefix: self.prefix.clone(), from_revision: self.next };
        let stream = match tokio::time::timeout(timeout, inner.rpc.stream(&addr, &request)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.into_core()),
            Err(_) => return Err(Error::Timeout(format!("watch: {addr} did not answer within {timeout:?}"))),
        };
        self.stream = Some((stream, Instant::now()));
        Ok(())
    }

    /// After a failure: the error that ends the watch, or `None` once it is
    /// time to try the next member.
    async fn fail(&mut self, error: Error) -> Option<Option<Result<WatchEvent>>> {
        if !resumable(&error) {
            self.done = true;
            return Some(Some(Err(error)));
        }
        let opts = &self.client.inner.opts;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= opts.op_timeout {
            self.done = true;
            return Some(Some(Err(Error::Unreachable(format!(
                "watch: no member could be watched within {:?}, the last error: {error}",
                opts.op_timeout
            )))));
        }
        self.client.inner.next.fetch_add(1, Ordering::Relaxed);
        // The first retry goes at once, to the next member.
        if self.failures > 0 {
            tokio::time::sleep(opts.backoff.delay(self.failures - 1)).await;
        }
        self.failures += 1;
        None
    }
}

/// A prefix no key starts with, to read only a member's revision.
const REVISION_PROBE: &str = "\u{0}";

/// True for errors after which a watch goes on at another member.
fn resumable(error: &Error) -> bool {
    error.is_retryable() || matches!(error, Error::Lagged { .. } | Error::ShuttingDown)
}
