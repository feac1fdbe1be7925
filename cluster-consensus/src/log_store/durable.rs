//! Durable raft storage in a data directory: the log in a segmented
//! write-ahead log ([`super::wal`], directory `raft-log/`), and the rare,
//! small metadata (vote, last purged id, current snapshot) in a redb file.
//!
//! One writer thread owns both. Changes queue up in raft's order; the thread
//! takes everything queued, writes the log records of the appends (and
//! committed ids) and makes them durable with **one** `fdatasync`, then
//! reports each append durable (openraft 0.9 waits for each append's flush
//! before its next step, so what shares a sync is mostly an append and the
//! committed ids before it). A metadata change, a truncation or a purge
//! first syncs the log written before it, so what is on disk is always a
//! state raft passed through, in raft's order.
//!
//! Committed ids ride along with the next append's sync, or are synced on
//! their own after 5 ms of quiet: openraft allows them to lag (a member then
//! re-applies less on restart and catches up from the leader), and a commit
//! then costs no fsync of its own.
//!
//! Why the log is not in redb: see [`super::wal`]. A redb commit costs
//! 2–3× an append + `fdatasync` here; the vote changes once per election and
//! the snapshot once per snapshot, so their cost does not matter.
//!
//! A data directory written by an older build that kept the log in redb
//! (table `raft_log`) is migrated on open: the entries move to the
//! write-ahead log, durably, before the table is emptied.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::LogContents;
use super::wal::{Framed, Record, Wal, WalOptions, frame};
use crate::encoding::{decode, encode};
use crate::state_machine::{SnapshotVault, StoredSnapshot};
use crate::typecfg::{Entry, LogId, TypeConfig, Vote};

/// The log table of older builds, read only to migrate it.
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
/// The committed id of older builds; now in the write-ahead log.
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";
/// The directory of the write-ahead log, next to the redb file.
pub const WAL_DIR: &str = "raft-log";
/// How long committed ids written without an append wait for one before
/// they are synced on their own.
const COMMITTED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(5);
/// The most changes handled in one round of the writer.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<(), String>>;

enum Cmd {
    Append(Vec<Framed>, LogFlushed<TypeConfig>),
    Committed(Option<LogId>),
    Meta { key: &'static str, value: Vec<u8>, reply: Reply },
    Truncate(u64, Reply),
    Purge { index: u64, log_id: Vec<u8>, reply: Reply },
    Stop,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// What was on disk when the storage opened.
pub struct Opened {
    /// The log storage's contents.
    pub log: LogContents,
    /// The last snapshot, from which the state machine restarts.
    pub snapshot: Option<StoredSnapshot>,
    /// The writer for further changes.
    pub writer: DurableWriter,
}

/// Opens (or creates) the storage: the redb file at `path` and the
/// write-ahead log in the directory [`WAL_DIR`] next to it.
pub fn open(path: &Path) -> Result<Opened, std::io::Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    open_with(path, &dir.join(WAL_DIR), WalOptions::default())
}

/// Opens (or creates) the storage: the redb file at `path` and the
/// write-ahead log in `wal_dir`, with `options`.
pub fn open_with(path: &Path, wal_dir: &Path, options: WalOptions) -> Result<Opened, std::io::Error> {
    let db = Database::create(path).map_err(io)?;
    let mut log = LogContents::default();
    let mut snapshot = None;
    let txn = db.begin_write().map_err(io)?;
    let wal = {
        let mut meta = txn.open_table(META).map_err(io)?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, std::io::Error> {
            Ok(meta.get(key).map_err(io)?.map(|v| v.value().to_vec()))
        };
        if let Some(b) = get(VOTE)? {
            log.vote = Some(decode::<Vote>(&b)?);
        }
        let old_committed = match get(COMMITTED)? {
            Some(b) => Some(decode::<Option<LogId>>(&b)?),
            None => None,
        };
        if let Some(b) = get(LAST_PURGED)? {
            log.last_purged = Some(decode::<LogId>(&b)?);
        }
        if let Some(b) = get(SNAPSHOT)? {
            snapshot = Some(decode::<StoredSnapshot>(&b)?);
        }
        let (mut wal, recovered) = Wal::open(wal_dir, options, log.last_purged.map(|l| l.index))?;
        log.log = recovered.entries;
        let mut committed = recovered.committed;

        // Migrate the log of an older build.
        let mut old_log = txn.open_table(LOG).map_err(io)?;
        let mut old_entries = Vec::new();
        for row in old_log.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            old_entries.push((k.value(), decode::<Entry>(v.value())?));
        }
        if !old_entries.is_empty() || old_committed.is_some() {
            // The table is emptied only once the log holds its entries
            // durably: whatever the log holds now is from a migration cut
            // short, so it starts over.
            wal.truncate(0)?;
            log.log.clear();
            for (index, entry) in old_entries {
                wal.write(&Framed { index: Some(index), bytes: frame(&Record::Entry(entry.clone()))? })?;
                if log.last_purged.is_none_or(|p| index > p.index) {
                    log.log.insert(index, entry);
                }
            }
            if let Some(c) = old_committed {
                wal.write_committed(c)?;
                committed = Some(c);
            }
            wal.sync()?;
            old_log.retain(|_, _| false).map_err(io)?;
            meta.remove(COMMITTED).map_err(io)?;
        }
        log.committed = committed.flatten();
        wal
    };
    txn.commit().map_err(io)?;

    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("consensus-wal".to_owned())
        .spawn(move || Writer { db, wal, failed: None, pending: Vec::new() }.run(rx))
        .map_err(io)?;
    let writer = DurableWriter { tx, thread: Arc::new(Mutex::new(Some(thread))) };
    Ok(Opened { log, snapshot, writer })
}

