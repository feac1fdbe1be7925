//! The in-process cluster: raft members (`cluster-consensus`, in memory or
//! durable in temporary directories), the service server in front of each
//! (`cluster-service`), and optionally gossip on chitchat's channel transport.
//!
//! Every member runs in the test's own runtime on loopback, with ports from
//! the OS. The RPC settings (limits, security) are one
//! [`cluster_rpc::Settings`] the builder is given, so a test picks the network
//! under raft and the service in one place.
//!
//! ```no_run
//! # async fn example() {
//! use cluster_core::ConsensusStore;
//! use cluster_testkit::LocalCluster;
//!
//! let cluster = LocalCluster::builder(3).nonvoters(1).start().await;
//! // Through the nonvoter: its router forwards the write to the leader.
//! let nonvoter = &cluster.members[cluster.nonvoter()];
//! nonvoter.proxy.set("k", "v").await.expect("a write");
//! cluster.wait_caught_up().await;
//! assert_eq!(nonvoter.store.get("k").expect("a read"), Some(b"v".to_vec()));
//! cluster.shutdown().await;
//! # }
//! ```

use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_consensus::RaftStore;
use cluster_core::testsuite::config::{consensus_config, raft_timing};
use cluster_core::testsuite::{DEADLINE, wait_until};
use cluster_core::{
    ConsensusBackend, ConsensusConfig, ConsensusLimits, ConsensusStore, MemberId, RaftRole, RaftTiming,
};
use cluster_gossip::{ChannelTransport, Gossip, GossipTransport};
use cluster_service::{Backoff, Proxy, RouterOptions, ServerConfig, ServiceClient, ServiceServer};
use tokio::net::TcpListener;

/// The cluster id of a [`LocalCluster`] unless the builder names another.
pub const LOCAL_CLUSTER_ID: &str = "test-cluster";

/// Router options for tests: the kit's deadline for an operation, five
/// seconds an attempt, retries from 10 ms up to 200 ms apart.
pub fn router_options(cluster_id: &str) -> RouterOptions {
    let mut o = RouterOptions::new(cluster_id);
    o.op_timeout = DEADLINE;
    o.attempt_timeout = Duration::from_secs(5);
    o.backoff =
        Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(200), multiplier: 2 };
    o
}

/// A lone member of [`LOCAL_CLUSTER_ID`] without a service (its service
/// address is a placeholder), in memory unless `data_dir` is given, for tests
/// that open a [`RaftStore`] by hand.
pub fn member_config(data_dir: Option<std::path::PathBuf>) -> ConsensusConfig {
    consensus_config(LOCAL_CLUSTER_ID, "127.0.0.1:1", data_dir)
}

/// How to start a [`LocalCluster`]; from [`LocalCluster::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    voters: usize,
    nonvoters: usize,
    durable: bool,
    timing: RaftTiming,
    limits: ConsensusLimits,
    settings: cluster_rpc::Settings,
    cluster_id: String,
    gossip: bool,
}

impl Builder {
    /// Nonvoters besides the voters (default none).
    pub fn nonvoters(mut self, nonvoters: usize) -> Self {
        self.nonvoters = nonvoters;
        self
    }

    /// Raft state in temporary directories, so that a restart keeps it
    /// (default: in memory, a restart is a new empty member).
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Raft timing (default: the kit's [`raft_timing`]).
    pub fn timing(mut self, timing: RaftTiming) -> Self {
        self.timing = timing;
        self
    }

    /// The members' quotas (default: the defaults).
    pub fn limits(mut self, limits: ConsensusLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The RPC settings of raft and the service (default: plain TCP, default
    /// limits): where a test plugs in another network or TLS.
    pub fn settings(mut self, settings: cluster_rpc::Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The cluster id (default [`LOCAL_CLUSTER_ID`]).
    pub fn cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = cluster_id.into();
        self
    }

    /// Also run gossip on every member, over one chitchat channel transport
    /// ([`LocalCluster::gossip_network`] cuts and heals its links).
    pub fn gossip(mut self, gossip: bool) -> Self {
        self.gossip = gossip;
        self
    }

    /// Starts the members: the first bootstraps, each other joins as a
    /// nonvoter and the first `voters` are promoted; returns once every
    /// member applied the last membership change.
    pub async fn start(self) -> LocalCluster {
        let network = self.gossip.then(ChannelTransport::default);
        let mut cluster = LocalCluster { members: Vec::new(), builder: self, network };
        let total = cluster.builder.voters + cluster.builder.nonvoters;
        for i in 0..total {
            let at = cluster.open_new_member().await;
            if i == 0 {
                cluster.members[at].store.bootstrap().await.expect("bootstrap");
            } else {
                cluster.join(at, i < cluster.builder.voters).await;
            }
        }
        cluster.wait_caught_up().await;
        cluster
    }
}

/// One member: its raft store, the service server in front of it, a proxy
/// over it, and its gossip when the cluster runs gossip.
pub struct Member {
    /// The raft store.
    pub store: RaftStore,
    /// The configuration it was opened with (its raft port fixed after the
    /// first start, so a restart keeps its address).
    pub config: ConsensusConfig,
    /// The service address `host:port`.
    pub service_addr: String,
    /// A router over this member's store (leader-routed writes).
    pub proxy: Proxy<RaftStore>,
    /// Its gossip, when the cluster runs gossip.
    pub gossip: Option<Gossip>,
    server: Mutex<Option<ServiceServer>>,
    // Kept for the member's life: a restart reopens the same directory.
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id()).field("service_addr", &self.service_addr).finish()
    }
}

/// A member is used where its store is: `member.status()`, `&member` as a
/// `&RaftStore`.
impl std::ops::Deref for Member {
    type Target = RaftStore;

