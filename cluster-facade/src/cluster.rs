//! [`ClusterOf`]: one member of the cluster, its startup choreography and its
//! graceful shutdown. Generic over the backends; [`Cluster`](crate::Cluster)
//! names the default ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{
    ConsensusBackend, ConsensusStore, MemberId, MemberInfo, Membership, RaftRole, ShortId, keys,
};
use cluster_service::{Proxy, RouterOptions, ServiceServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

use crate::admin::LivenessTable;
use crate::choreography::{self, Started, start_err};
use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::grid::{self, GridEvents, GridHub};
use crate::identity;
use crate::member_store::MemberStore;
use crate::operator::HttpServer;
use crate::operator::Metrics;
use crate::operator::Readiness;

/// The directory of the raft state inside the data directory.
pub(crate) const RAFT_DIR: &str = "raft";

/// Where others reach a member (the advertised host, with the real ports
/// when 0 was asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// Gossip (UDP).
    pub gossip: SocketAddr,
    /// Raft RPC (TCP).
    pub raft: SocketAddr,
    /// Forwarding service (TCP).
    pub service: SocketAddr,
    /// The data grid's port, as published to the other members.
    pub grid: SocketAddr,
    /// The operators' HTTP API, when it is on.
    pub http: Option<SocketAddr>,
}

/// One member of a Carbon Grid cluster, over a membership backend `M` and a
/// consensus backend `S`. Cheap to clone: clones share the member.
pub struct ClusterOf<M: Membership, S: ConsensusStore> {
    inner: Arc<Inner<M, S>>,
}

impl<M: Membership, S: ConsensusStore> Clone for ClusterOf<M, S> {
    fn clone(&self) -> Self {
        ClusterOf { inner: self.inner.clone() }
    }
}

pub(crate) struct Inner<M: Membership, S: ConsensusStore> {
    member_id: MemberId,
    short_id: watch::Receiver<Option<ShortId>>,
    first_short_id: ShortId,
    addresses: Addresses,
    config: ClusterConfig,
    membership: Arc<M>,
    store: Arc<MemberStore<S>>,
    proxy: Proxy<MemberStore<S>>,
    service: Mutex<Option<ServiceServer>>,
    grid: GridHub,
    stop: watch::Sender<bool>,
    housekeeping: Mutex<Option<JoinHandle<()>>>,
    /// The grid port picked for the grid, held until the grid takes it.
    grid_listener: Mutex<Option<std::net::TcpListener>>,
    liveness: LivenessTable,
    metrics: Metrics,
    http: Mutex<Option<HttpServer>>,
}

