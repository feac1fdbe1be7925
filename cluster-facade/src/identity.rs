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
/// when there is no data directory. `named` is the member id the member's
/// certificate names, if it names one: a new data directory adopts it, one
/// that holds another member id is refused (the certificate is another
/// member's, or the data directory is).
pub(crate) fn load_or_create(
    data_dir: Option<&Path>,
    named: Option<MemberId>,
) -> Result<MemberId, ClusterError> {
    let Some(dir) = data_dir else { return Ok(named.unwrap_or_else(MemberId::generate)) };
    let err = |reason: String| ClusterError::DataDir { path: dir.display().to_string(), reason };
    fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let path = dir.join(MEMBER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let held: MemberId =
                text.trim().parse().map_err(|e| err(format!("{MEMBER_ID_FILE} is corrupt: {e}")))?;
            match named {
                Some(named) if named != held => {
                    Err(ClusterError::IdentityMismatch { data_dir: dir.display().to_string(), held, named })
                }
                _ => Ok(held),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = named.unwrap_or_else(MemberId::generate);
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
        let a = load_or_create(Some(dir.path()), None).unwrap();
        let b = load_or_create(Some(dir.path()), None).unwrap();
        assert_eq!(a, b);
        assert_ne!(load_or_create(None, None).unwrap(), a);
    }

    #[test]
    fn a_corrupt_id_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MEMBER_ID_FILE), "garbage").unwrap();
        let err = load_or_create(Some(dir.path()), None).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn the_id_a_certificate_names_is_adopted_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let named = MemberId::generate();
        assert_eq!(load_or_create(Some(dir.path()), Some(named)).unwrap(), named, "a new data dir adopts it");
        assert_eq!(load_or_create(Some(dir.path()), Some(named)).unwrap(), named);
        assert_eq!(load_or_create(Some(dir.path()), None).unwrap(), named, "kept without a certificate id");
        let other = MemberId::generate();
        let err = load_or_create(Some(dir.path()), Some(other)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&named.to_string()) && text.contains(&other.to_string()), "{text}");
        assert_eq!(load_or_create(None, Some(other)).unwrap(), other, "in memory too");
    }
}
