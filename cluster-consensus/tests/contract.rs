//! The raft-backed store keeps the `ConsensusStore` contract (the kit's
//! suite, the one the fake store passes too), in memory and on disk.

use std::time::Duration;

use cluster_consensus::RaftStore;
use cluster_core::testsuite::contract::consensus_store_suite;
use cluster_core::wire::DEFAULT_MAX_FRAME_LEN;
use cluster_core::{ConsensusConfig, ConsensusStore, MemberId, RaftTiming};

fn config(data_dir: Option<std::path::PathBuf>) -> ConsensusConfig {
    ConsensusConfig {
        member_id: MemberId::generate(),
        cluster_id: "contract".to_owned(),
        raft_listen_addr: "127.0.0.1:0".parse().expect("a socket address"),
        advertise_host: "127.0.0.1".to_owned(),
        service_addr: "127.0.0.1:1".to_owned(),
        data_dir,
        // Fast, but without spurious elections on a loaded machine.
        timing: RaftTiming {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(800),
            ..RaftTiming::default()
        },
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        rpc_timeout: Duration::from_secs(1),
        transport: Default::default(),
        limits: Default::default(),
    }
}

#[tokio::test]
async fn the_in_memory_raft_store_keeps_the_contract() {
    consensus_store_suite(|| RaftStore::open(config(None))).await;
}

#[cfg(feature = "durable")]
#[tokio::test]
async fn the_durable_raft_store_keeps_the_contract() {
    let dirs = std::sync::Mutex::new(Vec::new());
    consensus_store_suite(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = config(Some(dir.path().to_path_buf()));
        dirs.lock().expect("not poisoned").push(dir);
        RaftStore::open(config)
    })
    .await;
}
