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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
use cluster_core::{
    CasOutcome, ClientRequestId, ConsensusStore, Error, MemberId, Result, WatchEvent, WriteOutcome,
    WriteRequest,
};
use cluster_rpc::{Limits, Security};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::protocol::{self, Request, Response};
use crate::retry::{Attempt, Backoff, RetryPolicy, retry};
use crate::server;

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
}

/// The options of a [`Proxy`]: [`RouterOptions`].
pub type ProxyOptions = RouterOptions;
/// The options of a [`ServiceClient`]: [`RouterOptions`].
pub type ClientOptions = RouterOptions;

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
pub struct Inner<T> {
    /// Where attempts go.
    pub(crate) target: T,
    pub(crate) opts: RouterOptions,
    /// To members' service ports: the leader's, or any.
    pub(crate) rpc: ServiceRpc,
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
        Router { inner: Arc::new(Inner { target, opts: options, rpc }) }
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
        self.run(ConsistentGet(key.to_owned())).await
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
        self.run(Write(request)).await
    }

    /// Any request of the service protocol (the admin ones included: export,
    /// force leave, liveness), where it can be served: at the leader when
    /// [`Request::needs_leader`], else at this member ([`Proxy`]) or at any
    /// member ([`ServiceClient`]); retried until the operation's deadline.
    /// An error answer comes back as `Err`.
    pub async fn request(&self, request: Request) -> Result<Response> {
        self.run(Raw(request)).await
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

    /// Runs `op` where its target routes it, retried until the operation's deadline.
    async fn run<O: Op>(&self, op: O) -> Result<O::Output> {
        let inner = &*self.inner;
        let policy = inner.opts.policy(op.what());
        // The leader the last attempt went to: a pause may end once another is known.
        let tried: Mutex<Option<MemberId>> = Mutex::new(None);
        retry(
            &policy,
            |attempt| T::attempt(inner, &op, attempt, &tried),
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

    /// The routing of one form of [`Router`]; implemented by [`Local`] and [`Remote`] only.
    pub trait Target: Send + Sync + Sized + 'static {
        /// Runs one attempt of `op`: at the leader when it needs one (the
        /// leader `attempt` names, else the one this target knows), else
        /// wherever this target reads. Records in `tried` the leader it went to.
        fn attempt<'a, O: Op>(
            inner: &'a Inner<Self>,
            op: &'a O,
            attempt: Attempt,
            tried: &'a Mutex<Option<MemberId>>,
        ) -> impl Future<Output = Result<O::Output>> + Send + 'a;

        /// Waits `delay` between two attempts, or less when it knows that a
        /// leader other than `tried` was elected.
        fn pause(&self, delay: Duration, tried: Option<MemberId>) -> impl Future<Output = ()> + Send + '_;

        /// The stream behind [`Router::watch`].
        fn watch(
            router: &Router<Self>,
            prefix: &str,
            from_revision: Option<u64>,
        ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static;
    }

    /// One operation of the store, in the two forms it travels: a direct
    /// call of a member's store, and a request of the service protocol.
    pub trait Op: Send + Sync {
        /// What the caller gets.
        type Output: Send;
        /// For logs and error messages.
        fn what(&self) -> &'static str;
        /// True if only the leader can serve it.
        fn needs_leader(&self) -> bool;
        /// Runs it on `store`, this member's own.
        fn local<S: ConsensusStore>(&self, store: &S) -> impl Future<Output = Result<Self::Output>> + Send;
        /// The request that asks another member for it.
        fn request(&self) -> Request;
        /// The typed answer of another member.
        fn answer(response: Response) -> Result<Self::Output>;
    }
}

use sealed::Op;

/// A linearizable read.
struct ConsistentGet(String);

impl Op for ConsistentGet {
    type Output = Option<Vec<u8>>;
    fn what(&self) -> &'static str {
        "consistent get"
    }
    fn needs_leader(&self) -> bool {
        true
    }
    fn local<S: ConsensusStore>(&self, store: &S) -> impl Future<Output = Result<Self::Output>> + Send {
        store.consistent_get(&self.0)
    }
    fn request(&self) -> Request {
        Request::ConsistentGet { key: self.0.clone() }
    }
    fn answer(response: Response) -> Result<Self::Output> {
        response.into_value()
    }
}

/// A write, its request id set.
struct Write(WriteRequest);

impl Op for Write {
    type Output = WriteOutcome;
    fn what(&self) -> &'static str {
        "write"
    }
    fn needs_leader(&self) -> bool {
        true
    }
    fn local<S: ConsensusStore>(&self, store: &S) -> impl Future<Output = Result<Self::Output>> + Send {
        store.write(self.0.clone())
    }
    fn request(&self) -> Request {
        Request::Write(self.0.clone())
    }
    fn answer(response: Response) -> Result<Self::Output> {
        response.into_outcome()
    }
}

/// A request of the protocol as the caller made it; on a member's own store
/// it runs as the server would run it.
struct Raw(Request);

impl Op for Raw {
    type Output = Response;
    fn what(&self) -> &'static str {
        self.0.kind()
    }
    fn needs_leader(&self) -> bool {
        self.0.needs_leader()
    }
    async fn local<S: ConsensusStore>(&self, store: &S) -> Result<Response> {
        match server::execute(store, self.0.clone()).await {
            Response::Err(e) => Err(e),
            answer => Ok(answer),
        }
    }
    fn request(&self) -> Request {
        self.0.clone()
    }
    fn answer(response: Response) -> Result<Response> {
        match response {
            Response::Err(e) => Err(e),
            answer => Ok(answer),
        }
    }
}

/// Sends `request` to `addr` within the attempt timeout. An error answer
/// comes back as `Err`; a member that is shutting down counts as unreachable.
pub(crate) async fn call<T>(inner: &Inner<T>, addr: &str, request: &Request) -> Result<Response> {
    match inner.rpc.call(addr, request, inner.opts.attempt_timeout).await {
        Ok(Response::Err(Error::ShuttingDown)) => Err(Error::Unreachable(format!("{addr} is shutting down"))),
        Ok(Response::Err(e)) => Err(e),
        Ok(answer) => Ok(answer),
        Err(e) => Err(e.into_core()),
    }
}
