//! GraphQL object types: thin views over core values. No behaviour lives here.

use async_graphql::{ComplexObject, Context, Enum, Interface, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::catalog;
use super::errors::to_graphql;
use super::extensions::charge_response;
use super::history::{self, Cursor, HistoryConnection};
use catalog_core::SourceView;
use catalog_core::redact_json;
use catalog_core::{Entity, PluginKind, mcp, models};

/// How a source is doing right now; drives the state badge in the sources table.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::SourceState")]
pub enum SourceState {
    /// The last refresh loaded every entity; all of them are served.
    Available,
    /// The last refresh loaded some entities and rejected others (see `diagnostics`).
    PartiallyAvailable,
    /// The last refresh failed; the last good entities (if any) are still served.
    Error,
    /// `enabled: false` in the sources file: nothing is loaded or served.
    Disabled,
    /// Not refreshed yet since the server started (or the first refresh is running).
    Loading,
}

/// Where a refresh job is in its life. `SUCCEEDED`, `FAILED` and `CANCELLED` are final.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::JobPhase")]
pub enum JobPhase {
    /// Accepted, not started yet.
    Queued,
    /// Loading sources; `completed`/`total` and `currentSource` show progress.
    Running,
    /// Every source refreshed (status `SUCCESS` or `PARTIAL`).
    Succeeded,
    /// At least one source failed (see `results`), or the job was interrupted (see `error`).
    Failed,
    /// Ended by `cancelRefreshJob`: the sources in `results` were refreshed before the cancel
    /// and stay refreshed; the others keep what they served (`error` says who cancelled).
    Cancelled,
}

/// The outcome of refreshing one source.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::RefreshStatus")]
pub enum RefreshStatus {
    /// Every entity loaded.
    Success,
    /// Some entities loaded, others were rejected (see `diagnostics`); the loaded ones are served.
    Partial,
    /// Nothing new was loaded; the last good entities stay served.
    Failure,
}

/// How much a refresh reloads.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::RefreshMode")]
pub enum RefreshMode {
    /// Reload every source's content, changed or not.
    Full,
    /// Skip sources whose content is unchanged (same hash or HTTP ETag); they are reported as
    /// `entitiesUnchanged`.
    Incremental,
}

/// How serious a diagnostic is.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::Severity")]
pub enum Severity {
    /// Blocks the apply (or drops the entity on refresh); must be fixed.
    Error,
    /// Accepted, but worth fixing (e.g. an inline secret that should be a SecretRef).
    Warning,
}

/// The validation layers, run in this order; a failing layer stops the later ones.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::Layer")]
pub enum ValidationLayer {
    /// YAML syntax (with line and column).
    Syntax,
    /// Strict fields: unknown or misspelled keys (with the nearest known name).
    Fields,
    /// Meaning: ids, duplicate names, paths, globs.
    Semantics,
    /// The plugin's own rules (e.g. MCP `deploymentMode`, tool `accessType`).
    Plugin,
    /// Security checks: inline secrets (warnings pointing to a SecretRef).
    Security,
}

/// Why a revision was recorded.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::RevisionAction")]
pub enum RevisionAction {
    /// The configuration found on first start (actor `system`).
    Import,
    /// An `applySource` call.
    Apply,
    /// A `rollbackSource` call: a new revision with an older one's content.
    Rollback,
    /// An edit made outside the API (a file edit, `kubectl edit`), picked up by the watcher
    /// (actor `external`).
    External,
}

/// How an MCP server is run. Validation accepts only these (`local`, `remote` in the catalog
/// file); a server with another value is rejected on load.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum McpDeploymentMode {
    /// Run by the user (e.g. the container `image`), usually over `stdio`.
    Local,
    /// Hosted; reached at `endpoints` / `serverUrl`.
    Remote,
}

/// What an MCP tool may do. Validation accepts only these (`read_only`, `read_write`,
/// `execute` in the catalog file); a server with another value is rejected on load.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum McpToolAccessType {
    /// Reads only.
    ReadOnly,
    /// Reads and changes data.
    ReadWrite,
    /// Runs commands or code.
    Execute,
}

/// Maps a catalog word to an enum value; validation makes the set closed, so an unknown word
/// is a bug (or a newer catalog format): logged and shown as null rather than guessed.
fn closed_word<T: Copy>(field: &str, word: Option<&str>, known: &[(&str, T)]) -> Option<T> {
    let word = word?;
    let found = known.iter().find(|(w, _)| *w == word).map(|(_, v)| *v);
    if found.is_none() {
        tracing::warn!(field, value = word, "a catalog value outside the validated set; showing null");
    }
    found
}

/// One problem found by validation or refresh: what, where and how to fix it.
#[derive(SimpleObject)]
pub struct Diagnostic {
    /// The validation layer that found the problem.
    pub layer: ValidationLayer,
    /// `ERROR` blocks the change; `WARNING` does not.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The file the problem is in (the sources file or a catalog file, relative to the data
    /// directory); null for a problem in the request itself.
    pub file: Option<String>,
    /// 1-based line in `file` (or in the submitted `content`); null when not known.
    pub line: Option<u32>,
    /// 1-based column in `file` (or in the submitted `content`); null when not known.
    pub column: Option<u32>,
    /// Field path, e.g. `models[2].licence` or `input.id`; null when the problem is not in one
    /// field.
    pub field: Option<String>,
    /// Nearest known field name, for an unknown field; null otherwise.
    pub suggestion: Option<String>,
    /// How to fix it; null when the message says it all.
    pub hint: Option<String>,
}

