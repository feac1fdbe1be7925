//! The invariants every fault scenario ends with, and the monitor that checks
//! short ids throughout a run.
//!
//! - (a) the history is linearizable ([`check_history`], the [checker](crate::checker));
//! - (b) no acknowledged write is lost: the final consistent reads are part of the
//!   history (see [`final_reads`](super::client::final_reads)), so a lost write is a
//!   violation; [`lost_write_keys`] names the keys whose history is linearizable
//!   without the final reads and not with them;
//! - (c) never two live members with the same short id: [`ShortIdMonitor`] polls the
//!   member records every ~200 ms during the run, [`duplicate_short_ids`] judges
//!   one answer, and [`live_start_line_duplicates`] compares what the live
//!   processes themselves reported;
//! - (d) the voter count returns to the configured number ([`wait_voters`]);
//! - (e) every live member agrees on the live members ([`wait_members_agree`]) and
//!   has caught up with the leader ([`wait_caught_up`]).
//!
//! The waits are bounded and poll; they return how long recovery took.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail};
use cluster_core::{ConsensusStatus, MemberInfo};
use cluster_service::ServiceClient;
use cluster_testkit::holds_within;
use futures::future::LocalBoxFuture;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::FINAL_READ_CLIENT;
use super::cluster::ProcessCluster;
use crate::checker::{CheckOptions, CheckResult, check, check_key};
use crate::history::History;

/// (a): the checker's verdict, as an error with the witness if it is not linearizable.
pub fn check_history(history: &History) -> std::result::Result<(), String> {
    match check(history) {
        CheckResult::Linearizable => Ok(()),
        CheckResult::Violation { key, ops, explanation } => {
            let witness: Vec<String> = ops.iter().map(|op| format!("  {op:?}")).collect();
            Err(format!("not linearizable on key {key:?}: {explanation}\nwitness:\n{}", witness.join("\n")))
        }
        other => Err(other.to_string()),
    }
}

/// (b): keys whose history is linearizable without the final reads but not with
/// them: a write acknowledged during the run is missing from the final state.
pub fn lost_write_keys(history: &History) -> Vec<String> {
    let options = CheckOptions::default().with_shrink(false);
    history
        .by_key()
        .into_iter()
        .filter(|(_, ops)| {
            let without: Vec<_> = ops.iter().copied().filter(|op| op.client != FINAL_READ_CLIENT).collect();
            check_key(without, &options).is_linearizable()
                && check_key(ops.iter().copied(), &options).is_violation()
        })
        .map(|(key, _)| key.to_owned())
        .collect()
}

/// (c): the short ids held by more than one record of one answer, with the holders.
pub fn duplicate_short_ids(records: &[MemberInfo]) -> BTreeMap<u64, Vec<String>> {
    let mut holders: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for record in records {
        if let Some(short_id) = record.short_id {
            holders.entry(u64::from(u32::from(short_id))).or_default().push(record.member_id.to_string());
        }
    }
    holders.retain(|_, members| members.len() > 1);
    holders
}

/// (c): short ids that two live processes both reported in their start lines.
pub fn live_start_line_duplicates(cluster: &mut ProcessCluster) -> BTreeMap<u64, Vec<String>> {
    let mut holders: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for i in cluster.live() {
        if let Some(line) = cluster.agent(i).start_line() {
            holders.entry(line.short_id).or_default().push(line.member_id.clone());
        }
    }
    holders.retain(|_, members| members.len() > 1);
    holders
}

/// What the [`ShortIdMonitor`] saw.
#[derive(Debug, Clone, Default)]
pub struct MonitorReport {
    /// Polls made.
    pub polls: u64,
    /// Polls answered.
    pub answered: u64,
    /// Every duplicate seen, described (member asked, short id, holders).
    pub duplicates: Vec<String>,
}

/// Polls the member records of one member after the other, every `interval`,
/// and notes every duplicate short id.
#[derive(Debug)]
pub struct ShortIdMonitor {
    stop: watch::Sender<bool>,
    task: JoinHandle<MonitorReport>,
}

