//! Edge security: authentication of requests, Origin checks for WebSocket and SSE, CORS (off
//! unless origins are configured), the open-connection limit, request ids, and GraphQL-shaped
//! JSON bodies for every error status.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::AppState;
use crate::auth::{AuthError, Caller, bearer};

pub fn gql_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    let mut resp = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string())
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The caller of an HTTP request, or the error to send: 401 (who are you?), 403 (known, but no
/// role here), 503 with `Retry-After` (the identity provider could not be asked).
pub async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let token = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    app.options.auth.authenticate(token).await.map_err(|e| match e {
        AuthError::Unauthenticated(m) => gql_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &m),
        AuthError::Forbidden(m) => gql_error(StatusCode::FORBIDDEN, "FORBIDDEN", &m),
        AuthError::Unavailable { message, retry_after_secs } => {
            let body = serde_json::json!({"errors": [{"message": message, "extensions": {
                "code": "UNAVAILABLE", "retryAfter": retry_after_secs}}]});
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body.to_string(),
            )
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
    })
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
        // The connection's buffers and subscription state go with it.
        crate::allocator::released();
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

/// CORS for the configured origins only (tower-http's CorsLayer); without configuration no
/// origin matches, so no `Access-Control-Allow-Origin` is sent and browsers keep cross-origin
/// reads blocked.
/// `None` without `--cors-origins`: no CORS headers at all (not even `Vary`).
pub fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        AllowOrigin::list(list)
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT, REQUEST_ID.clone()])
        .expose_headers([REQUEST_ID.clone()])
        .max_age(std::time::Duration::from_secs(600));
    Some(layer)
}

pub static REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The request id of a request (set by the request-id layer before any handler runs).
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// A client's `X-Request-Id` is echoed only when it is sane (1-128 characters of
/// `[A-Za-z0-9._:-]`): anything else could forge log lines or carry a payload, so it is dropped
/// and the request-id layer generates a fresh one.
pub fn sanitize_request_id(mut req: Request<Body>) -> Request<Body> {
    let sane = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
    };
    let mut values = req.headers().get_all(&REQUEST_ID).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() || first.is_some_and(|v| !sane(v)) {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// The span of the access log line: method, path and request id.
pub fn access_log_span(req: &Request<Body>) -> tracing::Span {
    tracing::info_span!(
        "request",
        // As `&str`: the text format writes a plain token without any formatting machinery.
        method = req.method().as_str(),
        path = req.uri().path(),
        request_id = request_id(req.headers()).unwrap_or("-"),
    )
}

/// Counts every response by status code, and gives every error status the HTTP layer answers (413 from the body limit, 405 from the router,
/// 415, 429, ...) gets a GraphQL-shaped JSON body `{"errors": [{"message", "extensions":
/// {"code", "requestId"}}]}`; JSON error bodies made by the handlers get the request id added.
pub async fn json_errors(State(app): State<AppState>, req: Request<Body>, next: Next) -> Response {
    // Kept as the request's own (reference-counted) values; made into strings only for an error.
    let request_id = req.headers().get(&REQUEST_ID).cloned();
    let uri = req.uri().clone();
    let http1 = req.version() <= axum::http::Version::HTTP_11;
    let mut resp = next.run(req).await;
    let status = resp.status();
    app.metrics.count_status(status.as_u16());
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = uri.path();
    // A body refused as too large was not read to its end: the rest of it is still on the
    // connection, so the connection cannot carry another request. Saying so lets the client
    // open a new one instead of reusing this one and losing its next request.
    if status == StatusCode::PAYLOAD_TOO_LARGE && http1 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_json =
        content_type.starts_with("application/json") || content_type.starts_with("application/graphql-response+json");
    let (mut parts, body) = resp.into_parts();
    // Error bodies are small; a larger one is passed on untouched rather than buffered.
    let bytes = match axum::body::to_bytes(body, 256 * 1024).await {
        Ok(b) => b,
        Err(_) => return (parts, Body::empty()).into_response(),
    };
    let mut value = if is_json { serde_json::from_slice::<serde_json::Value>(&bytes).ok() } else { None };
    if value.is_none() {
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        let max = app.options.max_body_bytes;
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                format!("the request body is too large; the limit is {max} bytes (--max-body-bytes)")
            }
            StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not accept this method; see the Allow header"),
            StatusCode::NOT_FOUND if text.is_empty() => format!("no such path: {path}"),
            _ if !text.is_empty() && text.len() <= 1024 => text,
            _ => status.canonical_reason().unwrap_or("error").to_string(),
        };
        value =
            Some(serde_json::json!({"errors": [{"message": message, "extensions": {"code": status_code(status)}}]}));
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let Some(mut value) = value else {
        return (parts, Body::from(bytes)).into_response();
    };
    if let (Some(id), Some(errors)) = (&request_id, value.get_mut("errors").and_then(|e| e.as_array_mut())) {
        for e in errors {
            if let Some(obj) = e.as_object_mut() {
                let ext = obj.entry("extensions").or_insert_with(|| serde_json::json!({}));
                if let Some(ext) = ext.as_object_mut() {
                    ext.entry("requestId").or_insert_with(|| serde_json::Value::String(id.clone()));
                }
            }
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, Body::from(value.to_string())).into_response()
}

/// The `extensions.code` for an HTTP error status.
fn status_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        s if s.is_client_error() => "VALIDATION_FAILED",
        _ => "INTERNAL",
    }
}