impl From<catalog_core::Diagnostic> for Diagnostic {
    fn from(d: catalog_core::Diagnostic) -> Self {
        Diagnostic {
            layer: d.layer.into(),
            severity: d.severity.into(),
            message: d.message,
            file: d.file,
            line: d.line,
            column: d.column,
            field: d.field,
            suggestion: d.suggestion,
            hint: d.hint,
        }
    }
}

pub fn diags(list: Vec<catalog_core::Diagnostic>) -> Vec<Diagnostic> {
    list.into_iter().map(Diagnostic::from).collect()
}

/// The result of one validation layer.
#[derive(SimpleObject)]
pub struct LayerReport {
    /// Which layer this is.
    pub layer: ValidationLayer,
    /// True when the layer ran and found no errors (warnings allowed).
    pub passed: bool,
    /// An earlier layer failed, so this one did not run.
    pub skipped: bool,
    /// What this layer found (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
}

/// Validation outcome, per layer: syntax → fields → semantics → plugin → security.
#[derive(SimpleObject)]
pub struct ValidationReport {
    /// True when there are no errors: an apply of the same input would be accepted.
    pub valid: bool,
    /// Every error, from all layers (each blocks an apply).
    pub errors: Vec<Diagnostic>,
    /// Every warning, from all layers (none blocks an apply).
    pub warnings: Vec<Diagnostic>,
    /// Per-layer results, in the order the layers run.
    pub layers: Vec<LayerReport>,
}

impl From<catalog_core::ValidationReport> for ValidationReport {
    fn from(r: catalog_core::ValidationReport) -> Self {
        ValidationReport {
            valid: r.valid(),
            errors: diags(r.errors().cloned().collect()),
            warnings: diags(r.warnings().cloned().collect()),
            layers: r
                .layers
                .into_iter()
                .map(|l| LayerReport {
                    layer: l.layer.into(),
                    passed: l.passed,
                    skipped: l.skipped,
                    diagnostics: diags(l.diagnostics),
                })
                .collect(),
        }
    }
}

/// What a change does to a source's entities.
#[derive(SimpleObject)]
pub struct Impact {
    /// Entities that would be (or were) added.
    pub to_add: usize,
    /// Entities that exist and would be (or were) changed.
    pub to_update: usize,
    /// Entities that would be (or were) removed. More than half of `currentCount` needs
    /// `confirmRemovals` (else the error code is `REMOVALS_NEED_CONFIRMATION`).
    pub to_remove: usize,
    /// Entities that stay as they are.
    pub unchanged: usize,
    /// Entities served for the source before the change.
    pub current_count: usize,
    /// The first few names of the added entities.
    pub added_names: Vec<String>,
    /// The first few names of the updated entities.
    pub updated_names: Vec<String>,
    /// The first few names of the removed entities.
    pub removed_names: Vec<String>,
}

impl From<catalog_core::Impact> for Impact {
    fn from(i: catalog_core::Impact) -> Self {
        Impact {
            to_add: i.to_add,
            to_update: i.to_update,
            to_remove: i.to_remove,
            unchanged: i.unchanged,
            current_count: i.current_count,
            added_names: i.added_names,
            updated_names: i.updated_names,
            removed_names: i.removed_names,
        }
    }
}

/// A catalog plugin (`models`, `mcp`): one kind of entity, with its sources. `name` is unique
/// across the server: normalising caches can key a plugin by it (Apollo
/// `typePolicies: { Plugin: { keyFields: ["name"] } }`, urql `keys: { Plugin: p => p.name }`).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Plugin {
    /// The plugin's name, unique across the server: `models` or `mcp`. Pass it as the
    /// `plugin` argument elsewhere.
    pub name: String,
    /// Sources configured for this plugin (enabled or not).
    pub source_count: usize,
    /// Entities currently served across the plugin's sources.
    pub entity_count: usize,
    #[graphql(skip)]
    pub kind: PluginKind,
}

#[async_graphql::ComplexObject]
impl Plugin {
    /// The plugin's sources, in file order.
    async fn sources(&self, ctx: &Context<'_>) -> Result<Vec<Source>> {
        let list = catalog(ctx)?.sources(Some(self.kind)).await.map_err(to_graphql)?;
        Ok(list.into_iter().map(Source).collect())
    }
}

pub struct Source(pub SourceView);

/// `Source.globalId`: plugin names and source ids never contain `/`, so the pair splits back
/// unambiguously ([`parse_global_id`]).
pub fn global_id(plugin: PluginKind, id: &str) -> String {
    format!("{}/{id}", plugin.name())
}

/// `(plugin, id)` of a [`global_id`]; `None` when the text has no `/`.
pub fn parse_global_id(text: &str) -> Option<(&str, &str)> {
    text.split_once('/')
}

