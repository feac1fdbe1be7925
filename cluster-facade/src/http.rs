//! The operators' HTTP API of a member (axum), on `http_port`:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /health/live` | 200 while the process serves HTTP |
//! | `GET /health/ready` | 200 when [`Readiness`](crate::Readiness) holds, else 503; JSON either way |
//! | `GET /v1/status` | consensus as this member knows it, with its short id and progress |
//! | `GET /v1/members` | every member with its record and gossip liveness, by short id |
//! | `GET /v1/kv/{key}` | `{"key", "value"}` (base64), 404 if absent; `?stale` reads locally, `?raw` answers the bytes, `?recurse` lists the prefix |
//! | `PUT /v1/kv/{key}` | the body is the value; `{"created"}` |
//! | `DELETE /v1/kv/{key}` | `{"deleted"}` |
//! | `GET /metrics` | Prometheus text ([`Metrics`](crate::Metrics)) |
//!
//! The server runs on any [`axum::serve::Listener`]: plain TCP, or mutual
//! TLS with the member's certificates when the cluster runs on TLS
//! ([`TlsListener`](crate::http_tls::TlsListener)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Weak;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_core::{ConsensusStore, Error, Membership, keys};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util_cancel::CancellationToken;

use crate::cluster::{ClusterOf, Inner};
use crate::metrics::ConsensusGauges;

mod tokio_util_cancel {
    //! A one-shot stop signal for the server (tokio's watch, to need no
    //! further dependency).
    use tokio::sync::watch;

    /// Cancels once; every clone sees it.
    #[derive(Clone)]
    pub(super) struct CancellationToken(watch::Sender<bool>);

    impl CancellationToken {
        pub(super) fn new() -> Self {
            CancellationToken(watch::channel(false).0)
        }

        pub(super) fn cancel(&self) {
            let _ = self.0.send(true);
        }

        pub(super) async fn cancelled(&self) {
            let mut rx = self.0.subscribe();
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// A running HTTP server.
pub(crate) struct HttpServer {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `router` on `listener` until shut down.
    pub(crate) fn serve<L>(listener: L, router: Router) -> std::io::Result<Self>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let local_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "http server ended");
            }
        });
        tracing::info!(%local_addr, "http api listening");
        Ok(HttpServer { cancel, task: Some(task) })
    }

    /// Stops accepting, ends the connections and waits for the server.
    pub(crate) async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            // Graceful shutdown waits for open connections (keep-alive
            // clients): bounded, then cut.
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The member behind the API: a weak reference, so the server never keeps a
/// member alive that was dropped.
struct Api<M: Membership, S: ConsensusStore>(Weak<Inner<M, S>>);

impl<M: Membership, S: ConsensusStore> Clone for Api<M, S> {
    fn clone(&self) -> Self {
        Api(self.0.clone())
    }
}

impl<M: Membership, S: ConsensusStore> Api<M, S> {
    fn member(&self) -> Option<ClusterOf<M, S>> {
        self.0.upgrade().map(ClusterOf::from_inner)
    }
}

/// The answer while the member stops.
fn gone() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the member is stopping").into_response()
}

/// The routes of the API for the member behind `inner`.
pub(crate) fn router<M: Membership, S: ConsensusStore>(inner: Weak<Inner<M, S>>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready::<M, S>))
        .route("/v1/status", get(status::<M, S>))
        .route("/v1/members", get(members::<M, S>))
        .route("/v1/kv/{*key}", get(kv_get::<M, S>).put(kv_put::<M, S>).delete(kv_delete::<M, S>))
        .route("/metrics", get(metrics::<M, S>))
        .with_state(Api(inner))
}

/// A store error as an HTTP answer: the caller's fault, or try later.
fn store_error(e: Error) -> Response {
    let code = match &e {
        Error::BadRequest(_) | Error::BadKey { .. } | Error::FrameTooLarge { .. } => StatusCode::BAD_REQUEST,
        Error::NotLeader(_) | Error::Timeout(_) | Error::Unreachable(_) | Error::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, axum::Json(json!({ "error": e.to_string() }))).into_response()
}

async fn live() -> impl IntoResponse {
    axum::Json(json!({ "live": true }))
}

async fn ready<M: Membership, S: ConsensusStore>(State(api): State<Api<M, S>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("health_ready");
    let r = member.readiness().await;
    let code = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(r)).into_response()
}

