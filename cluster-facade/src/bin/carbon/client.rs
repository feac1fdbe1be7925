//! `carbon members | status | kv …`: talk to any member's service port.

use cluster_facade::core::{Error, MemberInfo};
use cluster_facade::service::ClientOptions;
use cluster_facade::{ConsensusStatus, ServiceClient};
use serde_json::json;

use crate::exit::Failure;
use crate::table::{members_table, render};

/// Where and how to reach the cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// A member's service address (`host:port`); repeat to name several.
    #[arg(long = "service", value_name = "ADDR", required = true)]
    pub services: Vec<String>,
    /// The cluster id the members were started with.
    #[arg(long, default_value = "carbon-grid")]
    pub cluster_id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `carbon kv` operations.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KvCommand {
    /// Print a key's value; exit 1 if it does not exist.
    Get {
        /// The key.
        key: String,
        /// A linearizable read through the leader, instead of the member's local state.
        #[arg(long)]
        consistent: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key; exit 1 if it did not exist.
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the keys under a prefix with their values.
    List {
        /// The prefix ("" lists every key).
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        target: Target,
    },
    /// Compare-and-set: set KEY to NEW only if it holds OLD (or is absent); exit 1 if not.
    Cas {
        /// The key.
        key: String,
        /// The new value.
        new: String,
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

fn client(t: &Target) -> Result<ServiceClient, Failure> {
    ServiceClient::new(t.services.iter().cloned(), ClientOptions::new(t.cluster_id.clone()))
        .map_err(|e| Failure::usage(e.to_string()))
}

/// Maps a store error to the exit code scripts rely on.
fn failed(e: Error) -> Failure {
    match e {
        Error::Unreachable(_)
        | Error::Timeout(_)
        | Error::Io(_)
        | Error::NotLeader(_)
        | Error::ShuttingDown => Failure::unreachable(format!("cannot reach the cluster: {e}")),
        Error::BadRequest(_) => Failure::usage(e.to_string()),
        Error::QuotaExceeded { .. } => Failure::quota(e.to_string()),
        other => Failure::other(anyhow::Error::new(other)),
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// `carbon members`.
pub(crate) async fn members(t: Target) -> Result<(), Failure> {
    let members: Vec<MemberInfo> = client(&t)?.members().await.map_err(failed)?;
    if t.json {
        print_json(serde_json::to_value(&members).map_err(|e| Failure::other(e.into()))?);
    } else {
        println!("{}", members_table(&members));
    }
    Ok(())
}

/// `carbon status`.
pub(crate) async fn status(t: Target) -> Result<(), Failure> {
    let s: ConsensusStatus = client(&t)?.status().await.map_err(failed)?;
    if t.json {
        print_json(serde_json::to_value(&s).map_err(|e| Failure::other(e.into()))?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let rows = vec![
        vec!["member".into(), s.member_id.to_string()],
        vec!["role".into(), s.role().map(|r| r.to_string()).unwrap_or_else(|| "not in raft".into())],
        vec!["leader".into(), s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into())],
        vec!["term".into(), s.term.to_string()],
        vec!["last log index".into(), opt(s.last_log_index)],
        vec!["applied index".into(), opt(s.applied_index)],
        vec!["voters".into(), s.voters.keys().map(ToString::to_string).collect::<Vec<_>>().join(" ")],
        vec!["nonvoters".into(), s.nonvoters.keys().map(ToString::to_string).collect::<Vec<_>>().join(" ")],
        vec!["store bytes".into(), s.store_bytes.to_string()],
        vec![
            "quota alarm".into(),
            if s.quota_alarm {
                "ON: the store is full, writes are refused; delete keys to make room"
            } else {
                "off"
            }
            .into(),
        ],
    ];
    println!("{}", render(&["", ""], &rows).lines().skip(1).collect::<Vec<_>>().join("\n"));
    Ok(())
}

/// `carbon kv …`.
pub(crate) async fn kv(cmd: KvCommand) -> Result<(), Failure> {
    match cmd {
        KvCommand::Get { key, consistent, target } => {
            let c = client(&target)?;
            let v =
                if consistent { c.consistent_get(&key).await } else { c.get(&key).await }.map_err(failed)?;
            match v {
                Some(v) if target.json => print_json(json!({ "key": key, "value": text(&v) })),
                Some(v) => println!("{}", text(&v)),
                None => return Err(Failure::not_found(format!("key {key:?} not found"))),
            }
        }
        KvCommand::Set { key, value, target } => {
            let created = client(&target)?.set(&key, value.into_bytes()).await.map_err(failed)?;
            if target.json {
                print_json(json!({ "key": key, "created": created }));
            } else {
                println!("{}", if created { "created" } else { "updated" });
            }
        }
        KvCommand::Delete { key, target } => {
            let existed = client(&target)?.delete(&key).await.map_err(failed)?;
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
        KvCommand::List { prefix, target } => {
            let kvs = client(&target)?.get_prefix(&prefix).await.map_err(failed)?;
            if target.json {
                let items: Vec<_> = kvs.iter().map(|(k, v)| json!({ "key": k, "value": text(v) })).collect();
                print_json(serde_json::Value::Array(items));
            } else {
                for (k, v) in kvs {
                    println!("{k}\t{}", text(&v));
                }
            }
        }
        KvCommand::Cas { key, new, expect, absent, target } => {
            let expected = if absent { None } else { expect.map(String::into_bytes) };
            let out = client(&target)?
                .compare_and_set(&key, expected, Some(new.into_bytes()))
                .await
                .map_err(failed)?;
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
