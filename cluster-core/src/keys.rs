//! The consensus key layout: where the cluster keeps its own records in the
//! key-value store. Keys read like paths but are flat strings; everything
//! under [`RESERVED_PREFIX`] belongs to the cluster, the rest to users.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::id::MemberId;
use crate::member::MemberInfo;

/// Every key the cluster writes starts with this.
pub const RESERVED_PREFIX: &str = "carbon-grid/";
/// `carbon-grid/members/<member id>` → bincode [`MemberInfo`](crate::MemberInfo).
pub const MEMBERS_PREFIX: &str = "carbon-grid/members/";
/// The key whose value is the member id of the leader.
pub const LEADER_KEY: &str = "carbon-grid/consensus_leader/";
/// `carbon-grid/consensus_voters/<member id>` → empty value.
pub const VOTERS_PREFIX: &str = "carbon-grid/consensus_voters/";
/// `carbon-grid/consensus_nonvoters/<member id>` → empty value.
pub const NONVOTERS_PREFIX: &str = "carbon-grid/consensus_nonvoters/";

/// `carbon-grid/raft_reset/<member id>` → the reset id of a member whose raft
/// state was reset, written by the leader once that member is out of the
/// voters: the member may vote again once it has applied it (see
/// `cluster-consensus`'s `recovery` module).
pub const RAFT_RESET_PREFIX: &str = "carbon-grid/raft_reset/";

/// The key of a member's [`MemberInfo`](crate::MemberInfo).
pub fn member_key(id: MemberId) -> String {
    format!("{MEMBERS_PREFIX}{id}")
}

/// The key that marks a member as a voter.
pub fn voter_key(id: MemberId) -> String {
    format!("{VOTERS_PREFIX}{id}")
}

/// The key that marks a member as a nonvoter.
pub fn nonvoter_key(id: MemberId) -> String {
    format!("{NONVOTERS_PREFIX}{id}")
}

/// The key that tells a reset member it is out of the voters.
pub fn raft_reset_key(id: MemberId) -> String {
    format!("{RAFT_RESET_PREFIX}{id}")
}

/// The member id in a raft reset key.
pub fn parse_raft_reset_key(key: &str) -> Result<MemberId> {
    parse_under(key, RAFT_RESET_PREFIX, "a raft reset key")
}

/// True for keys that belong to the cluster, not to users.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The member id in a key `<prefix><member id>`.
fn parse_under(key: &str, prefix: &str, what: &str) -> Result<MemberId> {
    let bad = || Error::BadKey { key: key.to_owned(), expected: what.to_owned() };
    key.strip_prefix(prefix).ok_or_else(bad)?.parse().map_err(|_| bad())
}

/// The member id in a member key.
///
/// ```
/// use cluster_core::{keys, MemberId};
/// let id = MemberId::generate();
/// assert_eq!(keys::parse_member_key(&keys::member_key(id)).unwrap(), id);
/// assert!(keys::parse_member_key("carbon-grid/members/nope").is_err());
/// ```
pub fn parse_member_key(key: &str) -> Result<MemberId> {
    parse_under(key, MEMBERS_PREFIX, "a member key")
}

/// The member record stored at `key`: the key is a member key, the bytes
/// decode, and the record names the member its key names. A record filed
/// under another member's id is not that member's (the leader's
/// housekeeping rewrites it).
///
/// ```
/// use cluster_core::{keys, MemberId, MemberInfo};
/// let info = MemberInfo::new(MemberId::generate(), "10.0.0.7", 7946, 7000, 7001, 5701);
/// let key = keys::member_key(info.member_id);
/// assert_eq!(keys::decode_member_record(&key, &info.to_bytes()).unwrap(), info);
/// let elsewhere = keys::member_key(MemberId::generate());
/// assert!(keys::decode_member_record(&elsewhere, &info.to_bytes()).is_err());
/// ```
pub fn decode_member_record(key: &str, bytes: &[u8]) -> Result<MemberInfo> {
    let id = parse_member_key(key)?;
    let info = MemberInfo::from_bytes(bytes)?;
    if info.member_id != id {
        return Err(Error::Malformed(format!(
            "the record of member {} is filed under {key}",
            info.member_id
        )));
    }
    Ok(info)
}

/// The member records of a read of [`MEMBERS_PREFIX`], decoded by
/// [`decode_member_record`]: the one policy of every reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberRecords {
    /// The records, by member id.
    pub members: BTreeMap<MemberId, MemberInfo>,
    /// Entries that are not records, with why: skipped, so that one bad
    /// entry never hides the others; worth a warning.
    pub rejected: Vec<(String, Error)>,
}

impl MemberRecords {
    /// Decodes every entry of a read of [`MEMBERS_PREFIX`].
    pub fn decode(entries: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        let mut out = MemberRecords::default();
        for (key, bytes) in entries {
            match decode_member_record(&key, &bytes) {
                Ok(info) => {
                    out.members.insert(info.member_id, info);
                }
                Err(e) => out.rejected.push((key, e)),
            }
        }
        out
    }
}

