//! [`serve`]: the one server loop of the project. It admits connections
//! within [`Limits`], secures them, reads frames with bounded buffers and
//! timeouts, hands each request to a [`Handler`] and writes its answer (or
//! its stream of answers) back under the request's id.
//!
//! A connection first holds a handshake's place (a small budget of its own,
//! the oldest giving way to a new one when full) until it is authenticated:
//! its TLS handshake is done, or over plain TCP its first valid frame
//! arrived. Only then does it take a regular place; callers with a member
//! certificate have a pool of their own, so outsiders never keep members out.
//!
//! One task per connection reads and runs that connection's requests (at most
//! [`Limits::max_in_flight_per_connection`] at once, polled in the same task:
//! no task per request), and one task writes. A request's place is given back
//! once its answer is written; answers waiting to be written are counted in
//! bytes, per connection and per server. When a bound is reached, or when the
//! peer does not read its answers, the server stops reading: TCP pushes back,
//! and nothing grows.
//!
//! The files: [`admission`] holds the places connections take; [`accept`]
//! the accept loop and a connection's way in (security, admission);
//! [`sniff`] how a TLS port tells a plain caller; [`connection`] the loop
//! that reads requests and runs them; [`write`] the task that writes answers.

mod accept;
mod admission;
mod connection;
mod sniff;
mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::wire;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::ByteBudget;
use crate::frame::Answer;
use crate::log_limit::RateLimitedLog;
use crate::net::Listener;
use crate::{Limits, Role, RpcError, Security};
use admission::Admission;

/// How often one source's bad input is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a closing connection may take to write its last answers.
const DRAIN: Duration = Duration::from_secs(2);

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The role in the peer's verified certificate; `None` over plain TCP.
    pub role: Option<Role>,
    /// The member the peer's verified certificate names; `None` over plain
    /// TCP, for clients, and for certificates made before identities.
    pub member: Option<cluster_core::MemberId>,
}

/// A handler's reply to one request.
pub enum Reply<A> {
    /// The one answer.
    One(A),
    /// A sequence of answers, sent as they come until the stream ends or the
    /// caller cancels it (dropping its end).
    Stream(BoxStream<'static, A>),
}

impl<A> Reply<A> {
    /// A streamed reply.
    pub fn stream(answers: impl Stream<Item = A> + Send + 'static) -> Self {
        Reply::Stream(answers.boxed())
    }
}

impl<A> std::fmt::Debug for Reply<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reply::One(_) => "Reply::One",
            Reply::Stream(_) => "Reply::Stream",
        })
    }
}

/// A future of a handler, owning what it needs.
pub type HandlerFuture<A> = Pin<Box<dyn Future<Output = Reply<A>> + Send + 'static>>;

/// What a server serves: it answers each decoded request of a caller.
pub trait Handler: Send + Sync + 'static {
    /// What callers send.
    type Request: DeserializeOwned + Send + 'static;
    /// What the server answers.
    type Answer: Answer;

    /// Answers `request` from `caller`, once or with a stream. The future is
    /// bounded by [`Limits::request_timeout`] (a stream is bounded until its
    /// first answer only).
    fn handle(&self, caller: Caller, request: Self::Request) -> HandlerFuture<Self::Answer>;
}

/// Which callers a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Members and clients.
    #[default]
    Anyone,
    /// Members only (the raft port). Enforced with TLS, where the role is in
    /// the certificate; over plain TCP there is no role to check.
    MembersOnly,
}

/// How a server runs.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Frames of other clusters are refused.
    pub cluster_id: String,
    /// Every bound.
    pub limits: Limits,
    /// Plain TCP or mutual TLS.
    pub security: Security,
    /// Which callers are accepted.
    pub access: Access,
}

/// A running server. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// The address bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends every connection and waits until every task of
    /// the server ended. Callers with requests in flight see their connection
    /// close.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves `handler` on `listener` until [`Server::shutdown`]. The listener
/// is a [`Listener`] of any network, or a `tokio::net::TcpListener`.
pub fn serve<H: Handler>(
    listener: impl Into<Listener>,
    handler: H,
    config: ServerConfig,
) -> Result<Server, RpcError> {
    let listener = listener.into();
    config.limits.validate()?;
    if config.cluster_id.len() > wire::MAX_CLUSTER_ID_LEN {
        return Err(RpcError::Config(format!("cluster_id: longer than {} bytes", wire::MAX_CLUSTER_ID_LEN)));
    }
    let local_addr = listener.local_addr().map_err(|e| RpcError::Config(format!("listener: {e}")))?;
    let cancel = CancellationToken::new();
    let config_limits = config.limits.clone();
    let shared = Arc::new(Shared {
        handler,
        config,
        admission: Mutex::default(),
        log: RateLimitedLog::new(LOG_INTERVAL),
        queued: ByteBudget::new(config_limits.max_queued_bytes),
        partial_frames: ByteBudget::new(config_limits.max_partial_frame_bytes),
    });
    let task = tokio::spawn(accept::accept_loop(listener, shared, cancel.clone()).in_current_span());
    Ok(Server { local_addr, cancel, task: Some(task) })
}

struct Shared<H> {
    handler: H,
    config: ServerConfig,
    admission: Mutex<Admission>,
    log: RateLimitedLog,
    /// Bytes of answers queued on all connections (see [`Limits::max_queued_bytes`]).
    queued: ByteBudget,
    /// Bytes of large frames being read (see [`Limits::max_partial_frame_bytes`]).
    partial_frames: ByteBudget,
}

impl<H> Shared<H> {
    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }
}
