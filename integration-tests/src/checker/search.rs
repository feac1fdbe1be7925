//! The search for a linearization of one key's history: Wing–Gong depth-first search
//! over a doubly linked list of call and return entries (Lowe's formulation, as in
//! Porcupine), with a memo of visited (linearized set, state) pairs.

use std::collections::{HashMap, HashSet};

use super::describe::{describe_op, describe_value};
use super::model::Step;
use crate::history::Operation;

/// End of the entry list.
const NIL: usize = usize::MAX;

/// How many of the last linearized operations an explanation shows.
const TAIL: usize = 5;

/// One key's operations, ready for the search.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    /// The operations that can change or reveal the state, sorted by call.
    pub(crate) ops: Vec<&'a Operation>,
    /// The model step of each operation, over interned values.
    steps: Vec<Step<u32>>,
    /// The bytes of each interned value id.
    values: Vec<&'a [u8]>,
}

impl<'a> Prepared<'a> {
    /// Drops failed operations and reads of unknown outcome, interns values, and
    /// sorts by call; `Err` explains the first malformed operation.
    pub(crate) fn new(ops: impl IntoIterator<Item = &'a Operation>) -> Result<Self, String> {
        let mut ids: HashMap<&'a [u8], u32> = HashMap::new();
        let mut values: Vec<&'a [u8]> = Vec::new();
        let mut kept: Vec<(&'a Operation, Step<u32>)> = Vec::new();
        for op in ops {
            if op.ret.is_some_and(|ret| ret < op.call) {
                return Err(format!("malformed operation: returns before its call: {}", describe_op(op)));
            }
            let intern = |bytes: &'a [u8]| {
                *ids.entry(bytes).or_insert_with(|| {
                    values.push(bytes);
                    // Histories have far fewer than 2^32 distinct values.
                    u32::try_from(values.len() - 1).unwrap_or(u32::MAX)
                })
            };
            match Step::from_op(&op.op, &op.outcome, intern) {
                Ok(Some(step)) => kept.push((op, step)),
                Ok(None) => {}
                Err(_) => {
                    return Err(format!(
                        "malformed operation: the outcome does not belong to the operation: {}",
                        describe_op(op)
                    ));
                }
            }
        }
        kept.sort_by_key(|(op, _)| (op.call, op.ret.unwrap_or(u64::MAX)));
        let (ops, steps) = kept.into_iter().unzip();
        Ok(Prepared { ops, steps, values })
    }

    /// Explains the first operation that observes a value no operation writes, if any:
    /// a violation found without a search.
    fn value_never_written(&self) -> Option<String> {
        let mut written = vec![false; self.values.len()];
        for step in &self.steps {
            match *step {
                Step::Set { value, .. } | Step::Cas { new: Some(value), .. } => {
                    written[value as usize] = true
                }
                _ => {}
            }
        }
        let observed = |step: &Step<u32>| match *step {
            Step::Get { value } => value,
            Step::Cas { result: Some((_, current)), .. } => current,
            _ => None,
        };
        let (op, value) = self.ops.iter().zip(&self.steps).find_map(|(op, step)| {
            observed(step).filter(|value| !written[*value as usize]).map(|value| (op, value))
        })?;
        Some(format!(
            "this operation observes {}, a value that no operation of the key writes:\n    {}",
            self.describe_state(Some(value)),
            describe_op(op)
        ))
    }

    fn describe_state(&self, state: Option<u32>) -> String {
        describe_value(state.and_then(|id| self.values.get(id as usize).copied()))
    }
}

/// The verdict of a search.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; the explanation says where the longest attempt got stuck.
    Violation(String),
    /// The budget of search steps ran out first.
    OutOfBudget,
}

/// The deepest dead end seen, for the explanation.
struct DeadEnd {
    depth: usize,
    blocked: usize,
    tail: Vec<usize>,
    state: Option<u32>,
}

/// One call or return entry of the list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_return: bool,
}

/// The entries in time order as a doubly linked list that operations are lifted out of
/// and put back into in last-out-first-in order (dancing links).
struct EntryList {
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<usize>,
    head: usize,
}

