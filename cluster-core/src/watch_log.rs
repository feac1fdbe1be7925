//! The watch log: the recent changes of a store, which every [`Watch`] reads
//! through its own cursor.
//!
//! Nothing is copied per watcher: the log keeps each change once, bounded in
//! count and bytes, and a watch is a position in it. A watch from a past
//! revision replays by walking the log from there (no copy of the history
//! is taken when it starts), then goes on with the live changes with no gap
//! and no repeat. A watcher that reads too slowly cannot make the log hold
//! more: once the changes it has not read yet are forgotten (the log's byte
//! or count bound) or more than the live capacity behind, it gets
//! [`Error::Lagged`] and goes on from the oldest change still held.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::WatchEvent;

/// A watch on a key prefix: every applied change under it, in revision order.
pub struct Watch {
    prefix: String,
    /// `None` once the watch ended (or for a watch that never started).
    log: Option<Arc<Shared>>,
    /// Changes of the log are announced here.
    changed: Option<watch::Receiver<()>>,
    /// The sequence number of the next change to look at.
    cursor: u64,
    /// Changes from this sequence number on arrived after the watch started:
    /// only these count against the live capacity (a replay may be longer).
    live_from: u64,
    /// Changes before this revision are not wanted.
    pub(crate) from_revision: u64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("prefix", &self.prefix).field("cursor", &self.cursor).finish()
    }
}

impl Watch {
    /// A watch that ends at once: the answer of a store that stopped.
    pub fn ended(prefix: impl Into<String>) -> Self {
        Watch { prefix: prefix.into(), log: None, changed: None, cursor: 0, live_from: 0, from_revision: 0 }
    }

    /// The prefix watched.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next change under the prefix; `None` when the store stopped.
    /// `Some(Err(Error::Lagged))` when this watcher fell behind and missed
    /// changes: read the prefix again and watch on.
    ///
    /// Cancel-safe: dropping the future loses no change.
    pub async fn recv(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            let shared = self.log.clone()?;
            if let Some(changed) = &mut self.changed {
                // Marked seen before looking: a change published after the
                // look wakes the wait below.
                changed.borrow_and_update();
            }
            let found = {
                let inner = shared.lock();
                self.next_in(&inner)
            };
            match found {
                Next::Event(event) => return Some(Ok(Arc::unwrap_or_clone(event))),
                Next::Lagged(missed) => return Some(Err(Error::Lagged { missed })),
                Next::Ended => {
                    self.log = None;
                    return None;
                }
                Next::Wait => {}
            }
            let Some(changed) = &mut self.changed else { return None };
            if changed.changed().await.is_err() {
                self.log = None;
                return None;
            }
        }
    }

    fn next_in(&mut self, inner: &Inner) -> Next {
        let head = inner.head();
        if self.cursor < inner.first_seq {
            let missed = inner.first_seq - self.cursor;
            self.cursor = inner.first_seq;
            return Next::Lagged(missed);
        }
        let behind = head.saturating_sub(self.cursor.max(self.live_from));
        if behind > inner.capacity {
            let missed = behind - inner.capacity;
            self.cursor += missed;
            return Next::Lagged(missed);
        }
        while self.cursor < head {
            let event = &inner.events[(self.cursor - inner.first_seq) as usize];
            self.cursor += 1;
            if event.revision >= self.from_revision && event.key.starts_with(&self.prefix) {
                // Only the pointer is cloned under the lock.
                return Next::Event(event.clone());
            }
        }
        if inner.closed { Next::Ended } else { Next::Wait }
    }

    /// Changes buffered for this watcher now: those of the log it has not
    /// looked at yet (of any prefix).
    pub fn buffered(&self) -> usize {
        match &self.log {
            Some(shared) => {
                usize::try_from(shared.lock().head().saturating_sub(self.cursor)).unwrap_or(usize::MAX)
            }
            None => 0,
        }
    }
}

enum Next {
    Event(Arc<WatchEvent>),
    Lagged(u64),
    Ended,
    Wait,
}

/// The recent changes of a store, so that a watch can start at a past
/// revision: it replays what the log still holds, then goes on live, with no
/// gap and no repeat.
///
/// Bounded: the oldest changes are forgotten past `max_events` or
/// `max_bytes` (the newest change is always kept); a watch from a forgotten
/// revision fails with [`Error::Compacted`], and a watcher whose unread
/// changes are forgotten gets [`Error::Lagged`], as does one that falls more
/// than `capacity` live changes behind.
pub struct WatchLog {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: watch::Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    events: VecDeque<Arc<WatchEvent>>,
    /// The sequence number of `events[0]`; numbers grow by one per change
    /// and are never reused (revisions may repeat after a snapshot install).
    first_seq: u64,
    bytes: usize,
    /// Every change after this revision is in `events` (or still to come).
    floor: u64,
    capacity: u64,
    max_events: usize,
    max_bytes: usize,
    closed: bool,
}

