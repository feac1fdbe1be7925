//! Admission: what a gossip member must show before the leader makes it a
//! raft member, gives it a short id or records it. Nothing from gossip is
//! trusted: an encrypted gossip keeps outsiders out, but a member's tags are
//! still only what it claims. With TLS the facade's housekeeping also asks
//! the member's raft endpoint to prove a member certificate of the cluster's
//! CA (`cluster_rpc::Security::prove_member`) before it admits it.
//!
//! Two members never share an address ([`refuse_duplicate_addresses`]): a
//! member that advertises another live member's raft or service address
//! would make raft reach that other member twice, under two member ids, and
//! count it twice in every quorum — whether an attacker holding only the
//! gossip key made it up, or a copied configuration did.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::error::Error;
use crate::id::{MemberId, ShortId};
use crate::member::{MAX_MEMBER_INFO_BYTES, MemberInfo, tag};
use crate::membership::Member;
use crate::store::Endpoints;

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
    /// Another member already holds the raft or service address this member
    /// advertises (see [`refuse_duplicate_addresses`]).
    #[error("its address {addr} is already advertised by member {holder}")]
    DuplicateAddress {
        /// The address both advertise (`host:port`).
        addr: String,
        /// The member that keeps it.
        holder: MemberId,
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

/// What the leader knows when it decides who keeps an address.
#[derive(Debug, Clone, Copy)]
pub struct AddressFacts<'a> {
    /// The leader (the member planning): it always keeps its own addresses.
    pub leader: MemberId,
    /// The live gossip members whose tags pass [`admit`], as their tags describe them.
    pub candidates: &'a [MemberInfo],
    /// Every member of raft (voters and nonvoters), where raft reaches it.
    pub raft: &'a BTreeMap<MemberId, Endpoints>,
    /// The short ids the state machine holds.
    pub short_ids: &'a BTreeMap<MemberId, ShortId>,
}

/// How firmly a member holds the addresses it advertises; the lower the
/// firmer. Whoever the cluster admitted first keeps an address, so a
/// newcomer can never take one from a member and a stable answer comes out
/// round after round (no flapping between two claimants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// The leader itself.
    Leader,
    /// Live, and raft reaches it at exactly the addresses it advertises.
    InRaftHere,
    /// Live and admitted before (in raft elsewhere, or holding a short id):
    /// a member that moved.
    Admitted,
    /// In raft but not live in gossip: raft still sends its traffic to
    /// these addresses until the member is removed, so nobody else may
    /// answer there meanwhile.
    Departed,
    /// Never admitted.
    Newcomer,
}

/// An address as compared: the socket address when it parses (so that two
/// spellings of one IP address are one address), else the text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AddrKey {
    Socket(SocketAddr),
    Text(String),
}

impl AddrKey {
    fn of(addr: &str) -> AddrKey {
        addr.parse().map(AddrKey::Socket).unwrap_or_else(|_| AddrKey::Text(addr.to_owned()))
    }
}

