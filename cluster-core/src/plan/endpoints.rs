//! Endpoint updates: a member of raft that gossip shows at other addresses
//! than raft knows (it restarted on other ports) must be reached at the new
//! ones, or the leader replicates into the void.

use std::collections::BTreeMap;

use crate::id::MemberId;
use crate::member::MemberInfo;
use crate::store::Endpoints;

/// The members whose raft endpoints differ from what their live gossip tags
/// say, with the endpoints to set. `raft` holds every member of raft (voters
/// and nonvoters) with the endpoints raft knows.
pub fn plan_endpoint_updates(
    live: &[MemberInfo],
    raft: &BTreeMap<MemberId, Endpoints>,
) -> Vec<(MemberId, Endpoints)> {
    live.iter()
        .filter_map(|m| {
            let known = raft.get(&m.member_id)?;
            let now = Endpoints { raft_addr: m.raft_addr(), service_addr: m.service_addr() };
            (*known != now).then_some((m.member_id, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_members_of_raft_at_new_addresses_are_updated() {
        let moved = MemberInfo::new(MemberId::from(1), "127.0.0.1", 1, 2000, 3000, 4);
        let same = MemberInfo::new(MemberId::from(2), "127.0.0.1", 1, 2001, 3001, 4);
        let not_in_raft = MemberInfo::new(MemberId::from(3), "127.0.0.1", 1, 2002, 3002, 4);
        let ep = |r: &str, s: &str| Endpoints { raft_addr: r.into(), service_addr: s.into() };
        let raft = BTreeMap::from([
            (moved.member_id, ep("127.0.0.1:1999", "127.0.0.1:3000")),
            (same.member_id, ep("127.0.0.1:2001", "127.0.0.1:3001")),
        ]);
        let plan = plan_endpoint_updates(&[moved.clone(), same, not_in_raft], &raft);
        assert_eq!(plan, vec![(moved.member_id, ep("127.0.0.1:2000", "127.0.0.1:3000"))]);
    }
}
