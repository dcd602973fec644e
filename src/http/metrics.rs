//! `GET /metrics` in Prometheus text format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::AppState;

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric(
        "catalog_bff_cache_hits_total",
        "counter",
        "Query responses served from the cache.",
        app.cache.hits.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "catalog_bff_cache_misses_total",
        "counter",
        "Cacheable queries that were executed.",
        app.cache.misses.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "catalog_bff_subscriptions_active",
        "gauge",
        "Open GraphQL subscriptions.",
        app.subscriptions.0.load(Ordering::Relaxed).to_string(),
    );
    metric(
        "catalog_bff_refresh_jobs_running",
        "gauge",
        "Refresh jobs in progress.",
        app.catalog.jobs.running_count().to_string(),
    );
    metric(
        "catalog_bff_catalog_generation",
        "counter",
        "Visible catalog changes since start.",
        app.catalog.generation().to_string(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
