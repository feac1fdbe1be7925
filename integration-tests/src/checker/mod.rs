//! A linearizability checker for key-value histories recorded by
//! [`HistoryRecorder`](crate::history::HistoryRecorder).
//!
//! A history is linearizable if every operation can be given a single point in time
//! between its call and its return at which it takes effect, such that the points,
//! in order, form a legal run of the sequential model: one register per key, over byte
//! values, initially absent ([`step`] is the model). An operation with an
//! [`Unknown`](crate::history::Outcome::Unknown) outcome may take effect at any point
//! after its call, or never; a [`Failed`](crate::history::Outcome::Failed) one never
//! takes effect and is dropped, and so is a read of unknown outcome.
//!
//! # Algorithm
//!
//! Linearizability is compositional (Herlihy & Wing): a history is linearizable if
//! and only if each key's sub-history is. Each key is checked on its own, keys in
//! parallel on all cores.
//!
//! For one key, the search is Wing & Gong's, with the improvements of Lowe ("Testing
//! for linearizability", 2017) as implemented by Porcupine:
//!
//! - the calls and returns form one list in time order (at equal times calls come
//!   first, so the operations count as concurrent). An operation can take effect next
//!   if its call comes before the first return left in the list, that is, if it was
//!   called before every operation still to be placed returned;
//! - depth-first search: take the first such operation whose outcome the model
//!   accepts from the current state, lift its call and return out of the list, and go
//!   on; when the scan reaches a return, the operation returning there cannot be placed
//!   in time, so undo the last choice (dancing links put the entries back) and try the
//!   next candidate. The search stack is explicit, so a long history cannot overflow
//!   the thread's stack;
//! - memoization: the future of the search depends only on which operations are
//!   linearized and on the state, so each (linearized set, state) pair is visited at
//!   most once. Operations are indexed by call and the set is stored as the highest
//!   linearized index with the few indices below it that are not linearized, so memo
//!   entries stay small in long histories;
//! - an unknown operation has no return entry (it returns at infinity): it never forces
//!   a backtrack, and the search succeeds once every return is consumed, with any
//!   unknown operations left untaken.
//!
//! Three reductions, each sound because the option it drops is dominated by one kept:
//!
//! - an enabled read-only operation (a read, a failed compare-and-set, a delete that
//!   found nothing) is taken first and as the only option of its state: it changes
//!   nothing, so any completion that takes it later also works with it taken now;
//! - an unknown operation that would not change the state is never taken (leaving it
//!   out keeps every option it would give), and of several unknown operations with the
//!   same effect only the first called is tried at a state;
//! - before the search, an operation that observes a value no operation of the key
//!   writes is reported at once.
//!
//! On a violation the witness is shrunk to the shortest prefix in time that is still
//! not linearizable (a binary search over return times; operations still running at
//! the cut become unknown, which only relaxes the history, so the prefix fails only if
//! the whole history does).
//!
//! # Complexity
//!
//! Checking linearizability is NP-complete in general (Gibbons & Korach), and the
//! search is exponential in the worst case. With the memo, the states of one key with
//! `n` operations, `v` distinct values and at most `c` operations running at once
//! (counting unknown operations as running forever) are at most about `n · 2^c · v`,
//! and one search step costs `O(c + n/64)`. Histories of fault tests, with a few
//! clients, few unknown outcomes per key and a model that rejects most orders, take
//! close to `O(n · c)` steps: in a release build, 10,000 operations over 10 keys with
//! 16 clients and 10% unknown outcomes check in tens of milliseconds, and on a single
//! key with 1% unknown in about half a second. Proving a violation means exhausting the
//! search, which costs more than finding a linearization. Unknown outcomes are the
//! expensive part: every one that never took effect stays a candidate for the rest of
//! the key's history. A search that needs more than [`CheckOptions::max_steps_per_key`]
//! steps gives up with [`CheckResult::Unknown`] instead of hanging.
//!
//! ```
//! use integration_tests::checker::{check, CheckResult};
//! use integration_tests::history::{History, Op, Operation, Outcome};
//!
//! let op = |client, call, ret, op, outcome| Operation {
//!     client, key: "x".into(), op, call, ret: Some(ret), outcome,
//! };
//! let one = Some(b"1".to_vec());
//! // A write of 1, then a read that does not see it: a stale read.
//! let history = History::new(vec![
//!     op(1, 0, 10, Op::Set { value: b"1".to_vec() }, Outcome::SetOk { created: true }),
//!     op(2, 20, 30, Op::Get, Outcome::GetOk(None)),
//! ]);
//! assert!(matches!(check(&history), CheckResult::Violation { .. }));
//! // If the read overlaps the write, it may see the key absent.
//! let history = History::new(vec![
//!     op(1, 0, 10, Op::Set { value: b"1".to_vec() }, Outcome::SetOk { created: true }),
//!     op(2, 5, 30, Op::Get, Outcome::GetOk(None)),
//!     op(3, 15, 30, Op::Get, Outcome::GetOk(one)),
//! ]);
//! assert_eq!(check(&history), CheckResult::Linearizable);
//! ```

