//! Edge security: authentication of requests, Origin checks for WebSocket and SSE, CORS (off
//! unless origins are configured), and the open-connection limit.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::AppState;
use crate::auth::{Caller, bearer};

pub fn gql_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    let mut resp = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string())
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The caller of an HTTP request, or the 401 to send.
pub async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let token = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    app.options
        .auth
        .authenticate(token)
        .await
        .map_err(|e| gql_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &e.to_string()))
}

/// Browsers send `Origin` on WebSocket and cross-site requests. Same-origin (Origin host equals
/// Host) and allow-listed origins pass; requests without Origin (non-browser clients) pass.
pub fn origin_allowed(app: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if app.options.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin).trim_end_matches('/');
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

pub fn forbidden_origin() -> Response {
    gql_error(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "cross-origin connection refused: add the origin to --allowed-origins",
    )
}

/// Counts open streaming connections (WebSocket, SSE); dropping the guard releases the slot.
pub struct ConnectionSlot(std::sync::Arc<AtomicUsize>);

impl ConnectionSlot {
    pub fn acquire(app: &AppState) -> Option<ConnectionSlot> {
        let c = app.connections.clone();
        let prev = c.fetch_add(1, Ordering::AcqRel);
        if prev >= app.options.max_connections {
            c.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot(c))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub fn too_many_connections() -> Response {
    let mut r = gql_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "RATE_LIMITED",
        "too many open subscription connections; retry later",
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// CORS for the configured origins only; without configuration no CORS headers are sent, so
/// browsers keep cross-origin reads blocked.
pub async fn cors(State(app): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let allowed = origin
        .as_deref()
        .filter(|o| app.options.cors_origins.iter().any(|c| c == "*" || c.eq_ignore_ascii_case(o)))
        .map(str::to_string);
    if req.method() == Method::OPTIONS {
        let Some(o) = allowed else {
            return StatusCode::NO_CONTENT.into_response();
        };
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&o) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type, accept"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        return r;
    }
    let mut resp = next.run(req).await;
    if let Some(o) = allowed
        && let Ok(v) = HeaderValue::from_str(&o)
    {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        resp.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}
