//! The service server: every member runs one on its service port and serves
//! its whole consensus store with it, as a [`Handler`] of the RPC layer
//! (`cluster-rpc`), which owns the connections, their limits and TLS.
//!
//! A connection runs at most [`Limits::max_in_flight_per_connection`]
//! requests at once; a client that stops reading its answers stops the server
//! from reading its requests (TCP pushes back), so it cannot make the server
//! grow without bound.

use std::net::SocketAddr;
use std::sync::Arc;

use cluster_core::{
    ConsensusStore, ConsensusStoreExt, Error, KeyringControl, MemberId, MemberInfo, MemberStatus, Result,
    keys,
};
use cluster_rpc::{Access, Caller, Handler, HandlerFuture, Limits, Reply, Security, Server};
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::protocol::{ForceLeft, Request, Response};

/// How the server runs.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Frames from other clusters are answered with [`Error::ClusterMismatch`].
    pub cluster_id: String,
    /// Connections, requests in flight, frame size, timeouts (the request
    /// timeout bounds each store operation).
    pub limits: Limits,
    /// Plain TCP or mutual TLS (members and clients are both accepted).
    pub security: Security,
    /// This member's gossip keyring, for `KeyringList` and `KeyringChange`;
    /// `None` when gossip is not encrypted (they are refused, saying so).
    pub keyring: Option<Arc<dyn KeyringControl>>,
}

impl ServerConfig {
    /// The defaults, for `cluster_id`.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        ServerConfig { cluster_id: cluster_id.into(), ..ServerConfig::default() }
    }
}

/// A running service server. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct ServiceServer {
    server: Server,
}

struct ServiceHandler<S> {
    store: Arc<S>,
    keyring: Option<Arc<dyn KeyringControl>>,
}

impl<S> ServiceHandler<S> {
    fn keyring(&self) -> Result<&dyn KeyringControl> {
        self.keyring.as_deref().ok_or_else(|| {
            Error::BadRequest(
                "this member's gossip is not encrypted: it has no keyring (start it with --gossip-key)"
                    .to_owned(),
            )
        })
    }
}

impl<S: ConsensusStore> Handler for ServiceHandler<S> {
    type Request = Request;
    type Answer = Response;

    fn handle(&self, caller: Caller, request: Request) -> HandlerFuture<Response> {
        // The server decides who may ask what, whatever the client library does.
        if let Err(refused) = crate::authz::authorize(caller.role, &request) {
            tracing::debug!(peer = %caller.addr, kind = request.kind(), %refused, "request refused");
            return Box::pin(std::future::ready(Reply::One(Response::Err(refused))));
        }
        match request {
            Request::KeyringList => {
                let answer = self.keyring().map(|k| Response::Keyring(k.list()));
                return Box::pin(std::future::ready(Reply::One(answer.unwrap_or_else(Response::Err))));
            }
            Request::KeyringChange(change) => {
                let answer = self.keyring().and_then(|k| k.apply(change)).map(Response::Keyring);
                return Box::pin(std::future::ready(Reply::One(answer.unwrap_or_else(Response::Err))));
            }
            _ => {}
        }
        let store = self.store.clone();
        if let Request::Watch { prefix, from_revision } = request {
            return Box::pin(std::future::ready(watch_reply(&*store, &prefix, from_revision)));
        }
        Box::pin(async move { Reply::One(execute(&*store, request).await) })
    }
}

impl ServiceServer {
    /// Binds `addr` (port 0 picks a free port) and serves `store` on it.
    pub async fn bind<S: ConsensusStore>(
        addr: impl ToSocketAddrs,
        store: Arc<S>,
        config: ServerConfig,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::io("service bind", &e))?;
        Self::serve(listener, store, config)
    }

    /// Serves `store` on a bound listener: a `tokio::net::TcpListener`, or a
    /// [`cluster_rpc::Listener`] of any network.
    pub fn serve<S: ConsensusStore>(
        listener: impl Into<cluster_rpc::Listener>,
        store: Arc<S>,
        config: ServerConfig,
    ) -> Result<Self> {
        let listener = listener.into();
        let local_addr = listener.local_addr()?;
        let span = tracing::info_span!("service", member = %store.member_id(), addr = %local_addr);
        let rpc = cluster_rpc::ServerConfig {
            cluster_id: config.cluster_id,
            limits: config.limits,
            security: config.security,
            access: Access::Anyone,
        };
        // The server's tasks run in the member's span.
        let server = span
            .in_scope(|| cluster_rpc::serve(listener, ServiceHandler { store, keyring: config.keyring }, rpc))
            .map_err(|e| Error::BadRequest(cluster_rpc::chain(&e)))?;
        tracing::info!(%local_addr, "service listening");
        Ok(ServiceServer { server })
    }

    /// The address bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops accepting, ends every connection and waits until all tasks ended.
    /// Callers with requests in flight see the connection close and retry
    /// elsewhere; writes carry request ids, so a retry is applied at most once.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Runs one request against the local store. Writes and consistent reads are