mod describe;
mod model;
mod search;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use model::step;
use search::{Prepared, Verdict, search};

use crate::history::{History, Operation, Outcome};

/// Limits of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Search steps (one step: one candidate operation tried, or one backtrack) after
    /// which the check of one key gives up with [`CheckResult::Unknown`].
    pub max_steps_per_key: u64,
    /// Shrink a violation's witness to the shortest failing prefix of the key's history.
    pub shrink: bool,
    /// Keys checked at once; 0 means one per available core.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { max_steps_per_key: 5_000_000, shrink: true, threads: 0 }
    }
}

impl CheckOptions {
    /// Sets [`CheckOptions::max_steps_per_key`].
    pub fn with_max_steps_per_key(mut self, max_steps_per_key: u64) -> Self {
        self.max_steps_per_key = max_steps_per_key;
        self
    }

    /// Sets [`CheckOptions::shrink`].
    pub fn with_shrink(mut self, shrink: bool) -> Self {
        self.shrink = shrink;
        self
    }

    /// Sets [`CheckOptions::threads`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history is linearizable.
    Linearizable,
    /// A key's history is not linearizable (the first such key in key order).
    Violation {
        /// The key.
        key: String,
        /// A sub-history of the key that is not linearizable on its own, in call order:
        /// the shortest failing prefix if shrinking is on, else the key's whole history
        /// without failed operations.
        ops: Vec<Operation>,
        /// What went wrong, in words: where the longest linearizable attempt got stuck.
        explanation: String,
    },
    /// The history is malformed (a return before its call, an outcome of another kind
    /// of operation): a bug of the test, not of the system.
    Malformed {
        /// The key.
        key: String,
        /// The problem.
        explanation: String,
    },
    /// No violation was found, but the search gave up on some keys.
    Unknown {
        /// The keys whose search ran out of steps.
        keys: Vec<String>,
        /// Why.
        explanation: String,
    },
}

impl CheckResult {
    /// True for [`CheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }

    /// True for [`CheckResult::Violation`].
    pub fn is_violation(&self) -> bool {
        matches!(self, CheckResult::Violation { .. })
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => write!(f, "linearizable"),
            CheckResult::Violation { key, ops, explanation } => {
                write!(
                    f,
                    "not linearizable: key {key:?} ({} operations in the witness): {explanation}",
                    ops.len()
                )
            }
            CheckResult::Malformed { key, explanation } => {
                write!(f, "malformed history of key {key:?}: {explanation}")
            }
            CheckResult::Unknown { explanation, .. } => write!(f, "unknown: {explanation}"),
        }
    }
}

/// Checks `history` with the default [`CheckOptions`].
pub fn check(history: &History) -> CheckResult {
    check_with(history, &CheckOptions::default())
}

/// Checks `history`, key by key (in parallel), with `options`.
pub fn check_with(history: &History, options: &CheckOptions) -> CheckResult {
    let keys: Vec<(&str, Vec<&Operation>)> = history.by_key().into_iter().collect();
    let verdicts = check_keys_in_parallel(&keys, options);
    let mut out_of_budget = Vec::new();
    for ((key, ops), verdict) in keys.iter().zip(verdicts) {
        match verdict {
            KeyVerdict::Linearizable => {}
            KeyVerdict::OutOfBudget => out_of_budget.push((*key).to_owned()),
            KeyVerdict::Malformed(explanation) => {
                return CheckResult::Malformed { key: (*key).to_owned(), explanation };
            }
            KeyVerdict::Violation(explanation) => {
                return violation(key, ops.iter().copied(), explanation, options);
            }
        }
    }
    if out_of_budget.is_empty() {
        CheckResult::Linearizable
    } else {
        let explanation = format!(
            "the search ran out of its {} steps on {} key(s): {}",
            options.max_steps_per_key,
            out_of_budget.len(),
            out_of_budget.join(", ")
        );
        CheckResult::Unknown { keys: out_of_budget, explanation }
    }
}

/// Checks the operations of one key with `options`. The key reported is that of the
/// first operation.
pub fn check_key<'a>(ops: impl IntoIterator<Item = &'a Operation>, options: &CheckOptions) -> CheckResult {
    let ops: Vec<&Operation> = ops.into_iter().collect();
    let key = ops.first().map(|op| op.key.as_str()).unwrap_or_default();
    match check_one(&ops, options.max_steps_per_key) {
        KeyVerdict::Linearizable => CheckResult::Linearizable,
        KeyVerdict::Malformed(explanation) => CheckResult::Malformed { key: key.to_owned(), explanation },
        KeyVerdict::OutOfBudget => CheckResult::Unknown {
            keys: vec![key.to_owned()],
            explanation: format!("the search ran out of its {} steps", options.max_steps_per_key),
        },
        KeyVerdict::Violation(explanation) => violation(key, ops.iter().copied(), explanation, options),
    }
}

