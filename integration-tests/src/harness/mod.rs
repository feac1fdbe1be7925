//! The fault-test harness: real `carbon agent` processes, real network
//! partitions, a recorded client workload, and the invariants a run must keep.
//!
//! - [`process`]: one member as a `carbon agent` process (the binary, its
//!   configuration, its start line; kill, pause, resume, terminate, restart);
//! - [`netns`]: network namespaces, veth links and blackhole routes for partitions;
//! - [`proxy`]: a user-space network between members: per directed link
//!   delay with jitter, loss, duplication and one-way cuts, for TCP and UDP;
//! - [`cluster`]: a cluster of agent processes, on loopback or in namespaces
//!   (optionally behind the proxy);
//! - [`client`]: the workload of concurrent clients and the final reads;
//! - [`invariants`]: the checks every scenario ends with, and the short-id monitor;
//! - [`run`]: a scenario from start to [`Summary`](run::Summary).
//!
//! A scenario (needs a multi-threaded tokio runtime):
//!
//! ```no_run
//! use integration_tests::harness::cluster::ClusterSpec;
//! use integration_tests::harness::run::{FaultRun, RunSpec};
//!
//! # async fn scenario() -> anyhow::Result<()> {
//! let mut run = FaultRun::start(RunSpec::new("kill the leader", ClusterSpec::new(5, 3))).await?;
//! let leader = run.wait_leader().await?;
//! run.kill(leader)?;
//! run.recover().await;
//! run.restart(leader).await?;
//! run.recover().await;
//! let summary = run.finish().await;
//! println!("{summary}");
//! summary.assert_ok();
//! # Ok(()) }
//! ```

pub mod client;
pub mod cluster;
pub mod invariants;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod run;
pub mod security;
