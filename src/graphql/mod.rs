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
pub mod webhooks;

use async_graphql::{Context, Schema};
use std::sync::Arc;

use catalog_core::Catalog;
use catalog_core::PluginKind;

pub type CatalogSchema = Schema<QueryRoot, MutationRoot, subscription::Subscription>;

// The catalog's reads (`query::Query`) merged with the webhook receivers'
// (`webhooks::WebhookQuery`); the parts are named apart (`CatalogQuery`) only for the merge.
/// Reads. None changes anything; each is answered from the cache when it can be (a mutation
/// invalidates the cache before it returns).
#[derive(async_graphql::MergedObject)]
#[graphql(name = "Query")]
pub struct QueryRoot(Boxed<query::Query>, webhooks::WebhookQuery);

// The catalog's changes (`mutation::Mutation`) merged with the webhook receivers'
// (`webhooks::WebhookMutation`); the parts are named apart (`CatalogMutation`) only for the merge.
/// Changes. Each needs the operator role (else FORBIDDEN, or UNAUTHENTICATED without a token),
/// counts against `--changes-per-minute` (RATE_LIMITED), is written to the audit log, and
/// invalidates the cache before it returns.
#[derive(async_graphql::MergedObject)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(Boxed<mutation::Mutation>, webhooks::WebhookMutation);

/// A part of a merged root whose field futures are boxed: the merge nests the part's
/// `resolve_field` future inside two more, and the catalog's mutations (a rollback with its
/// refresh) are deep enough that the extra copies overflowed a runtime worker's stack in a
/// debug build. Boxed, the merge holds a pointer. Everything else is the part's own.
pub struct Boxed<T>(pub T);

impl<T: async_graphql::ContainerType> async_graphql::ContainerType for Boxed<T> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> async_graphql::ServerResult<Option<async_graphql::Value>> {
        Box::pin(self.0.resolve_field(ctx)).await
    }

    async fn find_entity(
        &self,
        ctx: &Context<'_>,
        params: &async_graphql::Value,
    ) -> async_graphql::ServerResult<Option<async_graphql::Value>> {
        Box::pin(self.0.find_entity(ctx, params)).await
    }
}

impl<T: async_graphql::ContainerType> async_graphql::OutputType for Boxed<T> {
    fn type_name() -> std::borrow::Cow<'static, str> {
        T::type_name()
    }

    fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &async_graphql::ContextSelectionSet<'_>,
        _field: &async_graphql::Positioned<async_graphql::parser::types::Field>,
    ) -> async_graphql::ServerResult<async_graphql::Value> {
        async_graphql::resolver_utils::resolve_container(ctx, self).await
    }
}

impl<T: async_graphql::ObjectType> async_graphql::ObjectType for Boxed<T> {}

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
    let query = QueryRoot(Boxed(query::Query), webhooks::WebhookQuery);
    let mutation = MutationRoot(Boxed(mutation::Mutation), webhooks::WebhookMutation);
    let mut b = Schema::build(query, mutation, subscription::Subscription)
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
