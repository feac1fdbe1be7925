//! [`Remote`]: the target of a [`ServiceClient`], the service ports of some
//! members, from any program.
//!
//! Reads of the local kind (`get`, `get_prefix`, `members`, `status`) go to
//! any member that answers; writes and consistent reads go to the leader,
//! found by following the "not leader" answers. A watch goes on at another
//! member when its member dies.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster_core::{ConsensusStatus, Error, Result, WatchEvent};
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::protocol::{self, Request, Response};
use crate::retry::Attempt;
use crate::router::{Route, Router, RouterOptions, ServiceClient, sealed, send};

/// Some members' service ports, as a [`Router`]'s target.
#[derive(Debug)]
pub struct Remote {
    addrs: Vec<String>,
    /// The leader's service address as last learnt.
    leader: Mutex<Option<String>>,
    /// The member tried next for reads that any member serves.
    next: AtomicUsize,
}

impl Remote {
    fn leader(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The member that reads of the local kind go to now.
    fn current(&self) -> String {
        self.addrs[self.next.load(Ordering::Relaxed) % self.addrs.len()].clone()
    }

    /// Where the next attempt goes.
    fn next_addr(&self, attempt: &Attempt, needs_leader: bool) -> String {
        if needs_leader {
            if let Some(addr) = attempt.hint().and_then(|h| h.service_addr.clone()).filter(|a| !a.is_empty())
            {
                return addr;
            }
            let mut leader = self.leader();
            if attempt.last_error.is_none() {
                if let Some(addr) = leader.clone() {
                    return addr;
                }
            } else {
                // The leader we knew failed us without naming another: look around.
                *leader = None;
            }
        }
        // Stay with a member that answers; move on after a failure.
        if attempt.last_error.is_some() {
            self.next.fetch_add(1, Ordering::Relaxed);
        }
        self.current()
    }
}

impl sealed::Target for Remote {
    fn route(&self, request: &Request, attempt: &Attempt) -> Route {
        Route::Remote { addr: self.next_addr(attempt, request.needs_leader()), leader: None }
    }

    fn local(&self, request: &Request) -> impl Future<Output = Result<Response>> + Send {
        let never = format!("{}: a client has no store of its own", request.kind());
        std::future::ready(Err(Error::Internal(never)))
    }

    /// Remembers the leader from an answer.
    fn learn(&self, addr: &str, request: &Request, answer: &Result<Response>) {
        let mut leader = self.leader();
        match answer {
            Ok(_) if request.needs_leader() => *leader = Some(addr.to_owned()),
            Err(Error::NotLeader(hint)) => {
                *leader = hint.as_ref().and_then(|h| h.service_addr.clone()).filter(|a| !a.is_empty());
            }
            _ => {}
        }
    }

    fn watch(
        router: &Router<Self>,
        prefix: &str,
        from_revision: Option<u64>,
    ) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        let watcher = Watcher {
            client: router.clone(),
            prefix: prefix.to_owned(),
            next: from_revision,
            last: None,
            seen_at_last: 0,
            stream: None,
            failing_since: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next_event().await?;
            Some((item, watcher))
        })
    }
}

impl ServiceClient {
    /// A router over the members at `addrs` (`host:port` of their service
    /// ports): the client of any program. Connects lazily, on the first request.
    pub fn remote<A: Into<String>>(
        addrs: impl IntoIterator<Item = A>,
        options: RouterOptions,
    ) -> Result<Self> {
        let addrs: Vec<String> = addrs.into_iter().map(Into::into).collect();
        if addrs.is_empty() {
            return Err(Error::BadRequest("a service client needs at least one member address".into()));
        }
        let target = Remote { addrs, leader: Mutex::new(None), next: AtomicUsize::new(0) };
        Ok(Router::with_target(target, options))
    }

    /// [`Router::remote`], by the client's name.
    pub fn new<A: Into<String>>(addrs: impl IntoIterator<Item = A>, options: RouterOptions) -> Result<Self> {
        Self::remote(addrs, options)
    }

    /// What the member at `addr` knows about consensus; one attempt.
    pub async fn status_of(&self, addr: &str) -> Result<ConsensusStatus> {
        send(&self.inner, addr, &Request::Status).await?.into_status()
    }
}

/// A watch that resumes at another member: the state behind
/// [`ServiceClient::watch`].
struct Watcher {
    client: ServiceClient,
    prefix: String,
    /// The first revision still wanted: the last one yielded + 1.
    next: Option<u64>,
    /// The revision of the last event yielded and how many events of that
    /// revision were yielded: one write (a prefix delete) changes several
    /// keys at one revision, so a resume starts at that revision again and
    /// skips what it already yielded.
    last: Option<(u64, usize)>,
    /// Events of `last`'s revision the current stream delivered.
    seen_at_last: usize,
    /// The member's stream and when it was opened.
    stream: Option<(futures::stream::Peekable<cluster_rpc::AnswerStream<Response>>, Instant)>,
    /// The first of the failures since the last stream that worked.
    failing_since: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    done: bool,
}

