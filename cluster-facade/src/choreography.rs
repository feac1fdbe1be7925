//! The steps of a member's start, in their order: bind the ports, open
//! consensus, find or form raft, join gossip, serve, keep house, wait for the
//! short id. [`ClusterOf::start`](crate::ClusterOf::start) runs them; each
//! says what it needs before and what holds after, and what it started is
//! recorded in [`Started`], so that a failed start stops it again.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cluster_core::{
    ConsensusBackend, ConsensusConfig, ConsensusStore, MemberId, MemberInfo, Membership, MembershipConfig,
    RaftRole, ShortId, member::tag,
};
use cluster_service::{ServerConfig, ServiceServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info};

use crate::admin::{Admin, LivenessTable};
use crate::cluster::RAFT_DIR;
use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::grid::GridHub;
use crate::housekeeping::{Housekeeper, Settings};
use crate::identity;
use crate::operator::{HttpServer, Metrics};
use crate::proof::MemberProofs;

/// How long a gossip member whose raft endpoint failed to prove a member
/// certificate waits before the leader asks again.
const PROOF_RETRY: Duration = Duration::from_secs(5);

/// What was started so far, so that a failed start stops it again.
pub(crate) struct Started<M, S> {
    pub(crate) store: Option<Arc<S>>,
    pub(crate) membership: Option<Arc<M>>,
    pub(crate) service: Option<ServiceServer>,
    pub(crate) stop: Option<watch::Sender<bool>>,
    pub(crate) housekeeping: Option<JoinHandle<()>>,
    pub(crate) http: Option<HttpServer>,
}

impl<M: Membership, S: ConsensusStore> Started<M, S> {
    /// Nothing started yet (or everything handed over).
    pub(crate) fn nothing() -> Self {
        Started { store: None, membership: None, service: None, stop: None, housekeeping: None, http: None }
    }

    /// Stops what was started, the last first.
    pub(crate) async fn unwind(self) {
        if let Some(http) = self.http {
            http.shutdown().await;
        }
        if let Some(stop) = self.stop {
            let _ = stop.send(true);
        }
        if let Some(task) = self.housekeeping {
            let _ = task.await;
        }
        if let Some(service) = self.service {
            service.shutdown().await;
        }
        if let Some(m) = self.membership {
            let _ = m.stop().await;
        }
        if let Some(s) = self.store {
            let _ = s.shutdown().await;
        }
    }
}

/// The error of a step of the start.
pub(crate) fn start_err(stage: &'static str) -> impl FnOnce(cluster_core::Error) -> ClusterError {
    move |source| ClusterError::Start { stage, source }
}

/// The addresses a member binds and advertises, and its TLS built.
///
/// Pre: `config` validated. Post: the hosts parsed; with TLS files and no
/// TLS given in code, the TLS loaded into `config.security`.
pub(crate) fn resolve(mut config: ClusterConfig) -> Result<(ClusterConfig, IpAddr, IpAddr), ClusterError> {
    // Checked by validate().
    let bad_host = |field: &str| ClusterError::Start {
        stage: "config",
        source: cluster_core::Error::BadRequest(format!("bad {field}")),
    };
    let host: IpAddr = config.host.parse().map_err(|_| bad_host("host"))?;
    let advertised: IpAddr = config.advertised_host().parse().map_err(|_| bad_host("advertise_host"))?;
    if let (cluster_rpc::Security::Plain, Some(files)) = (&config.security, &config.tls) {
        let tls = cluster_rpc::Tls::from_files(files.clone()).map_err(|e| ClusterError::Start {
            stage: "tls",
            source: cluster_core::Error::BadRequest(cluster_rpc::chain(&e)),
        })?;
        config.security = cluster_rpc::Security::Tls(tls);
    }
    Ok((config, host, advertised))
}

/// The ports bound before anything starts.
pub(crate) struct Ports {
    /// The service port, bound on the member's network: its address goes
    /// into raft's node data.
    pub(crate) service: cluster_rpc::Listener,
    /// The service address others reach.
    pub(crate) service_addr: SocketAddr,
    /// The grid port, and its listener when it was picked (port 0).
    pub(crate) grid_port: u16,
    pub(crate) grid_listener: Option<std::net::TcpListener>,
    /// The HTTP port, bound, and its address, when it is on.
    pub(crate) http: Option<(TcpListener, SocketAddr)>,
}