/// Starting needs a backend that opens on the RPC layer's settings: the
/// facade wires raft's network (limits, TLS) from its own configuration.
impl<M, S> ClusterOf<M, S>
where
    M: Membership,
    S: ConsensusBackend<Network = cluster_rpc::Settings>,
{
    /// Starts a member: identity, consensus, membership, service, in that
    /// order, then waits (up to `timeouts.start_ms`) until it holds its short
    /// id. No seeds and no earlier state: a new cluster. With seeds: joins it.
    ///
    /// A bad configuration is refused with every problem named, before
    /// anything starts; a failure later stops what was started.
    pub async fn start(config: ClusterConfig) -> Result<Self, ClusterError> {
        config.validate()?;
        // A certificate that names a member decides who this member is.
        let named = match &config.security {
            cluster_rpc::Security::Tls(tls) => tls.identity().map(|i| i.member_id),
            _ => None,
        };
        let member_id = identity::load_or_create(config.data_dir.as_deref(), &config.cluster_id, named)?;
        let span = info_span!("member", id = %member_id);
        let mut started = Started::nothing();
        match Self::choreography(config, member_id, &mut started).instrument(span).await {
            Ok(cluster) => Ok(cluster),
            Err(e) => {
                started.unwind().await;
                Err(e)
            }
        }
    }

    /// The steps of [`start`](Self::start), in order (see
    /// [`crate::choreography`]); what each started goes into `started`.
    async fn choreography(
        config: ClusterConfig,
        member_id: MemberId,
        started: &mut Started<M, MemberStore<S>>,
    ) -> Result<Self, ClusterError> {
        let (config, host, advertised) = choreography::resolve(config)?;
        let ports = choreography::bind_ports(host, advertised, &config).await?;
        let service_addr = ports.service_addr;

        // 1. consensus.
        let store =
            choreography::open_consensus::<S>(&config, member_id, host, advertised, service_addr).await?;
        // Raft holds this member's state only while it is in the replica set.
        let store = Arc::new(MemberStore::new(store));
        started.store = Some(store.clone());
        let raft_addr = store.raft_addr();
        choreography::find_or_form_raft(&*store, &config.seeds).await?;

        // 2. membership.
        let membership: M =
            choreography::join_gossip(&config, &*store, host, advertised, (service_addr, ports.grid_port))
                .await?;
        let membership = Arc::new(membership);
        started.membership = Some(membership.clone());
        let gossip_addr = membership.gossip_addr();

        // 3. the forwarding service, with gossip's view of the members.
        let (stop, stop_rx) = watch::channel(false);
        started.stop = Some(stop.clone());
        let liveness = LivenessTable::default();
        let liveness_task = tokio::spawn(liveness.clone().follow(membership.subscribe(), stop_rx.clone()));
        let metrics = Metrics::new();
        let ms = ClusterConfig::ms;
        let proxy_options = RouterOptions {
            op_timeout: ms(config.timeouts.operation_ms),
            max_frame_len: config.raft.max_frame_bytes,
            connect_timeout: config.limits.connect_timeout,
            security: config.security.clone(),
            network: config.network.clone(),
            ..RouterOptions::new(config.cluster_id.clone())
        };
        let service = choreography::serve_service(
            ports.service,
            &config,
            &store,
            &*membership,
            (&liveness, &metrics),
            proxy_options.clone(),
        )?;
        started.service = Some(service);
        let proxy = Proxy::new(store.clone(), proxy_options.clone());
        // A client member's view follows the replicas that gossip shows.
        let mode_task = tokio::spawn(
            store
                .clone()
                .run(crate::replicas::gossip_replicas(membership.clone()), proxy_options, stop_rx.clone())
                .in_current_span(),
        );

        // Housekeeping: grid events, own tags, and the leader's duties.
        let grid = grid::hub(1024);
        let (keeper_task, short_id_rx) =
            choreography::keep_house(&config, &membership, &store, &grid, stop_rx);
        started.housekeeping = Some(tokio::spawn(async move {
            let _ = keeper_task.await;
            let _ = liveness_task.await;
            let _ = mode_task.await;
        }));

        // 4. wait for the short id.
        let waited = ms(config.timeouts.start_ms);
        let short_id =
            choreography::wait_for_short_id(&*store, &*membership, short_id_rx.clone(), waited).await?;
        info!(short_id = %short_id, gossip = %gossip_addr, raft = %raft_addr, service = %service_addr, "member started");
        let (grid_port, grid_listener) = (ports.grid_port, ports.grid_listener);
        let (http_listener, http_addr) = ports.http.unzip();

        let housekeeping = started.housekeeping.take();
        let service = started.service.take();
        *started = Started::nothing();
        let inner = Arc::new(Inner {
            member_id,
            short_id: short_id_rx,
            first_short_id: short_id,
            addresses: Addresses {
                gossip: gossip_addr,
                raft: SocketAddr::new(advertised, raft_addr.port()),
                service: service_addr,
                grid: SocketAddr::new(advertised, grid_port),
                http: http_addr,
            },
            config,
            membership,
            store,
            proxy,
            service: Mutex::new(service),
            grid,
            stop,
            housekeeping: Mutex::new(housekeeping),
            grid_listener: Mutex::new(grid_listener),
            liveness,
            metrics,
            http: Mutex::new(None),
        });
        let cluster = ClusterOf { inner };
        if let Some(listener) = http_listener {
            let config = &cluster.inner.config;
            let server = crate::operator::serve(
                listener,
                member_while_alive(&cluster.inner),
                &config.security,
                &config.limits.http,
            )
            .map_err(|e| start_err("http")(e.into()));
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    let _ = cluster.clone().shutdown().await;
                    return Err(e);
                }
            };
            *cluster.inner.http.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        }
        Ok(cluster)
    }
}

impl<M: Membership, S: ConsensusStore> ClusterOf<M, S> {
    pub(crate) fn from_inner(inner: Arc<Inner<M, S>>) -> Self {
        ClusterOf { inner }
    }