impl ShortIdMonitor {
    /// Starts polling the members at `addrs`.
    pub fn start(addrs: &[String], cluster_id: &str, interval: Duration) -> Result<ShortIdMonitor> {
        let mut options = crate::harness::security::client_options(cluster_id);
        options.connect_timeout = Duration::from_millis(300);
        options.attempt_timeout = Duration::from_millis(500);
        options.op_timeout = Duration::from_millis(500);
        let clients = addrs
            .iter()
            .map(|a| ServiceClient::new([a.clone()], options.clone()).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<Result<Vec<_>>>()?;
        let addrs = addrs.to_vec();
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut report = MonitorReport::default();
            let mut next = 0usize;
            loop {
                let i = next % clients.len();
                next += 1;
                report.polls += 1;
                if let Ok(Ok(records)) =
                    tokio::time::timeout(Duration::from_secs(1), clients[i].members()).await
                {
                    report.answered += 1;
                    for (short_id, holders) in duplicate_short_ids(&records) {
                        report
                            .duplicates
                            .push(format!("{} lists short id {short_id} for {holders:?}", addrs[i]));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop_rx.changed() => return report,
                }
            }
        });
        Ok(ShortIdMonitor { stop, task })
    }

    /// Stops polling and returns what was seen.
    pub async fn stop(self) -> MonitorReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// (d): waits until a leader's view shows `min(num_voters, live members)` voters,
/// every one of them live, and returns how long it took.
pub async fn wait_voters(cluster: &mut ProcessCluster, deadline: Duration) -> Result<Duration> {
    settle(cluster, deadline, "the voter count did not return", |c| Box::pin(voters_wrong(c))).await
}

/// What keeps the voters from being the ones [`wait_voters`] waits for, if anything.
async fn voters_wrong(cluster: &mut ProcessCluster) -> Option<String> {
    let live = cluster.live_member_ids();
    let want = cluster.spec().config.num_voters.min(live.len());
    let Some(leader) = cluster.leader().await else { return Some("no leader".to_owned()) };
    match cluster.status_of(leader).await {
        Ok(status) => {
            let voters: BTreeSet<String> = status.voters.keys().map(|m| m.to_string()).collect();
            if voters.len() == want && voters.iter().all(|v| live.contains(v)) {
                return None;
            }
            Some(format!("leader m{leader} sees voters {voters:?}, want {want} of live {live:?}"))
        }
        Err(e) => Some(e.to_string()),
    }
}

/// Waits with the kit's [`holds_within`] until `wrong` finds nothing wrong
/// with `cluster`, and returns how long it took; past `deadline`, fails with
/// `what` and the last thing `wrong` found.
async fn settle(
    cluster: &mut ProcessCluster,
    deadline: Duration,
    what: &str,
    wrong: impl for<'a> Fn(&'a mut ProcessCluster) -> LocalBoxFuture<'a, Option<String>>,
) -> Result<Duration> {
    let start = Instant::now();
    let mut last = String::new();
    let held = holds_within(deadline, async || match wrong(cluster).await {
        None => true,
        Some(why) => {
            last = why;
            false
        }
    })
    .await;
    if !held {
        bail!("{what} within {deadline:?}: {last}");
    }
    Ok(start.elapsed())
}

/// True when `status` is a client member's (outside the replica set: raft
/// lists it neither as voter nor as nonvoter, and it names a leader).
pub fn is_client_member(status: &ConsensusStatus) -> bool {
    status.role().is_none() && status.leader.is_some() && status.applied_index.is_none()
}

/// (e), the raft side: waits until every live member has applied what the leader
/// had applied when the wait began (a member raft cannot reach never does), and
/// returns how long it took.
pub async fn wait_caught_up(cluster: &mut ProcessCluster, deadline: Duration) -> Result<Duration> {
    let target = std::sync::Arc::new(Mutex::new(None));
    settle(cluster, deadline, "the live members did not catch up", move |c| {
        let target = target.clone();
        Box::pin(async move { behind(c, &mut *target.lock().await).await })
    })
    .await
}

