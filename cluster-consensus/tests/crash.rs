//! A member aborted (no shutdown, no flush: like `kill -9`) and reopened from
//! its directory has every write it acknowledged; with 4 bytes of its
//! write-ahead log flipped in between, it either still has every one or
//! refuses to open with the corruption error. The tests run themselves as a
//! child process that writes and aborts.

#![cfg(feature = "durable")]

use std::collections::BTreeSet;
use std::future::ready;
use std::io::Write;
use std::process::Command;

use cluster_consensus::RaftStore;
use cluster_core::{ConsensusStore, ConsensusStoreExt, MemberId};

const CHILD_DIR: &str = "CLUSTER_CONSENSUS_CRASH_DIR";
const WRITERS: usize = 8;
const PER_WRITER: usize = 40;

fn child(dir: &str) -> ! {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut cfg = cluster_testkit::member_config(Some(dir.into()));
        cfg.member_id = MemberId::generate();
        let store = RaftStore::open(cfg.clone()).await.expect("open");
        store.bootstrap().await.expect("bootstrap");
        println!("member {}", store.member_id());
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let key = format!("k/{w}/{i}");
                    store.set(&key, vec![1]).await.expect("write");
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "acked {key}");
                    let _ = out.flush();
                }
            }));
        }
        // Abort while writes are in flight.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        std::process::abort();
    })
}

/// Runs the test `name` as a child that writes into `dir` and aborts;
/// returns the member id and the keys it acknowledged.
fn run_child(name: &str, dir: &std::path::Path) -> (MemberId, BTreeSet<String>) {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir)
        .output()
        .expect("child runs");
    assert!(!out.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let member: MemberId = stdout
        .lines()
        .find_map(|l| l.split_once("member ").map(|(_, id)| id.trim()))
        .unwrap_or_else(|| {
            panic!("no member id from the child: {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
        })
        .parse()
        .expect("a member id");
    let acked: BTreeSet<String> =
        stdout.lines().filter_map(|l| l.split_once("acked ")).map(|(_, k)| k.trim().to_owned()).collect();
    assert!(!acked.is_empty(), "the child acknowledged writes before aborting");
    (member, acked)
}

#[test]
fn acknowledged_writes_survive_an_abort() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (member, acked) = run_child("acknowledged_writes_survive_an_abort", dir.path());

    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut cfg = cluster_testkit::member_config(Some(dir.path().to_path_buf()));
        cfg.member_id = member;
        let store = RaftStore::open(cfg).await.expect("reopen");
        assert!(store.is_initialized().await.unwrap());
        store.bootstrap().await.unwrap();
        cluster_testkit::wait_until(cluster_testkit::DEADLINE, "leader after restart", || {
            ready(store.status().is_leader())
        })
        .await;
        // A read-index read: everything committed before the crash is applied.
        let _ = store.consistent_get("k").await.unwrap();
        let present: BTreeSet<String> = store.get_prefix("k/").unwrap().into_iter().map(|(k, _)| k).collect();
        let lost: Vec<_> = acked.difference(&present).collect();
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?} ({} acknowledged)", acked.len());
        store.shutdown().await.unwrap();
    });
}

#[test]
fn flipped_bytes_mid_log_after_an_abort_lose_nothing_silently() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (member, acked) = run_child("flipped_bytes_mid_log_after_an_abort_lose_nothing_silently", dir.path());
    let wal_dir = dir.path().join(cluster_consensus::WAL_DIR);
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .expect("the log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let segment = segments.pop().expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xFF;
    }
    std::fs::write(&segment, &bytes).expect("write");

    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut cfg = cluster_testkit::member_config(Some(dir.path().to_path_buf()));
        cfg.member_id = member;
        match RaftStore::open(cfg).await {
            Err(cluster_core::Error::CorruptState { path, offset, detail }) => {
                // Refused, naming the file, where, and what to do.
                assert_eq!(std::path::Path::new(&path), segment.as_path());
                let offset = offset.expect("an offset") as usize;
                assert!(offset <= middle, "the bad record starts at or before the flip: {offset} > {middle}");
                assert!(detail.contains("--reset-raft-state"), "{detail}");
            }
            Err(other) => panic!("expected the corruption error, got {other}"),
            Ok(store) => {
                // Opened: then nothing acknowledged may be missing.
                store.bootstrap().await.unwrap();
                cluster_testkit::wait_until(cluster_testkit::DEADLINE, "leader after restart", || {
                    ready(store.status().is_leader())
                })
                .await;
                let _ = store.consistent_get("k").await.unwrap();
                let present: BTreeSet<String> =
                    store.get_prefix("k/").unwrap().into_iter().map(|(k, _)| k).collect();
                let lost: Vec<_> = acked.difference(&present).collect();
                assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
                store.shutdown().await.unwrap();
            }
        }
    });
}
