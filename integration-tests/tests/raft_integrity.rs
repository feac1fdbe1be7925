//! Corrupt raft state against real `carbon agent` processes (issue 14, the
//! two write-ahead log rows):
//!
//! - one follower killed with `kill -9`, 4 bytes flipped in the middle of its
//!   write-ahead log, restarted: it refuses to start (exit code 6, a message
//!   naming the segment, the offset and `--reset-raft-state`), the other two
//!   keep serving every acknowledged write, and after `--reset-raft-state` it
//!   rejoins, catches up with every write and is a voter again;
//! - all three killed, 4 bytes flipped on two, all restarted: the two refuse,
//!   the third cannot form a quorum alone and never serves an acknowledged
//!   write as missing; resetting one corrupted member does not change that —
//!   a member that lost its log does not vote, and without its vote no
//!   majority can prove it holds every acknowledged write.
//!
//! One scenario at a time (2 cores).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cluster_service::ServiceClient;
use cluster_testkit::holds_within;
use integration_tests::harness::cluster::{ClusterSpec, ProcessCluster};
use integration_tests::harness::invariants::wait_voters;
use tokio::sync::{Mutex, MutexGuard};

/// The exit code of `carbon agent` when its raft state is corrupt.
const EXIT_CORRUPT: i32 = 6;
/// Generous: the machine is small and shared.
const DEADLINE: Duration = Duration::from_secs(120);

async fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// A client of `members`, by the ports they keep across restarts.
fn client(cluster: &mut ProcessCluster, members: &[usize]) -> Result<ServiceClient> {
    let addrs: Vec<String> = members
        .iter()
        .map(|&i| {
            let spec = cluster.agent(i).spec();
            format!("{}:{}", spec.host.expect("a host"), spec.ports.expect("fixed ports").service)
        })
        .collect();
    let mut options = integration_tests::harness::security::client_options(cluster.cluster_id());
    options.op_timeout = Duration::from_secs(10);
    ServiceClient::new(addrs, options).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Writes `count` keys `prefix<n>` one after the other; returns the acknowledged ones.
async fn write_keys(client: &ServiceClient, prefix: &str, count: usize) -> BTreeMap<String, Vec<u8>> {
    let mut acked = BTreeMap::new();
    for n in 0..count {
        let key = format!("{prefix}{n:05}");
        let value = format!("value of {key}").into_bytes();
        if client.set(&key, value.clone()).await.is_ok() {
            acked.insert(key, value);
        }
    }
    acked
}

/// The last (active) segment of member `i`'s write-ahead log.
fn wal_segment(cluster: &mut ProcessCluster, i: usize) -> Result<PathBuf> {
    let dir =
        cluster.agent(i).spec().data_dir.as_ref().expect("a durable agent").join("raft").join("raft-log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("no write-ahead log in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().context("no segment")
}

/// Flips 4 bytes in the middle of a file; returns where.
fn flip_middle(path: &Path) -> Result<usize> {
    let mut bytes = std::fs::read(path)?;
    if bytes.len() < 1024 {
        bail!("{} is too small to corrupt its middle: {} bytes", path.display(), bytes.len());
    }
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xFF;
    }
    std::fs::write(path, bytes)?;
    Ok(middle)
}

/// Restarts member `i` and expects it to refuse with the corruption error.
fn expect_refusal(cluster: &mut ProcessCluster, i: usize, segment: &Path) -> Result<()> {
    let log = cluster.dir().join(format!("m{i}.log"));
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    cluster.agent(i).restart()?;
    let status = cluster.agent(i).wait_exit(DEADLINE)?;
    let text = std::fs::read_to_string(&log)?;
    let said = &text[before..];
    if status.code() != Some(EXIT_CORRUPT) {
        bail!("m{i} exited with {status}, not {EXIT_CORRUPT}; it said:\n{said}");
    }
    for needle in ["corrupt raft state", &segment.display().to_string(), "byte offset", "--reset-raft-state"]
    {
        if !said.contains(needle) {
            bail!("m{i}'s refusal does not mention {needle:?}:\n{said}");
        }
    }
    Ok(())
}

/// Reads every acknowledged key with consistent reads through `client`:
/// each must be there with its value.
async fn assert_all_readable(client: &ServiceClient, acked: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    for (key, value) in acked {
        let read = client.consistent_get(key).await.map_err(|e| anyhow::anyhow!("reading {key}: {e}"))?;
        if read.as_ref() != Some(value) {
            bail!("acknowledged {key} reads as {read:?}");
        }
    }
    Ok(())
}

/// Runs `scenario`; on failure, keeps the cluster's directory and shows the logs.
async fn with_evidence<F>(spec: ClusterSpec, scenario: F) -> Result<()>
where
    F: AsyncFnOnce(&mut ProcessCluster) -> Result<()>,
{
    let _serial = serial().await;
    let mut cluster = ProcessCluster::start(spec)?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.keep_dir();
        eprintln!("{}", cluster.log_tails(40));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_with_a_corrupt_log_refuses_then_rejoins_after_a_reset() -> Result<()> {
    // The leader removes the dead follower after 1 s: it rejoins as a new nonvoter.
    with_evidence(ClusterSpec::new(3, 3), follower_scenario).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_follower_still_a_voter_is_demoted_before_it_votes() -> Result<()> {
    // The leader keeps the dead follower as a voter: the reset member comes
    // back still counted, and must be demoted (it never clears otherwise).
    let mut spec = ClusterSpec::new(3, 3);
    spec.config.failure_grace_ms = 600_000;
    spec.config.short_id_reap_ms = 600_000;
    with_evidence(spec, follower_scenario).await
}

async fn follower_scenario(cluster: &mut ProcessCluster) -> Result<()> {
    wait_voters(cluster, DEADLINE).await?;
    let all = client(cluster, &[0, 1, 2])?;
    let mut acked = write_keys(&all, "before/", 400).await;

    let leader = cluster.leader().await.context("a leader")?;
    let follower = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
    let member_id = cluster.agent(follower).known_start_line().map(|s| s.member_id.clone());
    cluster.agent(follower).kill()?;
    let segment = wal_segment(cluster, follower)?;
    flip_middle(&segment)?;

    expect_refusal(cluster, follower, &segment)?;
    // The other two keep serving every acknowledged write, and new ones.
    let two = client(cluster, &others)?;
    assert_all_readable(&two, &acked).await?;
    acked.extend(write_keys(&two, "while-away/", 100).await);

    // The reset: same member id, state moved aside, rejoins as a nonvoter.
    cluster.agent(follower).restart_with_args(&["--reset-raft-state"])?;
    let line = cluster.agent(follower).wait_started(DEADLINE)?.clone();
    assert_eq!(Some(line.member_id.clone()), member_id, "the member id is kept");
    let data_dir = cluster.agent(follower).spec().data_dir.clone().expect("a durable agent");
    let moved = std::fs::read_dir(&data_dir)?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("raft.reset-"));
    assert!(moved, "the old raft state is kept aside in {}", data_dir.display());
    acked.extend(write_keys(&all, "after/", 50).await);

    // It catches up, is no longer pending, and is a voter again.
    let (mut own, mut leader_view) = (None, None);
    let rejoined = holds_within(DEADLINE, async || {
        let status = cluster.status_of(follower).await;
        let pending = status.as_ref().map_or(true, |s| s.reset_pending.is_some());
        own = Some(status);
        leader_view = match cluster.leader().await {
            Some(l) => cluster.status_of(l).await.ok(),
            None => None,
        };
        let voter =
            leader_view.as_ref().is_some_and(|s| s.voters.keys().any(|v| v.to_string() == line.member_id));
        !pending && voter
    })
    .await;
    if !rejoined {
        bail!("m{follower} did not become a voter again: own {own:?}, leader {leader_view:?}");
    }
    // Every acknowledged write is in its own applied state (a local read).
    let own = cluster
        .client_of(follower, integration_tests::harness::security::client_options(cluster.cluster_id()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut missing, mut failed) = (Vec::new(), None);
    holds_within(DEADLINE, async || {
        let mut present = BTreeMap::new();
        for prefix in ["before/", "while-away/", "after/"] {
            match own.get_prefix(prefix).await {
                Ok(kvs) => present.extend(kvs),
                // A failed read ends the wait: the test fails with it.
                Err(e) => {
                    failed = Some(e);
                    return true;
                }
            }
        }
        missing = acked.iter().filter(|(k, v)| present.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
        missing.is_empty()
    })
    .await;
    if let Some(e) = failed {
        bail!("reading m{follower}'s applied state: {e}");
    }
    if !missing.is_empty() {
        bail!(
            "m{follower} never applied {} acknowledged writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    assert_all_readable(&all, &acked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_corrupt_logs_of_three_leave_the_cluster_unavailable_not_wrong() -> Result<()> {
    with_evidence(ClusterSpec::new(3, 3), majority_scenario).await
}

async fn majority_scenario(cluster: &mut ProcessCluster) -> Result<()> {
    wait_voters(cluster, DEADLINE).await?;
    let all = client(cluster, &[0, 1, 2])?;
    let acked = write_keys(&all, "k/", 400).await;
    assert!(!acked.is_empty());

    cluster.kill_all()?;
    let (intact, corrupt) = (0usize, [1usize, 2]);
    for &i in &corrupt {
        let segment = wal_segment(cluster, i)?;
        flip_middle(&segment)?;
        expect_refusal(cluster, i, &segment)?;
    }
    cluster.restart(intact)?;
    let alone = cluster.client_of(intact, cluster.probe_options()).map_err(|e| anyhow::anyhow!("{e}"))?;

    // Alone, it has no quorum: no leader, and no acknowledged write reads as
    // missing (a consistent read fails instead). Safety is a "never", so it
    // is watched over many election timeouts (800 ms each): the wait is for
    // a violation, and passes when none shows within the window.
    let watch = async |window: Duration| {
        let (mut violation, mut reads) = (None, 0);
        holds_within(window, async || {
            let status = match alone.status().await {
                Ok(status) => status,
                Err(e) => {
                    violation = Some(anyhow::anyhow!("{e}"));
                    return true;
                }
            };
            if status.leader.is_some() {
                violation = Some(anyhow::anyhow!("a leader without a quorum of intact voters: {status:?}"));
                return true;
            }
            for key in acked.keys().step_by(50) {
                if let Ok(None) = alone.consistent_get(key).await {
                    violation = Some(anyhow::anyhow!("acknowledged {key} served as missing"));
                    return true;
                }
                reads += 1;
            }
            false
        })
        .await;
        violation.map_or(Ok(reads), Err)
    };
    let reads = watch(Duration::from_secs(8)).await?;
    assert!(reads > 0);

    // Resetting one corrupted member does not make a quorum: it does not vote.
    cluster.agent(corrupt[0]).restart_with_args(&["--reset-raft-state"])?;
    watch(Duration::from_secs(10)).await?;
    let status = alone.status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(status.leader, None, "still no leader");
    Ok(())
}
