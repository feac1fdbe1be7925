//! [`Client`]: calls and streams over one multiplexed connection per address.
//!
//! A connection is two tasks: a reader that hands each answer to its caller
//! by request id, and a writer; so a peer slow to read never stops this side
//! from reading. A connection that fails fails its waiting callers and is
//! replaced on next use.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cluster_core::wire::{self, FrameKind};
use futures::Stream;
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufWriter, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::frame::{self, Answer, FrameReader, ReadEnd, StreamControl, StreamPart};
use crate::net::{ByteStream, Net};
use crate::{Limits, RpcError, Security};

/// Answers a stream buffers for a reader that is slower than the server;
/// beyond it the stream is cancelled with [`RpcError::Lagged`].
const STREAM_BUFFER: usize = 256;
/// The frame length a reader sees when the peer answers `HTTP/1.1 …`.
const HTTP_AS_LENGTH: usize = u32::from_be_bytes(*b"HTTP") as usize;
/// Requests queued for one connection's writer before callers wait.
const WRITE_QUEUE: usize = 256;

/// How a client connects.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// The cluster id every frame carries.
    pub cluster_id: String,
    /// Frame size, connect and per-frame timeouts.
    pub limits: Limits,
    /// Plain TCP or mutual TLS.
    pub security: Security,
    /// The network connections go through: real TCP by default.
    pub network: Net,
}

/// A client of servers that answer `Ans` to `Req`. Cheap to clone: clones
/// share one connection per address; connections end with the last clone.
pub struct Client<Req, Ans> {
    inner: Arc<Inner<Ans>>,
    _request: PhantomData<fn(Req)>,
}

impl<Req, Ans> Clone for Client<Req, Ans> {
    fn clone(&self) -> Self {
        Client { inner: self.inner.clone(), _request: PhantomData }
    }
}

impl<Req, Ans> std::fmt::Debug for Client<Req, Ans> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("cluster_id", &self.inner.config.cluster_id).finish_non_exhaustive()
    }
}

struct Inner<Ans> {
    config: ClientConfig,
    conns: Mutex<HashMap<String, Arc<Conn<Ans>>>>,
}

impl<Req: Serialize, Ans: Answer> Client<Req, Ans> {
    /// A client; connects lazily, on the first request to each address.
    pub fn new(config: ClientConfig) -> Self {
        Client { inner: Arc::new(Inner { config, conns: Mutex::default() }), _request: PhantomData }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends `request` to `addr` and waits for its answer, all within
    /// `timeout` (connecting included).
    pub async fn call(&self, addr: &str, request: &Req, timeout: Duration) -> Result<Ans, RpcError> {
        let deadline = Instant::now() + timeout;
        let conn = self.connection(addr, deadline).await?;
        let (id, bytes) = conn.encode(&self.inner.config, FrameKind::Message, request)?;
        let (tx, rx) = oneshot::channel();
        conn.register(id, Waiter::Once(tx))?;
        let _forget = Forget { conn: &conn, id };
        let answer = async {
            conn.send(bytes).await?;
            rx.await.map_err(|_| conn.closed_error())?
        };
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(answer) => answer,
            Err(_) => Err(RpcError::Timeout { addr: addr.to_owned(), timeout }),
        }
    }

    /// Sends `request` to `addr` and returns the stream of its answers
    /// (a server that answers once gives a stream of one). Connecting and
    /// sending are bounded by the connect timeout; dropping the stream
    /// cancels it at the server.
    pub async fn stream(&self, addr: &str, request: &Req) -> Result<AnswerStream<Ans>, RpcError> {
        let deadline = Instant::now() + self.inner.config.limits.connect_timeout;
        let conn = self.connection(addr, deadline).await?;
        let (id, bytes) = conn.encode(&self.inner.config, FrameKind::Message, request)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        conn.register(id, Waiter::Stream(tx, lagged.clone()))?;
        let cancel = frame::encode(
            FrameKind::Stream,
            &self.inner.config.cluster_id,
            id,
            StreamControl::Cancel,
            self.inner.config.limits.max_frame_len,
        )
        .map_err(RpcError::Encode)?;
        let stream = AnswerStream { rx, conn: conn.clone(), id, cancel: Some(cancel), lagged };
        match tokio::time::timeout_at(deadline, conn.send(bytes)).await {
            Ok(sent) => sent.map(|()| stream),
            Err(_) => Err(RpcError::Timeout {
                addr: addr.to_owned(),
                timeout: self.inner.config.limits.connect_timeout,
            }),
        }
    }

