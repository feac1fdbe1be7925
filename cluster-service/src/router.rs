//! [`Router`]: the one leader-routed key-value store of the crate. Its two
//! forms differ only in where an attempt goes ([`Target`]):
//!
//! - [`Local`] ([`Proxy`]): a member's own store. Local reads read it; writes
//!   and consistent reads call it directly when the member leads, and go to
//!   the leader's service otherwise.
//! - [`Remote`] ([`ServiceClient`]): some members' service ports, from any
//!   program. Reads of the local kind go to any member that answers; writes
//!   and consistent reads go to the leader, found by following the "not
//!   leader" answers.
//!
//! Both retry through the one loop of [`retry`](crate::retry) until
//! [`RouterOptions::op_timeout`], and give every write a
//! [`ClientRequestId`] that all its retries reuse, so a write whose answer
//! was lost is applied once and every retry gets the first answer.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
use cluster_core::{
    CasOutcome, ClientRequestId, Error, KeyMeta, MemberId, Result, WatchEvent, WriteOutcome, WriteRequest,
    Writer,
};
use cluster_rpc::{Limits, Security};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::protocol::{Request, Response};
use crate::retry::{Attempt, Backoff, RetryPolicy, retry};

pub use crate::local::Local;
pub use crate::remote::Remote;

/// The RPC client of the service port: one multiplexed connection per member address.
pub(crate) type ServiceRpc = cluster_rpc::Client<Request, Response>;

/// How a [`Router`] connects, forwards and retries; the same for both forms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterOptions {
    /// The cluster the members belong to; frames carry it.
    pub cluster_id: String,
    /// The largest frame sent or accepted.
    pub max_frame_len: usize,
    /// How long connecting to one member may take.
    pub connect_timeout: Duration,
    /// How long one attempt (local or sent: connect, send, answer) may take.
    pub attempt_timeout: Duration,
    /// How long one operation may take, all its retries across leader changes included.
    pub op_timeout: Duration,
    /// The pauses between attempts; a [`Proxy`]'s pause ends early when its
    /// member learns of a new leader.
    pub backoff: Backoff,
    /// Plain TCP or mutual TLS to the members' services (not in config
    /// files: built from the TLS options).
    #[serde(skip)]
    pub security: Security,
    /// The network the members' services are reached through: real TCP by
    /// default, an in-memory one in a simulation (not in config files).
    #[serde(skip)]
    pub network: cluster_rpc::Net,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions::new("")
    }
}

impl RouterOptions {
    /// The defaults, for `cluster_id`.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        RouterOptions {
            cluster_id: cluster_id.into(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(15),
            backoff: Backoff::default(),
            security: Security::default(),
            network: cluster_rpc::Net::default(),
        }
    }

    fn policy(&self, what: &'static str) -> RetryPolicy {
        RetryPolicy {
            what,
            op_timeout: self.op_timeout,
            attempt_timeout: self.attempt_timeout,
            backoff: self.backoff.clone(),
        }
    }

    fn rpc_client(&self) -> ServiceRpc {
        ServiceRpc::new(cluster_rpc::ClientConfig {
            cluster_id: self.cluster_id.clone(),
            limits: Limits {
                max_frame_len: self.max_frame_len,
                connect_timeout: self.connect_timeout,
                ..Limits::default()
            },
            security: self.security.clone(),
            network: self.network.clone(),
        })
    }
}

/// The store handle a member gives its users: a [`Router`] over the
/// member's own store ([`Router::local`]).
pub type Proxy<S> = Router<Local<S>>;

/// A client of the cluster's forwarding service, from any program: a
/// [`Router`] over some members' service ports ([`Router::remote`]).
pub type ServiceClient = Router<Remote>;

/// The consistent key-value store, reached from a member ([`Proxy`]) or from
/// any program ([`ServiceClient`]). Every operation works whoever leads:
/// writes and consistent reads reach the leader, across leader changes,
/// until [`RouterOptions::op_timeout`].
///
/// Cheap to clone: clones share one connection per member address, which
/// ends when the last clone is dropped.
///
/// Writes made with [`set`](Self::set), [`delete`](Self::delete) and
/// [`compare_and_set`](Self::compare_and_set) refuse keys under
/// `carbon-grid/` (reserved for the cluster); [`write`](Self::write), which
/// the cluster itself uses, does not.
pub struct Router<T> {
    pub(crate) inner: Arc<Inner<T>>,
}

