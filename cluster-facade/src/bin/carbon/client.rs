//! `carbon members | status | kv | force-leave …`: talk to any member's
//! service port.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_facade::core::MemberStatus;
use cluster_facade::core::{Error, ErrorKind, MemberInfo, keys};
use cluster_facade::service::RouterOptions;
use cluster_facade::service::protocol::{Request, Response};
use cluster_facade::{Liveness, MemberId, ServiceClient};
use serde_json::json;

use crate::exit::Failure;
use crate::table::{members_table, render};

/// Where and how to reach the cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// A member's service address (`host:port`); repeat (or separate with
    /// commas in `CARBON_SERVICE`) to name several.
    #[arg(long = "service", value_name = "ADDR", env = "CARBON_SERVICE", value_delimiter = ',', required = true, value_parser = service_addr)]
    pub services: Vec<String>,
    /// The cluster id the members were started with.
    #[arg(long, env = "CARBON_CLUSTER_ID", default_value = "carbon-grid")]
    pub cluster_id: String,
    /// Give up after this long, retries included (`500ms`, `2s`, `1m`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    pub timeout: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// `host:port` with a port in 1..=65535; anything else is a usage error at
/// once. Spaces around it are dropped: `CARBON_SERVICE="a:1, b:2"` reads as
/// two addresses, as people write lists.
fn service_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{s:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(s.to_owned()),
        _ => Err(format!("{s:?} has no port (1-65535)")),
    }
}

/// `500ms`, `2s`, `1m`, or a bare number of seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 500ms, 2s or 1m");
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

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

/// Flags of `carbon force-leave`.
#[derive(Debug, clap::Args)]
pub(crate) struct ForceLeaveArgs {
    /// The member: its member id, or `#N` for short id N.
    pub member: String,
    #[command(flatten)]
    pub target: Target,
}

pub(crate) fn client(t: &Target) -> Result<ServiceClient, Failure> {
    client_of(t, t.services.iter().cloned())
}

/// A client of `addrs` with `t`'s cluster id, timeout and TLS.
pub(crate) fn client_of(
    t: &Target,
    addrs: impl IntoIterator<Item = String>,
) -> Result<ServiceClient, Failure> {
    let mut options = RouterOptions::new(t.cluster_id.clone());
    options.op_timeout = t.timeout;
    options.attempt_timeout = options.attempt_timeout.min(t.timeout);
    options.connect_timeout = options.connect_timeout.min(t.timeout);
    options.security = t.tls.security()?;
    ServiceClient::new(addrs, options).map_err(|e| Failure::usage(e.to_string()))
}

/// Maps a store error to the exit code scripts rely on, with a message that
/// says what the user can do.
pub(crate) async fn failed(t: &Target, e: Error) -> Failure {
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::NotLeader => Failure::unreachable(format!(
            "cannot reach the cluster within the timeout of {:?} (--timeout): {e}",
            t.timeout
        )),
        ErrorKind::Protocol if matches!(e, Error::ClusterMismatch { .. }) => Failure::usage(format!(
            "{} belongs to another cluster than --cluster-id {:?} (or CARBON_CLUSTER_ID): use the id the members were started with",
            t.services.join(", "),
            t.cluster_id
        )),
        ErrorKind::Protocol => Failure::usage(not_a_service_port(t).await),
        // A bad argument, or credentials that do not allow it (no TLS to a
        // TLS cluster, a client certificate for the cluster's records): fix
        // the command or the configuration.
        ErrorKind::Invalid | ErrorKind::Forbidden => Failure::usage(e.to_string()),
        ErrorKind::Quota => Failure::quota(e.to_string()),
        // A --from-revision older than the member remembers, or a watch that
        // fell behind: not a usage error (the command was right when it was
        // saved), but one the user recovers from by starting again from now.
        ErrorKind::Resync => Failure::other_message(format!(
            "{e}: read the prefix again (`carbon kv list PREFIX --json` gives its revision) and watch from that revision + 1"
        )),
        _ => Failure::other(anyhow::Error::new(e)),
    }
}

