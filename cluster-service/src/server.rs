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

use cluster_core::{ConsensusStore, Error, KeyringControl, Result};
use cluster_rpc::{Access, Caller, Handler, HandlerFuture, Limits, Reply, Security, Server};
use tokio::net::{TcpListener, ToSocketAddrs};

use crate::dispatch::execute;
use crate::protocol::{Request, Response};

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
        Box::pin(async move { Reply::One(execute(&*store, request).await.unwrap_or_else(Response::Err)) })
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
