//! Opening the gossip socket before chitchat starts, so that the real bound
//! address is known (port 0) and can be advertised in the member's chitchat id.
//! UDP goes through this crate's own [`GossipSocket`] (sealing, checks,
//! rate-limited logs); the channel transport is chitchat's, for tests.
//!
//! chitchat opens its socket itself inside `spawn_chitchat`, after the chitchat
//! id (with its advertised address) is fixed. So we open the socket first on the
//! chosen transport and hand chitchat a transport whose `open` returns that
//! socket: no bind-then-release race.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chitchat::transport::{Socket, Transport};
use tracing::Span;

use crate::config::GossipTransport;
use crate::error::GossipError;
use crate::socket::{GossipSocket, Shared};

/// Opens the socket of `choice` on `listen_addr`; returns it with its bound address.
pub(crate) async fn open(
    choice: &GossipTransport,
    listen_addr: SocketAddr,
    shared: Arc<Shared>,
    span: Span,
) -> Result<(OpenedSocket, SocketAddr), GossipError> {
    let bind_err = |e: anyhow::Error| GossipError::Bind {
        addr: listen_addr,
        kind: e
            .chain()
            .find_map(|c| c.downcast_ref::<std::io::Error>())
            .map_or(std::io::ErrorKind::Other, |io| io.kind()),
        reason: format!("{e:#}"),
    };
    let socket: Box<dyn Socket> = match choice {
        GossipTransport::Udp => {
            Box::new(GossipSocket::open(listen_addr, shared, span).await.map_err(bind_err)?)
        }
        GossipTransport::Channel(t) => t.open(listen_addr).await.map_err(bind_err)?,
        GossipTransport::Sim(network) => network.open_socket(listen_addr).map_err(bind_err)?,
    };
    let bound = socket.local_addr().map_err(bind_err)?;
    Ok((OpenedSocket(Mutex::new(Some(socket))), bound))
}

/// A transport that hands out one already opened socket, once.
pub(crate) struct OpenedSocket(Mutex<Option<Box<dyn Socket>>>);

type OpenFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Box<dyn Socket>>> + Send + 'a>>;

// `Transport` is declared with `#[async_trait]`; this is its expanded form,
// written by hand to avoid a dependency for one method.
impl Transport for OpenedSocket {
    fn open<'life0, 'async_trait>(&'life0 self, listen_addr: SocketAddr) -> OpenFuture<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let socket = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            socket.ok_or_else(|| anyhow::anyhow!("the gossip socket for {listen_addr} was already taken"))
        })
    }
}
