//! Shared helpers: configs with fast timing and a local cluster builder. Waits
//! and logs come from the kit (`cluster_core::testsuite`).

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::future::ready;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster_consensus::RaftStore;
use cluster_core::testsuite::config::consensus_config;
use cluster_core::{ConsensusConfig, ConsensusLimits, ConsensusStore, RaftTiming};

pub use cluster_core::testsuite::{DEADLINE, init_tracing, wait_until};

/// Fast, but without spurious elections on a loaded 2-core machine.
pub use cluster_core::testsuite::config::raft_timing as timing;

/// A new member of `test-cluster`, in memory unless `data_dir` is given.
pub fn config(data_dir: Option<PathBuf>) -> ConsensusConfig {
    consensus_config("test-cluster", "127.0.0.1:1", data_dir)
}

/// Members in one process on loopback.
pub struct Cluster {
    pub members: Vec<RaftStore>,
    pub configs: Vec<ConsensusConfig>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// `voters` voters, durable or in memory, with `timing`.
    pub async fn start(voters: usize, durable: bool, timing: RaftTiming) -> Cluster {
        Self::start_with_limits(voters, durable, timing, ConsensusLimits::default()).await
    }

    /// `voters` voters with these quotas.
    pub async fn start_with_limits(
        voters: usize,
        durable: bool,
        timing: RaftTiming,
        limits: ConsensusLimits,
    ) -> Cluster {
        let mut cluster = Cluster { members: Vec::new(), configs: Vec::new(), dirs: Vec::new() };
        for i in 0..voters {
            let store = cluster.open_new_with(durable, timing.clone(), limits.clone()).await;
            if i == 0 {
                store.bootstrap().await.expect("bootstrap");
            } else {
                let leader = cluster.leader().await;
                leader
                    .add_nonvoter(store.member_id(), store.endpoints().clone())
                    .await
                    .expect("add nonvoter");
                leader.promote(store.member_id()).await.expect("promote");
            }
        }
        cluster
    }

    /// Opens one more member (not yet in raft).
    pub async fn open_new(&mut self, durable: bool, timing: RaftTiming) -> RaftStore {
        self.open_new_with(durable, timing, ConsensusLimits::default()).await
    }

    /// Opens one more member with these quotas (not yet in raft).
    pub async fn open_new_with(
        &mut self,
        durable: bool,
        timing: RaftTiming,
        limits: ConsensusLimits,
    ) -> RaftStore {
        let dir = if durable {
            let d = tempfile::tempdir().expect("temp dir");
            let path = d.path().to_path_buf();
            self.dirs.push(d);
            Some(path)
        } else {
            None
        };
        let mut cfg = config(dir);
        cfg.timing = timing;
        cfg.limits = limits;
        let store = RaftStore::open(cfg.clone()).await.expect("open");
        // Reopen on the same port: the membership remembers the address.
        cfg.raft_listen_addr = store.raft_addr();
        self.configs.push(cfg);
        self.members.push(store.clone());
        store
    }

    /// The member every running member agrees leads.
    pub async fn leader(&self) -> RaftStore {
        let start = Instant::now();
        loop {
            let running: Vec<&RaftStore> = self.members.iter().filter(|m| !m.is_shut_down()).collect();
            let leaders: Vec<_> = running.iter().filter(|m| m.status().is_leader()).collect();
            if leaders.len() == 1 {
                let id = leaders[0].member_id();
                let voters = leaders[0].status().voters;
                if running
                    .iter()
                    .filter(|m| voters.contains_key(&m.member_id()))
                    .all(|m| m.status().leader == Some(id))
                {
                    return (*leaders[0]).clone();
                }
            }
            assert!(start.elapsed() < DEADLINE, "no leader elected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running member applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        for m in &self.members {
            if m.is_shut_down() {
                continue;
            }
            wait_until(DEADLINE, "applied", || ready(m.applied_index() >= Some(index))).await;
        }
    }

    /// Stops member `i` (its handle stays, stopped).
    pub async fn stop(&self, i: usize) {
        self.members[i].shutdown().await.expect("shutdown");
    }

    pub async fn shutdown(&self) {
        for m in &self.members {
            m.shutdown().await.expect("shutdown");
        }
    }
}

pub fn addr_of(store: &RaftStore) -> SocketAddr {
    store.raft_addr()
}
