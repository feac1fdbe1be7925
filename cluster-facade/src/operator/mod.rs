//! The operators' surface of a member: the HTTP port ([`HttpServer`], its
//! routes in `http`, TLS in `http_tls`, its bounds in [`HttpLimits`]),
//! readiness ([`Readiness`]) and the Prometheus metrics ([`Metrics`]).
//!
//! The member (`cluster.rs`) starts the server with [`serve`]; nothing here
//! sequences the member itself.

mod error;
mod health;
mod http;
mod http_tls;
mod limits;
mod metrics;
mod process;
mod server;
mod watch;

use std::sync::Weak;

use cluster_core::{ConsensusStore, Membership};
use tokio::net::TcpListener;

pub use health::{READY_MAX_APPLY_LAG, Readiness};
pub use limits::HttpLimits;
pub use metrics::{ConsensusGauges, Metrics};
pub(crate) use server::HttpServer;

use crate::cluster::Inner;

/// Serves the HTTP API of the member behind `inner` on `listener`, over TLS
/// when `security` says so, within `limits`.
pub(crate) fn serve<M: Membership, S: ConsensusStore>(
    listener: TcpListener,
    inner: Weak<Inner<M, S>>,
    security: &cluster_rpc::Security,
    limits: &HttpLimits,
) -> std::io::Result<HttpServer> {
    let router = http::router(inner, limits.http_max_body_bytes);
    let tls = match security {
        cluster_rpc::Security::Tls(tls) => Some(tls.clone()),
        _ => None,
    };
    HttpServer::serve(listener, router, tls, limits.clone())
}
