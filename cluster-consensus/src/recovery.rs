//! Raft-safe recovery of a member whose raft state is corrupt or lost.
//!
//! This module owns the **reset**: the raft state directory is moved aside
//! (renamed with a timestamp, never deleted), an empty one takes its place
//! with a marker file holding a fresh *reset id*, and the member identity
//! (the member id, kept by the facade outside this directory) stays. While
//! the marker is there the member is *reset pending*: it
//!
//! - refuses every vote request ([`VoteGate`], answered on the raft port with
//!   a refusal that says why), and never stands for election (openraft's
//!   `enable_elect` is off);
//! - still accepts the leader's entries and snapshots, so it catches up;
//! - publishes the reset id (the facade puts it in a gossip tag), so the
//!   leader takes it out of the voters (it stays a nonvoter) and then writes
//!   `carbon-grid/raft_reset/<member id>` = the reset id.
//!
//! Once the member has applied that key with its own reset id, it removes
//! the marker, votes and stands for election again, and the leader's normal
//! promotion makes it a voter again.
//!
//! # Why this is safe
//!
//! A member that restarts with a lost or cut log but is still counted as a
//! voter breaks raft in two ways:
//!
//! - **a lost vote means a double vote**: it may have voted for one
//!   candidate in term `t` before; with its vote forgotten it can vote for
//!   another in the same term, and two leaders of term `t` can be elected;
//! - **lost acknowledged entries mean committed entry loss**: an entry it
//!   acknowledged may have been committed with its help; with the entry gone
//!   it grants its vote to a candidate that lacks it, and that candidate
//!   becomes leader and overwrites a committed entry — an acknowledged
//!   write vanishes.
//!
//! Both hazards are in its **votes** (its acknowledgements of appends after
//! the reset are truthful: it holds what it acknowledges). So the member
//! does not vote until:
//!
//! 1. a configuration without it among the voters was **committed** (joint
//!    consensus: by a majority of the old voters and a majority of the new
//!    ones, none of which counts it) after it last voted — the leader took
//!    it out (or had already removed it while it was down) and wrote the key
//!    only after that, and the key carries a reset id made at the reset, so
//!    no note from an older reset qualifies. Any
//!    election its lost vote could have decided had a majority of the old
//!    voters at that term or later, and that majority meets the majority
//!    that committed the configuration: the leader that committed it, and
//!    every later one, has a term at least as high. The member accepted that
//!    leader's entries, so its vote is at that term, and it never votes in a
//!    lower one;
//! 2. it holds that configuration entry and the key written after it in its
//!    log: by log matching it holds every entry committed before them, and
//!    every entry committed after them was committed without it or with a
//!    truthful acknowledgement. Its log hides nothing any more.
//!
//! From then on it is an ordinary nonvoter, and promoting it is the
//! ordinary, safe promotion of a nonvoter that has the log.
//!
//! If the member cannot be taken out of the voters (a majority of the voters
//! is down or corrupt too), it stays pending and the cluster stays without
//! a quorum: unavailable, but no acknowledged write is lost or served as
//! missing. `docs/recovery.md` tells the operator what can be done then.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The marker file in the raft state directory while a reset is pending; it
/// holds the reset id.
pub const RESET_MARKER: &str = "RESET_PENDING";

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Where the old raft state now is (`None`: there was none).
    pub moved_to: Option<PathBuf>,
    /// The reset id the member publishes until it is out of the voters.
    pub reset_id: String,
}

/// Why a reset or reading its marker failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The marker file does not hold a reset id.
    #[error("the reset marker {} is unreadable: {reason}", path.display())]
    BadMarker {
        /// The marker file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ResetError {
    let path = path.to_path_buf();
    move |source| ResetError::Io { op, path, source }
}

fn sync_dir(dir: &Path) -> Result<(), ResetError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}

/// `secs` since the epoch as `YYYYMMDDTHHMMSSZ` (UTC).
fn utc_stamp(secs: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Moves the raft state in `raft_dir` aside and leaves an empty state with
/// a pending reset in its place. The old directory is renamed to
/// `<raft_dir>.reset-<UTC time>` next to it; nothing is deleted. Running it
/// again while a reset is pending starts a new reset (with a new id).
pub fn reset_raft_state(raft_dir: &Path, now: SystemTime) -> Result<ResetReport, ResetError> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp = utc_stamp(since.as_secs());
    let reset_id = format!("{stamp}-{:09}", since.subsec_nanos());
    let parent = match raft_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        raft_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "raft".into());
    let moved_to = if raft_dir.exists() {
        let mut target = parent.join(format!("{name}.reset-{stamp}"));
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = parent.join(format!("{name}.reset-{stamp}-{n}"));
        }
        fs::rename(raft_dir, &target).map_err(io_err("moving aside", raft_dir))?;
        Some(target)
    } else {
        None
    };
    fs::create_dir_all(raft_dir).map_err(io_err("creating", raft_dir))?;
    let marker = raft_dir.join(RESET_MARKER);
    let tmp = raft_dir.join(format!("{RESET_MARKER}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{reset_id}")?;
        f.sync_all()?;
        fs::rename(&tmp, &marker)
    };
    write().map_err(io_err("writing", &marker))?;
    sync_dir(raft_dir)?;
    sync_dir(&parent)?;
    Ok(ResetReport { moved_to, reset_id })
}

