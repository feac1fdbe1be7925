//! The network seam under the RPC layer: where [`Client`](crate::Client)
//! connects and [`serve`](crate::serve) accepts, so that raft and the service
//! can run on something else than real TCP (an in-memory network that
//! delays, drops and partitions, a simulation).
//!
//! It is as thin as chitchat's `Transport`: a [`Network`] connects to an
//! address and binds a [`Listener`]; a listener accepts a [`ByteStream`] and
//! the peer's address. Security ([`Security`](crate::Security): plain or
//! TLS) stays above it and wraps whatever stream it gives.
//!
//! [`Net`] is the handle the RPC layer holds: cheap to clone, real TCP by
//! default ([`Tcp`]). The TCP path is direct (no boxed future, no dynamic
//! call to connect or accept); its streams are boxed once per connection,
//! as they always were.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// What a connection's byte stream offers: any `AsyncRead + AsyncWrite +
/// Send + Unpin` type is one.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection's byte stream, as a network gives it.
pub type ByteStream = Box<dyn Io>;

/// A network: connects to addresses and binds listeners. Implement it for a
/// network other than TCP and hand it to the RPC layer with [`Net::new`].
///
/// To behave as the RPC layer expects: a stream delivers the bytes written
/// at one end to the other in order, without loss or duplication, or fails;
/// a connect that cannot complete fails or waits (callers bound it with
/// their deadline); an address is a `host:port` string (for TCP anything
/// `TcpStream::connect` takes).
pub trait Network: Send + Sync + fmt::Debug + 'static {
    /// Opens a connection to `addr`.
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<ByteStream>>;

    /// Binds a listener on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Listener>>;
}

/// The accepting side of a listener of a [`Network`] other than TCP; a
/// [`Listener`] wraps it ([`Listener::new`]).
pub trait Accept: Send + 'static {
    /// A new connection and its peer's address, when one arrived. Wakes
    /// `cx` when one arrives. Called again after a `Ready`, like
    /// `TcpListener::poll_accept`.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(ByteStream, SocketAddr)>>;

    /// The address bound (the real port when 0 was asked).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound listener of some network: what [`serve`](crate::serve) accepts
/// from. A `tokio::net::TcpListener` converts into one (`From`).
pub struct Listener(ListenerKind);

enum ListenerKind {
    Tcp(TcpListener),
    Other(Box<dyn Accept>),
}

impl Listener {
    /// A listener of another network.
    pub fn new(accept: impl Accept) -> Self {
        Listener(ListenerKind::Other(Box::new(accept)))
    }

    /// Waits for the next connection: its stream and its peer's address.
    /// Cancel-safe: dropping the future loses no connection.
    pub async fn accept(&mut self) -> io::Result<(ByteStream, SocketAddr)> {
        match &mut self.0 {
            ListenerKind::Tcp(listener) => {
                let (tcp, peer) = listener.accept().await?;
                Ok((tcp_stream(tcp), peer))
            }
            ListenerKind::Other(accept) => poll_fn(|cx| accept.poll_accept(cx)).await,
        }
    }

    /// The address bound (the real port when 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.0 {
            ListenerKind::Tcp(listener) => listener.local_addr(),
            ListenerKind::Other(accept) => accept.local_addr(),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener(ListenerKind::Tcp(listener))
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            ListenerKind::Tcp(_) => "Tcp",
            ListenerKind::Other(_) => "Other",
        };
        f.debug_struct("Listener").field("kind", &kind).field("local_addr", &self.local_addr().ok()).finish()
    }
}

/// Real TCP: the default network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tcp;

impl Tcp {
    async fn connect(addr: &str) -> io::Result<ByteStream> {
        Ok(tcp_stream(TcpStream::connect(addr).await?))
    }

    async fn bind(addr: SocketAddr) -> io::Result<Listener> {
        Ok(TcpListener::bind(addr).await?.into())
    }
}

impl Network for Tcp {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<ByteStream>> {
        Box::pin(Tcp::connect(addr))
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Listener>> {
        Box::pin(Tcp::bind(addr))
    }
}

/// A TCP connection as the RPC layer uses it.
fn tcp_stream(tcp: TcpStream) -> ByteStream {
    // Small request/answer frames: do not wait to fill packets.
    let _ = tcp.set_nodelay(true);
    Box::new(tcp)
}

/// The network the RPC layer connects and listens through: a cheap handle
/// to a [`Network`], real TCP by default.
#[derive(Clone, Default)]
pub struct Net(NetKind);

#[derive(Clone, Default)]
enum NetKind {
    #[default]
    Tcp,
    Other(Arc<dyn Network>),
}

impl Net {
    /// Real TCP (the default).
    pub fn tcp() -> Self {
        Net(NetKind::Tcp)
    }

    /// Another network.
    pub fn new(network: impl Network) -> Self {
        Net(NetKind::Other(Arc::new(network)))
    }

    /// True for real TCP.
    pub fn is_tcp(&self) -> bool {
        matches!(self.0, NetKind::Tcp)
    }

    /// Opens a connection to `addr`.
    pub async fn connect(&self, addr: &str) -> io::Result<ByteStream> {
        match &self.0 {
            NetKind::Tcp => Tcp::connect(addr).await,
            NetKind::Other(network) => network.connect(addr).await,
        }
    }

    /// Binds a listener on `addr` (port 0 picks a free port).
    pub async fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        match &self.0 {
            NetKind::Tcp => Tcp::bind(addr).await,
            NetKind::Other(network) => network.bind(addr).await,
        }
    }
}

impl PartialEq for Net {
    /// Both real TCP, or the same network (the same handle's clones).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (NetKind::Tcp, NetKind::Tcp) => true,
            (NetKind::Other(a), NetKind::Other(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            NetKind::Tcp => f.write_str("Tcp"),
            NetKind::Other(network) => network.fmt(f),
        }
    }
}
