//! The wire codec of every TCP protocol of the project (raft RPC, the
//! forwarding service).
//!
//! A frame on the wire is a 4-byte big-endian length, then the body:
//!
//! ```text
//! magic "CGCW" | version u16 LE | request id u64 LE | cluster id len u8 | cluster id | bincode payload
//! ```
//!
//! The magic also tells the frame's [`FrameKind`]: `CGCW` is a message (a
//! request, or the one answer to it), `CGCS` a part of a streamed answer (or a
//! caller's cancel of one). [`WireCodec`] speaks messages only; the RPC layer
//! (`cluster-rpc`) reads both kinds with [`decode_head`] and [`decode_payload`].
//!
//! The request id lets one connection carry many requests at once: an answer
//! carries the id of its request. Decoding never panics and never allocates
//! more than the frame limit: a frame that is too long, too short, of another
//! magic, version or cluster, or whose payload does not decode exactly, gives
//! its own [`Error`] variant.
//!
//! [`WireCodec`] plugs into `tokio_util::codec::Framed`. Its items are
//! `Result<Frame<T>, FrameError>`: a frame whose header or payload is bad is
//! reported as an item — with its request id when the header was readable —
//! so the connection can answer it and go on; only a length beyond the limit
//! (after which the stream cannot be resynchronized) ends the stream.
//!
//! ```
//! use bytes::BytesMut;
//! use cluster_core::wire::{Frame, WireCodec};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = WireCodec::<String, String>::new("prod", 1 << 20);
//! let mut buf = BytesMut::new();
//! codec.encode(Frame { request_id: 7, body: "hello".to_owned() }, &mut buf).unwrap();
//! let frame = codec.decode(&mut buf).unwrap().unwrap().unwrap();
//! assert_eq!((frame.request_id, frame.body.as_str()), (7, "hello"));
//!
//! let mut other = WireCodec::<String, String>::new("staging", 1 << 20);
//! let mut buf = BytesMut::new();
//! other.encode(Frame { request_id: 8, body: "hi".to_owned() }, &mut buf).unwrap();
//! let refused = codec.decode(&mut buf).unwrap().unwrap().unwrap_err();
//! assert_eq!(refused.request_id, Some(8));
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The first bytes of every message frame body.
pub const MAGIC: [u8; 4] = *b"CGCW";
/// The first bytes of every stream frame body.
pub const STREAM_MAGIC: [u8; 4] = *b"CGCS";
/// The longest cluster id a frame can carry.
pub const MAX_CLUSTER_ID_LEN: usize = 255;
/// A sensible default frame limit: 16 MiB (raft snapshot chunks are 3 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// The bytes of the length prefix before every frame body.
pub const LEN_PREFIX: usize = 4;
/// The highest frame limit a configuration may set: 64 MiB. The length
/// prefix is a `u32`, and a peer may make a member buffer one whole frame
/// per connection, so a larger limit only makes memory easier to exhaust.
pub const MAX_FRAME_LEN_CEILING: usize = 64 * 1024 * 1024;
const FIXED_HEADER: usize = MAGIC.len() + 2 + 8 + 1;

/// What a frame carries, told by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A request, or the one answer to a request ([`MAGIC`]).
    Message,
    /// A part of a streamed answer, or a caller's cancel of a stream ([`STREAM_MAGIC`]).
    Stream,
}

impl FrameKind {
    /// The magic bytes that start a frame of this kind.
    pub fn magic(self) -> [u8; 4] {
        match self {
            FrameKind::Message => MAGIC,
            FrameKind::Stream => STREAM_MAGIC,
        }
    }
}

/// One message with the id that pairs a request with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T> {
    /// Chosen by the requester, echoed by the answer.
    pub request_id: u64,
    /// The message.
    pub body: T,
}

/// A frame that arrived but could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct FrameError {
    /// The request id, when the header could be read.
    pub request_id: Option<u64>,
    /// What was wrong.
    pub error: Error,
}

/// What decoding one frame may claim, in bytes of memory. Without a limit
/// bincode allocates a string or byte vector of the length a body states
/// before it finds the body shorter: a length of 2^64 - 1 panicked the
/// connection's task (capacity overflow) and one of 2^38 aborted the process
/// allocating. Four times the largest frame leaves room for containers that
/// take more memory than wire bytes.
const DECODE_LIMIT: usize = 4 * MAX_FRAME_LEN_CEILING;

fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT>,
> {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes one message frame body (without the length prefix).
pub fn encode_body<T: Serialize>(cluster_id: &str, frame: &Frame<T>, max_len: usize) -> Result<Vec<u8>> {
    encode_kind(FrameKind::Message, cluster_id, frame, max_len)
}

/// Encodes one frame body of `kind` (without the length prefix).
pub fn encode_kind<T: Serialize>(
    kind: FrameKind,
    cluster_id: &str,
    frame: &Frame<T>,
    max_len: usize,
) -> Result<Vec<u8>> {
    if cluster_id.len() > MAX_CLUSTER_ID_LEN {
        return Err(Error::Encode(format!("cluster id longer than {MAX_CLUSTER_ID_LEN} bytes")));
    }
    let mut out = Vec::with_capacity(FIXED_HEADER + cluster_id.len() + 64);
    out.extend_from_slice(&kind.magic());
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.extend_from_slice(&frame.request_id.to_le_bytes());
    out.push(cluster_id.len() as u8);
    out.extend_from_slice(cluster_id.as_bytes());
    bincode::serde::encode_into_std_write(&frame.body, &mut out, bincode_config())
        .map_err(|e| Error::Encode(e.to_string()))?;
    if out.len() > max_len {
        return Err(Error::FrameTooLarge { len: out.len(), max: max_len });
    }
    Ok(out)
}

/// Decodes one message frame body (without the length prefix), checking
/// magic, version and cluster id, and that the payload uses every byte.
pub fn decode_body<T: DeserializeOwned>(
    cluster_id: &str,
    body: &[u8],
    max_len: usize,
) -> std::result::Result<Frame<T>, FrameError> {
    let (head, payload) = decode_head(cluster_id, body, max_len)?;
    if head.kind != FrameKind::Message {
        return Err(FrameError {
            request_id: Some(head.request_id),
            error: Error::Malformed("a stream frame where a message was expected".to_owned()),
        });
    }
    let body = decode_payload(head.request_id, payload)?;
    Ok(Frame { request_id: head.request_id, body })
}

/// The header of a frame: its kind and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Message or stream part.
    pub kind: FrameKind,
    /// The request id.
    pub request_id: u64,
}

