//! The apply of [`WriteOp::DeletePrefix`](cluster_core::WriteOp::DeletePrefix):
//! every key under the prefix deleted in one change, at one revision, with
//! one delete event per key. Which keys it deletes is core's definition
//! ([`WriteOp::deletes`]).

use cluster_core::{WatchEvent, WriteOp, WriteOutcome};

use crate::state_machine::KvState;

impl KvState {
    /// Deletes every key under `prefix` (as [`WriteOp::deletes`] says) at
    /// one new revision, and answers how many; no key, no new revision.
    /// Deterministic, as every apply: the same on every member.
    pub(crate) fn delete_prefix(&mut self, prefix: &str, events: &mut Vec<WatchEvent>) -> WriteOutcome {
        let doomed: Vec<String> = self
            .data
            .range(prefix.to_owned()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .filter(|k| WriteOp::deletes(prefix, k))
            .cloned()
            .collect();
        if doomed.is_empty() {
            return WriteOutcome::DeletedPrefix { deleted: 0 };
        }
        self.revision += 1;
        for key in &doomed {
            self.meta.remove(key);
            if let Some(old) = self.data.remove(key) {
                self.store_bytes = self.store_bytes.saturating_sub(crate::quota::entry_bytes(key, &old));
            }
            events.push(WatchEvent { key: key.clone(), value: None, revision: self.revision });
        }
        WriteOutcome::DeletedPrefix { deleted: doomed.len() as u64 }
    }
}

#[cfg(test)]
mod tests {
    use cluster_core::{ClientRequestId, MemberId, ShortId, WriteRequest, keys};
    use serde::Serialize;

    use super::*;
    use crate::encoding::{decode, encode};

    fn apply(s: &mut KvState, op: WriteOp) -> (Result<WriteOutcome, cluster_core::Error>, Vec<WatchEvent>) {
        s.apply_write(&WriteRequest { op, request_id: None })
    }

    fn set(s: &mut KvState, key: &str) {
        apply(s, WriteOp::Set { key: key.into(), value: b"v".to_vec() }).0.expect("a set");
    }

    #[test]
    fn every_key_under_the_prefix_goes_at_one_revision() {
        let mut s = KvState::default();
        for k in ["app/a", "app/b", "apps", "b", &keys::member_key(MemberId::generate())] {
            set(&mut s, k);
        }
        let before = s.store_bytes;
        let (outcome, events) = apply(&mut s, WriteOp::DeletePrefix { prefix: "app/".into() });
        assert_eq!(outcome, Ok(WriteOutcome::DeletedPrefix { deleted: 2 }));
        assert_eq!(s.revision, 6);
        let deleted: Vec<_> =
            events.iter().map(|e| (e.key.as_str(), e.value.is_none(), e.revision)).collect();
        assert_eq!(deleted, [("app/a", true, 6), ("app/b", true, 6)]);
        assert_eq!(s.data.keys().filter(|k| k.starts_with("app")).collect::<Vec<_>>(), ["apps"]);
        assert_eq!(s.store_bytes, before - 2 * 6);
        assert!(!s.meta.contains_key("app/a"));
        // Nothing under it: no change, no revision.
        let (outcome, events) = apply(&mut s, WriteOp::DeletePrefix { prefix: "app/".into() });
        assert_eq!(
            (outcome, events.len(), s.revision),
            (Ok(WriteOutcome::DeletedPrefix { deleted: 0 }), 0, 6)
        );
        // A prefix that covers the cluster's keys leaves them; the empty one is refused.
        let (outcome, _) = apply(&mut s, WriteOp::DeletePrefix { prefix: "".into() });
        assert!(matches!(outcome, Err(cluster_core::Error::BadRequest(_))));
        let (outcome, _) = apply(&mut s, WriteOp::DeletePrefix { prefix: "c".into() });
        assert_eq!(outcome, Ok(WriteOutcome::DeletedPrefix { deleted: 0 }));
        assert_eq!(s.data.len(), 3);
        let (outcome, _) = apply(&mut s, WriteOp::DeletePrefix { prefix: keys::MEMBERS_PREFIX.into() });
        assert_eq!(outcome, Ok(WriteOutcome::DeletedPrefix { deleted: 1 }));
    }

    /// `WriteOp` and `WriteOutcome` as they were before `DeletePrefix`:
    /// entries in logs and snapshots written then.
    #[derive(Serialize)]
    enum OldWriteOp {
        Set { key: String, value: Vec<u8> },
        Delete { key: String },
        CompareAndSet { key: String, expected: Option<Vec<u8>>, new: Option<Vec<u8>> },
        AllocateShortId { member: MemberId },
        ReleaseShortId { member: MemberId },
        AdvanceRevision { revision: u64 },
    }

    #[derive(Serialize)]
    enum OldWriteOutcome {
        #[allow(dead_code)]
        Set {
            created: bool,
        },
        #[allow(dead_code)]
        Delete {
            existed: bool,
        },
        #[allow(dead_code)]
        CompareAndSet(cluster_core::CasOutcome),
        ShortId(ShortId),
        #[allow(dead_code)]
        Released {
            held: bool,
        },
        Revision {
            revision: u64,
        },
    }

    #[test]
    fn entries_written_before_delete_prefix_still_decode() {
        let member = MemberId::generate();
        let old = [
            OldWriteOp::Set { key: "k".into(), value: vec![1] },
            OldWriteOp::Delete { key: "k".into() },
            OldWriteOp::CompareAndSet { key: "k".into(), expected: None, new: Some(vec![2]) },
            OldWriteOp::AllocateShortId { member },
            OldWriteOp::ReleaseShortId { member },
            OldWriteOp::AdvanceRevision { revision: 7 },
        ];
        let new = [
            WriteOp::Set { key: "k".into(), value: vec![1] },
            WriteOp::Delete { key: "k".into() },
            WriteOp::CompareAndSet { key: "k".into(), expected: None, new: Some(vec![2]) },
            WriteOp::AllocateShortId { member },
            WriteOp::ReleaseShortId { member },
            WriteOp::AdvanceRevision { revision: 7 },
        ];
        for (old, new) in old.iter().zip(new) {
            assert_eq!(decode::<WriteOp>(&encode(old).unwrap()).unwrap(), new);
        }
        let short = ShortId::new(3).unwrap();
        let outcome = decode::<WriteOutcome>(&encode(&OldWriteOutcome::ShortId(short)).unwrap()).unwrap();
        assert_eq!(outcome, WriteOutcome::ShortId(short));
        let outcome = decode::<WriteOutcome>(&encode(&OldWriteOutcome::Revision { revision: 9 }).unwrap());
        assert_eq!(outcome.unwrap(), WriteOutcome::Revision { revision: 9 });
        // And a request with its id, as the log holds it.
        let id = ClientRequestId::generate();
        let request =
            WriteRequest { op: WriteOp::DeletePrefix { prefix: "p/".into() }, request_id: Some(id) };
        assert_eq!(decode::<WriteRequest>(&encode(&request).unwrap()).unwrap(), request);
    }
}
