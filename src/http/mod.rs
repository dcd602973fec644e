//! HTTP: the axum router, the GraphQL endpoint (POST/GET), subscriptions over WebSocket and
//! SSE, GraphiQL, probes and metrics, with authentication, origin checks, CORS and limits.

pub mod graphql;
pub mod metrics;
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
use crate::catalog::service::Catalog;
use crate::graphql::subscription::SubscriptionGauge;
use crate::graphql::{CatalogSchema, SchemaOptions};

#[derive(Clone)]
pub struct HttpOptions {
    pub cache_ttl: Duration,
    pub cache_size: u64,
    /// Interval of keep-alive pings on WebSocket and SSE subscriptions.
    pub keepalive: Duration,
    pub auth: Arc<dyn Authenticator>,
    /// Origins allowed to open WebSocket/SSE connections besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Origins that get CORS headers; empty = CORS off.
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// Requests per batch; 0 turns batching off.
    pub max_batch: usize,
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    /// WebSocket limits: message size, `connection_init` timeout.
    pub ws: ws::WsOptions,
    pub schema: SchemaOptions,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            cache_ttl: Duration::from_secs(30),
            cache_size: 10_000,
            keepalive: Duration::from_secs(15),
            auth: Arc::new(NoAuth),
            allowed_origins: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            max_batch: 10,
            max_connections: 1000,
            max_subscriptions_per_connection: 20,
            ws: ws::WsOptions::default(),
            schema: SchemaOptions::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub schema: CatalogSchema,
    pub cache: Arc<ResponseCache>,
    pub subscriptions: Arc<SubscriptionGauge>,
    pub connections: Arc<AtomicUsize>,
    pub metrics: Arc<metrics::HttpMetrics>,
    pub options: HttpOptions,
}

pub fn router(catalog: Arc<Catalog>, options: HttpOptions) -> Router {
    let subscriptions = Arc::new(SubscriptionGauge::default());
    let schema = crate::graphql::build_schema(Some(catalog.clone()), Some(subscriptions.clone()), &options.schema);
    let cache = Arc::new(ResponseCache::new(options.cache_ttl, options.cache_size));
    let state = AppState {
        catalog,
        schema,
        cache,
        subscriptions,
        connections: Arc::new(AtomicUsize::new(0)),
        metrics: Arc::new(metrics::HttpMetrics::default()),
        options,
    };
    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(ws::upgrade))
        .route("/graphql/stream", get(sse::get).post(sse::post))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(metrics::metrics))
        // Bodies are read in full by the handlers, which enforce the limit with a clear error;
        // this cap (a little above it) stops a huge upload before it is buffered.
        .layer(axum::extract::DefaultBodyLimit::max(state.options.max_body_bytes.saturating_add(1024)))
        .layer(axum::middleware::from_fn_with_state(state.clone(), security::cors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .with_state(state)
}
