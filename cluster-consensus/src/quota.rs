//! The store's quotas: which writes are admitted, and where each check runs.
//!
//! Two places check, for two reasons:
//!
//! - **Admission**, before a write is proposed ([`admit`]), on the member
//!   that receives it: an empty key is refused, a key or value past this
//!   member's [`ConsensusLimits`], and a write that would grow the store past
//!   `max_store_bytes`. Nothing refused here reaches the log, so it costs no
//!   disk, no replication, no memory on the other members. The store size is
//!   this member's applied state, so writes still in flight may overshoot
//!   the store quota by what is in flight (bounded by the write batcher),
//!   as etcd's quota at its API layer does.
//! - **Apply** ([`check_entry`]), inside the state machine, for entries that
//!   reach the log anyway (another leader, an older version, a forged frame).
//!   A check in apply must decide the same on every member, or their states
//!   diverge. It depends only on the entry and constants: an empty key, or a
//!   key or value past [`ConsensusLimits::MAX_ENTRY_FIELD_BYTES`]. It does
//!   not use the configured limits, nor the store quota: the store size itself
//!   is deterministic (every member computes it from the same log), but the
//!   limit is each member's own configuration, and two members configured
//!   differently would apply the same entry differently. (Replicating the
//!   limits through the log would make a store-quota check in apply safe; a
//!   later change may do that, as etcd replicates its NOSPACE alarm.)
//!
//! Deletes, compare-and-sets that delete, and writes that do not grow the
//! store are always admitted, so a full store can be emptied. The cluster's
//! own keys (under `carbon-grid/`) are exempt from the store quota, not from
//! the key and value limits: they are a few hundred bytes per member, and a
//! store filled by users must not keep a member from joining or a departed
//! one from being cleaned up (who may write them is the service's
//! authorization, not a quota).
//!
//! The **quota alarm** ([`alarm`]) is on when the store is within one
//! largest write of its quota, which every member with the same limits sees
//! alike, or when this member refused a write for the store quota since the
//! store last shrank.

use cluster_core::{ConsensusLimits, Error, Quota, WriteOp, Writer};

/// What one key and value count for the store quota (core's definition).
pub use cluster_core::store::entry_bytes;

/// The check in apply: the same answer on every member for the same entry.
/// The operation's own rules (the cluster writes here: any key but the
/// empty one) and its sizes against the constant
/// [`ConsensusLimits::entry_bounds`].
pub fn check_entry(op: &WriteOp) -> Result<(), Error> {
    op.check(Writer::Cluster)?;
    if let WriteOp::Delete { key } | WriteOp::DeletePrefix { prefix: key } = op {
        // Core lets every delete through its size check (a key too long to
        // exist is not there); apply still bounds what an entry carries.
        let max = ConsensusLimits::MAX_ENTRY_FIELD_BYTES;
        if key.len() > max {
            return Err(Error::QuotaExceeded {
                quota: Quota::KeyBytes,
                size: key.len() as u64,
                limit: max as u64,
            });
        }
    }
    op.check_sizes(&ConsensusLimits::entry_bounds())
}

/// How many bytes the store grows by if `op` succeeds: [`WriteOp::growth`].
pub fn growth(value_len: impl Fn(&str) -> Option<usize>, op: &WriteOp) -> u64 {
    op.growth(value_len)
}

/// The admission check before proposing `op`, against this member's
/// `limits` and applied state: its `store_bytes` and `value_len` (see
/// [`WriteOp::growth`]). Who may write what is the service's
/// authorization; here the writer is the cluster.
pub fn admit(
    limits: &ConsensusLimits,
    store_bytes: u64,
    value_len: impl Fn(&str) -> Option<usize>,
    op: &WriteOp,
) -> Result<(), Error> {
    op.check(Writer::Cluster)?;
    op.check_sizes(limits)?;
    if op.key().is_none_or(cluster_core::keys::is_reserved) {
        return Ok(());
    }
    let grows = op.growth(value_len);
    let after = store_bytes.saturating_add(grows);
    if grows > 0 && after > limits.max_store_bytes {
        return Err(Error::QuotaExceeded {
            quota: Quota::StoreBytes,
            size: after,
            limit: limits.max_store_bytes,
        });
    }
    Ok(())
}

