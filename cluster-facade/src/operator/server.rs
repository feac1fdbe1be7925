//! [`HttpServer`]: the HTTP port's own accept loop, so that it lives inside
//! [`HttpLimits`] like the raft and service ports live inside theirs.
//!
//! `axum::serve` has no connection cap and no timeouts; here every
//! connection takes a slot (in total and per address) as it is accepted and
//! is closed at once when none is free, a TLS handshake runs on the
//! connection's own task with a deadline (no shared queue an outsider can
//! fill), hyper reads each request head within `http_header_timeout`, a
//! request is answered within `http_request_timeout`, and a connection on
//! which nothing moves is closed after `http_idle_timeout`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use cluster_rpc::{Role, Tls};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::Metrics;
use super::error::{json_error, json_errors};
use super::limits::HttpLimits;

/// How a connection's caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Plain TCP: no TLS on this member.
    Plain,
    /// TLS, with the role of the caller's certificate (`None`: it presented
    /// none, which only the health routes accept).
    Tls(Option<Role>),
}

/// Routes a caller without a certificate may use on a TLS port: the probes.
fn open_without_certificate(path: &str) -> bool {
    matches!(path, "/health/live" | "/health/ready")
}

/// A running HTTP server.
pub(crate) struct HttpServer {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `router` on `listener` (over TLS when `tls` is given) within
    /// `limits`, counting connections in `metrics`, until shut down.
    pub(crate) fn serve(
        listener: TcpListener,
        router: Router,
        tls: Option<Tls>,
        limits: HttpLimits,
        metrics: Option<Metrics>,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared { router, metrics, tls, limits, slots: Slots::default() });
        let task = tokio::spawn(accept_loop(listener, shared, stopped));
        tracing::info!(%local_addr, "http api listening");
        Ok(HttpServer { stop, task: Some(task) })
    }

    /// Stops accepting, lets the connections finish the request they serve
    /// (bounded), then cuts them and waits for the server.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What every connection task needs.
struct Shared {
    router: Router,
    metrics: Option<Metrics>,
    tls: Option<Tls>,
    limits: HttpLimits,
    slots: Slots,
}

/// Connections held, in total and by address.
#[derive(Default)]
struct Slots {
    by_address: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// One connection's slot; freed when dropped.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slots {
    /// A slot for a connection from `ip`, or the cap that is reached.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<Slot, &'static str> {
        let limits = &shared.limits;
        let mut by_address = shared.slots.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let held = by_address.get(&ip).copied().unwrap_or(0);
        if shared.slots.total.load(Ordering::Relaxed) >= limits.http_max_connections {
            return Err("total");
        }
        if held >= limits.http_max_connections_per_address {
            return Err("per_address");
        }
        by_address.insert(ip, held + 1);
        shared.slots.total.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &shared.metrics {
            m.http_connections(1);
        }
        Ok(Slot { shared: shared.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.shared.slots;
        let mut by_address = slots.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = by_address.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                by_address.remove(&self.ip);
            }
        }
        slots.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.shared.metrics {
            m.http_connections(-1);
        }
    }
}

/// A warning that outsiders can trigger at will, logged at most once per
/// [`THROTTLE`] with the count since the last line, so they cannot fill the log.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    count: u64,
}

/// See [`Throttle`].
const THROTTLE: Duration = Duration::from_secs(10);

