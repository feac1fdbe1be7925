//! In-memory fakes of the two backend contracts, for fast tests of what runs
//! on top of them (housekeeping, the forwarding service, the facade).
//!
//! - [`FakeCluster`] / [`FakeStore`]: a [`ConsensusStore`](crate::ConsensusStore) whose members share
//!   one state and one leader that the test picks; writes, short ids,
//!   revisions and watches behave as the contract states, raft membership
//!   changes are recorded in the status. Faults are test knobs
//!   ([`Shared::lose_answers`], [`Shared::max_write_delay`]).
//! - [`FakeNetwork`] / [`FakeMembership`]: a [`Membership`](crate::Membership) whose other
//!   members the test makes join, change tags, leave and fail; every view is
//!   updated at once, so a test waits on nothing but its own code.
//!
//! Both pass the contract suites of [`contract`](super::contract).

mod membership;
mod store;

use std::sync::{Mutex, MutexGuard};

pub use membership::{FakeMembership, FakeNetwork};
pub use store::{FakeCluster, FakeStore, Shared};

/// The cluster id fakes use unless told otherwise.
pub const FAKE_CLUSTER_ID: &str = "test-cluster";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked holding the lock has failed already.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
