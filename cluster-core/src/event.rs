//! [`GridMemberEvent`]: what the data grid hears about its members.

use serde::{Deserialize, Serialize};

use crate::id::{MemberId, ShortId};

/// Whether a member became live or departed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GridEventKind {
    /// The member is live and holds its short id.
    Joined,
    /// The member left gracefully or failed.
    Left,
}

/// A member with a short id became live or departed. Emitted on every member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GridMemberEvent {
    /// Joined or left.
    pub kind: GridEventKind,
    /// The member's short id.
    pub short_id: ShortId,
    /// `host:port` of the member's data grid.
    pub grid_addr: String,
    /// The member's permanent id.
    pub member_id: MemberId,
}
