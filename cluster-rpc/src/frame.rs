//! Frames of the RPC layer over a byte stream: the reader whose buffer grows
//! only as bytes arrive (a large frame that holds its room in the server's
//! budget gets its buffer at once, its pages used as bytes arrive) and that
//! enforces the idle and per-frame timeouts, the encoder, and what stream
//! frames carry.
//!
//! The format is core's ([`cluster_core::wire`]): a 4-byte length, then magic,
//! version, request id, cluster id and a bincode payload. A message frame
//! carries a request or its one answer; a stream frame carries a
//! [`StreamPart`] (server to caller) or a [`StreamControl`] (caller to server).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use cluster_core::wire::{self, Frame, FrameKind, LEN_PREFIX};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::budget::{ByteBudget, Taken};

/// What an answer type must offer the RPC layer: a way to carry the layer's
/// own refusals (a foreign cluster, a malformed frame, a timeout) in the
/// handler's answer type, so that every answer on the wire decodes as that type.
pub trait Answer: Serialize + DeserializeOwned + Send + 'static {
    /// The answer that refuses a request with `error`.
    fn refused(error: cluster_core::Error) -> Self;
    /// The refusal this answer carries, or the answer itself.
    fn into_refusal(self) -> Result<cluster_core::Error, Self>;
}

/// A part of a streamed answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum StreamPart<A> {
    /// One answer of the stream.
    Item(A),
    /// The stream ended (the handler's stream is exhausted).
    End,
}

/// What a caller may send about a stream it opened.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum StreamControl {
    /// Stop the stream; the server ends it without a further part.
    Cancel,
}

/// Encodes a whole frame, length prefix included.
pub(crate) fn encode<T: Serialize>(
    kind: FrameKind,
    cluster_id: &str,
    request_id: u64,
    body: T,
    max_len: usize,
) -> Result<Bytes, cluster_core::Error> {
    let body = wire::encode_kind(kind, cluster_id, &Frame { request_id, body }, max_len)?;
    let mut out = Vec::with_capacity(LEN_PREFIX + body.len());
    // `encode_kind` refused anything over `max_len`, which fits a u32.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out.into())
}

/// Why no further frame can be read from a connection.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The peer closed between frames.
    Closed,
    /// The peer closed inside a frame.
    ClosedInFrame,
    /// A length over the limit: the stream cannot be resynchronized.
    TooLarge { len: usize, max: usize },
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A frame started and did not complete within the frame timeout.
    SlowFrame,
    /// A large frame waited for room in the server's budget for partly read
    /// frames longer than the frame timeout.
    NoRoom { len: usize },
    /// The socket failed.
    Io(std::io::Error),
}

/// The smallest read; also the most the buffer is grown by beyond what the
/// current frame still needs.
const READ_CHUNK: usize = 16 * 1024;
/// A buffer larger than this is given back once it is empty.
const KEEP_CAPACITY: usize = 256 * 1024;

/// Reads length-prefixed frame bodies. Its state lives in the struct, so
/// [`next`](Self::next) may be dropped and called again (cancel-safe).
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_len: usize,
    frame_started: Option<Instant>,
    last_activity: Instant,
    /// Frames longer than this are read only with room in `budget`.
    large: Option<(usize, ByteBudget)>,
    /// The room the large frame being read holds.
    held: Option<Taken>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R, max_len: usize) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max_len,
            frame_started: None,
            last_activity: Instant::now(),
            large: None,
            held: None,
        }
    }

    /// Reads frames longer than `threshold` only once `budget` has room for
    /// them, so that many peers announcing large frames cannot make the
    /// reader hold more than the budget (shared by a server's connections).
    pub(crate) fn with_large_frame_budget(mut self, threshold: usize, budget: ByteBudget) -> Self {
        self.large = Some((threshold, budget));
        self
    }

    /// Marks the connection active now (the idle timeout starts again).
    pub(crate) fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// The next complete frame body. With `idle`, gives up after that long
    /// without any byte between frames; a frame that started must complete
    /// within `frame_timeout` whatever `idle` is.
    pub(crate) async fn next(
        &mut self,
        idle: Option<Duration>,
        frame_timeout: Duration,
    ) -> Result<BytesMut, ReadEnd> {
        loop {
            let mut needed = LEN_PREFIX;
            if self.buf.len() >= LEN_PREFIX {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if len > self.max_len {
                    return Err(ReadEnd::TooLarge { len, max: self.max_len });
                }
                needed = LEN_PREFIX + len;
                if let Some((threshold, budget)) = &self.large
                    && len > *threshold
                    && self.held.is_none()
                    && self.buf.len() < needed
                {
                    // Wait for room before reading (and buffering) more of it;
                    // the peer's bytes wait in its socket meanwhile.
                    let started = *self.frame_started.get_or_insert_with(Instant::now);
                    match tokio::time::timeout_at(started + frame_timeout, budget.take(len)).await {
                        Ok(taken) => {
                            // The budget counts the whole frame: its buffer is
                            // taken at once, not grown by doubling (each step a
                            // copy while the old buffer is still held, which
                            // made a reader hold up to three times what
                            // arrived). Pages are still used only as bytes arrive.
                            self.buf.reserve(needed - self.buf.len());
                            self.held = Some(taken);
                        }
                        Err(_) => return Err(ReadEnd::NoRoom { len }),
                    }
                }
                if self.buf.len() >= needed {
                    self.held = None;
                    self.buf.advance(LEN_PREFIX);
                    let body = self.buf.split_to(len);
                    self.frame_started = if self.buf.is_empty() { None } else { Some(Instant::now()) };
                    self.last_activity = Instant::now();
                    if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                        self.buf = BytesMut::with_capacity(READ_CHUNK);
                    }
                    return Ok(body);
                }
            }
            // Grow by what arrives, never by what the peer announces.
            let want = (needed - self.buf.len()).clamp(1, READ_CHUNK);
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want);
            }
            let deadline = match self.frame_started {
                Some(started) => Some((started + frame_timeout, ReadEnd::SlowFrame)),
                None => idle.map(|idle| (self.last_activity + idle, ReadEnd::Idle)),
            };
            let read = self.io.read_buf(&mut self.buf);
            let n = match deadline {
                Some((at, end)) => match tokio::time::timeout_at(at, read).await {
                    Ok(n) => n,
                    Err(_) => return Err(end),
                },
                None => read.await,
            };
            match n {
                Ok(0) if self.buf.is_empty() => return Err(ReadEnd::Closed),
                Ok(0) => return Err(ReadEnd::ClosedInFrame),
                Ok(_) => {
                    self.last_activity = Instant::now();
                    self.frame_started.get_or_insert(self.last_activity);
                }
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        }
    }
}