/// The reset id if a reset of the raft state in `raft_dir` is pending.
pub fn pending_reset(raft_dir: &Path) -> Result<Option<String>, ResetError> {
    let marker = raft_dir.join(RESET_MARKER);
    match fs::read_to_string(&marker) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ResetError::BadMarker {
                    path: marker,
                    reason: format!("{id:?} is not a reset id"),
                });
            }
            Ok(Some(id.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &marker)(e)),
    }
}

/// Ends a pending reset: the member may vote again.
pub fn clear_reset(raft_dir: &Path) -> Result<(), ResetError> {
    let marker = raft_dir.join(RESET_MARKER);
    match fs::remove_file(&marker) {
        Ok(()) => sync_dir(raft_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &marker)(e)),
    }
}

/// Whether this member answers vote requests; shared by the raft port and
/// the store. Closed (with the reset id) while a reset is pending.
#[derive(Debug, Clone)]
pub struct VoteGate {
    pending: Arc<watch::Sender<Option<String>>>,
}

impl VoteGate {
    /// A gate closed while `pending` holds a reset id.
    pub fn new(pending: Option<String>) -> Self {
        VoteGate { pending: Arc::new(watch::channel(pending).0) }
    }

    /// An open gate: the member votes.
    pub fn open() -> Self {
        Self::new(None)
    }

    /// The reset id while votes are refused.
    pub fn pending(&self) -> Option<String> {
        self.pending.borrow().clone()
    }

    /// Why a vote request is refused, or `None` to answer it.
    pub fn refusal(&self) -> Option<String> {
        self.pending().map(|id| {
            format!(
                "vote refused: this member's raft state was reset (reset {id}); it does not vote until the \
                 leader has taken it out of the voters and it has caught up"
            )
        })
    }

    /// Lets votes through from now on.
    pub fn release(&self) {
        self.pending.send_replace(None);
    }

    /// Changes of the pending reset id.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.pending.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_796_166_312), "20261201T230512Z");
    }

    #[test]
    fn a_reset_moves_the_state_aside_and_marks_it_pending() {
        let dir = tempfile::tempdir().unwrap();
        let raft = dir.path().join("raft");
        fs::create_dir_all(raft.join("raft-log")).unwrap();
        fs::write(raft.join("raft.redb"), b"old state").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_796_166_312);

        let report = reset_raft_state(&raft, now).unwrap();
        let moved = report.moved_to.clone().unwrap();
        assert_eq!(moved, dir.path().join("raft.reset-20261201T230512Z"));
        assert_eq!(fs::read(moved.join("raft.redb")).unwrap(), b"old state", "kept, not deleted");
        assert_eq!(pending_reset(&raft).unwrap(), Some(report.reset_id.clone()));
        let names: Vec<_> = fs::read_dir(&raft).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(RESET_MARKER)], "a fresh state");

        // Again in the same second: another directory, another id.
        let again = reset_raft_state(&raft, now + Duration::from_nanos(5)).unwrap();
        assert_eq!(again.moved_to.unwrap(), dir.path().join("raft.reset-20261201T230512Z-2"));
        assert_ne!(again.reset_id, report.reset_id);

        clear_reset(&raft).unwrap();
        assert_eq!(pending_reset(&raft).unwrap(), None);
        clear_reset(&raft).unwrap();
    }

    #[test]
    fn a_garbled_marker_is_an_error_not_a_silent_vote() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(RESET_MARKER), "\u{0}\u{1} nonsense").unwrap();
        assert!(matches!(pending_reset(dir.path()), Err(ResetError::BadMarker { .. })));
    }

    #[test]
    fn the_gate_refuses_while_pending() {
        let gate = VoteGate::new(Some("r1".into()));
        assert!(gate.refusal().unwrap().contains("reset"));
        let changes = gate.subscribe();
        gate.release();
        assert!(changes.has_changed().unwrap());
        assert_eq!(gate.refusal(), None);
        assert_eq!(VoteGate::open().pending(), None);
    }
}
