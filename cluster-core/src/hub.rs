//! [`EventHub`]: one publisher, many subscribers, each of which first
//! receives the current state and then every change — and never blocks the
//! publisher.
//!
//! The publisher changes the state and emits the events of that change under
//! one short lock (never across an `.await`); a subscriber takes its replay of
//! the state and its place in the event stream under the same lock, so no
//! event falls between the two and none is seen twice. Each subscriber has a
//! bounded buffer: one that falls behind does not slow the publisher, and
//! instead of silently losing events it receives a *resync* event built from
//! the state at that moment.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::broadcast;

struct Inner<S, E> {
    state: S,
    tx: broadcast::Sender<E>,
}

struct Shared<S, E> {
    inner: Mutex<Inner<S, E>>,
    replay: fn(&S) -> Vec<E>,
    resync: fn(&S) -> E,
}

impl<S, E> Shared<S, E> {
    fn lock(&self) -> MutexGuard<'_, Inner<S, E>> {
        // A panic while holding the lock cannot leave `state` half-changed in a
        // way that matters more than losing the hub, so recover the guard.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The publishing side. Cloning gives another handle to the same hub; the
/// subscriptions end when the last handle is dropped.
pub struct EventHub<S, E> {
    shared: Arc<Shared<S, E>>,
}

impl<S, E> Clone for EventHub<S, E> {
    fn clone(&self) -> Self {
        EventHub { shared: self.shared.clone() }
    }
}

impl<S, E: Clone> EventHub<S, E> {
    /// A hub over `state`. Each subscriber buffers up to `capacity` events.
    /// `replay` gives a new subscriber's first events; `resync` the event a
    /// subscriber receives after it fell behind.
    pub fn new(state: S, capacity: usize, replay: fn(&S) -> Vec<E>, resync: fn(&S) -> E) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventHub { shared: Arc::new(Shared { inner: Mutex::new(Inner { state, tx }), replay, resync }) }
    }

    /// Changes the state and publishes the events `change` returns, atomically
    /// with respect to subscribers. `change` must not block.
    pub fn publish<R>(&self, change: impl FnOnce(&mut S) -> (Vec<E>, R)) -> R {
        let mut inner = self.shared.lock();
        let (events, out) = change(&mut inner.state);
        for event in events {
            // No subscriber is not an error.
            let _ = inner.tx.send(event);
        }
        out
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.lock().state)
    }

    /// A new subscriber: it first receives `replay` of the current state, then
    /// every event published after.
    pub fn subscribe(&self) -> Subscription<S, E> {
        let inner = self.shared.lock();
        let pending = (self.shared.replay)(&inner.state).into();
        let rx = inner.tx.subscribe();
        drop(inner);
        Subscription { pending, rx, hub: Arc::downgrade(&self.shared) }
    }

    /// How many subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        self.shared.lock().tx.receiver_count()
    }
}

/// The receiving side of an [`EventHub`].
pub struct Subscription<S, E> {
    pending: VecDeque<E>,
    rx: broadcast::Receiver<E>,
    hub: Weak<Shared<S, E>>,
}

impl<S, E: Clone> Subscription<S, E> {
    /// The next event; `None` once the hub is gone and every event was read.
    pub async fn recv(&mut self) -> Option<E> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
        }
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<E> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        match self.rx.try_recv() {
            Ok(e) => Some(e),
            Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync(),
            Err(_) => None,
        }
    }

    fn resync(&mut self) -> Option<E> {
        let shared = self.hub.upgrade()?;
        let inner = shared.lock();
        // Drop what is buffered and restart at the tail, under the lock, so the
        // resync state and the next event are consistent.
        self.rx = inner.tx.subscribe();
        Some((shared.resync)(&inner.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone, PartialEq)]
    enum Ev {
        Add(u32),
        Resync(Vec<u32>),
    }

    fn hub(capacity: usize) -> EventHub<BTreeSet<u32>, Ev> {
        EventHub::new(
            BTreeSet::new(),
            capacity,
            |s| s.iter().map(|n| Ev::Add(*n)).collect(),
            |s| Ev::Resync(s.iter().copied().collect()),
        )
    }

    fn add(h: &EventHub<BTreeSet<u32>, Ev>, n: u32) {
        h.publish(|s| {
            s.insert(n);
            (vec![Ev::Add(n)], ())
        });
    }

    #[tokio::test]
    async fn late_subscriber_gets_state_then_changes() {
        let h = hub(16);
        add(&h, 1);
        add(&h, 2);
        let mut sub = h.subscribe();
        add(&h, 3);
        assert_eq!(sub.recv().await, Some(Ev::Add(1)));
        assert_eq!(sub.recv().await, Some(Ev::Add(2)));
        assert_eq!(sub.recv().await, Some(Ev::Add(3)));
        assert_eq!(sub.try_recv(), None);
    }

    #[tokio::test]
    async fn slow_subscriber_gets_a_resync_not_a_gap() {
        let h = hub(4);
        let mut sub = h.subscribe();
        for n in 0..10 {
            add(&h, n);
        }
        assert_eq!(sub.recv().await, Some(Ev::Resync((0..10).collect())));
        add(&h, 10);
        assert_eq!(sub.recv().await, Some(Ev::Add(10)));
    }

    #[tokio::test]
    async fn subscription_ends_with_the_hub() {
        let h = hub(4);
        let mut sub = h.subscribe();
        add(&h, 1);
        assert_eq!(h.subscriber_count(), 1);
        drop(h);
        assert_eq!(sub.recv().await, Some(Ev::Add(1)));
        assert_eq!(sub.recv().await, None);
    }
}