/// Names the addresses that do not speak the service protocol, and what
/// they seem to be instead.
async fn not_a_service_port(t: &Target) -> String {
    let Ok(c) = client(t) else { return "not a service port".into() };
    let mut wrong = Vec::new();
    for addr in &t.services {
        match c.status_of(addr).await {
            // The RPC client recognizes an HTTP answer and says so.
            Err(Error::Malformed(why)) if why.contains("HTTP") => {
                wrong.push(format!("{addr} answers in HTTP (the HTTP port?)"));
            }
            Err(Error::Malformed(_) | Error::BadMagic | Error::VersionMismatch { .. }) => {
                wrong.push(format!("{addr} does not answer in the service protocol (the raft port?)"));
            }
            Err(Error::FrameTooLarge { .. }) => {
                wrong.push(format!("{addr} answers in another protocol"));
            }
            _ => {}
        }
    }
    let which = if wrong.is_empty() {
        format!("{} does not answer in the service protocol", t.services.join(", "))
    } else {
        wrong.join("; ")
    };
    format!("{which}: this is not a service port: use the address after `service` in the agent's start line")
}

/// A value for people: the text when it is UTF-8, else base64 with a marker.
fn text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("(base64) {}", BASE64.encode(v)),
    }
}

/// A value in JSON: `"value"` when it is UTF-8, else `"value_base64"`.
fn json_entry(key: &str, v: Option<&[u8]>) -> serde_json::Value {
    match v {
        None => json!({ "key": key, "value": null }),
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) => json!({ "key": key, "value": s }),
            Err(_) => json!({ "key": key, "value_base64": BASE64.encode(v) }),
        },
    }
}

pub(crate) fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// Sends one request through the client, mapping its errors.
pub(crate) async fn ask(t: &Target, c: &ServiceClient, r: Request) -> Result<Response, Failure> {
    match c.request(r).await {
        Ok(Response::Err(e)) | Err(e) => Err(failed(t, e).await),
        Ok(answer) => Ok(answer),
    }
}

pub(crate) fn unexpected(what: &str, r: &Response) -> Failure {
    Failure::other(anyhow::anyhow!("{what} was answered with {}", r.kind()))
}

/// The members, by short id (members without one last), with gossip's liveness.
pub(crate) async fn members_with_liveness(
    t: &Target,
    c: &ServiceClient,
) -> Result<(Vec<MemberInfo>, BTreeMap<MemberId, Liveness>), Failure> {
    let mut members = match c.members().await {
        Ok(m) => m,
        Err(e) => return Err(failed(t, e).await),
    };
    members.sort_by_key(|m| (m.short_id.is_none(), m.short_id, m.member_id));
    let liveness = match ask(t, c, Request::Liveness).await? {
        Response::Liveness(l) => l,
        other => return Err(unexpected("liveness", &other)),
    };
    Ok((members, liveness))
}

/// `carbon members`.
pub(crate) async fn members(t: Target) -> Result<(), Failure> {
    let c = client(&t)?;
    let (members, liveness) = members_with_liveness(&t, &c).await?;
    if t.json {
        let list: Vec<serde_json::Value> = members
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                if let serde_json::Value::Object(o) = &mut v {
                    o.insert("liveness".into(), json!(liveness.get(&m.member_id).map(ToString::to_string)));
                }
                v
            })
            .collect();
        print_json(serde_json::Value::Array(list));
    } else {
        println!("{}", members_table(&members, &liveness));
    }
    Ok(())
}

/// `carbon status`.
pub(crate) async fn status(t: Target) -> Result<(), Failure> {
    // The shape of the HTTP API's /v1/status, so one parser reads both.
    let s: MemberStatus = match client(&t)?.member_status().await {
        Ok(s) => s,
        Err(e) => return Err(failed(&t, e).await),
    };
    if t.json {
        print_json(serde_json::to_value(&s).map_err(|e| Failure::other(e.into()))?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let mut rows = vec![
        vec!["member".into(), s.member_id.to_string()],
        vec!["short id".into(), s.short_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into())],
        vec!["role".into(), s.role.map(|r| r.to_string()).unwrap_or_else(|| "not in raft".into())],
        vec!["leader".into(), s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into())],
        vec!["term".into(), s.term.to_string()],
        vec!["last log index".into(), opt(s.last_log_index)],
        vec!["committed index".into(), opt(s.committed_index)],
        vec!["applied index".into(), opt(s.applied_index)],
        vec!["snapshot index".into(), opt(s.snapshot_index)],
        vec!["voters".into(), s.voters.keys().map(ToString::to_string).collect::<Vec<_>>().join(" ")],
        vec!["nonvoters".into(), s.nonvoters.keys().map(ToString::to_string).collect::<Vec<_>>().join(" ")],
        vec!["store bytes".into(), s.store_bytes.to_string()],
        vec![
            "quota alarm".into(),
            if s.quota_alarm {
                // What the alarm means (cluster_consensus::quota::alarm): the
                // store is near its quota, not closed; most writes still pass.
                "ON: the store is within one maximum-size write of quota.max_store_bytes \
                 (or a write was refused for it): writes that would pass the quota fail with exit 5; \
                 delete keys to make room"
            } else {
                "off"
            }
            .into(),
        ],
    ];
    if let Some(reset) = &s.reset_pending {
        // Raft state reset; no votes until out of the voters (docs/recovery.md).
        rows.push(vec!["reset pending".into(), reset.clone()]);
    }
    println!("{}", render(&["", ""], &rows).lines().skip(1).collect::<Vec<_>>().join("\n"));
    Ok(())
}

