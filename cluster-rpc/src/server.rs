//! [`serve`]: the one server loop of the project. It admits connections
//! within [`Limits`], secures them, reads frames with bounded buffers and
//! timeouts, hands each request to a [`Handler`] and writes its answer (or
//! its stream of answers) back under the request's id.
//!
//! One task per connection reads and runs that connection's requests (at most
//! [`Limits::max_in_flight_per_connection`] at once, polled in the same task:
//! no task per request), and one task writes. When the bound is reached, or
//! when the peer does not read its answers, the server stops reading: TCP
//! pushes back, and nothing grows.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cluster_core::Error;
use cluster_core::wire::{self, FrameKind};
use futures::stream::{self, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWriteExt, BufWriter, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::frame::{self, Answer, FrameReader, ReadEnd, StreamControl, StreamPart};
use crate::log_limit::RateLimitedLog;
use crate::security::Io;
use crate::{Limits, Role, RpcError, Security};

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

/// Serves `handler` on `listener` until [`Server::shutdown`].
pub fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    config: ServerConfig,
) -> Result<Server, RpcError> {
    config.limits.validate()?;
    if config.cluster_id.len() > wire::MAX_CLUSTER_ID_LEN {
        return Err(RpcError::Config(format!("cluster_id: longer than {} bytes", wire::MAX_CLUSTER_ID_LEN)));
    }
    let local_addr = listener.local_addr().map_err(|e| RpcError::Config(format!("listener: {e}")))?;
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared {
        handler,
        config,
        admission: Mutex::default(),
        log: RateLimitedLog::new(LOG_INTERVAL),
    });
    let task = tokio::spawn(accept_loop(listener, shared, cancel.clone()).in_current_span());
    Ok(Server { local_addr, cancel, task: Some(task) })
}

struct Shared<H> {
    handler: H,
    config: ServerConfig,
    admission: Mutex<Admission>,
    log: RateLimitedLog,
}