/// The candidates that may not be admitted because another member already
/// holds the raft or service address they advertise (a raft address and a
/// service address count as the same address: either way two member ids
/// would lead to one process).
///
/// Who keeps a contested address, in this order: the leader; a live member
/// raft reaches there; a live member admitted before (in raft, or holding a
/// short id); a member of raft not live in gossip (until it is removed);
/// then newcomers. Among equals, the older member id (ULIDs sort by the
/// time they were made). A refused candidate holds no address, so it blocks
/// nobody else.
pub fn refuse_duplicate_addresses(f: &AddressFacts<'_>) -> BTreeMap<MemberId, Refusal> {
    let live: BTreeMap<MemberId, &MemberInfo> = f.candidates.iter().map(|m| (m.member_id, m)).collect();
    let mut claims: Vec<(Standing, MemberId, [String; 2])> = Vec::new();
    for (id, m) in &live {
        let advertised = Endpoints { raft_addr: m.raft_addr(), service_addr: m.service_addr() };
        let standing = if *id == f.leader {
            Standing::Leader
        } else if f.raft.get(id) == Some(&advertised) {
            Standing::InRaftHere
        } else if f.raft.contains_key(id) || f.short_ids.contains_key(id) {
            Standing::Admitted
        } else {
            Standing::Newcomer
        };
        claims.push((standing, *id, [advertised.raft_addr, advertised.service_addr]));
    }
    for (id, e) in f.raft.iter().filter(|(id, _)| !live.contains_key(id) && **id != f.leader) {
        claims.push((Standing::Departed, *id, [e.raft_addr.clone(), e.service_addr.clone()]));
    }
    claims.sort();

    let mut held: HashMap<AddrKey, MemberId> = HashMap::new();
    let mut refused = BTreeMap::new();
    for (standing, id, addrs) in claims {
        let taken = addrs.iter().find_map(|a| held.get(&AddrKey::of(a)).map(|holder| (a, *holder)));
        match taken {
            Some((addr, holder)) => {
                // A departed member of raft is no candidate: nothing to refuse.
                if standing != Standing::Departed {
                    refused.insert(id, Refusal::DuplicateAddress { addr: addr.clone(), holder });
                }
            }
            None => {
                for a in &addrs {
                    held.insert(AddrKey::of(a), id);
                }
            }
        }
    }
    refused
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

    /// A live member at `host:raft`, service port `raft + 1`.
    fn at(id: u64, host: &str, raft: u16) -> MemberInfo {
        MemberInfo::new(MemberId::from(id), host, 1, raft, raft + 1, 9)
    }

    fn endpoints(m: &MemberInfo) -> Endpoints {
        Endpoints { raft_addr: m.raft_addr(), service_addr: m.service_addr() }
    }

    fn plan(
        leader: u64,
        candidates: &[MemberInfo],
        raft: &[(u64, Endpoints)],
        short_ids: &[u64],
    ) -> BTreeMap<MemberId, Refusal> {
        let raft: BTreeMap<MemberId, Endpoints> =
            raft.iter().map(|(id, e)| (MemberId::from(*id), e.clone())).collect();
        let short_ids: BTreeMap<MemberId, ShortId> = short_ids
            .iter()
            .enumerate()
            .map(|(n, id)| (MemberId::from(*id), ShortId::new(n as u32 + 1).expect("positive")))
            .collect();
        refuse_duplicate_addresses(&AddressFacts {
            leader: MemberId::from(leader),
            candidates,
            raft: &raft,
            short_ids: &short_ids,
        })
    }

    fn refusal(holder: u64, addr: &str) -> Refusal {
        Refusal::DuplicateAddress { addr: addr.to_owned(), holder: MemberId::from(holder) }
    }

    #[test]
    fn members_at_distinct_addresses_are_all_admitted() {
        let (m1, m2, m3) = (at(1, "127.0.0.1", 7001), at(2, "127.0.0.1", 7011), at(3, "127.0.0.2", 7001));
        let raft = [(1, endpoints(&m1)), (2, endpoints(&m2))];
        assert!(plan(1, &[m1, m2, m3], &raft, &[1, 2]).is_empty());
    }

    #[test]
    fn a_phantom_with_a_voters_addresses_is_refused_whatever_its_id() {
        let (m1, m2) = (at(1, "127.0.0.1", 7001), at(2, "127.0.0.1", 7011));
        let raft = [(1, endpoints(&m1)), (2, endpoints(&m2))];
        // An older member id than m2's does not help the phantom: m2 is in raft there.
        for phantom_id in [0, 3] {
            let mut phantom = at(phantom_id, "127.0.0.1", 7011);
            let expected = BTreeMap::from([(phantom.member_id, refusal(2, "127.0.0.1:7011"))]);
            assert_eq!(plan(1, &[m1.clone(), m2.clone(), phantom.clone()], &raft, &[1, 2]), expected);
            // Only the service address in common, or its raft address on m2's service port.
            phantom.raft_port = 7500;
            assert_eq!(
                plan(1, &[m1.clone(), m2.clone(), phantom.clone()], &raft, &[1, 2]),
                BTreeMap::from([(phantom.member_id, refusal(2, "127.0.0.1:7012"))])
            );
            phantom.raft_port = 7012;
            phantom.service_port = 7600;
            assert_eq!(
                plan(1, &[m1.clone(), m2.clone(), phantom.clone()], &raft, &[1, 2]),
                BTreeMap::from([(phantom.member_id, refusal(2, "127.0.0.1:7012"))])
            );
        }
    }

    #[test]
    fn the_leader_keeps_its_addresses() {
        let leader = at(5, "127.0.0.1", 7001);
        let older = at(1, "127.0.0.1", 7001);
        assert_eq!(
            plan(5, &[leader.clone(), older], &[(5, endpoints(&leader))], &[5]),
            BTreeMap::from([(MemberId::from(1), refusal(5, "127.0.0.1:7001"))])
        );
    }

    #[test]
    fn between_two_newcomers_the_older_member_id_keeps_the_address() {
        let m1 = at(1, "127.0.0.1", 7001);
        let (a, b) = (at(20, "127.0.0.1", 7021), at(30, "127.0.0.1", 7021));
        let refused = plan(1, &[m1.clone(), b.clone(), a.clone()], &[(1, endpoints(&m1))], &[1]);
        assert_eq!(refused, BTreeMap::from([(b.member_id, refusal(20, "127.0.0.1:7021"))]));
        // Once admitted, it keeps it even against an older newcomer.
        let older = at(10, "127.0.0.1", 7021);
        let raft = [(1, endpoints(&m1)), (30, endpoints(&b))];
        assert_eq!(
            plan(1, &[m1, b, older.clone()], &raft, &[1, 30]),
            BTreeMap::from([(older.member_id, refusal(30, "127.0.0.1:7021"))])
        );
    }

    #[test]
    fn a_member_of_raft_gone_from_gossip_holds_its_addresses_until_removed() {
        let (m1, m2) = (at(1, "127.0.0.1", 7001), at(2, "127.0.0.1", 7011));
        let replacement = at(9, "127.0.0.1", 7011);
        let raft = [(1, endpoints(&m1)), (2, endpoints(&m2))];
        assert_eq!(
            plan(1, &[m1.clone(), replacement.clone()], &raft, &[1, 2]),
            BTreeMap::from([(replacement.member_id, refusal(2, "127.0.0.1:7011"))])
        );
        // Removed from raft: the address is free.
        assert!(plan(1, &[m1.clone(), replacement], &[(1, endpoints(&m1))], &[1]).is_empty());
    }

    #[test]
    fn a_member_that_moved_keeps_its_place_against_newcomers() {
        let m1 = at(1, "127.0.0.1", 7001);
        let moved = at(2, "127.0.0.1", 7031);
        let newcomer = at(0, "127.0.0.1", 7031);
        let raft = [(1, endpoints(&m1)), (2, endpoints(&at(2, "127.0.0.1", 7011)))];
        assert_eq!(
            plan(1, &[m1, moved, newcomer.clone()], &raft, &[1, 2]),
            BTreeMap::from([(newcomer.member_id, refusal(2, "127.0.0.1:7031"))])
        );
    }

    #[test]
    fn two_spellings_of_one_address_are_one_address() {
        let m1 = MemberInfo::new(MemberId::from(1), "::1", 1, 7001, 7002, 9);
        let phantom = MemberInfo::new(MemberId::from(2), "0:0:0:0:0:0:0:1", 1, 7001, 7102, 9);
        assert_eq!(
            plan(1, &[m1, phantom], &[], &[]).keys().copied().collect::<Vec<_>>(),
            [MemberId::from(2)]
        );
    }

    #[test]
    fn a_refused_member_blocks_nobody() {
        let m1 = at(1, "127.0.0.1", 7001);
        // b loses 7001 to m1; its service address 7051 stays free for c.
        let b = MemberInfo::new(MemberId::from(2), "127.0.0.1", 1, 7001, 7051, 9);
        let c = MemberInfo::new(MemberId::from(3), "127.0.0.1", 1, 7050, 7051, 9);
        let refused = plan(1, &[m1.clone(), b, c], &[(1, endpoints(&m1))], &[1]);
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), [MemberId::from(2)]);
    }
}
