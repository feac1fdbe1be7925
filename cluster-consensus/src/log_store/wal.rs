//! The raft log on disk: an append-only, segmented write-ahead log.
//!
//! This module owns the files of the directory it is given (`raft-log/`):
//! segments named `00000001.wal`, `00000002.wal`, … of about
//! [`WalOptions::segment_size`] bytes each. It knows nothing of raft beyond
//! "a record is a log entry with an index, or the committed log id": the
//! writer thread in [`super::durable`] decides when to write, sync, truncate
//! and purge.
//!
//! # Why not redb for the log
//!
//! A redb commit with `Durability::Immediate` copies-on-write every B-tree
//! page it touches and writes them, plus the header, at scattered offsets
//! before its one `fdatasync`. Measured on this machine, that costs 2–3× a
//! plain append + `fdatasync` even on a tiny database, and more as the tree
//! grows (≈1.2 ms against ≈90 µs in the cluster). redb's other knobs
//! (two-phase commit, quick repair) only add a second fsync. A raft log is
//! written strictly at its end, truncated only at its end and purged only at
//! its start, so an append-only file needs one sequential write and one
//! `fdatasync` per group commit, and no tree at all. Rare, small metadata
//! (the vote, the last purged id, the snapshot) stays in redb.
//!
//! # Format
//!
//! A segment is a sequence of records:
//!
//! ```text
//! length: u32 LE | crc32: u32 LE | payload: `length` bytes = bincode(Record)
//! ```
//!
//! where the CRC-32 (IEEE) covers the length bytes and the payload. Every
//! segment begins with the current committed log id, if any, so that purging
//! old segments never loses it.
//!
//! # Recovery: a torn tail or corruption
//!
//! Segments are read in order. At the first bad record (a short header, a
//! bad length, a CRC mismatch, a payload that does not decode) recovery must
//! tell two cases apart:
//!
//! - a **torn tail**: the last, partly written record of the last segment,
//!   with nothing valid after it (zeros, the rest of a record, nothing). It
//!   can only hold writes that were never reported durable — a write is
//!   acknowledged only after the `fdatasync` that covers it, and a later
//!   sync covers every byte before it — so the segment is cut there;
//! - **corruption**: a bad record with a valid record anywhere after it (in
//!   the same segment or in a later one), a bad record in a segment other
//!   than the last (a segment is synced before the next one is created), a
//!   missing segment, or a hole between log indexes. Bytes that were synced
//!   changed or vanished, and cutting there would drop entries this member
//!   acknowledged, which raft counted in a quorum. Opening fails with
//!   [`WalError::Corrupt`], naming the file and the byte offset.
//!
//! "Anything valid after it" is checked by trying to read a record at every
//! byte offset after the bad one (length in range, the payload inside the
//! file, its CRC, its decoding), so a corrupted length field cannot hide the
//! records behind it. Zeros never parse as a record (a length of 0 is
//! refused), so preallocated or zero-filled space after the tail is a torn
//! tail, not corruption. The scan has a work budget; past it the log is
//! reported corrupt rather than cut on a guess.
//!
//! A process killed with `kill -9` never tears a synced record: the kernel
//! keeps every byte it was handed. A power loss in the middle of a group
//! commit may persist a later page of the unsynced write before an earlier
//! one; that looks like corruption and is refused — a false alarm that the
//! recovery procedure (`carbon agent --reset-raft-state`, see
//! `docs/recovery.md`) handles safely, where guessing could lose data.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::typecfg::{Entry, LogId};

mod record;

pub(crate) use record::{MAX_RECORD, frame};
use record::{Scan, parse, scan_for_record};

/// The file name extension of segments.
const EXT: &str = "wal";

/// What can go wrong with the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The log holds a bad record that is not a torn tail (see the module
    /// doc): acknowledged entries would be lost, so the log refuses to open.
    #[error("corrupt write-ahead log segment {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where its first bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode a log record: {0}")]
    Encode(std::io::Error),
    /// The log has no active segment (a bug, never a file's fault).
    #[error("the write-ahead log has no active segment")]
    NoSegment,
    /// A record is larger than [`MAX_RECORD`].
    #[error("a log record of {0} bytes is larger than the limit of {MAX_RECORD}")]
    TooLarge(usize),
}

impl From<WalError> for std::io::Error {
    fn from(e: WalError) -> Self {
        match e {
            WalError::Io { source, op, path } => {
                std::io::Error::new(source.kind(), format!("{op} {}: {source}", path.display()))
            }
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// One record of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Record {
    /// A log entry.
    Entry(Entry),
    /// The committed log id, as last saved.
    Committed(Option<LogId>),
}

/// Settings of the write-ahead log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalOptions {
    /// A segment is closed and a new one started once it holds at least this
    /// many bytes.
    pub segment_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_size: 64 * 1024 * 1024 }
    }
}

