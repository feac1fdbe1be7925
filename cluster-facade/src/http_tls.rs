//! The HTTP API over mutual TLS, with the certificates of the raft and
//! service ports: callers present a certificate of the cluster's CA (member
//! or client), as they do on the service port.
//!
//! A task accepts TCP connections and runs each handshake on a task of its
//! own, bounded by a timeout and by a number of handshakes at once, so a
//! caller that never finishes its handshake holds up nobody; finished
//! connections queue for axum.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_rpc::Tls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;
/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// An [`axum::serve::Listener`] that yields connections once their TLS
/// handshake is done. Dropping it stops accepting.
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Accepts on `listener`, with the certificates `tls` holds at each
    /// handshake (a reload is used by the next connection).
    pub(crate) fn new(listener: TcpListener, tls: Tls) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let task = tokio::spawn(accept_loop(listener, tls, tx));
        Ok(TlsListener { local_addr, ready, task })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Tls,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of descriptors: pause instead of spinning.
                tracing::debug!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = match tls.acceptor() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "http over TLS needs a member certificate");
                continue;
            }
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http TLS handshake refused"),
                Err(_) => tracing::debug!(%peer, "http TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (shut down): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}
