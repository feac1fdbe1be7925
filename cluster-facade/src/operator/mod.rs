//! The operators' surface of a member: the HTTP port ([`HttpServer`], its
//! routes in `http`, TLS in `http_tls`, its bounds in [`HttpLimits`]),
//! readiness ([`Readiness`]) and the Prometheus metrics ([`Metrics`]).
//!
//! The member (`cluster.rs`) starts the server with [`serve`] and is seen
//! through `Operated` (implemented in `operated.rs`): nothing here names
//! the member's internals or sequences it.

mod error;
mod health;
mod http;
mod http_tls;
mod limits;
mod member;
mod metrics;
mod process;
mod server;
mod watch;

use tokio::net::TcpListener;

pub use health::{READY_MAX_APPLY_LAG, Readiness};
pub use limits::HttpLimits;
pub(crate) use member::Operated;
pub use metrics::{ConsensusGauges, Metrics};
pub(crate) use server::HttpServer;

/// Serves the HTTP API of the member `member` returns (none once it is
/// gone) on `listener`, over TLS when `security` says so, within `limits`.
pub(crate) fn serve<T: Operated>(
    listener: TcpListener,
    member: impl Fn() -> Option<T> + Send + Sync + 'static,
    security: &cluster_rpc::Security,
    limits: &HttpLimits,
) -> std::io::Result<HttpServer> {
    let metrics = member().map(|m| m.metrics().clone());
    let router = http::router(member, limits.http_max_body_bytes);
    let tls = match security {
        cluster_rpc::Security::Tls(tls) => Some(tls.clone()),
        _ => None,
    };
    HttpServer::serve(listener, router, tls, limits.clone(), metrics)
}
