//! A local cluster of real raft members (cluster-consensus), each with its
//! service server, for the integration tests.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::future::ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_consensus::RaftStore;
use cluster_core::testsuite::config::consensus_config;
use cluster_core::testsuite::wait_until;
use cluster_core::{ConsensusConfig, ConsensusStore, MemberId, RaftTiming};
use cluster_service::{Backoff, Proxy, RouterOptions, ServerConfig, ServiceClient, ServiceServer};
use tokio::net::TcpListener;

pub const CLUSTER: &str = "raft-test-cluster";
/// Generous: the machine is small and shared.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub use cluster_core::testsuite::config::raft_timing as timing;
pub use cluster_core::testsuite::init_tracing;

pub fn proxy_options() -> RouterOptions {
    let mut o = RouterOptions::new(CLUSTER);
    o.op_timeout = DEADLINE;
    o.attempt_timeout = Duration::from_secs(5);
    o.backoff =
        Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(200), multiplier: 2 };
    o
}

pub fn client_options() -> RouterOptions {
    let mut o = RouterOptions::new(CLUSTER);
    o.op_timeout = DEADLINE;
    o.attempt_timeout = Duration::from_secs(5);
    o.backoff =
        Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(200), multiplier: 2 };
    o
}

/// One member: its store, its service server, a proxy over it.
pub struct Member {
    pub store: RaftStore,
    pub server: Option<ServiceServer>,
    pub service_addr: String,
    pub proxy: Proxy<RaftStore>,
}

impl Member {
    pub fn id(&self) -> MemberId {
        self.store.member_id()
    }

    /// A client that knows only this member.
    pub fn client(&self) -> ServiceClient {
        ServiceClient::new([self.service_addr.clone()], client_options()).expect("a client")
    }

    /// Stops its service, then its store.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.store.shutdown().await.expect("shutdown");
    }
}

pub struct RaftCluster {
    pub members: Vec<Member>,
}

impl RaftCluster {
    /// `voters` voters and `nonvoters` nonvoters, in memory.
    pub async fn start(voters: usize, nonvoters: usize) -> RaftCluster {
        let mut cluster = RaftCluster { members: Vec::new() };
        for i in 0..voters + nonvoters {
            let member = open_member().await;
            if i == 0 {
                member.store.bootstrap().await.expect("bootstrap");
            } else {
                let leader = cluster.leader().await;
                let store = &cluster.members[leader].store;
                store
                    .add_nonvoter(member.id(), member.store.endpoints().clone())
                    .await
                    .expect("add nonvoter");
                if i < voters {
                    store.promote(member.id()).await.expect("promote");
                }
            }
            cluster.members.push(member);
        }
        let leader = cluster.leader().await;
        let index = cluster.members[leader].store.status().last_log_index.unwrap_or_default();
        cluster.wait_applied(index).await;
        cluster
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().enumerate().filter(|(_, m)| !m.store.is_shut_down())
    }

    /// The index of the member every running voter agrees leads.
    pub async fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let leaders: Vec<usize> =
                self.running().filter(|(_, m)| m.store.status().is_leader()).map(|(i, _)| i).collect();
            if let [i] = leaders[..] {
                let status = self.members[i].store.status();
                let agreed = self
                    .running()
                    .filter(|(_, m)| status.voters.contains_key(&m.id()))
                    .all(|(_, m)| m.store.status().leader == Some(status.member_id));
                if agreed {
                    return i;
                }
            }
            assert!(start.elapsed() < DEADLINE, "no leader elected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A running voter that does not lead.
    pub async fn follower(&self) -> usize {
        let leader = self.leader().await;
        let voters = self.members[leader].store.status().voters;
        self.running()
            .find(|(i, m)| *i != leader && voters.contains_key(&m.id()))
            .map(|(i, _)| i)
            .expect("a follower")
    }

    /// A running nonvoter.
    pub fn nonvoter(&self) -> usize {
        self.running()
            .find(|(_, m)| m.store.status().role() == Some(cluster_core::RaftRole::Nonvoter))
            .map(|(i, _)| i)
            .expect("a nonvoter")
    }

    /// Waits until every running member applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        for (_, m) in self.running() {
            let mut rx = m.store.status_changes();
            tokio::time::timeout(DEADLINE, rx.wait_for(|s| s.applied_index >= Some(index)))
                .await
                .expect("applied in time")
                .expect("member running");
        }
    }

    /// Waits until every running member applied what the leader applied now.
    pub async fn wait_caught_up(&self) {
        let leader = self.leader().await;
        let index = self.members[leader].store.status().applied_index.unwrap_or_default();
        self.wait_applied(index).await;
    }

    pub async fn shutdown(mut self) {
        for m in &mut self.members {
            if !m.store.is_shut_down() {
                m.stop().await;
            }
        }
    }
}

/// Opens a member with its service server on a free port (bound first, so
/// its address is in the member's raft endpoints).
pub async fn open_member() -> Member {
    open_member_with(timing()).await
}

/// Like [`open_member`], with its own raft timing (snapshots, say).
pub async fn open_member_with(timing: RaftTiming) -> Member {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service_addr = listener.local_addr().expect("addr").to_string();
    let config = ConsensusConfig { timing, ..consensus_config(CLUSTER, &service_addr, None) };
    let store = RaftStore::open(config).await.expect("open");
    let shared = Arc::new(store.clone());
    let server = ServiceServer::serve(listener, shared.clone(), ServerConfig::new(CLUSTER)).expect("serve");
    let proxy = Proxy::new(shared, proxy_options());
    Member { store, server: Some(server), service_addr, proxy }
}

/// Waits until `counter` reaches `n`.
pub async fn wait_until_count(counter: &std::sync::atomic::AtomicUsize, n: usize) {
    let what = format!("{n} acknowledgements");
    wait_until(DEADLINE, &what, || ready(counter.load(std::sync::atomic::Ordering::SeqCst) >= n)).await;
}
