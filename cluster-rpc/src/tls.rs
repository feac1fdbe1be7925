//! Mutual TLS between members, and between clients and members.
//!
//! One certificate authority per cluster signs every certificate. The
//! **role** is written in the certificate as its DNS name:
//! [`MEMBER_NAME`] for members, [`CLIENT_NAME`] for clients — the way Consul
//! names its servers `server.<dc>.consul` instead of by address, since members
//! come and go on addresses nobody knows in advance.
//!
//! - A server (raft port, service port, HTTP) presents a member certificate
//!   and asks every caller for a certificate signed by the cluster's CA;
//!   [`peer_role`] then tells the handler whether a member or a client calls.
//! - A client verifies that the server holds a *member* certificate of the
//!   same CA, so a client certificate can never pose as a member.
//! - Member certificates allow both TLS server and client use; client
//!   certificates only client use, which rustls checks as well.
//! - Validity times are checked on every handshake: an expired certificate is
//!   refused on either side.
//! - A member certificate may also name the member that holds it
//!   ([`identity::CertIdentity`], a URI SAN `carbon://<cluster>/member/<id>`);
//!   [`peer_identity`] reads it on a connection.
//!
//! [`Tls`] holds the current configuration and can be reloaded from its files
//! ([`Tls::reload`], or [`Tls::spawn_reloader`] on `SIGHUP` and on a change of
//! the files): new connections use the new certificate, established ones keep
//! theirs. A reload checks what loading at start checks (the certificate is
//! signed by the CA, its key fits, it has a role) and also that the holder
//! stays who it was (same role, same member id). A reload that fails keeps
//! the configuration in force and says why.
//!
//! [`generate`] makes a CA and certificates (`carbon tls init`, tests, the demo).
//!
//! ```
//! use cluster_rpc::tls::{generate::CertificateAuthority, Role, Tls};
//!
//! let ca = CertificateAuthority::generate("prod").unwrap();
//! let member = ca.issue(Role::Member, "member-1").unwrap();
//! let tls = Tls::from_pem(ca.cert_pem(), &member.cert_pem, &member.key_pem).unwrap();
//! assert_eq!(tls.role(), Role::Member);
//! assert!(tls.acceptor().is_ok());
//!
//! let client = ca.issue(Role::Client, "ops").unwrap();
//! let tls = Tls::from_pem(ca.cert_pem(), &client.cert_pem, &client.key_pem).unwrap();
//! assert_eq!(tls.role(), Role::Client);
//! assert!(tls.acceptor().is_err(), "a client certificate cannot serve");
//! ```

pub mod generate;
pub mod identity;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use self::identity::{CertIdentity, identity_in};

/// The DNS name every member certificate carries, and that clients verify.
pub const MEMBER_NAME: &str = "member.carbon-grid";
/// The DNS name every client certificate carries.
pub const CLIENT_NAME: &str = "client.carbon-grid";

/// What a certificate allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A member of the cluster: serves the raft and service ports, may issue
    /// the cluster's reserved operations.
    Member,
    /// A client (an operator's command, an application): user keys only.
    Client,
}

impl Role {
    /// The DNS name written in certificates of this role.
    pub fn dns_name(self) -> &'static str {
        match self {
            Role::Member => MEMBER_NAME,
            Role::Client => CLIENT_NAME,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Member => "member",
            Role::Client => "client",
        })
    }
}