enum KeyVerdict {
    Linearizable,
    Violation(String),
    Malformed(String),
    OutOfBudget,
}

/// Checks one key's operations within `max_steps` search steps.
fn check_one(ops: &[&Operation], max_steps: u64) -> KeyVerdict {
    let mut budget = max_steps;
    check_within(ops, &mut budget)
}

/// Checks one key's operations, taking search steps from `budget`.
fn check_within(ops: &[&Operation], budget: &mut u64) -> KeyVerdict {
    match Prepared::new(ops.iter().copied()) {
        Err(explanation) => KeyVerdict::Malformed(explanation),
        Ok(prepared) => match search(&prepared, budget) {
            Verdict::Linearizable => KeyVerdict::Linearizable,
            Verdict::Violation(explanation) => KeyVerdict::Violation(explanation),
            Verdict::OutOfBudget => KeyVerdict::OutOfBudget,
        },
    }
}

/// The verdict of each key, in order, checked on `options.threads` threads.
fn check_keys_in_parallel(keys: &[(&str, Vec<&Operation>)], options: &CheckOptions) -> Vec<KeyVerdict> {
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    }
    .min(keys.len());
    if threads <= 1 {
        return keys.iter().map(|(_, ops)| check_one(ops, options.max_steps_per_key)).collect();
    }
    let next = AtomicUsize::new(0);
    let verdicts: Mutex<Vec<Option<KeyVerdict>>> = Mutex::new((0..keys.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, ops)) = keys.get(index) else { break };
                    let verdict = check_one(ops, options.max_steps_per_key);
                    verdicts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index] = Some(verdict);
                }
            });
        }
    });
    // Every index below keys.len() was taken by a thread that stored its verdict (a
    // panic in a thread propagates out of the scope).
    let verdicts = verdicts.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    verdicts.into_iter().map(|verdict| verdict.unwrap_or(KeyVerdict::OutOfBudget)).collect()
}

/// The violation of one key, with its witness shrunk if the options say so.
fn violation<'a>(
    key: &str,
    ops: impl IntoIterator<Item = &'a Operation>,
    explanation: String,
    options: &CheckOptions,
) -> CheckResult {
    let mut ops: Vec<Operation> =
        ops.into_iter().filter(|op| !matches!(op.outcome, Outcome::Failed)).cloned().collect();
    ops.sort_by_key(|op| (op.call, op.ret.unwrap_or(u64::MAX)));
    let mut explanation = explanation;
    if options.shrink
        && let Some((prefix, prefix_explanation)) = shortest_failing_prefix(&ops, options)
    {
        explanation = format!(
            "{prefix_explanation}\n(the first {} of the key's {} operations already fail; \
             operations still running at the cut are taken as unknown)",
            prefix.len(),
            ops.len()
        );
        ops = prefix;
    }
    CheckResult::Violation { key: key.to_owned(), ops, explanation }
}

/// The history as seen at `cut`: operations called by then, those not returned by
/// then with an unknown outcome (reads of unknown outcome dropped).
fn prefix_at(ops: &[Operation], cut: u64) -> Vec<Operation> {
    ops.iter()
        .filter(|op| op.call <= cut)
        .filter_map(|op| {
            if op.ret.is_some_and(|ret| ret <= cut) {
                return Some(op.clone());
            }
            if op.op == crate::history::Op::Get {
                return None;
            }
            Some(Operation { ret: None, outcome: Outcome::Unknown, ..op.clone() })
        })
        .collect()
}

/// The shortest failing prefix of a failing history, found by binary search over the
/// return times, with the explanation of its failure. Failing is monotone in the cut:
/// a prefix is a relaxation of every longer one. Gives the shortest failing prefix
/// found when the budget runs out, `None` if none is found.
fn shortest_failing_prefix(ops: &[Operation], options: &CheckOptions) -> Option<(Vec<Operation>, String)> {
    let mut cuts: Vec<u64> =
        ops.iter().filter(|op| !op.outcome.is_unknown()).filter_map(|op| op.ret).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut best = None;
    // All the checks of the shrink share one key's budget.
    let mut budget = options.max_steps_per_key;
    let (mut low, mut high) = (0, cuts.len());
    // Invariant: the prefix at cuts[high] fails (or high is past the end: the whole history).
    while low < high {
        let mid = low + (high - low) / 2;
        let prefix = prefix_at(ops, cuts[mid]);
        match check_within(&prefix.iter().collect::<Vec<_>>(), &mut budget) {
            KeyVerdict::Violation(explanation) => {
                best = Some((prefix, explanation));
                high = mid;
            }
            KeyVerdict::OutOfBudget => break,
            KeyVerdict::Linearizable | KeyVerdict::Malformed(_) => low = mid + 1,
        }
    }
    best
}
