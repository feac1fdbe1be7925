//! The chitchat keys this crate keeps for itself, next to the user's tags.
//!
//! Every key starting with [`RESERVED_PREFIX`] is bookkeeping: it is never shown
//! in [`Member::tags`](cluster_core::Member::tags) and users cannot set it.

use cluster_core::MemberId;

/// Tag names starting with this prefix are reserved for cluster-gossip.
pub const RESERVED_PREFIX: &str = "__cgc.";

/// Set by a member that leaves gracefully: peers then report it `Left`, not `Failed`.
pub(crate) const LEAVING_KEY: &str = "__cgc.leaving";

/// Whether a tag name belongs to this crate.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
}

/// The key a member sets on itself to acknowledge that it saw `leaver` leave;
/// its value is the leaver's generation. The leaver waits for these acks.
pub(crate) fn ack_key(leaver: MemberId) -> String {
    format!("{RESERVED_PREFIX}ack.{leaver}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_keys_are_reserved() {
        assert!(is_reserved(LEAVING_KEY));
        assert!(is_reserved(&ack_key(MemberId::generate())));
        assert!(!is_reserved("host"));
        assert!(!is_reserved("cgc.leaving"));
    }
}