/// The member id in a voter key.
pub fn parse_voter_key(key: &str) -> Result<MemberId> {
    parse_under(key, VOTERS_PREFIX, "a voter key")
}

/// The member id in a nonvoter key.
pub fn parse_nonvoter_key(key: &str) -> Result<MemberId> {
    parse_under(key, NONVOTERS_PREFIX, "a nonvoter key")
}

/// What a key of the store is, by the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A member's metadata.
    Member(MemberId),
    /// A voter marker.
    Voter(MemberId),
    /// A nonvoter marker.
    Nonvoter(MemberId),
    /// The leader record.
    Leader,
    /// The note that a reset member is out of the voters.
    RaftReset(MemberId),
    /// A user key (not reserved).
    User,
}

/// Classifies a key; a reserved key of no known form is an error.
pub fn classify(key: &str) -> Result<KeyKind> {
    if !is_reserved(key) {
        return Ok(KeyKind::User);
    }
    if key == LEADER_KEY {
        return Ok(KeyKind::Leader);
    }
    if key.starts_with(MEMBERS_PREFIX) {
        return parse_member_key(key).map(KeyKind::Member);
    }
    if key.starts_with(VOTERS_PREFIX) {
        return parse_voter_key(key).map(KeyKind::Voter);
    }
    if key.starts_with(NONVOTERS_PREFIX) {
        return parse_nonvoter_key(key).map(KeyKind::Nonvoter);
    }
    if key.starts_with(RAFT_RESET_PREFIX) {
        return parse_raft_reset_key(key).map(KeyKind::RaftReset);
    }
    Err(Error::BadKey { key: key.to_owned(), expected: "a key of the cluster's layout".to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_helper_roundtrips_and_classifies() {
        let id = MemberId::generate();
        assert_eq!(classify(&member_key(id)).unwrap(), KeyKind::Member(id));
        assert_eq!(classify(&voter_key(id)).unwrap(), KeyKind::Voter(id));
        assert_eq!(classify(&nonvoter_key(id)).unwrap(), KeyKind::Nonvoter(id));
        assert_eq!(classify(LEADER_KEY).unwrap(), KeyKind::Leader);
        assert_eq!(classify(&raft_reset_key(id)).unwrap(), KeyKind::RaftReset(id));
        assert_eq!(classify("users/x").unwrap(), KeyKind::User);
        assert_eq!(parse_voter_key(&voter_key(id)).unwrap(), id);
        assert_eq!(parse_nonvoter_key(&nonvoter_key(id)).unwrap(), id);
        for key in [member_key(id), voter_key(id), nonvoter_key(id), LEADER_KEY.to_owned()] {
            assert!(is_reserved(&key), "{key}");
        }
    }

    #[test]
    fn wrong_forms_are_errors() {
        let id = MemberId::generate();
        // The right id under the wrong prefix.
        assert!(matches!(parse_member_key(&voter_key(id)), Err(Error::BadKey { .. })));
        assert!(matches!(parse_voter_key(&nonvoter_key(id)), Err(Error::BadKey { .. })));
        assert!(matches!(parse_nonvoter_key(&member_key(id)), Err(Error::BadKey { .. })));
        // Trailing garbage, empty id, unknown reserved key.
        assert!(parse_member_key(&format!("{}/x", member_key(id))).is_err());
        assert!(parse_member_key(MEMBERS_PREFIX).is_err());
        assert!(matches!(classify("carbon-grid/other"), Err(Error::BadKey { .. })));
        assert!(matches!(classify("carbon-grid/members/zzz"), Err(Error::BadKey { .. })));
    }

    #[test]
    fn member_records_skip_what_is_not_a_record_and_say_why() {
        let good = MemberInfo::new(MemberId::generate(), "10.0.0.1", 1, 2, 3, 4);
        let misfiled = MemberInfo::new(MemberId::generate(), "10.0.0.2", 1, 2, 3, 4);
        let records = MemberRecords::decode([
            (member_key(good.member_id), good.to_bytes()),
            (member_key(MemberId::generate()), misfiled.to_bytes()),
            (member_key(MemberId::generate()), vec![0xff; 3]),
            (format!("{MEMBERS_PREFIX}not-an-id"), good.to_bytes()),
        ]);
        assert_eq!(records.members, BTreeMap::from([(good.member_id, good)]));
        assert_eq!(records.rejected.len(), 3);
        assert!(matches!(records.rejected[0].1, Error::Malformed(_)));
        assert!(matches!(records.rejected[2].1, Error::BadKey { .. }));
    }

    proptest! {
        #[test]
        fn classify_never_panics(key in ".{0,60}") {
            let _ = classify(&key);
        }
    }
}
