//! The GraphQL layer: maps core types and errors, holds no business logic.

pub mod audit;
pub mod errors;
pub mod extensions;
pub mod guards;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::{Context, Schema};
use std::sync::Arc;

use crate::catalog::plugins::PluginKind;
use crate::catalog::service::Catalog;

pub type CatalogSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

pub use crate::auth::Caller;

/// Schema-level limits and guardrails.
#[derive(Clone)]
pub struct SchemaOptions {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub limits: extensions::Limits,
    pub trusted: Option<extensions::TrustedDocuments>,
    pub trusted_exempt: Option<crate::auth::Role>,
    /// Changes (apply, refresh, rollback) per caller per minute; 0 = unlimited.
    pub changes_per_minute: u32,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        SchemaOptions {
            max_depth: 16,
            max_complexity: 1000,
            limits: extensions::Limits::default(),
            trusted: None,
            trusted_exempt: None,
            changes_per_minute: 60,
        }
    }
}

pub fn build_schema(
    catalog: Option<Arc<Catalog>>,
    gauge: Option<Arc<subscription::SubscriptionGauge>>,
    options: &SchemaOptions,
) -> CatalogSchema {
    let guardrails =
        extensions::Guardrails::new(options.limits.clone(), options.trusted.clone(), options.trusted_exempt);
    let mut b = Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        .limit_depth(options.max_depth)
        .limit_complexity(options.max_complexity)
        .extension(extensions::GuardrailsFactory(Arc::new(guardrails)))
        .data(guards::RateLimiter::new(options.changes_per_minute));
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
    build_schema(None, None, &SchemaOptions::default()).sdl()
}

pub(crate) fn catalog<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Catalog>> {
    ctx.data::<Arc<Catalog>>()
}

pub(crate) fn actor(ctx: &Context<'_>) -> String {
    ctx.data_opt::<Caller>().map(|c| c.name.clone()).unwrap_or_else(|| "unauthenticated".to_string())
}

pub(crate) fn plugin(name: &str) -> async_graphql::Result<PluginKind> {
    PluginKind::parse(name).ok_or_else(|| {
        let known: Vec<&str> = PluginKind::ALL.iter().map(|p| p.name()).collect();
        errors::not_found(format!("plugin `{name}` does not exist; known plugins: {}", known.join(", ")))
    })
}
