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

use std::collections::{BTreeMap, HashMap};
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::{ByteBudget, Taken};
use crate::frame::{self, Answer, FrameReader, ReadEnd, StreamControl, StreamPart};
use crate::log_limit::RateLimitedLog;
use crate::net::{ByteStream, Listener};
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
    let task = tokio::spawn(accept_loop(listener, shared, cancel.clone()).in_current_span());
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

/// The connections held now, by kind and by peer address.
#[derive(Default)]
struct Admission {
    /// Authenticated connections of outsiders: callers with a client
    /// certificate, and every caller over plain TCP.
    total: usize,
    clients: usize,
    /// Connections of callers with a member certificate: a pool of their
    /// own, so that outsiders can never take the places members need.
    members: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections not authenticated yet, oldest first, and who may close them.
    handshakes: BTreeMap<u64, (IpAddr, CancellationToken)>,
    handshakes_per_ip: HashMap<IpAddr, usize>,
    next_handshake: u64,
}

fn release(per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// A connection's place while it is not authenticated: the TLS handshake,
/// or over plain TCP until its first valid frame. Given back when dropped.
struct Handshake<H> {
    shared: Arc<Shared<H>>,
    id: u64,
    /// Cancelled when a newer connection took this place.
    evicted: CancellationToken,
}

impl<H> Handshake<H> {
    /// A place for a connection from `ip`. When all are taken, the oldest
    /// handshake gives its place up: connections that never authenticate
    /// cannot keep a member's new connection out, they only shorten each
    /// other's time.
    fn admit(shared: &Arc<Shared<H>>, ip: IpAddr) -> Result<Self, &'static str> {
        let limits = &shared.config.limits;
        let mut a = shared.admission();
        if a.handshakes_per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_handshakes_per_ip {
            return Err("too many handshakes from one address");
        }
        if a.handshakes.len() >= limits.max_handshakes
            && let Some((_, (old_ip, evicted))) = a.handshakes.pop_first()
        {
            evicted.cancel();
            release(&mut a.handshakes_per_ip, old_ip);
        }
        let id = a.next_handshake;
        a.next_handshake += 1;
        let evicted = CancellationToken::new();
        a.handshakes.insert(id, (ip, evicted.clone()));
        *a.handshakes_per_ip.entry(ip).or_default() += 1;
        Ok(Handshake { shared: shared.clone(), id, evicted })
    }
}

impl<H> Drop for Handshake<H> {
    fn drop(&mut self) {
        let mut a = self.shared.admission();
        if let Some((ip, _)) = a.handshakes.remove(&self.id) {
            release(&mut a.handshakes_per_ip, ip);
        }
    }
}

/// Who holds an authenticated connection's place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Member,
    Client,
    /// No certificate: plain TCP.
    Anyone,
}

/// An authenticated connection's place in [`Admission`]; given back when dropped.
struct Slot<H> {
    shared: Arc<Shared<H>>,
    ip: IpAddr,
    kind: Kind,
}

impl<H> Slot<H> {
    fn admit(shared: &Arc<Shared<H>>, ip: IpAddr, role: Option<Role>) -> Result<Self, &'static str> {
        let limits = &shared.config.limits;
        let kind = match role {
            Some(Role::Member) => Kind::Member,
            Some(Role::Client) => Kind::Client,
            None => Kind::Anyone,
        };
        let mut a = shared.admission();
        if kind == Kind::Member {
            if a.members >= limits.max_connections {
                return Err("too many member connections");
            }
            a.members += 1;
        } else {
            if a.total >= limits.max_connections {
                return Err("too many connections");
            }
            if a.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
                return Err("too many connections from one address");
            }
            if kind == Kind::Client && a.clients >= limits.max_client_connections {
                return Err("too many client connections");
            }
            a.total += 1;
            *a.per_ip.entry(ip).or_default() += 1;
            if kind == Kind::Client {
                a.clients += 1;
            }
        }
        crate::stats::connection_opened();
        Ok(Slot { shared: shared.clone(), ip, kind })
    }
}