/// Binds the service, grid (when picked) and HTTP ports on `host`.
///
/// Pre: nothing started. Post: every port is bound and held, so no other
/// process gets one that this member advertises; 0 picked a free port.
pub(crate) async fn bind_ports(
    host: IpAddr,
    advertised: IpAddr,
    config: &ClusterConfig,
) -> Result<Ports, ClusterError> {
    let service = config
        .network
        .bind(SocketAddr::new(host, config.service_port))
        .await
        .map_err(|e| start_err("service")(listen_error(host, config.service_port, "service", &e)))?;
    let service_port = service.local_addr().map_err(|e| start_err("service")(e.into()))?.port();
    // A port picked for the grid stays bound until the grid takes it:
    // dropped, the next member started here could pick it too.
    let (grid_port, grid_listener) = match config.grid_port {
        0 => {
            let l = std::net::TcpListener::bind((host, 0))
                .map_err(|e| start_err("grid port")(listen_error(host, 0, "grid", &e)))?;
            let port = l.local_addr().map_err(|e| start_err("grid port")(e.into()))?.port();
            (port, Some(l))
        }
        p => (p, None),
    };
    let http = match config.http_port {
        Some(port) => {
            let l = bind_tcp(host, port, "http").await?;
            let port = l.local_addr().map_err(|e| start_err("http")(e.into()))?.port();
            Some((l, SocketAddr::new(advertised, port)))
        }
        None => None,
    };
    Ok(Ports {
        service,
        service_addr: SocketAddr::new(advertised, service_port),
        grid_port,
        grid_listener,
        http,
    })
}

/// Opens this member's consensus store, its raft port secured and bounded
/// as the service port is.
///
/// Pre: the service port bound (`service_addr`). Post: the store is open
/// and its raft port listens; it joined or formed nothing yet; the data
/// directory is private.
pub(crate) async fn open_consensus<S>(
    config: &ClusterConfig,
    member_id: MemberId,
    host: IpAddr,
    advertised: IpAddr,
    service_addr: SocketAddr,
) -> Result<S, ClusterError>
where
    S: ConsensusBackend<Network = cluster_rpc::Settings>,
{
    let network = cluster_rpc::Settings {
        limits: config.limits.rpc.clone(),
        security: config.security.clone(),
        network: config.network.clone(),
    };
    let consensus = ConsensusConfig {
        member_id,
        cluster_id: config.cluster_id.clone(),
        raft_listen_addr: SocketAddr::new(host, config.raft_port),
        advertise_host: advertised.to_string(),
        service_addr: service_addr.to_string(),
        data_dir: config.data_dir.as_ref().map(|d| d.join(RAFT_DIR)),
        timing: config.raft.timing(),
        max_frame_len: config.raft.max_frame_bytes,
        rpc_timeout: ClusterConfig::ms(config.raft.election_timeout_max_ms),
        limits: config.quota.clone(),
    };
    let store = S::open_with(consensus, network).await.map_err(start_err("consensus"))?;
    if let Some(dir) = &config.data_dir {
        // The store may have created files with the process's umask
        // (a library user's may be 0022): keep them private too.
        if let Err(e) = crate::data_dir::tighten(dir) {
            let _ = store.shutdown().await;
            return Err(ClusterError::DataDir {
                path: dir.display().to_string(),
                reason: format!("cannot make it private: {e}"),
            });
        }
    }
    Ok(store)
}

/// Forms a new cluster when this member is the first: no seeds, no earlier
/// state, no pending reset. Otherwise the leader of the cluster it joins adds
/// it to raft later (housekeeping).
///
/// Pre: the store is open. Post: a first member leads its one-voter
/// cluster; any other is as it was. True if it formed one.
pub(crate) async fn find_or_form_raft<S: ConsensusStore>(
    store: &S,
    seeds: &[String],
) -> Result<bool, ClusterError> {
    // A member whose raft state was reset rejoins the cluster that still
    // counts it; it never bootstraps a new one beside it.
    if !seeds.is_empty()
        || store.status().reset_pending.is_some()
        || store.is_initialized().await.map_err(start_err("consensus"))?
    {
        return Ok(false);
    }
    info!("no seeds and no earlier state: forming a new cluster");
    store.bootstrap().await.map_err(start_err("consensus"))?;
    Ok(true)
}

/// Joins gossip, announcing this member's record (addresses, raft role,
/// tags, a pending reset) as its gossip tags.
///
/// Pre: the store is open (its raft port and role are known). Post: gossip
/// runs and its tags carry the real gossip port, also when 0 was asked.
pub(crate) async fn join_gossip<M: Membership, S: ConsensusStore>(
    config: &ClusterConfig,
    store: &S,
    host: IpAddr,
    advertised: IpAddr,
    ports: (SocketAddr, u16),
) -> Result<M, ClusterError> {
    let (service_addr, grid_port) = ports;
    let member_id = store.member_id();
    let mut me = MemberInfo::new(
        member_id,
        advertised.to_string(),
        config.gossip_port,
        store.raft_addr().port(),
        service_addr.port(),
        grid_port,
    );
    let status = store.status();
    me.raft_role = status.role().unwrap_or(RaftRole::Client);
    me.extra_tags = config.tags.clone();
    let mut tags = me.to_tags();
    if let Some(id) = status.reset_pending {
        tags.insert(tag::RAFT_RESET_PENDING.to_owned(), id);
    }
    let membership = M::start(MembershipConfig {
        member_id,
        generation: identity::generation(),
        cluster_id: config.cluster_id.clone(),
        listen_addr: SocketAddr::new(host, config.gossip_port),
        advertise_addr: config
            .advertise_host
            .as_ref()
            .map(|_| SocketAddr::new(advertised, config.gossip_port)),
        seeds: config.seeds.clone(),
        gossip_interval: ClusterConfig::ms(config.gossip.interval_ms),
        failure_detection: config.gossip.failure_detection(),
        tags,
        encryption: config.gossip_encryption(),
    })
    .await
    .map_err(start_err("membership"))?;
    if config.gossip_port == 0 {
        let port =
            BTreeMap::from([(tag::GOSSIP_PORT.to_owned(), membership.gossip_addr().port().to_string())]);
        if let Err(e) = membership.set_tags(port).await {
            let _ = membership.stop().await;
            return Err(start_err("membership")(e));
        }
    }
    Ok(membership)
}