/// A record to append: its framed bytes and, for an entry, its index.
#[derive(Debug)]
pub(crate) struct Framed {
    /// The log index of the entry, `None` for other records.
    pub index: Option<u64>,
    /// Header and payload.
    pub bytes: Vec<u8>,
}

/// What the log holds after recovery.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The entries, by index, in log order (later writes of an index win).
    pub entries: BTreeMap<u64, Entry>,
    /// The last committed log id found, if any was written.
    pub committed: Option<Option<LogId>>,
    /// Bytes cut from the tail of the last segment (a torn write).
    pub torn_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    /// Bytes in the file, buffered bytes included for the active segment.
    len: u64,
    /// (index, offset) of each entry record, in file order.
    entries: Vec<(u64, u64)>,
}

/// The open write-ahead log: a directory of segments, the last one active.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Never empty.
    segments: Vec<Segment>,
    active: File,
    /// Framed records written by [`Wal::write`] and not yet handed to the file.
    buffer: Vec<u8>,
    /// Bytes handed to the file but not yet synced, or buffered.
    dirty: bool,
    /// The last committed id written, repeated at the start of each segment.
    committed: Option<Option<LogId>>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { op, path, source }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}.{EXT}"))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}

/// The segments in `dir`, by id.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let item = item.map_err(io_err("listing", dir))?;
        let path = item.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
            continue;
        }
        if let Some(id) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()) {
            found.push((id, path));
        }
    }
    found.sort_by_key(|(id, _)| *id);
    Ok(found)
}

