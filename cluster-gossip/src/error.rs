//! The one error type of this crate, and its conversion into
//! [`cluster_core::Error`] for callers that use the [`Membership`](cluster_core::Membership) trait.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Result alias with [`GossipError`].
pub type Result<T, E = GossipError> = std::result::Result<T, E>;

/// What can go wrong with a gossip member. Variants are what a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// The configuration has problems; each names its field. Fix the configuration.
    #[error("invalid gossip configuration: {}", .problems.join("; "))]
    InvalidConfig {
        /// Every problem found, each starting with the field's name.
        problems: Vec<String>,
    },
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen for gossip on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's class of the failure (`AddrInUse`, …).
        kind: std::io::ErrorKind,
        /// Why it failed.
        reason: String,
    },
    /// A tag name in the namespace this crate reserves for its own bookkeeping.
    #[error("tag {name:?} is reserved: names starting with {prefix:?} belong to cluster-gossip")]
    ReservedTag {
        /// The tag name.
        name: String,
        /// The reserved prefix.
        prefix: &'static str,
    },
    /// A gossip key that is not 32 bytes of standard base64. The message never
    /// repeats the key.
    #[error(
        "invalid gossip key: {reason} (expected 32 random bytes in standard base64, e.g. from `carbon keys generate`)"
    )]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A keyring operation names a key the keyring does not hold.
    #[error("gossip key {key_id} is not in the keyring; install it first")]
    KeyNotInstalled {
        /// The key's id (not the key).
        key_id: String,
    },
    /// The primary key cannot be removed: make another key primary first.
    #[error("gossip key {key_id} is the primary key; `use` another key before removing it")]
    RemovePrimary {
        /// The key's id (not the key).
        key_id: String,
    },
    /// The keyring file could not be read, parsed or written.
    #[error("keyring file {}: {reason}", path.display())]
    KeyringFile {
        /// The file.
        path: PathBuf,
        /// Why (the io error, or what is wrong with its content).
        reason: String,
    },
    /// The member was stopped or left; start a new one.
    #[error("the gossip member is stopped")]
    Stopped,
    /// chitchat failed in a way this crate did not expect.
    #[error("gossip failure: {0}")]
    Internal(String),
}

impl GossipError {
    /// What the caller can do about it (the class of the
    /// [`cluster_core::Error`] it converts into): a bad configuration, tag or
    /// key is `Invalid`, a bind or keyring-file failure and a stopped member
    /// `Unavailable`.
    pub fn kind(&self) -> cluster_core::ErrorKind {
        cluster_core::Error::from(self.clone()).kind()
    }
}

impl From<GossipError> for cluster_core::Error {
    fn from(e: GossipError) -> Self {
        match e {
            GossipError::InvalidConfig { .. }
            | GossipError::ReservedTag { .. }
            | GossipError::InvalidKey { .. }
            | GossipError::KeyNotInstalled { .. }
            | GossipError::RemovePrimary { .. } => cluster_core::Error::BadRequest(e.to_string()),
            GossipError::Bind { kind, .. } => {
                cluster_core::Error::Io { kind: kind.into(), detail: e.to_string() }
            }
            GossipError::KeyringFile { .. } => {
                cluster_core::Error::Io { kind: cluster_core::IoKind::Other, detail: e.to_string() }
            }
            GossipError::Stopped => cluster_core::Error::ShuttingDown,
            GossipError::Internal(m) => cluster_core::Error::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster_core::ErrorKind;

    #[test]
    fn kinds_follow_the_core_error() {
        let bind = GossipError::Bind {
            addr: ([127, 0, 0, 1], 7946).into(),
            kind: std::io::ErrorKind::AddrInUse,
            reason: "address in use".into(),
        };
        assert_eq!(bind.kind(), ErrorKind::Unavailable);
        assert_eq!(cluster_core::Error::from(bind).io_kind(), Some(std::io::ErrorKind::AddrInUse));
        assert_eq!(GossipError::InvalidKey { reason: "short".into() }.kind(), ErrorKind::Invalid);
        assert_eq!(GossipError::Stopped.kind(), ErrorKind::Unavailable);
    }
}
