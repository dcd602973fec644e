//! The GraphQL layer: maps core types and errors, holds no business logic.

pub mod errors;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::{Context, Schema};
use std::sync::Arc;

use crate::catalog::plugins::PluginKind;
use crate::catalog::service::Catalog;

pub type CatalogSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Who is calling; recorded as the actor on revisions and jobs.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
}

pub fn build_schema(
    catalog: Option<Arc<Catalog>>,
    gauge: Option<Arc<subscription::SubscriptionGauge>>,
) -> CatalogSchema {
    let mut b = Schema::build(query::Query, mutation::Mutation, subscription::Subscription);
    if let Some(c) = catalog {
        b = b.data(c);
    }
    if let Some(g) = gauge {
        b = b.data(g);
    }
    b.finish()
}

/// The SDL as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, None).sdl()
}

pub(crate) fn catalog<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Catalog>> {
    ctx.data::<Arc<Catalog>>()
}

pub(crate) fn actor(ctx: &Context<'_>) -> String {
    ctx.data_opt::<Caller>().map(|c| c.name.clone()).unwrap_or_else(|| "anonymous".to_string())
}

pub(crate) fn plugin(name: &str) -> async_graphql::Result<PluginKind> {
    PluginKind::parse(name).ok_or_else(|| {
        let known: Vec<&str> = PluginKind::ALL.iter().map(|p| p.name()).collect();
        errors::not_found(format!("plugin `{name}` does not exist; known plugins: {}", known.join(", ")))
    })
}
