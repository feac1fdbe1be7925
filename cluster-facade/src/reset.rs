//! `reset_raft_state`: the operator's way out when a member's raft state is
//! corrupt. It keeps the member id and moves the raft state aside; the
//! member then rejoins as a nonvoter without voting until the leader has
//! taken it out of the voters. Why that is safe: `cluster_consensus::recovery`.

use std::time::SystemTime;

pub use cluster_consensus::recovery::ResetReport;

use crate::cluster::RAFT_DIR;
use crate::config::ClusterConfig;
use crate::error::ClusterError;

/// Resets the raft state of the member configured by `config` (which must
/// have a data directory): the directory `<data_dir>/raft` is renamed to
/// `<data_dir>/raft.reset-<UTC time>`, an empty one with a pending reset
/// takes its place, and the member id file is left alone. Start the member
/// afterwards, with seeds: it catches up from the leader.
pub fn reset_raft_state(config: &ClusterConfig) -> Result<ResetReport, ClusterError> {
    let Some(data_dir) = config.data_dir.as_deref() else {
        return Err(ClusterError::DataDir {
            path: String::new(),
            reason: "no data directory: an in-memory member has no raft state to reset".to_owned(),
        });
    };
    let raft_dir = data_dir.join(RAFT_DIR);
    cluster_consensus::recovery::reset_raft_state(&raft_dir, SystemTime::now())
        .map_err(|e| ClusterError::DataDir { path: data_dir.display().to_string(), reason: e.to_string() })
}
