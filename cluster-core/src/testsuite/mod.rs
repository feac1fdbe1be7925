//! The test kit shared by every crate's tests and the benchmarks (feature `testsuite`).
//!
//! It owns what tests of more than one crate need: fakes of the backend contracts,
//! contract suites that hold real backends and fakes to the same guarantees, condition
//! waits with deadlines and tracing set-up. Nothing here is compiled into a release
//! build unless the feature is asked for.

// The kit's general tools (configs, waits, logs, hostile connections, fuzzing).
pub mod config;
pub mod fuzz;
pub mod net;
pub mod rng;
pub mod trace;
pub mod wait;

pub use trace::init_tracing;
pub use wait::{DEADLINE, holds_within, holds_within_blocking, wait_until, wait_until_blocking};

// The fakes of the backend contracts and the suites that check them.
pub mod contract;
pub mod fakes;