impl Throttle {
    /// Counts one occurrence; `Some(count)` when it is time to log.
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| t.elapsed() < THROTTLE) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// How long open connections get to finish at shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut refusals = Throttle::default();
    let mut accept_errors = Throttle::default();
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of descriptors: pause instead of spinning,
                // and let the open connections end meanwhile.
                if let Some(count) = accept_errors.note() {
                    tracing::warn!(error = %e, count, "http accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match Slots::take(&shared, peer.ip()) {
            Ok(slot) => slot,
            Err(cap) => {
                // Counted before the caller can see it, then closed before
                // any byte is read or any handshake starts: the caller sees
                // the connection end. Logged once per interval.
                if let Some(m) = &shared.metrics {
                    m.http_connection_refused(cap);
                }
                drop(stream);
                if let Some(refused) = refusals.note() {
                    tracing::warn!(
                        %peer,
                        refused,
                        max = shared.limits.http_max_connections,
                        per_address = shared.limits.http_max_connections_per_address,
                        "http connections refused: the connection caps are reached"
                    );
                }
                continue;
            }
        };
        connections.spawn(connection(stream, peer, slot, stopped.clone()));
    }
    drop(listener);
    // Connections see the stop and end after their current request.
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Serves one connection: TLS handshake (if any), then HTTP/1.1.
async fn connection(stream: TcpStream, peer: SocketAddr, slot: Slot, stopped: watch::Receiver<bool>) {
    let shared = slot.shared.clone();
    let _ = stream.set_nodelay(true);
    match &shared.tls {
        None => serve_http(stream, peer, Caller::Plain, &shared, stopped).await,
        Some(tls) => {
            let limit = shared.limits.http_handshake_timeout;
            if let Some((stream, role)) = super::http_tls::handshake(stream, peer, tls, limit).await {
                serve_http(stream, peer, Caller::Tls(role), &shared, stopped).await;
            }
        }
    }
    drop(slot);
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    caller: Caller,
    shared: &Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Watched { inner: io, activity: activity.clone() };
    let service = {
        let shared = shared.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let shared = shared.clone();
            let busy = Busy::enter(&activity);
            request.extensions_mut().insert(activity.clone());
            async move {
                let _busy = busy;
                Ok::<_, std::convert::Infallible>(answer(request.map(Body::new), caller, &shared).await)
            }
        })
    };
    let limits = &shared.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.http_header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "http connection ended");
                }
                return;
            }
            _ = stopped.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle(limits.http_idle_timeout) => {
                tracing::debug!(%peer, "http connection idle: closed");
                return;
            }
        }
    }
}

/// The answer to one request: the certificate check, then the router
/// within the request timeout.
async fn answer(request: Request<Body>, caller: Caller, shared: &Shared) -> Response<Body> {
    if caller == Caller::Tls(None) && !open_without_certificate(request.uri().path()) {
        return json_error(
            StatusCode::FORBIDDEN,
            "this route needs a client certificate of the cluster's CA (only /health/live and /health/ready answer without one)",
        );
    }
    // A body announced too large is refused before any of it is read (a
    // body without a length is cut by the router's limit as it arrives).
    let max_body = shared.limits.http_max_body_bytes;
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max_body as u64) {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than limits.http_max_body_bytes ({max_body} bytes)"),
        );
    }
    let limit = shared.limits.http_request_timeout;
    let routed = tower_service::Service::call(&mut shared.router.clone(), request);
    match tokio::time::timeout(limit, routed).await {
        // Outside the router, so that its own answers (405 with its Allow
        // header, an extractor's rejection) are seen as sent.
        Ok(Ok(response)) => json_errors(response).await,
        Ok(Err(never)) => match never {},
        Err(_) => json_error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the request was not answered within limits.http_request_timeout ({limit:?})"),
        ),
    }
}

/// What moves on one connection, for the idle timeout.
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start` when a byte last moved.
    last_ms: AtomicU64,
    /// Requests being answered (until their answer's head).
    busy: AtomicUsize,
    /// Open watch streams, which may be quiet for long.
    streams: AtomicUsize,
    /// A write is waiting for the peer to read.
    write_blocked: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            write_blocked: Default::default(),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a watch stream open on this connection until the guard drops.
    pub(crate) fn stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Resolves once the connection counts as idle: nothing moved for
    /// `limit`, and either a write waits on the peer, or no request and no
    /// watch is open (a watch may wait quietly for its next change).
    async fn idle(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                let waiting_on_peer = self.write_blocked.load(Ordering::Relaxed);
                let quiet_by_design =
                    self.busy.load(Ordering::Relaxed) > 0 || self.streams.load(Ordering::Relaxed) > 0;
                if waiting_on_peer || !quiet_by_design {
                    return;
                }
                tokio::time::sleep(limit).await;
            } else {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// An open watch stream; see [`Activity::stream`].
pub(crate) struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request being answered.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that reports to its [`Activity`] whenever bytes move.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        self.note_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<I> Watched<I> {
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(written) => {
                self.activity.write_blocked.store(false, Ordering::Relaxed);
                if written.as_ref().is_ok_and(|n| *n > 0) {
                    self.activity.moved();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_throttled_warning_logs_once_per_interval_with_the_count() {
        let mut t = Throttle::default();
        assert_eq!(t.note(), Some(1));
        assert_eq!((t.note(), t.note()), (None, None));
        tokio::time::advance(THROTTLE).await;
        assert_eq!(t.note(), Some(3), "the two suppressed and this one");
    }

    #[test]
    fn only_the_probes_answer_without_a_certificate() {
        assert!(open_without_certificate("/health/live") && open_without_certificate("/health/ready"));
        for path in ["/health", "/health/live/x", "/v1/status", "/metrics", "/"] {
            assert!(!open_without_certificate(path), "{path}");
        }
    }
}
