//! [`RpcError`]: what can go wrong on a call, grouped by what the caller can do.

use std::time::Duration;

/// Why a call or a stream failed. Variants keep their source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The TCP connection could not be made: the member is down or the
    /// address is wrong. Nothing was sent.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed: a plain-TCP peer, a certificate of another
    /// CA, an expired one, or a role the server does not accept. Nothing was
    /// sent. A refusal (another CA, a refused or expired certificate, a peer
    /// without TLS) is not worth
    /// retrying: its [`kind`](RpcError::kind) is `Forbidden`; a handshake
    /// that timed out or was cut is `Unavailable`.
    #[error("TLS handshake with {addr} failed (check the CA, the certificate and its role)")]
    Handshake {
        /// The address dialled.
        addr: String,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The connection ended before the answer came; the request may or may
    /// not have been served.
    #[error("connection to {addr} closed: {reason}")]
    Closed {
        /// The peer.
        addr: String,
        /// What ended it.
        reason: String,
    },
    /// The peer refused the connection with a typed error (it does not speak
    /// this protocol version, a bad frame, too many connections…).
    #[error("{addr} refused the connection")]
    Refused {
        /// The peer.
        addr: String,
        /// The peer's reason.
        #[source]
        error: cluster_core::Error,
    },
    /// No answer within the deadline; the request may or may not have been served.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The request could not be encoded (too large for a frame, …). Nothing was sent.
    #[error("request cannot be sent")]
    Encode(#[source] cluster_core::Error),
    /// The peer's answer could not be read.
    #[error("bad answer from {addr}")]
    BadAnswer {
        /// The peer.
        addr: String,
        /// What was wrong with it.
        #[source]
        error: cluster_core::Error,
    },
    /// A stream's reader fell behind by more answers than the stream buffers;
    /// the stream was cancelled. Start it again from where it stopped.
    #[error("stream from {addr} fell behind and was cancelled")]
    Lagged {
        /// The peer.
        addr: String,
    },
    /// A configuration that cannot work; every problem with its field's name.
    #[error("invalid RPC configuration: {0}")]
    Config(String),
}

impl RpcError {
    /// True when the request certainly did not reach the handler, so any
    /// request (a non-idempotent one too) may be sent again elsewhere.
    pub fn not_sent(&self) -> bool {
        matches!(self, RpcError::Connect { .. } | RpcError::Handshake { .. } | RpcError::Encode(_))
    }

    /// What the caller can do about it, the same class as
    /// [`into_core`](Self::into_core)'s error has: a refusal, a bad answer or
    /// an unencodable request keep their error's class, a bad configuration
    /// is `Invalid`, everything else (connect, handshake, closed, timeout,
    /// lagged) is `Unavailable`.
    pub fn kind(&self) -> cluster_core::ErrorKind {
        use cluster_core::ErrorKind;
        match self {
            RpcError::Refused { error, .. } | RpcError::BadAnswer { error, .. } | RpcError::Encode(error) => {
                error.kind()
            }
            RpcError::Config(_) => ErrorKind::Invalid,
            RpcError::Handshake { source, .. } if tls_refusal(source).is_some() => ErrorKind::Forbidden,
            RpcError::Connect { .. }
            | RpcError::Handshake { .. }
            | RpcError::Closed { .. }
            | RpcError::Timeout { .. }
            | RpcError::Lagged { .. } => ErrorKind::Unavailable,
        }
    }

    /// The project-wide error for this failure: unreachable, timeout, or the
    /// refusal's own error.
    pub fn into_core(self) -> cluster_core::Error {
        use cluster_core::Error;
        match self {
            RpcError::Timeout { .. } => Error::Timeout(self.to_string()),
            RpcError::Encode(e) => e,
            // The peer's own words: another cluster, another protocol, forbidden…
            RpcError::Refused { error, .. } => error,
            // An answer that does not decode: the peer speaks something else.
            RpcError::BadAnswer { error, .. } => error,
            RpcError::Config(m) => Error::BadRequest(m),
            // The same credentials fail the same way at every member and on
            // every retry: say what is wrong at once.
            RpcError::Handshake { ref addr, ref source } => match tls_refusal(source) {
                Some(why) => Error::Forbidden(format!("TLS with {addr}: {why}")),
                None => Error::Unreachable(chain(&self)),
            },
            other => Error::Unreachable(chain(&other)),
        }
    }
}

/// What is wrong when a TLS handshake (or the first read after it) failed
/// because one side refused the other, in words a user can act on; `None`
/// when it is not a refusal (a timeout, a reset, a close), which may pass on
/// a retry. A refusal will not: the same credentials meet the same answer.
///
/// TLS 1.3 completes a client's handshake before the server has checked the
/// client's certificate, so a server's refusal of it arrives as an alert on
/// the client's first read: the RPC client checks its reads with this too.
pub(crate) fn tls_refusal(error: &std::io::Error) -> Option<String> {
    use rustls::{CertificateError, Error as Tls};
    let tls = error.get_ref()?.downcast_ref::<Tls>()?;
    Some(match tls {
        Tls::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the member's certificate has expired".to_owned()
        }
        Tls::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the peer's certificate is not a member certificate (a client certificate serving?)".to_owned(),
        Tls::InvalidCertificate(_) => {
            "the member's certificate is not signed by your CA (check --tls-ca / CARBON_TLS_CA)".to_owned()
        }
        Tls::AlertReceived(alert) => format!(
            "the member refused your certificate (TLS alert {alert:?}): use a certificate signed by the \
             cluster's CA (--tls-cert / CARBON_TLS_CERT), not expired or revoked"
        ),
        Tls::InvalidMessage(_)
        | Tls::InappropriateMessage { .. }
        | Tls::InappropriateHandshakeMessage { .. }
        | Tls::PeerSentOversizedRecord => "the member does not speak TLS (it runs without --tls-*): \
             connect without the TLS options"
            .to_owned(),
        other => format!("the TLS handshake was refused: {other}"),
    })
}

