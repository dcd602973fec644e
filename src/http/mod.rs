//! HTTP: the axum router, the GraphQL endpoint, GraphiQL and the probes.

pub mod graphql;
pub mod probes;

use axum::Router;
use axum::routing::get;
use std::sync::Arc;

use crate::catalog::service::Catalog;
use crate::graphql::CatalogSchema;

#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub schema: CatalogSchema,
}

pub fn router(catalog: Arc<Catalog>) -> Router {
    let schema = crate::graphql::build_schema(Some(catalog.clone()));
    let state = AppState { catalog, schema };
    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .with_state(state)
}
