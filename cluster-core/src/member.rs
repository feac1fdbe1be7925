//! [`MemberInfo`]: a member's metadata, and its two forms — tags in gossip,
//! bincode bytes in the consensus store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{MemberId, ShortId};
use crate::role::RaftRole;

/// Names of the tags every member publishes in gossip.
pub mod tag {
    /// The host (name or IP) other members reach this member at.
    pub const HOST: &str = "host";
    /// The gossip port (the name keeps the Go package's `serf_port`).
    pub const GOSSIP_PORT: &str = "serf_port";
    /// The raft RPC port.
    pub const RAFT_PORT: &str = "raft_port";
    /// The forwarding-service port.
    pub const SERVICE_PORT: &str = "raft_service_port";
    /// The data grid's own port.
    pub const GRID_PORT: &str = "grid_port";
    /// `leader`, `voter` or `nonvoter`.
    pub const RAFT_ROLE: &str = "raft_role";
    /// The short id, once assigned.
    pub const SHORT_ID: &str = "short_member_id";

    /// Set (to the reset id) while the member's raft state was reset and it
    /// waits to be taken out of the voters; absent otherwise.
    pub const RAFT_RESET_PENDING: &str = "raft_reset_pending";

    /// Every tag name above but the optional [`RAFT_RESET_PENDING`]; extra
    /// tags may not use them.
    pub const RESERVED: [&str; 7] =
        [HOST, GOSSIP_PORT, RAFT_PORT, SERVICE_PORT, GRID_PORT, RAFT_ROLE, SHORT_ID];
}

/// The largest encoded `MemberInfo` that [`MemberInfo::from_bytes`] accepts.
pub const MAX_MEMBER_INFO_BYTES: usize = 64 * 1024;

const BINCODE: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MEMBER_INFO_BYTES>,
> = bincode::config::standard().with_limit::<MAX_MEMBER_INFO_BYTES>();

/// What a member tells the cluster about itself.
///
/// ```
/// use cluster_core::{MemberId, MemberInfo, RaftRole};
/// let info = MemberInfo::new(MemberId::generate(), "10.0.0.7", 7946, 7000, 7001, 5701);
/// let tags = info.to_tags();
/// assert_eq!(tags["raft_service_port"], "7001");
/// assert_eq!(MemberInfo::from_tags(info.member_id, &tags).unwrap(), info);
/// assert_eq!(MemberInfo::from_bytes(&info.to_bytes()).unwrap(), info);
/// assert_eq!(info.grid_addr(), "10.0.0.7:5701");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's permanent id.
    pub member_id: MemberId,
    /// The host other members reach it at.
    pub host: String,
    /// Its gossip port.
    pub gossip_port: u16,
    /// Its raft RPC port.
    pub raft_port: u16,
    /// Its forwarding-service port.
    pub service_port: u16,
    /// Its data-grid port.
    pub grid_port: u16,
    /// Its short id, once assigned.
    pub short_id: Option<ShortId>,
    /// Its part in consensus.
    pub raft_role: RaftRole,
    /// Further tags of the application; names must not be in [`tag::RESERVED`].
    pub extra_tags: BTreeMap<String, String>,
}

impl MemberInfo {
    /// A member with no short id yet, as a nonvoter, with no extra tags.
    pub fn new(
        member_id: MemberId,
        host: impl Into<String>,
        gossip_port: u16,
        raft_port: u16,
        service_port: u16,
        grid_port: u16,
    ) -> Self {
        MemberInfo {
            member_id,
            host: host.into(),
            gossip_port,
            raft_port,
            service_port,
            grid_port,
            short_id: None,
            raft_role: RaftRole::Nonvoter,
            extra_tags: BTreeMap::new(),
        }
    }

    /// `host:port` of the gossip endpoint.
    pub fn gossip_addr(&self) -> String {
        join_host_port(&self.host, self.gossip_port)
    }

    /// `host:port` of the raft RPC endpoint.
    pub fn raft_addr(&self) -> String {
        join_host_port(&self.host, self.raft_port)
    }

