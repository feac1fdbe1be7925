//! The admin surface of a running member: what its service answers beyond
//! its consensus store. A bare store knows no gossip and has no keyring, so
//! these are not store methods; the member that serves the store hands them
//! to its service next to it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::id::MemberId;
use crate::membership::KeyringControl;
use crate::store::Liveness;

/// A member's own answers: gossip's view of the members and its gossip
/// keyring. The facade implements it over its gossip; a service without one
/// refuses these requests, saying why.
pub trait MemberAdmin: Send + Sync + std::fmt::Debug + 'static {
    /// Gossip's view of every member this member heard of, with raft's
    /// members and short-id holders that gossip did not show it.
    fn liveness(&self) -> BTreeMap<MemberId, Liveness>;

    /// This member's live gossip keyring; `None` when gossip is not
    /// encrypted.
    fn keyring(&self) -> Option<&dyn KeyringControl>;
}

/// Hooks a service calls for the operations it executed for a caller, so the
/// member can time them (its operator metrics) where they happen, without
/// wrapping its store.
pub trait ServiceObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A write executed here took `took`; `ok` when it was applied. A quick
    /// "not the leader" is no write and is not reported.
    fn write(&self, took: Duration, ok: bool);

    /// A linearizable read answered here took `took`.
    fn read(&self, took: Duration);
}
