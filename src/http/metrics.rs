//! `GET /metrics` in Prometheus text format, and the HTTP-side counters.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use moka::sync::Cache;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::AppState;
use catalog_core::DURATION_BUCKETS;

/// Distinct client-chosen operation names that may become a label; the rest count as `other`.
pub const MAX_OPERATION_NAMES: usize = 200;

pub struct HttpMetrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    /// operation label → outcome → count (nested, so counting an existing pair allocates nothing).
    operations: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Operation names admitted as labels (at most [`MAX_OPERATION_NAMES`]).
    names: Mutex<HashSet<String>>,
    /// sha256 of the normalised documents seen so far (bounded), so a name is used only for a
    /// document that is not one-off.
    seen: Cache<String, ()>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Mutex::default(),
            operations: Mutex::default(),
            names: Mutex::default(),
            seen: Cache::new(10_000),
        }
    }
}

impl HttpMetrics {
    /// The `operation` label: the client's name only for a trusted document or one seen before
    /// (including APQ-registered ones), and only for the first [`MAX_OPERATION_NAMES`] distinct
    /// names; otherwise `other`. Keeps the series count bounded whatever clients send.
    /// `normalized_digest` is the sha256 (hex) of the document's normalised text.
    pub fn operation_label(&self, name: Option<&str>, normalized_digest: &str, known: bool) -> String {
        let present = self.seen.contains_key(normalized_digest);
        if !present {
            self.seen.insert(normalized_digest.to_string(), ());
        }
        let seen = known || present;
        match name {
            None => "anonymous".into(),
            Some(_) if !seen => "other".into(),
            Some(name) => self.seen_label(name),
        }
    }

    /// The label of a named operation of a document seen before (a cached answer's document).
    pub fn seen_label(&self, name: &str) -> String {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return "other".into();
        }
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.contains(name) {
            return name.to_string();
        }
        if names.len() < MAX_OPERATION_NAMES {
            names.insert(name.to_string());
            return name.to_string();
        }
        "other".into()
    }

    /// Counts one response by its status code.
    pub fn count_status(&self, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(status).or_insert(0) += 1;
    }

    pub fn operation(&self, name: &str, outcome: &str) {
        let mut m = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        let outcomes = match m.get_mut(name) {
            Some(o) => o,
            None => m.entry(name.to_string()).or_default(),
        };
        match outcomes.get_mut(outcome) {
            Some(n) => *n += 1,
            None => {
                outcomes.insert(outcome.to_string(), 1);
            }
        }
    }
}

