//! `carbon keys`: gossip encryption keys. `generate` works offline; `list`,
//! `install`, `use` and `remove` reach every live member through its service
//! port, as serf's `keys` command does, and each member persists its ring.
//!
//! A rotation without downtime is three steps, each on every member before
//! the next: `install NEW`, `use NEW`, `remove OLD`. The service answers
//! keyring requests only to a member certificate (they carry keys), so these
//! commands need TLS and `--tls-cert` of a member.

use std::collections::BTreeMap;

use cluster_facade::core::KeyringChange;
use cluster_facade::service::protocol::{Request, Response};
use cluster_facade::{GossipKey, Liveness, MemberInfo};
use serde_json::json;

use crate::client::{Target, ask, client, client_of, members_with_liveness, print_json, unexpected};
use crate::exit::Failure;

/// Subcommands of `carbon keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a fresh random gossip key (base64) for `--gossip-key` or
    /// `gossip_keys`. Nothing is sent anywhere.
    Generate,
    /// Show every live member's keyring: each key, how many members hold it,
    /// and on how many it is primary.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Install KEY on every live member: datagrams sealed with it open from now on.
    Install(ChangeArgs),
    /// Make KEY primary on every live member: it seals every datagram from now on.
    /// Install it everywhere first.
    Use(ChangeArgs),
    /// Remove KEY (not the primary) from every live member.
    Remove(ChangeArgs),
}

/// A key and where the cluster is.
#[derive(Debug, clap::Args)]
pub(crate) struct ChangeArgs {
    /// The key, in base64 (`carbon keys generate` makes one).
    #[arg(value_parser = parse_key)]
    pub key: [u8; 32],
    #[command(flatten)]
    pub target: Target,
}

fn parse_key(s: &str) -> Result<[u8; 32], String> {
    GossipKey::from_base64(s.trim()).map(|k| *k.as_bytes()).map_err(|e| e.to_string())
}

/// Runs a `carbon keys` subcommand.
pub(crate) async fn run(cmd: KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Generate => {
            println!("{}", GossipKey::generate().to_base64());
            Ok(())
        }
        KeysCommand::List { target } => list(&target).await,
        KeysCommand::Install(a) => change(&a.target, KeyringChange::Install(a.key)).await,
        KeysCommand::Use(a) => change(&a.target, KeyringChange::Use(a.key)).await,
        KeysCommand::Remove(a) => change(&a.target, KeyringChange::Remove(a.key)).await,
    }
}

/// A member's answer to one keyring request.
type Answer = Result<cluster_facade::core::KeyringState, Failure>;

/// Sends `request` to every live member at once; the members that are not
/// live are named on stderr: they missed the change and will not open
/// datagrams sealed with a key they never got.
async fn everywhere(t: &Target, request: Request) -> Result<Vec<(MemberInfo, Answer)>, Failure> {
    let (members, liveness) = members_with_liveness(t, &client(t)?).await?;
    let (live, gone): (Vec<_>, Vec<_>) =
        members.into_iter().partition(|m| liveness.get(&m.member_id) == Some(&Liveness::Alive));
    for m in &gone {
        let state = liveness.get(&m.member_id).map_or("unknown".to_owned(), ToString::to_string);
        crate::tell(&format!(
            "member {} ({state}) not reached: give it the keyring before it returns",
            name(m)
        ));
    }
    let asks = live.into_iter().map(|m| {
        let request = request.clone();
        async move {
            let answer = match client_of(t, [m.service_addr()]) {
                Ok(c) => match ask(t, &c, request).await {
                    Ok(Response::Keyring(state)) => Ok(state),
                    Ok(other) => Err(unexpected("keyring", &other)),
                    Err(f) => Err(f),
                },
                Err(f) => Err(f),
            };
            (m, answer)
        }
    });
    Ok(futures::future::join_all(asks).await)
}

/// `#N member-id`, or the member id alone before it holds a short id.
fn name(m: &MemberInfo) -> String {
    match m.short_id {
        Some(s) => format!("#{s} {}", m.member_id),
        None => m.member_id.to_string(),
    }
}

/// The first failure, after every member's outcome was printed.
fn outcome(failures: Vec<(String, Failure)>) -> Result<(), Failure> {
    match failures.len() {
        0 => Ok(()),
        n => {
            let (who, first) = failures.into_iter().next().expect("n > 0");
            Err(Failure { message: format!("{n} member(s) failed, {who} first: {}", first.message), ..first })
        }
    }
}

async fn change(t: &Target, change: KeyringChange) -> Result<(), Failure> {
    let verb = change.verb();
    let key_id = GossipKey::from_bytes(*change.key()).id().to_string();
    let answers = everywhere(t, Request::KeyringChange(change)).await?;
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for (m, answer) in answers {
        match answer {
            Ok(state) => {
                lines.push(json!({"member": m.member_id.to_string(), "short_id": m.short_id.map(|s| s.get()), "changed": state.changed}));
                if !t.json {
                    println!("{}: {}", name(&m), if state.changed { "done" } else { "already so" });
                }
            }
            Err(f) => {
                lines.push(json!({"member": m.member_id.to_string(), "short_id": m.short_id.map(|s| s.get()), "error": f.message}));
                if !t.json {
                    println!("{}: failed: {}", name(&m), f.message);
                }
                failures.push((name(&m), f));
            }
        }
    }
    if t.json {
        print_json(json!({"change": verb, "key_id": key_id, "members": lines}));
    } else if failures.is_empty() {
        println!("{verb} of key {key_id}: done on {} member(s)", lines.len());
    }
    outcome(failures)
}

async fn list(t: &Target) -> Result<(), Failure> {
    let answers = everywhere(t, Request::KeyringList).await?;
    let reached = answers.len();
    // key → (members holding it, members where it is primary)
    let mut keys: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (m, answer) in answers {
        match answer {
            Ok(state) => {
                for (i, key) in state.keys.iter().enumerate() {
                    let entry = keys.entry(GossipKey::from_bytes(*key).to_base64()).or_default();
                    entry.0 += 1;
                    entry.1 += usize::from(i == 0);
                }
            }
            Err(f) => {
                crate::tell(&format!("{}: {}", name(&m), f.message));
                failures.push((name(&m), f));
            }
        }
    }
    let answered = reached - failures.len();
    if t.json {
        let list: Vec<_> = keys
            .iter()
            .map(|(key, (holding, primary))| json!({"key": key, "members": holding, "primary_on": primary}))
            .collect();
        print_json(json!({"members_answered": answered, "keys": list}));
    } else {
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|(key, (holding, primary))| {
                vec![key.clone(), format!("{holding}/{answered}"), primary.to_string()]
            })
            .collect();
        println!("{}", crate::table::render(&["KEY", "MEMBERS", "PRIMARY ON"], &rows));
    }
    outcome(failures)
}