impl<H> Shared<H> {
    fn admission(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connections held now, by kind and by peer address.
#[derive(Default)]
struct Admission {
    total: usize,
    clients: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Admission`]; given back when dropped.
struct Slot<H> {
    shared: Arc<Shared<H>>,
    ip: IpAddr,
    client: bool,
}

impl<H> Slot<H> {
    fn admit(shared: &Arc<Shared<H>>, ip: IpAddr) -> Result<Self, &'static str> {
        let limits = &shared.config.limits;
        let mut a = shared.admission();
        if a.total >= limits.max_connections {
            return Err("too many connections");
        }
        let here = a.per_ip.entry(ip).or_default();
        if *here >= limits.max_connections_per_ip {
            return Err("too many connections from one address");
        }
        *here += 1;
        a.total += 1;
        crate::stats::connection_opened();
        Ok(Slot { shared: shared.clone(), ip, client: false })
    }

    /// Counts this connection as a client's, if the client budget allows.
    fn make_client(&mut self) -> bool {
        let mut a = self.shared.admission();
        if a.clients >= self.shared.config.limits.max_client_connections {
            return false;
        }
        a.clients += 1;
        self.client = true;
        true
    }
}

impl<H> Drop for Slot<H> {
    fn drop(&mut self) {
        crate::stats::connection_closed();
        let mut a = self.shared.admission();
        a.total -= 1;
        if self.client {
            a.clients -= 1;
        }
        if let Some(n) = a.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                a.per_ip.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop<H: Handler>(listener: TcpListener, shared: Arc<Shared<H>>, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let slot = match Slot::admit(&shared, peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Closed at once: an over-limit connection holds no descriptor.
                shared.log.note(peer.ip(), why, &"closed as soon as accepted");
                continue;
            }
        };
        let span = tracing::debug_span!("rpc_connection", %peer);
        connections.spawn(connection(tcp, peer, slot, shared.clone()).instrument(span));
    }
    drop(listener);
    // Aborts every connection task; each aborts its writer.
    connections.shutdown().await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn connection<H: Handler>(tcp: TcpStream, peer: SocketAddr, mut slot: Slot<H>, shared: Arc<Shared<H>>) {
    let _ = tcp.set_nodelay(true);
    let limits = &shared.config.limits;
    if shared.config.security.is_tls() {
        // A plain-TCP caller of a TLS port is told so in its own terms, so it
        // gets a clear error instead of a failed handshake.
        if let Ok(Some(found)) = tokio::time::timeout(limits.handshake_timeout, plain_frame(&tcp)).await {
            shared.log.note(peer.ip(), "plain TCP on a TLS port", &"refused");
            let error =
                Error::Forbidden("this port requires TLS: connect with the cluster's certificates".into());
            let refusal =
                frame::encode(FrameKind::Message, &found, 0, H::Answer::refused(error), limits.max_frame_len);
            if let Ok(bytes) = refusal {
                let mut tcp = tcp;
                let _ = tokio::time::timeout(DRAIN, async {
                    tcp.write_all(&bytes).await?;
                    tcp.shutdown().await
                })
                .await;
            }
            return;
        }
    }
    let secured =
        tokio::time::timeout(limits.handshake_timeout, shared.config.security.accept(tcp, peer)).await;
    let (io, role, member) = match secured {
        Ok(Ok(secured)) => secured,
        Ok(Err(e)) => {
            shared.log.note(peer.ip(), "handshake refused", &e);
            return;
        }
        Err(_) => {
            shared.log.note(
                peer.ip(),
                "handshake timed out",
                &format!("after {:?}", limits.handshake_timeout),
            );
            return;
        }
    };
    let refusal = match role {
        Some(Role::Member) | None => None,
        Some(Role::Client) if shared.config.access == Access::MembersOnly => Some(Error::Forbidden(
            "this port accepts members only; a client certificate was presented".to_owned(),
        )),
        Some(Role::Client) if !slot.make_client() => {
            Some(Error::Unreachable("too many client connections; retry later".to_owned()))
        }
        Some(Role::Client) => None,
    };
    let caller = Caller { addr: peer, role, member };
    run(io, caller, &shared, refusal).await;
    drop(slot);
}

/// The cluster id of a plain frame at the start of `tcp` (peeked, not read),
/// or `None` when the peer starts a TLS handshake or anything else.
async fn plain_frame(tcp: &TcpStream) -> Option<String> {
    const HEADER: usize = wire::LEN_PREFIX + 15;
    let mut buf = [0u8; HEADER + wire::MAX_CLUSTER_ID_LEN];
    loop {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 || buf[0] == 0x16 {
            // Closed, or a TLS record (handshake).
            return None;
        }
        if n >= wire::LEN_PREFIX + 4 && buf[wire::LEN_PREFIX..wire::LEN_PREFIX + 4] != wire::MAGIC {
            return None;
        }
        if n >= HEADER {
            let end = HEADER + usize::from(buf[HEADER - 1]);
            if n >= end {
                return Some(String::from_utf8_lossy(&buf[HEADER..end]).into_owned());
            }
        }
        // Peek returns at once while bytes wait: give the rest a moment to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One request's progress, as its stream yields it.
enum Part<A> {
    One(A),
    Item(A),
    End,
    /// The request is finished (answered, ended or cancelled): free its place.
    Done,
}

type Outgoing<A> = BoxStream<'static, (u64, Part<A>)>;

async fn run<H: Handler>(io: Box<dyn Io>, caller: Caller, shared: &Shared<H>, refusal: Option<Error>) {
    let config = &shared.config;
    let limits = &config.limits;
    let cluster = config.cluster_id.as_str();
    let max = limits.max_frame_len;
    let (read, write) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel::<Bytes>(limits.max_in_flight_per_connection);
    let writer =
        AbortOnDrop(tokio::spawn(write_frames(write, out_rx, limits.idle_timeout).in_current_span()));
    let mut reader = FrameReader::new(read, max);
    let mut active: SelectAll<Outgoing<H::Answer>> = SelectAll::new();
    let mut cancels: HashMap<u64, CancellationToken> = HashMap::new();
    let mut in_flight = 0usize;
    let ip = caller.addr.ip();
    let encode = |kind, id, answer: H::Answer| {
        frame::encode(kind, cluster, id, answer, max)
            .or_else(|e| frame::encode(FrameKind::Message, cluster, id, H::Answer::refused(e), max))
    };
    let refuse = |id: u64, error: Error| encode(FrameKind::Message, id, H::Answer::refused(error));

    if let Some(why) = refusal {
        shared.log.note(ip, "connection refused", &why);
        if let Ok(bytes) = refuse(0, why) {
            let _ = out.send(bytes).await;
        }
    } else {
        loop {
            let can_read = in_flight < limits.max_in_flight_per_connection;
            let idle = (in_flight == 0).then_some(limits.idle_timeout);
            tokio::select! {
                biased;
                Some((id, part)) = active.next(), if !active.is_empty() => {
                    let bytes = match part {
                        Part::One(answer) => encode(FrameKind::Message, id, answer),
                        Part::Item(answer) => {
                            frame::encode(FrameKind::Stream, cluster, id, StreamPart::Item(answer), max)
                                .or_else(|e| refuse(id, e))
                        }
                        Part::End => frame::encode(FrameKind::Stream, cluster, id, StreamPart::<()>::End, max),
                        Part::Done => {
                            in_flight -= 1;
                            cancels.remove(&id);
                            if in_flight == 0 {
                                reader.touch();
                            }
                            continue;
                        }
                    };
                    match bytes {
                        Ok(bytes) => {
                            if out.send(bytes).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => tracing::warn!(id, error = %e, "an answer cannot be encoded"),
                    }
                }
                read = reader.next(idle, limits.frame_timeout), if can_read => {
                    let body = match read {
                        Ok(body) => body,
                        Err(end) => {
                            match end {
                                ReadEnd::TooLarge { len, max } => {
                                    shared.log.note(ip, "frame over the limit", &format!("{len} bytes, limit {max}"));
                                    if let Ok(bytes) = refuse(0, Error::FrameTooLarge { len, max }) {
                                        let _ = out.send(bytes).await;
                                    }
                                }
                                ReadEnd::SlowFrame => {
                                    shared.log.note(ip, "frame not complete in time", &format!("{:?}", limits.frame_timeout));
                                }
                                ReadEnd::Idle => tracing::debug!("closing an idle connection"),
                                ReadEnd::Closed | ReadEnd::ClosedInFrame => {}
                                ReadEnd::Io(e) => tracing::debug!(error = %e, "connection read failed"),
                            }
                            break;
                        }
                    };
                    let (head, payload) = match wire::decode_head(cluster, &body, max) {
                        Ok(decoded) => decoded,
                        Err(bad) => {
                            shared.log.note(ip, "refused a frame", &bad.error);
                            let id = bad.request_id.unwrap_or(0);
                            // A foreign frame is answered under the sender's own cluster id,
                            // so it can read the refusal and learns nothing of ours.
                            let refused = match &bad.error {
                                Error::ClusterMismatch { found } => frame::encode(
                                    FrameKind::Message,
                                    found,
                                    id,
                                    H::Answer::refused(bad.error.clone()),
                                    max,
                                ),
                                _ => refuse(id, bad.error),
                            };
                            if let Ok(bytes) = refused
                                && out.send(bytes).await.is_err()
                            {
                                break;
                            }
                            // Without a readable header the peer does not speak our protocol.
                            if bad.request_id.is_none() {
                                break;
                            }
                            continue;
                        }
                    };
                    let id = head.request_id;
                    match head.kind {
                        FrameKind::Stream => match frame::payload::<StreamControl>(id, payload) {
                            Ok(StreamControl::Cancel) => {
                                if let Some(token) = cancels.get(&id) {
                                    token.cancel();
                                }
                            }
                            Err(e) => {
                                shared.log.note(ip, "refused a stream control frame", &e);
                            }
                        },
                        FrameKind::Message => match frame::payload::<H::Request>(id, payload) {
                            Ok(request) => {
                                drop(body);
                                let token = CancellationToken::new();
                                let future = shared.handler.handle(caller, request);
                                active.push(progress(id, future, limits.request_timeout, token.clone()));
                                cancels.insert(id, token);
                                in_flight += 1;
                            }
                            Err(e) => {
                                shared.log.note(ip, "refused a request", &e);
                                match refuse(id, e) {
                                    Ok(bytes) => {
                                        if out.send(bytes).await.is_err() {
                                            break;
                                        }
                                    }
                                    Err(e) => tracing::warn!(error = %e, "a refusal cannot be encoded"),
                                }
                            }
                        },
                    }
                }
            }
        }
    }
    // Requests in flight are dropped; answers already queued get a little time.
    drop(active);
    drop(out);
    let mut writer = writer;
    let _ = tokio::time::timeout(DRAIN, &mut writer.0).await;
}

/// The parts of one request: its answer or its stream, bounded in time until
/// the first answer, cut by `cancel`, always followed by `Done`.
fn progress<A: Answer>(
    id: u64,
    future: HandlerFuture<A>,
    timeout: Duration,
    cancel: CancellationToken,
) -> Outgoing<A> {
    let reply = async move {
        match tokio::time::timeout(timeout, future).await {
            Ok(reply) => reply,
            Err(_) => Reply::One(A::refused(Error::Timeout(format!("no answer within {timeout:?}")))),
        }
    };
    stream::once(reply)
        .flat_map(|reply| match reply {
            Reply::One(answer) => stream::once(async move { Part::One(answer) }).boxed(),
            Reply::Stream(answers) => {
                answers.map(Part::Item).chain(stream::once(async { Part::End })).boxed()
            }
        })
        .take_until(cancel.cancelled_owned())
        .chain(stream::once(async { Part::Done }))
        .map(move |part| (id, part))
        .boxed()
}

async fn write_frames(write: WriteHalf<Box<dyn Io>>, mut frames: mpsc::Receiver<Bytes>, stall: Duration) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    while let Some(bytes) = frames.recv().await {
        let mut batch = Some(bytes);
        let wrote = tokio::time::timeout(stall, async {
            // Write out when no further answer is ready, to batch busy connections.
            while let Some(bytes) = batch.take() {
                write.write_all(&bytes).await?;
                batch = frames.try_recv().ok();
            }
            write.flush().await
        })
        .await;
        match wrote {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "connection write failed");
                return;
            }
            Err(_) => {
                tracing::debug!(?stall, "the peer does not read its answers: closing");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN, write.shutdown()).await;
}
