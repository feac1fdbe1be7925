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

#[cfg(feature = "durable")]
pub mod durable;
#[cfg(feature = "durable")]
pub mod wal;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(feature = "durable")]
use openraft::StorageIOError;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogId, RaftLogReader};

use crate::typecfg::{Entry, LogId, StorageError, TypeConfig, Vote};

/// What the log storage holds, in memory.
#[derive(Debug, Default, Clone)]
pub struct LogContents {
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
pub struct LogStore {
    contents: Arc<Mutex<LogContents>>,
    #[cfg(feature = "durable")]
    durable: Option<durable::DurableWriter>,
}

impl LogStore {
    /// An empty in-memory log.
    pub fn in_memory() -> Self {
        LogStore {
            contents: Arc::default(),
            #[cfg(feature = "durable")]
            durable: None,
        }
    }

    /// A log that starts from `contents` (read from disk) and writes through `writer`.
    #[cfg(feature = "durable")]
    pub fn durable(contents: LogContents, writer: durable::DurableWriter) -> Self {
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
        Ok(self.lock().log.range(range).map(|(_, e)| e.clone()).collect())
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
        drop(self.lock().log.split_off(&log_id.index));
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
