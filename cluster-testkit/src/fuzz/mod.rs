//! The fuzz drivers of the two TCP ports an outsider can reach, each shared by
//! a short test and a long run (an example of the crate under test).
//!
//! Both draw from the kit's seeded [`Rng`](cluster_core::testsuite::rng::Rng),
//! so a failing seed replays.

pub mod raft;
pub mod service;
