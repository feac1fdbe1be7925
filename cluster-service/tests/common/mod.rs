//! Test helpers: the kit's fake `ConsensusStore` (whose leader the test
//! switches), and waiting on a condition.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

/// The fake store lives in the shared test kit.
#[allow(unused_imports)] // each test binary uses its part
pub use cluster_core::testsuite::fakes::{FakeCluster, FakeStore};

pub const CLUSTER: &str = "test-cluster";

/// Waits until `cond` holds, checking every 10 ms, for at most `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
