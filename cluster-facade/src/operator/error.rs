//! Errors of the HTTP API: every one is JSON, `{"error": "<what is wrong>"}`,
//! with the status that says what the caller can do (README, "HTTP errors").
//!
//! The handlers answer their own errors through [`store_error`] and
//! [`json_error`]; [`json_errors`], applied by the server to every answer,
//! turns the answers axum and its extractors make themselves (unknown route, wrong method, body over the limit, a
//! query that does not parse) into the same shape, so no caller ever meets
//! an empty or plain-text error.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cluster_core::{Error, error::Quota};
use serde_json::json;

/// The largest plain-text error body [`json_errors`] reads to quote it.
const QUOTED_ERROR_BYTES: usize = 4096;

/// `status` with `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The status a store error answers with.
pub(crate) fn store_status(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest(_)
        | Error::BadKey { .. }
        | Error::InvalidMemberId { .. }
        | Error::InvalidShortId { .. }
        | Error::InvalidRole { .. } => StatusCode::BAD_REQUEST,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        // A key or value too long: this request is too large as it is.
        Error::QuotaExceeded { quota: Quota::KeyBytes | Quota::ValueBytes, .. }
        | Error::FrameTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        // The store is full: the request would fit, the store does not
        // (deleting keys makes room), as WebDAV's 507 means.
        Error::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
        // The revision asked for is gone for good: read again, watch from there.
        Error::Compacted { .. } => StatusCode::GONE,
        Error::NotLeader(_)
        | Error::Timeout(_)
        | Error::Unreachable(_)
        | Error::ShuttingDown
        | Error::MembershipChange(_)
        | Error::Io { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A store error as an HTTP answer.
pub(crate) fn store_error(e: Error) -> Response<Body> {
    json_error(store_status(&e), &e.to_string())
}

/// An error answer (4xx, 5xx) that is not JSON becomes
/// `{"error": …}`, quoting its text, or naming its status when it had none.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, QUOTED_ERROR_BYTES).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match (text.trim(), status) {
        (t, _) if !t.is_empty() => t.to_owned(),
        (_, StatusCode::NOT_FOUND) => "no such route (see the README's HTTP API)".to_owned(),
        (_, StatusCode::METHOD_NOT_ALLOWED) => {
            let allowed = parts.headers.get(header::ALLOW).and_then(|a| a.to_str().ok()).unwrap_or("");
            format!("method not allowed on this route (allowed: {allowed})")
        }
        (_, s) => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_answer_413_for_the_request_and_507_for_the_store() {
        let over = |quota| Error::QuotaExceeded { quota, size: 2, limit: 1 };
        assert_eq!(store_status(&over(Quota::KeyBytes)), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(store_status(&over(Quota::ValueBytes)), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(store_status(&over(Quota::StoreBytes)), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(store_status(&Error::Forbidden("x".into())), StatusCode::FORBIDDEN);
        assert_eq!(store_status(&Error::Compacted { requested: 1, oldest: 5 }), StatusCode::GONE);
    }
}