/// The state of the writer thread.
struct Writer {
    db: Database,
    wal: Wal,
    /// After a failed write nothing more is written: raft must stop.
    failed: Option<String>,
    /// Appends written to the log, waiting for its sync.
    pending: Vec<LogFlushed<TypeConfig>>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            // Committed ids alone wait a little for an append to share its sync.
            let first = if self.wal.is_dirty() {
                match rx.recv_timeout(COMMITTED_SYNC_DELAY) {
                    Ok(cmd) => cmd,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.sync_now();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            for cmd in batch {
                stop |= matches!(cmd, Cmd::Stop);
                self.handle(cmd);
            }
            self.flush();
            if stop {
                break;
            }
        }
        self.sync_now();
        // Changes queued behind a stop (none in practice) are dropped
        // unanswered: their askers see the storage closed. `db` and the log
        // files close here and can be reopened.
    }

    fn sync_now(&mut self) {
        if self.failed.is_none()
            && let Err(e) = self.wal.sync()
        {
            self.fail(e.to_string());
        }
    }

    fn fail(&mut self, error: String) {
        if self.failed.is_none() {
            tracing::error!(%error, "durable raft storage failed; no further writes");
            self.failed = Some(error);
        }
    }

    fn check(&self) -> Result<(), String> {
        self.failed.clone().map_or(Ok(()), Err)
    }

    /// Makes the log written so far durable if appends wait for it, and
    /// reports them. (Committed ids alone need not be durable at once: a
    /// lost one only means re-applying less on restart.)
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.sync_now();
        }
        let result = self.check();
        for done in self.pending.drain(..) {
            done.log_io_completed(result.clone().map_err(io));
        }
    }

    /// Runs `op` after syncing what precedes it, unless the storage failed;
    /// a failure of `op` fails the storage.
    fn ordered(&mut self, op: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), String> {
        self.sync_now();
        self.flush();
        self.check()?;
        let result = op(self);
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Append(records, done) => {
                if self.failed.is_none() {
                    for r in &records {
                        if let Err(e) = self.wal.write(r) {
                            self.fail(e.to_string());
                            break;
                        }
                    }
                }
                self.pending.push(done);
            }
            Cmd::Committed(c) => {
                if self.failed.is_none()
                    && let Err(e) = self.wal.write_committed(c)
                {
                    self.fail(e.to_string());
                }
            }
            Cmd::Meta { key, value, reply } => {
                let result = self.ordered(|w| w.put_meta(key, &value));
                // The asker may have given up; nothing to do then.
                let _ = reply.send(result);
            }
            Cmd::Truncate(index, reply) => {
                let result = self.ordered(|w| w.wal.truncate(index).map_err(|e| e.to_string()));
                let _ = reply.send(result);
            }
            Cmd::Purge { index, log_id, reply } => {
                let result = self.ordered(|w| {
                    // The purge point first: entries below it are then skipped on recovery.
                    w.put_meta(LAST_PURGED, &log_id)?;
                    w.wal.purge(index).map_err(|e| e.to_string())
                });
                let _ = reply.send(result);
            }
            Cmd::Stop => {}
        }
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let commit = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            txn.open_table(META)?.insert(key, value)?;
            txn.commit()?;
            Ok(())
        };
        commit().map_err(|e| e.to_string())
    }
}

/// The handle to the writer thread; clones share it.
#[derive(Clone)]
pub struct DurableWriter {
    tx: mpsc::Sender<Cmd>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl DurableWriter {
    fn send(&self, cmd: Cmd) -> Result<(), std::io::Error> {
        self.tx.send(cmd).map_err(|_| io("the durable storage is closed"))
    }

    async fn send_and_wait(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<(), std::io::Error> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| io("the durable storage is closed"))?.map_err(io)
    }

    pub(crate) fn append(
        &self,
        entries: Vec<Entry>,
        done: LogFlushed<TypeConfig>,
    ) -> Result<(), std::io::Error> {
        let records = entries
            .into_iter()
            .map(|e| Ok(Framed { index: Some(e.log_id.index), bytes: frame(&Record::Entry(e))? }))
            .collect::<Result<_, std::io::Error>>()?;
        self.send(Cmd::Append(records, done))
    }

    pub(crate) async fn save_vote(&self, vote: Vote) -> Result<(), std::io::Error> {
        let value = encode(&vote)?;
        self.send_and_wait(|reply| Cmd::Meta { key: VOTE, value, reply }).await
    }

    pub(crate) fn save_committed(&self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.send(Cmd::Committed(committed))
    }

    pub(crate) async fn truncate(&self, index: u64) -> Result<(), std::io::Error> {
        self.send_and_wait(|reply| Cmd::Truncate(index, reply)).await
    }

    pub(crate) async fn purge(&self, log_id: LogId) -> Result<(), std::io::Error> {
        let bytes = encode(&log_id)?;
        self.send_and_wait(|reply| Cmd::Purge { index: log_id.index, log_id: bytes, reply }).await
    }

    /// Stops the writer thread once everything queued is durable, and waits
    /// for it: the files are then released. Blocking.
    pub fn close(&self) {
        let _ = self.tx.send(Cmd::Stop);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the durable storage writer panicked");
        }
    }
}

impl SnapshotVault for DurableWriter {
    fn save(&self, snapshot: &StoredSnapshot) -> Result<(), std::io::Error> {
        let value = encode(snapshot)?;
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Meta { key: SNAPSHOT, value, reply })?;
        rx.blocking_recv().map_err(|_| io("the durable storage is closed"))?.map_err(io)
    }
}
