//! Making a cluster's certificate authority and its member and client
//! certificates (`carbon tls init`, tests, the demo's in-memory cluster).
//!
//! Keys are ECDSA P-256. Certificates carry their role as their DNS name
//! ([`Role::dns_name`]) and the extended key usages that fit it: members
//! serve and call, clients only call. A member certificate made by
//! [`CertificateAuthority::issue_member`] also names its member id
//! ([`CertIdentity`]): one certificate per member, never shared.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use cluster_core::MemberId;

use super::identity::CertIdentity;
use super::{Role, TlsError, TlsFiles};

/// The CA's certificate in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The CA's certificate revocation list in a CA directory ([`revoke_in`]).
pub const CRL_FILE: &str = "crl.pem";

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
    cluster_id: String,
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
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
            cluster_id: cluster_id.to_owned(),
        })
    }

    /// An existing CA, from its certificate and private key (`carbon tls
    /// issue` on a CA directory). Its cluster id is read from its subject
    /// (`<cluster id> CA`, as [`generate`](Self::generate) writes it); a key
    /// that is not the certificate's is refused.
    pub fn from_pem(cert_pem: &str, key_pem: &str, origin: &str) -> Result<Self, TlsError> {
        let config = |reason: String| TlsError::Config { origin: origin.to_owned(), reason };
        let key = KeyPair::from_pem(key_pem).map_err(|e| config(format!("the CA key: {e}")))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateDer<'static>| d)
            .map_err(|e| config(format!("the CA certificate: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| config(format!("the CA certificate: {e}")))?;
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(config("the CA key is not the CA certificate's key".into()));
        }
        let cluster_id = x509
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok()?.strip_suffix(" CA").map(str::to_owned))
            .ok_or_else(|| config("the CA's subject names no cluster (\"<cluster id> CA\")".into()))?;
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|e| config(format!("the CA certificate: {e}")))?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            cluster_id,
        })
    }

    /// The cluster this CA signs for, named in member identities.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
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
    /// It names no member id: use it for clients, and for members only to
    /// test what certificates made before identities do.
    pub fn issue(&self, role: Role, name: &str) -> Result<IssuedCert, TlsError> {
        let now = SystemTime::now();
        self.issue_valid(role, name, now - BACKDATE, now + CERT_VALIDITY)
    }

    /// A member certificate naming `member_id` (a URI SAN
    /// `carbon://<cluster id>/member/<member id>`), `name` in its subject,
    /// valid for [`CERT_VALIDITY`]. The member that holds it runs as `member_id`.
    pub fn issue_member(&self, member_id: MemberId, name: &str) -> Result<IssuedCert, TlsError> {
        let now = SystemTime::now();
        self.issue_with(Role::Member, name, Some(member_id), now - BACKDATE, now + CERT_VALIDITY)
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
        self.issue_with(role, name, None, not_before, not_after)
    }

    fn issue_with(
        &self,
        role: Role,
        name: &str,
        member_id: Option<MemberId>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![role.dns_name().to_owned()])?;
        if let Some(member_id) = member_id {
            let uri = CertIdentity { cluster_id: self.cluster_id.clone(), member_id }.uri();
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
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
    /// The member id each member certificate names, in the order of `members`.
    pub member_ids: Vec<MemberId>,
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
    let ca_cert = dir.join(CA_CERT_FILE);
    let ca_key = dir.join(CA_KEY_FILE);
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
            crl: None,
        };
        plan.push((files.cert.clone(), issued.cert_pem, false));
        plan.push((files.key.clone(), issued.key_pem, true));
        files
    };
    let mut member_ids = Vec::new();
    for n in 1..=members {
        let name = format!("member-{n}");
        let id = MemberId::generate();
        let issued = ca.issue_member(id, &name)?;
        sets.push(add(&name, issued, &mut plan));
        member_ids.push(id);
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
    Ok(Bundle { ca_cert, ca_key, members: sets, member_ids, client })
}

/// The files [`issue_into`] made.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA certificate, the new certificate and its key.
    pub files: TlsFiles,
    /// The member id a member certificate names; `None` for a client's.
    pub member_id: Option<MemberId>,
}