/// Decodes a payload that must be `T`.
pub(crate) fn payload<T: DeserializeOwned>(id: u64, payload: &[u8]) -> Result<T, cluster_core::Error> {
    wire::decode_payload(id, payload).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_buffer_grows_with_the_bytes_not_the_announced_length() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(rx, 64 << 20);
        tx.write_all(&(60u32 << 20).to_be_bytes()).await.unwrap();
        tx.write_all(&[1; 1000]).await.unwrap();
        let read =
            tokio::time::timeout(Duration::from_millis(50), reader.next(None, Duration::from_secs(60))).await;
        assert!(read.is_err(), "the frame is not complete");
        assert!(reader.buf.capacity() < 4 * READ_CHUNK, "capacity {}", reader.buf.capacity());
    }

    #[tokio::test]
    async fn a_large_frame_with_room_gets_its_buffer_at_once() {
        let budget = ByteBudget::new(1 << 20);
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut reader = FrameReader::new(rx, 1 << 20).with_large_frame_budget(100, budget.clone());
        tx.write_all(&500_000u32.to_be_bytes()).await.unwrap();
        tx.write_all(&[1; 1000]).await.unwrap();
        let read =
            tokio::time::timeout(Duration::from_millis(50), reader.next(None, Duration::from_secs(60))).await;
        assert!(read.is_err(), "the frame is not complete");
        assert_eq!(budget.used(), 500_000);
        // One allocation of the frame's size, never a doubling past it.
        let capacity = reader.buf.capacity();
        assert!((500_004..600_000).contains(&capacity), "capacity {capacity}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_trickles_is_cut_by_the_frame_timeout() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 1024);
        let trickle = tokio::spawn(async move {
            tx.write_all(&100u32.to_be_bytes()).await.unwrap();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.write_all(&[0]).await.is_err() {
                    break;
                }
            }
        });
        let end = reader.next(Some(Duration::from_secs(3600)), Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(end, ReadEnd::SlowFrame), "{end:?}");
        drop(reader);
        trickle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_frame_waits_for_room_and_small_ones_pass() {
        let budget = ByteBudget::new(1000);
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(rx, 1 << 20).with_large_frame_budget(100, budget.clone());
        let elsewhere = budget.try_take(1000).expect("all of it");
        tx.write_all(&[0, 0, 0, 2, 7, 8]).await.unwrap();
        assert_eq!(
            &reader.next(None, Duration::from_secs(5)).await.unwrap()[..],
            &[7, 8],
            "small frames pass"
        );
        // Longer than one read, so that the reader must wait for room to go on.
        tx.write_all(&50_000u32.to_be_bytes()).await.unwrap();
        tx.write_all(&[1; 50_000]).await.unwrap();
        let end = reader.next(None, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(end, ReadEnd::NoRoom { len: 50_000 }), "{end:?}");
        assert!(reader.buf.len() <= READ_CHUNK, "read {} bytes without room", reader.buf.len());

        // With room it is read, and the room is given back once it is whole.
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::new(rx, 1 << 20).with_large_frame_budget(100, budget.clone());
        tx.write_all(&50_000u32.to_be_bytes()).await.unwrap();
        let give_back = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(elsewhere);
            tx.write_all(&[1; 50_000]).await.unwrap();
            tx
        });
        assert_eq!(reader.next(None, Duration::from_secs(5)).await.unwrap().len(), 50_000);
        assert_eq!(budget.used(), 0);
        drop(give_back.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_complete_frames() {
        let (mut tx, rx) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(rx, 1024);
        tx.write_all(&[0, 0, 0, 2, 7, 8, 0, 0, 0, 1, 9]).await.unwrap();
        assert_eq!(&reader.next(None, Duration::from_secs(1)).await.unwrap()[..], &[7, 8]);
        assert_eq!(&reader.next(None, Duration::from_secs(1)).await.unwrap()[..], &[9]);
        let end = reader.next(Some(Duration::from_secs(5)), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(end, ReadEnd::Idle), "{end:?}");
        tx.write_all(&[0, 0, 0, 9]).await.unwrap();
        drop(tx);
        assert!(matches!(reader.next(None, Duration::from_secs(1)).await, Err(ReadEnd::ClosedInFrame)));
    }
}