/// The error and its sources, one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_the_kind_of_the_project_wide_error() {
        let addr = || "127.0.0.1:1".to_owned();
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = || {
            vec![
                RpcError::Connect { addr: addr(), source: io() },
                RpcError::Handshake { addr: addr(), source: io() },
                RpcError::Closed { addr: addr(), reason: "reset".into() },
                RpcError::Refused { addr: addr(), error: cluster_core::Error::Forbidden("client".into()) },
                RpcError::Timeout { addr: addr(), timeout: Duration::from_secs(1) },
                RpcError::Encode(cluster_core::Error::FrameTooLarge { len: 2, max: 1 }),
                RpcError::BadAnswer { addr: addr(), error: cluster_core::Error::BadMagic },
                RpcError::Lagged { addr: addr() },
                RpcError::Config("limits.max_connections: must be greater than 0".into()),
            ]
        };
        for (e, same) in cases().into_iter().zip(cases()) {
            assert_eq!(e.kind(), same.into_core().kind(), "{e}");
        }
        let refused = RpcError::Refused { addr: addr(), error: cluster_core::Error::Forbidden("x".into()) };
        assert_eq!(refused.kind(), cluster_core::ErrorKind::Forbidden);
    }

    #[test]
    fn a_tls_refusal_is_not_worth_retrying_and_says_what_is_wrong() {
        use rustls::{AlertDescription, CertificateError};
        let tls = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let handshake = |source| RpcError::Handshake { addr: "127.0.0.1:1".into(), source };
        for (source, words) in [
            (
                tls(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
                "not signed by your CA",
            ),
            (tls(rustls::Error::AlertReceived(AlertDescription::DecryptError)), "refused your certificate"),
            (
                tls(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)),
                "does not speak TLS",
            ),
        ] {
            let e = handshake(source);
            assert_eq!(e.kind(), cluster_core::ErrorKind::Forbidden, "{e}");
            let core = e.into_core();
            assert!(!core.is_retryable() && core.to_string().contains(words), "{core}");
        }
        // A handshake cut or timed out may pass on a retry.
        for kind in [std::io::ErrorKind::TimedOut, std::io::ErrorKind::UnexpectedEof] {
            let e = handshake(std::io::Error::from(kind));
            assert_eq!(e.kind(), cluster_core::ErrorKind::Unavailable);
            assert!(e.into_core().is_retryable());
        }
    }
}
