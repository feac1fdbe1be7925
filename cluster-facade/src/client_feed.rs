//! The feed of a client member's [`ClientView`]: a replica's records (the
//! keys under `carbon-grid/`), then a watch of every change of them after
//! that, from a non-leader replica when there is one (client members spread
//! over them, so the leader's cost does not grow with their number).
//!
//! The watch is the service client's: when its replica dies, stops or
//! drops it, it goes on at another replica from the last revision + 1 —
//! no gap, no repeat. When no replica remembers that revision any more
//! ([`Error::Compacted`]), the view reads a replica's records again, never
//! older than what it served.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use cluster_core::{Error, MemberId, keys};
use cluster_service::{RouterOptions, ServiceClient};
use futures::StreamExt;
use tracing::debug;

use crate::client_view::ClientView;

/// The replicas a client member can follow now: `(service address, leads)`
/// of each, this member excluded (from gossip's tags).
pub(crate) type ReplicaSource = Arc<dyn Fn() -> Vec<(String, bool)> + Send + Sync>;

/// The pause after a failed round, growing to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The replicas in the order this member tries them: on the first turn the
/// non-leaders, starting at a place that depends on `me` (so client members
/// spread), then the leader; each later turn starts one further down the
/// list, so that a replica that keeps failing is not tried first forever.
pub(crate) fn order(replicas: Vec<(String, bool)>, me: MemberId, turn: usize) -> Vec<String> {
    let mut others: Vec<String> = replicas.iter().filter(|(_, l)| !l).map(|(a, _)| a.clone()).collect();
    others.sort();
    others.dedup();
    if !others.is_empty() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        me.hash(&mut h);
        let start = (h.finish() as usize) % others.len();
        others.rotate_left(start);
    }
    others.extend(replicas.into_iter().filter(|(a, l)| *l && !a.is_empty()).map(|(a, _)| a));
    if !others.is_empty() {
        let len = others.len();
        others.rotate_left(turn % len);
    }
    others
}

/// The replicas the cluster's records name (written by the leader, which
/// admitted them), this member excluded.
pub(crate) fn recorded_replicas(view: &ClientView, me: MemberId) -> Vec<(String, bool)> {
    let status = view.status(me);
    status
        .voters
        .iter()
        .chain(&status.nonvoters)
        .filter(|(id, e)| **id != me && !e.service_addr.is_empty())
        .map(|(id, e)| (e.service_addr.clone(), status.leader == Some(*id)))
        .collect()
}

/// Keeps `view` in step with the replicas until aborted.
pub(crate) async fn follow(
    view: Arc<ClientView>,
    me: MemberId,
    replicas: ReplicaSource,
    options: RouterOptions,
) {
    let mut turn = 0usize;
    let mut pause = FIRST_PAUSE;
    loop {
        // Once synced, only the replicas the records name: gossip tags are
        // anyone's word (any holder of the gossip key).
        let mut known = if view.synced() { recorded_replicas(&view, me) } else { Vec::new() };
        if known.is_empty() {
            known = replicas();
        }
        if round(&view, order(known, me, turn), &options).await {
            pause = FIRST_PAUSE;
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
        turn = turn.wrapping_add(1);
    }
}

/// One round: sync if needed, then follow the watch until it ends. True if
/// it got anything done.
async fn round(view: &ClientView, addrs: Vec<String>, options: &RouterOptions) -> bool {
    if addrs.is_empty() {
        return false;
    }
    let client = match ServiceClient::remote(addrs, options.clone()) {
        Ok(c) => c,
        Err(_) => return false,
    };
    if !view.synced() {
        match client.get_prefix_with_revision(keys::RESERVED_PREFIX).await {
            Ok((revision, entries)) => {
                if !view.install(revision, entries) {
                    debug!(revision, held = view.revision(), "a replica behind this view: trying another");
                    return false;
                }
            }
            Err(e) => {
                debug!(error = %e, "cannot read a replica's state");
                return false;
            }
        }
    }
    let mut applied = false;
    let stream = client.watch(keys::RESERVED_PREFIX, Some(view.revision() + 1));
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => applied |= view.apply(event),
            Err(Error::Compacted { .. }) => {
                debug!(
                    held = view.revision(),
                    "the replicas forgot this view's revision: reading their state again"
                );
                view.resync_from(view.revision());
                return true;
            }
            Err(e) => {
                debug!(error = %e, "the watch of the replicas ended");
                break;
            }
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_leaders_first_spread_by_member_leader_last() {
        let replicas = vec![("a".to_owned(), false), ("l".to_owned(), true), ("b".to_owned(), false)];
        for n in 0..20u64 {
            let order = order(replicas.clone(), MemberId::from(n), 0);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "l");
        }
        let firsts: std::collections::BTreeSet<String> =
            (0..20u64).map(|n| order(replicas.clone(), MemberId::from(n), 0)[0].clone()).collect();
        assert_eq!(firsts.len(), 2, "client members spread over the non-leaders");
        let me = MemberId::from(3);
        let firsts: std::collections::BTreeSet<String> =
            (0..3).map(|turn| order(replicas.clone(), me, turn)[0].clone()).collect();
        assert_eq!(firsts.len(), 3, "retries start at every replica in turn, the leader too");
    }
}
