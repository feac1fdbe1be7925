//! The HTTP port over TLS, with the certificates of the raft and service
//! ports. A caller presents a certificate of the cluster's CA (member or
//! client), as on the service port, except for the health routes: a
//! Kubernetes probe has no certificate, so the handshake also accepts a
//! caller without one and [`Caller::Tls(None)`](super::server::Caller)
//! limits it to `/health/live` and `/health/ready`.
//!
//! Each handshake runs on its connection's own task with a deadline
//! (`limits.http_handshake_timeout`), inside that connection's slot: there is
//! no shared queue of handshakes that idle callers could fill.

use std::net::SocketAddr;
use std::time::Duration;

use cluster_rpc::{Role, Tls};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The handshake on `stream` with the certificates `tls` holds now (a
/// reload is used by the next connection), within `limit`: the stream and
/// the role of the caller's certificate (`None`: it presented none), or
/// `None` when it failed, was refused or timed out (logged at debug level:
/// outsiders must not fill the log).
pub(super) async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &Tls,
    limit: Duration,
) -> Option<(TlsStream<TcpStream>, Option<Role>)> {
    let acceptor = match tls.acceptor_client_cert_optional() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "http over TLS needs a member certificate");
            return None;
        }
    };
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let role = cluster_rpc::peer_role(stream.get_ref().1);
            Some((stream, role))
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "http TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "http TLS handshake timed out");
            None
        }
    }
}
