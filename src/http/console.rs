//! The operator console at `/`: static files embedded in the binary. Placeholder: no routes yet.

use axum::Router;

use super::AppState;

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
