//! The bytes of a [`KvState`]: a snapshot's data. Format 2 (with per-key
//! revisions) starts with [`FORMAT_2`]; format 1, written before, still reads.

use std::collections::{BTreeMap, VecDeque};

use cluster_core::{ClientRequestId, Error, KeyMeta, MemberId, ShortId, WriteOutcome};
use serde::{Deserialize, Serialize};

use super::KvState;
use crate::encoding::{decode, encode};
use crate::typecfg::{LogId, StoredMembership};

/// The first bytes of a state in format 2 (with per-key revisions). Format 1
/// had no marker: its first byte is the `Option` tag of `last_applied` (0 or
/// 1), which this marker's first byte never is, so both stay readable.
const FORMAT_2: &[u8; 8] = b"CKVS\x00\x00\x00\x02";

/// The serialized form (bincode does not support `serde(skip)`). Values are
/// written as byte strings, in one piece, not byte by byte. Format 2: after
/// [`FORMAT_2`].
#[derive(Serialize)]
struct KvStateOut<'a> {
    last_applied: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    data: Vec<(&'a str, BytesOut<'a>)>,
    revision: u64,
    short_ids: &'a BTreeMap<MemberId, ShortId>,
    answered: &'a VecDeque<(ClientRequestId, Result<WriteOutcome, Error>)>,
    meta: &'a BTreeMap<String, KeyMeta>,
}

/// What format 2 reads back as: format 1's fields, then the per-key
/// revisions (bincode writes a struct's fields one after the other, with no
/// frame, so a nested struct reads the same bytes as its fields inline).
#[derive(Deserialize)]
struct KvStateIn2 {
    v1: KvStateIn,
    meta: BTreeMap<String, KeyMeta>,
}

/// What format 1 (before per-key revisions) reads back as.
#[derive(Deserialize)]
struct KvStateIn {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    data: Vec<(String, BytesIn)>,
    revision: u64,
    short_ids: BTreeMap<MemberId, ShortId>,
    answered: VecDeque<(ClientRequestId, Result<WriteOutcome, Error>)>,
}

struct BytesOut<'a>(&'a [u8]);

impl Serialize for BytesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct BytesIn(Vec<u8>);

impl<'de> Deserialize<'de> for BytesIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BytesIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BytesIn, E> {
                Ok(BytesIn(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<BytesIn, E> {
                Ok(BytesIn(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl KvState {
    /// The state as bytes (a snapshot's data).
    pub fn to_bytes(&self) -> Result<Vec<u8>, std::io::Error> {
        let body = encode(&KvStateOut {
            last_applied: &self.last_applied,
            last_membership: &self.last_membership,
            data: self.data.iter().map(|(k, v)| (k.as_str(), BytesOut(v))).collect(),
            revision: self.revision,
            short_ids: &self.short_ids,
            answered: &self.answered,
            meta: &self.meta,
        })?;
        let mut bytes = Vec::with_capacity(FORMAT_2.len() + body.len());
        bytes.extend_from_slice(FORMAT_2);
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// The state from bytes written by [`to_bytes`](Self::to_bytes).
    /// A state of format 1 (no per-key revisions) reads with every key's
    /// revisions set to the state's revision: each key was created and last
    /// changed at or before it, which is all that is known.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, std::io::Error> {
        let KvStateIn2 { v1: repr, meta } = match bytes.strip_prefix(FORMAT_2.as_slice()) {
            Some(body) => decode::<KvStateIn2>(body)?,
            None => {
                let v1: KvStateIn = decode(bytes)?;
                let at = KeyMeta { create_revision: v1.revision, mod_revision: v1.revision };
                KvStateIn2 { meta: v1.data.iter().map(|(k, _)| (k.clone(), at)).collect(), v1 }
            }
        };
        let answered_index = repr.answered.iter().cloned().collect();
        let data: BTreeMap<String, Vec<u8>> = repr.data.into_iter().map(|(k, v)| (k, v.0)).collect();
        let store_bytes = data.iter().map(|(k, v)| crate::quota::entry_bytes(k, v)).sum();
        Ok(KvState {
            store_bytes,
            last_applied: repr.last_applied,
            last_membership: repr.last_membership,
            data,
            revision: repr.revision,
            meta,
            short_ids: repr.short_ids,
            answered: repr.answered,
            answered_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state in format 1, before per-key revisions, as members wrote it:
    /// keys `a` = "1" and `b` = "2" at revision 2 and the two writes'
    /// answers. A frozen fixture, written once by the format-1 encoder and
    /// never again by this code: the bytes old snapshots hold.
    const FORMAT_1: &str = "00000000020161013101620132020002\
                            fe7c4b4b84cf29aa5aa72fc29f5052a201000001\
                            fea43feb479d3a3e948ca8c29f5052a201000001";

    fn bytes_of(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn a_snapshot_of_the_format_before_key_revisions_still_reads() {
        let back = KvState::from_bytes(&bytes_of(FORMAT_1)).unwrap();
        let data = BTreeMap::from([("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]);
        assert_eq!(back.data, data);
        assert_eq!(back.revision, 2);
        assert_eq!(back.answered.len(), 2);
        let at = KeyMeta { create_revision: 2, mod_revision: 2 };
        assert_eq!(back.meta.values().copied().collect::<Vec<_>>(), [at, at]);
    }

    /// A snapshot body cut short, with a byte changed, or claiming more
    /// than it holds: an error (or, for a change inside a value, another
    /// state), never a panic nor an allocation of what a length claims.
    #[test]
    fn a_corrupt_or_truncated_snapshot_is_an_error_not_a_panic() {
        let mut s = KvState::default();
        for (k, v) in [("a", &b"1"[..]), ("bb", b"22"), ("carbon-grid/x", b"333")] {
            let _ = s.apply_write(&cluster_core::WriteRequest::set(k, v.to_vec()));
        }
        let bytes = s.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                KvState::from_bytes(&bytes[..cut]).is_err(),
                "a snapshot cut at {cut} of {} read",
                bytes.len()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(KvState::from_bytes(&longer).is_err(), "a trailing byte was accepted");
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let _ = KvState::from_bytes(&bad);
            }
        }
        // A length prefix that claims 2^62 entries, after the marker.
        let mut huge = FORMAT_2.to_vec();
        huge.push(0); // no last_applied; a huge length follows where the membership starts
        huge.extend([0xff, 0, 0, 0, 0, 0, 0, 0, 0x40]);
        assert!(KvState::from_bytes(&huge).is_err());
        let mut huge_v1 = vec![0u8];
        huge_v1.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
        assert!(KvState::from_bytes(&huge_v1).is_err());
    }

    #[test]
    fn a_state_reads_back_as_it_was_written() {
        let mut s = KvState::default();
        let _ = s.apply_write(&cluster_core::WriteRequest::set("a", b"1".to_vec()));
        let _ = s.apply_write(&cluster_core::WriteRequest::set("b", b"2".to_vec()));
        let back = KvState::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert_eq!((back.data, back.revision, back.meta), (s.data, s.revision, s.meta));
        assert_eq!(back.answered, s.answered);
    }
}
