//! Edge security: authentication of requests, Origin checks for WebSocket and SSE, CORS (off
//! unless origins are configured), the open-connection limit, request ids, and GraphQL-shaped
//! JSON bodies for every error status.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalog_api::ErrorCode;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use super::AppState;
use crate::auth::{AuthError, Caller, bearer};

pub fn gql_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    let mut resp = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string())
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Failed authentications one client address may make per [`FAILURE_WINDOW`]; past them its
/// requests are answered 429 without asking the identity provider (with `--auth kubernetes`,
/// every unknown token is a TokenReview: a client must not be able to send the API server
/// thousands).
pub const MAX_AUTH_FAILURES: u32 = 30;
/// The window of [`MAX_AUTH_FAILURES`].
pub const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Failed authentications per client address in the current window: a bounded cache (moka,
/// already the response cache) whose entries expire with the window. A hand-rolled counter
/// rather than `governor`: what is limited is failures, counted after the fact, and governor's
/// keyed limiter can only be asked by spending a cell.
pub struct AuthFailures(moka::sync::Cache<std::net::IpAddr, std::sync::Arc<std::sync::atomic::AtomicU32>>);

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures(moka::sync::Cache::builder().max_capacity(100_000).time_to_live(FAILURE_WINDOW).build())
    }
}

impl AuthFailures {
    fn exceeded(&self, ip: std::net::IpAddr) -> bool {
        self.0.get(&ip).is_some_and(|n| n.load(Ordering::Relaxed) >= MAX_AUTH_FAILURES)
    }

    fn count(&self, ip: std::net::IpAddr) {
        self.0.get_with(ip, Default::default).fetch_add(1, Ordering::Relaxed);
    }
}

/// The client address the accept loop put on the request, if it did.
pub fn peer(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions.get::<super::connections::PeerAddr>().map(|p| p.0)
}

/// A token's caller, with the limit on failed authentications per client address when the
/// mode calls out for unknown tokens (the WebSocket `connection_init`'s path; HTTP requests go
/// through [`authenticate`]). Over the limit, only tokens the mode already knows are decided.
pub async fn authenticate_token(
    app: &AppState,
    token: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> Result<Caller, AuthError> {
    let auth = &app.options.auth;
    let limited = peer.filter(|_| auth.calls_out());
    if let Some(ip) = limited
        && app.auth_failures.exceeded(ip)
        && !auth.known(token).await
    {
        return Err(AuthError::RateLimited {
            message: format!(
                "too many failed authentications from {ip} ({MAX_AUTH_FAILURES} in {} s); retry later with a valid token",
                FAILURE_WINDOW.as_secs()
            ),
            retry_after_secs: FAILURE_WINDOW.as_secs(),
        });
    }
    let result = auth.authenticate(token).await;
    if let (Err(AuthError::Unauthenticated(_)), Some(ip)) = (&result, limited) {
        app.auth_failures.count(ip);
    }
    result
}

/// The caller of an HTTP request, or the error to send: 401 (who are you?), 403 (known, but no
/// role here), 503 with `Retry-After` (the identity provider could not be asked), 429 with
/// `Retry-After` (this client address failed too often: [`MAX_AUTH_FAILURES`]).
pub async fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Caller, Response> {
    let token = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let result = authenticate_token(app, token, peer).await;
    result.map_err(|e| {
        let (status, code) = match e {
            AuthError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited.as_str()),
            _ => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable.as_str()),
        };
        match e {
            AuthError::Unauthenticated(m) => gql_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, &m),
            AuthError::Forbidden(m) => gql_error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &m),
            AuthError::Unavailable { message, retry_after_secs }
            | AuthError::RateLimited { message, retry_after_secs } => {
                let body = serde_json::json!({"errors": [{"message": message, "extensions": {
                "code": code, "retryAfter": retry_after_secs}}]});
                let mut r =
                    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string())
                        .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
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
        ErrorCode::Forbidden,
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
        catalog_core::memory_released();
    }
}