/// A catalog source: its entry in the sources file, its catalog content and its live status.
///
/// Caching: `id` is unique only within a plugin (a `models` source and an `mcp` source may
/// both be `team`), so a normalising cache must key a source by `globalId`, never by `id`:
/// Apollo `typePolicies: { Source: { keyFields: ["globalId"] } }`, urql
/// `keys: { Source: s => s.globalId }` (select `globalId` wherever a Source is selected).
#[Object]
impl Source {
    /// Unique across the server: a cache key, and the argument of `sourceByGlobalId`. Treat it
    /// as opaque (today it reads `<plugin>/<id>`; do not parse it).
    async fn global_id(&self) -> async_graphql::ID {
        global_id(self.0.plugin, &self.0.entry.id).into()
    }
    /// The source id from the sources file (`^[a-z0-9][a-z0-9_-]*$`), unique only within its
    /// plugin: a `models` source and an `mcp` source may share it.
    async fn id(&self) -> async_graphql::ID {
        self.0.entry.id.clone().into()
    }
    /// The plugin this source belongs to: `models` or `mcp`.
    async fn plugin(&self) -> &str {
        self.0.plugin.name()
    }
    /// Display name (defaults to the id).
    async fn name(&self) -> &str {
        &self.0.entry.name
    }
    /// How the catalog is read: `yaml` (a file beside the sources file, editable through
    /// `content`) or `url` (fetched over HTTP). Kept a String: the sources file's `type` field.
    #[graphql(name = "type")]
    async fn type_(&self) -> &str {
        &self.0.entry.type_
    }
    /// False when the sources file says `enabled: false`: nothing is loaded or served.
    async fn enabled(&self) -> bool {
        self.0.entry.enabled
    }
    /// Free-form labels from the sources file, in file order.
    async fn labels(&self) -> &[String] {
        &self.0.entry.labels
    }
    /// Source properties as a JSON object (e.g. `{"yamlCatalogPath": "models.yaml"}`);
    /// secret-looking keys (password, token, secret, apikey, ...) are redacted.
    async fn properties(&self) -> Json<serde_json::Value> {
        Json(self.0.properties())
    }
    /// Glob patterns: only entities whose name matches one are loaded; null when not set
    /// (everything is included).
    async fn included_models(&self) -> Option<&[String]> {
        self.0.entry.included_models.as_deref()
    }
    /// Glob patterns: entities whose name matches one are not loaded; null when not set.
    async fn excluded_models(&self) -> Option<&[String]> {
        self.0.entry.excluded_models.as_deref()
    }
    /// The catalog YAML of a yaml source (secrets redacted); null for other types.
    // A whole file: costs more than a scalar up front, and takes its size from the response budget.
    #[graphql(complexity = "crate::graphql::extensions::CONTENT_COMPLEXITY")]
    async fn content(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let content = catalog(ctx)?.content(self.0.plugin, &self.0.entry.id);
        charge_response(ctx, content.as_ref().map_or(0, String::len))?;
        Ok(content)
    }
    /// How often the source refreshes on its own, as written in its entry (a Go-style
    /// duration); null when it has none (a url source then uses `--default-refresh-interval`,
    /// see `nextRefreshAt`).
    async fn refresh_interval(&self) -> Option<&str> {
        self.0.entry.refresh_interval.as_deref()
    }
    /// When the source next refreshes on its own: its interval after the last refresh (±10 %),
    /// or its next retry after a failure, whichever is first. Null when it does not (a yaml
    /// source without `refreshInterval`, disabled, suspended, or not loaded yet).
    async fn next_refresh_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_refresh_at
    }
    /// Suspended sources keep serving their last entities and are skipped by the scheduler,
    /// the watcher and plugin-wide refreshes (`suspendSource` / `resumeSource`).
    async fn suspended(&self) -> bool {
        self.0.entry.suspended
    }
    /// The current revision number; pass it as `expectedRevision` to avoid lost updates. Null
    /// when no revision has been recorded yet.
    async fn revision(&self) -> Option<i32> {
        self.0.revision
    }
    /// The live status: state, counts and the last refresh (persisted across restarts).
    async fn status(&self) -> SourceStatus {
        SourceStatus(self.0.status.clone())
    }
    /// Recorded revisions, newest first. For paging through a long history use
    /// `revisionsConnection`.
    // Costs `limit` times the fields selected per revision; out-of-range limits are refused.
    #[graphql(complexity = "usize::try_from(limit.clamp(1, 500)).unwrap_or(500) * child_complexity")]
    async fn revisions(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default = 20,
            desc = "How many revisions, 1 to 500; outside that range the error is VALIDATION_FAILED naming the range."
        )]
        limit: i32,
    ) -> Result<Vec<SourceRevision>> {
        let limit = u64::try_from(super::errors::in_range("limit", limit, 1, 500)?).unwrap_or(20);
        // Boxed (here and below): a database call's future is large, and without the box every
        // field of every `Source` would carry (and move) its size. Measured: moving those
        // futures was ~5% of an uncached `sources` query's CPU.
        let list =
            Box::pin(catalog(ctx)?.revisions(self.0.plugin, &self.0.entry.id, limit)).await.map_err(to_graphql)?;
        Ok(list.into_iter().map(SourceRevision).collect())
    }
    /// Recorded revisions, newest first, a page at a time (Relay connection). Cursors name a
    /// revision, so a page fetched after a new apply neither repeats nor skips one.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(100) * child_complexity")]
    async fn revisions_connection(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "Page size, 1 to 100; more is VALIDATION_FAILED naming the cap (100).")]
        first: i32,
        #[graphql(
            desc = "`pageInfo.endCursor` of the previous page; left out, the newest revisions. A foreign cursor is VALIDATION_FAILED."
        )]
        after: Option<String>,
    ) -> Result<HistoryConnection<SourceRevision>> {
        let first = history::page_size(first)?;
        let before = match history::after(after.as_deref(), |c| matches!(c, Cursor::Revision(_)))? {
            Some(Cursor::Revision(n)) => Some(n),
            _ => None,
        };
        let page = Box::pin(catalog(ctx)?.revisions_page(self.0.plugin, &self.0.entry.id, before, first))
            .await
            .map_err(to_graphql)?;
        let items = page.items.into_iter().map(|r| (Cursor::Revision(r.revision).encode(), SourceRevision(r)));
        Ok(history::connection(items, before.is_some(), page.has_next, page.total))
    }
}

