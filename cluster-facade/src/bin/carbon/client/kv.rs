//! `carbon kv get | set | delete | list | cas` (and `watch`, in its own
//! file): the consistent key-value store.

use std::io::Read;
use std::path::PathBuf;

use cluster_facade::core::keys;
use serde_json::json;

use super::{Target, client, failed, json_entry, print_json, text};
use crate::exit::Failure;

/// `carbon kv` operations.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KvCommand {
    /// Print a key's value (a linearizable read at the leader, unless
    /// --stale); exit 1 if it does not exist.
    Get {
        /// The key.
        key: String,
        /// Read the member's local state instead: no trip to the leader, but
        /// possibly behind the latest writes.
        #[arg(long)]
        stale: bool,
        /// Accepted for scripts written when reads were stale by default:
        /// reads are linearizable now.
        #[arg(long, hide = true, conflicts_with = "stale")]
        consistent: bool,
        /// Also print the key's create and last-change revision: a line
        /// `create_revision C mod_revision M` before the value (with --json,
        /// the fields `create_revision` and `mod_revision`).
        #[arg(long)]
        print_revision: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Set a key. The value is the argument, `-` for standard input, or
    /// `--file F` (for values too long for a command line, or binary).
    Set {
        /// The key (not empty).
        key: String,
        /// The value; `-` reads it from standard input.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file, byte for byte.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key, or with --prefix every key under a prefix in one
    /// change; exit 1 if nothing was deleted.
    Delete {
        /// The key.
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<String>,
        /// Delete every key under this prefix (not empty, not under
        /// `carbon-grid/`) at one revision, and print how many.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the keys under a prefix with their values (the cluster's own
    /// `carbon-grid/` records only with `--all`).
    List {
        /// The prefix ("" lists every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Also list the records the cluster keeps for itself under `carbon-grid/`.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print every change under a prefix, one line each, until interrupted
    /// (Ctrl-C exits 0). Goes on at another `--service` when a member dies,
    /// missing and repeating nothing.
    Watch {
        /// The prefix ("" watches every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Start at this revision, replaying the changes since (`kv list
        /// --json` gives the revision it read at: watch from it + 1).
        /// Without it, changes from now on.
        #[arg(long, value_name = "R")]
        from_revision: Option<u64>,
        /// Also the records the cluster keeps for itself under `carbon-grid/`.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Compare-and-set: set KEY to NEW only if it holds OLD (or is absent); exit 1 if not.
    Cas {
        /// The key.
        key: String,
        /// The new value; `-` reads it from standard input.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        new: Option<String>,
        /// Read the new value from this file, byte for byte.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// The value the key must hold.
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expect: Option<String>,
        /// The key must not exist.
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// `carbon kv …`.
pub(crate) async fn run(cmd: KvCommand) -> Result<(), Failure> {
    match cmd {
        KvCommand::Get { key, stale, consistent: _, print_revision: true, target } => {
            let v = match client(&target)?.get_with_meta(&key, !stale).await {
                Ok(v) => v,
                Err(e) => return Err(failed(&target, e).await),
            };
            let Some((v, meta)) = v else {
                if target.json {
                    print_json(json_entry(&key, None));
                }
                return Err(Failure::not_found(format!("key {key:?} not found")));
            };
            if target.json {
                let mut entry = json_entry(&key, Some(&v));
                if let serde_json::Value::Object(o) = &mut entry {
                    o.insert("create_revision".into(), json!(meta.create_revision));
                    o.insert("mod_revision".into(), json!(meta.mod_revision));
                }
                print_json(entry);
            } else {
                println!("create_revision {} mod_revision {}", meta.create_revision, meta.mod_revision);
                println!("{}", text(&v));
            }
        }
        KvCommand::Get { key, stale, consistent: _, print_revision: false, target } => {
            let c = client(&target)?;
            let v = if stale { c.get(&key).await } else { c.consistent_get(&key).await };
            let v = match v {
                Ok(v) => v,
                Err(e) => return Err(failed(&target, e).await),
            };
            if target.json {
                print_json(json_entry(&key, v.as_deref()));
            } else if let Some(v) = &v {
                println!("{}", text(v));
            }
            if v.is_none() {
                return Err(Failure::not_found(format!("key {key:?} not found")));
            }
        }
        KvCommand::Set { key, value, file, target } => {
            let value = value_bytes(value, file)?;
            let created = match client(&target)?.set(&key, value).await {
                Ok(c) => c,
                Err(e) => return Err(failed(&target, e).await),
            };
            if target.json {
                print_json(json!({ "key": key, "created": created }));
            } else {
                println!("{}", if created { "created" } else { "updated" });
            }
        }
        KvCommand::Delete { key: None, prefix: Some(prefix), target } => {
            let count = match client(&target)?.delete_prefix(&prefix).await {
                Ok(n) => n,
                Err(e) => return Err(failed(&target, e).await),
            };
            if target.json {
                print_json(json!({ "prefix": prefix, "deleted": count > 0, "count": count }));
            }
            if count == 0 {
                return Err(Failure::not_found(format!("no key under {prefix:?}")));
            }
            if !target.json {
                println!("deleted {count}");
            }
        }
        KvCommand::Delete { key, prefix: _, target } => {
            let key = key.unwrap_or_default();
            let existed = match client(&target)?.delete(&key).await {
                Ok(e) => e,
                Err(e) => return Err(failed(&target, e).await),
            };
            if target.json {
                print_json(json!({ "key": key, "deleted": existed }));
            }
            if !existed {
                return Err(Failure::not_found(format!("key {key:?} not found")));
            }
            if !target.json {
                println!("deleted");
            }
        }
        KvCommand::List { prefix, all, target } => {
            let (revision, kvs) = match client(&target)?.get_prefix_with_revision(&prefix).await {
                Ok(answer) => answer,
                Err(e) => return Err(failed(&target, e).await),
            };
            let shown = kvs.iter().filter(|(k, _)| all || !keys::is_reserved(k));
            if target.json {
                let items: Vec<_> = shown.map(|(k, v)| json_entry(k, Some(v))).collect();
                print_json(json!({ "revision": revision, "entries": items }));
            } else {
                for (k, v) in shown {
                    println!("{k}\t{}", text(v));
                }
            }
        }
        KvCommand::Watch { prefix, from_revision, all, target } => {
            return super::watch::run(&prefix, from_revision, all, &target).await;
        }
        KvCommand::Cas { key, new, file, expect, absent, target } => {
            let expected = if absent { None } else { expect.map(String::into_bytes) };
            let new = value_bytes(new, file)?;
            let out = match client(&target)?.compare_and_set(&key, expected, Some(new)).await {
                Ok(o) => o,
                Err(e) => return Err(failed(&target, e).await),
            };
            let current = out.current.as_deref().map(text);
            if target.json {
                print_json(json!({ "key": key, "succeeded": out.succeeded, "current": current }));
            } else if out.succeeded {
                println!("set");
            }
            if !out.succeeded {
                return Err(Failure::not_found(format!(
                    "compare-and-set of {key:?} failed: it holds {}",
                    current.map(|c| format!("{c:?}")).unwrap_or_else(|| "nothing".into())
                )));
            }
        }
    }
    Ok(())
}

/// A value to write: the argument itself, standard input for `-`, or the
/// bytes of `file`. A file or input that cannot be read is a usage error
/// naming it.
fn value_bytes(arg: Option<String>, file: Option<PathBuf>) -> Result<Vec<u8>, Failure> {
    match (arg, file) {
        (_, Some(file)) => std::fs::read(&file)
            .map_err(|e| Failure::usage(format!("cannot read the value from {}: {e}", file.display()))),
        (Some(arg), None) if arg == "-" => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .map_err(|e| Failure::usage(format!("cannot read the value from standard input: {e}")))?;
            Ok(value)
        }
        (Some(arg), None) => Ok(arg.into_bytes()),
        // clap requires one of the two.
        (None, None) => Err(Failure::usage("give a value, `-` for standard input, or --file F")),
    }
}
