//! The GraphQL layer: maps core types and errors, holds no business logic.

pub mod audit;
mod document_cost;
pub mod errors;
pub mod extensions;
pub mod guards;
pub mod history;
pub mod mutation;
pub mod query;
pub mod subscription;
pub mod types;

use async_graphql::{Context, Schema};
use std::sync::Arc;

use catalog_core::Catalog;
use catalog_core::PluginKind;

pub type CatalogSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

pub use crate::auth::Caller;

/// The authenticated caller of a request (the HTTP layer puts it in the request's data), or
/// UNAUTHENTICATED.
pub fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Caller> {
    use async_graphql::ErrorExtensions;
    ctx.data_opt::<Caller>().ok_or_else(|| {
        async_graphql::Error::new("authentication required: send Authorization: Bearer <token>")
            .extend_with(|_, e| e.set("code", catalog_api::ErrorCode::Unauthenticated.as_str()))
    })
}

/// Schema-level limits and guardrails. Depth and complexity live in `limits`: the guardrails
/// extension checks them (not the schema) so the error names the limit and its flag.
#[derive(Clone)]
pub struct SchemaOptions {
    pub limits: extensions::Limits,
    pub trusted: Option<extensions::TrustedDocuments>,
    pub trusted_exempt: Option<crate::auth::Role>,
    /// Changes (apply, refresh, rollback) per caller per minute; 0 = unlimited.
    pub changes_per_minute: u32,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        SchemaOptions {
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
    build_schema_with(catalog, gauge, options, guardrails(options))
}

/// The guardrails for `options`; the HTTP layer shares them with the schema (document
/// resolution and limits before the cache lookup).
pub fn guardrails(options: &SchemaOptions) -> Arc<extensions::Guardrails> {
    Arc::new(extensions::Guardrails::new(options.limits.clone(), options.trusted.clone(), options.trusted_exempt))
}

pub fn build_schema_with(
    catalog: Option<Arc<Catalog>>,
    gauge: Option<Arc<subscription::SubscriptionGauge>>,
    options: &SchemaOptions,
    guardrails: Arc<extensions::Guardrails>,
) -> CatalogSchema {
    let mut b = Schema::build(query::Query, mutation::Mutation, subscription::Subscription)
        // The built-in scalars' texts are generic ("Implement the DateTime<Utc> scalar"): the
        // UI team reads ours, which say the formats.
        .override_output_type_description::<chrono::DateTime<chrono::Utc>>(DATE_TIME_DESC)
        .override_output_type_description::<async_graphql::ID>(ID_DESC)
        .override_input_type_description::<async_graphql::ID>(ID_DESC)
        .override_output_type_description::<async_graphql::Json<serde_json::Value>>(JSON_DESC)
        .override_input_type_description::<async_graphql::Json<serde_json::Value>>(JSON_DESC)
        .override_output_type_description::<query::EntityConnection>(
            "A page of catalog entities (Relay connection): `edges { cursor node }`, `nodes`, `pageInfo` and `totalCount`.",
        )
        .override_output_type_description::<history::HistoryConnection<types::SourceRevision>>(
            "A page of a source's revisions, newest first (Relay connection): `edges { cursor node }`, `nodes`, `pageInfo` and `totalCount`.",
        )
        .override_output_type_description::<history::HistoryConnection<query::AuditRecord>>(
            "A page of the audit trail, newest first (Relay connection): `edges { cursor node }`, `nodes`, `pageInfo` and `totalCount`.",
        )
        .override_output_type_description::<history::HistoryConnection<types::RefreshJob>>(
            "A page of refresh jobs, newest first (Relay connection): `edges { cursor node }`, `nodes`, `pageInfo` and `totalCount`.",
        )
        .extension(extensions::GuardrailsFactory(guardrails))
        .data(guards::RateLimiter::new(options.changes_per_minute));
    if let Some(c) = catalog {
        b = b.data(c);
    }
    if let Some(g) = gauge {
        b = b.data(g);
    }
    b.finish()
}

const DATE_TIME_DESC: &str = "A point in time as an RFC 3339 string in UTC, e.g. `2026-01-31T12:00:00.123456Z` (always with the `Z` offset; fractional seconds may be present).";
const ID_DESC: &str = "An identifier, sent and received as a string. Which ids are unique where is said on each field: `Source.id` is unique only within its plugin, `Source.globalId` and entity `id`s across the server.";
const JSON_DESC: &str =
    "Any JSON value (here: objects), sent inline, not as a string. Secret-looking keys are redacted in output.";

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

/// The request data every transport adds to a request: the request id (copied into
/// `extensions.requestId` of errors). The response budget is added by the guardrails
/// extension itself, per request, on every transport.
pub fn request_data(request: async_graphql::Request, request_id: Option<&str>) -> async_graphql::Request {
    match request_id {
        Some(id) => request.data(extensions::RequestId(id.to_string())),
        None => request,
    }
}
