//! The raft-backed store keeps the `ConsensusStore` contract (the kit's
//! suite, the one the fake store passes too), in memory and on disk.

use cluster_consensus::RaftStore;
use cluster_core::testsuite::contract::consensus_store_suite;
use cluster_testkit::member_config as config;

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
