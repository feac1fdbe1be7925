//! What the RPC servers of this process did, for metrics: connections
//! accepted and open, and refusals by reason (every refusal a server notes
//! in its [`RateLimitedLog`](crate::RateLimitedLog), logged or not).
//!
//! Process-wide on purpose: a Prometheus scrape is of a process, and a
//! member runs its raft and service servers in one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);
static REFUSED: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcStats {
    /// Connections admitted since the process started.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Refusals (connections, handshakes, frames, requests) by reason.
    pub refused: BTreeMap<&'static str, u64>,
}

/// The counters now.
pub fn stats() -> RpcStats {
    RpcStats {
        accepted: ACCEPTED.load(Ordering::Relaxed),
        open: OPEN.load(Ordering::Relaxed),
        refused: REFUSED.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    }
}

pub(crate) fn connection_opened() {
    ACCEPTED.fetch_add(1, Ordering::Relaxed);
    OPEN.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn connection_closed() {
    OPEN.fetch_sub(1, Ordering::Relaxed);
}

pub(crate) fn refused(reason: &'static str) {
    *REFUSED.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move() {
        let before = stats();
        connection_opened();
        refused("test reason");
        let after = stats();
        assert!(after.accepted > before.accepted);
        assert!(after.refused["test reason"] > before.refused.get("test reason").copied().unwrap_or(0));
        connection_closed();
    }
}
