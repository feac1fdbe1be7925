//! The operators' HTTP API of a member (axum), on `http_port`:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /health/live` | 200 while the process serves HTTP |
//! | `GET /health/ready` | 200 when [`Readiness`](crate::Readiness) holds, else 503; JSON either way |
//! | `GET /v1/status` | consensus as this member knows it, with its short id and progress |
//! | `GET /v1/members` | every member with its record and gossip liveness, by short id |
//! | `GET /v1/kv/{key}` | `{"key", "value"}` (base64), linearizable; 404 if absent; `?stale` reads locally, `?raw` answers the bytes |
//! | `GET /v1/kv/{prefix}?recurse` | every key under the prefix (`/v1/kv/?recurse`: the whole store); `&all` adds the cluster's `carbon-grid/` keys |
//! | `PUT /v1/kv/{key}` | the body is the value; `{"created"}` |
//! | `DELETE /v1/kv/{key}` | `{"deleted"}` |
//! | `DELETE /v1/kv/{prefix}?prefix` | every key under the prefix at one revision; `{"prefix", "deleted": N}` |
//! | `GET /v1/watch/{prefix}` | every change under the prefix, one JSON object per line ([`watch`](super::watch)) |
//! | `GET /metrics` | Prometheus text ([`Metrics`](crate::Metrics)) |
//!
//! Every error is JSON ([`error`](super::error)). The routes run inside
//! [`HttpServer`](super::HttpServer), which holds the port's limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_core::keys;
use serde_json::{Value, json};

use super::error::{json_error, store_error};
use super::member::Operated;
use super::metrics::ConsensusGauges;

/// The member behind the API, while it lives: the server never keeps a
/// member alive that was dropped.
pub(super) struct Api<T>(Arc<dyn Fn() -> Option<T> + Send + Sync>);

impl<T> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api(self.0.clone())
    }
}

impl<T: Operated> Api<T> {
    pub(super) fn member(&self) -> Option<T> {
        (self.0)()
    }
}

/// The answer while the member stops.
pub(super) fn gone() -> Response {
    json_error(StatusCode::SERVICE_UNAVAILABLE, "the member is stopping")
}

/// The routes of the API for the member `member` returns; request bodies up
/// to `max_body_bytes`.
pub(crate) fn router<T: Operated>(
    member: impl Fn() -> Option<T> + Send + Sync + 'static,
    max_body_bytes: usize,
) -> Router {
    let kv = || get(kv_get::<T>).put(kv_put::<T>).delete(kv_delete::<T>);
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready::<T>))
        .route("/v1/status", get(status::<T>))
        .route("/v1/members", get(members::<T>))
        .route("/v1/kv/{*key}", kv())
        // The empty prefix: `/v1/kv/?recurse` lists the whole store.
        .route("/v1/kv/", kv())
        .route("/v1/watch/{*prefix}", get(super::watch::watch::<T>))
        .route("/v1/watch/", get(super::watch::watch::<T>))
        .route("/metrics", get(metrics::<T>))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "no such route (see the README's HTTP API)") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(Api(Arc::new(member)))
}

async fn live() -> impl IntoResponse {
    axum::Json(json!({ "live": true }))
}

async fn ready<T: Operated>(State(api): State<Api<T>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("health_ready");
    let r = member.readiness().await;
    let code = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(r)).into_response()
}

async fn status<T: Operated>(State(api): State<Api<T>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("status");
    let status = member.consensus_status();
    let progress = member.consensus_progress().await;
    let short_id = member.held_short_id();
    let mut body = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut body {
        o.insert("short_id".into(), json!(short_id));
        o.insert("role".into(), json!(status.role()));
        o.insert("committed_index".into(), json!(progress.committed_index));
        o.insert("snapshot_index".into(), json!(progress.snapshot_index));
    }
    axum::Json(body).into_response()
}

async fn members<T: Operated>(State(api): State<Api<T>>) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("members");
    let recorded = match member.recorded_members() {
        Ok(m) => m,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
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

pub(super) fn flag(q: &BTreeMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

/// What a `/v1/kv/…` route is asked: the key (empty on `/v1/kv/`) and the
/// query's flags.
struct KvRequest {
    key: String,
    q: BTreeMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for KvRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let path =
            Option::<Path<String>>::from_request_parts(parts, state).await.map_err(|e| e.into_response())?;
        let Query(q) = Query::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| json_error(e.status(), &e.body_text()))?;
        Ok(KvRequest { key: path.map(|Path(k)| k).unwrap_or_default(), q })
    }
}

async fn kv_get<T: Operated>(State(api): State<Api<T>>, KvRequest { key, q }: KvRequest) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("kv_get");
    let store = member.store();
    if flag(&q, "recurse") {
        let entries = match store.get_prefix(&key).await {
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
    if key.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "no key given: GET /v1/kv/KEY reads a key, GET /v1/kv/?recurse lists the whole store",
        );
    }
    let value = if flag(&q, "stale") {
        store.get(&key).await
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
        Ok(None) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no key {key:?}"), "key": key, "value": null })),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

async fn kv_put<T: Operated>(
    State(api): State<Api<T>>,
    KvRequest { key, .. }: KvRequest,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The store's router refuses a user's write of the cluster's keys
    // (403, `Error::Forbidden`), by the operation's one definition.
    let Some(member) = api.member() else { return gone() };
    let body = match body {
        Ok(body) => body,
        Err(e) => return json_error(e.status(), &format!("{} (limits.http_max_body_bytes)", e.body_text())),
    };
    member.metrics().http_request("kv_put");
    let start = std::time::Instant::now();
    let r = member.store().set(&key, body.to_vec()).await;
    member.metrics().observe_write(start.elapsed(), r.is_ok());
    match r {
        Ok(created) => axum::Json(json!({ "key": key, "created": created })).into_response(),
        Err(e) => store_error(e),
    }
}

async fn kv_delete<T: Operated>(State(api): State<Api<T>>, KvRequest { key, q }: KvRequest) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("kv_delete");
    let start = std::time::Instant::now();
    // `?prefix`: every key under it, in one write; the store refuses an
    // empty prefix (400) and the cluster's (403).
    let answer = if flag(&q, "prefix") {
        member.store().delete_prefix(&key).await.map(|n| json!({ "prefix": key, "deleted": n }))
    } else {
        member.store().delete(&key).await.map(|deleted| json!({ "key": key, "deleted": deleted }))
    };
    member.metrics().observe_write(start.elapsed(), answer.is_ok());
    match answer {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => store_error(e),
    }
}

async fn metrics<T: Operated>(State(api): State<Api<T>>) -> Response {
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