impl Inner {
    /// The sequence number the next change will get.
    fn head(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }

    fn push(&mut self, event: WatchEvent) {
        self.bytes += event_bytes(&event);
        self.events.push_back(Arc::new(event));
    }

    fn trim(&mut self) {
        while self.events.len() > 1 && (self.events.len() > self.max_events || self.bytes > self.max_bytes) {
            let Some(old) = self.events.pop_front() else { break };
            self.first_seq += 1;
            self.bytes = self.bytes.saturating_sub(event_bytes(&old));
            self.floor = self.floor.max(old.revision);
        }
    }
}

fn event_bytes(e: &WatchEvent) -> usize {
    e.key.len() + e.value.as_ref().map_or(0, Vec::len) + 32
}

impl std::fmt::Debug for WatchLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("WatchLog")
            .field("floor", &inner.floor)
            .field("events", &inner.events.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

impl WatchLog {
    /// A log replaying changes after `revision` (the state's revision when
    /// the store opened), remembering at most `max_events` changes and
    /// `max_bytes` of keys and values; a watcher may fall at most `capacity`
    /// live changes behind.
    pub fn new(revision: u64, capacity: usize, max_events: usize, max_bytes: usize) -> Self {
        let (changed, _) = watch::channel(());
        WatchLog {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    events: VecDeque::new(),
                    first_seq: 0,
                    bytes: 0,
                    floor: revision,
                    capacity: capacity.max(1) as u64,
                    max_events: max_events.max(1),
                    max_bytes,
                    closed: false,
                }),
                changed,
            }),
        }
    }

    /// Records applied changes, in revision order, and wakes the watchers.
    pub fn publish(&self, events: Vec<WatchEvent>) {
        {
            let mut inner = self.shared.lock();
            for e in events {
                inner.push(e);
            }
            inner.trim();
        }
        self.shared.changed.send_replace(());
    }

    /// A whole new state was installed (a snapshot from the leader) at
    /// `revision`: watchers get `events` (what changed, all stamped with
    /// `revision`), and the revisions before it can no longer be replayed.
    pub fn restart_at(&self, revision: u64, events: Vec<WatchEvent>) {
        {
            let mut inner = self.shared.lock();
            inner.floor = inner.floor.max(revision);
            for e in events {
                inner.push(e);
            }
            inner.trim();
        }
        self.shared.changed.send_replace(());
    }

    /// The oldest revision a watch can start from.
    pub fn oldest(&self) -> u64 {
        self.shared.lock().floor + 1
    }

    /// Watches `prefix`: from now when `from_revision` is `None`, else every
    /// change of revision `from_revision` or later. Fails with
    /// [`Error::Compacted`] when changes from that revision are forgotten.
    pub fn watch(&self, prefix: &str, from_revision: Option<u64>) -> Result<Watch> {
        let inner = self.shared.lock();
        let head = inner.head();
        let mut watch = Watch {
            prefix: prefix.to_owned(),
            log: Some(self.shared.clone()),
            changed: Some(self.shared.changed.subscribe()),
            cursor: head,
            live_from: head,
            from_revision: 0,
        };
        if let Some(from) = from_revision {
            // Revisions start at 1: from 0 is from the beginning.
            let from = from.max(1);
            if from <= inner.floor {
                return Err(Error::Compacted { requested: from, oldest: inner.floor + 1 });
            }
            watch.from_revision = from;
            // Revisions never decrease along the log.
            watch.cursor = inner.first_seq + inner.events.partition_point(|e| e.revision < from) as u64;
        }
        Ok(watch)
    }

    /// Ends every watch (once it read what it was sent): the store stopped.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.changed.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn set(key: &str, revision: u64) -> WatchEvent {
        WatchEvent { key: key.to_owned(), value: Some(vec![b'v']), revision }
    }

    #[tokio::test]
    async fn a_watch_from_a_past_revision_replays_then_goes_on_live_without_repeats() {
        let log = WatchLog::new(0, 16, 100, 1 << 20);
        log.publish((1..=5).map(|r| set(if r % 2 == 0 { "a/x" } else { "b/y" }, r)).collect());
        let mut watch = log.watch("a/", Some(3)).unwrap();
        log.publish(vec![set("a/z", 6), set("b/q", 7), set("a/w", 8), set("a/end", 9)]);
        let mut seen = Vec::new();
        loop {
            let e = watch.recv().await.expect("open").expect("not lagged");
            seen.push(e.revision);
            if e.key == "a/end" {
                break;
            }
        }
        assert_eq!(seen, [4, 6, 8, 9]);
        // From 0 is from the first revision, nothing forgotten yet.
        assert!(log.watch("", Some(0)).is_ok());
    }

    #[test]
    fn forgotten_revisions_are_refused_as_compacted() {
        let log = WatchLog::new(0, 16, 3, 1 << 20);
        log.publish((1..=5).map(|r| set("k", r)).collect());
        assert_eq!(log.oldest(), 3);
        assert_eq!(log.watch("k", Some(2)).err(), Some(Error::Compacted { requested: 2, oldest: 3 }));
        assert_eq!(log.watch("k", Some(3)).unwrap().buffered(), 3);
        // A snapshot install: nothing before it can be replayed.
        log.restart_at(40, vec![set("k", 40)]);
        assert_eq!(log.watch("k", Some(40)).err(), Some(Error::Compacted { requested: 40, oldest: 41 }));
        assert!(log.watch("k", Some(41)).is_ok());
    }

    #[test]
    fn the_history_is_bounded_in_bytes_too() {
        let log = WatchLog::new(0, 16, 1000, 1000);
        let big = |r| WatchEvent { key: "k".into(), value: Some(vec![0; 300]), revision: r };
        log.publish((1..=10).map(big).collect());
        // At most three 300-byte values fit in 1000 bytes.
        assert!(log.oldest() >= 8, "{log:?}");
    }

    #[tokio::test]
    async fn watchers_share_the_history_instead_of_copying_it() {
        let log = WatchLog::new(0, 16, 100, 64 << 20);
        let value = |r| WatchEvent { key: "k".into(), value: Some(vec![7; 1 << 20]), revision: r };
        log.publish((1..=10).map(value).collect());
        let before = Arc::strong_count(&log.shared);
        let watches: Vec<Watch> = (0..500).map(|_| log.watch("k", Some(1)).expect("held")).collect();
        // 500 replays of 10 MiB each start without copying a value: each is
        // a cursor (5 GiB if they copied).
        assert_eq!(Arc::strong_count(&log.shared), before + 500);
        assert!(watches.iter().all(|w| w.buffered() == 10));
        let mut first = log.watch("k", Some(1)).expect("held");
        let e = first.recv().await.expect("open").expect("in order");
        assert_eq!((e.revision, e.value.map(|v| v.len())), (1, Some(1 << 20)));
    }

    #[tokio::test]
    async fn a_watcher_whose_unread_changes_pass_the_byte_bound_is_cut_with_lagged_and_goes_on() {
        let log = WatchLog::new(0, 1000, 1000, 10_000);
        let mut slow = log.watch("", None).expect("from now");
        let big = |r| WatchEvent { key: "k".into(), value: Some(vec![0; 3000]), revision: r };
        log.publish((1..=10).map(big).collect());
        match slow.recv().await {
            Some(Err(Error::Lagged { missed })) => assert!(missed >= 7, "missed {missed}"),
            other => panic!("expected Lagged, got {other:?}"),
        }
        // It goes on from the oldest change still held, in order.
        let next = slow.recv().await.expect("open").expect("after the cut");
        assert!(next.revision >= 8, "{next:?}");
    }

    #[tokio::test]
    async fn a_watcher_more_than_capacity_behind_is_cut_but_a_long_replay_is_not() {
        let log = WatchLog::new(0, 4, 1000, 1 << 20);
        log.publish((1..=20).map(|r| set("k", r)).collect());
        // The replay of 20 past changes is longer than the capacity: fine.
        let mut replay = log.watch("k", Some(1)).expect("held");
        let mut live = log.watch("k", None).expect("from now");
        for r in 1..=20 {
            assert_eq!(replay.recv().await.unwrap().unwrap().revision, r);
        }
        log.publish((21..=30).map(|r| set("k", r)).collect());
        assert_eq!(live.recv().await, Some(Err(Error::Lagged { missed: 6 })));
        assert_eq!(live.recv().await.unwrap().unwrap().revision, 27);
    }

    #[tokio::test]
    async fn a_waiting_watch_wakes_on_publish_and_ends_on_close() {
        let log = Arc::new(WatchLog::new(0, 16, 100, 1 << 20));
        let mut watch = log.watch("k", None).expect("from now");
        let publisher = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.publish(vec![set("other", 1), set("k", 2)]);
                log.close();
            })
        };
        assert_eq!(watch.recv().await.unwrap().unwrap().revision, 2);
        assert_eq!(watch.recv().await, None);
        publisher.await.expect("publisher");
        assert!(log.watch("k", None).expect("from now").recv().await.is_none());
        assert!(Watch::ended("k").recv().await.is_none());
    }
}
