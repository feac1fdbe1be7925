//! Graceful leave, which chitchat does not have: the member publishes the
//! reserved leaving key, then waits until every peer that was live has
//! acknowledged it (each peer's events task sets an ack key naming the leaver
//! and its generation) or is no longer live, bounded by a timeout.
//! Peers report a member whose state carries the leaving key as `Left`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{Chitchat, ChitchatId};
use cluster_core::MemberId;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, warn};

use crate::keys::{LEAVING_KEY, ack_key};

/// How the wait for acknowledgements ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaveOutcome {
    /// Peers that were live when the leave started.
    pub(crate) peers: usize,
    /// Of those, peers still live that had not acknowledged when the wait ended.
    pub(crate) unacknowledged: usize,
}

/// Announces the leave and waits (at most `max_wait`) until the peers heard it.
pub(crate) async fn announce_and_wait(
    chitchat: &Arc<Mutex<Chitchat>>,
    member_id: MemberId,
    max_wait: Duration,
) -> LeaveOutcome {
    let deadline = Instant::now() + max_wait;
    let (self_id, mut live) = {
        let mut c = chitchat.lock().await;
        c.self_node_state().set(LEAVING_KEY, "1");
        (c.self_chitchat_id().clone(), c.live_nodes_watcher())
    };
    let ack = ack_key(member_id);
    let expected = self_id.generation_id.to_string();
    let peers: BTreeSet<ChitchatId> =
        live.borrow_and_update().keys().filter(|id| **id != self_id).cloned().collect();
    loop {
        let unacknowledged = {
            let view = live.borrow_and_update();
            peers
                .iter()
                .filter(|p| view.get(*p).is_some_and(|s| s.get(&ack) != Some(expected.as_str())))
                .count()
        };
        let outcome = LeaveOutcome { peers: peers.len(), unacknowledged };
        if unacknowledged == 0 {
            debug!(peers = peers.len(), "every live peer acknowledged the leave");
            return outcome;
        }
        match timeout_at(deadline, live.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                warn!(unacknowledged, peers = peers.len(), "leave: stopping before every peer acknowledged");
                return outcome;
            }
        }
    }
}