/// What the clones of a [`Router`] share.
pub(crate) struct Inner<T> {
    /// Where attempts go.
    pub(crate) target: T,
    pub(crate) opts: RouterOptions,
    /// To members' service ports: the leader's, or any.
    pub(crate) rpc: ServiceRpc,
    /// Attempts sent to another member's service, for metrics.
    pub(crate) sent: AtomicU64,
}

impl<T> Clone for Router<T> {
    fn clone(&self) -> Self {
        Router { inner: self.inner.clone() }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("target", &self.inner.target)
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl<T> Router<T> {
    pub(crate) fn with_target(target: T, options: RouterOptions) -> Self {
        let rpc = options.rpc_client();
        Router { inner: Arc::new(Inner { target, opts: options, rpc, sent: AtomicU64::new(0) }) }
    }

    /// The options in use.
    pub fn options(&self) -> &RouterOptions {
        &self.inner.opts
    }
}

impl<T: Target> Router<T> {
    /// The linearizable value of `key`: read by the leader after it confirmed
    /// its leadership with a quorum (read index), never from a local guess.
    pub async fn consistent_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.run(Request::ConsistentGet { key: key.to_owned() }).await?.into_value()
    }

    /// The value of `key` in a member's applied state: fast, possibly stale
    /// (a [`Proxy`]'s own member, a [`ServiceClient`]'s any member).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.run(Request::Get { key: key.to_owned() }).await?.into_value()
    }