/// executed by the store only when this member leads; otherwise the store
/// answers [`Error::NotLeader`] with the leader it knows.
pub async fn execute<S: ConsensusStore>(store: &S, request: Request) -> Response {
    let result = match request {
        Request::Get { key } => store.get(&key).map(Response::Value),
        Request::ConsistentGet { key } => store.consistent_get(&key).await.map(Response::Value),
        Request::GetPrefix { prefix } => store.get_prefix(&prefix).map(Response::Entries),
        Request::Write(write) => store.write(write).await.map(Response::Written),
        Request::Members => members(store).map(Response::Members),
        Request::Status => Ok(Response::Status(Box::new(store.status()))),
        Request::MemberStatus => member_status(store).await,
        Request::GetWithMeta { key, consistent: false } => {
            store.get_with_meta(&key).map(Response::ValueWithMeta)
        }
        Request::GetWithMeta { key, consistent: true } => {
            store.consistent_get_with_meta(&key).await.map(Response::ValueWithMeta)
        }
        Request::Export => export(store).await,
        Request::ForceLeave { member } => force_leave(store, member).await.map(Response::ForceLeft),
        Request::Liveness => Ok(Response::Liveness(store.liveness())),
        Request::GetPrefixWithRevision { prefix } => store
            .get_prefix_with_revision(&prefix)
            .map(|(revision, entries)| Response::EntriesAt { revision, entries }),
        Request::Watch { .. } => {
            Err(Error::BadRequest("a watch is answered with a stream: ask for one".to_owned()))
        }
        Request::KeyringList | Request::KeyringChange(_) => Err(Error::BadRequest(
            "the gossip keyring is a member's own: ask that member's service port".to_owned(),
        )),
    };
    result.unwrap_or_else(Response::Err)
}

/// The answer to a watch: its events as the store applies them, ended by
/// [`Error::Lagged`] when the caller reads too slowly.
///
/// Memory stays bounded whoever the caller is: the RPC layer pulls the next
/// event only once the previous one is written to the connection, so a
/// caller that does not read leaves its events in the store's shared, bounded
/// watch channel, which drops it ([`Error::Lagged`]) once that is full.
pub(crate) fn watch_reply<S: ConsensusStore>(
    store: &S,
    prefix: &str,
    from_revision: Option<u64>,
) -> Reply<Response> {
    let watch = match store.watch_from(prefix, from_revision) {
        Ok(watch) => watch,
        Err(e) => return Reply::One(Response::Err(e)),
    };
    let events = futures::stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        match watch.recv().await {
            Some(Ok(event)) => Some((Response::Event(event), Some(watch))),
            // The last answer: the caller resumes from what it saw.
            Some(Err(e)) => Some((Response::Err(e), None)),
            None => None,
        }
    });
    Reply::stream(events)
}

/// The member's status with its progress and short id.
async fn member_status<S: ConsensusStore>(store: &S) -> Result<Response> {
    let status = store.status();
    let short_id = store.short_ids()?.get(&status.member_id).copied();
    let progress = store.progress().await;
    Ok(Response::MemberStatus(Box::new(MemberStatus::new(status, &progress, short_id))))
}

/// The whole store, read after the leader confirmed its leadership with a
/// quorum: nothing acknowledged before the request is missing.
async fn export<S: ConsensusStore>(store: &S) -> Result<Response> {
    store.consistent_get(keys::LEADER_KEY).await?;
    let (revision, entries) = store.get_prefix_with_revision("")?;
    Ok(Response::Export { revision, entries })
}

/// Takes `member` out of raft, frees its short id and drops its records, on
/// the leader. A member still alive in gossip is added back by the leader's
/// housekeeping as a new joiner would be: stop it first.
async fn force_leave<S: ConsensusStore>(store: &S, member: MemberId) -> Result<ForceLeft> {
    let status = store.status();
    if !status.is_leader() {
        let hint = status.leader.map(|member_id| cluster_core::LeaderHint {
            member_id,
            service_addr: status.leader_service_addr().map(str::to_owned),
        });
        return Err(Error::NotLeader(hint));
    }
    if member == status.member_id {
        return Err(Error::BadRequest(format!(
            "member {member} is the leader answering this request: stop it, and force the leave through another member"
        )));
    }
    let was_in_raft = status.all_members().contains(&member);
    store.remove(member).await?;
    let held_short_id = store.release_short_id(member).await?;
    let had_record = store.delete(&keys::member_key(member)).await?;
    store.delete(&keys::voter_key(member)).await?;
    store.delete(&keys::nonvoter_key(member)).await?;
    tracing::info!(%member, was_in_raft, held_short_id, "forced leave");
    Ok(ForceLeft { was_in_raft, held_short_id, had_record })
}

/// Every [`MemberInfo`] in the local store, in member-id order, by the one
/// policy of [`keys::MemberRecords`]: entries that are not records are
/// skipped (and logged), so one bad record never hides the others.
pub fn members<S: ConsensusStore>(store: &S) -> Result<Vec<MemberInfo>> {
    let records = keys::MemberRecords::decode(store.get_prefix(keys::MEMBERS_PREFIX)?);
    for (key, error) in &records.rejected {
        tracing::warn!(%key, %error, "skipping an entry that is not a member record");
    }
    Ok(records.members.into_values().collect())
}
