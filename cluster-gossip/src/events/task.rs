//! The events task: watches chitchat's live nodes, diffs each new view into
//! membership events, publishes them through the [`EventHub`], and
//! acknowledges the departures it saw (the leaver waits for those acks).
//!
//! It ends when its stop signal fires or its sender is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chitchat::{Chitchat, ChitchatId, NodeState};
use cluster_core::{EventHub, MemberId, MemberTable, MembershipEvent};
use tokio::sync::{Mutex, oneshot, watch};
use tracing::{debug, trace};

use crate::events::diff::{Tracker, apply};
use crate::keys::ack_key;
use crate::member::Observed;
use crate::socket::Shared;

/// What the task needs; it owns all of it.
pub(crate) struct EventsTask {
    pub(crate) self_id: MemberId,
    pub(crate) chitchat: Arc<Mutex<Chitchat>>,
    pub(crate) live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    pub(crate) hub: EventHub<MemberTable, MembershipEvent>,
    /// Told the live member count, for the pace of this member's rounds.
    pub(crate) socket: Arc<Shared>,
    pub(crate) tracker: Tracker,
}

/// Now, on tokio's clock (which tests may pause), as the tracker counts time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl EventsTask {
    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        // The view may have changed before the task started.
        self.process().await;
        loop {
            // Woken to forget a departed member only when one is due: an
            // idle member has no timer here.
            let forget = self.tracker.next_forget();
            let forget_at = tokio::time::Instant::from_std(forget.unwrap_or_else(now));
            tokio::select! {
                // Fired or sender dropped: either way, stop.
                _ = &mut stop => break,
                changed = self.live.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.process().await;
                }
                _ = tokio::time::sleep_until(forget_at), if forget.is_some() => {
                    self.tracker.forget_departed(now());
                }
            }
        }
        debug!("membership events task stopped");
    }

    async fn process(&mut self) {
        let observed: Vec<Observed> =
            self.live.borrow_and_update().iter().filter_map(|(id, s)| Observed::from_node(id, s)).collect();
        let events = self.tracker.observe(observed, now());
        if events.is_empty() {
            return;
        }
        trace!(?events, "membership changed");
        let left: Vec<(MemberId, u64)> = events
            .iter()
            .filter_map(|e| match e {
                MembershipEvent::Left(m) if m.id != self.self_id => Some((m.id, m.generation)),
                _ => None,
            })
            .collect();
        let live = self.hub.publish(|table| {
            apply(table, &events);
            let live = table.len();
            (events, live)
        });
        self.socket.pace.set_live(live);
        if !left.is_empty() {
            // The leavers wait for these acknowledgements: send them at full pace.
            self.socket.pace.hurry_until(Instant::now() + crate::pace::HURRY);
            let mut chitchat = self.chitchat.lock().await;
            let me = chitchat.self_node_state();
            for (id, generation) in left {
                // Visible to the leaver until the tombstone grace period ends.
                me.set_with_ttl(ack_key(id), generation);
            }
        }
    }
}