    /// The entries under `prefix` in a member's applied state, in key
    /// order: fast, possibly stale.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.run(Request::GetPrefix { prefix: prefix.to_owned() }).await?.into_entries()
    }

    /// The entries under `prefix` in a member's applied state, in key
    /// order, with the revision they are of: a [`watch`](Self::watch) from
    /// that revision + 1 misses and repeats nothing.
    pub async fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, cluster_core::Entries)> {
        self.run(Request::GetPrefixWithRevision { prefix: prefix.to_owned() }).await?.into_entries_at()
    }

    /// The [`MemberInfo`](cluster_core::MemberInfo) of every member, as a
    /// member's applied state records them.
    pub async fn members(&self) -> Result<Vec<cluster_core::MemberInfo>> {
        self.run(Request::Members).await?.into_members()
    }

    /// What a member knows about consensus (leader, term, indexes, voters).
    pub async fn status(&self) -> Result<cluster_core::ConsensusStatus> {
        self.run(Request::Status).await?.into_status()
    }

    /// A member's status in the shape every surface shows: consensus, its
    /// progress (committed and snapshot index), its short id and role.
    pub async fn member_status(&self) -> Result<cluster_core::MemberStatus> {
        self.run(Request::MemberStatus).await?.into_member_status()
    }

    /// The value of `key` with its create and last-change revision:
    /// linearizable (read at the leader) when `consistent`, else a member's
    /// local state. The revisions are the store's, as watches and
    /// `get_prefix_with_revision` number them.
    pub async fn get_with_meta(&self, key: &str, consistent: bool) -> Result<Option<(Vec<u8>, KeyMeta)>> {
        self.request(Request::GetWithMeta { key: key.to_owned(), consistent }).await?.into_value_with_meta()
    }

    /// Sets `key`; true if it was created.
    pub async fn set(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<bool> {
        self.write(WriteRequest::set(key, value)).await?.into_created()
    }

    /// Deletes `key`; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.write(WriteRequest::delete(key)).await?.into_existed()
    }

    /// Deletes every key under `prefix` in one change (one revision), and
    /// answers how many. The empty prefix is refused, and so is one under
    /// `carbon-grid/`; a prefix that also covers the cluster's keys leaves
    /// them alone (see [`WriteOp::DeletePrefix`](cluster_core::WriteOp::DeletePrefix)).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.write(WriteRequest::delete_prefix(prefix)).await?.into_deleted()
    }

    /// If `key` holds `expected` (`None`: absent), sets it to `new` (`None`: deletes it).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<CasOutcome> {
        self.write(WriteRequest::compare_and_set(key, expected, new)).await?.into_cas()
    }

    /// A user's write: refused before it leaves when the operation's rules
    /// refuse it to a user ([`WriteOp::check`](cluster_core::WriteOp::check)
    /// with [`Writer::User`]): a key under `carbon-grid/`, a short id or the
    /// revision answer [`Error::Forbidden`](cluster_core::Error::Forbidden).
    /// A request without an id gets one; every retry carries the same id, so
    /// the write is applied at most once and a retry after a lost answer gets
    /// the first answer.
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        self.write_as(Writer::User, request).await
    }

    /// A write by `writer`, checked against its rules before it leaves.
    ///
    /// [`Writer::Cluster`] is for the cluster's own writes only (member
    /// records, short ids, the revision a restore starts from) made by a
    /// member's own process: users write with [`write`](Self::write) and
    /// the named operations. A member's server still refuses the cluster's
    /// operations to a caller that does not prove to be a member by its
    /// certificate, so a forwarded cluster write can be refused.
    pub async fn write_as(&self, writer: Writer, mut request: WriteRequest) -> Result<WriteOutcome> {
        request.op.check(writer)?;
        request.request_id.get_or_insert_with(ClientRequestId::generate);
        self.run(Request::Write(request)).await?.into_outcome()
    }

    /// Any request of the service protocol (the admin ones included: export,
    /// force leave, liveness), where it can be served: at the leader when
    /// [`Request::needs_leader`], else at this member ([`Proxy`]) or at any
    /// member ([`ServiceClient`]); retried until the operation's deadline.
    /// An error answer comes back as `Err`. A write gets a request id as in
    /// [`write`](Self::write).
    pub async fn request(&self, request: Request) -> Result<Response> {
        match request {
            Request::Write(write) => self.write(write).await.map(Response::Written),
            other => self.run(other).await,
        }
    }

    /// Every change under `prefix`, from `from_revision` on (`None`: from
    /// now), in revision order, past ones replayed first. It fails (and
    /// ends) with [`Error::Compacted`] when no member it can watch remembers
    /// the revision to go on from: list the prefix again (its revision says
    /// where to watch from) and watch from there.
    ///
    /// A [`Proxy`] watches its own member's store, so it works whoever leads;
    /// its stream also ends with [`Error::Lagged`] when its reader fell too
    /// far behind, and ends when the store stops. A [`ServiceClient`]'s
    /// stream outlives the member that serves it: when that member dies,
    /// stops or drops a slow reader, the stream goes on at another member,
    /// from the last revision it yielded + 1, with no gap and no repeat; it
    /// fails with the last error when no member could be watched for
    /// [`RouterOptions::op_timeout`].
    pub fn watch(
        &self,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        T::watch(self, prefix, from_revision)
    }

    /// Runs `request` where the target routes it, retried until the
    /// operation's deadline. An error answer comes back as `Err`.
    async fn run(&self, request: Request) -> Result<Response> {
        let inner = &*self.inner;
        // The leader the last attempt went to: a pause may end once another is known.
        let tried: Mutex<Option<MemberId>> = Mutex::new(None);
        retry(
            &inner.opts.policy(request.kind()),
            |attempt| {
                let route = inner.target.route(&request, &attempt);
                *tried.lock().unwrap_or_else(|e| e.into_inner()) = route.leader();
                let request = &request;
                async move {
                    match route {
                        // This member's own store: the server's dispatch, by a direct call.
                        Route::Local(_) => inner.target.local(request).await,
                        Route::Remote { addr, .. } => {
                            inner.sent.fetch_add(1, Ordering::Relaxed);
                            let answer = send(inner, &addr, request).await;
                            inner.target.learn(&addr, request, &answer);
                            answer
                        }
                        Route::Replica { addr, min_revision } => {
                            let min_revision = min_revision.max(inner.target.remote_floor(request).await?);
                            inner.sent.fetch_add(1, Ordering::Relaxed);
                            read_at_replica(inner, &addr, min_revision, request).await
                        }
                        Route::NoLeader => Err(Error::NotLeader(None)),
                        Route::NoReplica => Err(Error::Unreachable(format!(
                            "{}: no replica known to read from",
                            request.kind()
                        ))),
                    }
                }
            },
            |delay| {
                let tried = *tried.lock().unwrap_or_else(|e| e.into_inner());
                inner.target.pause(delay, tried)
            },
        )
        .await
    }
}

/// Where a [`Router`]'s attempts go: [`Local`] or [`Remote`]. Sealed.
pub trait Target: sealed::Target {}

impl<T: sealed::Target> Target for T {}

pub(crate) mod sealed {
    use super::*;

