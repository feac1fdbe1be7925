//! Configurations for members started inside a test: loopback, ports from the
//! OS, and raft timing fast enough for tests yet free of spurious elections on
//! a loaded two-core machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::wire::DEFAULT_MAX_FRAME_LEN;
use crate::{ConsensusConfig, MemberId, RaftTiming};

/// Heartbeats every 50 ms, elections after 400–800 ms.
pub fn raft_timing() -> RaftTiming {
    RaftTiming {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(400),
        election_timeout_max: Duration::from_millis(800),
        ..RaftTiming::default()
    }
}

/// A new member of `cluster_id` on 127.0.0.1 (raft port from the OS) with
/// [`raft_timing`], in memory unless `data_dir` is given; its service address
/// is `service_addr` (what the leader tells followers to forward to).
pub fn consensus_config(cluster_id: &str, service_addr: &str, data_dir: Option<PathBuf>) -> ConsensusConfig {
    ConsensusConfig {
        member_id: MemberId::generate(),
        cluster_id: cluster_id.to_owned(),
        raft_listen_addr: ([127, 0, 0, 1], 0).into(),
        advertise_host: "127.0.0.1".to_owned(),
        service_addr: service_addr.to_owned(),
        data_dir,
        timing: raft_timing(),
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        rpc_timeout: Duration::from_secs(1),
        limits: Default::default(),
    }
}
