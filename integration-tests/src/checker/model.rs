//! The sequential specification of one key: a register over byte values, initially
//! absent. One implementation, generic over how a value is represented, serves both
//! the public [`step`] (owned bytes) and the search (interned value ids).

use crate::history::{Op, Outcome};

/// One operation with what its outcome requires, over values of type `V`.
/// `None` in an outcome field means the outcome is unknown: the effect applies and
/// nothing is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<V> {
    /// Set to `value`; `created` is true if the key was absent.
    Set { value: V, created: Option<bool> },
    /// A read that returned `value`.
    Get { value: Option<V> },
    /// Delete; `existed` is true if the key was present.
    Delete { existed: Option<bool> },
    /// Compare-and-set; `result` is (succeeded, value after).
    Cas { expected: Option<V>, new: Option<V>, result: Option<(bool, Option<V>)> },
}

/// Why an operation cannot enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch;

fn opt<'o, V>(value: &'o Option<Vec<u8>>, intern: &mut impl FnMut(&'o [u8]) -> V) -> Option<V> {
    value.as_deref().map(intern)
}

impl<V: Copy + Eq> Step<V> {
    /// The model step of `op` with `outcome`, with values mapped by `intern`.
    /// `Ok(None)` for operations that cannot change or reveal the state (failed
    /// operations, reads with an unknown outcome); `Err` if the outcome is not one
    /// the operation can have.
    pub(crate) fn from_op<'o>(
        op: &'o Op,
        outcome: &'o Outcome,
        mut intern: impl FnMut(&'o [u8]) -> V,
    ) -> Result<Option<Self>, Mismatch> {
        let step = match (op, outcome) {
            (_, Outcome::Failed) | (Op::Get, Outcome::Unknown) => return Ok(None),
            (Op::Set { value }, Outcome::SetOk { created }) => {
                Step::Set { value: intern(value), created: Some(*created) }
            }
            (Op::Set { value }, Outcome::Unknown) => Step::Set { value: intern(value), created: None },
            (Op::Get, Outcome::GetOk(value)) => Step::Get { value: opt(value, &mut intern) },
            (Op::Delete, Outcome::DeleteOk { existed }) => Step::Delete { existed: Some(*existed) },
            (Op::Delete, Outcome::Unknown) => Step::Delete { existed: None },
            (Op::Cas { expected, new }, Outcome::CasOk { succeeded, current }) => Step::Cas {
                expected: opt(expected, &mut intern),
                new: opt(new, &mut intern),
                result: Some((*succeeded, opt(current, &mut intern))),
            },
            (Op::Cas { expected, new }, Outcome::Unknown) => {
                Step::Cas { expected: opt(expected, &mut intern), new: opt(new, &mut intern), result: None }
            }
            _ => return Err(Mismatch),
        };
        Ok(Some(step))
    }

    /// The state after this step from `state`, or `None` if its outcome is impossible
    /// from `state`.
    pub(crate) fn apply(&self, state: Option<V>) -> Option<Option<V>> {
        match *self {
            Step::Set { value, created } => {
                (created.is_none_or(|created| created == state.is_none())).then_some(Some(value))
            }
            Step::Get { value } => (value == state).then_some(state),
            Step::Delete { existed } => {
                (existed.is_none_or(|existed| existed == state.is_some())).then_some(None)
            }
            Step::Cas { expected, new, result } => {
                let matched = state == expected;
                let after = if matched { new } else { state };
                match result {
                    None => Some(after),
                    Some((succeeded, current)) => (succeeded == matched && current == after).then_some(after),
                }
            }
        }
    }

    /// True if this step has an unknown outcome (it may be left out of a linearization).
    pub(crate) fn is_unknown(&self) -> bool {
        match self {
            Step::Set { created, .. } => created.is_none(),
            Step::Get { .. } => false,
            Step::Delete { existed } => existed.is_none(),
            Step::Cas { result, .. } => result.is_none(),
        }
    }