impl EntryList {
    fn new(prepared: &Prepared<'_>) -> Self {
        let n = prepared.ops.len();
        let mut timed: Vec<(u64, Entry)> = Vec::with_capacity(2 * n);
        for (op, (operation, step)) in prepared.ops.iter().zip(&prepared.steps).enumerate() {
            timed.push((operation.call, Entry { op, is_return: false }));
            // An unknown outcome returns at infinity: no return entry ever forces it.
            if !step.is_unknown() {
                timed.push((operation.ret.unwrap_or(u64::MAX), Entry { op, is_return: true }));
            }
        }
        // At equal times calls come first: the operations count as concurrent.
        timed.sort_by_key(|(time, entry)| (*time, entry.is_return, entry.op));
        let len = timed.len();
        let head = len;
        let mut call_of = vec![NIL; n];
        let mut return_of = vec![NIL; n];
        let mut entries = Vec::with_capacity(len);
        for (index, (_, entry)) in timed.into_iter().enumerate() {
            if entry.is_return {
                return_of[entry.op] = index;
            } else {
                call_of[entry.op] = index;
            }
            entries.push(entry);
        }
        let next = (0..=len).map(|i| {
            if i + 1 < len {
                i + 1
            } else if i == head && len > 0 {
                0
            } else {
                NIL
            }
        });
        let prev = (0..=len).map(|i| {
            if i == 0 {
                head
            } else if i < len {
                i - 1
            } else {
                NIL
            }
        });
        EntryList { entries, next: next.collect(), prev: prev.collect(), call_of, return_of, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if self.return_of[op] != NIL {
            self.unlink(self.return_of[op]);
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.return_of[op] != NIL {
            self.relink(self.return_of[op]);
        }
        self.relink(self.call_of[op]);
    }
}

/// Searches for a linearization of `prepared`, taking steps from `budget` (one step:
/// one candidate tried, or one backtrack) and giving up when it is spent.
pub(crate) fn search(prepared: &Prepared<'_>, budget: &mut u64) -> Verdict {
    if let Some(explanation) = prepared.value_never_written() {
        return Verdict::Violation(explanation);
    }
    let mut search = Search::new(prepared);
    let mut cursor = search.list.first();
    let mut new_level = true;
    loop {
        let Some(left) = budget.checked_sub(1) else {
            return Verdict::OutOfBudget;
        };
        *budget = left;
        // At a new state, an enabled read-only operation is taken first and alone: it
        // reads the state without changing it, so any completion that takes it later
        // also works with it taken now, and if taking it fails, so does this state.
        if new_level {
            new_level = false;
            if let Some(op) = search.enabled_read_only() {
                if search.take(op, true) == Taken::Yes {
                    cursor = search.list.first();
                    new_level = true;
                } else {
                    match search.backtrack(op) {
                        Some(next) => cursor = next,
                        None => return Verdict::Violation(search.explain()),
                    }
                }
                continue;
            }
        }
        if cursor == NIL {
            // Every return is consumed; unknown operations left over never took effect.
            return Verdict::Linearizable;
        }
        let Entry { op, is_return } = search.list.entries[cursor];
        if is_return {
            // `op` must take effect before it returns, and nothing left makes it fit.
            match search.backtrack(op) {
                Some(next) => cursor = next,
                None => return Verdict::Violation(search.explain()),
            }
        } else if search.take(op, false) == Taken::Yes {
            cursor = search.list.first();
            new_level = true;
        } else {
            cursor = search.list.next[cursor];
        }
    }
}

/// Whether [`Search::take`] took the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Taken: the search goes on from the new state.
    Yes,
    /// Not taken: its outcome does not fit, or the new state was already explored.
    No,
}

/// One linearized operation on the search stack.
struct Frame {
    op: usize,
    /// The state before it.
    before: Option<u32>,
    /// Taken as the only option of its level (an enabled read-only operation).
    forced: bool,
    /// The unknown steps tried at its level before it, itself included.
    tried_unknown: Vec<Step<u32>>,
}

/// The state of the depth-first search.
struct Search<'p, 'a> {
    prepared: &'p Prepared<'a>,
    list: EntryList,
    linearized: Vec<u64>,
    memo: HashSet<Box<[u32]>>,
    memo_key: Vec<u32>,
    stack: Vec<Frame>,
    state: Option<u32>,
    dead_end: Option<DeadEnd>,
    /// The unknown steps tried so far at the current level.
    tried_unknown: Vec<Step<u32>>,
}

impl<'p, 'a> Search<'p, 'a> {
    fn new(prepared: &'p Prepared<'a>) -> Self {
        Search {
            prepared,
            list: EntryList::new(prepared),
            linearized: vec![0u64; prepared.ops.len().div_ceil(64)],
            memo: HashSet::new(),
            memo_key: Vec::new(),
            stack: Vec::new(),
            state: None,
            dead_end: None,
            tried_unknown: Vec::new(),
        }
    }

    /// The first operation that can take effect now, reads the state without changing
    /// it, and whose outcome fits the state.
    fn enabled_read_only(&self) -> Option<usize> {
        let mut cursor = self.list.first();
        while cursor != NIL {
            let Entry { op, is_return } = self.list.entries[cursor];
            if is_return {
                return None;
            }
            let step = &self.prepared.steps[op];
            if step.is_read_only() && step.apply(self.state).is_some() {
                return Some(op);
            }
            cursor = self.list.next[cursor];
        }
        None
    }