/// Serves the store on the service port, with the member's admin surface
/// (gossip's view, the keyring) and its metrics; what the store does not
/// hold (a client member's user keys) it serves through a replica, reached
/// with `forward`.
///
/// Pre: the store and gossip run. Post: the service answers; `liveness`
/// is what it reports of the members.
pub(crate) fn serve_service<M: Membership, S: ConsensusStore>(
    listener: cluster_rpc::Listener,
    config: &ClusterConfig,
    store: &Arc<S>,
    membership: &M,
    (liveness, metrics): (&LivenessTable, &Metrics),
    forward: cluster_service::RouterOptions,
) -> Result<ServiceServer, ClusterError> {
    let admin =
        Admin { store: store.clone(), liveness: liveness.clone(), keyring: membership.keyring_control() };
    let server = ServerConfig {
        cluster_id: config.cluster_id.clone(),
        limits: cluster_rpc::Limits {
            max_frame_len: config.raft.max_frame_bytes,
            request_timeout: ClusterConfig::ms(config.timeouts.operation_ms),
            ..config.limits.rpc.clone()
        },
        security: config.security.clone(),
        admin: Some(Arc::new(admin)),
        observer: Some(Arc::new(metrics.clone())),
        forward: Some(forward),
    };
    ServiceServer::serve(listener, store.clone(), server).map_err(start_err("service"))
}

/// Starts housekeeping: grid events, own tags, and the leader's duties
/// (raft seats, records, short ids), until `stop`.
///
/// Pre: the store and gossip run. Post: the task runs; the receiver shows
/// this member's short id once the state machine holds one.
pub(crate) fn keep_house<M: Membership, S: ConsensusStore>(
    config: &ClusterConfig,
    membership: &Arc<M>,
    store: &Arc<S>,
    grid: &GridHub,
    stop: watch::Receiver<bool>,
) -> (JoinHandle<()>, watch::Receiver<Option<ShortId>>) {
    let ms = ClusterConfig::ms;
    let settings = Settings {
        num_voters: config.num_voters,
        replicas: config.replicas,
        failure_grace: ms(config.timeouts.failure_grace_ms),
        short_id_reap: ms(config.timeouts.short_id_reap_ms),
        interval: ms(config.timeouts.housekeeping_interval_ms),
        proofs: Arc::new(MemberProofs::new(
            config.security.clone(),
            config.network.clone(),
            config.limits.connect_timeout,
            PROOF_RETRY,
        )),
    };
    let events = membership.subscribe();
    let (own_short_id, short_id) = watch::channel(None);
    let keeper = Housekeeper::new(membership.clone(), store.clone(), settings, grid.clone(), own_short_id);
    (tokio::spawn(keeper.run(events, stop).in_current_span()), short_id)
}

/// Waits up to `waited` until this member holds its short id.
///
/// Pre: housekeeping runs. Post: the short id, or a timeout that says what
/// is missing (no leader, not in raft yet, no id allocated yet).
pub(crate) async fn wait_for_short_id<S: ConsensusStore, M: Membership>(
    store: &S,
    membership: &M,
    mut short_id: watch::Receiver<Option<ShortId>>,
    waited: Duration,
) -> Result<ShortId, ClusterError> {
    let held = match tokio::time::timeout(waited, short_id.wait_for(Option::is_some)).await {
        Ok(Ok(held)) => *held,
        // Housekeeping ended (the member is stopping) or the time is up.
        _ => None,
    };
    if let Some(id) = held {
        return Ok(id);
    }
    let s = store.status();
    let detail = match (s.leader, s.role()) {
        // Gossip knows better why it heard no one (e.g. a wrong gossip key).
        (None, _) => membership.join_problem().unwrap_or_else(|| {
            "no leader known: are the seeds right, and is the cluster id the same?".to_owned()
        }),
        (Some(l), None) => format!("the leader {l} has not added this member to raft yet"),
        (Some(l), Some(_)) => format!("the leader {l} has not allocated a short id yet"),
    };
    Err(ClusterError::StartTimeout { waited, detail })
}

/// An error binding `port` of `host` for `what`, naming both once.
fn listen_error(host: IpAddr, port: u16, what: &str, e: &std::io::Error) -> cluster_core::Error {
    cluster_core::Error::io(
        format_args!("cannot listen on {} for the {what} port", SocketAddr::new(host, port)),
        e,
    )
}

async fn bind_tcp(host: IpAddr, port: u16, what: &'static str) -> Result<TcpListener, ClusterError> {
    TcpListener::bind((host, port)).await.map_err(|e| start_err(what)(listen_error(host, port, what, &e)))
}

#[cfg(test)]
#[path = "choreography_tests.rs"]
mod tests;