pub struct SourceStatus(pub catalog_core::SourceStatus);

/// A source's live status, persisted in the database (it survives restarts).
#[Object]
impl SourceStatus {
    /// The state badge: available, partially available, error, disabled or loading.
    async fn state(&self) -> SourceState {
        self.0.state.into()
    }
    /// Entities currently served for this source (the last good load).
    async fn entity_count(&self) -> usize {
        self.0.entity_count
    }
    /// When the last refresh finished; null before the first one.
    async fn last_refresh_time(&self) -> Option<DateTime<Utc>> {
        self.0.last_refresh_time
    }
    /// `available`, `partially-available`, `error` (upstream's lower-case words, kept for
    /// compatibility; prefer `state`); null before the first refresh.
    async fn last_refresh_status(&self) -> Option<&str> {
        self.0.last_refresh_status.as_deref()
    }
    /// One line for people, e.g. `loaded 12 entities, removed 1`; null before the first refresh.
    async fn last_refresh_summary(&self) -> Option<&str> {
        self.0.last_refresh_summary.as_deref()
    }
    /// Why the last refresh failed; null when it did not fail.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// Entities the last refresh loaded.
    async fn entities_loaded(&self) -> i64 {
        self.0.entities_loaded
    }
    /// Entities the last refresh removed.
    async fn entities_removed(&self) -> i64 {
        self.0.entities_removed
    }
    /// How long the last refresh took, in milliseconds (0 before the first one).
    async fn duration_ms(&self) -> i64 {
        self.0.duration_ms
    }
    /// Problems the last refresh found (rejected entities, warnings), with line and column.
    async fn diagnostics(&self) -> Vec<Diagnostic> {
        diags(self.0.diagnostics.clone())
    }
    /// Failed refreshes in a row that are being retried automatically (a fetch or a file read
    /// that failed); 0 after a success, and for a failure of the content itself, which is not
    /// retried until the content or the source changes.
    async fn retry_count(&self) -> i32 {
        self.0.retry_count
    }
    /// When the next automatic retry runs (30 s after the first failure, doubling, capped by
    /// `--retry-max-interval`, ±10 %); null when none is due.
    async fn next_retry_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_retry_at
    }
}

pub struct SourceRevision(pub catalog_core::RevisionView);

