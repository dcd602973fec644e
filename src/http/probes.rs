//! `/healthz` (the process answers) and `/readyz` (config loaded, first refresh done, database
//! reachable), with a JSON body naming each check.

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
    let checks = app.catalog.readiness().await;
    let ready = checks.iter().all(|c| c.ok);
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "failed": failed,
            "checks": checks,
        })),
    )
}