    /// True if this step leaves the state unchanged from every state its outcome
    /// allows: a read, a failed compare-and-set, a delete that found nothing.
    pub(crate) fn is_read_only(&self) -> bool {
        match self {
            Step::Get { .. } | Step::Delete { existed: Some(false) } => true,
            Step::Cas { result: Some((false, _)), .. } => true,
            Step::Cas { expected, new, result: Some((true, _)) } => expected == new,
            Step::Set { .. } | Step::Delete { .. } | Step::Cas { result: None, .. } => false,
        }
    }
}

/// The register's state after `op` with `outcome` from `state`, or `None` if that
/// outcome is impossible from `state` (a read of another value, `created` although the
/// key existed, a compare-and-set whose success does not match `expected` or whose
/// `current` is not the value after it, an outcome of another kind of operation).
///
/// [`Outcome::Unknown`] applies the operation's effect and checks nothing;
/// [`Outcome::Failed`] has no effect.
///
/// ```
/// use integration_tests::checker::step;
/// use integration_tests::history::{Op, Outcome};
///
/// let set = Op::Set { value: b"a".to_vec() };
/// assert_eq!(step(&None, &set, &Outcome::SetOk { created: true }), Some(Some(b"a".to_vec())));
/// assert_eq!(step(&Some(b"b".to_vec()), &set, &Outcome::SetOk { created: true }), None);
/// ```
pub fn step(state: &Option<Vec<u8>>, op: &Op, outcome: &Outcome) -> Option<Option<Vec<u8>>> {
    let Ok(step) = Step::from_op(op, outcome, |bytes| bytes) else {
        return None;
    };
    let Some(step) = step else {
        return Some(state.clone());
    };
    step.apply(state.as_deref()).map(|after| after.map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn set_checks_created() {
        let set = Op::Set { value: b"a".to_vec() };
        assert_eq!(step(&None, &set, &Outcome::SetOk { created: true }), Some(v("a")));
        assert_eq!(step(&None, &set, &Outcome::SetOk { created: false }), None);
        assert_eq!(step(&v("b"), &set, &Outcome::SetOk { created: false }), Some(v("a")));
        assert_eq!(step(&v("b"), &set, &Outcome::Unknown), Some(v("a")));
    }

    #[test]
    fn get_and_delete() {
        assert_eq!(step(&v("a"), &Op::Get, &Outcome::GetOk(v("a"))), Some(v("a")));
        assert_eq!(step(&v("a"), &Op::Get, &Outcome::GetOk(None)), None);
        assert_eq!(step(&v("a"), &Op::Delete, &Outcome::DeleteOk { existed: true }), Some(None));
        assert_eq!(step(&None, &Op::Delete, &Outcome::DeleteOk { existed: true }), None);
        assert_eq!(step(&None, &Op::Delete, &Outcome::DeleteOk { existed: false }), Some(None));
    }

    #[test]
    fn cas_checks_success_and_current() {
        let cas = Op::Cas { expected: v("a"), new: v("b") };
        let ok = |succeeded, current| Outcome::CasOk { succeeded, current };
        assert_eq!(step(&v("a"), &cas, &ok(true, v("b"))), Some(v("b")));
        assert_eq!(step(&v("a"), &cas, &ok(true, v("a"))), None);
        assert_eq!(step(&v("c"), &cas, &ok(true, v("b"))), None);
        assert_eq!(step(&v("c"), &cas, &ok(false, v("c"))), Some(v("c")));
        assert_eq!(step(&v("a"), &cas, &ok(false, v("a"))), None);
        assert_eq!(step(&v("a"), &cas, &Outcome::Unknown), Some(v("b")));
        assert_eq!(step(&v("c"), &cas, &Outcome::Unknown), Some(v("c")));
        let cas_delete = Op::Cas { expected: v("a"), new: None };
        assert_eq!(step(&v("a"), &cas_delete, &ok(true, None)), Some(None));
    }

    #[test]
    fn failed_has_no_effect_and_mismatched_outcomes_are_impossible() {
        assert_eq!(step(&v("a"), &Op::Delete, &Outcome::Failed), Some(v("a")));
        assert_eq!(step(&v("a"), &Op::Delete, &Outcome::GetOk(None)), None);
    }
}