impl<H> Drop for Slot<H> {
    fn drop(&mut self) {
        crate::stats::connection_closed();
        let mut a = self.shared.admission();
        match self.kind {
            Kind::Member => a.members -= 1,
            kind => {
                a.total -= 1;
                if kind == Kind::Client {
                    a.clients -= 1;
                }
                release(&mut a.per_ip, self.ip);
            }
        }
    }
}

/// Where a connection stands when its requests start being read.
enum Entry<H> {
    /// Authenticated and holding a place.
    Admitted(Slot<H>),
    /// Over plain TCP: it holds a handshake's place until its first valid
    /// frame, which must arrive before the deadline.
    FirstFrame(Handshake<H>, Instant),
    /// Only a refusal is sent.
    Refused,
}

/// Ends when an unauthenticated connection must go: evicted, or past its
/// deadline. Never ends for an authenticated one.
async fn unauthenticated_end<H>(pending: Option<&(Handshake<H>, Instant)>) {
    match pending {
        Some((handshake, deadline)) => tokio::select! {
            _ = handshake.evicted.cancelled() => {}
            _ = tokio::time::sleep_until(*deadline) => {}
        },
        None => std::future::pending().await,
    }
}

async fn accept_loop<H: Handler>(mut listener: Listener, shared: Arc<Shared<H>>, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
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
        let handshake = match Handshake::admit(&shared, peer.ip()) {
            Ok(handshake) => handshake,
            Err(why) => {
                // Closed at once: an over-limit connection holds no descriptor.
                shared.log.note(peer.ip(), why, &"closed as soon as accepted");
                continue;
            }
        };
        let span = tracing::debug_span!("rpc_connection", %peer);
        connections.spawn(connection(stream, peer, handshake, shared.clone()).instrument(span));
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

async fn connection<H: Handler>(
    mut stream: ByteStream,
    peer: SocketAddr,
    handshake: Handshake<H>,
    shared: Arc<Shared<H>>,
) {
    let limits = &shared.config.limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let evicted = handshake.evicted.clone();
    if shared.config.security.is_tls() {
        // A plain-TCP caller of a TLS port is told so in its own terms, so it
        // gets a clear error instead of a failed handshake.
        let sniffed = tokio::select! {
            _ = evicted.cancelled() => return,
            sniffed = tokio::time::timeout_at(deadline, sniff(&mut stream)) => sniffed,
        };
        let Ok((plain, opening)) = sniffed else {
            shared.log.note(
                peer.ip(),
                "handshake timed out",
                &format!("after {:?}", limits.handshake_timeout),
            );
            return;
        };
        if let Some(found) = plain {
            shared.log.note(peer.ip(), "plain TCP on a TLS port", &"refused");
            let error =
                Error::Forbidden("this port requires TLS: connect with the cluster's certificates".into());
            let refusal =
                frame::encode(FrameKind::Message, &found, 0, H::Answer::refused(error), limits.max_frame_len);
            if let Ok(bytes) = refusal {
                let _ = tokio::time::timeout(DRAIN, async {
                    stream.write_all(&bytes).await?;
                    stream.shutdown().await
                })
                .await;
            }
            return;
        }
        // The handshake reads again what was read to tell.
        stream = Box::new(Rewind { opening, read: 0, stream });
    }
    let secured = tokio::select! {
        _ = evicted.cancelled() => {
            shared.log.note(peer.ip(), "handshake closed", &"a newer connection took its place");
            return;
        }
        secured = tokio::time::timeout_at(deadline, shared.config.security.accept(stream)) => secured,
    };
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
    let caller = Caller { addr: peer, role, member };
    if !shared.config.security.is_tls() {
        run(io, caller, &shared, None, Entry::FirstFrame(handshake, deadline)).await;
        return;
    }
    // Authenticated: the handshake's place is free, a regular one is taken.
    drop(handshake);
    if role == Some(Role::Client) && shared.config.access == Access::MembersOnly {
        let refusal =
            Error::Forbidden("this port accepts members only; a client certificate was presented".to_owned());
        run(io, caller, &shared, Some(refusal), Entry::Refused).await;
        return;
    }
    match Slot::admit(&shared, peer.ip(), role) {
        Ok(slot) => run(io, caller, &shared, None, Entry::Admitted(slot)).await,
        Err(why) => {
            let refusal = Error::Unreachable(format!("{why}; retry later"));
            run(io, caller, &shared, Some(refusal), Entry::Refused).await;
        }
    }
}

/// Reads the start of a connection to a TLS port far enough to tell a plain
/// frame (then the cluster id it names) from a TLS handshake or anything
/// else; with the bytes read, which the handshake must read again.
async fn sniff(stream: &mut ByteStream) -> (Option<String>, Vec<u8>) {
    const HEADER: usize = wire::LEN_PREFIX + 15;
    const MOST: usize = HEADER + wire::MAX_CLUSTER_ID_LEN;
    let mut opening = Vec::with_capacity(MOST);
    let mut chunk = [0u8; MOST];
    loop {
        let n = opening.len();
        if n > 0 && opening[0] == 0x16 {
            // A TLS record (handshake).
            return (None, opening);
        }
        if n >= wire::LEN_PREFIX + 4 && opening[wire::LEN_PREFIX..wire::LEN_PREFIX + 4] != wire::MAGIC {
            return (None, opening);
        }
        if n >= HEADER {
            let end = HEADER + usize::from(opening[HEADER - 1]);
            if n >= end {
                let found = String::from_utf8_lossy(&opening[HEADER..end]).into_owned();
                return (Some(found), opening);
            }
        }
        match stream.read(&mut chunk[..MOST - n]).await {
            // Closed or failed: the handshake finds out.
            Ok(0) | Err(_) => return (None, opening),
            Ok(read) => opening.extend_from_slice(&chunk[..read]),
        }
    }
}

/// A stream whose first bytes, already read, are read again.
struct Rewind {
    opening: Vec<u8>,
    read: usize,
    stream: ByteStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.read < this.opening.len() {
            let rest = &this.opening[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.opening.len() {
                this.opening = Vec::new();
                this.read = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// One request's progress, as its stream yields it.
enum Part<A> {
    One(A),
    Item(A),
    End,
    /// The request is finished (answered, ended or cancelled): its place is
    /// free once what it queued is written.
    Done(OwnedSemaphorePermit),
}

type Outgoing<A> = BoxStream<'static, (u64, Part<A>)>;

/// What the reading side hands the writing side, in order.
enum Out {
    /// An encoded frame, with the budget bytes it holds until written.
    Frame(Bytes, Vec<Taken>),
    /// A request's place in flight, given back once everything queued before
    /// it is written: a peer that does not read cannot start new requests.
    Release(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// An answer too large for the room left in the server's budget.
fn no_room(len: usize) -> Error {
    Error::Unreachable(format!(
        "this member holds too many unsent answers to queue one of {len} bytes; retry later"
    ))
}

async fn run<H: Handler>(
    io: ByteStream,
    caller: Caller,
    shared: &Arc<Shared<H>>,
    refusal: Option<Error>,
    entry: Entry<H>,
) {
    let config = &shared.config;
    let limits = &config.limits;
    let cluster = config.cluster_id.as_str();
    let max = limits.max_frame_len;
    // Members' own traffic is trusted: only outsiders' bytes are counted
    // member-wide, so outsiders can never make members wait.
    let member = caller.role == Some(Role::Member);
    let (read, write) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel::<Out>(limits.max_in_flight_per_connection.saturating_mul(2));
    let writer =
        AbortOnDrop(tokio::spawn(write_frames(write, out_rx, limits.write_stall_timeout).in_current_span()));
    let mut reader = FrameReader::new(read, max);
    if !member {
        reader = reader.with_large_frame_budget(limits.large_frame_bytes, shared.partial_frames.clone());
    }
    let queued = ByteBudget::new(limits.max_queued_bytes_per_connection);
    let places = Arc::new(Semaphore::new(limits.max_in_flight_per_connection));
    let mut place: Option<OwnedSemaphorePermit> = None;
    let mut active: SelectAll<Outgoing<H::Answer>> = SelectAll::new();
    let mut cancels: HashMap<u64, CancellationToken> = HashMap::new();
    let ip = caller.addr.ip();
    let (mut slot, mut pending) = match entry {
        Entry::Admitted(slot) => (Some(slot), None),
        Entry::FirstFrame(handshake, deadline) => (None, Some((handshake, deadline))),
        Entry::Refused => (None, None),
    };
    let encode = |kind, id, answer: H::Answer| {
        frame::encode(kind, cluster, id, answer, max)
            .or_else(|e| frame::encode(FrameKind::Message, cluster, id, H::Answer::refused(e), max))
    };
    let refuse = |id: u64, error: Error| encode(FrameKind::Message, id, H::Answer::refused(error));
    // Takes room for `len` bytes in the server's budget: an answer over the
    // large-frame size that does not fit now is refused (`None`), a smaller
    // one waits for room (the writers give it back as peers read, or drop
    // peers that stopped reading).
    let member_room = |len: usize| async move {
        if member {
            return Some(Vec::new());
        }
        if let Some(taken) = shared.queued.try_take(len) {
            return Some(vec![taken]);
        }
        if len > limits.large_frame_bytes {
            return None;
        }
        Some(vec![shared.queued.take(len).await])
    };

    if let Some(why) = refusal {
        shared.log.note(ip, "connection refused", &why);
        if let Ok(bytes) = refuse(0, why) {
            let _ = out.send(Out::Frame(bytes, Vec::new())).await;
        }
    } else {
        loop {
            let busy = limits.max_in_flight_per_connection
                - places.available_permits()
                - usize::from(place.is_some());
            let idle = (busy == 0).then_some(limits.idle_timeout);
            let room = queued.has_room();
            tokio::select! {
                biased;
                Some((id, part)) = active.next(), if !active.is_empty() && room => {
                    let (bytes, stream) = match part {
                        Part::One(answer) => (encode(FrameKind::Message, id, answer), false),
                        Part::Item(answer) => (
                            frame::encode(FrameKind::Stream, cluster, id, StreamPart::Item(answer), max)
                                .or_else(|e| refuse(id, e)),
                            true,
                        ),
                        Part::End => {
                            (frame::encode(FrameKind::Stream, cluster, id, StreamPart::<()>::End, max), false)
                        }
                        Part::Done(place) => {
                            cancels.remove(&id);
                            if busy == 1 {
                                reader.touch();
                            }
                            if out.send(Out::Release(place)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                    };
                    let bytes = match bytes {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            tracing::warn!(id, error = %e, "an answer cannot be encoded");
                            continue;
                        }
                    };
                    let len = bytes.len();
                    let (bytes, mut taken) = match member_room(len).await {
                        Some(taken) => (bytes, taken),
                        None => {
                            shared.log.note(ip, "answer refused: queued answers at the server's limit", &len);
                            // A stream's item cannot be skipped: the stream is cut
                            // as a watcher that fell behind, and resumes from there.
                            let error = if stream {
                                if let Some(token) = cancels.get(&id) {
                                    token.cancel();
                                }
                                Error::Lagged { missed: 1 }
                            } else {
                                no_room(len)
                            };
                            let Ok(bytes) = refuse(id, error) else { continue };
                            let taken = member_room(bytes.len()).await.unwrap_or_default();
                            (bytes, taken)
                        }
                    };
                    taken.push(queued.take(bytes.len()).await);
                    if out.send(Out::Frame(bytes, taken)).await.is_err() {
                        break;
                    }
                }
                _ = unauthenticated_end(pending.as_ref()), if pending.is_some() => {
                    shared.log.note(ip, "no valid frame before the handshake timeout", &"closed");
                    break;
                }
                // The connection's queue is full: wait until the peer reads.
                _ = queued.room(), if !active.is_empty() && !room => {}
                taken = places.clone().acquire_owned(), if place.is_none() => place = taken.ok(),
                read = reader.next(idle, limits.frame_timeout), if place.is_some() => {
                    let body = match read {
                        Ok(body) => body,
                        Err(end) => {
                            match end {
                                ReadEnd::TooLarge { len, max } => {
                                    shared.log.note(ip, "frame over the limit", &format!("{len} bytes, limit {max}"));
                                    if let Ok(bytes) = refuse(0, Error::FrameTooLarge { len, max }) {
                                        let _ = out.send(Out::Frame(bytes, Vec::new())).await;
                                    }
                                }
                                ReadEnd::NoRoom { len } => {
                                    shared.log.note(ip, "large frame refused: no room to read it", &len);
                                    let error = Error::Unreachable(format!(
                                        "this member reads too many large frames to read one of {len} bytes; retry later"
                                    ));
                                    if let Ok(bytes) = refuse(0, error) {
                                        let _ = out.send(Out::Frame(bytes, Vec::new())).await;
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
                                && out.send(Out::Frame(bytes, Vec::new())).await.is_err()
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
                    if let Some((handshake, _)) = pending.take() {
                        // The first valid frame over plain TCP: a regular place now.
                        match Slot::admit(shared, ip, caller.role) {
                            Ok(admitted) => slot = Some(admitted),
                            Err(why) => {
                                shared.log.note(ip, why, &"refused after its first frame");
                                if let Ok(bytes) = refuse(id, Error::Unreachable(format!("{why}; retry later"))) {
                                    let _ = out.send(Out::Frame(bytes, Vec::new())).await;
                                }
                                break;
                            }
                        }
                        drop(handshake);
                    }
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
                                let Some(place) = place.take() else { continue };
                                active.push(progress(id, future, limits.request_timeout, token.clone(), place));
                                cancels.insert(id, token);
                            }
                            Err(e) => {
                                shared.log.note(ip, "refused a request", &e);
                                match refuse(id, e) {
                                    Ok(bytes) => {
                                        if out.send(Out::Frame(bytes, Vec::new())).await.is_err() {
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
    drop((slot, pending));
}

/// The parts of one request: its answer or its stream, bounded in time until
/// the first answer, cut by `cancel`, always followed by `Done`.
fn progress<A: Answer>(
    id: u64,
    future: HandlerFuture<A>,
    timeout: Duration,
    cancel: CancellationToken,
    place: OwnedSemaphorePermit,
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
        .chain(stream::once(async move { Part::Done(place) }))
        .map(move |part| (id, part))
        .boxed()
}

fn stalled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer took no byte of its answers")
}

/// Writes all of `buf`, each write taking at least one byte within `stall`.
async fn write_progressing<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match tokio::time::timeout(stall, w.write(buf)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(stalled()),
        }
    }
    Ok(())
}

/// Writes the connection's answers until its channel closes. A peer that
/// takes no byte for `stall` is closed, which frees the bytes its unsent
/// answers hold in the port's budget: a few never-reading callers cannot
/// keep everyone else's large answers out for long. A slow reader that
/// makes progress is not cut, however long a large answer takes.
async fn write_frames(write: WriteHalf<ByteStream>, mut frames: mpsc::Receiver<Out>, stall: Duration) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    while let Some(first) = frames.recv().await {
        let mut batch = Some(first);
        let wrote: std::io::Result<()> = async {
            // Write out when no further answer is ready, to batch busy connections.
            while let Some(out) = batch.take() {
                if let Out::Frame(bytes, taken) = out {
                    write_progressing(&mut write, &bytes, stall).await?;
                    // Written (or in the writer's fixed buffer): its room is free.
                    drop((bytes, taken));
                }
                batch = frames.try_recv().ok();
            }
            tokio::time::timeout(stall, write.flush()).await.map_err(|_| stalled())?
        }
        .await;
        match wrote {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::debug!(?stall, "the peer does not read its answers: closing");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection write failed");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN, write.shutdown()).await;
}
