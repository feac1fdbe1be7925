//! `GET /v1/watch/{prefix}?from_revision=R`: every change under a prefix,
//! as newline-delimited JSON, so that programs without a Rust client can
//! follow the store (Consul's blocking queries and etcd's gRPC gateway
//! watch are the models).
//!
//! Each line is one change, in revision order:
//! `{"key": "…", "value": "<base64>" | null, "revision": R, "deleted": bool}`.
//! The contract is `carbon kv watch`'s: from `from_revision` on (or from now
//! without it) no change is skipped and none repeats, so a reader that
//! reconnects with `from_revision` = its last revision + 1 misses nothing.
//! A revision this member no longer replays answers 410 before the stream
//! starts; a reader that falls too far behind gets a last line
//! `{"error": "…"}` and the stream ends. Keys under `carbon-grid/` are left
//! out unless `?all`.
//!
//! A stream holds its connection, so it counts against the HTTP port's
//! connection caps; a reader that stops reading is closed after
//! `http_idle_timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_core::{WatchEvent, keys};
use futures::{FutureExt, StreamExt};
use serde_json::json;

use super::error::{json_error, store_error};
use super::http::{Api, flag, gone};
use super::member::Operated;
use super::server::Activity;

/// One line of the stream.
fn line(event: &WatchEvent) -> Bytes {
    let value = event.value.as_ref().map(|v| BASE64.encode(v));
    let mut text = json!({
        "key": event.key,
        "value": value,
        "revision": event.revision,
        "deleted": event.value.is_none(),
    })
    .to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The handler of `GET /v1/watch/{prefix}`.
pub(super) async fn watch<T: Operated>(
    State(api): State<Api<T>>,
    path: Option<Path<String>>,
    Query(q): Query<BTreeMap<String, String>>,
    activity: Option<Extension<Arc<Activity>>>,
) -> Response {
    let Some(member) = api.member() else { return gone() };
    member.metrics().http_request("watch");
    let prefix = path.map(|Path(p)| p).unwrap_or_default();
    let from_revision = match q.get("from_revision").map(|r| r.parse::<u64>()) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "from_revision must be a revision number (0 or more)",
            );
        }
    };
    let all = flag(&q, "all");
    let mut events = Box::pin(member.store().watch(&prefix, from_revision));
    drop(member);
    // The store decides at once whether it can replay from that revision:
    // a refusal is an HTTP status, not a line in a 200 stream.
    let first = match events.next().now_or_never() {
        Some(Some(Err(e))) => return store_error(e),
        Some(None) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "the member is stopping"),
        Some(Some(Ok(event))) => Some(Ok(event)),
        None => None,
    };
    let guard = activity.map(|Extension(a)| a.stream());
    let lines = futures::stream::iter(first)
        .chain(events)
        .filter(move |event| {
            let keep = match event {
                Ok(e) => all || !keys::is_reserved(&e.key),
                Err(_) => true,
            };
            std::future::ready(keep)
        })
        // The first error is the stream's last line.
        .scan(false, |ended, event| {
            if *ended {
                return std::future::ready(None);
            }
            let bytes = match event {
                Ok(e) => line(&e),
                Err(e) => {
                    *ended = true;
                    let mut text = json!({ "error": e.to_string() }).to_string();
                    text.push('\n');
                    Bytes::from(text)
                }
            };
            std::future::ready(Some(Ok::<_, std::convert::Infallible>(bytes)))
        })
        .map(move |line| {
            let _open = &guard;
            line
        });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(lines),
    )
        .into_response()
}