    fn deref(&self) -> &RaftStore {
        &self.store
    }
}

impl Member {
    /// Its member id.
    pub fn id(&self) -> MemberId {
        self.store.member_id()
    }

    /// True until it is stopped.
    pub fn is_running(&self) -> bool {
        !self.store.is_shut_down()
    }

    /// A client that knows only this member.
    pub fn client(&self) -> ServiceClient {
        ServiceClient::new([self.service_addr.clone()], router_options(&self.config.cluster_id))
            .expect("a client")
    }

    /// Stops its gossip, its service, then its store (a member already
    /// stopped is left alone).
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            server.shutdown().await;
        }
        if let Some(gossip) = &self.gossip {
            let _ = gossip.stop().await;
        }
        if self.is_running() {
            self.store.shutdown().await.expect("shutdown");
        }
    }
}

/// Members in this process on loopback; see the module documentation.
pub struct LocalCluster {
    /// Every member opened, stopped ones included (their index stays).
    pub members: Vec<Member>,
    builder: Builder,
    network: Option<ChannelTransport>,
}

impl LocalCluster {
    /// A cluster of `voters` voters, in memory, with the kit's timing; change
    /// it with the builder's methods, then [`Builder::start`].
    pub fn builder(voters: usize) -> Builder {
        Builder {
            voters,
            nonvoters: 0,
            durable: false,
            timing: raft_timing(),
            limits: ConsensusLimits::default(),
            settings: cluster_rpc::Settings::default(),
            cluster_id: LOCAL_CLUSTER_ID.to_owned(),
            gossip: false,
        }
    }

    /// `voters` voters and `nonvoters` nonvoters, in memory.
    pub async fn start(voters: usize, nonvoters: usize) -> LocalCluster {
        Self::builder(voters).nonvoters(nonvoters).start().await
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.builder.cluster_id
    }

    /// The chitchat channel transport the members gossip over, when they do.
    pub fn gossip_network(&self) -> Option<&ChannelTransport> {
        self.network.as_ref()
    }

    /// The stores of every member, stopped ones included.
    pub fn stores(&self) -> Vec<RaftStore> {
        self.members.iter().map(|m| m.store.clone()).collect()
    }

    /// The running members with their indexes.
    pub fn running(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.members.iter().enumerate().filter(|(_, m)| m.is_running())
    }

    /// A configuration for a new member of this cluster whose service is at
    /// `service_addr` (the builder's settings reach raft where it opens).
    fn config(&self, service_addr: &str, data_dir: Option<std::path::PathBuf>) -> ConsensusConfig {
        ConsensusConfig {
            timing: self.builder.timing.clone(),
            limits: self.builder.limits.clone(),
            ..consensus_config(&self.builder.cluster_id, service_addr, data_dir)
        }
    }

    /// Serves the service of `store` on `listener` with the builder's settings.
    fn serve(&self, listener: TcpListener, store: &RaftStore) -> ServiceServer {
        let config = ServerConfig {
            limits: self.builder.settings.limits.clone(),
            security: self.builder.settings.security.clone(),
            ..ServerConfig::new(self.builder.cluster_id.clone())
        };
        ServiceServer::serve(listener, Arc::new(store.clone()), config).expect("serve")
    }

    /// Starts gossip for member `id` on the channel transport, seeded on the
    /// first member's gossip.
    async fn start_gossip(&self, id: MemberId, index: usize) -> Option<Gossip> {
        let network = self.network.as_ref()?;
        let mut config = crate::gossip::fast_config(&self.builder.cluster_id)
            .with_member_id(id)
            .with_tag("n", index.to_string())
            .with_transport(GossipTransport::Channel(network.clone()));
        if let Some(seed) = self.members.first().and_then(|m| m.gossip.as_ref()) {
            config = config.with_seeds([seed.gossip_addr().to_string()]);
        }
        Some(Gossip::start(config).await.expect("gossip starts"))
    }

