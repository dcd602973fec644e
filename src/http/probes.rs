//! `/healthz` (the process answers) and `/readyz` (config loaded, first refresh done, database
//! reachable; with several replicas, the change feed listening), with a JSON body naming each
//! check and, in `degraded`, the sources still loading (url sources whose hosts did not answer
//! within `--ready-wait`: they do not fail readiness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({"status": "ok"})))
}

pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let mut checks = app.catalog.readiness().await;
    // Several replicas: a replica whose LISTEN connection is down would serve stale data.
    if let Some((ok, detail)) = app.catalog.change_feed_check() {
        checks.push(catalog_core::ReadyCheck { name: "changeFeed", ok, detail });
    }
    let ready = checks.iter().all(|c| c.ok);
    // Ready or not, sources still loading (url sources past --ready-wait) are named: degraded,
    // not failed.
    // So is an invalid configuration while the last good one is served ("config").
    let mut degraded = if ready { app.catalog.loading_sources() } else { Vec::new() };
    if ready && !app.catalog.config_errors().is_empty() {
        degraded.insert(0, "config".to_string());
    }
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "failed": failed,
            "degraded": degraded,
            "checks": checks,
        })),
    )
}
