//! Making a cluster's certificate authority and its member and client
//! certificates (`carbon tls init`, tests, the demo's in-memory cluster).
//!
//! Keys are ECDSA P-256. Certificates carry their role as their DNS name
//! ([`Role::dns_name`]) and the extended key usages that fit it: members
//! serve and call, clients only call.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::{Role, TlsError, TlsFiles};

/// How long a certificate issued by [`CertificateAuthority::issue`] is valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(825 * 24 * 3600);
/// How long the CA made by [`CertificateAuthority::generate`] is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are valid from a little before now, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8). Keep it secret.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// A cluster's certificate authority: it signs member and client certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

fn when(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn ca_params(cluster_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Carbon Grid Cluster");
    dn.push(DnType::CommonName, format!("{cluster_id} CA"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = SystemTime::now();
    params.not_before = when(now - BACKDATE);
    params.not_after = when(now + CA_VALIDITY);
    params
}

impl CertificateAuthority {
    /// A new CA for `cluster_id` (named in its subject), valid for [`CA_VALIDITY`].
    pub fn generate(cluster_id: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let params = ca_params(cluster_id);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertificateAuthority { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// The CA's certificate, which every member and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key. Whoever holds it can make members: keep it off
    /// the members once their certificates are made.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate of `role`, `name` in its subject, valid for [`CERT_VALIDITY`].
    pub fn issue(&self, role: Role, name: &str) -> Result<IssuedCert, TlsError> {
        let now = SystemTime::now();
        self.issue_valid(role, name, now - BACKDATE, now + CERT_VALIDITY)
    }

    /// A certificate of `role` valid from `not_before` to `not_after` (an
    /// expired one for tests, a short-lived one for rotation drills).
    pub fn issue_valid(
        &self,
        role: Role,
        name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![role.dns_name().to_owned()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Carbon Grid Cluster");
        dn.push(DnType::OrganizationalUnitName, role.to_string());
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Member => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = when(not_before);
        params.not_after = when(not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// The files [`write_bundle`] made.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The CA's certificate (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The CA's private key (`ca-key.pem`, mode 0600).
    pub ca_key: PathBuf,
    /// One set per member (`member-N.pem`, `member-N-key.pem`).
    pub members: Vec<TlsFiles>,
    /// The client's set (`client.pem`, `client-key.pem`).
    pub client: TlsFiles,
}

/// Makes a CA, `members` member certificates and one client certificate, and
/// writes them into `dir` (created if missing). Private keys get mode 0600.
/// Refuses to overwrite a file that exists, naming it.
pub fn write_bundle(dir: &Path, cluster_id: &str, members: usize) -> Result<Bundle, TlsError> {
    let file_err = |path: &Path, source| TlsError::File { path: path.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let ca = CertificateAuthority::generate(cluster_id)?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    let mut plan: Vec<(PathBuf, String, bool)> = vec![
        (ca_cert.clone(), ca.cert_pem().to_owned(), false),
        (ca_key.clone(), ca.key_pem().to_owned(), true),
    ];
    let mut sets = Vec::new();
    let add = |name: &str, issued: IssuedCert, plan: &mut Vec<(PathBuf, String, bool)>| {
        let files = TlsFiles {
            ca_cert: ca_cert.clone(),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        plan.push((files.cert.clone(), issued.cert_pem, false));
        plan.push((files.key.clone(), issued.key_pem, true));
        files
    };
    for n in 1..=members {
        let name = format!("member-{n}");
        let issued = ca.issue(Role::Member, &name)?;
        sets.push(add(&name, issued, &mut plan));
    }
    let client = add("client", ca.issue(Role::Client, "client")?, &mut plan);
    // Check first, so that a refusal leaves nothing half-written.
    if let Some((path, _, _)) = plan.iter().find(|(p, _, _)| p.exists()) {
        return Err(file_err(
            path,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists already; not overwritten"),
        ));
    }
    for (path, text, secret) in &plan {
        write_new(path, text, *secret).map_err(|e| file_err(path, e))?;
    }
    Ok(Bundle { ca_cert, ca_key, members: sets, client })
}

/// Writes a new file; `secret` ones readable by the owner only.
fn write_new(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