impl Watcher {
    /// The next event, or the error that ends the watch.
    async fn next_event(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if self.done {
                return None;
            }
            let Some((stream, opened)) = self.stream.as_mut() else {
                if let Err(e) = self.open().await
                    && let Some(end) = self.fail(e).await
                {
                    return end;
                }
                continue;
            };
            let opened = *opened;
            let why = match stream.next().await {
                Some(Ok(Response::Event(event))) => {
                    if self.already_yielded(&event) {
                        continue;
                    }
                    self.next = Some(event.revision + 1);
                    self.failing_since = None;
                    self.failures = 0;
                    return Some(Ok(event));
                }
                Some(Ok(Response::Err(e))) if resumable(&e) => e,
                Some(Ok(Response::Err(e))) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(other)) => {
                    self.done = true;
                    return Some(Err(protocol::unexpected("watch", &other)));
                }
                Some(Err(e)) => e.into_core(),
                None => Error::Unreachable("the member ended the watch".to_owned()),
            };
            self.stream = None;
            tracing::debug!(error = %why, "watch stream broke, resuming at another member");
            // A stream that worked for a while counts as a success: the
            // failures start anew.
            if opened.elapsed() >= self.client.inner.opts.attempt_timeout {
                self.failing_since = None;
                self.failures = 0;
            }
            if let Some(end) = self.fail(why).await {
                return end;
            }
        }
    }

    /// Whether a resumed stream replays `event`, which was yielded before:
    /// an older revision, or one of the events of the last revision that
    /// were. Counts the events of that revision as they come.
    fn already_yielded(&mut self, event: &WatchEvent) -> bool {
        match self.last {
            Some((revision, yielded)) if event.revision == revision => {
                self.seen_at_last += 1;
                if self.seen_at_last <= yielded {
                    return true;
                }
                self.last = Some((revision, yielded + 1));
                false
            }
            Some((revision, _)) if event.revision < revision => true,
            _ => {
                if self.next.is_some_and(|next| event.revision < next) {
                    return true;
                }
                self.last = Some((event.revision, 1));
                self.seen_at_last = 1;
                false
            }
        }
    }

    /// Opens the stream at the next member, from `next`. A watch from now
    /// first learns the member's revision, so that a resume misses nothing
    /// that happened after the watch began.
    async fn open(&mut self) -> Result<()> {
        let inner = &*self.client.inner;
        let addr = inner.target.current();
        let timeout = inner.opts.attempt_timeout;
        if self.next.is_none() {
            // Only the revision is wanted: a prefix that no key starts with.
            let probe = Request::GetPrefixWithRevision { prefix: REVISION_PROBE.to_owned() };
            let (revision, _) = send(inner, &addr, &probe).await?.into_entries_at()?;
            self.next = Some(revision + 1);
        }
        // Again from the last revision yielded: the rest of its events may
        // not have been. A member that cannot replay it any more goes on
        // after it, as before multi-key writes.
        let mut from = self.last.map(|(revision, _)| revision).or(self.next);
        loop {
            let request = Request::Watch { prefix: self.prefix.clone(), from_revision: from };
            let stream = match tokio::time::timeout(timeout, inner.rpc.stream(&addr, &request)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(e.into_core()),
                Err(_) => {
                    return Err(Error::Timeout(format!("watch: {addr} did not answer within {timeout:?}")));
                }
            };
            let mut stream = stream.peekable();
            let refused_last = match (std::pin::Pin::new(&mut stream).peek().await, self.last) {
                (Some(Ok(Response::Err(Error::Compacted { oldest, .. }))), Some((revision, _))) => {
                    from == Some(revision) && *oldest == revision + 1
                }
                _ => false,
            };
            if refused_last {
                from = self.next;
                continue;
            }
            self.seen_at_last = 0;
            self.stream = Some((stream, Instant::now()));
            return Ok(());
        }
    }

    /// After a failure: the error that ends the watch, or `None` once it is
    /// time to try the next member.
    async fn fail(&mut self, error: Error) -> Option<Option<Result<WatchEvent>>> {
        if !resumable(&error) {
            self.done = true;
            return Some(Some(Err(error)));
        }
        let opts = &self.client.inner.opts;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= opts.op_timeout {
            self.done = true;
            return Some(Some(Err(Error::Unreachable(format!(
                "watch: no member could be watched within {:?}, the last error: {error}",
                opts.op_timeout
            )))));
        }
        self.client.inner.target.next.fetch_add(1, Ordering::Relaxed);
        // The first retry goes at once, to the next member.
        if self.failures > 0 {
            tokio::time::sleep(opts.backoff.delay(self.failures - 1)).await;
        }
        self.failures += 1;
        None
    }
}

/// A prefix no key starts with, to read only a member's revision.
const REVISION_PROBE: &str = "\u{0}";

/// True for errors after which a watch goes on at another member.
fn resumable(error: &Error) -> bool {
    error.is_retryable() || matches!(error, Error::Lagged { .. } | Error::ShuttingDown)
}
