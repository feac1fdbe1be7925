//! The client side of one TCP connection to a member's service, and the pool
//! that keeps one such connection per address.
//!
//! A connection is two tasks, a reader and a writer, so that a peer that is
//! slow to read never stops this side from reading its answers. Requests are
//! paired with answers by request id; any number of callers share one
//! connection. A connection that fails is marked closed, fails its waiting
//! callers with [`Error::Unreachable`], and is replaced by the pool on next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cluster_core::wire::{Frame, FrameError};
use cluster_core::{Error, Result};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::protocol::{CONNECTION_ERROR_ID, ClientCodec, Request, Response};

/// How connections are made.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub(crate) cluster_id: Arc<str>,
    pub(crate) max_frame_len: usize,
    pub(crate) connect_timeout: Duration,
    /// Requests queued for the writer of one connection before callers wait.
    pub(crate) queue_len: usize,
}

#[derive(Default)]
struct Pending {
    closed: Option<Error>,
    waiters: HashMap<u64, oneshot::Sender<Response>>,
}

type Shared = Arc<Mutex<Pending>>;

fn lock(p: &Shared) -> MutexGuard<'_, Pending> {
    // A panic while holding this lock leaves plain data behind: go on with it.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the connection closed and fails every waiting caller.
fn close(p: &Shared, error: Error) {
    let mut p = lock(p);
    if p.closed.is_none() {
        p.closed = Some(error);
    }
    // Dropping the senders wakes the callers.
    p.waiters.clear();
}

/// One connection to one member's service.
pub(crate) struct Connection {
    addr: String,
    tx: mpsc::Sender<Frame<Request>>,
    pending: Shared,
    next_id: AtomicU64,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Connection {
    /// Connects to `addr`.
    pub(crate) async fn connect(addr: &str, opts: &ConnectOptions) -> Result<Connection> {
        let stream = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Error::Unreachable(format!("cannot connect to {addr}: {e}"))),
            Err(_) => {
                return Err(Error::Unreachable(format!(
                    "cannot connect to {addr} within {:?}",
                    opts.connect_timeout
                )));
            }
        };
        // Small request/answer frames: do not wait to fill packets.
        let _ = stream.set_nodelay(true);
        let codec = ClientCodec::new(opts.cluster_id.clone(), opts.max_frame_len);
        // Separate halves: a frame is encoded when fed, so a request too large
        // for a frame fails at once, attributed to its own caller.
        let (read, write) = stream.into_split();
        let mut frames = FramedRead::new(read, codec.clone());
        let mut sink = FramedWrite::new(write, codec);
        let (tx, mut rx) = mpsc::channel::<Frame<Request>>(opts.queue_len.max(1));
        let pending: Shared = Arc::default();

        let reader = {
            let pending = pending.clone();
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let error = loop {
                    match frames.next().await {
                        // The server explains why it closes the connection.
                        Some(Ok(Ok(Frame { request_id: CONNECTION_ERROR_ID, body: Response::Err(e) }))) => {
                            break Error::Unreachable(format!("{addr} closed the connection: {e}"));
                        }
                        Some(Ok(Ok(frame))) => deliver(&pending, frame.request_id, frame.body),
                        Some(Ok(Err(FrameError { request_id: Some(id), error })))
                            if id != CONNECTION_ERROR_ID =>
                        {
                            deliver(&pending, id, Response::Err(error))
                        }
                        Some(Ok(Err(FrameError { error, .. }))) => {
                            break Error::Unreachable(format!("{addr} refused the connection: {error}"));
                        }
                        Some(Err(e)) => {
                            break Error::Unreachable(format!("connection to {addr} failed: {e}"));
                        }
                        None => break Error::Unreachable(format!("{addr} closed the connection")),
                    }
                };
                tracing::debug!(%error, "service connection ends");
                close(&pending, error);
            })
        };
        let writer = {
            let pending = pending.clone();
            let addr = addr.to_owned();
            tokio::spawn(async move {
                while let Some(frame) = rx.recv().await {
                    let id = frame.request_id;
                    // Write out when no further request is queued, to batch busy connections.
                    let sent = match sink.feed(frame).await {
                        Ok(()) if rx.is_empty() => sink.flush().await,
                        other => other,
                    };
                    match sent {
                        Ok(()) => {}
                        // The request alone was bad (too large): fail it, keep the connection.
                        Err(e @ (Error::FrameTooLarge { .. } | Error::Encode(_))) => {
                            deliver(&pending, id, Response::Err(e))
                        }
                        Err(e) => {
                            close(&pending, Error::Unreachable(format!("connection to {addr} failed: {e}")));
                            return;
                        }
                    }
                }
            })
        };
        Ok(Connection {
            addr: addr.to_owned(),
            tx,
            pending,
            next_id: AtomicU64::new(1),
            tasks: [reader, writer],
        })
    }

    /// True once the connection failed; the pool then replaces it.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.pending).closed.is_some()
    }

    /// Sends `request` and waits for its answer. An error answer comes back
    /// as `Err`; a member that is shutting down counts as unreachable.
    pub(crate) async fn call(&self, request: Request) -> Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if let Some(e) = &p.closed {
                return Err(e.clone());
            }
            p.waiters.insert(id, tx);
        }
        // Removes the waiter if this call is dropped (timed out) before its answer.
        let _guard = Forget { pending: &self.pending, id };
        if self.tx.send(Frame { request_id: id, body: request }).await.is_err() {
            return Err(self.closed_error());
        }
        match rx.await {
            Ok(Response::Err(Error::ShuttingDown)) => {
                Err(Error::Unreachable(format!("{} is shutting down", self.addr)))
            }
            Ok(Response::Err(e)) => Err(e),
            Ok(response) => Ok(response),
            Err(_) => Err(self.closed_error()),
        }
    }

    fn closed_error(&self) -> Error {
        lock(&self.pending)
            .closed
            .clone()
            .unwrap_or_else(|| Error::Unreachable(format!("connection to {} closed", self.addr)))
    }
}

fn deliver(pending: &Shared, id: u64, response: Response) {
    let waiter = lock(pending).waiters.remove(&id);
    match waiter {
        // The caller may have given up meanwhile; nothing to do then.
        Some(w) => {
            let _ = w.send(response);
        }
        None => tracing::trace!(id, "answer for a request nobody waits for"),
    }
}

struct Forget<'a> {
    pending: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiters.remove(&self.id);
    }
}

/// One connection per address, made on first use and remade after a failure.
pub(crate) struct Pool {
    opts: ConnectOptions,
    conns: Mutex<HashMap<String, Arc<Connection>>>,
}

impl Pool {
    pub(crate) fn new(opts: ConnectOptions) -> Self {
        Pool { opts, conns: Mutex::default() }
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<String, Arc<Connection>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live connection to `addr`, connecting if there is none.
    pub(crate) async fn get(&self, addr: &str) -> Result<Arc<Connection>> {
        if let Some(c) = self.conns().get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let fresh = Arc::new(Connection::connect(addr, &self.opts).await?);
        let mut conns = self.conns();
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

    /// Sends `request` to `addr` over the pooled connection.
    pub(crate) async fn call(&self, addr: &str, request: Request) -> Result<Response> {
        let conn = self.get(addr).await?;
        conn.call(request).await
    }
}
