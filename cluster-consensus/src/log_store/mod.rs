//! The raft log storage: log entries, vote, committed index, last purged id.
//!
//! [`LogStore`] keeps the log in memory (a `BTreeMap`, bounded by snapshots
//! and purging) and, with a data directory, writes every change through the
//! [`durable`] writer before reporting it durable. Reads never touch disk:
//! the in-memory map is the cache of the whole live log.
//!
//! - [`durable`]: the writer thread, the storage's files and recovery.
//! - [`wal`]: the log's own append-only segmented file format (one
//!   `fdatasync` per group commit; why not redb is explained there).
//!
//! Raft's invariants are checked where a broken one would otherwise panic
//! or lose data: openraft 0.9 asks for entries `[applied + 1, committed + 1)`
//! and checks `applied <= committed` only in debug builds, so a leader that
//! lost committed entries (a member whose raft state was corrupt or wiped
//! without `--reset-raft-state`) could make a follower ask for a reversed
//! range, and `BTreeMap::range` panics on one. Such requests, and a
//! truncation of an entry this member knows to be committed, are answered
//! with a [`LogStoreError`] instead: raft stops on this member with a
//! storage error and keeps every entry it holds.

#[cfg(feature = "durable")]
pub(crate) mod durable;
#[cfg(feature = "durable")]
pub(crate) mod wal;
#[cfg(all(test, feature = "durable"))]
mod wal_tests;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(feature = "durable")]
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use openraft::{LogState, RaftLogId, RaftLogReader};

use crate::typecfg::{Entry, LogId, StorageError, TypeConfig, Vote};

/// A request of raft that breaks its own invariants; answered with this
/// error rather than a panic or a lost entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LogStoreError {
    /// Entries asked for from `start` up to `end` (exclusive), with `start`
    /// past `end`: the committed index went back below what this member
    /// applied.
    #[error(
        "raft asked for log entries [{start}, {end}): the committed index went back below what this \
         member applied; a leader lost committed entries (a member's raft state was corrupt or wiped)"
    )]
    ReversedRange {
        /// The first index asked for.
        start: u64,
        /// One past the last index asked for.
        end: u64,
    },
    /// A truncation that would delete an entry this member saw committed.
    #[error(
        "raft asked to delete log entries from {index} on, but entry {committed} is committed; a \
         leader lost committed entries (a member's raft state was corrupt or wiped)"
    )]
    TruncateCommitted {
        /// The first index to delete.
        index: u64,
        /// The last index this member knows to be committed.
        committed: u64,
    },
}

/// `range` as `[start, end)`, or the error for a reversed range.
fn bounds(range: &impl RangeBounds<u64>) -> Result<(u64, Option<u64>), LogStoreError> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if start > end => Err(LogStoreError::ReversedRange { start, end }),
        _ => Ok((start, end)),
    }
}

fn storage_error(
    subject: ErrorSubject<cluster_core::MemberId>,
    verb: ErrorVerb,
    e: LogStoreError,
) -> StorageError {
    tracing::error!(error = %e, "raft storage refused a request that breaks raft's invariants");
    StorageIOError::new(subject, verb, &e).into()
}

/// What the log storage holds, in memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct LogContents {
    /// Entries by index.
    pub log: BTreeMap<u64, Entry>,
    /// The last vote.
    pub vote: Option<Vote>,
    /// The last committed log id saved.
    pub committed: Option<LogId>,
    /// The last purged log id.
    pub last_purged: Option<LogId>,
}

/// The raft log storage, in memory or durable.
#[derive(Clone)]
pub(crate) struct LogStore {
    contents: Arc<Mutex<LogContents>>,
    #[cfg(feature = "durable")]
    durable: Option<durable::DurableWriter>,
}

impl LogStore {
    /// An empty in-memory log.
    pub(crate) fn in_memory() -> Self {
        LogStore {
            contents: Arc::default(),
            #[cfg(feature = "durable")]
            durable: None,
        }
    }

    /// A log that starts from `contents` (read from disk) and writes through `writer`.
    #[cfg(feature = "durable")]
    pub(crate) fn durable(contents: LogContents, writer: durable::DurableWriter) -> Self {
        LogStore { contents: Arc::new(Mutex::new(contents)), durable: Some(writer) }
    }

    fn lock(&self) -> MutexGuard<'_, LogContents> {
        self.contents.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) =
            bounds(&range).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let log = &self.lock().log;
        let entries = match end {
            Some(end) if start == end => Vec::new(),
            Some(end) => log.range(start..end).map(|(_, e)| e.clone()).collect(),
            None => log.range(start..).map(|(_, e)| e.clone()).collect(),
        };
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let c = self.lock();
        let last = c.log.values().next_back().map(|e| *e.get_log_id()).or(c.last_purged);
        Ok(LogState { last_purged_log_id: c.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            d.save_vote(*vote).await.map_err(|e| StorageIOError::write_vote(&e))?;
        }
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            d.save_committed(committed).map_err(|e| StorageIOError::write(&e))?;
        }
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        {
            let mut c = self.lock();
            for e in &entries {
                c.log.insert(e.log_id.index, e.clone());
            }
        }
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            // Readable now; durable when the writer calls back.
            return d.append(entries, callback).map_err(|e| StorageIOError::write_logs(&e).into());
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut c = self.lock();
            if let Some(committed) = c.committed.filter(|c| c.index >= log_id.index) {
                let e = LogStoreError::TruncateCommitted { index: log_id.index, committed: committed.index };
                return Err(storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e));
            }
            drop(c.log.split_off(&log_id.index));
        }
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            d.truncate(log_id.index).await.map_err(|e| StorageIOError::write_logs(&e))?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        #[cfg(feature = "durable")]
        if let Some(d) = &self.durable {
            d.purge(log_id).await.map_err(|e| StorageIOError::write_logs(&e))?;
        }
        let mut c = self.lock();
        c.last_purged = Some(log_id);
        let keep = c.log.split_off(&(log_id.index + 1));
        c.log = keep;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::MemberId;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, MemberId::from(1u64)), index)
    }

    fn store_with(indexes: std::ops::RangeInclusive<u64>) -> LogStore {
        let store = LogStore::in_memory();
        let mut c = store.lock();
        for i in indexes {
            c.log.insert(i, Entry { log_id: log_id(i), payload: EntryPayload::Blank });
        }
        drop(c);
        store
    }

    #[tokio::test]
    async fn a_reversed_range_is_a_storage_error_not_a_panic() {
        let mut store = store_with(1..=10);
        // What openraft asks for when the committed index went back below the applied one.
        let (start, end) = (8u64, 5u64);
        let reversed = store.try_get_log_entries(start..end).await;
        assert!(reversed.is_err(), "{reversed:?}");
        assert!(store.try_get_log_entries(5..5).await.unwrap().is_empty());
        assert_eq!(store.try_get_log_entries(3..=4).await.unwrap().len(), 2);
        assert_eq!(store.try_get_log_entries(9..).await.unwrap().len(), 2);
        assert_eq!(bounds(&(start..end)), Err(LogStoreError::ReversedRange { start: 8, end: 5 }));
    }

    #[tokio::test]
    async fn committed_entries_are_never_truncated() {
        let mut store = store_with(1..=10);
        store.save_committed(Some(log_id(6))).await.unwrap();
        assert!(store.truncate(log_id(6)).await.is_err(), "entry 6 is committed");
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 10, "nothing deleted");
        store.truncate(log_id(7)).await.unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 6);
    }
}
