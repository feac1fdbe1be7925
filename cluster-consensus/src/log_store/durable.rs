//! Durable storage in a redb file: the log, the vote, the committed id, the
//! last purged id and the current snapshot.
//!
//! One writer thread owns the database. Changes queue up in order and the
//! thread commits everything queued in one transaction (one fsync), then
//! reports each change durable: concurrent writes share an fsync (group
//! commit), and all I/O stays in the order raft issued it.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::LogContents;
use crate::encoding::{decode, encode};
use crate::state_machine::{SnapshotVault, StoredSnapshot};
use crate::typecfg::{Entry, LogId, TypeConfig, Vote};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";
/// The most changes committed in one transaction.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<(), String>>;

enum Cmd {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    Meta { key: &'static str, value: Option<Vec<u8>>, reply: Option<Reply> },
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

/// Opens (or creates) the database at `path` and reads what it holds.
pub fn open(path: &Path) -> Result<Opened, std::io::Error> {
    let db = Database::create(path).map_err(io)?;
    {
        // Tables must exist before a read transaction opens them.
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(LOG).map_err(io)?;
        txn.open_table(META).map_err(io)?;
        txn.commit().map_err(io)?;
    }
    let mut log = LogContents::default();
    let mut snapshot = None;
    {
        let txn = db.begin_read().map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, std::io::Error> {
            Ok(meta.get(key).map_err(io)?.map(|v| v.value().to_vec()))
        };
        if let Some(b) = get(VOTE)? {
            log.vote = Some(decode::<Vote>(&b)?);
        }
        if let Some(b) = get(COMMITTED)? {
            log.committed = decode::<Option<LogId>>(&b)?;
        }
        if let Some(b) = get(LAST_PURGED)? {
            log.last_purged = Some(decode::<LogId>(&b)?);
        }
        if let Some(b) = get(SNAPSHOT)? {
            snapshot = Some(decode::<StoredSnapshot>(&b)?);
        }
        let table = txn.open_table(LOG).map_err(io)?;
        for row in table.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            log.log.insert(k.value(), decode::<Entry>(v.value())?);
        }
    }
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("consensus-redb".to_owned())
        .spawn(move || write_loop(db, rx))
        .map_err(io)?;
    let writer = DurableWriter { tx, thread: Arc::new(Mutex::new(Some(thread))) };
    Ok(Opened { log, snapshot, writer })
}

fn write_loop(db: Database, rx: mpsc::Receiver<Cmd>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|c| matches!(c, Cmd::Stop));
        let result = commit(&db, &batch).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "durable raft storage failed to commit");
        }
        for cmd in batch {
            match cmd {
                Cmd::Append(_, done) => done.log_io_completed(result.clone().map_err(io)),
                Cmd::Meta { reply: Some(reply), .. } | Cmd::Truncate(_, reply) | Cmd::Purge { reply, .. } => {
                    // The asker may have given up; nothing to do then.
                    let _ = reply.send(result.clone());
                }
                Cmd::Meta { reply: None, .. } | Cmd::Stop => {}
            }
        }
        if stop {
            break;
        }
    }
    // `db` drops here: the file is released and can be reopened.
}

fn commit(db: &Database, batch: &[Cmd]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for cmd in batch {
            match cmd {
                Cmd::Append(entries, _) => {
                    for (index, bytes) in entries {
                        log.insert(index, bytes.as_slice())?;
                    }
                }
                Cmd::Meta { key, value: Some(v), .. } => {
                    meta.insert(*key, v.as_slice())?;
                }
                Cmd::Meta { key, value: None, .. } => {
                    meta.remove(*key)?;
                }
                Cmd::Truncate(index, _) => log.retain_in(*index.., |_, _| false)?,
                Cmd::Purge { index, log_id, .. } => {
                    meta.insert(LAST_PURGED, log_id.as_slice())?;
                    log.retain_in(..=*index, |_, _| false)?;
                }
                Cmd::Stop => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
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
        let rows = entries
            .iter()
            .map(|e| Ok((e.log_id.index, encode(e)?)))
            .collect::<Result<_, std::io::Error>>()?;
        self.send(Cmd::Append(rows, done))
    }

    pub(crate) async fn save_vote(&self, vote: Vote) -> Result<(), std::io::Error> {
        let value = Some(encode(&vote)?);
        self.send_and_wait(|reply| Cmd::Meta { key: VOTE, value, reply: Some(reply) }).await
    }

    pub(crate) fn save_committed(&self, committed: Option<LogId>) -> Result<(), std::io::Error> {
        self.send(Cmd::Meta { key: COMMITTED, value: Some(encode(&committed)?), reply: None })
    }

    pub(crate) async fn truncate(&self, index: u64) -> Result<(), std::io::Error> {
        self.send_and_wait(|reply| Cmd::Truncate(index, reply)).await
    }

    pub(crate) async fn purge(&self, log_id: LogId) -> Result<(), std::io::Error> {
        let bytes = encode(&log_id)?;
        self.send_and_wait(|reply| Cmd::Purge { index: log_id.index, log_id: bytes, reply }).await
    }

    /// Stops the writer thread once everything queued is committed, and
    /// waits for it: the database file is then released. Blocking.
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
        let value = Some(encode(snapshot)?);
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Meta { key: SNAPSHOT, value, reply: Some(reply) })?;
        rx.blocking_recv().map_err(|_| io("the durable storage is closed"))?.map_err(io)
    }
}
