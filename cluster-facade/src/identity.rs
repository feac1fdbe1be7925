//! The member's identity: its member id, created once and kept in the data
//! directory, the cluster that data directory belongs to, and the
//! generation of this incarnation.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cluster_core::MemberId;

use crate::data_dir;
use crate::error::ClusterError;

const MEMBER_ID_FILE: &str = "member_id";
/// The cluster id the data directory's state belongs to. Its raft log, short
/// id and records mean nothing to another cluster, whose members would drop
/// this member's gossip and frames: without the check such a member ran
/// forever without ever becoming ready.
const CLUSTER_ID_FILE: &str = "cluster_id";

/// The member id kept in `data_dir`, created there on first use; a fresh one
/// when there is no data directory. `named` is the member id the member's
/// certificate names, if it names one: a new data directory adopts it, one
/// that holds another member id is refused (the certificate is another
/// member's, or the data directory is).
///
/// The data directory is made private first ([`data_dir::prepare`]), and
/// must belong to `cluster_id`: one written by another cluster is refused
/// with [`ClusterError::OtherCluster`]. A data directory from before the
/// cluster id was kept adopts `cluster_id`.
pub(crate) fn load_or_create(
    data_dir: Option<&Path>,
    cluster_id: &str,
    named: Option<MemberId>,
) -> Result<MemberId, ClusterError> {
    let Some(dir) = data_dir else { return Ok(named.unwrap_or_else(MemberId::generate)) };
    let err = |reason: String| ClusterError::DataDir { path: dir.display().to_string(), reason };
    data_dir::prepare(dir).map_err(|e| err(format!("cannot create it or make it private: {e}")))?;
    check_cluster_id(dir, cluster_id)?;
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
            write_atomically(dir, MEMBER_ID_FILE, &id.to_string())
                .map_err(|e| err(format!("cannot write {MEMBER_ID_FILE}: {e}")))?;
            Ok(id)
        }
        Err(e) => Err(err(format!("cannot read {MEMBER_ID_FILE}: {e}"))),
    }
}

/// Refuses a data directory of another cluster; records `cluster_id` in one
/// that has none yet.
fn check_cluster_id(dir: &Path, cluster_id: &str) -> Result<(), ClusterError> {
    let err = |reason: String| ClusterError::DataDir { path: dir.display().to_string(), reason };
    match fs::read_to_string(dir.join(CLUSTER_ID_FILE)) {
        Ok(text) if text.trim_end_matches('\n') == cluster_id => Ok(()),
        Ok(text) => Err(ClusterError::OtherCluster {
            path: dir.display().to_string(),
            recorded: text.trim_end_matches('\n').to_owned(),
            configured: cluster_id.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomically(dir, CLUSTER_ID_FILE, cluster_id)
                .map_err(|e| err(format!("cannot write {CLUSTER_ID_FILE}: {e}")))
        }
        Err(e) => Err(err(format!("cannot read {CLUSTER_ID_FILE}: {e}"))),
    }
}

/// Writes `line` to `dir/name` (mode 0600) through a temporary file and a
/// rename, so a crash never leaves it half written.
fn write_atomically(dir: &Path, name: &str, line: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(data_dir::FILE_MODE)
        .open(&tmp)?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

/// The generation of this incarnation: grows across restarts (a seeded
/// count in a simulation: `cluster_core::id::seeded_generation`).
pub(crate) fn generation() -> u64 {
    if let Some(generation) = cluster_core::id::seeded_generation() {
        return generation;
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(Some(dir.path()), "c", None).unwrap();
        let b = load_or_create(Some(dir.path()), "c", None).unwrap();
        assert_eq!(a, b);
        assert_ne!(load_or_create(None, "c", None).unwrap(), a);
    }

    #[test]
    fn a_corrupt_id_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MEMBER_ID_FILE), "garbage").unwrap();
        let err = load_or_create(Some(dir.path()), "c", None).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }

    #[test]
    fn a_data_dir_of_another_cluster_is_refused_naming_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(Some(dir.path()), "blue", None).unwrap();
        let err = load_or_create(Some(dir.path()), "green", None).unwrap_err();
        assert!(matches!(&err, ClusterError::OtherCluster { recorded, .. } if recorded == "blue"), "{err}");
        assert!(err.to_string().contains("\"blue\""), "{err}");
        assert_eq!(err.kind(), cluster_core::ErrorKind::Invalid);
    }

    #[test]
    fn an_old_data_dir_adopts_the_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(Some(dir.path()), "blue", None).unwrap();
        fs::remove_file(dir.path().join(CLUSTER_ID_FILE)).unwrap();
        assert_eq!(load_or_create(Some(dir.path()), "green", None).unwrap(), id);
        assert!(load_or_create(Some(dir.path()), "blue", None).is_err(), "green was recorded");
    }

    #[test]
    fn the_id_a_certificate_names_is_adopted_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let named = MemberId::generate();
        assert_eq!(
            load_or_create(Some(dir.path()), "c", Some(named)).unwrap(),
            named,
            "a new data dir adopts it"
        );
        assert_eq!(load_or_create(Some(dir.path()), "c", Some(named)).unwrap(), named);
        assert_eq!(
            load_or_create(Some(dir.path()), "c", None).unwrap(),
            named,
            "kept without a certificate id"
        );
        let other = MemberId::generate();
        let err = load_or_create(Some(dir.path()), "c", Some(other)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&named.to_string()) && text.contains(&other.to_string()), "{text}");
        assert_eq!(load_or_create(None, "c", Some(other)).unwrap(), other, "in memory too");
    }
}