fn gauge_line(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(&mut out, "catalog_bff_http_requests_total", "counter", "HTTP responses by status code.");
    for (status, n) in app.metrics.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "catalog_bff_http_requests_total{{status=\"{status}\"}} {n}");
    }
    head(
        &mut out,
        "catalog_bff_graphql_operations_total",
        "counter",
        "GraphQL operations over HTTP by operation name and outcome (ok or error code).",
    );
    for (name, outcomes) in app.metrics.operations.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        for (outcome, n) in outcomes {
            let _ = writeln!(
                out,
                "catalog_bff_graphql_operations_total{{operation=\"{}\",outcome=\"{}\"}} {n}",
                esc(name),
                esc(outcome)
            );
        }
    }
    let stats = app.catalog.refresh_stats();
    head(&mut out, "refresh_operations_total", "counter", "Source refreshes by plugin and status.");
    for ((plugin, status), n) in &stats.counts {
        let _ = writeln!(out, "refresh_operations_total{{plugin=\"{}\",status=\"{status}\"}} {n}", esc(plugin));
    }
    let (interval, retry, cancelled) = app.catalog.scheduled_counts();
    head(
        &mut out,
        "catalog_bff_scheduled_refreshes_total",
        "counter",
        "Refreshes the scheduler started on this replica: on a source's interval, or as a retry of a failed refresh.",
    );
    let _ = writeln!(out, "catalog_bff_scheduled_refreshes_total{{reason=\"interval\"}} {interval}");
    let _ = writeln!(out, "catalog_bff_scheduled_refreshes_total{{reason=\"retry\"}} {retry}");
    head(&mut out, "catalog_bff_cancelled_jobs_total", "counter", "Refresh jobs cancelled through this replica.");
    let _ = writeln!(out, "catalog_bff_cancelled_jobs_total {cancelled}");
    head(&mut out, "refresh_duration_seconds", "histogram", "Duration of source refreshes.");
    for (plugin, buckets, sum, count) in &stats.durations {
        for (le, n) in DURATION_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(out, "refresh_duration_seconds_bucket{{plugin=\"{}\",le=\"{le}\"}} {n}", esc(plugin));
        }
        let _ = writeln!(out, "refresh_duration_seconds_bucket{{plugin=\"{}\",le=\"+Inf\"}} {count}", esc(plugin));
        let _ = writeln!(out, "refresh_duration_seconds_sum{{plugin=\"{}\"}} {sum}", esc(plugin));
        let _ = writeln!(out, "refresh_duration_seconds_count{{plugin=\"{}\"}} {count}", esc(plugin));
    }
    let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
        head(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    gauge(
        "catalog_bff_cache_hits_total",
        "counter",
        "Query responses served from the cache.",
        app.cache.hits.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "catalog_bff_cache_misses_total",
        "counter",
        "Cacheable queries that were executed.",
        app.cache.misses.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "catalog_bff_subscriptions_active",
        "gauge",
        "Open GraphQL subscriptions.",
        app.subscriptions.0.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        "catalog_bff_connections_open",
        "gauge",
        "Open WebSocket and SSE connections.",
        app.connections.load(Ordering::Relaxed).to_string(),
    );
    if let Some(admission) = &app.options.admission {
        let a = admission.stats();
        gauge(
            "catalog_bff_http_connections_admitted",
            "gauge",
            "Open HTTP connections admitted within the connection budget (WebSockets included).",
            a.open.to_string(),
        );
        head(
            &mut out,
            "catalog_bff_http_connections_refused_total",
            "counter",
            "Connections over a limit (answered 503, probes excepted), by the limit: per_address (--max-connections-per-ip) or budget (from the file-descriptor limit); dropped: closed at once, the pool answering refusals being full.",
        );
        for (reason, n) in [("per_address", a.refused_per_ip), ("budget", a.refused_budget), ("dropped", a.dropped)] {
            let _ = writeln!(out, "catalog_bff_http_connections_refused_total{{reason=\"{reason}\"}} {n}");
        }
        gauge_line(
            &mut out,
            "catalog_bff_http_connections_evicted_total",
            "counter",
            "Idle connections closed to admit new ones, the connection budget being spent.",
            a.evicted,
        );
    }
    let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
        head(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    gauge(
        "catalog_bff_refresh_jobs_running",
        "gauge",
        "Refresh jobs in progress.",
        app.catalog.running_jobs().to_string(),
    );
    gauge(
        "catalog_bff_catalog_generation",
        "counter",
        "Visible catalog changes since start.",
        app.catalog.generation().to_string(),
    );
    // Outgoing webhooks (this replica's deliveries and events).
    let w = app.catalog.webhook_stats();
    head(
        &mut out,
        "catalog_bff_webhook_deliveries_total",
        "counter",
        "Webhook delivery attempts by outcome: delivered (2xx), retried (failed, will be retried), failed (given up after --webhook-retry-for).",
    );
    for (outcome, n) in [("delivered", w.delivered), ("retried", w.retried), ("failed", w.failed)] {
        let _ = writeln!(out, "catalog_bff_webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}");
    }
    gauge_line(
        &mut out,
        "catalog_bff_webhook_deliveries_queued_total",
        "counter",
        "Webhook deliveries queued by this replica (one per event and receiver).",
        w.enqueued,
    );
    gauge_line(
        &mut out,
        "catalog_bff_webhook_events_lost_total",
        "counter",
        "Events dropped for webhooks because the in-memory queue was full (the database was unreachable for long).",
        w.lost,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