    /// `host:port` of the forwarding service.
    pub fn service_addr(&self) -> String {
        join_host_port(&self.host, self.service_port)
    }

    /// `host:port` of the data grid.
    pub fn grid_addr(&self) -> String {
        join_host_port(&self.host, self.grid_port)
    }

    /// The membership form: the tags this member publishes in gossip. The
    /// reserved tags win over extra tags of the same name.
    pub fn to_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.extra_tags.clone();
        let mut put = |k: &str, v: String| {
            tags.insert(k.to_owned(), v);
        };
        put(tag::HOST, self.host.clone());
        put(tag::GOSSIP_PORT, self.gossip_port.to_string());
        put(tag::RAFT_PORT, self.raft_port.to_string());
        put(tag::SERVICE_PORT, self.service_port.to_string());
        put(tag::GRID_PORT, self.grid_port.to_string());
        put(tag::RAFT_ROLE, self.raft_role.to_string());
        if let Some(id) = self.short_id {
            put(tag::SHORT_ID, id.to_string());
        }
        tags
    }

    /// Reads the membership form back. Every reserved tag but
    /// `short_member_id` must be present; a missing or unparsable tag is an
    /// error that names it. Tags that are not reserved become extra tags.
    pub fn from_tags(member_id: MemberId, tags: &BTreeMap<String, String>) -> Result<Self> {
        let get = |name: &str| -> Result<&String> {
            tags.get(name).ok_or_else(|| Error::MissingTag { tag: name.to_owned() })
        };
        let port = |name: &str| -> Result<u16> {
            let value = get(name)?;
            value.parse::<u16>().map_err(|e| Error::BadTag {
                tag: name.to_owned(),
                value: value.clone(),
                reason: e.to_string(),
            })
        };
        let host = get(tag::HOST)?.clone();
        if host.is_empty() {
            return Err(Error::BadTag {
                tag: tag::HOST.to_owned(),
                value: host,
                reason: "empty host".to_owned(),
            });
        }
        let role_text = get(tag::RAFT_ROLE)?;
        let raft_role = role_text.parse::<RaftRole>().map_err(|e| Error::BadTag {
            tag: tag::RAFT_ROLE.to_owned(),
            value: role_text.clone(),
            reason: e.to_string(),
        })?;
        let short_id = match tags.get(tag::SHORT_ID) {
            None => None,
            Some(v) => Some(v.parse::<ShortId>().map_err(|e| Error::BadTag {
                tag: tag::SHORT_ID.to_owned(),
                value: v.clone(),
                reason: e.to_string(),
            })?),
        };
        Ok(MemberInfo {
            member_id,
            host,
            gossip_port: port(tag::GOSSIP_PORT)?,
            raft_port: port(tag::RAFT_PORT)?,
            service_port: port(tag::SERVICE_PORT)?,
            grid_port: port(tag::GRID_PORT)?,
            short_id,
            raft_role,
            extra_tags: tags
                .iter()
                .filter(|(k, _)| {
                    !tag::RESERVED.contains(&k.as_str()) && k.as_str() != tag::RAFT_RESET_PENDING
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The consensus form: bincode bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Encoding a plain struct into a Vec cannot fail.
        bincode::serde::encode_to_vec(self, BINCODE).unwrap_or_default()
    }

    /// Reads the consensus form back; refuses trailing bytes and anything
    /// over [`MAX_MEMBER_INFO_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MEMBER_INFO_BYTES {
            return Err(Error::FrameTooLarge { len: bytes.len(), max: MAX_MEMBER_INFO_BYTES });
        }
        let (info, read) = bincode::serde::decode_from_slice::<MemberInfo, _>(bytes, BINCODE)
            .map_err(|e| Error::Malformed(format!("member info: {e}")))?;
        if read != bytes.len() {
            return Err(Error::Malformed(format!("member info: {} trailing bytes", bytes.len() - read)));
        }
        Ok(info)
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> MemberInfo {
        let mut info = MemberInfo::new(MemberId::generate(), "127.0.0.1", 1, 2, 3, 4);
        info.short_id = Some(ShortId::new(5).unwrap());
        info.raft_role = RaftRole::Voter;
        info.extra_tags.insert("zone".into(), "a".into());
        info
    }

    #[test]
    fn every_missing_tag_is_named() {
        let info = sample();
        for name in tag::RESERVED.iter().filter(|n| **n != tag::SHORT_ID) {
            let mut tags = info.to_tags();
            tags.remove(*name);
            let err = MemberInfo::from_tags(info.member_id, &tags).unwrap_err();
            assert_eq!(err, Error::MissingTag { tag: (*name).to_owned() });
            assert!(err.to_string().contains(name));
        }
    }

    #[test]
    fn short_id_tag_is_optional() {
        let mut info = sample();
        info.short_id = None;
        let tags = info.to_tags();
        assert!(!tags.contains_key(tag::SHORT_ID));
        assert_eq!(MemberInfo::from_tags(info.member_id, &tags).unwrap(), info);
    }

    #[test]
    fn every_bad_value_is_named() {
        let info = sample();
        let cases = [
            (tag::GOSSIP_PORT, "70000"),
            (tag::RAFT_PORT, "-1"),
            (tag::SERVICE_PORT, "x"),
            (tag::GRID_PORT, ""),
            (tag::RAFT_ROLE, "king"),
            (tag::SHORT_ID, "0"),
            (tag::HOST, ""),
        ];
        for (name, value) in cases {
            let mut tags = info.to_tags();
            tags.insert(name.to_owned(), value.to_owned());
            match MemberInfo::from_tags(info.member_id, &tags) {
                Err(Error::BadTag { tag, value: v, .. }) => {
                    assert_eq!((tag.as_str(), v.as_str()), (name, value));
                }
                other => panic!("{name}={value:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn reserved_tags_win_over_extras() {
        let mut info = sample();
        info.extra_tags.insert(tag::HOST.into(), "evil".into());
        assert_eq!(info.to_tags()[tag::HOST], "127.0.0.1");
    }

    #[test]
    fn bytes_refuse_garbage_and_trailing_data() {
        let info = sample();
        let mut bytes = info.to_bytes();
        bytes.push(0);
        assert!(matches!(MemberInfo::from_bytes(&bytes), Err(Error::Malformed(_))));
        assert!(matches!(MemberInfo::from_bytes(&[0xff; 3]), Err(Error::Malformed(_))));
        assert!(matches!(
            MemberInfo::from_bytes(&vec![0; MAX_MEMBER_INFO_BYTES + 1]),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn addresses_bracket_ipv6() {
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("[::1]", 80), "[::1]:80");
        assert_eq!(join_host_port("node-a", 80), "node-a:80");
    }

    fn arb_info() -> impl Strategy<Value = MemberInfo> {
        (
            any::<u128>(),
            "[a-z0-9.-]{1,20}",
            any::<[u16; 4]>(),
            proptest::option::of(1u32..),
            proptest::sample::select(RaftRole::ALL.to_vec()),
            proptest::collection::btree_map("x_[a-z_]{0,10}", ".{0,20}", 0..4),
        )
            .prop_map(|(id, host, ports, short, role, extra)| MemberInfo {
                member_id: MemberId::from_ulid(ulid::Ulid(id)),
                host,
                gossip_port: ports[0],
                raft_port: ports[1],
                service_port: ports[2],
                grid_port: ports[3],
                short_id: short.map(|n| ShortId::new(n).unwrap()),
                raft_role: role,
                extra_tags: extra,
            })
    }

    proptest! {
        #[test]
        fn both_forms_roundtrip(info in arb_info()) {
            prop_assert_eq!(&MemberInfo::from_tags(info.member_id, &info.to_tags()).unwrap(), &info);
            prop_assert_eq!(&MemberInfo::from_bytes(&info.to_bytes()).unwrap(), &info);
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MemberInfo::from_bytes(&bytes);
        }
    }
}