/// Which live member has not applied `target` yet (the leader's applied
/// index, taken the first time a leader answers), if any.
async fn behind(cluster: &mut ProcessCluster, target: &mut Option<u64>) -> Option<String> {
    if target.is_none()
        && let Some(leader) = cluster.leader().await
    {
        *target = cluster.status_of(leader).await.ok().and_then(|s| s.applied_index);
    }
    let Some(target) = *target else { return Some("no leader's applied index yet".to_owned()) };
    for i in cluster.live() {
        let status = cluster.status_of(i).await.ok();
        // A client member has no raft log: its view's freshness is
        // judged by the members' agreement and by the scenarios
        // that read through it (no applied index to compare).
        if status.as_ref().is_some_and(is_client_member) {
            continue;
        }
        let applied = status.and_then(|s| s.applied_index);
        if applied.is_none_or(|a| a < target) {
            return Some(format!("m{i} applied {applied:?}, the leader had applied {target}"));
        }
    }
    None
}

/// (e): waits until every live member's records name exactly the live members
/// (and maybe members that are down, listed as failed until reaped),
/// each with a short id and with the ports its process reported, and returns how
/// long it took.
pub async fn wait_members_agree(cluster: &mut ProcessCluster, deadline: Duration) -> Result<Duration> {
    settle(cluster, deadline, "the members did not agree on the live members", |c| Box::pin(disagreement(c)))
        .await
}

/// Where the live members' records differ from what [`wait_members_agree`]
/// waits for, if anywhere.
async fn disagreement(cluster: &mut ProcessCluster) -> Option<String> {
    let live = cluster.live();
    let expected: BTreeSet<String> = cluster.live_member_ids().into_iter().collect();
    // A member that is down (killed or paused) stays listed as failed,
    // with its short id, until the reap timeout frees it (issue 25).
    let down: BTreeSet<String> = (0..cluster.len())
        .filter(|i| !live.contains(i))
        .filter_map(|i| cluster.agent(i).known_start_line().map(|s| s.member_id.clone()))
        .collect();
    let ports: BTreeMap<String, (u16, u16)> = live
        .iter()
        .filter_map(|&i| {
            cluster.agent(i).start_line().map(|s| (s.member_id.clone(), (s.raft.port(), s.service.port())))
        })
        .collect();
    let mut disagreement = None;
    for &i in &live {
        match cluster.members_of(i).await {
            Ok(records) => {
                let seen: BTreeSet<String> = records
                    .iter()
                    .map(|r| r.member_id.to_string())
                    .filter(|id| !down.contains(id) || expected.contains(id))
                    .collect();
                let unassigned = records.iter().filter(|r| r.short_id.is_none()).count();
                let stale: Vec<String> = records
                    .iter()
                    .filter(|r| {
                        ports
                            .get(&r.member_id.to_string())
                            .is_some_and(|p| *p != (r.raft_port, r.service_port))
                    })
                    .map(|r| r.member_id.to_string())
                    .collect();
                if seen != expected || unassigned > 0 || !stale.is_empty() {
                    disagreement = Some(format!(
                        "m{i} records {seen:?} ({unassigned} without short id, stale ports of {stale:?}), \
                         live {expected:?}"
                    ));
                    break;
                }
            }
            Err(e) => {
                disagreement = Some(e.to_string());
                break;
            }
        }
    }
    disagreement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Operation, Outcome};

    fn op(client: u64, key: &str, (call, ret): (u64, u64), op: Op, outcome: Outcome) -> Operation {
        Operation { client, key: key.into(), op, call, ret: Some(ret), outcome }
    }

    #[test]
    fn a_final_read_missing_an_acknowledged_write_is_a_lost_write() {
        let set = |v: &str| Op::Set { value: v.as_bytes().to_vec() };
        let value = |v: &str| Some(v.as_bytes().to_vec());
        let mut ops = vec![
            op(1, "a", (0, 10), set("1"), Outcome::SetOk { created: true }),
            op(1, "a", (20, 30), set("2"), Outcome::SetOk { created: false }),
            op(2, "b", (0, 10), set("x"), Outcome::SetOk { created: true }),
            op(FINAL_READ_CLIENT, "b", (40, 50), Op::Get, Outcome::GetOk(value("x"))),
        ];
        let good = History::new(ops.clone());
        assert!(check_history(&good).is_ok());
        assert!(lost_write_keys(&good).is_empty());
        ops.push(op(FINAL_READ_CLIENT, "a", (40, 50), Op::Get, Outcome::GetOk(value("1"))));
        let lost = History::new(ops);
        assert!(check_history(&lost).is_err());
        assert_eq!(lost_write_keys(&lost), ["a"]);
    }
}
