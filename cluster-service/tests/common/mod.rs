//! Test helpers: the kit's fake `ConsensusStore` (whose leader the test
//! switches); waits and logs come from the kit too (`cluster_core::testsuite`).
#![allow(dead_code, unreachable_pub, unused_imports)]

/// The fake store lives in the shared test kit.
pub use cluster_core::testsuite::fakes::{FakeCluster, FakeStore};
pub use cluster_core::testsuite::{init_tracing, wait_until};

pub const CLUSTER: &str = "test-cluster";