    /// The listener of the grid port this member picked (when `grid_port`
    /// was 0), for the data grid to accept on. Until taken, the member holds
    /// it so that no other process gets the same port; `None` once taken or
    /// when the port was configured.
    pub fn take_grid_listener(&self) -> Option<std::net::TcpListener> {
        self.inner.grid_listener.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// This member's metrics; the transport feeds its hooks.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Gossip's view of every member this member heard of.
    pub fn liveness(&self) -> BTreeMap<MemberId, cluster_core::Liveness> {
        self.inner
            .liveness
            .liveness(&self.inner.store.status(), &self.inner.store.short_ids().unwrap_or_default())
    }

    /// How far along consensus is on this member.
    pub async fn consensus_progress(&self) -> cluster_core::ConsensusProgress {
        self.inner.store.progress().await
    }

    /// Whether this member can serve now: it holds its short id, knows a
    /// leader that has a quorum, and applied nearly all that is committed.
    pub async fn readiness(&self) -> Readiness {
        let status = self.inner.store.status();
        let progress = self.inner.store.progress().await;
        let short_id = *self.inner.short_id.borrow();
        let lost_after = ClusterConfig::ms(self.inner.config.raft.election_timeout_max_ms * 3)
            .max(Duration::from_millis(500));
        Readiness::assess(short_id, &status, &progress, lost_after)
    }

    /// This member's permanent id.
    pub fn member_id(&self) -> MemberId {
        self.inner.member_id
    }

    /// This member's short id: the one its applied state machine holds for it.
    ///
    /// It is the id it started with unless this member was unreachable longer
    /// than the reap timeout: then its id was freed (and may be another
    /// member's now), and the leader gives it a new one when it is back.
    /// While it holds none, this returns the id it started with;
    /// [`watch_short_id`] tells the difference, and grid events report the
    /// change.
    ///
    /// [`watch_short_id`]: Self::watch_short_id
    pub fn short_id(&self) -> ShortId {
        self.inner.short_id.borrow().unwrap_or(self.inner.first_short_id)
    }

    /// Every change of this member's short id: `None` while it holds none
    /// (freed after a long absence, a new one not yet allocated).
    pub fn watch_short_id(&self) -> watch::Receiver<Option<ShortId>> {
        self.inner.short_id.clone()
    }

    /// The addresses this member is bound to.
    pub fn addresses(&self) -> Addresses {
        self.inner.addresses
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// This member's role now: `Client` while it is outside the replica
    /// set (a member that joins is one until the leader adds it to raft).
    pub fn raft_role(&self) -> RaftRole {
        self.inner.store.status().role().unwrap_or(RaftRole::Client)
    }

    /// What this member knows about consensus now.
    pub fn consensus_status(&self) -> cluster_core::ConsensusStatus {
        self.inner.store.status()
    }

    /// The short id of every member as the store holds them (this member's
    /// applied state): the allocation itself, which the member records
    /// follow.
    pub fn short_ids(&self) -> Result<BTreeMap<MemberId, ShortId>, ClusterError> {
        Ok(self.inner.store.short_ids()?)
    }

    /// The members as the cluster recorded them in the store (this member's
    /// applied state: may trail the leader by a moment), by short id order.
    pub fn members(&self) -> Result<Vec<MemberInfo>, ClusterError> {
        let records = keys::MemberRecords::decode(self.inner.store.get_prefix(keys::MEMBERS_PREFIX)?);
        for (key, error) in &records.rejected {
            warn!(%key, %error, "skipping an entry that is not a member record");
        }
        let mut members: Vec<MemberInfo> = records.members.into_values().collect();
        members.sort_by_key(|m| (m.short_id.is_none(), m.short_id, m.member_id));
        Ok(members)
    }

    /// The members alive in gossip now, as their tags describe them.
    pub fn live_members(&self) -> Vec<MemberInfo> {
        self.inner
            .membership
            .members()
            .iter()
            .filter_map(|m| MemberInfo::from_tags(m.id, &m.tags).ok())
            .collect()
    }

    /// The consistent key-value store, from this member, whatever its role:
    /// writes and consistent reads go to the leader, across failovers.
    pub fn store(&self) -> &Proxy<MemberStore<S>> {
        &self.inner.proxy
    }

    /// A new subscription to grid events: first a `Joined` event for every
    /// live member with a short id, then every change.
    pub fn grid_events(&self) -> GridEvents {
        GridEvents::new(&self.inner.grid)
    }

    /// Leaves the cluster gracefully: peers see this member leave (not fail),
    /// the leader frees its short id, and every task and port is released.
    ///
    /// It takes as long as the peers need to hear it (a few gossip rounds),
    /// not `timeouts.leave_ms`, which only bounds the wait: a leader first
    /// takes itself out of raft; a voter whose departure would leave the
    /// others without a quorum waits until the leader took it out; any
    /// other member goes as soon as gossip carried the news.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let me = inner.member_id;
        let deadline = tokio::time::Instant::now() + ClusterConfig::ms(inner.config.timeouts.leave_ms);
        self.stop_http().await;
        self.stop_housekeeping().await;
        // Who is alive is known only until gossip stops.
        let live: std::collections::BTreeSet<MemberId> =
            inner.membership.members().iter().map(|m| m.id).collect();
        if let Err(e) = inner.membership.leave().await {
            warn!(member = %me, error = %e, "gossip leave failed; peers will see a failure");
        }
        let status = inner.store.status();
        let others = status.all_members().into_iter().any(|id| id != me);
        if others && status.is_leader() {
            // No one else would take this member out of raft: do it, and
            // let the others elect a leader among themselves.
            if let Ok(Err(e)) = tokio::time::timeout_at(deadline, inner.store.remove(me)).await {
                warn!(member = %me, error = %e, "could not leave raft");
            }
        } else if others && needed_for_quorum(&status, me, &live) {
            // The leader's change that removes this voter needs its vote:
            // stay until it is out of raft, or a small cluster would be left
            // waiting on a voter that is gone.
            let mut changes = inner.store.status_changes();
            let _ =
                tokio::time::timeout_at(deadline, changes.wait_for(|s| !s.all_members().contains(&me))).await;
        }
        self.stop_service().await;
        inner.store.shutdown().await?;
        info!(member = %me, "left the cluster");
        Ok(())
    }

    /// Stops at once without telling anyone, as a crash would: peers see a
    /// failure. For tests and emergencies; prefer [`shutdown`](Self::shutdown).
    pub async fn abort(self) -> Result<(), ClusterError> {
        self.stop_http().await;
        self.stop_housekeeping().await;
        self.inner.membership.stop().await?;
        self.stop_service().await;
        self.inner.store.shutdown().await?;
        Ok(())
    }

    async fn stop_http(&self) {
        let http = self.inner.http.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(http) = http {
            http.shutdown().await;
        }
    }

    async fn stop_service(&self) {
        let service = self.inner.service.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(service) = service {
            service.shutdown().await;
        }
    }

    async fn stop_housekeeping(&self) {
        let _ = self.inner.stop.send(true);
        let task = self.inner.housekeeping.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl<M: Membership, S: ConsensusStore> Drop for Inner<M, S> {
    fn drop(&mut self) {
        // Dropped without shutdown: at least end the housekeeping task.
        let _ = self.stop.send(true);
    }
}

/// Whether the leader needs `me` to take it out of raft: a voter is needed
/// when the other voters alive in gossip are no majority of the voters
/// (the joint configuration that removes it must be committed by a majority
/// of the old voters). A nonvoter never is.
fn needed_for_quorum(
    status: &cluster_core::ConsensusStatus,
    me: MemberId,
    live: &std::collections::BTreeSet<MemberId>,
) -> bool {
    if !status.voters.contains_key(&me) {
        return false;
    }
    let others_live = status.voters.keys().filter(|v| **v != me && live.contains(v)).count();
    others_live < status.voters.len() / 2 + 1
}

#[cfg(feature = "gossip-chitchat")]
impl<S: ConsensusStore> ClusterOf<cluster_gossip::Gossip, S> {
    /// This member's live gossip keyring: list, install, use (make primary)
    /// and remove keys, each change persisted to the keyring file when there
    /// is one. `None` when gossip is not encrypted. It acts on this member
    /// only: a rotation installs the new key on every member, then uses it on
    /// every member, then removes the old one on every member.
    pub fn gossip_keyring(&self) -> Option<cluster_gossip::KeyringHandle> {
        self.inner.membership.keyring().cloned()
    }
}

/// The member behind `inner` while it lives: the HTTP server holds this,
/// never the member itself.
fn member_while_alive<M: Membership, S: ConsensusStore>(
    inner: &Arc<Inner<M, S>>,
) -> impl Fn() -> Option<ClusterOf<M, S>> + Send + Sync + 'static {
    let weak = Arc::downgrade(inner);
    move || weak.upgrade().map(ClusterOf::from_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::Endpoints;

    #[test]
    fn a_voter_stays_for_its_removal_only_when_the_others_are_no_majority() {
        let ids: Vec<MemberId> = (1..=3).map(MemberId::from).collect();
        let mut status = cluster_core::ConsensusStatus { member_id: ids[0], ..Default::default() };
        for id in &ids {
            status.voters.insert(*id, Endpoints::default());
        }
        let all: std::collections::BTreeSet<MemberId> = ids.iter().copied().collect();
        // 3 voters, the 2 others alive: they commit the change alone.
        assert!(!needed_for_quorum(&status, ids[0], &all));
        // One of them is down: the change needs this member's vote.
        let one_down: std::collections::BTreeSet<MemberId> = [ids[0], ids[1]].into();
        assert!(needed_for_quorum(&status, ids[0], &one_down));
        // 2 voters: the other alone is no majority of 2.
        status.voters.remove(&ids[2]);
        assert!(needed_for_quorum(&status, ids[0], &all));
        // A nonvoter is never needed.
        let mut nonvoter = status.clone();
        nonvoter.voters.remove(&ids[0]);
        nonvoter.nonvoters.insert(ids[0], Endpoints::default());
        assert!(!needed_for_quorum(&nonvoter, ids[0], &all));
    }
}
