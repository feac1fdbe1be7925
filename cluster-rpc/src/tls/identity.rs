//! A member's identity in its certificate: a URI subject alternative name
//! `carbon://<cluster id>/member/<member id>` next to the role's DNS name
//! (SPIFFE's shape, as Consul's `spiffe://…/agent/server/…`).
//!
//! The role says *what* a holder may be; the identity says *which* member it
//! is. With it the leader admits a gossip member only when the certificate
//! on its raft endpoint names the member id it claims, and a member cannot
//! be counted under anyone else's id. Client certificates name no member.

use std::fmt;

use cluster_core::MemberId;
use rustls_pki_types::CertificateDer;

/// The scheme and separator every identity URI starts with.
pub const URI_PREFIX: &str = "carbon://";
/// What separates the cluster id from the member id in an identity URI.
const MEMBER_PATH: &str = "/member/";

/// The member a certificate names: its cluster and its member id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    /// The cluster id the certificate was issued for.
    pub cluster_id: String,
    /// The member id the holder must run as.
    pub member_id: MemberId,
}

impl CertIdentity {
    /// The URI written in the certificate: `carbon://<cluster id>/member/<member id>`.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}{MEMBER_PATH}{}", self.cluster_id, self.member_id)
    }

    /// Reads a URI SAN: `None` when it is not one of ours (another scheme),
    /// an error when it is ours but malformed.
    pub fn parse_uri(uri: &str) -> Option<Result<CertIdentity, String>> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let parsed = rest
            .rsplit_once(MEMBER_PATH)
            .filter(|(cluster, _)| !cluster.is_empty())
            .ok_or_else(|| format!("{uri:?} is not carbon://<cluster>/member/<member id>"))
            .and_then(|(cluster, id)| {
                let member_id = id.parse().map_err(|e| format!("{uri:?}: {e}"))?;
                Ok(CertIdentity { cluster_id: cluster.to_owned(), member_id })
            });
        Some(parsed)
    }
}

impl fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The identity a certificate names: `Ok(None)` when it names none (a
/// client's, or a member's made before identities), an error when it cannot
/// be read or names more than one member (which one would it be?).
pub(crate) fn identity_in(cert: &CertificateDer<'_>) -> Result<Option<CertIdentity>, String> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("not a readable certificate: {e}"))?;
    let Some(san) = x509.subject_alternative_name().map_err(|e| format!("subject alternative names: {e}"))?
    else {
        return Ok(None);
    };
    let mut found: Option<CertIdentity> = None;
    for name in &san.value.general_names {
        let x509_parser::extensions::GeneralName::URI(uri) = name else { continue };
        let Some(identity) = CertIdentity::parse_uri(uri) else { continue };
        let identity = identity?;
        if found.is_some() {
            return Err("it names more than one member".into());
        }
        found = Some(identity);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_strangers_are_told_apart() {
        let identity = CertIdentity { cluster_id: "prod".into(), member_id: MemberId::generate() };
        assert_eq!(CertIdentity::parse_uri(&identity.uri()), Some(Ok(identity.clone())));
        assert_eq!(CertIdentity::parse_uri("spiffe://prod/member/x"), None);
        for bad in
            ["carbon://prod/member/nope", "carbon:///member/01J0000000000000000000000", "carbon://prod"]
        {
            assert!(matches!(CertIdentity::parse_uri(bad), Some(Err(_))), "{bad}");
        }
    }
}