    /// Ends every connection now; callers waiting on them fail, later calls reconnect.
    pub fn close(&self) {
        self.inner.conns().clear();
    }

    async fn connection(&self, addr: &str, deadline: Instant) -> Result<Arc<Conn<Ans>>, RpcError> {
        if let Some(conn) = self.inner.conns().get(addr).filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let config = &self.inner.config;
        let connect_by = deadline.min(Instant::now() + config.limits.connect_timeout);
        let fresh = Arc::new(Conn::connect(addr, config, connect_by).await?);
        let mut conns = self.inner.conns();
        match conns.get(addr) {
            // Another caller connected meanwhile: share its connection.
            Some(c) if !c.is_closed() => Ok(c.clone()),
            _ => {
                conns.retain(|_, c| !c.is_closed());
                conns.insert(addr.to_owned(), fresh.clone());
                Ok(fresh)
            }
        }
    }
}

impl<Ans> Inner<Ans> {
    fn conns(&self) -> MutexGuard<'_, HashMap<String, Arc<Conn<Ans>>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The answers of one streamed request. Dropping it cancels the stream.
pub struct AnswerStream<Ans> {
    rx: mpsc::Receiver<Result<Ans, RpcError>>,
    conn: Arc<Conn<Ans>>,
    id: u64,
    cancel: Option<Bytes>,
    /// Set by the reader when it cut this stream for falling behind.
    lagged: Arc<AtomicBool>,
}

impl<Ans> std::fmt::Debug for AnswerStream<Ans> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerStream").field("addr", &self.conn.addr).field("id", &self.id).finish()
    }
}

impl<Ans> Stream for AnswerStream<Ans> {
    type Item = Result<Ans, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(None) = polled {
            if self.lagged.swap(false, Ordering::Relaxed) {
                return Poll::Ready(Some(Err(RpcError::Lagged { addr: self.conn.addr.clone() })));
            }
            // Ended by the server (or cut): nothing left to cancel.
            self.cancel = None;
        }
        polled
    }
}

impl<Ans> Drop for AnswerStream<Ans> {
    fn drop(&mut self) {
        let waiting = lock(&self.conn.state).waiters.remove(&self.id).is_some();
        if let Some(cancel) = self.cancel.take().filter(|_| waiting) {
            // Best effort: a full queue means a busy connection, whose server
            // ends the stream when the connection goes.
            let _ = self.conn.tx.try_send(cancel);
        }
    }
}

enum Waiter<Ans> {
    Once(oneshot::Sender<Result<Ans, RpcError>>),
    Stream(mpsc::Sender<Result<Ans, RpcError>>, Arc<AtomicBool>),
}

/// Why a connection ended.
#[derive(Debug, Clone)]
enum Ended {
    Closed(String),
    Refused(cluster_core::Error),
}

struct State<Ans> {
    ended: Option<Ended>,
    waiters: HashMap<u64, Waiter<Ans>>,
}

struct Conn<Ans> {
    addr: String,
    tx: mpsc::Sender<Bytes>,
    state: Arc<Mutex<State<Ans>>>,
    next_id: AtomicU64,
    _tasks: [AbortOnDrop; 2],
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<Ans>(state: &Mutex<State<Ans>>) -> MutexGuard<'_, State<Ans>> {
    // A panic while holding this lock leaves plain data behind: go on with it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl<Ans: Answer> Conn<Ans> {
    async fn connect(addr: &str, config: &ClientConfig, by: Instant) -> Result<Self, RpcError> {
        let stream = match tokio::time::timeout_at(by, config.network.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(RpcError::Connect { addr: addr.to_owned(), source }),
            Err(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(RpcError::Connect { addr: addr.to_owned(), source });
            }
        };
        let io = match tokio::time::timeout_at(by, config.security.connect(stream)).await {
            Ok(Ok(io)) => io,
            Ok(Err(source)) => return Err(RpcError::Handshake { addr: addr.to_owned(), source }),
            Err(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out");
                return Err(RpcError::Handshake { addr: addr.to_owned(), source });
            }
        };
        let (read, write) = tokio::io::split(io);
        let state = Arc::new(Mutex::new(State { ended: None, waiters: HashMap::new() }));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let span = tracing::debug_span!("rpc_client_connection", peer = %addr);
        let reader = {
            let state = state.clone();
            let reading = Reading {
                addr: addr.to_owned(),
                cluster_id: config.cluster_id.clone(),
                max: config.limits.max_frame_len,
                frame_timeout: config.limits.frame_timeout,
                state,
                cancels: tx.clone(),
            };
            tokio::spawn(
                reading.run(FrameReader::new(read, config.limits.max_frame_len)).instrument(span.clone()),
            )
        };
        let writer = {
            let state = state.clone();
            let addr = addr.to_owned();
            tokio::spawn(
                async move {
                    if let Err(e) = write_frames(write, rx).await {
                        end(&state, Ended::Closed(format!("write to {addr} failed: {e}")));
                    }
                }
                .instrument(span),
            )
        };
        Ok(Conn {
            addr: addr.to_owned(),
            tx,
            state,
            next_id: AtomicU64::new(1),
            _tasks: [AbortOnDrop(reader), AbortOnDrop(writer)],
        })
    }