/// Where a member's or client's TLS material lives, in PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The cluster CA's certificate.
    pub ca_cert: PathBuf,
    /// This holder's certificate (the chain, leaf first).
    pub cert: PathBuf,
    /// This holder's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA's certificate revocation list (PEM), if any: a certificate it
    /// names is refused at the handshake, whichever side presents it.
    /// Reloaded with the certificates (`carbon tls revoke` writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// PEM text that holds nothing usable of the kind expected.
    #[error("{origin}: no usable {what} in it ({reason})")]
    Pem {
        /// The file, or "memory".
        origin: String,
        /// What was looked for: "certificate", "private key".
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The certificate is neither a member nor a client certificate of this
    /// cluster (its name is not [`MEMBER_NAME`] or [`CLIENT_NAME`]).
    #[error("{origin}: the certificate is for neither {MEMBER_NAME:?} nor {CLIENT_NAME:?}")]
    NoRole {
        /// Where the certificate came from.
        origin: String,
    },
    /// The certificate, key and CA do not form a usable configuration
    /// (a key that does not match the certificate, an unusable CA …).
    #[error("{origin}: {reason}")]
    Config {
        /// Where the material came from.
        origin: String,
        /// What rustls said.
        reason: String,
    },
    /// A client certificate cannot serve: servers need a member certificate.
    #[error("a client certificate cannot serve: a member certificate is needed")]
    NotAMember,
    /// The certificate's member identity cannot be used: unreadable, more
    /// than one, or on a client certificate.
    #[error("{origin}: member identity: {reason}")]
    Identity {
        /// Where the certificate came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reloaded files would make the holder someone else (another role or
    /// member id): that takes a restart, never a reload.
    #[error("{origin}: the new certificate is for {now}, the one in force for {was}: restart to change that")]
    HolderChanged {
        /// Where the certificate came from.
        origin: String,
        /// Who the certificate in force is for.
        was: String,
        /// Who the new one is for.
        now: String,
    },
    /// Making a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The configuration in force, built from one set of PEM texts.
struct Loaded {
    role: Role,
    identity: Option<CertIdentity>,
    server: Option<Arc<ServerConfig>>,
    /// As `server`, but a caller may also come without a certificate (the
    /// HTTP port's health routes); a certificate it presents is verified.
    server_optional_client: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

/// What the files looked like when last loaded: a change triggers a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

struct Inner {
    files: Option<TlsFiles>,
    current: RwLock<Arc<Loaded>>,
    stamp: RwLock<Option<Stamp>>,
}

/// A member's or client's TLS configuration, reloadable; clones share it.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("role", &self.role()).field("files", &self.inner.files).finish()
    }
}

impl Tls {
    /// Loads the CA, certificate and key from `files`; [`Tls::reload`] reads them again.
    pub fn from_files(files: TlsFiles) -> Result<Tls, TlsError> {
        let stamp = stamp(&files);
        let loaded = load_files(&files)?;
        Ok(Tls {
            inner: Arc::new(Inner {
                files: Some(files),
                current: RwLock::new(Arc::new(loaded)),
                stamp: RwLock::new(Some(stamp)),
            }),
        })
    }

    /// Builds from PEM texts (certificates made in memory: tests, the demo).
    /// Such a configuration has no files to reload from.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Tls, TlsError> {
        let loaded = load(ca_pem.as_bytes(), cert_pem.as_bytes(), key_pem.as_bytes(), "memory")?;
        Ok(Tls {
            inner: Arc::new(Inner {
                files: None,
                current: RwLock::new(Arc::new(loaded)),
                stamp: RwLock::new(None),
            }),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        self.inner.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The role of this holder's own certificate.
    pub fn role(&self) -> Role {
        self.current().role
    }

    /// The member identity this holder's certificate names, if any.
    pub fn identity(&self) -> Option<CertIdentity> {
        self.current().identity.clone()
    }

    /// The files this configuration reloads from, if any.
    pub fn files(&self) -> Option<&TlsFiles> {
        self.inner.files.as_ref()
    }

    /// Accepts TLS connections with the configuration in force now.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        match &self.current().server {
            Some(server) => Ok(TlsAcceptor::from(server.clone())),
            None => Err(TlsError::NotAMember),
        }
    }

    /// Accepts TLS connections with the configuration in force now, also
    /// from callers that present no certificate (a certificate presented
    /// must still verify): for the HTTP port, whose health routes answer
    /// Kubernetes probes while every other route asks for a certificate
    /// ([`peer_role`] tells which the caller has).
    pub fn acceptor_client_cert_optional(&self) -> Result<TlsAcceptor, TlsError> {
        match &self.current().server_optional_client {
            Some(server) => Ok(TlsAcceptor::from(server.clone())),
            None => Err(TlsError::NotAMember),
        }
    }

    /// Makes TLS connections with the configuration in force now.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.current().client.clone())
    }

    /// The name a client verifies in the server's certificate: only members serve.
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(MEMBER_NAME).expect("MEMBER_NAME is a valid DNS name")
    }

    /// Reads the files again and puts the new configuration in force for new
    /// connections. `Ok(false)` when there are no files (made in memory). The
    /// new set must pass every check of loading at start and be for the same
    /// holder (same role, same member identity); on an error the
    /// configuration in force stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.inner.files else { return Ok(false) };
        let stamp = stamp(files);
        let loaded = load_files(files)?;
        let current = self.current();
        let holder = |l: &Loaded| match &l.identity {
            Some(identity) => format!("{} {}", l.role, identity.member_id),
            None => format!("a {} without a member id", l.role),
        };
        if (current.role, &current.identity) != (loaded.role, &loaded.identity) {
            return Err(TlsError::HolderChanged {
                origin: files.cert.display().to_string(),
                was: holder(&current),
                now: holder(&loaded),
            });
        }
        *self.inner.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        *self.inner.stamp.write().unwrap_or_else(|e| e.into_inner()) = Some(stamp);
        Ok(true)
    }

    /// True when the files changed since they were last loaded.
    fn files_changed(&self) -> bool {
        let Some(files) = &self.inner.files else { return false };
        let now = stamp(files);
        self.inner.stamp.read().unwrap_or_else(|e| e.into_inner()).as_ref() != Some(&now)
    }

    /// Reloads on `SIGHUP` and whenever the files change (checked every
    /// `interval`), until `cancel` fires. Failures are logged; the
    /// configuration in force stays until a reload succeeds.
    pub fn spawn_reloader(&self, interval: Duration, cancel: CancellationToken) -> JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error: Option<String> = None;
            loop {
                #[cfg(unix)]
                let hup = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hup = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => false,
                    _ = hup => true,
                };
                if !forced && !tls.files_changed() {
                    continue;
                }
                match tls.reload() {
                    Ok(_) => {
                        last_error = None;
                        tracing::info!(role = %tls.role(), "TLS certificates reloaded");
                    }
                    Err(e) => {
                        // Files being rewritten are seen half-written now and then:
                        // say it once per distinct problem, and retry at the next tick.
                        let text = e.to_string();
                        if last_error.as_deref() != Some(&text) {
                            tracing::warn!(error = %text, "TLS reload failed; the certificates in force stay");
                        }
                        last_error = Some(text);
                    }
                }
            }
        })
    }
}

