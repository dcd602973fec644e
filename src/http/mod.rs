//! HTTP: the axum router, the GraphQL endpoint (POST/GET), subscriptions over WebSocket and
//! SSE, GraphiQL, probes and metrics.

pub mod graphql;
pub mod metrics;
pub mod probes;
pub mod sse;
pub mod ws;

use axum::Router;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::ResponseCache;
use crate::catalog::service::Catalog;
use crate::graphql::CatalogSchema;
use crate::graphql::subscription::SubscriptionGauge;

#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub cache_ttl: Duration,
    pub cache_size: u64,
    /// Interval of keep-alive pings on WebSocket and SSE subscriptions.
    pub keepalive: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions { cache_ttl: Duration::from_secs(30), cache_size: 10_000, keepalive: Duration::from_secs(15) }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub schema: CatalogSchema,
    pub cache: Arc<ResponseCache>,
    pub subscriptions: Arc<SubscriptionGauge>,
    pub options: HttpOptions,
}

pub fn router(catalog: Arc<Catalog>, options: HttpOptions) -> Router {
    let subscriptions = Arc::new(SubscriptionGauge::default());
    let schema = crate::graphql::build_schema(Some(catalog.clone()), Some(subscriptions.clone()));
    let cache = Arc::new(ResponseCache::new(options.cache_ttl, options.cache_size));
    let state = AppState { catalog, schema, cache, subscriptions, options };
    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(ws::upgrade))
        .route("/graphql/stream", get(sse::get).post(sse::post))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}