async fn status<M: Membership, S: ConsensusStore>(State(api): State<Api<M, S>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("status");
    let status = member.consensus_status();
    let progress = member.consensus_progress().await;
    let short_id = *member.watch_short_id().borrow();
    let mut body = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut body {
        o.insert("short_id".into(), json!(short_id));
        o.insert("role".into(), json!(status.role()));
        o.insert("committed_index".into(), json!(progress.committed_index));
        o.insert("snapshot_index".into(), json!(progress.snapshot_index));
    }
    axum::Json(body).into_response()
}

async fn members<M: Membership, S: ConsensusStore>(State(api): State<Api<M, S>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("members");
    let recorded = match member.members() {
        Ok(m) => m,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": e.to_string() })))
                .into_response();
        }
    };
    let liveness = member.liveness();
    let list: Vec<Value> = recorded
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.insert("liveness".into(), json!(liveness.get(&m.member_id).map(ToString::to_string)));
            }
            v
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

fn flag(q: &BTreeMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

async fn kv_get<M: Membership, S: ConsensusStore>(
    State(api): State<Api<M, S>>,
    Path(key): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("kv_get");
    let store = member.store();
    if flag(&q, "recurse") {
        let entries = match store.get_prefix(&key) {
            Ok(e) => e,
            Err(e) => return store_error(e),
        };
        let all = flag(&q, "all");
        let list: Vec<Value> = entries
            .iter()
            .filter(|(k, _)| all || !keys::is_reserved(k))
            .map(|(k, v)| json!({ "key": k, "value": BASE64.encode(v) }))
            .collect();
        return axum::Json(Value::Array(list)).into_response();
    }
    let value = if flag(&q, "stale") {
        store.get(&key)
    } else {
        let start = std::time::Instant::now();
        let v = store.consistent_get(&key).await;
        if v.is_ok() {
            member.metrics().observe_read(start.elapsed());
        }
        v
    };
    match value {
        Ok(Some(v)) if flag(&q, "raw") => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()
        }
        Ok(Some(v)) => axum::Json(json!({ "key": key, "value": BASE64.encode(&v) })).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, axum::Json(json!({ "key": key, "value": null }))).into_response(),
        Err(e) => store_error(e),
    }
}

async fn kv_put<M: Membership, S: ConsensusStore>(
    State(api): State<Api<M, S>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("kv_put");
    let start = std::time::Instant::now();
    let r = member.store().set(&key, body.to_vec()).await;
    member.metrics().observe_write(start.elapsed(), r.is_ok());
    match r {
        Ok(created) => axum::Json(json!({ "key": key, "created": created })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn kv_delete<M: Membership, S: ConsensusStore>(
    State(api): State<Api<M, S>>,
    Path(key): Path<String>,
) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("kv_delete");
    let start = std::time::Instant::now();
    let r = member.store().delete(&key).await;
    member.metrics().observe_write(start.elapsed(), r.is_ok());
    match r {
        Ok(deleted) => axum::Json(json!({ "key": key, "deleted": deleted })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn metrics<M: Membership, S: ConsensusStore>(State(api): State<Api<M, S>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    let status = member.consensus_status();
    let progress = member.consensus_progress().await;
    let m = member.metrics();
    m.set_consensus(&ConsensusGauges {
        term: status.term,
        is_leader: status.is_leader(),
        has_leader: status.leader.is_some(),
        last_log_index: status.last_log_index,
        committed_index: progress.committed_index,
        applied_index: status.applied_index,
        snapshot_index: progress.snapshot_index,
        quorum_ack_age: progress.quorum_ack_age,
        voters: status.voters.len(),
        nonvoters: status.nonvoters.len(),
    });
    let mut by_state: BTreeMap<&'static str, usize> =
        [("alive", 0), ("suspect", 0), ("failed", 0), ("left", 0)].into_iter().collect();
    for l in member.liveness().values() {
        let name = match l {
            cluster_core::Liveness::Alive => "alive",
            cluster_core::Liveness::Suspect => "suspect",
            cluster_core::Liveness::Failed => "failed",
            _ => "left",
        };
        *by_state.entry(name).or_default() += 1;
    }
    m.set_gossip_members(&by_state.into_iter().collect::<Vec<_>>());
    m.set_forwarded(member.store().forwarded());
    m.set_rpc(&cluster_rpc::stats());
    m.http_request("metrics");
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
        .into_response()
}