/// One recorded version of a source (entry and catalog content). History is never rewritten:
/// a rollback records a new revision.
#[Object]
impl SourceRevision {
    /// The revision number, 1 for the first; increases by one per change of this source.
    async fn revision(&self) -> i32 {
        self.0.revision
    }
    /// SHA-256 (hex) of the entry and content: equal hashes mean equal configuration.
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
    /// Why the revision was recorded.
    async fn action(&self) -> RevisionAction {
        match catalog_core::RevisionAction::parse(&self.0.action) {
            Some(a) => a.into(),
            None => {
                // Only this code writes revisions; a foreign word is shown as what it most
                // likely is (a change not made through this API), loudly.
                tracing::warn!(action = %self.0.action, "unknown revision action in the database; showing EXTERNAL");
                RevisionAction::External
            }
        }
    }
    /// Who made the change: the caller's name; `system` for the import on first start,
    /// `external` for an edit made outside the API.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// When the revision was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The source entry at this revision (properties redacted).
    async fn entry(&self) -> Json<serde_json::Value> {
        Json(self.0.entry.clone())
    }
    /// The catalog content at this revision (secrets redacted); null for a non-yaml source.
    #[graphql(complexity = "crate::graphql::extensions::CONTENT_COMPLEXITY")]
    async fn content(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        charge_response(ctx, self.0.content.as_ref().map_or(0, String::len))?;
        Ok(self.0.content.as_deref())
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
/// The outcome of refreshing one source within a job.
pub struct RefreshResult {
    /// The source's plugin: `models` or `mcp`.
    pub plugin: String,
    /// The source id within its plugin.
    pub source_id: async_graphql::ID,
    /// Success, partial (some entities rejected) or failure.
    pub status: RefreshStatus,
    /// Entities served after the refresh.
    pub entities_loaded: usize,
    /// Entities that are new with this refresh.
    pub entities_added: usize,
    /// Entities that this refresh removed.
    pub entities_removed: usize,
    /// Entities that changed with this refresh.
    pub entities_updated: usize,
    /// Entities that stayed the same (all of them when INCREMENTAL skipped unchanged content).
    pub entities_unchanged: usize,
    /// Model artifacts loaded with the entities.
    pub artifacts_loaded: usize,
    /// When this source's refresh started.
    pub started_at: DateTime<Utc>,
    /// When this source's refresh finished.
    pub finished_at: DateTime<Utc>,
    /// How long this source took, in milliseconds.
    pub duration_ms: i64,
    /// One line for people, e.g. `loaded 12 entities, removed 1 in 40 ms`.
    pub summary: String,
    /// True when nothing was swapped in (a dry run only reports the impact).
    pub dry_run: bool,
    /// What the refresh changed (for a dry run: would change), with the first few names.
    pub impact: Impact,
    #[graphql(skip)]
    pub diags: Vec<catalog_core::Diagnostic>,
}

#[ComplexObject]
impl RefreshResult {
    /// Problems found while loading (rejected entities, warnings), with line and column.
    async fn diagnostics(&self) -> Vec<Diagnostic> {
        diags(self.diags.clone())
    }
}

impl From<catalog_core::RefreshResult> for RefreshResult {
    fn from(r: catalog_core::RefreshResult) -> Self {
        RefreshResult {
            plugin: r.plugin,
            source_id: r.source_id.into(),
            status: r.status.into(),
            entities_loaded: r.entities_loaded,
            entities_added: r.entities_added,
            entities_removed: r.entities_removed,
            entities_updated: r.entities_updated,
            entities_unchanged: r.entities_unchanged,
            artifacts_loaded: r.artifacts_loaded,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            summary: r.summary,
            dry_run: r.dry_run,
            impact: r.impact.into(),
            diags: r.diagnostics,
        }
    }
}

pub struct RefreshJob(pub catalog_core::RefreshJob);

/// A refresh of one source or of a whole plugin. Follow it live with
/// `subscription { refreshProgress(jobId) }`, or poll `refreshJob(id)`.
#[Object]
impl RefreshJob {
    /// The job id (a UUID): pass it to `refreshJob(id)` or `refreshProgress(jobId)`.
    async fn id(&self) -> async_graphql::ID {
        self.0.id.clone().into()
    }
    /// The plugin refreshed: `models` or `mcp`; `*` for a `refreshAll` job (every plugin).
    async fn plugin(&self) -> &str {
        &self.0.plugin
    }
    /// The source, for a single-source job; null for a whole-plugin job.
    async fn source_id(&self) -> Option<async_graphql::ID> {
        self.0.source_id.clone().map(async_graphql::ID::from)
    }
    /// Ids of the sources this job refreshes, in order; `plugin/id` in a `refreshAll` job.
    async fn sources(&self) -> Vec<async_graphql::ID> {
        self.0.sources.iter().cloned().map(async_graphql::ID::from).collect()
    }
    /// FULL or INCREMENTAL.
    async fn mode(&self) -> RefreshMode {
        self.0.mode.into()
    }
    /// True when the job only reports what would change and swaps nothing in.
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    /// QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
    async fn phase(&self) -> JobPhase {
        self.0.phase.into()
    }
    /// Sources to refresh in this job (for a progress bar: `completed` of `total`).
    async fn total(&self) -> usize {
        self.0.total
    }
    /// Sources finished so far.
    async fn completed(&self) -> usize {
        self.0.completed
    }
    /// The id of the source being loaded now (`plugin/id` in a `refreshAll` job); null when
    /// none is (queued or done).
    async fn current_source(&self) -> Option<async_graphql::ID> {
        self.0.current_source.clone().map(async_graphql::ID::from)
    }
    /// Why the job as a whole failed (e.g. interrupted by a restart); null otherwise. Per-source
    /// failures are in `results`.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Why the job waits, while it waits for a slot: its yaml sources for a job slot
    /// (`--max-running-jobs`), its url sources for a fetch slot (`--max-running-fetches`), e.g.
    /// "waiting for a fetch slot: 4 refresh jobs are fetching url sources (--max-running-fetches 4)".
    /// Null when nothing of the job waits.
    async fn queued_reason(&self) -> Option<&str> {
        self.0.queued_reason.as_deref()
    }
    /// Who started the job: the caller's name, or `system` for scheduled and startup refreshes.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// When the job was accepted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the job started running; null while queued.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When the job ended; null until it does.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// One result per source finished so far, in order.
    async fn results(&self) -> Vec<RefreshResult> {
        self.0.results.iter().cloned().map(RefreshResult::from).collect()
    }
}

pub struct ApplyResult(pub catalog_core::ApplyOutcome);

/// The outcome of `applySource` / `rollbackSource`: the source as it is now, the revision, what
/// validation found and what changed.
#[Object]
impl ApplyResult {
    /// The source as it is after the apply (and the refresh, when requested).
    async fn source(&self) -> Source {
        Source(self.0.source.clone())
    }
    /// The revision now current; unchanged for a dry run or when nothing changed.
    async fn revision(&self) -> i32 {
        self.0.revision
    }
    /// False when the input matched what was already there (no revision was recorded).
    async fn changed(&self) -> bool {
        self.0.changed
    }
    /// True when `dryRun` was set: nothing was written or recorded.
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    /// What validation found (warnings only: an invalid input fails with VALIDATION_FAILED).
    async fn validation(&self) -> ValidationReport {
        self.0.validation.clone().into()
    }
    /// What the change does to the source's entities (for a dry run: would do).
    async fn impact(&self) -> Impact {
        self.0.impact.clone().into()
    }
    /// The finished refresh job, when `refreshAfterApply` was set; null otherwise.
    async fn refresh(&self) -> Option<RefreshJob> {
        self.0.refresh.clone().map(RefreshJob)
    }
}

// ---- entities ------------------------------------------------------------------------------

/// An entity in a catalog: a `Model` or an `McpServer`.
#[derive(Interface)]
#[expect(clippy::duplicated_attributes, reason = "one `ty` per field is how the derive is spelled")]
#[graphql(
    field(name = "id", ty = "String", desc = "`plugin/sourceId/name`: unique across the server (a cache key)"),
    field(name = "name", ty = "&str", desc = "The entity's name, unique within its source"),
    field(name = "plugin", ty = "&str", desc = "`models` or `mcp`"),
    field(
        name = "source_id",
        ty = "async_graphql::ID",
        desc = "The id (within the plugin) of the source that serves the entity"
    ),
    field(name = "description", ty = "Option<&str>", desc = "Short description; null when the catalog has none"),
    field(name = "provider", ty = "Option<&str>", desc = "Who publishes it; null when the catalog does not say"),
    field(name = "license", ty = "Option<&str>", desc = "License name or SPDX id; null when the catalog does not say")
)]
pub enum CatalogEntity {
    Model(Model),
    McpServer(McpServer),
}

