//! [`Security`]: plain TCP or mutual TLS, for servers and clients alike, and
//! the byte stream either gives.

use cluster_core::MemberId;

use crate::net::{ByteStream, Net};
use crate::{Role, Tls};

/// How connections are secured.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Security {
    /// Plain TCP: no authentication; for loopback, tests and `--insecure`.
    #[default]
    Plain,
    /// Mutual TLS: servers need a member certificate and verify every
    /// caller's certificate against the cluster's CA; clients verify that the
    /// server holds a member certificate. Reloaded certificates are used by
    /// new connections.
    Tls(Tls),
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Plain => f.write_str("Plain"),
            Security::Tls(tls) => write!(f, "Tls({})", tls.role()),
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

    /// The server side of a new connection: its stream, the peer's role and
    /// the member its certificate names (`None` over plain TCP).
    /// `stream` is the network's (plain: handed on as it is, no new box).
    pub(crate) async fn accept(
        &self,
        stream: ByteStream,
    ) -> std::io::Result<(ByteStream, Option<Role>, Option<MemberId>)> {
        match self {
            Security::Plain => Ok((stream, None, None)),
            Security::Tls(tls) => {
                // The current configuration: a reloaded certificate serves new connections.
                let acceptor = tls.acceptor().map_err(std::io::Error::other)?;
                let stream = acceptor.accept(stream).await?;
                let role = crate::tls::peer_role(stream.get_ref().1);
                if role.is_none() {
                    // The CA verified the certificate, but it states no role we know.
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "the peer's certificate carries no role",
                    ));
                }
                let member = crate::tls::peer_identity(stream.get_ref().1).map(|i| i.member_id);
                Ok((Box::new(stream), role, member))
            }
        }
    }

    /// The client side of a new connection.
    pub(crate) async fn connect(&self, stream: ByteStream) -> std::io::Result<ByteStream> {
        match self {
            Security::Plain => Ok(stream),
            Security::Tls(tls) => {
                let stream = tls.connector().connect(Tls::server_name(), stream).await?;
                Ok(Box::new(stream))
            }
        }
    }
}

impl Security {
    /// Proves that whoever listens at `addr` is `member`: a TLS handshake in
    /// which the server's certificate must chain to this cluster's CA, carry
    /// the member role and name `member` as its member id. Nothing is sent
    /// after it. Over plain TCP nobody can prove anything, and nothing is
    /// asked: `Ok` at once (a cluster without TLS trusts its network).
    ///
    /// The leader asks this of a gossip member's raft endpoint before it
    /// makes the member a raft member: gossip tags are only what a member
    /// claims, a certificate is what the cluster's CA signed. Certificates
    /// made before member identities name no member: while this member's
    /// own certificate names none either, such a certificate proves the
    /// role only; once it names one, the peer's must too.
    ///
    /// Connects over real TCP; [`prove_member_over`](Self::prove_member_over)
    /// takes the network.
    pub async fn prove_member(
        &self,
        addr: &str,
        member: MemberId,
        timeout: std::time::Duration,
    ) -> Result<(), crate::RpcError> {
        self.prove_member_over(&Net::tcp(), addr, member, timeout).await
    }

    /// [`prove_member`](Self::prove_member), connecting through `net`.
    pub async fn prove_member_over(
        &self,
        net: &Net,
        addr: &str,
        member: MemberId,
        timeout: std::time::Duration,
    ) -> Result<(), crate::RpcError> {
        use crate::RpcError;
        let Security::Tls(tls) = self else { return Ok(()) };
        let timed_out =
            |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"));
        let refused = |why: String| RpcError::Handshake {
            addr: addr.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        };
        let by = tokio::time::Instant::now() + timeout;
        let stream = match tokio::time::timeout_at(by, net.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(RpcError::Connect { addr: addr.to_owned(), source }),
            Err(_) => return Err(RpcError::Connect { addr: addr.to_owned(), source: timed_out("connect") }),
        };
        let stream =
            match tokio::time::timeout_at(by, tls.connector().connect(Tls::server_name(), stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(RpcError::Handshake { addr: addr.to_owned(), source }),
                Err(_) => {
                    return Err(RpcError::Handshake {
                        addr: addr.to_owned(),
                        source: timed_out("TLS handshake"),
                    });
                }
            };
        match (crate::tls::peer_identity(stream.get_ref().1), tls.identity()) {
            (Some(named), _) if named.member_id == member => Ok(()),
            (Some(named), _) => Err(refused(format!(
                "its member certificate names member {}, not member {member}",
                named.member_id
            ))),
            (None, Some(_)) => Err(refused(format!(
                "its member certificate names no member id (made before identities): it cannot prove to be member {member}"
            ))),
            (None, None) => Ok(()),
        }
    }
}
