//! [`RaftRole`]: what part a member plays in consensus.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The part a member plays in consensus, as published in its `raft_role` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    /// The voter that currently leads.
    Leader,
    /// A voting member that does not lead.
    Voter,
    /// A member that replicates the log but does not vote (an openraft learner),
    /// or that is not yet part of raft.
    Nonvoter,
    /// A member outside the bounded replica set: no raft log, no vote; it
    /// reaches the store through the replicas (see `replicas` in the
    /// facade's configuration).
    Client,
}

impl RaftRole {
    /// Every role, in a fixed order.
    pub const ALL: [RaftRole; 4] = [RaftRole::Leader, RaftRole::Voter, RaftRole::Nonvoter, RaftRole::Client];

    /// The tag value: `leader`, `voter`, `nonvoter` or `client`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Voter => "voter",
            RaftRole::Nonvoter => "nonvoter",
            RaftRole::Client => "client",
        }
    }

    /// True for the leader and the other voters.
    pub const fn votes(self) -> bool {
        matches!(self, RaftRole::Leader | RaftRole::Voter)
    }

    /// True for the members of the replica set: every role but `client`.
    pub const fn replicates(self) -> bool {
        !matches!(self, RaftRole::Client)
    }
}

impl fmt::Display for RaftRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RaftRole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        RaftRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::InvalidRole { input: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip_and_errors() {
        for role in RaftRole::ALL {
            assert_eq!(role.as_str().parse::<RaftRole>().unwrap(), role);
        }
        assert!(matches!("Leader".parse::<RaftRole>(), Err(Error::InvalidRole { .. })));
        assert!(RaftRole::Leader.votes() && RaftRole::Voter.votes() && !RaftRole::Nonvoter.votes());
        assert!(
            !RaftRole::Client.votes() && !RaftRole::Client.replicates() && RaftRole::Nonvoter.replicates()
        );
    }
}
