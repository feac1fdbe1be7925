//! Multi-member, multi-process and fault tests of Carbon Grid Cluster, the
//! linearizability checker, and benchmarks.
//!
//! - [`history`]: the client operations a fault test records (calls, returns,
//!   outcomes, unknown outcomes), with a thread-safe recorder and JSON dumps for replay.
//! - [`checker`]: a linearizability checker for those histories, key by key
//!   (Wing–Gong search with the Lowe/Porcupine optimizations).
//! - [`harness`]: real `carbon agent` processes, network partitions with
//!   namespaces, the client workload, the invariants, and a scenario runner; the
//!   scenarios are in `tests/faults.rs`, the soak in `examples/soak.rs`.

// The simulation's workload futures nest deeply (a member, its store, the router).
#![recursion_limit = "256"]

pub mod checker;
pub mod harness;
pub mod history;
pub mod sim;