impl CatalogEntity {
    pub fn new(source_id: String, e: Arc<Entity>) -> CatalogEntity {
        match &*e {
            Entity::Model(_) => CatalogEntity::Model(Model { source_id, e }),
            Entity::McpServer(_) => CatalogEntity::McpServer(McpServer { source_id, e }),
        }
    }
}

/// A snapshot's boxed text as the owned `String` a GraphQL field returns.
fn owned(text: &Option<Box<str>>) -> Option<String> {
    text.as_deref().map(str::to_string)
}

/// A snapshot's boxed list of text as a GraphQL list (empty when absent).
fn strings(list: Option<&[Box<str>]>) -> Vec<String> {
    list.unwrap_or_default().iter().map(|s| s.to_string()).collect()
}

fn custom(props: &Option<models::CustomProperties>) -> Option<Json<serde_json::Value>> {
    props.as_ref().map(|p| Json(redact_json(&p.to_json())))
}

pub struct Model {
    source_id: String,
    e: Arc<Entity>,
}

impl Model {
    fn m(&self) -> &models::Model {
        match &*self.e {
            Entity::Model(m) => m,
            // Constructed only from Entity::Model in CatalogEntity::new.
            Entity::McpServer(_) => unreachable!("Model wraps a model entity"),
        }
    }
}

/// A file or endpoint of a model (weights, an OCI image, metrics).
#[derive(SimpleObject)]
pub struct ModelArtifact {
    /// Where the artifact is, e.g. `oci://registry/model:1.0` or `https://...`; null when the
    /// catalog does not say.
    pub uri: Option<String>,
    /// `model-artifact` (the default) or `metrics-artifact`.
    pub artifact_type: String,
    /// For a metrics artifact, which metrics (e.g. `performance-metrics`); null otherwise.
    pub metrics_type: Option<String>,
    /// The artifact's name; null when the catalog has none.
    pub name: Option<String>,
    /// Short description; null when the catalog has none.
    pub description: Option<String>,
    /// Typed custom properties as JSON (`{key: {metadataType, string_value}}`), redacted;
    /// null when there are none.
    pub custom_properties: Option<Json<serde_json::Value>>,
    /// Creation time as the catalog writes it: epoch milliseconds, as a string; null if absent.
    pub create_time_since_epoch: Option<String>,
    /// Last update as epoch milliseconds, as a string; null if absent.
    pub last_update_time_since_epoch: Option<String>,
}

/// A model from a models catalog.
#[Object]
impl Model {
    /// `models/<sourceId>/<name>`: unique across the server (a cache key).
    async fn id(&self) -> String {
        format!("models/{}/{}", self.source_id, self.m().name)
    }
    /// The model's name, unique within its source.
    async fn name(&self) -> &str {
        &self.m().name
    }
    /// Always `models`.
    async fn plugin(&self) -> &str {
        "models"
    }
    /// The id (within the `models` plugin) of the source that serves the model.
    async fn source_id(&self) -> async_graphql::ID {
        self.source_id.clone().into()
    }
    /// Short description; null when the catalog has none.
    async fn description(&self) -> Option<&str> {
        self.m().description.as_deref()
    }
    /// Who publishes the model; null when the catalog does not say.
    async fn provider(&self) -> Option<&str> {
        self.m().provider.as_deref()
    }
    /// License name or SPDX id; null when the catalog does not say.
    async fn license(&self) -> Option<&str> {
        self.m().license.as_deref()
    }
    /// URL of the license text; null when the catalog has none.
    async fn license_link(&self) -> Option<&str> {
        self.m().license_link.as_deref()
    }
    /// Maturity as the catalog states it (e.g. `Generally Available`); null if absent.
    async fn maturity(&self) -> Option<&str> {
        self.m().maturity.as_deref()
    }
    /// The library the model is for (e.g. `transformers`); null if absent.
    async fn library_name(&self) -> Option<&str> {
        self.m().library_name.as_deref()
    }
    /// Language codes (e.g. `en`); empty when the catalog lists none.
    async fn language(&self) -> Vec<String> {
        strings(self.m().language.as_deref())
    }
    /// Tasks (e.g. `text-generation`); empty when the catalog lists none.
    async fn tasks(&self) -> Vec<String> {
        strings(self.m().tasks.as_deref())
    }
    /// The model card in Markdown; null when there is none. Large: counts against the response
    /// size limit.
    // Free text that can be large: taken from the response budget.
    async fn readme(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        charge_response(ctx, self.m().readme.as_ref().map_or(0, |r| r.len()))?;
        Ok(self.m().readme.as_deref())
    }
    /// Logo as a URL or `data:` URI; null when there is none.
    async fn logo(&self) -> Option<&str> {
        self.m().logo.as_deref()
    }
    /// Creation time as the catalog writes it: epoch milliseconds, as a string; null if absent.
    async fn create_time_since_epoch(&self) -> Option<&str> {
        self.m().create_time_since_epoch.as_deref()
    }
    /// Last update as epoch milliseconds, as a string; null if absent.
    async fn last_update_time_since_epoch(&self) -> Option<&str> {
        self.m().last_update_time_since_epoch.as_deref()
    }
    /// Typed custom properties as JSON (`{key: {metadataType, string_value}}`), redacted.
    async fn custom_properties(&self) -> Option<Json<serde_json::Value>> {
        custom(&self.m().custom_properties)
    }
    /// The model's artifacts, in catalog order.
    async fn artifacts(&self) -> Vec<ModelArtifact> {
        self.m()
            .artifacts
            .iter()
            .map(|a| ModelArtifact {
                uri: owned(&a.uri),
                artifact_type: a.artifact_type.as_deref().unwrap_or("model-artifact").to_string(),
                metrics_type: owned(&a.metrics_type),
                name: owned(&a.name),
                description: owned(&a.description),
                custom_properties: custom(&a.custom_properties),
                create_time_since_epoch: owned(&a.create_time_since_epoch),
                last_update_time_since_epoch: owned(&a.last_update_time_since_epoch),
            })
            .collect()
    }
}

