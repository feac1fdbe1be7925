//! [`Local`]: the target of a [`Proxy`], a member's own store. Local reads
//! read it; writes and consistent reads call it directly when the member
//! leads, and go to the leader's service otherwise (the leader named by the
//! last "not leader" answer, else the one the store knows).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cluster_core::{ConsensusStore, Error, KeyScope, MemberId, Result, WatchEvent};
use futures::{Stream, StreamExt};

use crate::protocol::{Request, Response};
use crate::retry::Attempt;
use crate::router::{Proxy, Route, Router, RouterOptions, sealed};

/// The shortest pause between two attempts of a [`Proxy`], even when a
/// new leader is known.
const MIN_PAUSE: Duration = Duration::from_millis(5);

/// A member's own store, as a [`Router`]'s target.
pub struct Local<S> {
    store: Arc<S>,
}

impl<S> std::fmt::Debug for Local<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl<S: ConsensusStore> sealed::Target for Local<S> {
    /// The leader named by the last answer, else the one the local store knows.
    fn route(&self, request: &Request, attempt: &Attempt) -> Route {
        let me = self.store.member_id();
        if !request.needs_leader() {
            // A read this member's own state does not hold: at a replica,
            // the next one after each failed attempt.
            let remote = request.scope().and_then(|scope| self.store.remote_reads(scope));
            return match remote {
                None => Route::Local(me),
                Some(remote) if remote.replicas.is_empty() => Route::NoReplica,
                Some(remote) => Route::Replica {
                    addr: remote.replicas[attempt.number as usize % remote.replicas.len()].clone(),
                    min_revision: remote.min_revision,
                },
            };
        }
        if let Some(hint) = attempt.hint() {
            if hint.member_id == me {
                return Route::Local(me);
            }
            if let Some(addr) = hint.service_addr.as_ref().filter(|a| !a.is_empty()) {
                return Route::Remote { addr: addr.clone(), leader: Some(hint.member_id) };
            }
        }
        let status = self.store.status();
        match (status.leader, status.leader_service_addr().filter(|a| !a.is_empty())) {
            (Some(leader), _) if leader == me => Route::Local(me),
            (Some(leader), Some(addr)) => Route::Remote { addr: addr.to_owned(), leader: Some(leader) },
            _ => Route::NoLeader,
        }
    }

    /// A read of the member's own state first waits for its
    /// [`read_barrier`](ConsensusStore::read_barrier): it never misses what
    /// the leader answered this member's forwarded writes and reads.
    fn local(&self, request: &Request) -> impl Future<Output = Result<Response>> + Send {
        let store = self.store.clone();
        let request = request.clone();
        async move {
            if let Some(scope) = request.scope() {
                store.read_barrier(scope).await?;
            }
            crate::dispatch::execute(&*store, request).await
        }
    }

    /// A write or linearizable read the leader answered: the member's later
    /// local reads must reflect it.
    fn learn(&self, addr: &str, request: &Request, answer: &Result<Response>) {
        if answer.is_ok() && request.needs_leader() {
            self.store.answered_by_leader(addr);
        }
    }

    fn observed(&self, revision: u64) {
        self.store.observed_revision(revision);
    }

    /// The member's read barrier first: it learns what the leader answered
    /// this member, which the floor then includes.
    fn remote_floor(&self, request: &Request) -> impl Future<Output = Result<u64>> + Send {
        let store = self.store.clone();
        let request = request.clone();
        async move {
            let Some(scope) = request.scope() else { return Ok(0) };
            store.read_barrier(scope).await?;
            Ok(store.remote_reads(scope).map_or(0, |r| r.min_revision))
        }
    }

    /// Waits `delay`, or less if the local store knows a leader other than
    /// the one `tried` (including one it learnt since that attempt) — but at
    /// least [`MIN_PAUSE`] (or `delay` if shorter): when that other leader
    /// also fails at once, attempts must not follow each other without a
    /// pause (a busy loop until the operation's deadline; under simulated
    /// time, time would never advance — found by the simulation).
    async fn pause(&self, delay: Duration, tried: Option<MemberId>) {
        tokio::time::sleep(delay.min(MIN_PAUSE)).await;
        let mut changes = self.store.status_changes();
        let new_leader = async {
            if changes.wait_for(|s| s.leader.is_some() && s.leader != tried).await.is_err() {
                // The store stopped: no news will come, wait the full delay.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = new_leader => {}
        }
    }

    /// The member's own store's watch; for a prefix that store does not
    /// hold (a client member's user keys), a [`ServiceClient`](crate::ServiceClient)'s
    /// watch of the replicas, which goes on at another replica when one fails.
    fn watch(
        router: &Router<Self>,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        let store = &router.inner.target.store;
        if let Some(remote) = store.remote_reads(KeyScope::Prefix(prefix)) {
            return match crate::ServiceClient::remote(remote.replicas, router.options().clone()) {
                Ok(replicas) => replicas.watch(prefix, from_revision).boxed(),
                Err(_) => futures::stream::once(std::future::ready(Err(Error::Unreachable(format!(
                    "watch of {prefix:?}: no replica known to watch"
                )))))
                .boxed(),
            };
        }
        let first = store.watch_from(prefix, from_revision);
        futures::stream::unfold(Some(first), |state| async move {
            match state? {
                Err(e) => Some((Err(e), None)),
                Ok(mut watch) => match watch.recv().await? {
                    Ok(event) => Some((Ok(event), Some(Ok(watch)))),
                    Err(e) => Some((Err(e), None)),
                },
            }
        })
        .boxed()
    }
}

impl<S: ConsensusStore> Proxy<S> {
    /// A router over this member's `store`: the proxy the member gives its users.
    pub fn local(store: Arc<S>, options: RouterOptions) -> Self {
        Router::with_target(Local { store }, options)
    }

    /// [`Router::local`], by the proxy's name.
    pub fn new(store: Arc<S>, options: RouterOptions) -> Self {
        Self::local(store, options)
    }

    /// How many attempts (writes and consistent reads) this proxy sent to
    /// another member because it did not lead; counts every retry.
    pub fn forwarded(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }
}
