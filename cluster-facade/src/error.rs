//! [`ClusterError`]: what can go wrong starting, running and stopping a member.

use std::time::Duration;

use crate::config::ConfigErrors;

/// An error of the facade. Store operations fail with [`cluster_core::Error`]
/// (wrapped in [`ClusterError::Store`] where the two meet).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is invalid; every problem is named. Nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The data directory cannot be used.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The data directory holds the state of another cluster: the member
    /// would never be let in. Start it with that cluster's id, or give it
    /// another data directory.
    #[error(
        "data directory {path} belongs to cluster \"{recorded}\", not \"{configured}\": start with that cluster id, or use another data directory"
    )]
    OtherCluster {
        /// The directory.
        path: String,
        /// The cluster id kept in it.
        recorded: String,
        /// The cluster id this member was started with.
        configured: String,
    },
    /// The member's certificate names another member id than its data
    /// directory holds: the certificate is another member's, or the data
    /// directory is. Nothing was started.
    #[error(
        "data directory {data_dir} holds member id {held} but the member certificate names member id {named}: \
         use this member's own certificate, or an empty data directory to start as {named}"
    )]
    IdentityMismatch {
        /// The data directory.
        data_dir: String,
        /// The member id the data directory holds.
        held: cluster_core::MemberId,
        /// The member id the certificate names.
        named: cluster_core::MemberId,
    },
    /// A step of the startup choreography failed; what was started is stopped again.
    #[error("starting {stage} failed: {source}")]
    Start {
        /// `consensus`, `membership`, `service`, …
        stage: &'static str,
        /// Why.
        #[source]
        source: cluster_core::Error,
    },
    /// The member did not receive its short id in time (no leader reachable,
    /// seeds wrong, another cluster id, …). What was started is stopped again.
    #[error("no short id after {waited:?}: {detail}")]
    StartTimeout {
        /// How long it waited.
        waited: Duration,
        /// What it was waiting for when time ran out.
        detail: String,
    },
    /// A store or membership operation failed.
    #[error(transparent)]
    Store(#[from] cluster_core::Error),
}

impl ClusterError {
    /// What the caller can do about it: a store error's own
    /// [`ErrorKind`](cluster_core::ErrorKind); a bad configuration is
    /// `Invalid` (so is a data directory of another cluster), an unusable data directory `Storage`, a start that found no
    /// leader in time `Unavailable`.
    pub fn kind(&self) -> cluster_core::ErrorKind {
        use cluster_core::ErrorKind;
        match self {
            ClusterError::Config(_) | ClusterError::OtherCluster { .. } => ErrorKind::Invalid,
            ClusterError::DataDir { .. } => ErrorKind::Storage,
            ClusterError::IdentityMismatch { .. } => ErrorKind::Invalid,
            ClusterError::Start { source, .. } | ClusterError::Store(source) => source.kind(),
            ClusterError::StartTimeout { .. } => ErrorKind::Unavailable,
        }
    }
}