pub struct McpServer {
    source_id: String,
    e: Arc<Entity>,
}

impl McpServer {
    fn s(&self) -> &mcp::McpServer {
        match &*self.e {
            Entity::McpServer(s) => s,
            // Constructed only from Entity::McpServer in CatalogEntity::new.
            Entity::Model(_) => unreachable!("McpServer wraps an MCP server entity"),
        }
    }
}

/// One parameter of an MCP tool.
#[derive(SimpleObject)]
pub struct McpToolParameter {
    /// The parameter's name.
    pub name: String,
    /// Its JSON type as the catalog states it (e.g. `string`, `integer`); null if absent.
    #[graphql(name = "type")]
    pub type_: Option<String>,
    /// What the parameter is for; null if absent.
    pub description: Option<String>,
    /// True when the tool needs this parameter.
    pub required: bool,
}

/// A tool an MCP server offers.
#[derive(SimpleObject)]
pub struct McpTool {
    /// The tool's name.
    pub name: String,
    /// What the tool does; null if absent.
    pub description: Option<String>,
    /// What the tool may do; null when the catalog does not say.
    pub access_type: Option<McpToolAccessType>,
    /// The tool's parameters, in catalog order.
    pub parameters: Vec<McpToolParameter>,
}

/// Where a remote MCP server listens.
#[derive(SimpleObject)]
pub struct McpEndpoints {
    /// Streamable HTTP endpoint URL; null if the server has none.
    pub http: Option<String>,
    /// Server-sent events endpoint URL; null if the server has none.
    pub sse: Option<String>,
}

/// Security facts the catalog states about an MCP server; each is null when not stated.
#[derive(SimpleObject)]
pub struct McpSecurityIndicators {
    /// The server comes from a verified publisher.
    pub verified_source: Option<bool>,
    /// The endpoint uses TLS.
    pub secure_endpoint: Option<bool>,
    /// The code passed static analysis (SAST).
    pub sast: Option<bool>,
    /// Every tool is read-only.
    pub read_only_tools: Option<bool>,
}

/// A distributable of an MCP server (e.g. an OCI image).
#[derive(SimpleObject)]
pub struct McpArtifact {
    /// Where the artifact is, e.g. `oci://registry/server:1.0`.
    pub uri: String,
    /// Creation time as epoch milliseconds, as a string; null if absent.
    pub create_time_since_epoch: Option<String>,
    /// Last update as epoch milliseconds, as a string; null if absent.
    pub last_update_time_since_epoch: Option<String>,
}

