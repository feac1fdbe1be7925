//! `carbon snapshot save | restore`: a backup of the whole store, and a new
//! cluster started from one.
//!
//! A backup file is one header line, then a JSON document:
//!
//! ```text
//! carbon-snapshot 1 crc32 9a3f01c2 bytes 1234
//! {"revision":42,"saved_at_unix_ms":…,"entries":[{"key":"k","value_base64":"dg=="},…]}
//! ```
//!
//! The CRC-32 (IEEE) covers the document's exact bytes, whose length the
//! header gives, so a truncated or altered file is refused before anything
//! is written. Every value is base64, whatever it holds. The entries include
//! the cluster's own `carbon-grid/` records (for inspection); a restore
//! writes the user keys only, since the records describe members of the old
//! cluster.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_facade::core::keys;
use cluster_facade::service::protocol::{Request, Response};
use cluster_facade::{Cluster, ClusterConfig};
use serde::{Deserialize, Serialize};

use crate::client::{Target, ask, client, print_json};
use crate::exit::Failure;

const MAGIC: &str = "carbon-snapshot";
const VERSION: u32 = 1;

/// `carbon snapshot` operations.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Save a consistent copy of the whole store (read at the leader) to FILE.
    Save {
        /// Where to write the backup; replaced atomically.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Make the data directory of a new cluster's first member from a backup;
    /// then start `carbon agent --data-dir D` without seeds.
    Restore {
        /// The backup.
        file: PathBuf,
        /// The new member's data directory; must not exist or be empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// The new cluster's id.
        #[arg(long, env = "CARBON_CLUSTER_ID", default_value = "carbon-grid")]
        cluster_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Document {
    revision: u64,
    saved_at_unix_ms: u64,
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    key: String,
    value_base64: String,
}

/// CRC-32 (IEEE 802.3, reflected), as zlib computes it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The file's bytes for `doc`.
fn encode(doc: &Document) -> Result<Vec<u8>, Failure> {
    let body = serde_json::to_vec(doc).map_err(|e| Failure::other(e.into()))?;
    let mut out = format!("{MAGIC} {VERSION} crc32 {:08x} bytes {}\n", crc32(&body), body.len()).into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// The document in a file's bytes, checked; a usage error names what is wrong.
fn decode(path: &Path, bytes: &[u8]) -> Result<Document, Failure> {
    let corrupt = |why: String| Failure::usage(format!("{} is not a usable backup: {why}", path.display()));
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt("no header line".into()))?;
    let header =
        std::str::from_utf8(&bytes[..newline]).map_err(|_| corrupt("the header is not text".into()))?;
    let body = &bytes[newline + 1..];
    let words: Vec<&str> = header.split(' ').collect();
    let [magic, version, "crc32", crc, "bytes", len] = words.as_slice() else {
        return Err(corrupt(format!("unexpected header {header:?}")));
    };
    if *magic != MAGIC {
        return Err(corrupt("not a carbon snapshot".into()));
    }
    if *version != VERSION.to_string() {
        return Err(corrupt(format!("format version {version}, this program reads {VERSION}")));
    }
    let len: usize = len.parse().map_err(|_| corrupt("bad length in the header".into()))?;
    if body.len() != len {
        return Err(corrupt(format!(
            "{} bytes after the header, the header says {len} (truncated?)",
            body.len()
        )));
    }
    let want = u32::from_str_radix(crc, 16).map_err(|_| corrupt("bad checksum in the header".into()))?;
    let got = crc32(body);
    if got != want {
        return Err(corrupt(format!(
            "checksum mismatch: the file says {want:08x}, its content gives {got:08x}"
        )));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(format!("the content does not parse: {e}")))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

/// Runs a `carbon snapshot` command.
pub(crate) async fn run(cmd: SnapshotCommand) -> Result<(), Failure> {
    match cmd {
        SnapshotCommand::Save { file, target } => save(&file, &target).await,
        SnapshotCommand::Restore { file, data_dir, cluster_id, json } => {
            restore(&file, &data_dir, cluster_id, json).await
        }
    }
}

async fn save(file: &Path, t: &Target) -> Result<(), Failure> {
    let c = client(t)?;
    let (revision, entries) = match ask(t, &c, Request::Export).await? {
        Response::Export { revision, entries } => (revision, entries),
        other => return Err(Failure::other(anyhow::anyhow!("export was answered with {}", other.kind()))),
    };
    let doc = Document {
        revision,
        saved_at_unix_ms: unix_ms(),
        entries: entries
            .iter()
            .map(|(k, v)| Entry { key: k.clone(), value_base64: BASE64.encode(v) })
            .collect(),
    };
    let bytes = encode(&doc)?;
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = write_private(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::usage(format!("cannot write {}: {e}", file.display())));
    }
    let users = entries.iter().filter(|(k, _)| !keys::is_reserved(k)).count();
    if t.json {
        print_json(serde_json::json!({
            "file": file.display().to_string(),
            "revision": revision,
            "entries": entries.len(),
            "user_keys": users,
            "bytes": bytes.len(),
        }));
    } else {
        println!(
            "saved {users} keys (and {} cluster records) at revision {revision} to {}",
            entries.len() - users,
            file.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to a new file readable by its owner only (0600): a backup
/// holds every value of the store in clear.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // A leftover file keeps its mode through `open`: set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

async fn restore(file: &Path, data_dir: &Path, cluster_id: String, json: bool) -> Result<(), Failure> {
    let bytes =
        std::fs::read(file).map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    let doc = decode(file, &bytes)?;
    let mut values = Vec::with_capacity(doc.entries.len());
    for e in doc.entries.iter().filter(|e| !keys::is_reserved(&e.key)) {
        let v = BASE64.decode(&e.value_base64).map_err(|err| {
            Failure::usage(format!("{}: the value of {:?} is not base64: {err}", file.display(), e.key))
        })?;
        values.push((e.key.as_str(), v));
    }
    let non_empty = std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if non_empty {
        return Err(Failure::usage(format!(
            "{} is not empty: a restore starts a new cluster in a new data directory",
            data_dir.display()
        )));
    }
    // A one-member cluster on loopback, for as long as the writes take.
    let config =
        ClusterConfig { cluster_id, data_dir: Some(data_dir.to_owned()), ..ClusterConfig::default() };
    config.validate().map_err(|e| Failure::usage(e.to_string()))?;
    let member = Cluster::start(config).await.map_err(|e| {
        Failure::other(anyhow::Error::new(e).context("cannot start the new cluster's first member"))
    })?;
    let store = member.store().clone();
    let mut result = Ok(());
    for (k, v) in &values {
        if let Err(e) = store.set(k, v.clone()).await {
            result = Err(Failure::other(anyhow::Error::new(e).context(format!("restoring {k:?}"))));
            break;
        }
    }
    let member_id = member.member_id();
    member.shutdown().await.map_err(|e| Failure::other(e.into()))?;
    result?;
    if json {
        print_json(serde_json::json!({
            "data_dir": data_dir.display().to_string(),
            "keys": values.len(),
            "backup_revision": doc.revision,
            "member_id": member_id.to_string(),
        }));
    } else {
        println!(
            "restored {} keys (the backup's revision {}) into {}; start the new cluster with `carbon agent --data-dir {}` and no seeds",
            values.len(),
            doc.revision,
            data_dir.display(),
            data_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_file_roundtrips_and_any_change_is_refused() {
        let doc = Document {
            revision: 7,
            saved_at_unix_ms: 1,
            entries: vec![Entry { key: "k".into(), value_base64: BASE64.encode([0xff, 0]) }],
        };
        let bytes = encode(&doc).unwrap();
        let p = Path::new("b");
        assert_eq!(decode(p, &bytes).unwrap().revision, 7);
        for cut in [0, 10, bytes.len() - 1] {
            assert_eq!(decode(p, &bytes[..cut]).unwrap_err().code, crate::exit::USAGE, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        let e = decode(p, &flipped).unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        assert!(e.message.contains("checksum"), "{}", e.message);
    }
}