    fn state(&self) -> MutexGuard<'_, State<Ans>> {
        lock(&self.state)
    }

    fn is_closed(&self) -> bool {
        self.state().ended.is_some()
    }

    fn closed_error(&self) -> RpcError {
        let ended = self.state().ended.clone();
        ended_error(&self.addr, ended.unwrap_or(Ended::Closed("closed".to_owned())))
    }

    fn encode<Req: Serialize>(
        &self,
        config: &ClientConfig,
        kind: FrameKind,
        request: &Req,
    ) -> Result<(u64, Bytes), RpcError> {
        // Id 0 is where servers report what belongs to no request.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        let bytes = frame::encode(kind, &config.cluster_id, id, request, config.limits.max_frame_len)
            .map_err(RpcError::Encode)?;
        Ok((id, bytes))
    }

    fn register(&self, id: u64, waiter: Waiter<Ans>) -> Result<(), RpcError> {
        let mut state = self.state();
        if let Some(ended) = state.ended.clone() {
            return Err(ended_error(&self.addr, ended));
        }
        state.waiters.insert(id, waiter);
        Ok(())
    }

    async fn send(&self, bytes: Bytes) -> Result<(), RpcError> {
        self.tx.send(bytes).await.map_err(|_| self.closed_error())
    }
}

fn ended_error(addr: &str, ended: Ended) -> RpcError {
    match ended {
        Ended::Closed(reason) => RpcError::Closed { addr: addr.to_owned(), reason },
        Ended::Refused(error) => RpcError::Refused { addr: addr.to_owned(), error },
    }
}

/// Marks the connection ended and fails every waiting caller.
fn end<Ans>(state: &Mutex<State<Ans>>, ended: Ended) {
    let mut state = lock(state);
    if state.ended.is_none() {
        state.ended = Some(ended);
    }
    // Dropping the senders wakes the callers; they read `ended`.
    state.waiters.clear();
}

/// Removes a call's waiter when the call ends or is dropped (timed out).
struct Forget<'a, Ans> {
    conn: &'a Conn<Ans>,
    id: u64,
}

impl<Ans> Drop for Forget<'_, Ans> {
    fn drop(&mut self) {
        lock(&self.conn.state).waiters.remove(&self.id);
    }
}

struct Reading<Ans> {
    addr: String,
    cluster_id: String,
    max: usize,
    frame_timeout: Duration,
    state: Arc<Mutex<State<Ans>>>,
    cancels: mpsc::Sender<Bytes>,
}