/// The store quota alarm (see the module doc); `refused` says whether this
/// member refused a write for the store quota since the store last shrank.
pub fn alarm(limits: &ConsensusLimits, store_bytes: u64, refused: bool) -> bool {
    let largest_write = (limits.max_key_bytes as u64).saturating_add(limits.max_value_bytes as u64);
    refused || store_bytes.saturating_add(largest_write) > limits.max_store_bytes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The applied state as admission reads it: values by key, and the bytes
    /// the quota counts.
    #[derive(Default)]
    struct Applied {
        data: BTreeMap<String, Vec<u8>>,
        store_bytes: u64,
    }

    impl Applied {
        fn admit(&self, l: &ConsensusLimits, op: &WriteOp) -> Result<(), Error> {
            admit(l, self.store_bytes, |k| self.data.get(k).map(Vec::len), op)
        }
    }

    fn set(key: &str, len: usize) -> WriteOp {
        WriteOp::Set { key: key.into(), value: vec![7; len] }
    }

    fn limits() -> ConsensusLimits {
        ConsensusLimits { max_key_bytes: 8, max_value_bytes: 100, max_store_bytes: 200, ..Default::default() }
    }

    fn state_with(writes: &[WriteOp]) -> Applied {
        let mut s = Applied::default();
        for op in writes {
            match op {
                WriteOp::Set { key, value } => {
                    s.data.insert(key.clone(), value.clone());
                }
                WriteOp::Delete { key } => {
                    s.data.remove(key);
                }
                other => unreachable!("not used here: {other:?}"),
            }
        }
        s.store_bytes = s.data.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        s
    }

    #[test]
    fn keys_and_values_past_the_limits_are_refused() {
        let s = Applied::default();
        let l = limits();
        assert_eq!(s.admit(&l, &set("k", 100)), Ok(()));
        assert_eq!(
            s.admit(&l, &set("k", 101)),
            Err(Error::QuotaExceeded { quota: Quota::ValueBytes, size: 101, limit: 100 })
        );
        assert!(matches!(
            s.admit(&l, &set("123456789", 1)),
            Err(Error::QuotaExceeded { quota: Quota::KeyBytes, size: 9, limit: 8 })
        ));
        let cas = WriteOp::CompareAndSet { key: "k".into(), expected: Some(vec![0; 101]), new: None };
        assert!(matches!(s.admit(&l, &cas), Err(Error::QuotaExceeded { quota: Quota::ValueBytes, .. })));
        assert!(matches!(s.admit(&l, &set("", 1)), Err(Error::BadRequest(_))));
        assert!(matches!(s.admit(&l, &WriteOp::Delete { key: String::new() }), Err(Error::BadRequest(_))));
        assert_eq!(s.admit(&l, &WriteOp::Delete { key: "123456789".into() }), Ok(()));
    }

    #[test]
    fn the_store_quota_counts_growth_only() {
        let l = limits();
        // 2 × (1 + 99) = 200 bytes: full.
        let s = state_with(&[set("a", 99), set("b", 99)]);
        assert_eq!(s.store_bytes, 200);
        assert_eq!(
            s.admit(&l, &set("c", 0)),
            Err(Error::QuotaExceeded { quota: Quota::StoreBytes, size: 201, limit: 200 })
        );
        assert_eq!(s.admit(&l, &set("a", 99)), Ok(()), "same size");
        assert_eq!(s.admit(&l, &set("a", 10)), Ok(()), "shrinks");
        assert_eq!(s.admit(&l, &WriteOp::Delete { key: "a".into() }), Ok(()));
        let cas_delete = WriteOp::CompareAndSet { key: "a".into(), expected: None, new: None };
        assert_eq!(s.admit(&l, &cas_delete), Ok(()));
        // After a delete there is room again.
        let s = state_with(&[set("a", 99), set("b", 99), WriteOp::Delete { key: "a".into() }]);
        assert_eq!(s.store_bytes, 100);
        assert_eq!(s.admit(&l, &set("c", 50)), Ok(()));
        // The cluster's own keys are not held back by users filling the store.
        let full = state_with(&[set("a", 99), set("b", 99)]);
        let l = ConsensusLimits { max_key_bytes: 64, ..l };
        assert!(matches!(full.admit(&l, &set("x", 20)), Err(Error::QuotaExceeded { .. })));
        assert_eq!(full.admit(&l, &set("carbon-grid/x", 20)), Ok(()));
        assert!(matches!(
            full.admit(&l, &set("carbon-grid/x", 101)),
            Err(Error::QuotaExceeded { quota: Quota::ValueBytes, .. })
        ));
    }

    #[test]
    fn the_alarm_is_on_within_one_largest_write_of_the_quota() {
        let l = limits(); // largest write: 8 + 100 bytes of 200
        assert!(!alarm(&l, 92, false));
        assert!(alarm(&l, 93, false));
        assert!(alarm(&l, 0, true));
    }

    #[test]
    fn apply_bounds_are_constants() {
        let max = ConsensusLimits::MAX_ENTRY_FIELD_BYTES;
        assert_eq!(check_entry(&set("k", 10)), Ok(()));
        assert!(matches!(check_entry(&set("", 1)), Err(Error::BadRequest(_))));
        assert!(matches!(
            check_entry(&set("k", max + 1)),
            Err(Error::QuotaExceeded { quota: Quota::ValueBytes, .. })
        ));
    }
}