/// An MCP (Model Context Protocol) server from an MCP catalog, read from either the Kubeflow
/// `mcp_servers:` or the flat `mcpservers:` format (see `format`).
#[Object]
impl McpServer {
    /// `mcp/<sourceId>/<name>`: unique across the server (a cache key).
    async fn id(&self) -> String {
        format!("mcp/{}/{}", self.source_id, self.s().name)
    }
    /// The server's name, unique within its source.
    async fn name(&self) -> &str {
        &self.s().name
    }
    /// Always `mcp`.
    async fn plugin(&self) -> &str {
        "mcp"
    }
    /// The id (within the `mcp` plugin) of the source that serves the server.
    async fn source_id(&self) -> async_graphql::ID {
        self.source_id.clone().into()
    }
    /// Short description; null when the catalog has none.
    async fn description(&self) -> Option<&str> {
        self.s().description.as_deref()
    }
    /// Who publishes the server; null when the catalog does not say.
    async fn provider(&self) -> Option<&str> {
        self.s().provider.as_deref()
    }
    /// License name or SPDX id; null when the catalog does not say.
    async fn license(&self) -> Option<&str> {
        self.s().license.as_deref()
    }
    /// URL of the license text; null if absent.
    async fn license_link(&self) -> Option<&str> {
        self.s().license_link.as_deref()
    }
    /// The server's version string as published; null if absent.
    async fn version(&self) -> Option<&str> {
        self.s().version.as_deref()
    }
    /// Free-form tags; empty when there are none.
    async fn tags(&self) -> &[String] {
        &self.s().tags
    }
    /// Local or remote; null when the catalog does not say.
    async fn deployment_mode(&self) -> Option<McpDeploymentMode> {
        closed_word(
            "deploymentMode",
            self.s().deployment_mode.as_deref(),
            &[("local", McpDeploymentMode::Local), ("remote", McpDeploymentMode::Remote)],
        )
    }
    /// Transports the server speaks: `stdio`, `http` or `sse` (validated on load).
    async fn transports(&self) -> &[String] {
        &self.s().transports
    }
    /// Number of tools (stated by the catalog, else the length of `tools`).
    async fn tool_count(&self) -> i64 {
        self.s().tool_count
    }
    /// Number of MCP resources; null when the catalog does not say.
    async fn resource_count(&self) -> Option<i64> {
        self.s().resource_count
    }
    /// Number of MCP prompts; null when the catalog does not say.
    async fn prompt_count(&self) -> Option<i64> {
        self.s().prompt_count
    }
    /// The tools the server offers, in catalog order.
    async fn tools(&self) -> Vec<McpTool> {
        self.s()
            .tools
            .iter()
            .map(|t| McpTool {
                name: t.name.clone(),
                description: t.description.clone(),
                access_type: closed_word(
                    "accessType",
                    t.access_type.as_deref(),
                    &[
                        ("read_only", McpToolAccessType::ReadOnly),
                        ("read_write", McpToolAccessType::ReadWrite),
                        ("execute", McpToolAccessType::Execute),
                    ],
                ),
                parameters: t
                    .parameters
                    .iter()
                    .map(|p| McpToolParameter {
                        name: p.name.clone(),
                        type_: p.type_.clone(),
                        description: p.description.clone(),
                        required: p.required,
                    })
                    .collect(),
            })
            .collect()
    }
    /// Where a remote server listens; null when the catalog does not say.
    async fn endpoints(&self) -> Option<McpEndpoints> {
        self.s().endpoints.as_ref().map(|e| McpEndpoints { http: e.http.clone(), sse: e.sse.clone() })
    }
    /// Security facts the catalog states; null when it states none.
    async fn security_indicators(&self) -> Option<McpSecurityIndicators> {
        self.s().security_indicators.as_ref().map(|s| McpSecurityIndicators {
            verified_source: s.verified_source,
            secure_endpoint: s.secure_endpoint,
            sast: s.sast,
            read_only_tools: s.read_only_tools,
        })
    }
    /// The server's distributables (e.g. OCI images), in catalog order.
    async fn artifacts(&self) -> Vec<McpArtifact> {
        self.s()
            .artifacts
            .iter()
            .map(|a| McpArtifact {
                uri: a.uri.clone(),
                create_time_since_epoch: a.create_time_since_epoch.clone(),
                last_update_time_since_epoch: a.last_update_time_since_epoch.clone(),
            })
            .collect()
    }
    /// URL of a running remote server (flat format); null if absent.
    async fn server_url(&self) -> Option<&str> {
        self.s().server_url.as_deref()
    }
    /// Container image to run a local server (flat format); null if absent.
    async fn image(&self) -> Option<&str> {
        self.s().image.as_deref()
    }
    /// Category as the catalog states it (e.g. `Developer Tools`); null if absent.
    async fn category(&self) -> Option<&str> {
        self.s().category.as_deref()
    }
    /// The publisher is verified; null when the catalog does not say.
    async fn verified(&self) -> Option<bool> {
        self.s().verified
    }
    /// The server is certified; null when the catalog does not say.
    async fn certified(&self) -> Option<bool> {
        self.s().certified
    }
    /// Documentation in Markdown; null when there is none. Large: counts against the response
    /// size limit.
    // Free text that can be large: taken from the response budget.
    async fn readme(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        charge_response(ctx, self.s().readme.as_ref().map_or(0, String::len))?;
        Ok(self.s().readme.as_deref())
    }
    /// Logo as a URL or `data:` URI; null when there is none.
    async fn logo(&self) -> Option<&str> {
        self.s().logo.as_deref()
    }
    /// URL of the server's documentation; null if absent.
    async fn documentation_url(&self) -> Option<&str> {
        self.s().documentation_url.as_deref()
    }
    /// URL of the server's repository; null if absent.
    async fn repository_url(&self) -> Option<&str> {
        self.s().repository_url.as_deref()
    }
    /// Where the source code is (a URL or a short description); null if absent.
    async fn source_code(&self) -> Option<&str> {
        self.s().source_code.as_deref()
    }
    /// Publication date as the catalog writes it (free text, often `YYYY-MM-DD`); null if absent.
    async fn published_date(&self) -> Option<&str> {
        self.s().published_date.as_deref()
    }
    /// Last update as the catalog writes it (free text, often `YYYY-MM-DD`); null if absent.
    async fn last_updated(&self) -> Option<&str> {
        self.s().last_updated.as_deref()
    }
    /// How to run the server (Kubeflow `runtimeMetadata`) as JSON, redacted; null if absent.
    async fn runtime_metadata(&self) -> Option<Json<serde_json::Value>> {
        self.s().runtime_metadata.as_ref().map(|v| Json(redact_json(v)))
    }
    /// Typed custom properties as JSON (`{key: {metadataType, string_value}}`), redacted; null
    /// when there are none.
    async fn custom_properties(&self) -> Option<Json<serde_json::Value>> {
        custom(&self.s().custom_properties)
    }
    /// Which file format the server came from: `mcp_servers` (Kubeflow) or `mcpservers` (flat).
    async fn format(&self) -> &str {
        self.s().format
    }
}