impl<Ans: Answer> Reading<Ans> {
    async fn run<R: tokio::io::AsyncRead + Unpin>(self, mut reader: FrameReader<R>) {
        let ended = loop {
            let body = match reader.next(None, self.frame_timeout).await {
                Ok(body) => body,
                Err(ReadEnd::Closed) => break Ended::Closed("closed by the peer".to_owned()),
                // A server's refusal of our certificate (TLS 1.3 sends it after
                // the client's handshake ended): no retry will change it.
                Err(ReadEnd::Io(e)) => match crate::error::tls_refusal(&e) {
                    Some(why) => {
                        break Ended::Refused(cluster_core::Error::Forbidden(format!(
                            "TLS with {}: {why}",
                            self.addr
                        )));
                    }
                    None => break Ended::Closed(format!("{:?}", ReadEnd::Io(e))),
                },
                // "HTTP/1.1 400 …" read as a frame length: an HTTP port.
                Err(ReadEnd::TooLarge { len, .. }) if len == HTTP_AS_LENGTH => {
                    break Ended::Refused(cluster_core::Error::Malformed(format!(
                        "{} answered in HTTP: it is an HTTP port, not a port of this protocol",
                        self.addr
                    )));
                }
                // Some other protocol (or an answer past our frame limit):
                // the same on every retry.
                Err(ReadEnd::TooLarge { len, max }) => {
                    break Ended::Refused(cluster_core::Error::FrameTooLarge { len, max });
                }
                Err(end) => break Ended::Closed(format!("{end:?}")),
            };
            let (head, payload) = match wire::decode_head(&self.cluster_id, &body, self.max) {
                Ok(decoded) => decoded,
                Err(bad) => match bad.request_id {
                    Some(id) if id != 0 => {
                        self.fail(id, RpcError::BadAnswer { addr: self.addr.clone(), error: bad.error });
                        continue;
                    }
                    _ => break Ended::Refused(bad.error),
                },
            };
            let id = head.request_id;
            match head.kind {
                FrameKind::Message => match frame::payload::<Ans>(id, payload) {
                    Ok(answer) if id == 0 => match answer.into_refusal() {
                        Ok(error) => break Ended::Refused(error),
                        Err(_) => break Ended::Closed("an answer under the connection's id".to_owned()),
                    },
                    Ok(answer) => self.deliver(id, Ok(answer)),
                    Err(error) => self.fail(id, RpcError::BadAnswer { addr: self.addr.clone(), error }),
                },
                FrameKind::Stream => match frame::payload::<StreamPart<Ans>>(id, payload) {
                    Ok(StreamPart::Item(answer)) => self.item(id, answer),
                    Ok(StreamPart::End) => {
                        lock(&self.state).waiters.remove(&id);
                    }
                    Err(error) => self.fail(id, RpcError::BadAnswer { addr: self.addr.clone(), error }),
                },
            }
        };
        tracing::debug!(?ended, "rpc connection ends");
        end(&self.state, ended);
    }

    /// A whole answer: ends a call, or is the one answer of a stream.
    fn deliver(&self, id: u64, answer: Result<Ans, RpcError>) {
        let waiter = lock(&self.state).waiters.remove(&id);
        match waiter {
            Some(Waiter::Once(tx)) => {
                let _ = tx.send(answer);
            }
            Some(Waiter::Stream(tx, _)) => {
                let _ = tx.try_send(answer);
            }
            // The caller gave up meanwhile.
            None => {}
        }
    }

    fn fail(&self, id: u64, error: RpcError) {
        self.deliver(id, Err(error));
    }

    fn item(&self, id: u64, answer: Ans) {
        let mut state = lock(&self.state);
        let full = match state.waiters.get(&id) {
            Some(Waiter::Stream(tx, _)) => match tx.try_send(Ok(answer)) {
                Ok(()) => false,
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    state.waiters.remove(&id);
                    false
                }
            },
            // A call answered by a stream: the handler and the caller disagree.
            Some(Waiter::Once(_)) => {
                if let Some(Waiter::Once(tx)) = state.waiters.remove(&id) {
                    let error = cluster_core::Error::Malformed("a stream answered a call".to_owned());
                    let _ = tx.send(Err(RpcError::BadAnswer { addr: self.addr.clone(), error }));
                }
                true
            }
            None => false,
        };
        if full {
            // The reader must never wait for a slow stream: cut it.
            if let Some(Waiter::Stream(_, lagged)) = state.waiters.remove(&id) {
                // The stream ends after what it buffered, then reports the cut.
                lagged.store(true, Ordering::Relaxed);
            }
            drop(state);
            if let Ok(cancel) =
                frame::encode(FrameKind::Stream, &self.cluster_id, id, StreamControl::Cancel, self.max)
            {
                let _ = self.cancels.try_send(cancel);
            }
        }
    }
}

async fn write_frames(
    write: WriteHalf<ByteStream>,
    mut frames: mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    while let Some(bytes) = frames.recv().await {
        let mut batch = Some(bytes);
        // Write out when no further request is queued, to batch busy connections.
        while let Some(bytes) = batch.take() {
            write.write_all(&bytes).await?;
            batch = frames.try_recv().ok();
        }
        write.flush().await?;
    }
    Ok(())
}