/// Adds one certificate of `role` to the CA directory `ca_dir` (made by
/// [`write_bundle`]; it must hold the CA's key): a member certificate as the
/// first free `member-N.pem`, naming `member_id` (a renewal, or a member
/// that had a certificate without one) or else a fresh member id; or a
/// client certificate as `client.pem`, else the first free `client-N.pem`.
/// Written into `out`; never overwrites a file.
pub fn issue_into(
    ca_dir: &Path,
    out: &Path,
    role: Role,
    member_id: Option<MemberId>,
) -> Result<Issued, TlsError> {
    if role == Role::Client && member_id.is_some() {
        return Err(TlsError::Identity {
            origin: out.display().to_string(),
            reason: "a client certificate names no member".into(),
        });
    }
    let file_err = |path: &Path, source| TlsError::File { path: path.to_owned(), source };
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| file_err(&path, e)).map(|text| (path, text))
    };
    let (ca_cert, cert_pem) = read(CA_CERT_FILE)?;
    let (ca_key, key_pem) = read(CA_KEY_FILE)?;
    let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem, &ca_key.display().to_string())?;
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    let free = |name: &str| {
        !out.join(format!("{name}.pem")).exists() && !out.join(format!("{name}-key.pem")).exists()
    };
    let (name, member_id) = match role {
        Role::Member => {
            let n = (1..).find(|n| free(&format!("member-{n}"))).unwrap_or(1);
            (format!("member-{n}"), Some(member_id.unwrap_or_else(MemberId::generate)))
        }
        Role::Client if free("client") => ("client".to_owned(), None),
        Role::Client => {
            (format!("client-{}", (2..).find(|n| free(&format!("client-{n}"))).unwrap_or(2)), None)
        }
    };
    let issued = match member_id {
        Some(id) => ca.issue_member(id, &name)?,
        None => ca.issue(Role::Client, &name)?,
    };
    let files = TlsFiles {
        ca_cert,
        cert: out.join(format!("{name}.pem")),
        key: out.join(format!("{name}-key.pem")),
        crl: None,
    };
    // The key first: a certificate without its key is never left behind.
    write_new(&files.key, &issued.key_pem, true).map_err(|e| file_err(&files.key, e))?;
    if let Err(e) = write_new(&files.cert, &issued.cert_pem, false) {
        let _ = std::fs::remove_file(&files.key);
        return Err(file_err(&files.cert, e));
    }
    Ok(Issued { files, member_id })
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

/// Adds the certificate in the PEM file `cert` to the revocation list of the
/// CA directory `ca_dir` ([`CRL_FILE`], made on first use, signed by the CA;
/// the certificates it already names stay on it). Returns the list's path.
/// The file is replaced whole (written beside it, then renamed), so a member
/// reloading it never reads half a list.
pub fn revoke_in(ca_dir: &Path, cert: &Path) -> Result<PathBuf, TlsError> {
    let file_err = |path: &Path, source| TlsError::File { path: path.to_owned(), source };
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| file_err(path, e));
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca = CertificateAuthority::from_pem(
        &read(&ca_dir.join(CA_CERT_FILE))?,
        &read(&ca_key_path)?,
        &ca_key_path.display().to_string(),
    )?;
    let origin = cert.display().to_string();
    let config = |origin: &str, reason: String| TlsError::Config { origin: origin.to_owned(), reason };
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(read(cert)?.as_bytes())
        .map(|d: rustls_pki_types::CertificateDer<'static>| d)
        .map_err(|e| config(&origin, format!("no certificate in it: {e}")))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| config(&origin, e.to_string()))?;
    // Only this CA's certificates: a serial means nothing under another CA.
    super::signed_by_ca(ca.cert_pem(), &der).map_err(|reason| {
        config(&origin, format!("not a certificate of the CA in {}: {reason}", ca_dir.display()))
    })?;
    let serial = x509.raw_serial().to_vec();

    let crl_path = ca_dir.join(CRL_FILE);
    let now = SystemTime::now();
    let mut revoked = Vec::new();
    let mut number: u64 = 0;
    match std::fs::read(&crl_path) {
        Ok(pem) => {
            for crl in super::crls(&pem, &crl_path.display().to_string())? {
                let (_, list) =
                    <x509_parser::revocation_list::CertificateRevocationList<'_> as x509_parser::prelude::FromDer<'_, _>>::from_der(&crl)
                    .map_err(|e| config(&crl_path.display().to_string(), e.to_string()))?;
                if let Some(n) = list.crl_number() {
                    number = number.max(n.to_u64_digits().first().copied().unwrap_or(0));
                }
                for entry in list.iter_revoked_certificates() {
                    revoked.push(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(entry.raw_serial()),
                        revocation_time: OffsetDateTime::from_unix_timestamp(
                            entry.revocation_date.timestamp(),
                        )
                        .unwrap_or_else(|_| when(now)),
                        reason_code: None,
                        invalidity_date: None,
                    });
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(&crl_path, e)),
    }
    if !revoked.iter().any(|r| r.serial_number.as_ref() == serial.as_slice()) {
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: when(now),
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: when(now - BACKDATE),
        // Members do not enforce it (a list is good until replaced); a date
        // far ahead keeps other tools from calling it stale.
        next_update: when(now + CA_VALIDITY),
        crl_number: SerialNumber::from(number + 1),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.issuer)?;
    let pem = crl.pem()?;
    let tmp = ca_dir.join(format!("{CRL_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, &pem, false).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, &crl_path).map_err(|e| file_err(&crl_path, e))?;
    Ok(crl_path)
}
