//! The pages a browser opens: GraphiQL at `GET /graphql` (a bare GET, see `graphql::get`) and the
//! operator console at `/` (`console`). Placeholder until the offline GraphiQL lands: it still
//! loads GraphiQL from a CDN.

use async_graphql::http::GraphiQLSource;
use axum::Router;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;

/// GraphiQL, for a bare `GET /graphql`.
pub fn graphiql(_app: &AppState) -> Response {
    Html(
        GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").title("catalog-bff").finish(),
    )
    .into_response()
}

/// The page routes: the console (and, later, GraphiQL's assets).
pub fn router() -> Router<AppState> {
    Router::new().merge(super::console::router())
}
