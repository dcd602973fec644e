//! HTTP: the axum router, the GraphQL endpoint (POST/GET), subscriptions over WebSocket and
//! SSE, GraphiQL, probes and metrics, with authentication, origin checks, CORS and limits.
//!
//! The edge layers, outermost first: a sanity check on a client's `X-Request-Id`, then
//! tower-http's request-id (set, else generate; echoed on the response), the access log (one
//! line per request with method, path, status, latency and request id, written by a writer
//! thread), compression (never for `text/event-stream`), CORS (only with `--cors-origins`),
//! then one layer that counts responses by status and gives every error status the HTTP layer
//! makes (413, 405, 415, ...) a GraphQL-shaped JSON body carrying the request id.

pub mod body;
pub mod connections;
pub mod console;
pub mod documents;
pub mod fanout;
mod fast_path;
pub mod graphql;
pub mod hooks;
pub mod metrics;
pub mod pages;
pub mod probes;
pub mod security;
pub mod sse;
pub mod ws;

use axum::Router;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::auth::{Authenticator, NoAuth};
use crate::cache::ResponseCache;
use crate::graphql::extensions::Guardrails;
use crate::graphql::subscription::SubscriptionGauge;
use crate::graphql::{CatalogSchema, SchemaOptions};
use catalog_core::Catalog;

#[derive(Clone)]
pub struct HttpOptions {
    pub cache_ttl: Duration,
    pub cache_size: u64,
    /// Response cache: most bytes of keys and bodies held.
    pub cache_max_bytes: u64,
    /// Interval of keep-alive pings on WebSocket and SSE subscriptions.
    pub keepalive: Duration,
    pub auth: Arc<dyn Authenticator>,
    /// Origins allowed to open WebSocket/SSE connections besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Origins that get CORS headers; empty = CORS off.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// A request body must arrive in full within this (`--body-timeout`).
    pub body_timeout: Duration,
    /// Requests per batch; 0 turns batching off.
    pub max_batch: usize,
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    /// WebSocket limits: message size, `connection_init` timeout.
    pub ws: ws::WsOptions,
    pub schema: SchemaOptions,
    /// The accept loop's connection counts, for `/metrics` (`None` when not served by it).
    pub admission: Option<Arc<connections::Admission>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            cache_ttl: Duration::from_secs(30),
            cache_size: 10_000,
            cache_max_bytes: 64 * 1024 * 1024,
            keepalive: Duration::from_secs(15),
            auth: Arc::new(NoAuth),
            allowed_origins: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            max_batch: 10,
            max_connections: 1000,
            max_subscriptions_per_connection: 20,
            ws: ws::WsOptions::default(),
            schema: SchemaOptions::default(),
            admission: None,
        }
    }
}

/// What every handler shares. One `Arc`: the state is cloned for every request (by the router
/// and the layers that hold it), and one reference count costs less than one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub struct AppInner {
    pub catalog: Arc<Catalog>,
    pub schema: CatalogSchema,
    /// The schema's guardrails, shared so the HTTP layer resolves persisted documents and
    /// checks document limits before it decides (GET is read-only) or looks in the cache.
    pub guardrails: Arc<Guardrails>,
    pub cache: Arc<ResponseCache>,
    /// What is known about each distinct document text (limits verdict, operation types).
    pub documents: Arc<documents::DocumentCache>,
    pub subscriptions: Arc<SubscriptionGauge>,
    /// The shared `catalogEvents` streams of WebSocket subscribers (see `fanout.rs`).
    pub fanout: Arc<fanout::Hub>,
    pub connections: Arc<AtomicUsize>,
    /// Failed authentications per client address (see `security::authenticate`).
    pub auth_failures: security::AuthFailures,
    pub metrics: Arc<metrics::HttpMetrics>,
    pub options: Arc<HttpOptions>,
    /// `--rate-limit` for `POST /hooks/refresh/...`, per target (`hooks.rs`).
    pub hook_limits: crate::graphql::guards::RateLimiter,
    /// Failed hook verifications per target (`hooks.rs`).
    pub hook_failures: hooks::HookFailures,
}

/// The application state and the routes, before the edge layers.
fn app(catalog: Arc<Catalog>, options: HttpOptions) -> (AppState, Router) {
    let subscriptions = Arc::new(SubscriptionGauge::default());
    let guardrails = crate::graphql::guardrails(&options.schema);
    let schema = crate::graphql::build_schema_with(
        Some(catalog.clone()),
        Some(subscriptions.clone()),
        &options.schema,
        guardrails.clone(),
    );
    let cache = Arc::new(ResponseCache::new(options.cache_ttl, options.cache_size, options.cache_max_bytes));
    let state = AppState(Arc::new(AppInner {
        catalog,
        schema,
        guardrails,
        cache,
        documents: Arc::new(documents::DocumentCache::default()),
        subscriptions,
        fanout: Arc::new(fanout::Hub::default()),
        connections: Arc::new(AtomicUsize::new(0)),
        auth_failures: security::AuthFailures::default(),
        metrics: Arc::new(metrics::HttpMetrics::default()),
        hook_limits: crate::graphql::guards::RateLimiter::new(options.schema.changes_per_minute),
        hook_failures: hooks::HookFailures::default(),
        options: Arc::new(options),
    }));
    let routes = Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(ws::upgrade))
        .route("/graphql/stream", get(sse::get).post(sse::post))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/hooks/refresh/{plugin}", axum::routing::post(hooks::plugin))
        .route("/hooks/refresh/{plugin}/{id}", axum::routing::post(hooks::source))
        .merge(pages::router())
        .with_state(state.clone());
    (state, routes)
}

/// The HTTP application: the routes inside the edge layers. It is served as it is (axum's
/// `serve` takes any service): wrapping it in a `Router` as a fallback would add a route
/// lookup, a boxed clone of the whole stack and a response conversion to every request.
pub fn router(
    catalog: Arc<Catalog>,
    options: HttpOptions,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    let (state, routes) = app(catalog, options);
    // The edge layers wrap the finished routes once, outermost first. (`Router::layer` would
    // wrap every route in a boxed copy of each layer, and every request would clone that
    // nest of boxes.)
    tower::ServiceBuilder::new()
        .map_response(axum::response::IntoResponse::into_response)
        .map_request(security::sanitize_request_id)
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(security::MakeRequestUuid))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(fast_path::access_log_span)
                .on_request(())
                // `DefaultOnResponse`'s line (INFO, latency in ms), written without an event.
                .on_response(crate::logging::AccessLog)
                // One line per request: the response line already carries a 5xx status.
                .on_failure(()),
        )
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        // The default predicate skips `text/event-stream` (SSE must flush event by event),
        // images and tiny bodies.
        .layer(tower_http::compression::CompressionLayer::new().compress_when(security::CompressPredicate))
        .option_layer(security::cors_layer(&state.options.cors_origins))
        .layer(security::JsonErrorsLayer(state.clone()))
        // Bodies are read in full by the handlers, which enforce the limit with a clear error;
        // this cap (a little above it) stops a huge upload before it is buffered.
        .layer(axum::extract::DefaultBodyLimit::max(state.options.max_body_bytes.saturating_add(1024)))
        .service(fast_path::Routes::new(state, routes))
}
