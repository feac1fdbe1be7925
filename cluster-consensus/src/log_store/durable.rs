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
//! # Integrity on open
//!
//! Opening refuses, with an [`OpenError`] that names the file, what would
//! otherwise be a silent loss: a write-ahead log record that is corrupt and
//! not a torn tail ([`super::wal`]), a redb file that does not open or holds
//! a value that does not decode, a snapshot whose CRC-32 does not match.
//! Nothing falls back to an empty state: a member that restarted empty but
//! still counted as a voter could vote twice in a term or help elect a
//! leader without entries it had acknowledged. See `docs/recovery.md`.
//!
//! A data directory written by an older build that kept the log in redb
//! (table `raft_log`) is migrated on open: the entries move to the
//! write-ahead log, durably, before the table is emptied.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::LogContents;
use super::wal::{Framed, Record, Wal, WalError, WalOptions, frame};
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
/// The snapshot of older builds, without a checksum: read only if there is
/// no [`SEALED_SNAPSHOT`].
const SNAPSHOT: &str = "snapshot";
/// The current snapshot: its CRC-32 (4 bytes, little endian), then its bytes.
const SEALED_SNAPSHOT: &str = "snapshot_crc32";
/// The directory of the write-ahead log, next to the redb file.
pub const WAL_DIR: &str = "raft-log";
/// How long committed ids written without an append wait for one before
/// they are synced on their own.
const COMMITTED_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(5);
/// The most changes handled in one round of the writer.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<(), WriteError>>;

