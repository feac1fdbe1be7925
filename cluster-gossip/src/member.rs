//! A member as chitchat holds it (a node id, a generation and string keys),
//! read into the typed form the event diff works on.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chitchat::{ChitchatId, NodeState};
use cluster_core::{Member, MemberId, MemberState};
use tracing::debug;

use crate::keys::{LEAVING_KEY, is_reserved};

/// One live chitchat node, typed: its tags without bookkeeping keys, and
/// whether it announced that it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) id: MemberId,
    pub(crate) generation: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) leaving: bool,
}

impl Observed {
    /// Reads a chitchat node; `None` for a node whose id is not a member id
    /// (another program speaking chitchat with the same cluster id).
    pub(crate) fn from_node(id: &ChitchatId, state: &NodeState) -> Option<Observed> {
        let member_id = match id.node_id.parse::<MemberId>() {
            Ok(m) => m,
            Err(e) => {
                debug!(node_id = %id.node_id, error = %e, "ignoring a chitchat node that is not a member");
                return None;
            }
        };
        let tags = state
            .key_values()
            .filter(|(k, _)| !is_reserved(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Observed {
            id: member_id,
            generation: id.generation_id,
            addr: id.gossip_advertise_addr,
            tags,
            leaving: state.get(LEAVING_KEY).is_some(),
        })
    }

    /// The member as subscribers see it, in `state`.
    pub(crate) fn to_member(&self, state: MemberState) -> Member {
        Member {
            id: self.id,
            generation: self.generation,
            gossip_addr: self.addr,
            tags: self.tags.clone(),
            state,
        }
    }
}
