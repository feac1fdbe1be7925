//! A connection's loop: reads its requests (bounded in number, bytes and
//! time), runs them, and hands their answers, in order, to the writing task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cluster_core::Error;
use cluster_core::wire::{self, FrameKind};
use futures::StreamExt;
use futures::stream::{self, BoxStream, SelectAll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::{Entry, Slot, unauthenticated_end};
use super::write::write_frames;
use super::{Caller, DRAIN, Handler, HandlerFuture, Reply, Shared};
use crate::Role;
use crate::budget::{ByteBudget, Taken};
use crate::frame::{self, Answer, FrameReader, ReadEnd, StreamControl, StreamPart};
use crate::net::ByteStream;

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
pub(super) enum Out {
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

pub(super) async fn run<H: Handler>(
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

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