enum Cmd {
    Append(Vec<Framed>, LogFlushed<TypeConfig>),
    Committed(Option<LogId>),
    Meta { key: &'static str, value: Vec<u8>, reply: Reply },
    Truncate(u64, Reply),
    Purge { index: u64, log_id: Vec<u8>, reply: Reply },
    Stop,
}

/// Why a change to the durable storage failed. The first failure stops the
/// writer for good (raft must stop on this member: what is on disk no longer
/// follows what raft was told), and every later change fails with
/// [`WriteError::Failed`] naming it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WriteError {
    /// The write-ahead log failed (a file system error, a record too large).
    #[error("write-ahead log: {0}")]
    Wal(#[source] Arc<WalError>),
    /// The redb file (vote, purge point, snapshot) failed.
    #[error("raft state file: {0}")]
    Db(#[source] Arc<redb::Error>),
    /// An earlier change failed; nothing is written after it.
    #[error("an earlier write failed, so nothing more is written: {0}")]
    Failed(#[source] Box<WriteError>),
    /// The writer thread is gone (the storage was closed).
    #[error("the durable storage is closed")]
    Closed,
}

impl From<WalError> for WriteError {
    fn from(e: WalError) -> Self {
        WriteError::Wal(Arc::new(e))
    }
}

impl WriteError {
    /// The kind of the file system error underneath, if one is.
    fn io_kind(&self) -> std::io::ErrorKind {
        match self {
            WriteError::Wal(e) => match &**e {
                WalError::Io { source, .. } => source.kind(),
                _ => std::io::ErrorKind::InvalidData,
            },
            WriteError::Db(e) => match &**e {
                redb::Error::Io(io) => io.kind(),
                _ => std::io::ErrorKind::Other,
            },
            WriteError::Failed(first) => first.io_kind(),
            WriteError::Closed => std::io::ErrorKind::BrokenPipe,
        }
    }
}

impl From<WriteError> for std::io::Error {
    /// Keeps the file system's error kind (a full disk stays `StorageFull`)
    /// and the whole chain as the source.
    fn from(e: WriteError) -> Self {
        std::io::Error::new(e.io_kind(), e)
    }
}

/// What the message of every corruption error tells the operator to do.
pub(crate) const RECOVERY_HINT: &str = "this member must not rejoin with it: stop it, run `carbon agent \
     --reset-raft-state` with the same configuration (it keeps the member id and moves the raft state \
     aside), then start it again; see docs/recovery.md";

/// Why the durable storage did not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The write-ahead log is corrupt ([`WalError::Corrupt`]) or cannot be read.
    #[error("{source}{}", if matches!(source, WalError::Corrupt { .. }) { format!("; {RECOVERY_HINT}") } else { String::new() })]
    Wal {
        /// The log's error.
        #[from]
        source: WalError,
    },
    /// The redb file holds something that is not a valid raft state: it
    /// does not open as a database, a value does not decode, the snapshot
    /// fails its checksum.
    #[error("corrupt raft state file {}: {what}; {RECOVERY_HINT}", path.display())]
    Corrupt {
        /// The redb file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Another process holds the redb file open.
    #[error("raft state file {} is in use by another process", path.display())]
    InUse {
        /// The redb file.
        path: PathBuf,
    },
    /// The file system failed (permissions, space, …): not the files' fault.
    #[error("cannot open the raft state in {}: {reason}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        reason: String,
    },
}

impl OpenError {
    /// What is wrong and what to do, without the file name (which
    /// [`corruption`](Self::corruption) gives).
    pub fn detail(&self) -> String {
        match self {
            OpenError::Wal { source: WalError::Corrupt { reason, .. } } => {
                format!("{reason}; {RECOVERY_HINT}")
            }
            OpenError::Corrupt { what, .. } => format!("{what}; {RECOVERY_HINT}"),
            other => other.to_string(),
        }
    }

    /// The file that is corrupt and where in it, if this is corruption
    /// (and not, say, a full disk).
    pub fn corruption(&self) -> Option<(&Path, Option<u64>)> {
        match self {
            OpenError::Wal { source: WalError::Corrupt { path, offset, .. } } => Some((path, Some(*offset))),
            OpenError::Corrupt { path, .. } => Some((path, None)),
            _ => None,
        }
    }
}

impl From<OpenError> for std::io::Error {
    fn from(e: OpenError) -> Self {
        let kind = if e.corruption().is_some() {
            std::io::ErrorKind::InvalidData
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e)
    }
}

/// Opens the redb file, telling corruption from other failures. redb's
/// debug builds panic on some corrupt pages instead of returning an error:
/// that is caught and reported as corruption too.
fn open_database(path: &Path) -> Result<Database, OpenError> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(path)));
    let corrupt = |what: String| OpenError::Corrupt { path: path.to_path_buf(), what };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Err(_) => Err(corrupt("the database panicked while opening it".to_owned())),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(OpenError::InUse { path: path.to_path_buf() })
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)))) => {
            Err(corrupt(format!("not a valid database: {what}")))
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(corrupt(format!("not a valid database: {e}")))
        }
        Ok(Err(e)) => Err(OpenError::Io { path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// A snapshot sealed with its CRC-32, as stored.
fn seal(snapshot: &StoredSnapshot) -> Result<Vec<u8>, std::io::Error> {
    let bytes = encode(snapshot)?;
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// The snapshot in `sealed`, if its CRC-32 matches and it decodes.
pub(crate) fn unseal(sealed: &[u8]) -> Result<StoredSnapshot, String> {
    let (crc, bytes) = sealed.split_at_checked(4).ok_or("the snapshot is shorter than its checksum")?;
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(bytes);
    if actual != crc {
        return Err(format!("the snapshot fails its checksum (stored {crc:08x}, computed {actual:08x})"));
    }
    decode::<StoredSnapshot>(bytes).map_err(|e| format!("the snapshot does not decode: {e}"))
}

/// What was on disk when the storage opened.
pub(crate) struct Opened {
    /// The log storage's contents.
    pub log: LogContents,
    /// The last snapshot, from which the state machine restarts.
    pub snapshot: Option<StoredSnapshot>,
    /// The writer for further changes.
    pub writer: DurableWriter,
}

/// Opens (or creates) the storage: the redb file at `path` and the
/// write-ahead log in the directory [`WAL_DIR`] next to it.
pub(crate) fn open(path: &Path) -> Result<Opened, OpenError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    open_with(path, &dir.join(WAL_DIR), WalOptions::default())
}

/// Opens (or creates) the storage: the redb file at `path` and the
/// write-ahead log in `wal_dir`, with `options`.
pub(crate) fn open_with(path: &Path, wal_dir: &Path, options: WalOptions) -> Result<Opened, OpenError> {
    let db = open_database(path)?;
    let file_err =
        |e: &dyn std::fmt::Display| OpenError::Io { path: path.to_path_buf(), reason: e.to_string() };
    let corrupt = |what: String| OpenError::Corrupt { path: path.to_path_buf(), what };
    let mut log = LogContents::default();
    let snapshot;
    let txn = db.begin_write().map_err(|e| file_err(&e))?;
    let wal = {
        let mut meta = txn.open_table(META).map_err(|e| file_err(&e))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, OpenError> {
            Ok(meta.get(key).map_err(|e| file_err(&e))?.map(|v| v.value().to_vec()))
        };
        fn decoded<T: serde::de::DeserializeOwned>(
            bytes: Option<Vec<u8>>,
            what: &str,
            corrupt: impl Fn(String) -> OpenError,
        ) -> Result<Option<T>, OpenError> {
            bytes
                .map(|b| decode::<T>(&b).map_err(|e| corrupt(format!("the {what} does not decode: {e}"))))
                .transpose()
        }
        log.vote = decoded::<Vote>(get(VOTE)?, "vote", corrupt)?;
        let old_committed = decoded::<Option<LogId>>(get(COMMITTED)?, "committed log id", corrupt)?;
        log.last_purged = decoded::<LogId>(get(LAST_PURGED)?, "last purged log id", corrupt)?;
        snapshot = match get(SEALED_SNAPSHOT)? {
            Some(sealed) => Some(unseal(&sealed).map_err(corrupt)?),
            None => decoded::<StoredSnapshot>(get(SNAPSHOT)?, "snapshot", corrupt)?,
        };
        let (mut wal, recovered) = Wal::open(wal_dir, options, log.last_purged.map(|l| l.index))?;
        log.log = recovered.entries;
        let mut committed = recovered.committed;

        // Migrate the log of an older build.
        let mut old_log = txn.open_table(LOG).map_err(|e| file_err(&e))?;
        let mut old_entries = Vec::new();
        for row in old_log.iter().map_err(|e| file_err(&e))? {
            let (k, v) = row.map_err(|e| file_err(&e))?;
            let entry = decode::<Entry>(v.value()).map_err(|e| {
                corrupt(format!("log entry {} of an older build does not decode: {e}", k.value()))
            })?;
            old_entries.push((k.value(), entry));
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
            old_log.retain(|_, _| false).map_err(|e| file_err(&e))?;
            meta.remove(COMMITTED).map_err(|e| file_err(&e))?;
        }
        log.committed = committed.flatten();
        wal
    };
    txn.commit().map_err(|e| file_err(&e))?;

    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("consensus-wal".to_owned())
        .spawn(move || Writer { db, wal, failed: None, pending: Vec::new() }.run(rx))
        .map_err(|e| file_err(&e))?;
    let writer = DurableWriter { tx, thread: Arc::new(Mutex::new(Some(thread))) };
    Ok(Opened { log, snapshot, writer })
}

/// The state of the writer thread.
struct Writer {
    db: Database,
    wal: Wal,
    /// After a failed write nothing more is written: raft must stop.
    failed: Option<WriteError>,
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
            self.fail(e.into());
        }
    }

    fn fail(&mut self, error: WriteError) {
        if self.failed.is_none() {
            tracing::error!(%error, "durable raft storage failed; no further writes");
            self.failed = Some(error);
        }
    }

    fn check(&self) -> Result<(), WriteError> {
        match &self.failed {
            None => Ok(()),
            Some(first) => Err(WriteError::Failed(Box::new(first.clone()))),
        }
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
            done.log_io_completed(result.clone().map_err(std::io::Error::from));
        }
    }

    /// Runs `op` after syncing what precedes it, unless the storage failed;
    /// a failure of `op` fails the storage.
    fn ordered(&mut self, op: impl FnOnce(&mut Self) -> Result<(), WriteError>) -> Result<(), WriteError> {
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
                            self.fail(e.into());
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
                    self.fail(e.into());
                }
            }
            Cmd::Meta { key, value, reply } => {
                let result = self.ordered(|w| w.put_meta(key, &value));
                // The asker may have given up; nothing to do then.
                let _ = reply.send(result);
            }
            Cmd::Truncate(index, reply) => {
                let result = self.ordered(|w| Ok(w.wal.truncate(index)?));
                let _ = reply.send(result);
            }
            Cmd::Purge { index, log_id, reply } => {
                let result = self.ordered(|w| {
                    // The purge point first: entries below it are then skipped on recovery.
                    w.put_meta(LAST_PURGED, &log_id)?;
                    Ok(w.wal.purge(index)?)
                });
                let _ = reply.send(result);
            }
            Cmd::Stop => {}
        }
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), WriteError> {
        let commit = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            txn.open_table(META)?.insert(key, value)?;
            txn.commit()?;
            Ok(())
        };
        commit().map_err(|e| WriteError::Db(Arc::new(e)))
    }
}

/// The handle to the writer thread; clones share it.
#[derive(Clone)]
pub(crate) struct DurableWriter {
    tx: mpsc::Sender<Cmd>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl DurableWriter {
    fn send(&self, cmd: Cmd) -> Result<(), std::io::Error> {
        self.tx.send(cmd).map_err(|_| WriteError::Closed.into())
    }

    async fn send_and_wait(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<(), std::io::Error> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        Ok(rx.await.map_err(|_| WriteError::Closed)??)
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
    pub(crate) fn close(&self) {
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
        let value = seal(snapshot)?;
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Meta { key: SEALED_SNAPSHOT, value, reply })?;
        Ok(rx.blocking_recv().map_err(|_| WriteError::Closed)??)
    }
}