/// Checks a frame body's header (length, magic, version, cluster id) and
/// returns it with the payload that follows.
///
/// A frame of another cluster is refused without naming this member's
/// cluster: error replies never reveal it.
pub fn decode_head<'a>(
    cluster_id: &str,
    body: &'a [u8],
    max_len: usize,
) -> std::result::Result<(Head, &'a [u8]), FrameError> {
    let fail = |request_id, error| FrameError { request_id, error };
    if body.len() > max_len {
        return Err(fail(None, Error::FrameTooLarge { len: body.len(), max: max_len }));
    }
    if body.len() < FIXED_HEADER {
        return Err(fail(None, Error::TruncatedFrame { len: body.len(), needed: FIXED_HEADER }));
    }
    let kind = match [body[0], body[1], body[2], body[3]] {
        MAGIC => FrameKind::Message,
        STREAM_MAGIC => FrameKind::Stream,
        _ => return Err(fail(None, Error::BadMagic)),
    };
    let version = u16::from_le_bytes([body[4], body[5]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[6..14]);
    let request_id = u64::from_le_bytes(id);
    if version != PROTOCOL_VERSION {
        return Err(fail(
            Some(request_id),
            Error::VersionMismatch { expected: PROTOCOL_VERSION, found: version },
        ));
    }
    let cid_len = usize::from(body[14]);
    let needed = FIXED_HEADER + cid_len;
    if body.len() < needed {
        return Err(fail(Some(request_id), Error::TruncatedFrame { len: body.len(), needed }));
    }
    let cid = &body[FIXED_HEADER..needed];
    if cid != cluster_id.as_bytes() {
        return Err(fail(
            Some(request_id),
            Error::ClusterMismatch { found: String::from_utf8_lossy(cid).into_owned() },
        ));
    }
    Ok((Head { kind, request_id }, &body[needed..]))
}

/// Decodes a frame's bincode payload, which must use every byte.
pub fn decode_payload<T: DeserializeOwned>(
    request_id: u64,
    payload: &[u8],
) -> std::result::Result<T, FrameError> {
    let fail = |error| FrameError { request_id: Some(request_id), error };
    // The payload cannot claim more than the frame holds: bincode checks every
    // length against the remaining input before allocating.
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(payload, bincode_config())
        .map_err(|e| fail(Error::Malformed(e.to_string())))?;
    if read != payload.len() {
        return Err(fail(Error::Malformed(format!(
            "{} trailing bytes after the payload",
            payload.len() - read
        ))));
    }
    Ok(value)
}

/// A `tokio_util` codec that sends `Frame<Out>` and receives `Frame<In>`.
pub struct WireCodec<Out, In> {
    cluster_id: Arc<str>,
    max_frame_len: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<Out, In> WireCodec<Out, In> {
    /// A codec for `cluster_id` that refuses frames over `max_frame_len` bytes.
    pub fn new(cluster_id: impl Into<Arc<str>>, max_frame_len: usize) -> Self {
        WireCodec { cluster_id: cluster_id.into(), max_frame_len, _types: PhantomData }
    }

    /// The cluster id this codec accepts.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
}

impl<Out, In> Clone for WireCodec<Out, In> {
    fn clone(&self) -> Self {
        WireCodec::new(self.cluster_id.clone(), self.max_frame_len)
    }
}

impl<Out, In: DeserializeOwned> Decoder for WireCodec<Out, In> {
    type Item = std::result::Result<Frame<In>, FrameError>;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>> {
        if src.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            // The stream cannot be trusted past this point.
            return Err(Error::FrameTooLarge { len, max: self.max_frame_len });
        }
        if src.len() < LEN_PREFIX + len {
            // No reserve of the announced length: the buffer grows only as
            // bytes arrive, so a peer that announces 16 MiB and sends 10 bytes
            // costs 10 bytes.
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let body = src.split_to(len);
        Ok(Some(decode_body(&self.cluster_id, &body, self.max_frame_len)))
    }
}

impl<Out: Serialize, In> Encoder<Frame<Out>> for WireCodec<Out, In> {
    type Error = Error;

    fn encode(&mut self, frame: Frame<Out>, dst: &mut BytesMut) -> Result<()> {
        let body = encode_body(&self.cluster_id, &frame, self.max_frame_len)?;
        dst.reserve(LEN_PREFIX + body.len());
        dst.put_u32(body.len() as u32);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Put { key: String, value: Vec<u8> },
    }

    const MAX: usize = 4096;

    fn codec(cluster: &str) -> WireCodec<Msg, Msg> {
        WireCodec::new(cluster, MAX)
    }

    fn encoded(cluster: &str, id: u64, msg: Msg) -> BytesMut {
        let mut buf = BytesMut::new();
        codec(cluster).encode(Frame { request_id: id, body: msg }, &mut buf).unwrap();
        buf
    }

    fn decode_one(buf: &mut BytesMut) -> Result<Option<std::result::Result<Frame<Msg>, FrameError>>> {
        codec("c").decode(buf)
    }

    #[test]
    fn roundtrip_several_frames_in_one_buffer() {
        let mut buf = encoded("c", 1, Msg::Ping(5));
        buf.extend_from_slice(&encoded("c", 2, Msg::Put { key: "k".into(), value: vec![1, 2] }));
        assert_eq!(
            decode_one(&mut buf).unwrap().unwrap().unwrap(),
            Frame { request_id: 1, body: Msg::Ping(5) }
        );
        let f = decode_one(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(f.request_id, 2);
        assert!(buf.is_empty());
        assert!(decode_one(&mut buf).unwrap().is_none());
    }

    #[test]
    fn a_huge_string_length_inside_a_body_is_malformed_not_a_panic() {
        // Msg::Put (variant 1) with a key of 2^64 - 1 bytes, then of 2^38.
        for len in [[0xFF; 8], (1u64 << 38).to_le_bytes()] {
            let mut body = encode_body("c", &Frame { request_id: 3, body: Msg::Ping(0) }, MAX).unwrap();
            body.truncate(body.len() - 2);
            body.extend_from_slice(&[1, 0xFD]);
            body.extend_from_slice(&len);
            body.extend_from_slice(b"short");
            let err = decode_body::<Msg>("c", &body, MAX).unwrap_err();
            assert!(matches!(err.error, Error::Malformed(_)), "{err}");
            assert_eq!(err.request_id, Some(3));
        }
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let full = encoded("c", 1, Msg::Ping(5));
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(decode_one(&mut part).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn an_announced_length_is_never_reserved() {
        let mut c = WireCodec::<Msg, Msg>::new("c", 16 << 20);
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u32(15 << 20);
        buf.extend_from_slice(&[0; 10]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024, "capacity {} grew to the announced length", buf.capacity());
    }

    #[test]
    fn stream_frames_have_their_own_magic() {
        let frame = Frame { request_id: 4, body: Msg::Ping(2) };
        let body = encode_kind(FrameKind::Stream, "c", &frame, MAX).unwrap();
        assert_eq!(body[..4], STREAM_MAGIC);
        let (head, payload) = decode_head("c", &body, MAX).unwrap();
        assert_eq!(head, Head { kind: FrameKind::Stream, request_id: 4 });
        assert_eq!(decode_payload::<Msg>(4, payload).unwrap(), Msg::Ping(2));
        // A message decoder refuses it with its request id.
        assert_eq!(decode_body::<Msg>("c", &body, MAX).unwrap_err().request_id, Some(4));
    }

    #[test]
    fn oversized_length_ends_the_stream() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX as u32 + 1);
        assert_eq!(decode_one(&mut buf).unwrap_err(), Error::FrameTooLarge { len: MAX + 1, max: MAX });
    }

    #[test]
    fn oversized_message_is_refused_on_encode() {
        let mut buf = BytesMut::new();
        let big = Msg::Put { key: "k".into(), value: vec![0; MAX] };
        let err = codec("c").encode(Frame { request_id: 1, body: big }, &mut buf).unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { max: MAX, .. }), "{err}");
        assert!(buf.is_empty());
    }

    fn with_body(body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(body);
        buf
    }

    fn item_error(mut buf: BytesMut) -> FrameError {
        decode_one(&mut buf).unwrap().unwrap().unwrap_err()
    }

    #[test]
    fn each_bad_frame_has_its_own_error() {
        let good = encoded("c", 9, Msg::Ping(1));
        let body = &good[LEN_PREFIX..];

        let e = item_error(with_body(&body[..5]));
        assert_eq!(e.error, Error::TruncatedFrame { len: 5, needed: FIXED_HEADER });

        let mut bad_magic = body.to_vec();
        bad_magic[0] = b'X';
        assert_eq!(item_error(with_body(&bad_magic)).error, Error::BadMagic);

        let mut bad_version = body.to_vec();
        bad_version[4] = 99;
        let e = item_error(with_body(&bad_version));
        assert_eq!(e.error, Error::VersionMismatch { expected: PROTOCOL_VERSION, found: 99 });
        assert_eq!(e.request_id, Some(9));

        let e = item_error(encoded("other", 9, Msg::Ping(1)));
        assert_eq!(e.error, Error::ClusterMismatch { found: "other".into() });
        assert!(!e.error.to_string().contains("\"c\""), "never names our cluster: {}", e.error);
        assert_eq!(e.request_id, Some(9));

        let mut short_cid = body[..FIXED_HEADER].to_vec();
        short_cid[14] = 10;
        assert!(matches!(item_error(with_body(&short_cid)).error, Error::TruncatedFrame { .. }));

        let mut bad_payload = body[..FIXED_HEADER + 1].to_vec();
        bad_payload.push(200); // no such enum variant
        let e = item_error(with_body(&bad_payload));
        assert!(matches!(e.error, Error::Malformed(_)), "{e:?}");
        assert_eq!(e.request_id, Some(9));

        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(
            matches!(item_error(with_body(&trailing)).error, Error::Malformed(m) if m.contains("trailing"))
        );
    }

    #[test]
    fn a_bad_frame_does_not_break_the_next_one() {
        let mut buf = with_body(b"garbage garbage garbage");
        buf.extend_from_slice(&encoded("c", 3, Msg::Ping(3)));
        assert!(decode_one(&mut buf).unwrap().unwrap().is_err());
        assert_eq!(decode_one(&mut buf).unwrap().unwrap().unwrap().request_id, 3);
    }

    #[test]
    fn a_lying_length_inside_the_payload_does_not_allocate() {
        // A Vec<u8> that claims 2^60 elements in a 30-byte frame.
        let good = encoded("c", 1, Msg::Ping(1));
        let mut body = good[LEN_PREFIX..LEN_PREFIX + FIXED_HEADER + 1].to_vec();
        body.extend_from_slice(&[1, 1, b'k', 255, 0, 0, 0, 0, 0, 0, 0, 16]);
        assert!(matches!(item_error(with_body(&body)).error, Error::Malformed(_)));
    }

    proptest! {
        #[test]
        fn random_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut c = codec("c");
            // Every call consumes a frame, stops with an error, or waits for more.
            for _ in 0..bytes.len() + 1 {
                match c.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(decode_body::<Msg>("c", &body, MAX).is_err() || body.len() >= FIXED_HEADER);
        }

        #[test]
        fn random_payloads_after_a_good_header_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..128), id in any::<u64>()
        ) {
            let good = encoded("c", id, Msg::Ping(1));
            let mut body = good[LEN_PREFIX..LEN_PREFIX + FIXED_HEADER + 1].to_vec();
            body.extend_from_slice(&payload);
            if let Err(e) = decode_body::<Msg>("c", &body, MAX) {
                prop_assert_eq!(e.request_id, Some(id));
            }
        }

        #[test]
        fn roundtrip(id in any::<u64>(), key in ".{0,20}", value in proptest::collection::vec(any::<u8>(), 0..100)) {
            let msg = Msg::Put { key, value };
            let mut buf = encoded("c", id, msg.clone());
            prop_assert_eq!(decode_one(&mut buf).unwrap().unwrap().unwrap(), Frame { request_id: id, body: msg });
        }
    }
}
