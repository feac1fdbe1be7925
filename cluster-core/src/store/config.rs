//! What a consensus backend is opened with: timing, quotas and addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::MemberId;

/// Raft timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftTiming {
    /// The leader's heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Followers start an election after a random time in
    /// `[election_timeout_min, election_timeout_max)` without a leader.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    pub election_timeout_max: Duration,
    /// A snapshot is taken after this many log entries since the last.
    pub snapshot_after_entries: u64,
    /// Log entries kept before the last snapshot (for slow followers).
    pub keep_entries_after_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_after_entries: 5000,
            keep_entries_after_snapshot: 1000,
        }
    }
}

/// The store's quotas and input bounds, like etcd's `--max-request-bytes`
/// and `--quota-backend-bytes`.
///
/// A write past one fails with [`Error::QuotaExceeded`]; reads and deletes
/// always work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusLimits {
    /// The longest key, in bytes. Default 4 KiB: keys read like paths
    /// (the cluster's own are under 100 bytes, Kubernetes' etcd keys under
    /// 600); a key is copied into every watch event, snapshot and index, so
    /// it stays small, with room for deep user hierarchies.
    pub max_key_bytes: usize,
    /// The longest value, in bytes. Default 1.5 MiB, etcd's request limit.
    pub max_value_bytes: usize,
    /// The most bytes of keys and values in the store. Default 2 GiB,
    /// etcd's default backend quota.
    pub max_store_bytes: u64,
    /// The largest snapshot this member receives from a leader. Default
    /// 4 GiB: twice the store quota, to cover the snapshot's own overhead
    /// (the answers it remembers, lengths, membership).
    pub max_snapshot_bytes: u64,
}

impl ConsensusLimits {
    /// The highest `max_key_bytes` or `max_value_bytes` accepted: the same
    /// bound is applied to every log entry, so it must not depend on one
    /// member's configuration (see the consensus crate's state machine).
    pub const MAX_ENTRY_FIELD_BYTES: usize = 64 * 1024 * 1024;

    /// Every problem with these limits, with the field's name.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let max = Self::MAX_ENTRY_FIELD_BYTES;
        if self.max_key_bytes == 0 || self.max_key_bytes > max {
            out.push(("max_key_bytes", format!("must be between 1 and {max}")));
        }
        if self.max_value_bytes > max {
            out.push(("max_value_bytes", format!("must be at most {max}")));
        }
        if self.max_snapshot_bytes < self.max_store_bytes {
            out.push(("max_snapshot_bytes", "must be at least max_store_bytes".to_owned()));
        }
        out
    }
}

impl Default for ConsensusLimits {
    fn default() -> Self {
        ConsensusLimits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1536 * 1024,
            max_store_bytes: 2 << 30,
            max_snapshot_bytes: 4 << 30,
        }
    }
}

/// What a consensus backend needs to open.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusConfig {
    /// This member's id (the raft node id).
    pub member_id: MemberId,
    /// Frames from other clusters are refused.
    pub cluster_id: String,
    /// Where raft RPC listens; port 0 picks a free one.
    pub raft_listen_addr: SocketAddr,
    /// The host others reach this member at (the raft port is the bound one).
    pub advertise_host: String,
    /// The forwarding-service address others reach this member at.
    pub service_addr: String,
    /// Durable storage here; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Raft timing.
    pub timing: RaftTiming,
    /// The largest frame sent or accepted on the raft port.
    pub max_frame_len: usize,
    /// How long an RPC may take before the peer counts as unreachable.
    pub rpc_timeout: Duration,
    /// Quotas and input bounds.
    pub limits: ConsensusLimits,
}
