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

/// What format 2 reads back as.
#[derive(Deserialize)]
struct KvStateIn2 {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    data: Vec<(String, BytesIn)>,
    revision: u64,
    short_ids: BTreeMap<MemberId, ShortId>,
    answered: VecDeque<(ClientRequestId, Result<WriteOutcome, Error>)>,
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
        let repr = match bytes.strip_prefix(FORMAT_2.as_slice()) {
            Some(body) => decode::<KvStateIn2>(body)?,
            None => {
                let old: KvStateIn = decode(bytes)?;
                let at = KeyMeta { create_revision: old.revision, mod_revision: old.revision };
                KvStateIn2 {
                    meta: old.data.iter().map(|(k, _)| (k.clone(), at)).collect(),
                    last_applied: old.last_applied,
                    last_membership: old.last_membership,
                    data: old.data,
                    revision: old.revision,
                    short_ids: old.short_ids,
                    answered: old.answered,
                }
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
            meta: repr.meta,
            short_ids: repr.short_ids,
            answered: repr.answered,
            answered_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::WriteRequest;

    fn set(key: &str, value: &[u8]) -> WriteRequest {
        WriteRequest::set(key, value.to_vec())
    }

    #[test]
    fn a_snapshot_of_the_format_before_key_revisions_still_reads() {
        let mut s = KvState::default();
        let _ = s.apply_write(&set("a", b"1"));
        let _ = s.apply_write(&set("b", b"2"));
        let old = encode(&KvStateOutV1 {
            last_applied: &s.last_applied,
            last_membership: &s.last_membership,
            data: s.data.iter().map(|(k, v)| (k.as_str(), BytesOut(v))).collect(),
            revision: s.revision,
            short_ids: &s.short_ids,
            answered: &s.answered,
        })
        .unwrap();
        let back = KvState::from_bytes(&old).unwrap();
        assert_eq!(back.data, s.data);
        assert_eq!(back.revision, 2);
        let at = KeyMeta { create_revision: 2, mod_revision: 2 };
        assert_eq!(back.meta.values().copied().collect::<Vec<_>>(), [at, at]);
    }

    /// Format 1, as members wrote it before per-key revisions.
    #[derive(Serialize)]
    struct KvStateOutV1<'a> {
        last_applied: &'a Option<LogId>,
        last_membership: &'a StoredMembership,
        data: Vec<(&'a str, BytesOut<'a>)>,
        revision: u64,
        short_ids: &'a BTreeMap<MemberId, ShortId>,
        answered: &'a VecDeque<(ClientRequestId, Result<WriteOutcome, Error>)>,
    }
}