    /// Linearizes `op` next if its outcome fits the state and the new state is not
    /// explored yet.
    fn take(&mut self, op: usize, forced: bool) -> Taken {
        let step = &self.prepared.steps[op];
        let Some(after) = step.apply(self.state) else {
            return Taken::No;
        };
        // An unknown operation that changes nothing is never worth taking: leaving it
        // out keeps every option it would give.
        if step.is_unknown() && after == self.state {
            return Taken::No;
        }
        // Unknown operations with the same step are interchangeable, except that the one
        // called first can take effect earlier: taking a later one never helps more.
        if step.is_unknown() {
            if self.tried_unknown.contains(step) {
                return Taken::No;
            }
            self.tried_unknown.push(*step);
        }
        set_bit(&mut self.linearized, op, true);
        encode_memo_key(&self.linearized, after, &mut self.memo_key);
        if self.memo.contains(self.memo_key.as_slice()) {
            set_bit(&mut self.linearized, op, false);
            return Taken::No;
        }
        self.memo.insert(self.memo_key.as_slice().into());
        let tried_unknown = std::mem::take(&mut self.tried_unknown);
        self.stack.push(Frame { op, before: self.state, forced, tried_unknown });
        self.state = after;
        self.list.lift(op);
        Taken::Yes
    }

    /// Undoes the last choice after `blocked` could not be placed; the entry to try
    /// next, or `None` if there is no choice left to undo.
    fn backtrack(&mut self, blocked: usize) -> Option<usize> {
        if self.dead_end.as_ref().is_none_or(|dead_end| self.stack.len() > dead_end.depth) {
            let tail =
                self.stack[self.stack.len().saturating_sub(TAIL)..].iter().map(|frame| frame.op).collect();
            self.dead_end = Some(DeadEnd { depth: self.stack.len(), blocked, tail, state: self.state });
        }
        loop {
            let frame = self.stack.pop()?;
            self.state = frame.before;
            set_bit(&mut self.linearized, frame.op, false);
            self.list.unlift(frame.op);
            self.tried_unknown = frame.tried_unknown;
            // A forced operation was the only option of its level: the level failed too.
            if !frame.forced {
                return Some(self.list.next[self.list.call_of[frame.op]]);
            }
        }
    }

    fn explain(&self) -> String {
        explain(self.prepared, self.dead_end.as_ref())
    }
}

fn set_bit(bits: &mut [u64], index: usize, on: bool) {
    if on {
        bits[index / 64] |= 1 << (index % 64);
    } else {
        bits[index / 64] &= !(1 << (index % 64));
    }
}

/// Encodes (linearized set, state) compactly: the state, one past the highest
/// linearized index, then the indices below it that are not linearized. Operations
/// are indexed by call, so the set is a prefix with a few holes (the ones still
/// running, and unknown ones never taken) and the key stays short however long the
/// history is.
fn encode_memo_key(bits: &[u64], state: Option<u32>, out: &mut Vec<u32>) {
    out.clear();
    out.push(state.map_or(0, |id| id.saturating_add(1)));
    let Some(last) = bits.iter().rposition(|word| *word != 0) else {
        out.push(0);
        return;
    };
    let used = 64 - bits[last].leading_zeros() as usize;
    out.push(index_u32(last * 64 + used));
    for (word_index, word) in bits[..=last].iter().enumerate() {
        let mut holes = !word;
        if word_index == last && used < 64 {
            holes &= (1u64 << used) - 1;
        }
        while holes != 0 {
            out.push(index_u32(word_index * 64 + holes.trailing_zeros() as usize));
            holes &= holes - 1;
        }
    }
}

fn index_u32(index: usize) -> u32 {
    // A key with 2^32 operations would not fit in memory anyway.
    u32::try_from(index).unwrap_or(u32::MAX)
}

fn explain(prepared: &Prepared<'_>, dead_end: Option<&DeadEnd>) -> String {
    let n = prepared.ops.len();
    let Some(dead_end) = dead_end else {
        return format!("no linearization of these {n} operations exists");
    };
    let mut text = format!(
        "no linearization exists. The longest linearizable start takes {} of the {n} operations{}",
        dead_end.depth,
        if dead_end.tail.is_empty() { "".to_owned() } else { ", ending with:".to_owned() }
    );
    for op in &dead_end.tail {
        text.push_str("\n    ");
        text.push_str(&describe_op(prepared.ops[*op]));
    }
    text.push_str(&format!(
        "\nThe value is then {}, and this operation cannot take effect before it returns, \
         whatever the order of the operations running with it:\n    {}",
        prepared.describe_state(dead_end.state),
        describe_op(prepared.ops[dead_end.blocked])
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_key_lists_holes_below_the_highest_linearized_op() {
        let mut bits = vec![0u64; 3];
        let mut key = Vec::new();
        encode_memo_key(&bits, None, &mut key);
        assert_eq!(key, [0, 0]);
        for i in (0..130).filter(|i| *i != 3 && *i != 70) {
            set_bit(&mut bits, i, true);
        }
        encode_memo_key(&bits, Some(4), &mut key);
        assert_eq!(key, [5, 130, 3, 70]);
        set_bit(&mut bits, 63, false);
        set_bit(&mut bits, 129, false);
        set_bit(&mut bits, 128, false);
        encode_memo_key(&bits, Some(0), &mut key);
        assert_eq!(key, [1, 128, 3, 63, 70]);
    }
}
