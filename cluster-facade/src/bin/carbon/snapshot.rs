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
use cluster_facade::core::{ConsensusLimits, WriteOp, WriteRequest, Writer, keys};
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

/// The file's bytes for `doc`.
fn encode(doc: &Document) -> Result<Vec<u8>, Failure> {
    let body = serde_json::to_vec(doc).map_err(|e| Failure::other(e.into()))?;
    let mut out =
        format!("{MAGIC} {VERSION} crc32 {:08x} bytes {}\n", crc32fast::hash(&body), body.len()).into_bytes();
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
    let got = crc32fast::hash(body);
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

/// The user entries of `doc`, decoded and checked against `quota`: every
/// problem is found before anything is written (a usage error naming them).
fn user_entries(
    file: &Path,
    doc: &Document,
    quota: &ConsensusLimits,
) -> Result<Vec<(String, Vec<u8>)>, Failure> {
    let mut values = Vec::with_capacity(doc.entries.len());
    let mut problems = Vec::new();
    for e in doc.entries.iter().filter(|e| !keys::is_reserved(&e.key)) {
        if e.key.is_empty() {
            problems.push("an entry has an empty key".to_owned());
        } else if e.key.len() > quota.max_key_bytes {
            problems.push(format!(
                "the key {:?}… is over quota.max_key_bytes ({})",
                short(&e.key),
                quota.max_key_bytes
            ));
        }
        match BASE64.decode(&e.value_base64) {
            Ok(v) if v.len() > quota.max_value_bytes => problems.push(format!(
                "the value of {:?} is {} bytes, over quota.max_value_bytes ({})",
                short(&e.key),
                v.len(),
                quota.max_value_bytes
            )),
            Ok(v) => values.push((e.key.clone(), v)),
            Err(err) => problems.push(format!("the value of {:?} is not base64: {err}", short(&e.key))),
        }
    }
    if problems.is_empty() {
        return Ok(values);
    }
    let more = problems.len().saturating_sub(5);
    problems.truncate(5);
    Err(Failure::usage(format!(
        "{} cannot be restored, nothing was written: {}{}",
        file.display(),
        problems.join("; "),
        if more > 0 { format!(" (and {more} more)") } else { String::new() }
    )))
}

/// A key as an error message shows it: its first 64 characters.
fn short(key: &str) -> String {
    key.chars().take(64).collect()
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
    // A one-member cluster on loopback, for as long as the writes take.
    let config =
        ClusterConfig { cluster_id, data_dir: Some(data_dir.to_owned()), ..ClusterConfig::default() };
    config.validate().map_err(|e| Failure::usage(e.to_string()))?;
    let values = user_entries(file, &doc, &config.quota)?;
    let existed = data_dir.exists();
    let non_empty = std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if non_empty {
        return Err(Failure::usage(format!(
            "{} is not empty: a restore starts a new cluster in a new data directory",
            data_dir.display()
        )));
    }
    match write_new_cluster(config, &doc, &values).await {
        Ok((revision, member_id)) => {
            report(data_dir, &doc, values.len(), revision, member_id, json);
            Ok(())
        }
        Err(failure) => {
            // Nothing half-built stays behind: the directory is as it was.
            let cleaned = if existed {
                std::fs::read_dir(data_dir).and_then(|entries| {
                    entries.flatten().try_for_each(|e| {
                        let p = e.path();
                        if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) }
                    })
                })
            } else {
                std::fs::remove_dir_all(data_dir)
            };
            if let Err(e) =
                cleaned.or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            {
                tracing::warn!(dir = %data_dir.display(), error = %e, "could not remove the unfinished restore");
            }
            Err(failure)
        }
    }
}

/// Starts the new cluster's first member on `config`, writes `values` so
/// that the store ends at the backup's revision, and stops it. The store's
/// revision at the end, and the member's id.
///
/// Each key is written anew, so without care the revision would be the new
/// cluster's own writes plus the number of keys, whatever the backup's was
/// (57 became 18): equal to it, or close (33 → 34), only when the old
/// cluster's history happened to be as short. Once the keys are written the
/// revision is raised to the backup's, so a watch position saved against the
/// old cluster never points into the new one's past. (Only when the new
/// cluster's own writes already went past it does it end higher.)
async fn write_new_cluster(
    config: ClusterConfig,
    doc: &Document,
    values: &[(String, Vec<u8>)],
) -> Result<(u64, cluster_facade::MemberId), Failure> {
    let member = Cluster::start(config).await.map_err(|e| {
        Failure::other(anyhow::Error::new(e).context("cannot start the new cluster's first member"))
    })?;
    let store = member.store().clone();
    let written = async {
        for (k, v) in values {
            store.set(k, v.clone()).await?;
        }
        let advance = WriteRequest::new(WriteOp::AdvanceRevision { revision: doc.revision });
        // The revision is the cluster's own: written as the cluster, by
        // this new cluster's first member (it leads, so it runs locally).
        store.write_as(Writer::Cluster, advance).await?.into_revision()
    }
    .await
    .map_err(|e| Failure::other(anyhow::Error::new(e).context("restoring the keys")));
    let member_id = member.member_id();
    let stopped = member.shutdown().await.map_err(|e| Failure::other(e.into()));
    let revision = written?;
    stopped?;
    Ok((revision, member_id))
}

fn report(
    data_dir: &Path,
    doc: &Document,
    keys: usize,
    revision: u64,
    member_id: cluster_facade::MemberId,
    json: bool,
) {
    if json {
        print_json(serde_json::json!({
            "data_dir": data_dir.display().to_string(),
            "keys": keys,
            "backup_revision": doc.revision,
            "revision": revision,
            "member_id": member_id.to_string(),
        }));
    } else {
        println!(
            "restored {keys} keys at revision {revision} (the backup's: {}) into {}; start the new cluster with `carbon agent --data-dir {}` and no seeds",
            doc.revision,
            data_dir.display(),
            data_dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_the_ieee_crc32_older_files_carry() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
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
