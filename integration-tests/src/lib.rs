//! Multi-member, multi-process and fault tests of Carbon Grid Cluster, the
//! linearizability checker, and benchmarks.
//!
//! - [`history`]: the client operations a fault test records (calls, returns,
//!   outcomes, unknown outcomes), with a thread-safe recorder and JSON dumps for replay.
//! - [`checker`]: a linearizability checker for those histories, key by key
//!   (Wing–Gong search with the Lowe/Porcupine optimizations).

pub mod checker;
pub mod history;