/// The role of the peer's verified certificate on an established connection;
/// `None` before the handshake, or for a certificate of neither role.
pub fn peer_role(conn: &rustls::CommonState) -> Option<Role> {
    let leaf = conn.peer_certificates()?.first()?;
    role_of(leaf)
}

/// The member identity the peer's verified certificate names on an
/// established connection; `None` before the handshake, or when it names
/// none (a client, or a member certificate made before identities).
pub fn peer_identity(conn: &rustls::CommonState) -> Option<CertIdentity> {
    let leaf = conn.peer_certificates()?.first()?;
    identity_in(leaf).ok().flatten()
}

fn role_of(cert: &CertificateDer<'_>) -> Option<Role> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    [Role::Member, Role::Client].into_iter().find(|role| {
        ServerName::try_from(role.dns_name())
            .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
            .unwrap_or(false)
    })
}

/// Whether `cert` is signed by the CA in `ca_pem` (its validity time aside):
/// `carbon tls revoke` lists only the CA's own certificates.
pub(crate) fn signed_by_ca(ca_pem: &str, cert: &CertificateDer<'_>) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem.as_bytes(), "the CA certificate").map_err(|e| e.to_string())? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())?;
    match verifier.verify_client_cert(cert, &[], rustls_pki_types::UnixTime::now()) {
        Ok(_)
        | Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
            | rustls::CertificateError::ExpiredContext { .. }
            | rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. },
        )) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File { path: path.to_owned(), source })
}

