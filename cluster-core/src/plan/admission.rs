//! Admission: what a gossip member must show before the leader makes it a
//! raft member, gives it a short id or records it. Nothing from gossip is
//! trusted: an encrypted gossip keeps outsiders out, but a member's tags are
//! still only what it claims. With TLS the facade's housekeeping also asks
//! the member's raft endpoint to prove a member certificate of the cluster's
//! CA (`cluster_rpc::Security::prove_member`) before it admits it.

use std::net::IpAddr;

use crate::error::Error;
use crate::member::{MAX_MEMBER_INFO_BYTES, MemberInfo, tag};
use crate::membership::Member;

/// Why a gossip member is not admitted (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A reserved tag is missing or does not parse. Normal for a moment
    /// while a member starts.
    #[error("tags: {0}")]
    Tags(#[source] Error),
    /// A port tag is 0: no one can be reached there.
    #[error("tag {tag} is 0")]
    ZeroPort {
        /// The tag.
        tag: &'static str,
    },
    /// The host is not an IP address others can reach.
    #[error("host {host:?} is not a unicast IP address")]
    BadHost {
        /// The host tag.
        host: String,
    },
    /// The tags claim another address than the member gossips from.
    #[error("tags say {claimed} but the member gossips at {actual}")]
    AddressMismatch {
        /// `host:serf_port` from the tags.
        claimed: String,
        /// The gossip address.
        actual: String,
    },
    /// The member's record would be larger than a record may be.
    #[error("its record would take {bytes} bytes, more than {MAX_MEMBER_INFO_BYTES}")]
    TooLarge {
        /// The record's size.
        bytes: usize,
    },
}

/// The member's consensus form, if it may be admitted: its tags validate,
/// every port is non-zero, its host is a unicast IP address and is the
/// address it gossips at (so its raft endpoint cannot point at someone
/// else), and its record fits.
pub fn admit(member: &Member) -> Result<MemberInfo, Refusal> {
    let info = MemberInfo::from_tags(member.id, &member.tags).map_err(Refusal::Tags)?;
    for (name, port) in [
        (tag::GOSSIP_PORT, info.gossip_port),
        (tag::RAFT_PORT, info.raft_port),
        (tag::SERVICE_PORT, info.service_port),
        (tag::GRID_PORT, info.grid_port),
    ] {
        if port == 0 {
            return Err(Refusal::ZeroPort { tag: name });
        }
    }
    let host: IpAddr = info.host.parse().map_err(|_| Refusal::BadHost { host: info.host.clone() })?;
    if host.is_unspecified() || host.is_multicast() || host == IpAddr::from([255, 255, 255, 255]) {
        return Err(Refusal::BadHost { host: info.host.clone() });
    }
    if host != member.gossip_addr.ip() || info.gossip_port != member.gossip_addr.port() {
        return Err(Refusal::AddressMismatch {
            claimed: format!("{}:{}", info.host, info.gossip_port),
            actual: member.gossip_addr.to_string(),
        });
    }
    let bytes = info.to_bytes().len();
    if bytes > MAX_MEMBER_INFO_BYTES {
        return Err(Refusal::TooLarge { bytes });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::id::MemberId;
    use crate::membership::MemberState;

    fn member(tags: &[(&str, &str)]) -> Member {
        let mut all: BTreeMap<String, String> = [
            (tag::HOST, "127.0.0.2"),
            (tag::GOSSIP_PORT, "7946"),
            (tag::RAFT_PORT, "7001"),
            (tag::SERVICE_PORT, "7002"),
            (tag::GRID_PORT, "7003"),
            (tag::RAFT_ROLE, "nonvoter"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in tags {
            all.insert((*k).to_owned(), (*v).to_owned());
        }
        Member {
            id: MemberId::from(7),
            generation: 1,
            gossip_addr: "127.0.0.2:7946".parse().unwrap_or_else(|_| unreachable!()),
            tags: all,
            state: MemberState::Alive,
        }
    }

    #[test]
    fn a_well_formed_member_is_admitted() {
        let info = admit(&member(&[("zone", "a")])).expect("admitted");
        assert_eq!((info.member_id, info.raft_port), (MemberId::from(7), 7001));
        assert_eq!(info.raft_addr(), "127.0.0.2:7001");
    }

    #[test]
    fn anything_gossip_cannot_prove_is_refused() {
        let mut missing = member(&[]);
        missing.tags.remove(tag::RAFT_PORT);
        assert!(matches!(admit(&missing), Err(Refusal::Tags(Error::MissingTag { .. }))));
        assert!(matches!(admit(&member(&[(tag::RAFT_ROLE, "king")])), Err(Refusal::Tags(_))));
        assert_eq!(admit(&member(&[(tag::RAFT_PORT, "0")])), Err(Refusal::ZeroPort { tag: tag::RAFT_PORT }));
        assert_eq!(admit(&member(&[(tag::GRID_PORT, "0")])), Err(Refusal::ZeroPort { tag: tag::GRID_PORT }));
        for host in ["db.example", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::"] {
            assert!(matches!(admit(&member(&[(tag::HOST, host)])), Err(Refusal::BadHost { .. })), "{host}");
        }
        // Raft traffic pointed at another host, or a stale gossip port.
        assert!(matches!(admit(&member(&[(tag::HOST, "10.0.0.9")])), Err(Refusal::AddressMismatch { .. })));
        assert!(matches!(
            admit(&member(&[(tag::GOSSIP_PORT, "7947")])),
            Err(Refusal::AddressMismatch { .. })
        ));
        let huge = "x".repeat(MAX_MEMBER_INFO_BYTES);
        assert!(matches!(admit(&member(&[("blob", &huge)])), Err(Refusal::TooLarge { .. })));
    }
}