impl Wal {
    /// Opens the log in `dir` (created if missing), recovers what it holds
    /// and cuts a torn tail. Entries at or below `last_purged` are dropped
    /// from what is returned.
    pub(crate) fn open(
        dir: &Path,
        options: WalOptions,
        last_purged: Option<u64>,
    ) -> Result<(Wal, Recovered), WalError> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let listed = list_segments(dir)?;
        let mut recovered = Recovered::default();
        let mut segments = Vec::with_capacity(listed.len().max(1));
        let count = listed.len();
        // The index of the last entry kept: kept entries follow each other
        // without holes (a rewrite after a truncation restarts lower, never
        // higher; purged entries may precede them with any index).
        let mut previous: Option<u64> = None;
        let mut expected_id: Option<u64> = None;
        for (n, (id, path)) in listed.into_iter().enumerate() {
            if let Some(want) = expected_id
                && id != want
            {
                // Purging removes the oldest segments, truncating the newest:
                // a gap means a segment vanished.
                return Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("segment {want} before it is missing"),
                });
            }
            expected_id = Some(id + 1);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err("reading", &path))?;
            let (records, bad) = parse(&bytes);
            let mut len = bytes.len() as u64;
            if let Some((offset, reason)) = bad {
                if n + 1 != count {
                    return Err(WalError::Corrupt {
                        path,
                        offset,
                        reason: format!("{reason} in a segment that is not the last one"),
                    });
                }
                match scan_for_record(&bytes, offset as usize) {
                    Scan::Nothing => {}
                    Scan::Found(at) => {
                        return Err(WalError::Corrupt {
                            path,
                            offset,
                            reason: format!(
                                "{reason}, with a valid record after it at byte offset {at}: not a torn tail"
                            ),
                        });
                    }
                    Scan::GaveUp(at) => {
                        return Err(WalError::Corrupt {
                            path,
                            offset,
                            reason: format!(
                                "{reason}; the bytes after it could not be checked past byte offset {at}"
                            ),
                        });
                    }
                }
                tracing::warn!(segment = %path.display(), offset, %reason, "cutting a torn write-ahead log tail");
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err("opening", &path))?;
                f.set_len(offset).map_err(io_err("truncating", &path))?;
                f.sync_all().map_err(io_err("syncing", &path))?;
                recovered.torn_bytes = len - offset;
                len = offset;
            }
            let mut entries = Vec::new();
            for (offset, record) in records {
                match record {
                    Record::Entry(entry) => {
                        let index = entry.log_id.index;
                        entries.push((index, offset));
                        // A rewrite of an index replaces it and everything after.
                        drop(recovered.entries.split_off(&index));
                        if last_purged.is_none_or(|p| index > p) {
                            if let Some(prev) = previous
                                && index > prev + 1
                            {
                                return Err(WalError::Corrupt {
                                    path,
                                    offset,
                                    reason: format!(
                                        "entry {index} follows entry {prev}: the entries between are missing"
                                    ),
                                });
                            }
                            previous = Some(index);
                            recovered.entries.insert(index, entry);
                        }
                    }
                    Record::Committed(c) => recovered.committed = Some(c),
                }
            }
            segments.push(Segment { id, path, len, entries });
        }
        if segments.is_empty() {
            let path = segment_path(dir, 1);
            segments.push(Segment { id: 1, path, len: 0, entries: Vec::new() });
        }
        let last = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let active =
            OpenOptions::new().create(true).append(true).open(&last).map_err(io_err("opening", &last))?;
        if count == 0 {
            active.sync_all().map_err(io_err("syncing", &last))?;
            sync_dir(dir)?;
        }
        let wal = Wal {
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            buffer: Vec::new(),
            dirty: false,
            committed: recovered.committed,
        };
        Ok((wal, recovered))
    }

    fn active_segment(&mut self) -> Result<&mut Segment, WalError> {
        self.segments.last_mut().ok_or(WalError::NoSegment)
    }

    fn active_path(&self) -> PathBuf {
        self.segments.last().map_or_else(|| self.dir.clone(), |s| s.path.clone())
    }

    /// Queues `record` at the end of the log, starting a new segment first
    /// if the active one is full. Durable after [`Wal::sync`].
    pub(crate) fn write(&mut self, record: &Framed) -> Result<(), WalError> {
        let limit = self.options.segment_size;
        let full = {
            let seg = self.active_segment()?;
            seg.len >= limit && seg.len > 0
        };
        if full {
            self.roll()?;
        }
        let seg = self.active_segment()?;
        if let Some(index) = record.index {
            seg.entries.push((index, seg.len));
        }
        seg.len += record.bytes.len() as u64;
        self.buffer.extend_from_slice(&record.bytes);
        self.dirty = true;
        Ok(())
    }

    /// Queues the committed log id (see [`Wal::write`]).
    pub(crate) fn write_committed(&mut self, committed: Option<LogId>) -> Result<(), WalError> {
        let bytes = frame(&Record::Committed(committed))?;
        self.write(&Framed { index: None, bytes })?;
        self.committed = Some(committed);
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), WalError> {
        if !self.buffer.is_empty() {
            let written = self.active.write_all(&self.buffer);
            written.map_err(|source| WalError::Io { op: "writing", path: self.active_path(), source })?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Writes what is queued and makes it durable with one `fdatasync`.
    pub(crate) fn sync(&mut self) -> Result<(), WalError> {
        if !self.dirty {
            return Ok(());
        }
        self.flush_buffer()?;
        let synced = self.active.sync_data();
        synced.map_err(|source| WalError::Io { op: "syncing", path: self.active_path(), source })?;
        self.dirty = false;
        Ok(())
    }

    /// True if records were written since the last [`Wal::sync`].
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Closes the active segment (synced) and starts the next one, which
    /// begins with the committed id.
    fn roll(&mut self) -> Result<(), WalError> {
        self.sync()?;
        let id = self.active_segment()?.id + 1;
        let path = segment_path(&self.dir, id);
        self.active = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment { id, path, len: 0, entries: Vec::new() });
        if let Some(c) = self.committed {
            self.write_committed(c)?;
        }
        Ok(())
    }

    /// Deletes the entries from `index` on, durably: later segments are
    /// removed and the segment holding the first such entry is cut there.
    pub(crate) fn truncate(&mut self, index: u64) -> Result<(), WalError> {
        self.sync()?;
        let Some(pos) = self.segments.iter().position(|s| s.entries.iter().any(|&(i, _)| i >= index)) else {
            return Ok(());
        };
        // Newest first: a crash half way leaves a prefix of the log.
        while self.segments.len() > pos + 1 {
            if let Some(seg) = self.segments.pop() {
                std::fs::remove_file(&seg.path).map_err(io_err("removing", &seg.path))?;
            }
        }
        let seg = self.segments.get_mut(pos).ok_or(WalError::NoSegment)?;
        let cut = seg.entries.iter().position(|&(i, _)| i >= index).unwrap_or(seg.entries.len());
        let offset = seg.entries.get(cut).map_or(seg.len, |&(_, o)| o);
        seg.entries.truncate(cut);
        seg.len = offset;
        let path = seg.path.clone();
        self.active = OpenOptions::new().append(true).open(&path).map_err(io_err("opening", &path))?;
        self.active.set_len(offset).map_err(io_err("truncating", &path))?;
        self.active.sync_all().map_err(io_err("syncing", &path))?;
        sync_dir(&self.dir)?;
        // The committed id may have been written after the cut.
        if let Some(c) = self.committed {
            self.write_committed(c)?;
            self.sync()?;
        }
        Ok(())
    }

    /// Removes every closed segment whose entries are all at or below
    /// `index`. The caller has made the purge durable first (the last
    /// purged id), so entries left in a partly purged segment are skipped
    /// on recovery.
    pub(crate) fn purge(&mut self, index: u64) -> Result<(), WalError> {
        let mut removed = false;
        while self.segments.len() > 1
            && self.segments.first().is_some_and(|s| s.entries.last().is_none_or(|&(i, _)| i <= index))
        {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path).map_err(io_err("removing", &seg.path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The ids of the segments on disk, oldest first.
    #[cfg(test)]
    pub(crate) fn segment_ids(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.id).collect()
    }
}
