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

use cluster_core::{ConsensusStore, Error, KeyScope, MemberAdmin, Result, ServiceObserver};
use cluster_rpc::{Access, Caller, Handler, HandlerFuture, Limits, Reply, Security, Server};
use futures::StreamExt;
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::protocol::{Request, Response};
use crate::router::{Proxy, RouterOptions};

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
    /// This member's own answers, for `Liveness`, `KeyringList` and
    /// `KeyringChange`; `None` for a bare store (they are refused, saying so).
    pub admin: Option<Arc<dyn MemberAdmin>>,
    /// Told of every write and linearizable read executed for a caller (the
    /// member's operator metrics time them).
    pub observer: Option<Arc<dyn ServiceObserver>>,
    /// How this member reaches the replicas for the reads and watches its
    /// own state does not hold ([`ConsensusStore::remote_reads`]: a client
    /// member's user keys), which it then serves by asking a replica;
    /// `None`: such reads are refused ([`Error::Unreachable`]) and the caller
    /// asks another member.
    pub forward: Option<RouterOptions>,
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

struct ServiceHandler<S: ConsensusStore> {
    store: Arc<S>,
    admin: Option<Arc<dyn MemberAdmin>>,
    observer: Option<Arc<dyn ServiceObserver>>,
    /// This member's own router, for what its store does not hold.
    forward: Option<Proxy<S>>,
}

impl<S: ConsensusStore> ServiceHandler<S> {
    /// This member's router, when `request` is a read (not one already
    /// asked at a revision) or a watch of what its store does not hold.
    fn forwarder(&self, request: &Request) -> Option<Proxy<S>> {
        let scope = match request {
            Request::Watch { prefix, .. } => KeyScope::Prefix(prefix),
            Request::ReadAt { .. } => return None,
            other => other.scope()?,
        };
        self.store.remote_reads(scope)?;
        self.forward.clone()
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
        let request = match crate::admin::answer(self.admin.as_deref(), request) {
            Ok(answer) => return Box::pin(std::future::ready(Reply::One(answer))),
            Err(request) => request,
        };
        if let Some(proxy) = self.forwarder(&request) {
            return forwarded(proxy, request);
        }
        let store = self.store.clone();
        if let Request::Watch { prefix, from_revision } = request {
            return Box::pin(std::future::ready(watch_reply(&*store, &prefix, from_revision)));
        }
        let observer = self.observer.clone();
        Box::pin(
            async move { Reply::One(crate::admin::observed(observer.as_deref(), &*store, request).await) },
        )
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
            .in_scope(|| {
                cluster_rpc::serve(
                    listener,
                    ServiceHandler {
                        forward: config.forward.map(|options| Proxy::local(store.clone(), options)),
                        store,
                        admin: config.admin,
                        observer: config.observer,
                    },
                    rpc,
                )
            })
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

/// Serves `request` through this member's own router: a read or watch of
/// what its store does not hold, answered by a replica.
fn forwarded<S: ConsensusStore>(proxy: Proxy<S>, request: Request) -> HandlerFuture<Response> {
    match request {
        Request::Watch { prefix, from_revision } => {
            let events = proxy.watch(&prefix, from_revision).scan(false, |ended, item| {
                // An error is the last answer.
                let next = (!*ended).then(|| item.map_or_else(Response::Err, Response::Event));
                *ended = next.as_ref().is_some_and(|r| matches!(r, Response::Err(_)));
                std::future::ready(next)
            });
            Box::pin(std::future::ready(Reply::stream(events)))
        }
        read => Box::pin(async move { Reply::One(proxy.request(read).await.unwrap_or_else(Response::Err)) }),
    }
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
