//! The state machine refuses, inside apply, an entry past the constant
//! bounds (`quota::check_entry`), whoever proposed it: nothing changes and
//! no watcher hears of it, the same on every member.

use cluster_consensus::testsuite::KvState;
use cluster_core::{ConsensusLimits, Error, Quota, WriteOp, WriteRequest};

fn apply(state: &mut KvState, op: WriteOp) -> Result<(), Error> {
    let (outcome, events) = state.apply_write(&WriteRequest { op, request_id: None });
    if outcome.is_err() {
        assert!(events.is_empty(), "a refused write was announced to watchers");
    }
    outcome.map(drop)
}

#[test]
fn apply_refuses_what_the_constant_bounds_refuse_and_changes_nothing() {
    let max = ConsensusLimits::MAX_ENTRY_FIELD_BYTES;
    let mut s = KvState::default();
    let empty_key = WriteOp::Set { key: String::new(), value: vec![1] };
    assert!(matches!(apply(&mut s, empty_key), Err(Error::BadRequest(_))));
    let too_big = WriteOp::Set { key: "k".into(), value: vec![0; max + 1] };
    assert!(matches!(apply(&mut s, too_big), Err(Error::QuotaExceeded { quota: Quota::ValueBytes, .. })));
    assert_eq!((s.revision, s.store_bytes, s.data.len()), (0, 0, 0));
    // At the bound itself the write goes through.
    assert_eq!(apply(&mut s, WriteOp::Set { key: "k".into(), value: vec![0; max] }), Ok(()));
    assert_eq!(s.revision, 1);
}
