//! [`Local`]: the target of a [`Proxy`], a member's own store. Local reads
//! read it; writes and consistent reads call it directly when the member
//! leads, and go to the leader's service otherwise (the leader named by the
//! last "not leader" answer, else the one the store knows).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_core::{ConsensusStatus, ConsensusStore, Error, MemberId, MemberInfo, Result, WatchEvent};
use futures::Stream;

use crate::retry::Attempt;
use crate::router::sealed::Op;
use crate::router::{Inner, Proxy, Router, RouterOptions, call, sealed};
use crate::server;

/// A member's own store, as a [`Router`]'s target.
pub struct Local<S> {
    store: Arc<S>,
    /// Attempts sent to another member's service, for metrics.
    forwarded: AtomicU64,
}

impl<S> std::fmt::Debug for Local<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").field("forwarded", &self.forwarded).finish_non_exhaustive()
    }
}

/// Where one attempt runs.
enum Route {
    Local,
    Remote(String),
}

impl<S: ConsensusStore> Local<S> {
    /// The leader named by the last answer, else the one the local store knows.
    fn leader(&self, attempt: &Attempt) -> Option<(MemberId, Route)> {
        let me = self.store.member_id();
        if let Some(hint) = attempt.hint() {
            if hint.member_id == me {
                return Some((me, Route::Local));
            }
            if let Some(addr) = hint.service_addr.as_ref().filter(|a| !a.is_empty()) {
                return Some((hint.member_id, Route::Remote(addr.clone())));
            }
        }
        let status = self.store.status();
        let leader = status.leader?;
        if leader == me {
            Some((me, Route::Local))
        } else {
            let addr = status.leader_service_addr().filter(|a| !a.is_empty())?;
            Some((leader, Route::Remote(addr.to_owned())))
        }
    }
}

impl<S: ConsensusStore> sealed::Target for Local<S> {
    fn attempt<'a, O: Op>(
        inner: &'a Inner<Self>,
        op: &'a O,
        attempt: Attempt,
        tried: &'a Mutex<Option<MemberId>>,
    ) -> impl Future<Output = Result<O::Output>> + Send + 'a {
        let this = &inner.target;
        let route = if op.needs_leader() {
            this.leader(&attempt)
        } else {
            Some((this.store.member_id(), Route::Local))
        };
        *tried.lock().unwrap_or_else(|e| e.into_inner()) = route.as_ref().map(|(id, _)| *id);
        async move {
            match route {
                Some((_, Route::Local)) => op.local(&*this.store).await,
                Some((_, Route::Remote(addr))) => {
                    this.forwarded.fetch_add(1, Ordering::Relaxed);
                    O::answer(call(inner, &addr, &op.request()).await?)
                }
                None => Err(Error::NotLeader(None)),
            }
        }
    }

    /// Waits `delay`, or less if the local store knows a leader other than
    /// the one `tried` (including one it learnt since that attempt).
    async fn pause(&self, delay: Duration, tried: Option<MemberId>) {
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

    fn watch(
        router: &Router<Self>,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        let first = router.inner.target.store.watch_from(prefix, from_revision);
        futures::stream::unfold(Some(first), |state| async move {
            match state? {
                Err(e) => Some((Err(e), None)),
                Ok(mut watch) => match watch.recv().await? {
                    Ok(event) => Some((Ok(event), Some(Ok(watch)))),
                    Err(e) => Some((Err(e), None)),
                },
            }
        })
    }
}

impl<S: ConsensusStore> Proxy<S> {
    /// A router over this member's `store`: the proxy the member gives its users.
    pub fn local(store: Arc<S>, options: RouterOptions) -> Self {
        Router::with_target(Local { store, forwarded: AtomicU64::new(0) }, options)
    }

    /// [`Router::local`], by the proxy's name.
    pub fn new(store: Arc<S>, options: RouterOptions) -> Self {
        Self::local(store, options)
    }

    /// The local store.
    pub fn store(&self) -> &Arc<S> {
        &self.inner.target.store
    }

    /// How many attempts (writes and consistent reads) this proxy sent to
    /// another member because it did not lead; counts every retry.
    pub fn forwarded(&self) -> u64 {
        self.inner.target.forwarded.load(Ordering::Relaxed)
    }

    /// What this member knows about consensus now.
    pub fn status(&self) -> ConsensusStatus {
        self.store().status()
    }

    /// The local value of `key`: fast, possibly stale.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.store().get(key)
    }

    /// The local entries under `prefix`, in key order: fast, possibly stale.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.store().get_prefix(prefix)
    }

    /// The local entries under `prefix` with the revision they are of: a
    /// [`watch`](Router::watch) from that revision + 1 misses and repeats nothing.
    pub fn get_prefix_with_revision(&self, prefix: &str) -> Result<(u64, cluster_core::Entries)> {
        self.store().get_prefix_with_revision(prefix)
    }

    /// The [`MemberInfo`] of every member in the local store.
    pub fn members(&self) -> Result<Vec<MemberInfo>> {
        server::members(&**self.store())
    }
}
