//! The member's identity: its member id, created once and kept in the data
//! directory, and the generation of this incarnation.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cluster_core::MemberId;

use crate::error::ClusterError;

const MEMBER_ID_FILE: &str = "member_id";

/// The member id kept in `data_dir`, created there on first use; a fresh one
/// when there is no data directory.
pub(crate) fn load_or_create(data_dir: Option<&Path>) -> Result<MemberId, ClusterError> {
    let Some(dir) = data_dir else { return Ok(MemberId::generate()) };
    let err = |reason: String| ClusterError::DataDir { path: dir.display().to_string(), reason };
    fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let path = dir.join(MEMBER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| err(format!("{MEMBER_ID_FILE} is corrupt: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = MemberId::generate();
            // Write-then-rename, so a crash never leaves a half-written id.
            let tmp = dir.join(format!("{MEMBER_ID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| err(format!("cannot write {MEMBER_ID_FILE}: {e}")))?;
            Ok(id)
        }
        Err(e) => Err(err(format!("cannot read {MEMBER_ID_FILE}: {e}"))),
    }
}

/// The generation of this incarnation: grows across restarts.
pub(crate) fn generation() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(Some(dir.path())).unwrap();
        let b = load_or_create(Some(dir.path())).unwrap();
        assert_eq!(a, b);
        assert_ne!(load_or_create(None).unwrap(), a);
    }

    #[test]
    fn a_corrupt_id_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MEMBER_ID_FILE), "garbage").unwrap();
        let err = load_or_create(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
