//! What the examples share: settings that make a loopback demo finish in
//! seconds.

use std::time::Duration;

use cluster_core::FailureDetection;
use cluster_gossip::GossipConfig;

/// Gossip every 100 ms, the failure detector tuned to it (the defaults suit
/// a network, where a second between rounds is cheap and a demo is slow).
pub(crate) fn quick_config() -> GossipConfig {
    GossipConfig::default()
        .with_cluster_id("example")
        .with_gossip_interval(Duration::from_millis(100))
        .with_failure_detection(FailureDetection {
            initial_interval: Duration::from_millis(100),
            ..FailureDetection::default()
        })
}
