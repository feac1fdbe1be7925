//! The invariants of a simulation, and the digest of its history.
//!
//! - **Linearizable**: the history (with a final linearizable read of every
//!   key through every member) passes [`crate::checker`]; a write that was
//!   acknowledged and then lost fails it.
//! - **Local reads** return only values some client wrote.
//! - **Unique short ids**, **members agree** (one raft membership, one
//!   leader, every running member in it and in every member's gossip view)
//!   and **voters restored** (as many voters as `num_voters` allows, all of
//!   them running), within a minute of simulated time after the faults heal.
//! - **Watches**: every member's watch sees revisions only grow, and the
//!   watches of all members agree event for event (no gap, no repeat).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{Liveness, MemberId};
use tokio::time::Instant;

use super::workload::{KEY_PREFIX, Recorder, Watched};
use super::{Members, SimOptions};
use crate::checker::{CheckResult, check};
use crate::harness::client::FINAL_READ_CLIENT;
use crate::history::{History, Op};

/// How long the cluster may take to settle once the faults heal.
const SETTLE: Duration = Duration::from_secs(120);

/// What [`after_heal`] found.
#[derive(Debug, Default)]
pub struct FinalState {
    /// The invariants that failed.
    pub violations: Vec<String>,
    /// The agreed state, for the digest.
    pub summary: String,
}

/// Waits for the cluster to settle, checks that it did, and reads every key
/// through every member into the history.
pub async fn after_heal(members: &Members, recorder: &Recorder, options: &SimOptions) -> FinalState {
    let deadline = Instant::now() + SETTLE;
    let mut problem = settled(members);
    while let Some(p) = &problem {
        if Instant::now() >= deadline {
            return FinalState {
                violations: vec![format!("not settled {SETTLE:?} after healing: {p}")],
                ..Default::default()
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        problem = settled(members);
    }
    for i in 0..members.len() {
        for k in 0..options.keys {
            let key = format!("{KEY_PREFIX}{k}");
            Box::pin(recorder.run(members, i, FINAL_READ_CLIENT + i as u64, &key, Op::Get)).await;
        }
    }
    let mut summary = String::new();
    if let Some(first) = members.running().first() {
        let status = first.consensus_status();
        let short_ids = first.short_ids().unwrap_or_default();
        let _ = write!(
            summary,
            "voters {} nonvoters {} short ids {:?}",
            status.voters.len(),
            status.nonvoters.len(),
            {
                let mut ids: Vec<u64> = short_ids.values().map(|s| u64::from(s.get())).collect();
                ids.sort_unstable();
                ids
            }
        );
    }
    FinalState { violations: Vec::new(), summary }
}

/// `None` when every running member agrees; else what is still wrong.
fn settled(members: &Members) -> Option<String> {
    let running = members.running();
    let ids: BTreeSet<MemberId> = running.iter().map(|m| m.member_id()).collect();
    let first = running.first()?.consensus_status();
    let Some(leader) = first.leader else { return Some("no leader".into()) };
    let all = first.all_members();
    let wanted_voters = running.len().min(3);
    for member in &running {
        let status = member.consensus_status();
        if status.leader != Some(leader) {
            return Some(format!(
                "{} sees leader {:?}, {} sees {leader}",
                member.member_id(),
                status.leader,
                first.member_id
            ));
        }
        if status.all_members() != all {
            return Some(format!("raft members differ: {:?} and {:?}", status.all_members(), all));
        }
        let liveness = member.liveness();
        if !ids.iter().all(|id| liveness.get(id) == Some(&Liveness::Alive)) {
            return Some(format!("{} does not see every running member by gossip", member.member_id()));
        }
    }
    if all != ids {
        return Some(format!("raft members {all:?} are not the running members {ids:?}"));
    }
    if first.voters.len() != wanted_voters {
        return Some(format!("{} voters, {wanted_voters} wanted", first.voters.len()));
    }
    let short_ids = running.first()?.short_ids().ok()?;
    let unique: BTreeSet<_> = short_ids.values().collect();
    if unique.len() != short_ids.len() {
        return Some(format!("short ids not unique: {short_ids:?}"));
    }
    if !ids.iter().all(|id| short_ids.contains_key(id)) {
        return Some("a running member has no short id".into());
    }
    None
}

/// The history's violations: not linearizable, or a local read of a value never written.
pub fn history(history: &History, recorder: &Recorder) -> Vec<String> {
    let mut violations = Vec::new();
    match check(history) {
        CheckResult::Violation { key, explanation, ops } => {
            violations.push(format!("not linearizable on {key} ({} operations): {explanation}", ops.len()))
        }
        CheckResult::Malformed { key, explanation } => {
            violations.push(format!("malformed history on {key}: {explanation}"))
        }
        // The search gave up: no violation found.
        CheckResult::Linearizable | CheckResult::Unknown { .. } => {}
    }
    for read in recorder.phantom_reads.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        violations.push(format!("a local read returned a value never written: {read}"));
    }
    violations
}

/// The watches' violations: a revision that did not grow, or two members'
/// watches that disagree on an event both saw.
pub fn watches(watched: &[Arc<Mutex<Watched>>]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut by_revision: BTreeMap<u64, (usize, String, Option<Vec<u8>>)> = BTreeMap::new();
    let seen: Vec<Watched> =
        watched.iter().map(|w| w.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
    for (i, w) in seen.iter().enumerate() {
        for pair in w.events.windows(2) {
            if pair[1].0 <= pair[0].0 {
                violations
                    .push(format!("member {i}'s watch went from revision {} to {}", pair[0].0, pair[1].0));
            }
        }
        for (revision, key, value) in &w.events {
            match by_revision.get(revision) {
                Some((j, k, v)) if (k, v) != (key, value) => violations.push(format!(
                    "watches of members {j} and {i} disagree at revision {revision}: {k} and {key}"
                )),
                Some(_) => {}
                None => {
                    by_revision.insert(*revision, (i, key.clone(), value.clone()));
                }
            }
        }
    }
    // No gap: a watch that ran to the end saw every revision any watch saw after its first.
    let all: Vec<u64> = by_revision.keys().copied().collect();
    for (i, w) in seen.iter().enumerate() {
        let (Some(first), None) = (w.events.first(), &w.ended) else { continue };
        let own: BTreeSet<u64> = w.events.iter().map(|e| e.0).collect();
        let last = w.events.last().map_or(0, |e| e.0);
        if let Some(missing) = all.iter().find(|r| **r > first.0 && **r <= last && !own.contains(r)) {
            violations.push(format!("member {i}'s watch skipped revision {missing}"));
        }
    }
    violations
}

/// FNV-1a over the history and the final state: the same for the same seed
/// and build when the run is deterministic.
pub fn digest(history: &History, summary: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = serde_json::to_string(history).unwrap_or_default();
    for byte in text.bytes().chain(summary.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
