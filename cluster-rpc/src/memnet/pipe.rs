//! A connection of the in-memory network: two one-way pipes, each a queue of
//! chunks stamped with the (tokio) instant they arrive at the reader.
//!
//! A chunk arrives no earlier than the chunk written before it, so a delayed
//! chunk never overtakes an earlier one: the byte order of a connection holds
//! whatever the jitter and the retransmissions. A pipe holds at most
//! [`BUFFER`] bytes written and not yet read; past that the writer waits, as
//! a TCP sender does when the peer's window and its own buffer are full.
//! While the pipe's direction is cut, its reader gets nothing (the bytes,
//! those already on their way included, wait for the link to heal).

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::World;

/// Bytes a pipe holds, written and not yet read.
pub(super) const BUFFER: usize = 256 * 1024;

/// One direction of a connection, from host `from` to host `to`.
pub(super) struct Pipe {
    pub(super) id: u64,
    pub(super) from: IpAddr,
    pub(super) to: IpAddr,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    chunks: VecDeque<(Instant, Bytes)>,
    /// Bytes in `chunks`.
    queued: usize,
    /// When the last chunk (or the end) arrives.
    last: Option<Instant>,
    /// When the writer's end (shut down or dropped) arrives.
    end: Option<Instant>,
    /// The reader dropped its stream: writes fail.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    pub(super) fn new(id: u64, from: IpAddr, to: IpAddr) -> Arc<Self> {
        Arc::new(Pipe { id, from, to, state: Mutex::default() })
    }

    fn state(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One end of an in-memory connection.
pub(super) struct MemStream {
    world: Arc<Mutex<World>>,
    /// What the peer writes.
    incoming: Arc<Pipe>,
    /// What this end writes.
    outgoing: Arc<Pipe>,
    /// Until the next chunk arrives.
    sleep: Pin<Box<Sleep>>,
}

impl MemStream {
    /// The two ends of a connection between hosts `a` and `b` over `ab`
    /// (a to b) and `ba`.
    pub(super) fn pair(world: &Arc<Mutex<World>>, ab: Arc<Pipe>, ba: Arc<Pipe>) -> (MemStream, MemStream) {
        let end = |incoming, outgoing| MemStream {
            world: world.clone(),
            incoming,
            outgoing,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
        };
        (end(ba.clone(), ab.clone()), end(ab, ba))
    }

    /// Sends the end of the outgoing direction (once).
    fn finish(&mut self) {
        let mut world = super::lock(&self.world);
        let mut state = self.outgoing.state();
        if state.end.is_some() {
            return;
        }
        let at = world.arrival(self.outgoing.from, self.outgoing.to, state.last);
        state.end = Some(at);
        state.last = Some(at);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }
}

impl AsyncRead for MemStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let pipe = &this.incoming;
        if super::lock(&this.world).stall(pipe.from, pipe.to, pipe.id, cx.waker()) {
            return Poll::Pending;
        }
        loop {
            let mut state = pipe.state();
            let now = Instant::now();
            let due = match state.chunks.front() {
                Some((at, _)) => *at,
                None => match state.end {
                    Some(at) if at <= now => return Poll::Ready(Ok(())),
                    Some(at) => at,
                    None => {
                        state.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                },
            };
            if due > now {
                drop(state);
                this.sleep.as_mut().reset(due);
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            let Some((_, chunk)) = state.chunks.front_mut() else { continue };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.advance(n);
            if chunk.is_empty() {
                state.chunks.pop_front();
            }
            state.queued -= n;
            if let Some(writer) = state.writer.take() {
                writer.wake();
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for MemStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let pipe = &self.outgoing;
        let mut world = super::lock(&self.world);
        let mut state = pipe.state();
        if state.reader_gone || state.end.is_some() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = BUFFER - state.queued;
        if room == 0 {
            state.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        let at = world.arrival(pipe.from, pipe.to, state.last);
        state.last = Some(at);
        state.chunks.push_back((at, Bytes::copy_from_slice(&buf[..n])));
        state.queued += n;
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        self.finish();
        let mut state = self.incoming.state();
        state.reader_gone = true;
        // What was never read is gone with the reader.
        state.chunks.clear();
        state.queued = 0;
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
        drop(state);
        super::lock(&self.world).forget(self.incoming.id);
    }
}