/// `carbon kv …`.
pub(crate) async fn kv(cmd: KvCommand) -> Result<(), Failure> {
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
            return watch(&prefix, from_revision, all, &target).await;
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

/// `carbon kv watch`: one line per change until Ctrl-C (exit 0) or an error.
async fn watch(prefix: &str, from_revision: Option<u64>, all: bool, t: &Target) -> Result<(), Failure> {
    use futures::StreamExt;

    let c = client(t)?;
    let mut events = std::pin::pin!(c.watch(prefix, from_revision));
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = events.next() => event,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(failed(t, e).await),
            None => return Ok(()),
        };
        if !all && keys::is_reserved(&event.key) {
            continue;
        }
        if t.json {
            let mut line = json_entry(&event.key, event.value.as_deref());
            if let serde_json::Value::Object(o) = &mut line {
                o.insert("revision".into(), json!(event.revision));
                o.insert("deleted".into(), json!(event.value.is_none()));
            }
            print_json(line);
        } else {
            match &event.value {
                Some(v) => println!("{}\tset\t{}\t{}", event.revision, event.key, text(v)),
                None => println!("{}\tdelete\t{}", event.revision, event.key),
            }
        }
    }
}

/// `carbon force-leave`.
pub(crate) async fn force_leave(args: ForceLeaveArgs) -> Result<(), Failure> {
    let t = &args.target;
    let c = client(t)?;
    let member = match args.member.strip_prefix('#') {
        Some(n) => {
            let n: u32 = n
                .parse()
                .map_err(|_| Failure::usage(format!("{:?} is not #N with a short id N", args.member)))?;
            let (members, _) = members_with_liveness(t, &c).await?;
            members
                .iter()
                .find(|m| m.short_id.is_some_and(|s| s.get() == n))
                .map(|m| m.member_id)
                .ok_or_else(|| Failure::not_found(format!("no member holds short id #{n}")))?
        }
        None => args
            .member
            .parse::<MemberId>()
            .map_err(|e| Failure::usage(format!("{e}: give a member id or #N for a short id")))?,
    };
    let left = match ask(t, &c, Request::ForceLeave { member }).await? {
        Response::ForceLeft(l) => l,
        other => return Err(unexpected("force leave", &other)),
    };
    if t.json {
        print_json(json!({
            "member_id": member.to_string(),
            "was_in_raft": left.was_in_raft,
            "held_short_id": left.held_short_id,
            "had_record": left.had_record,
        }));
    }
    if !(left.was_in_raft || left.held_short_id || left.had_record) {
        return Err(Failure::not_found(format!("the cluster knows no member {member}")));
    }
    if !t.json {
        println!(
            "member {member} removed{}{}",
            if left.was_in_raft { " from raft" } else { "" },
            if left.held_short_id { "; its short id is free" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_compacted_watch_start_is_the_users_to_fix() {
        let t = Target {
            services: vec!["127.0.0.1:1".into()],
            cluster_id: "c".into(),
            timeout: Duration::from_secs(1),
            json: false,
            tls: crate::tls::TlsArgs::default(),
        };
        let f = failed(&t, Error::Compacted { requested: 3, oldest: 900 }).await;
        assert_eq!(f.code, crate::exit::OTHER);
        assert!(f.message.contains("900") && f.message.contains("kv list"), "{}", f.message);
    }

    #[test]
    fn durations_and_addresses_parse_or_are_refused() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "x", "-1s", "0", "2h"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(service_addr("127.0.0.1:7000").is_ok());
        assert!(service_addr("[::1]:7000").is_ok());
        assert_eq!(service_addr(" 127.0.0.1:7000 "), Ok("127.0.0.1:7000".to_owned()));
        for bad in ["notanaddress", "host:0", ":7000", "host:x", "host:70000"] {
            assert!(service_addr(bad).is_err(), "{bad}");
        }
    }
}
