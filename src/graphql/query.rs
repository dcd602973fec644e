//! Queries: plugins, sources, entities, jobs, validation.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, ID, Object, Result, SimpleObject};

use super::catalog;
use super::errors::{self, invalid_input, to_graphql};
use super::history::{self, Cursor, HistoryConnection};
use super::mutation::SourceInput;
use super::types::{CatalogEntity, Plugin, RefreshJob, Source, ValidationReport};
use catalog_core::EntityCursor;

pub struct Query;

/// One audited change (or refused attempt): who, what, on which source, and the outcome.
#[derive(SimpleObject)]
pub struct AuditRecord {
    /// Who asked: the caller's name (`unauthenticated` when the request had no valid token).
    pub actor: String,
    /// Which mutation was called.
    pub action: super::audit::AuditAction,
    /// The plugin named in the request (as sent, possibly unknown when the call was refused).
    pub plugin: String,
    /// The source named in the request; null for a whole-plugin refresh or a refused call.
    pub source_id: Option<ID>,
    /// The revision current after the change; null for refreshes and failed calls.
    pub revision: Option<i32>,
    /// `OK` or the error code the call failed with.
    pub outcome: super::audit::AuditOutcome,
    /// When the call was made.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl From<catalog_core::AuditRow> for AuditRecord {
    fn from(r: catalog_core::AuditRow) -> Self {
        AuditRecord {
            actor: r.actor,
            action: super::audit::AuditAction::parse(&r.action),
            plugin: r.plugin,
            source_id: r.source_id.map(ID::from),
            revision: r.revision,
            outcome: super::audit::AuditOutcome::parse(&r.outcome),
            at: r.created_at,
        }
    }
}

/// What the caller may do, by role.
#[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum CallerRole {
    /// May read everything (secrets redacted), may not change anything.
    Viewer,
    /// May also apply, refresh and roll back sources.
    Operator,
}

/// Who the request is from, as the server sees it: a UI shows or hides its edit controls by
/// `canEdit` (the server refuses a viewer's mutation with `FORBIDDEN` either way).
#[derive(SimpleObject)]
pub struct Viewer {
    /// The caller's name: the token's name with `--auth static`, the Kubernetes user with
    /// `--auth kubernetes`, `anonymous` with `--auth none`.
    pub name: String,
    /// The caller's role.
    pub role: CallerRole,
    /// True when the role allows mutations (an operator).
    pub can_edit: bool,
}

/// Extra fields of the entities connection.
#[derive(SimpleObject)]
pub struct EntityConnectionFields {
    /// Entities matching the filter, across all pages.
    pub total_count: usize,
}

/// Cursors are opaque strings naming (source, entity): stable across refreshes.
pub type EntityConnection = Connection<String, CatalogEntity, EntityConnectionFields, EmptyFields>;

