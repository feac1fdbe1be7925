//! Opening the gossip socket before chitchat starts, so that the real bound
//! address is known (port 0) and can be advertised in the member's chitchat id.
//! UDP goes through this crate's own [`GossipSocket`] (sealing, checks,
//! rate-limited logs); the channel transport is chitchat's, for tests.
//!
//! chitchat opens its socket itself inside `spawn_chitchat`, after the chitchat
//! id (with its advertised address) is fixed. So we open the socket first on the
//! chosen transport and hand chitchat a transport whose `open` returns that
//! socket: no bind-then-release race.

use std::net::SocketAddr;
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

#[async_trait::async_trait]
impl Transport for OpenedSocket {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        socket.ok_or_else(|| anyhow::anyhow!("the gossip socket for {listen_addr} was already taken"))
    }
}
