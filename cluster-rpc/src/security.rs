//! [`Security`]: plain TCP or mutual TLS, for servers and clients alike, and
//! the byte stream either gives.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::Role;

/// A connection's byte stream, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How connections are secured.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Security {
    /// Plain TCP: no authentication; for loopback, tests and `--insecure`.
    #[default]
    Plain,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Plain => f.write_str("Plain"),
        }
    }
}

impl PartialEq for Security {
    /// Compares the kind (plain or TLS), not the certificates.
    fn eq(&self, other: &Self) -> bool {
        self.is_tls() == other.is_tls()
    }
}

impl Security {
    /// True when connections are authenticated (TLS).
    pub fn is_tls(&self) -> bool {
        !matches!(self, Security::Plain)
    }

    /// The server side of a new connection: its stream and the peer's role
    /// (`None` over plain TCP).
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        _peer: SocketAddr,
    ) -> std::io::Result<(Box<dyn Io>, Option<Role>)> {
        match self {
            Security::Plain => Ok((Box::new(tcp), None)),
        }
    }

    /// The client side of a new connection.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> std::io::Result<Box<dyn Io>> {
        match self {
            Security::Plain => Ok(Box::new(tcp)),
        }
    }
}
