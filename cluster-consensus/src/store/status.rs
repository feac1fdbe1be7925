//! What a [`RaftStore`](super::RaftStore) says about itself: its
//! [`ConsensusStatus`], built from raft's metrics, the pending reset and the
//! store quota alarm, and the task that publishes every change of it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cluster_core::{ConsensusLimits, ConsensusStatus, Endpoints, MemberId};
use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::recovery::VoteGate;
use crate::state_machine::SharedState;
use crate::typecfg::Raft;

/// The store quota alarm: raised when a write is refused because the store
/// is full, lowered once the store shrank below its size then (something
/// was deleted) or a growing write was admitted.
#[derive(Debug)]
pub(super) struct QuotaAlarm {
    /// The store size when a write was last refused; `u64::MAX`: no alarm.
    pub(super) raised_at: AtomicU64,
}

impl QuotaAlarm {
    pub(super) const NONE: u64 = u64::MAX;

    pub(super) fn raise(&self, store_bytes: u64) {
        self.raised_at.store(store_bytes, Ordering::Relaxed);
    }

    pub(super) fn lower(&self) {
        self.raised_at.store(Self::NONE, Ordering::Relaxed);
    }

    /// Whether this member refused a write for the store quota since the
    /// store last shrank below its size then.
    fn refused(&self, store_bytes: u64) -> bool {
        let at = self.raised_at.load(Ordering::Relaxed);
        at != Self::NONE && store_bytes >= at
    }
}

pub(super) fn status_of(
    m: &RaftMetrics<MemberId, Endpoints>,
    reset_pending: Option<String>,
    state: &SharedState,
    limits: &ConsensusLimits,
    alarm: &QuotaAlarm,
) -> ConsensusStatus {
    let store_bytes = state.read().store_bytes;
    let membership = m.membership_config.membership();
    let voter_ids: BTreeSet<MemberId> = membership.voter_ids().collect();
    let mut voters = BTreeMap::new();
    let mut nonvoters = BTreeMap::new();
    for (id, node) in membership.nodes() {
        if voter_ids.contains(id) {
            voters.insert(*id, node.clone());
        } else {
            nonvoters.insert(*id, node.clone());
        }
    }
    ConsensusStatus {
        member_id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        voters,
        nonvoters,
        reset_pending,
        store_bytes,
        quota_alarm: crate::quota::alarm(limits, store_bytes, alarm.refused(store_bytes)),
    }
}

/// Whether raft's timer does anything on this member: openraft's tick only
/// starts elections (on a voter) and sends heartbeats and steps down (on a
/// leader, which may already be out of the voters). A nonvoter and a member
/// out of raft (a client member of the facade) would wake up every 1.5
/// heartbeat intervals for nothing.
fn needs_tick(m: &RaftMetrics<MemberId, Endpoints>) -> bool {
    m.state == ServerState::Leader || m.membership_config.membership().voter_ids().any(|id| id == m.id)
}

/// The status channel of a store, and the task that keeps it current: it
/// follows raft's metrics and the vote gate (a reset ends) until `cancel`,
/// and keeps raft's timer on only while it has work ([`needs_tick`]).
pub(super) fn status_task(
    raft: Raft,
    mut metrics: watch::Receiver<RaftMetrics<MemberId, Endpoints>>,
    votes: &VoteGate,
    state: &SharedState,
    limits: &ConsensusLimits,
    alarm: &Arc<QuotaAlarm>,
    cancel: CancellationToken,
) -> (watch::Receiver<ConsensusStatus>, impl Future<Output = ()> + Send + 'static) {
    let mut gate = votes.subscribe();
    let (status_tx, status) =
        watch::channel(status_of(&metrics.borrow(), votes.pending(), state, limits, alarm));
    let (state, limits, alarm) = (state.clone(), limits.clone(), alarm.clone());
    let task = async move {
        // openraft starts with its timer on (`Config::enable_tick`).
        let mut ticking = true;
        loop {
            let tick = needs_tick(&metrics.borrow());
            if tick != ticking {
                // Turned on as soon as the metrics show this member a voter:
                // an election timeout is far longer than the time it takes.
                raft.runtime_config().tick(tick);
                ticking = tick;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                changed = gate.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            let now = status_of(
                &metrics.borrow_and_update(),
                gate.borrow_and_update().clone(),
                &state,
                &limits,
                &alarm,
            );
            status_tx.send_if_modified(|s| {
                if *s == now {
                    false
                } else {
                    *s = now;
                    true
                }
            });
        }
    };
    (status, task)
}