    /// The routing of one form of [`Router`]; implemented by [`Local`] and
    /// [`Remote`] only. The router runs the attempts; a target decides
    /// where they go.
    pub trait Target: Send + Sync + Sized + 'static {
        /// Where the next attempt of `request` goes: for one that
        /// [needs the leader](Request::needs_leader), the leader `attempt`
        /// names, else the one this target knows.
        fn route(&self, request: &Request, attempt: &Attempt) -> Route;

        /// Runs `request` on this member's own store (the shared
        /// [`dispatch`](crate::dispatch)): asked only of a target that
        /// routes to [`Route::Local`].
        fn local(&self, request: &Request) -> impl Future<Output = Result<Response>> + Send;

        /// Learns from the answer of the member at `addr` (the leader's address).
        fn learn(&self, _addr: &str, _request: &Request, _answer: &Result<Response>) {}

        /// A read sent to a replica ([`Route::Replica`]) was served at `revision`.
        fn observed(&self, _revision: u64) {}

        /// The revision a read sent to a replica must show at least, known
        /// only now (the member may first have to learn it).
        fn remote_floor(&self, _request: &Request) -> impl Future<Output = Result<u64>> + Send {
            std::future::ready(Ok(0))
        }

        /// Waits `delay` between two attempts, or less when it knows that a
        /// leader other than `tried` was elected.
        fn pause(&self, delay: Duration, _tried: Option<MemberId>) -> impl Future<Output = ()> + Send + '_ {
            tokio::time::sleep(delay)
        }

        /// The stream behind [`Router::watch`].
        fn watch(
            router: &Router<Self>,
            prefix: &str,
            from_revision: Option<u64>,
        ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static;
    }
}

/// Where one attempt goes.
pub enum Route {
    /// This member's own store; the member id is this member's.
    Local(MemberId),
    /// The service of the member at `addr`.
    Remote {
        /// Its service address.
        addr: String,
        /// The member, when it is the leader this attempt follows.
        leader: Option<MemberId>,
    },
    /// The service of a replica, for a read this member's own state does
    /// not hold ([`ConsensusStore::remote_reads`](cluster_core::ConsensusStore::remote_reads)),
    /// sent as a [`Request::ReadAt`] of `min_revision`.
    Replica {
        /// Its service address.
        addr: String,
        /// The revision the answer must show at least.
        min_revision: u64,
    },
    /// Nowhere: the call needs the leader and none is known.
    NoLeader,
    /// Nowhere: the read is served by a replica and none is known.
    NoReplica,
}

impl Route {
    /// The leader this attempt goes to, when known.
    fn leader(&self) -> Option<MemberId> {
        match self {
            Route::Local(me) => Some(*me),
            Route::Remote { leader, .. } => *leader,
            Route::Replica { .. } | Route::NoLeader | Route::NoReplica => None,
        }
    }
}

/// Sends `read` to the replica at `addr` as a [`Request::ReadAt`] of
/// `min_revision` (or of the caller's own, if higher, when `read` is one),
/// and tells the target the revision it was served at. The answer is the
/// read's, or the `ReadAt` answer when the caller asked a `ReadAt`.
async fn read_at_replica<T: Target>(
    inner: &Inner<T>,
    addr: &str,
    min_revision: u64,
    read: &Request,
) -> Result<Response> {
    let (unwrap, min_revision, read) = match read {
        Request::ReadAt { min_revision: own, read } => (false, min_revision.max(*own), read.clone()),
        other => (true, min_revision, Box::new(other.clone())),
    };
    match send(inner, addr, &Request::ReadAt { min_revision, read }).await? {
        Response::ReadAt { revision, answer } => {
            inner.target.observed(revision);
            if unwrap { Ok(*answer) } else { Ok(Response::ReadAt { revision, answer }) }
        }
        other => Err(crate::protocol::unexpected("read at", &other)),
    }
}

/// Sends `request` to `addr` within the attempt timeout. An error answer
/// comes back as `Err`; a member that is shutting down counts as unreachable.
pub(crate) async fn send<T>(inner: &Inner<T>, addr: &str, request: &Request) -> Result<Response> {
    match inner.rpc.call(addr, request, inner.opts.attempt_timeout).await {
        Ok(Response::Err(Error::ShuttingDown)) => Err(Error::Unreachable(format!("{addr} is shutting down"))),
        Ok(Response::Err(e)) => Err(e),
        Ok(answer) => Ok(answer),
        Err(e) => Err(e.into_core()),
    }
}
