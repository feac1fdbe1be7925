//! The data directory's permissions: private to the member's user.
//!
//! The raft log holds user values in clear, so the directory and everything
//! under it is `0700` (directories) and `0600` (files), as etcd keeps its
//! own. A directory is created with that mode; one made by an older version
//! (or by hand) is tightened when the member starts, and said so once.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use tracing::warn;

/// The mode of every directory under the data directory.
pub(crate) const DIR_MODE: u32 = 0o700;
/// The mode of every file under the data directory.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with [`DIR_MODE`].
pub(crate) fn create_private(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Takes group and other permissions away from `dir` and everything under
/// it; returns how many entries it changed. Symbolic links are left alone
/// (their own mode means nothing; what they point to is not ours).
pub(crate) fn tighten(dir: &Path) -> io::Result<usize> {
    let mut changed = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        // The data directory itself may be a link to where the data lives.
        let meta = if path == dir { fs::metadata(&path)? } else { fs::symlink_metadata(&path)? };
        let kind = meta.file_type();
        let allowed = if kind.is_dir() {
            DIR_MODE
        } else if kind.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & !allowed != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & allowed))?;
            changed += 1;
        }
        if kind.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Makes `dir` private before the member uses it: created with
/// [`DIR_MODE`], or tightened (one warning, with the count) when it existed
/// with wider permissions.
pub(crate) fn prepare(dir: &Path) -> io::Result<()> {
    create_private(dir)?;
    let changed = tighten(dir)?;
    if changed > 0 {
        // A warning: others could read the member's data until now.
        warn!(
            data_dir = %dir.display(),
            entries = changed,
            "tightened the data directory's permissions to 0700 (directories) and 0600 (files)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
    }

    #[test]
    fn an_open_directory_is_tightened_and_private_modes_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir_all(dir.join("raft/raft-log")).unwrap();
        fs::write(dir.join("raft/raft-log/0001.wal"), b"values in clear").unwrap();
        fs::write(dir.join("key"), b"k").unwrap();
        for (p, m) in [("", 0o755), ("raft", 0o775), ("raft/raft-log", 0o755)] {
            fs::set_permissions(dir.join(p), fs::Permissions::from_mode(m)).unwrap();
        }
        fs::set_permissions(dir.join("raft/raft-log/0001.wal"), fs::Permissions::from_mode(0o644)).unwrap();
        // Already narrower than 0600: left as it is.
        fs::set_permissions(dir.join("key"), fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(tighten(&dir).unwrap(), 4);
        for p in ["", "raft", "raft/raft-log"] {
            assert_eq!(mode(&dir.join(p)), DIR_MODE, "{p}");
        }
        assert_eq!(mode(&dir.join("raft/raft-log/0001.wal")), FILE_MODE);
        assert_eq!(mode(&dir.join("key")), 0o400);
        assert_eq!(tighten(&dir).unwrap(), 0, "a second pass finds nothing to do");
    }

    #[test]
    fn a_data_dir_given_as_a_link_is_tightened_where_it_points() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("wal"), b"x").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(real.join("wal"), fs::Permissions::from_mode(0o644)).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(tighten(&link).unwrap(), 2);
        assert_eq!((mode(&real), mode(&real.join("wal"))), (DIR_MODE, FILE_MODE));
    }
}