/// Reads. None changes anything; each is answered from the cache when it can be (a mutation
/// invalidates the cache before it returns).
#[Object(name = "CatalogQuery")]
impl Query {
    /// The caller of this request: name, role and whether it may change sources.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Viewer> {
        let caller = super::caller(ctx)?;
        let role = match caller.role {
            crate::auth::Role::Viewer => CallerRole::Viewer,
            crate::auth::Role::Operator => CallerRole::Operator,
        };
        Ok(Viewer { name: caller.name.clone(), role, can_edit: role == CallerRole::Operator })
    }

    /// The plugins this server has, with source and entity counts.
    async fn plugins(&self, ctx: &Context<'_>) -> Result<Vec<Plugin>> {
        Ok(catalog(ctx)?
            .plugins()
            .into_iter()
            .map(|p| Plugin {
                name: p.name.to_string(),
                source_count: p.source_count,
                entity_count: p.entity_count,
                kind: catalog_core::PluginKind::parse(p.name).unwrap_or(catalog_core::PluginKind::Models),
            })
            .collect())
    }

    /// Sources in file order, optionally of one plugin.
    async fn sources(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only this plugin's sources (`models` or `mcp`); all plugins when left out. An unknown plugin is NOT_FOUND."
        )]
        plugin: Option<String>,
    ) -> Result<Vec<Source>> {
        let kind = match plugin.as_deref() {
            Some(p) => Some(errors::plugin("plugin", p)?),
            None => None,
        };
        let list = catalog(ctx)?.sources(kind).await.map_err(to_graphql)?;
        Ok(list.into_iter().map(Source).collect())
    }

    /// One source by plugin and id; null when the plugin has no such source.
    async fn source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source id within the plugin; a malformed id is VALIDATION_FAILED.")] id: ID,
    ) -> Result<Option<Source>> {
        let kind = errors::plugin("plugin", &plugin)?;
        let id = errors::source_id("id", &id)?;
        Ok(catalog(ctx)?.source(kind, id).await.map_err(to_graphql)?.map(Source))
    }

    /// One source by its `globalId` (see `Source.globalId`); null when there is no such source.
    async fn source_by_global_id(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A `Source.globalId`; text that is not one is VALIDATION_FAILED, an unknown plugin NOT_FOUND."
        )]
        global_id: ID,
    ) -> Result<Option<Source>> {
        let Some((plugin, id)) = super::types::parse_global_id(&global_id) else {
            return Err(invalid_input(
                "`globalId` is not a source's globalId",
                "globalId",
                "pass the `globalId` field of a Source as returned by the API",
            ));
        };
        let kind = errors::plugin("globalId", plugin)?;
        let id = errors::source_id("globalId", id)?;
        Ok(catalog(ctx)?.source(kind, id).await.map_err(to_graphql)?.map(Source))
    }

    /// Entities of a plugin, paginated (Relay cursors), with case-insensitive text search over
    /// name, description and provider.
    #[graphql(complexity = "usize::try_from(first.unwrap_or(50).clamp(0, 500)).unwrap_or(500) * child_complexity")]
    async fn entities(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "Only entities of this source (id within the plugin); all sources when left out.")]
        source_id: Option<ID>,
        #[graphql(
            desc = "Case-insensitive text to find in name, description or provider; at most 256 characters (else VALIDATION_FAILED)."
        )]
        search: Option<String>,
        #[graphql(
            validator(minimum = 0, maximum = 500),
            default_with = "Some(50)",
            desc = "Page size, 0 to 500; outside that range the request is refused."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "`pageInfo.endCursor` of the previous page; left out, the first page. A foreign cursor is VALIDATION_FAILED."
        )]
        after: Option<String>,
    ) -> Result<EntityConnection> {
        let kind = errors::plugin("plugin", &plugin)?;
        let source_id = source_id.as_ref().map(|s| errors::source_id("sourceId", s)).transpose()?;
        if let Some(s) = &search
            && s.chars().count() > errors::MAX_SEARCH_LEN
        {
            return Err(invalid_input(
                format!(
                    "`search` is {} characters long; at most {} are allowed",
                    s.chars().count(),
                    errors::MAX_SEARCH_LEN
                ),
                "search",
                "search for a shorter part of a name, description or provider",
            ));
        }
        // The cursor is our own opaque format (source and entity name, see `EntityCursor`): a
        // foreign one gets a clear error with a code rather than a bare parse error.
        let after = match after.as_deref().map(EntityCursor::decode) {
            None => None,
            Some(Some(c)) => Some(c),
            Some(None) => {
                return Err(invalid_input(
                    "`after` is not a cursor of this connection; pass `pageInfo.endCursor` from a previous page",
                    "after",
                    "pass `pageInfo.endCursor` (or an edge's `cursor`) from a previous page of the same query",
                ));
            }
        };
        let first = first.and_then(|f| usize::try_from(f).ok()).unwrap_or(50);
        let page = catalog(ctx)?.entities_page(kind, source_id, search.as_deref(), after.as_ref(), first);
        let mut conn = Connection::with_additional_fields(
            page.has_previous,
            page.has_next,
            EntityConnectionFields { total_count: page.total },
        );
        conn.edges.extend(
            page.items.into_iter().map(|(sid, e, cursor)| Edge::new(cursor.encode(), CatalogEntity::new(sid, e))),
        );
        Ok(conn)
    }

    /// Problems with the sources file on disk (an invalid edit made outside the API); empty
    /// when the file is fine. The last good configuration stays in use meanwhile.
    async fn config_errors(&self, ctx: &Context<'_>) -> Result<Vec<super::types::Diagnostic>> {
        Ok(super::types::diags(catalog(ctx)?.config_errors()))
    }

    /// The audit trail, newest first, a page at a time (Relay connection): who changed what,
    /// and the outcome. Cursors name a record, so new records never shift a page.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(100) * child_complexity")]
    async fn audit_log_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, desc = "Page size, 1 to 100; more is VALIDATION_FAILED naming the cap (100).")]
        first: i32,
        #[graphql(
            desc = "`pageInfo.endCursor` of the previous page; left out, the newest records. A foreign cursor is VALIDATION_FAILED."
        )]
        after: Option<String>,
        #[graphql(desc = "Only records naming this plugin (as sent by the caller); all when left out.")] plugin: Option<
            String,
        >,
        #[graphql(desc = "Only records naming this source id; all when left out.")] source_id: Option<ID>,
    ) -> Result<HistoryConnection<AuditRecord>> {
        let first = history::page_size(first)?;
        let before = match history::after(after.as_deref(), |c| matches!(c, Cursor::Audit(_)))? {
            Some(Cursor::Audit(id)) => Some(id),
            _ => None,
        };
        let cat = catalog(ctx)?;
        let sid = source_id.as_ref().map(|s| s.as_str());
        // Database calls are boxed in these resolvers: their futures are large, and unboxed
        // they would size (and be moved with) every root field's resolution, `sources` too.
        let rows = Box::pin(cat.audit_page(before, plugin.as_deref(), sid, first + 1)).await.map_err(to_graphql)?;
        let total = Box::pin(cat.audit_count(plugin.as_deref(), sid)).await.map_err(to_graphql)?;
        let has_next = rows.len() as u64 > first;
        let items = rows
            .into_iter()
            .take(usize::try_from(first).unwrap_or(usize::MAX))
            .map(|r| (Cursor::Audit(r.id).encode(), AuditRecord::from(r)));
        Ok(history::connection(items, before.is_some(), has_next, total))
    }

    /// Refresh jobs, newest first, a page at a time (Relay connection). Cursors name a job, so
    /// new jobs never shift a page.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(100) * child_complexity")]
    async fn refresh_jobs_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "Page size, 1 to 100; more is VALIDATION_FAILED naming the cap (100).")]
        first: i32,
        #[graphql(
            desc = "`pageInfo.endCursor` of the previous page; left out, the newest jobs. A foreign cursor is VALIDATION_FAILED."
        )]
        after: Option<String>,
    ) -> Result<HistoryConnection<RefreshJob>> {
        let first = history::page_size(first)?;
        let before = match history::after(after.as_deref(), |c| matches!(c, Cursor::Job(..)))? {
            Some(Cursor::Job(at, id)) => Some((at, id)),
            _ => None,
        };
        let page = Box::pin(catalog(ctx)?.jobs_page(before.as_ref().map(|(at, id)| (*at, id.as_str())), first))
            .await
            .map_err(to_graphql)?;
        let items = page.items.into_iter().map(|(job, at)| (Cursor::Job(at, job.id.clone()).encode(), RefreshJob(job)));
        Ok(history::connection(items, before.is_some(), page.has_next, page.total))
    }

    /// The audit trail, newest first: who changed what, and the outcome.
    #[graphql(
        complexity = "usize::try_from(limit.clamp(1, 1000)).unwrap_or(1000) * child_complexity",
        deprecation = "use auditLogConnection (cursor paging)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default = 50,
            desc = "How many records, 1 to 1000; outside that range the error is VALIDATION_FAILED naming the range."
        )]
        limit: i32,
    ) -> Result<Vec<AuditRecord>> {
        let limit = errors::in_range("limit", limit, 1, 1000)?;
        let rows = Box::pin(catalog(ctx)?.audit_log(u64::try_from(limit).unwrap_or(50))).await.map_err(to_graphql)?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    /// Recent refresh jobs, newest first.
    #[graphql(
        complexity = "usize::try_from(limit.clamp(1, 500)).unwrap_or(500) * child_complexity",
        deprecation = "use refreshJobsConnection (cursor paging)"
    )]
    async fn refresh_jobs(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default = 20,
            desc = "How many jobs, 1 to 500; outside that range the error is VALIDATION_FAILED naming the range."
        )]
        limit: i32,
    ) -> Result<Vec<RefreshJob>> {
        let limit = errors::in_range("limit", limit, 1, 500)?;
        let jobs = Box::pin(catalog(ctx)?.recent_jobs(u64::try_from(limit).unwrap_or(20))).await.map_err(to_graphql)?;
        Ok(jobs.into_iter().map(RefreshJob).collect())
    }

    /// One refresh job by id (running or finished); null when there is no such job.
    async fn refresh_job(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The job's `id`, as returned by `refreshSource`/`refreshPlugin`; a malformed id is VALIDATION_FAILED."
        )]
        id: ID,
    ) -> Result<Option<RefreshJob>> {
        let id = errors::job_id("id", &id)?;
        Ok(Box::pin(catalog(ctx)?.job(id)).await.map_err(to_graphql)?.map(RefreshJob))
    }

    /// Runs every validation layer on a proposed source. Changes nothing.
    async fn validate_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source as it would be applied (the same input `applySource` takes).")] input: SourceInput,
    ) -> Result<ValidationReport> {
        let kind = errors::plugin("plugin", &plugin)?;
        let patch = input.into_patch()?;
        Ok(Box::pin(catalog(ctx)?.validate_source(kind, patch)).await.into())
    }
}