fn stamp(files: &TlsFiles) -> Stamp {
    Stamp(
        [Some(&files.ca_cert), Some(&files.cert), Some(&files.key), files.crl.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect(),
    )
}

fn load_files(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let ca = read(&files.ca_cert)?;
    let cert = read(&files.cert)?;
    let key = read(&files.key)?;
    let crls = match &files.crl {
        Some(path) => crls(&read(path)?, &path.display().to_string())?,
        None => Vec::new(),
    };
    load_named(
        (&ca, &files.ca_cert.display().to_string()),
        (&cert, &files.cert.display().to_string()),
        (&key, &files.key.display().to_string()),
        crls,
    )
}

fn load(ca: &[u8], cert: &[u8], key: &[u8], origin: &str) -> Result<Loaded, TlsError> {
    load_named((ca, origin), (cert, origin), (key, origin), Vec::new())
}

fn crls(pem: &[u8], origin: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Pem { origin: origin.to_owned(), what: "revocation list", reason };
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if crls.is_empty() {
        return Err(fail("no X509 CRL block".into()));
    }
    Ok(crls)
}

fn certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Pem { origin: origin.to_owned(), what: "certificate", reason };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn load_named(
    ca: (&[u8], &str),
    cert: (&[u8], &str),
    key: (&[u8], &str),
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Loaded, TlsError> {
    let ca_certs = certs(ca.0, ca.1)?;
    let chain = certs(cert.0, cert.1)?;
    let key_der = PrivateKeyDer::from_pem_slice(key.0).map_err(|e| TlsError::Pem {
        origin: key.1.to_owned(),
        what: "private key",
        reason: e.to_string(),
    })?;
    let role = role_of(&chain[0]).ok_or_else(|| TlsError::NoRole { origin: cert.1.to_owned() })?;
    let identity_err = |reason: String| TlsError::Identity { origin: cert.1.to_owned(), reason };
    let identity = identity_in(&chain[0]).map_err(identity_err)?;
    if role == Role::Client && identity.is_some() {
        return Err(identity_err("a client certificate names a member".into()));
    }

    let config_err = |origin: &str, reason: String| TlsError::Config { origin: origin.to_owned(), reason };
    let mut roots = RootCertStore::empty();
    for c in ca_certs {
        roots.add(c).map_err(|e| config_err(ca.1, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);

    // Revocation is checked for the peer's own certificate (the CA is the
    // trust anchor); a certificate the list does not cover (another CA's
    // list) is refused rather than let through.
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .with_crls(crls.clone())
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| config_err(ca.1, e.to_string()))?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(cert.1, e.to_string()))?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(chain.clone(), key_der.clone_key())
        .map_err(|e| config_err(cert.1, format!("certificate and key do not fit: {e}")))?;

    let verifier = |optional_client: bool| {
        let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .with_crls(crls.clone())
            .only_check_end_entity_revocation();
        if optional_client {
            builder = builder.allow_unauthenticated();
        }
        builder.build().map_err(|e| config_err(ca.1, e.to_string()))
    };
    // Our own certificate must chain to the CA: every peer would refuse it
    // anyway, and a reload must not put such a set in force. Its validity
    // time is checked on every handshake instead (an expired certificate is
    // loaded, and refused by peers), so that a renewal can be dropped in.
    match verifier(false)?.verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now()) {
        Ok(_) => {}
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
            | rustls::CertificateError::ExpiredContext { .. }
            | rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. },
        )) => {}
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
            return Err(config_err(cert.1, "the certificate is revoked (on the revocation list)".into()));
        }
        Err(e) => return Err(config_err(cert.1, format!("not a certificate of the CA in {}: {e}", ca.1))),
    }

    // `optional_client`: a caller may also come without a certificate (the
    // HTTP port's health routes); a certificate it presents is verified.
    let server = |optional_client: bool| -> Result<Option<Arc<ServerConfig>>, TlsError> {
        if role == Role::Client {
            return Ok(None);
        }
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(cert.1, e.to_string()))?
            .with_client_cert_verifier(verifier(optional_client)?)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| config_err(cert.1, format!("certificate and key do not fit: {e}")))?;
        Ok(Some(Arc::new(server)))
    };
    Ok(Loaded {
        role,
        identity,
        server: server(false)?,
        server_optional_client: server(true)?,
        client: Arc::new(client),
    })
}

#[cfg(test)]
mod tests;