    /// Opens one more member (not yet in raft) and returns its index.
    async fn open_new_member(&mut self) -> usize {
        let dir = self.builder.durable.then(|| Arc::new(tempfile::tempdir().expect("a temp dir")));
        // Bound first, so that its address is in the member's raft endpoints.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let service_addr = listener.local_addr().expect("an address").to_string();
        let mut config = self.config(&service_addr, dir.as_ref().map(|d| d.path().to_path_buf()));
        let store = RaftStore::open_with(config.clone(), self.builder.settings.clone()).await.expect("open");
        // Reopen on the same port: the membership remembers the address.
        config.raft_listen_addr = store.raft_addr();
        let server = self.serve(listener, &store);
        let proxy = Proxy::new(Arc::new(store.clone()), router_options(&self.builder.cluster_id));
        let gossip = self.start_gossip(store.member_id(), self.members.len()).await;
        self.members.push(Member {
            store,
            config,
            service_addr,
            proxy,
            gossip,
            server: Mutex::new(Some(server)),
            _dir: dir,
        });
        self.members.len() - 1
    }

    /// Opens one more member (not yet in raft) with the cluster's options;
    /// returns its store (it is the last of [`members`](Self::members)).
    pub async fn open_new(&mut self) -> RaftStore {
        let at = self.open_new_member().await;
        self.members[at].store.clone()
    }

    /// Adds member `at` as a nonvoter through the leader, and promotes it
    /// when `voter`.
    pub async fn join(&self, at: usize, voter: bool) {
        let leader = self.leader().await;
        let member = &self.members[at].store;
        leader.add_nonvoter(member.member_id(), member.endpoints().clone()).await.expect("add nonvoter");
        if voter {
            leader.promote(member.member_id()).await.expect("promote");
        }
    }

    /// The index of the member every running voter agrees leads.
    pub async fn leader_index(&self) -> usize {
        let mut found = None;
        wait_until(DEADLINE, "a leader every running voter agrees on", || {
            found = self.agreed_leader();
            ready(found.is_some())
        })
        .await;
        found.expect("a leader")
    }

    fn agreed_leader(&self) -> Option<usize> {
        let leaders: Vec<usize> =
            self.running().filter(|(_, m)| m.store.status().is_leader()).map(|(i, _)| i).collect();
        let [i] = leaders[..] else { return None };
        let status = self.members[i].store.status();
        self.running()
            .filter(|(_, m)| status.voters.contains_key(&m.id()))
            .all(|(_, m)| m.store.status().leader == Some(status.member_id))
            .then_some(i)
    }

    /// The store of the member every running voter agrees leads.
    pub async fn leader(&self) -> RaftStore {
        self.members[self.leader_index().await].store.clone()
    }

    /// A running voter that does not lead.
    pub async fn follower(&self) -> usize {
        let leader = self.leader_index().await;
        let voters = self.members[leader].store.status().voters;
        self.running()
            .find(|(i, m)| *i != leader && voters.contains_key(&m.id()))
            .map(|(i, _)| i)
            .expect("a follower")
    }

    /// A running nonvoter.
    pub fn nonvoter(&self) -> usize {
        self.running()
            .find(|(_, m)| m.store.status().role() == Some(RaftRole::Nonvoter))
            .map(|(i, _)| i)
            .expect("a nonvoter")
    }

    /// Waits until every running member applied `index`.
    pub async fn wait_applied(&self, index: u64) {
        for (i, m) in self.running() {
            let what = format!("member {i} to apply index {index}");
            wait_until(DEADLINE, &what, || ready(m.store.applied_index() >= Some(index))).await;
        }
    }

    /// Waits until every running member applied what the leader applied now.
    pub async fn wait_caught_up(&self) {
        let leader = self.leader().await;
        self.wait_applied(leader.applied_index().unwrap_or_default()).await;
    }

    /// A client that knows every running member.
    pub fn client(&self) -> ServiceClient {
        let addrs: Vec<String> = self.running().map(|(_, m)| m.service_addr.clone()).collect();
        ServiceClient::new(addrs, router_options(&self.builder.cluster_id)).expect("a client")
    }

    /// Stops member `i` (its entry stays, stopped).
    pub async fn stop(&self, i: usize) {
        self.members[i].stop().await;
    }

    /// Starts member `i` again from its configuration, on its ports (stopping
    /// it first if it runs): durable members keep their state, members in
    /// memory come back empty with their old id.
    pub async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        let config = self.members[i].config.clone();
        let listener =
            TcpListener::bind(&self.members[i].service_addr).await.expect("bind the service again");
        let store = RaftStore::open_with(config, self.builder.settings.clone()).await.expect("reopen");
        let server = self.serve(listener, &store);
        let gossip = self.start_gossip(store.member_id(), i).await;
        let member = &mut self.members[i];
        member.proxy = Proxy::new(Arc::new(store.clone()), router_options(&member.config.cluster_id));
        member.store = store;
        member.gossip = gossip;
        *member.server.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(server);
    }

    /// Stops every member, then starts them all again ([`restart`](Self::restart)).
    pub async fn restart_all(&mut self) {
        self.shutdown().await;
        for i in 0..self.members.len() {
            self.restart(i).await;
        }
    }

    /// Stops every running member.
    pub async fn shutdown(&self) {
        for m in &self.members {
            m.stop().await;
        }
    }
}
