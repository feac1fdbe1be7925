//! The history of client operations that a fault test records and the
//! [checker](crate::checker) judges.
//!
//! Each key is a register over byte values (`None` = absent). Clients record the
//! call of an operation with [`HistoryRecorder::begin`] and its outcome with
//! [`HistoryRecorder::end`]; times are nanoseconds on one monotonic clock shared by
//! every clone of the recorder. A [`History`] serializes to JSON so that a failing
//! run can be dumped and checked again later ([`History::write_json`],
//! [`History::read_json`]).
//!
//! ```
//! use integration_tests::history::{HistoryRecorder, Op, Outcome};
//!
//! let recorder = HistoryRecorder::new();
//! let token = recorder.begin(1, "k", Op::Set { value: b"a".to_vec() });
//! recorder.end(token, Outcome::SetOk { created: true });
//! let history = recorder.history();
//! assert_eq!(history.operations.len(), 1);
//! assert!(integration_tests::checker::check(&history).is_linearizable());
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// An operation on one key's register.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Sets the value.
    Set {
        /// The value written.
        value: Vec<u8>,
    },
    /// A linearizable read. Stale or local reads give no guarantee and must not be recorded.
    Get,
    /// Deletes the key.
    Delete,
    /// Replaces the value with `new` if it equals `expected`.
    Cas {
        /// The value the key must hold (`None` = absent).
        expected: Option<Vec<u8>>,
        /// The value to write (`None` = delete).
        new: Option<Vec<u8>>,
    },
}

/// What a client learnt about an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// A [`Op::Set`] took effect.
    SetOk {
        /// True if the key did not exist before.
        created: bool,
    },
    /// A [`Op::Get`] returned this value.
    GetOk(Option<Vec<u8>>),
    /// A [`Op::Delete`] took effect.
    DeleteOk {
        /// True if the key existed before.
        existed: bool,
    },
    /// A [`Op::Cas`] was applied.
    CasOk {
        /// Whether the value matched and was replaced.
        succeeded: bool,
        /// The value after the operation.
        current: Option<Vec<u8>>,
    },
    /// The operation certainly did not take effect (for example a refused request).
    Failed,
    /// The outcome is unknown (a timeout, a lost connection): the operation may have
    /// taken effect at any time after its call, or never.
    Unknown,
}

impl Outcome {
    /// True for [`Outcome::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown)
    }
}

/// One operation of a history: who called what, when, and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client (one client runs one operation at a time).
    pub client: u64,
    /// The key.
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// When it was called, in nanoseconds since the recorder's start.
    pub call: u64,
    /// When it returned, in nanoseconds since the recorder's start; `None` if it never
    /// returned (the outcome is then [`Outcome::Unknown`]).
    pub ret: Option<u64>,
    /// What came back.
    pub outcome: Outcome,
}

/// A recorded history: operations on any keys, in the order they were called.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations.
    pub operations: Vec<Operation>,
}

impl History {
    /// A history of these operations.
    pub fn new(operations: Vec<Operation>) -> Self {
        History { operations }
    }

    /// The operations grouped by key; each group keeps the history's order.
    pub fn by_key(&self) -> BTreeMap<&str, Vec<&Operation>> {
        let mut groups: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
        for op in &self.operations {
            groups.entry(op.key.as_str()).or_default().push(op);
        }
        groups
    }

    /// The number of operations whose outcome is unknown.
    pub fn unknown_count(&self) -> usize {
        self.operations.iter().filter(|op| op.outcome.is_unknown()).count()
    }

    /// Writes the history as JSON to `path`, for a later replay of the check.
    pub fn write_json(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        serde_json::to_writer(&mut out, self)?;
        out.flush()
    }

    /// Reads a history written by [`History::write_json`].
    pub fn read_json(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let input = BufReader::new(File::open(path)?);
        Ok(serde_json::from_reader(input)?)
    }
}

/// Records the operations of many concurrent clients; clones share one history and
/// one clock.
#[derive(Debug, Clone)]
pub struct HistoryRecorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

/// An operation begun with [`HistoryRecorder::begin`], to be ended with
/// [`HistoryRecorder::end`]. An operation never ended stays [`Outcome::Unknown`].
#[derive(Debug)]
#[must_use = "end the operation with HistoryRecorder::end, or it is recorded as unknown"]
pub struct OpToken {
    index: usize,
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryRecorder {
    /// An empty recorder whose clock starts now.
    pub fn new() -> Self {
        HistoryRecorder {
            inner: Arc::new(RecorderInner { start: Instant::now(), operations: Mutex::new(Vec::new()) }),
        }
    }

    /// Records the call of `op` on `key` by `client`, now.
    pub fn begin(&self, client: u64, key: impl Into<String>, op: Op) -> OpToken {
        let key = key.into();
        let mut operations = self.inner.operations.lock().unwrap_or_else(PoisonError::into_inner);
        // Read the clock under the lock so that the history's order is the call order.
        let call = self.now();
        operations.push(Operation { client, key, op, call, ret: None, outcome: Outcome::Unknown });
        OpToken { index: operations.len() - 1 }
    }

    /// Records the outcome of a begun operation, returning now. An
    /// [`Outcome::Unknown`] keeps no return time: the operation may take effect later.
    pub fn end(&self, token: OpToken, outcome: Outcome) {
        let ret = self.now();
        let mut operations = self.inner.operations.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(operation) = operations.get_mut(token.index) {
            operation.ret = if outcome.is_unknown() { None } else { Some(ret) };
            operation.outcome = outcome;
        }
    }

    /// A copy of the history so far; operations not yet ended are unknown.
    pub fn history(&self) -> History {
        History::new(self.inner.operations.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Nanoseconds since the recorder's start.
    fn now(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_records_calls_returns_and_unknowns() {
        let recorder = HistoryRecorder::new();
        let clone = recorder.clone();
        let a = recorder.begin(1, "x", Op::Set { value: vec![1] });
        let b = clone.begin(2, "y", Op::Get);
        let c = clone.begin(3, "x", Op::Delete);
        recorder.end(a, Outcome::SetOk { created: true });
        clone.end(b, Outcome::Unknown);
        let _pending = c;

        let history = recorder.history();
        assert_eq!(history.operations.len(), 3);
        let [a, b, c] = &history.operations[..] else { panic!("three operations") };
        assert!(a.ret.is_some_and(|ret| ret >= a.call));
        assert_eq!(a.outcome, Outcome::SetOk { created: true });
        assert_eq!((b.ret, &b.outcome), (None, &Outcome::Unknown));
        assert_eq!((c.ret, &c.outcome), (None, &Outcome::Unknown));
        assert!(a.call <= b.call && b.call <= c.call);
        assert_eq!(history.unknown_count(), 2);
        let groups = history.by_key();
        assert_eq!(groups.keys().copied().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(groups["x"].len(), 2);
    }

    #[test]
    fn history_round_trips_through_json() {
        let history = History::new(vec![Operation {
            client: 7,
            key: "k".into(),
            op: Op::Cas { expected: None, new: Some(b"v".to_vec()) },
            call: 10,
            ret: Some(20),
            outcome: Outcome::CasOk { succeeded: true, current: Some(b"v".to_vec()) },
        }]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.json");
        history.write_json(&path).expect("write");
        assert_eq!(History::read_json(&path).expect("read"), history);
    }
}
