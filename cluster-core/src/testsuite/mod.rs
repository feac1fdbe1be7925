//! The test kit shared by every crate's tests and the benchmarks (feature `testsuite`).
//!
//! It owns what tests of more than one crate need: fakes of the backend contracts,
//! contract suites that hold real backends and fakes to the same guarantees, condition
//! waits with deadlines and tracing set-up. Nothing here is compiled into a release
//! build unless the feature is asked for.

pub mod contract;
pub mod fakes;