pub fn too_many_connections() -> Response {
    let mut r = gql_error(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::RateLimited,
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

/// tower-http's `MakeRequestUuid` (a random UUID v4, hyphenated, lower case), encoded into a
/// stack buffer instead of going through `to_string` and a parse.
#[derive(Clone, Copy, Debug, Default)]
pub struct MakeRequestUuid;

impl tower_http::request_id::MakeRequestId for MakeRequestUuid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<tower_http::request_id::RequestId> {
        let mut buffer = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
        HeaderValue::from_str(id).ok().map(tower_http::request_id::RequestId::new)
    }
}

pub use crate::logging::{REQUEST_ID, request_id};

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

/// The layer that counts every response by status code and gives every error status the HTTP
/// layer answers (413 from the body limit, 405 from the router, 415, 429, ...) a GraphQL-shaped
/// JSON body `{"errors": [{"message", "extensions": {"code", "requestId"}}]}`; JSON error bodies
/// made by the handlers get the request id added.
///
/// A hand-written service, not `axum::middleware::from_fn`: that one boxes the inner service
/// and two futures on every request. Here a success costs one status count; only an error
/// response is rewritten, in a boxed future ([`json_error_body`]).
#[derive(Clone)]
pub struct JsonErrorsLayer(pub AppState);

impl<S> tower::Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;
    fn layer(&self, inner: S) -> JsonErrors<S> {
        JsonErrors { inner, app: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct JsonErrors<S> {
    inner: S,
    app: AppState,
}

/// What an error body needs from the request.
struct ErrorContext {
    app: AppState,
    // Kept as the request's own (reference-counted) values; made into strings only for an error.
    request_id: Option<HeaderValue>,
    uri: axum::http::Uri,
    http1: bool,
}

impl<S> tower::Service<Request<Body>> for JsonErrors<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = JsonErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let context = ErrorContext {
            app: self.app.clone(),
            request_id: req.headers().get(&REQUEST_ID).cloned(),
            uri: req.uri().clone(),
            http1: req.version() <= axum::http::Version::HTTP_11,
        };
        JsonErrorsFuture { inner: self.inner.call(req), context: Some(context), rewrite: None }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`JsonErrors`]: the inner response, counted; an error one rewritten.
    pub struct JsonErrorsFuture<F> {
        #[pin]
        inner: F,
        context: Option<ErrorContext>,
        rewrite: Option<futures_util::future::BoxFuture<'static, Response>>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for JsonErrorsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(rewrite) = this.rewrite.as_mut() {
            return rewrite.as_mut().poll(cx).map(Ok);
        }
        let Ok(resp) = std::task::ready!(this.inner.as_mut().poll(cx));
        let Some(context) = this.context.take() else { return Poll::Ready(Ok(resp)) };
        let status = resp.status();
        context.app.metrics.count_status(status.as_u16());
        if !(status.is_client_error() || status.is_server_error()) {
            return Poll::Ready(Ok(resp));
        }
        let mut rewrite = Box::pin(json_error_body(context, resp));
        let out = rewrite.as_mut().poll(cx).map(Ok);
        *this.rewrite = Some(rewrite);
        out
    }
}

/// The GraphQL-shaped body of an error response (see [`JsonErrorsLayer`]).
async fn json_error_body(context: ErrorContext, mut resp: Response) -> Response {
    let ErrorContext { app, request_id, uri, http1 } = context;
    let status = resp.status();
    let request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = uri.path();
    // A body refused as too large, or not sent in time, was not read to its end: the rest of
    // it is still on the connection, so the connection cannot carry another request. Saying
    // so lets the client open a new one instead of reusing this one and losing its next request.
    if (status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT) && http1 {
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

/// tower-http's `DefaultPredicate` for response compression (bodies of at least 32 bytes that
/// are not gRPC, images or event streams: SSE must flush event by event), reading
/// `Content-Type` once instead of once per excluded type.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompressPredicate;

impl tower_http::compression::Predicate for CompressPredicate {
    fn should_compress<B: axum::body::HttpBody>(&self, response: &axum::http::Response<B>) -> bool {
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let excluded = |prefix: &str, except: Option<&str>| {
            content_type.starts_with(prefix) && !except.is_some_and(|e| content_type.starts_with(e))
        };
        !excluded("application/grpc", Some("application/grpc-web"))
            && !excluded("image/", Some("image/svg+xml"))
            && !excluded("text/event-stream", None)
            // tower-http's default minimum size.
            && tower_http::compression::predicate::SizeAbove::new(32).should_compress(response)
    }
}

/// The `extensions.code` for an HTTP error status.
fn status_code(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::ValidationFailed,
        _ => ErrorCode::Internal,
    }
}
