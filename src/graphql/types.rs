//! GraphQL object types: thin views over core values. No behaviour lives here.

use async_graphql::{ComplexObject, Context, Enum, Interface, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::catalog;
use super::errors::to_graphql;
use super::extensions::charge_response;
use crate::catalog::diagnostics as core_diag;
use crate::catalog::jobs as core_jobs;
use crate::catalog::plugins::{Entity, PluginKind, mcp, models};
use crate::catalog::redact::redact_json;
use crate::catalog::refresh as core_refresh;
use crate::catalog::service::{self as core, SourceView};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "core::SourceState")]
pub enum SourceState {
    Available,
    PartiallyAvailable,
    Error,
    Disabled,
    Loading,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "core_jobs::JobPhase")]
pub enum JobPhase {
    Queued,
    Running,
    Succeeded,
    Failed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "core_refresh::RefreshStatus")]
pub enum RefreshStatus {
    Success,
    Partial,
    Failure,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "core_refresh::RefreshMode")]
pub enum RefreshMode {
    Full,
    Incremental,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "core_diag::Severity")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "core_diag::Layer")]
pub enum ValidationLayer {
    Syntax,
    Fields,
    Semantics,
    Plugin,
    Security,
}

/// One problem found by validation or refresh: what, where and how to fix it.
#[derive(SimpleObject)]
pub struct Diagnostic {
    pub layer: ValidationLayer,
    pub severity: Severity,
    pub message: String,
    pub file: Option<String>,
    /// 1-based line in `file`.
    pub line: Option<u32>,
    /// 1-based column in `file`.
    pub column: Option<u32>,
    /// Field path, e.g. `models[2].licence` or `input.id`.
    pub field: Option<String>,
    /// Nearest known field name, for unknown fields.
    pub suggestion: Option<String>,
    pub hint: Option<String>,
}

impl From<core_diag::Diagnostic> for Diagnostic {
    fn from(d: core_diag::Diagnostic) -> Self {
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

pub fn diags(list: Vec<core_diag::Diagnostic>) -> Vec<Diagnostic> {
    list.into_iter().map(Diagnostic::from).collect()
}

#[derive(SimpleObject)]
pub struct LayerReport {
    pub layer: ValidationLayer,
    pub passed: bool,
    /// An earlier layer failed, so this one did not run.
    pub skipped: bool,
    pub diagnostics: Vec<Diagnostic>,
}

/// Validation outcome, per layer: syntax → fields → semantics → plugin → security.
#[derive(SimpleObject)]
pub struct ValidationReport {
    pub valid: bool,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    pub layers: Vec<LayerReport>,
}

impl From<core_diag::ValidationReport> for ValidationReport {
    fn from(r: core_diag::ValidationReport) -> Self {
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
    pub to_add: usize,
    pub to_update: usize,
    pub to_remove: usize,
    pub unchanged: usize,
    pub current_count: usize,
    /// The first few names of each kind.
    pub added_names: Vec<String>,
    pub updated_names: Vec<String>,
    pub removed_names: Vec<String>,
}

impl From<core_refresh::Impact> for Impact {
    fn from(i: core_refresh::Impact) -> Self {
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

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Plugin {
    pub name: String,
    pub source_count: usize,
    pub entity_count: usize,
    #[graphql(skip)]
    pub kind: PluginKind,
}

#[async_graphql::ComplexObject]
impl Plugin {
    async fn sources(&self, ctx: &Context<'_>) -> Result<Vec<Source>> {
        let list = catalog(ctx)?.sources(Some(self.kind)).await.map_err(to_graphql)?;
        Ok(list.into_iter().map(Source).collect())
    }
}

/// A catalog source: its entry in the sources file, its catalog content and its live status.
pub struct Source(pub SourceView);

#[Object]
impl Source {
    async fn id(&self) -> async_graphql::ID {
        self.0.entry.id.clone().into()
    }
    async fn plugin(&self) -> &str {
        self.0.plugin.name()
    }
    async fn name(&self) -> &str {
        &self.0.entry.name
    }
    #[graphql(name = "type")]
    async fn type_(&self) -> &str {
        &self.0.entry.type_
    }
    async fn enabled(&self) -> bool {
        self.0.entry.enabled
    }
    async fn labels(&self) -> &[String] {
        &self.0.entry.labels
    }
    /// Source properties as JSON; secret-looking keys are redacted.
    async fn properties(&self) -> Json<serde_json::Value> {
        Json(self.0.properties.clone())
    }
    async fn included_models(&self) -> Option<&[String]> {
        self.0.entry.included_models.as_deref()
    }
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
    /// The current revision number; pass it as `expectedRevision` to avoid lost updates.
    async fn revision(&self) -> Option<i32> {
        self.0.revision
    }
    async fn status(&self) -> SourceStatus {
        SourceStatus(self.0.status.clone())
    }
    /// Recorded revisions, newest first.
    // Costs `limit` times the fields selected per revision; out-of-range limits are refused.
    #[graphql(complexity = "usize::try_from(limit.clamp(1, 500)).unwrap_or(500) * child_complexity")]
    async fn revisions(&self, ctx: &Context<'_>, #[graphql(default = 20)] limit: i32) -> Result<Vec<SourceRevision>> {
        let limit = u64::try_from(super::errors::in_range("limit", limit, 1, 500)?).unwrap_or(20);
        let list = catalog(ctx)?.revisions(self.0.plugin, &self.0.entry.id, limit).await.map_err(to_graphql)?;
        Ok(list.into_iter().map(SourceRevision).collect())
    }
}

pub struct SourceStatus(pub core::SourceStatus);

#[Object]
impl SourceStatus {
    async fn state(&self) -> SourceState {
        self.0.state.into()
    }
    /// Entities currently served for this source (the last good load).
    async fn entity_count(&self) -> usize {
        self.0.entity_count
    }
    async fn last_refresh_time(&self) -> Option<DateTime<Utc>> {
        self.0.last_refresh_time
    }
    /// `available`, `partially-available`, `error` (upstream's words).
    async fn last_refresh_status(&self) -> Option<&str> {
        self.0.last_refresh_status.as_deref()
    }
    async fn last_refresh_summary(&self) -> Option<&str> {
        self.0.last_refresh_summary.as_deref()
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    async fn entities_loaded(&self) -> i64 {
        self.0.entities_loaded
    }
    async fn entities_removed(&self) -> i64 {
        self.0.entities_removed
    }
    async fn duration_ms(&self) -> i64 {
        self.0.duration_ms
    }
    async fn diagnostics(&self) -> Vec<Diagnostic> {
        diags(self.0.diagnostics.clone())
    }
}

pub struct SourceRevision(pub core::RevisionView);

#[Object]
impl SourceRevision {
    async fn revision(&self) -> i32 {
        self.0.revision
    }
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
    /// `import`, `apply`, `rollback` or `external`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The source entry at this revision (properties redacted).
    async fn entry(&self) -> Json<serde_json::Value> {
        Json(self.0.entry.clone())
    }
    /// The catalog content at this revision (secrets redacted).
    #[graphql(complexity = "crate::graphql::extensions::CONTENT_COMPLEXITY")]
    async fn content(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        charge_response(ctx, self.0.content.as_ref().map_or(0, String::len))?;
        Ok(self.0.content.as_deref())
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct RefreshResult {
    pub plugin: String,
    pub source_id: async_graphql::ID,
    pub status: RefreshStatus,
    /// Entities served after the refresh.
    pub entities_loaded: usize,
    pub entities_added: usize,
    pub entities_removed: usize,
    pub entities_updated: usize,
    pub entities_unchanged: usize,
    pub artifacts_loaded: usize,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub summary: String,
    pub dry_run: bool,
    /// What the refresh changed (for a dry run: would change), with the first few names.
    pub impact: Impact,
    #[graphql(skip)]
    pub diags: Vec<core_diag::Diagnostic>,
}

#[ComplexObject]
impl RefreshResult {
    async fn diagnostics(&self) -> Vec<Diagnostic> {
        diags(self.diags.clone())
    }
}

impl From<core_refresh::RefreshResult> for RefreshResult {
    fn from(r: core_refresh::RefreshResult) -> Self {
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

pub struct RefreshJob(pub core_jobs::RefreshJob);

#[Object]
impl RefreshJob {
    async fn id(&self) -> async_graphql::ID {
        self.0.id.clone().into()
    }
    async fn plugin(&self) -> &str {
        &self.0.plugin
    }
    /// The source, for a single-source job.
    async fn source_id(&self) -> Option<&str> {
        self.0.source_id.as_deref()
    }
    async fn sources(&self) -> &[String] {
        &self.0.sources
    }
    async fn mode(&self) -> RefreshMode {
        self.0.mode.into()
    }
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    async fn phase(&self) -> JobPhase {
        self.0.phase.into()
    }
    async fn total(&self) -> usize {
        self.0.total
    }
    async fn completed(&self) -> usize {
        self.0.completed
    }
    async fn current_source(&self) -> Option<&str> {
        self.0.current_source.as_deref()
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    async fn results(&self) -> Vec<RefreshResult> {
        self.0.results.iter().cloned().map(RefreshResult::from).collect()
    }
}

/// The outcome of `applySource` / `rollbackSource`.
pub struct ApplyResult(pub core::ApplyOutcome);

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
    async fn dry_run(&self) -> bool {
        self.0.dry_run
    }
    async fn validation(&self) -> ValidationReport {
        self.0.validation.clone().into()
    }
    async fn impact(&self) -> Impact {
        self.0.impact.clone().into()
    }
    /// The refresh job, when `refreshAfterApply` was set.
    async fn refresh(&self) -> Option<RefreshJob> {
        self.0.refresh.clone().map(RefreshJob)
    }
}

// ---- entities ------------------------------------------------------------------------------

/// An entity in a catalog: a `Model` or an `McpServer`.
#[derive(Interface)]
#[allow(clippy::duplicated_attributes)] // one `ty` per field is how the derive is spelled
#[graphql(
    field(name = "id", ty = "String", desc = "`plugin/sourceId/name`: unique across the server"),
    field(name = "name", ty = "&str"),
    field(name = "plugin", ty = "&str"),
    field(name = "source_id", ty = "&str"),
    field(name = "description", ty = "Option<&str>"),
    field(name = "provider", ty = "Option<&str>"),
    field(name = "license", ty = "Option<&str>")
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

fn custom(props: &Option<models::CustomProperties>) -> Option<Json<serde_json::Value>> {
    props.as_ref().map(|p| Json(redact_json(&serde_json::to_value(p).unwrap_or_default())))
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

#[derive(SimpleObject)]
pub struct ModelArtifact {
    pub uri: Option<String>,
    pub artifact_type: String,
    pub metrics_type: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub custom_properties: Option<Json<serde_json::Value>>,
    pub create_time_since_epoch: Option<String>,
    pub last_update_time_since_epoch: Option<String>,
}

#[Object]
impl Model {
    async fn id(&self) -> String {
        format!("models/{}/{}", self.source_id, self.m().name)
    }
    async fn name(&self) -> &str {
        &self.m().name
    }
    async fn plugin(&self) -> &str {
        "models"
    }
    async fn source_id(&self) -> &str {
        &self.source_id
    }
    async fn description(&self) -> Option<&str> {
        self.m().description.as_deref()
    }
    async fn provider(&self) -> Option<&str> {
        self.m().provider.as_deref()
    }
    async fn license(&self) -> Option<&str> {
        self.m().license.as_deref()
    }
    async fn license_link(&self) -> Option<&str> {
        self.m().license_link.as_deref()
    }
    async fn maturity(&self) -> Option<&str> {
        self.m().maturity.as_deref()
    }
    async fn library_name(&self) -> Option<&str> {
        self.m().library_name.as_deref()
    }
    async fn language(&self) -> Vec<String> {
        self.m().language.clone().unwrap_or_default()
    }
    async fn tasks(&self) -> Vec<String> {
        self.m().tasks.clone().unwrap_or_default()
    }
    // Free text that can be large: taken from the response budget.
    async fn readme(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        charge_response(ctx, self.m().readme.as_ref().map_or(0, String::len))?;
        Ok(self.m().readme.as_deref())
    }
    async fn logo(&self) -> Option<&str> {
        self.m().logo.as_deref()
    }
    async fn create_time_since_epoch(&self) -> Option<&str> {
        self.m().create_time_since_epoch.as_deref()
    }
    async fn last_update_time_since_epoch(&self) -> Option<&str> {
        self.m().last_update_time_since_epoch.as_deref()
    }
    /// Typed custom properties as JSON (`{key: {metadataType, string_value}}`), redacted.
    async fn custom_properties(&self) -> Option<Json<serde_json::Value>> {
        custom(&self.m().custom_properties)
    }
    async fn artifacts(&self) -> Vec<ModelArtifact> {
        self.m()
            .artifacts
            .iter()
            .map(|a| ModelArtifact {
                uri: a.uri.clone(),
                artifact_type: a.artifact_type.clone().unwrap_or_else(|| "model-artifact".into()),
                metrics_type: a.metrics_type.clone(),
                name: a.name.clone(),
                description: a.description.clone(),
                custom_properties: custom(&a.custom_properties),
                create_time_since_epoch: a.create_time_since_epoch.clone(),
                last_update_time_since_epoch: a.last_update_time_since_epoch.clone(),
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

#[derive(SimpleObject)]
pub struct McpToolParameter {
    pub name: String,
    #[graphql(name = "type")]
    pub type_: Option<String>,
    pub description: Option<String>,
    pub required: bool,
}

#[derive(SimpleObject)]
pub struct McpTool {
    pub name: String,
    pub description: Option<String>,
    /// `read_only`, `read_write` or `execute`.
    pub access_type: Option<String>,
    pub parameters: Vec<McpToolParameter>,
}

#[derive(SimpleObject)]
pub struct McpEndpoints {
    pub http: Option<String>,
    pub sse: Option<String>,
}

#[derive(SimpleObject)]
pub struct McpSecurityIndicators {
    pub verified_source: Option<bool>,
    pub secure_endpoint: Option<bool>,
    pub sast: Option<bool>,
    pub read_only_tools: Option<bool>,
}

#[derive(SimpleObject)]
pub struct McpArtifact {
    pub uri: String,
    pub create_time_since_epoch: Option<String>,
    pub last_update_time_since_epoch: Option<String>,
}

#[Object]
impl McpServer {
    async fn id(&self) -> String {
        format!("mcp/{}/{}", self.source_id, self.s().name)
    }
    async fn name(&self) -> &str {
        &self.s().name
    }
    async fn plugin(&self) -> &str {
        "mcp"
    }
    async fn source_id(&self) -> &str {
        &self.source_id
    }
    async fn description(&self) -> Option<&str> {
        self.s().description.as_deref()
    }
    async fn provider(&self) -> Option<&str> {
        self.s().provider.as_deref()
    }
    async fn license(&self) -> Option<&str> {
        self.s().license.as_deref()
    }
    async fn license_link(&self) -> Option<&str> {
        self.s().license_link.as_deref()
    }
    async fn version(&self) -> Option<&str> {
        self.s().version.as_deref()
    }
    async fn tags(&self) -> &[String] {
        &self.s().tags
    }
    /// `local` or `remote`.
    async fn deployment_mode(&self) -> Option<&str> {
        self.s().deployment_mode.as_deref()
    }
    async fn transports(&self) -> &[String] {
        &self.s().transports
    }
    async fn tool_count(&self) -> i64 {
        self.s().tool_count
    }
    async fn resource_count(&self) -> Option<i64> {
        self.s().resource_count
    }
    async fn prompt_count(&self) -> Option<i64> {
        self.s().prompt_count
    }
    async fn tools(&self) -> Vec<McpTool> {
        self.s()
            .tools
            .iter()
            .map(|t| McpTool {
                name: t.name.clone(),
                description: t.description.clone(),
                access_type: t.access_type.clone(),
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
    async fn endpoints(&self) -> Option<McpEndpoints> {
        self.s().endpoints.as_ref().map(|e| McpEndpoints { http: e.http.clone(), sse: e.sse.clone() })
    }
    async fn security_indicators(&self) -> Option<McpSecurityIndicators> {
        self.s().security_indicators.as_ref().map(|s| McpSecurityIndicators {
            verified_source: s.verified_source,
            secure_endpoint: s.secure_endpoint,
            sast: s.sast,
            read_only_tools: s.read_only_tools,
        })
    }
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
    async fn server_url(&self) -> Option<&str> {
        self.s().server_url.as_deref()
    }
    async fn image(&self) -> Option<&str> {
        self.s().image.as_deref()
    }
    async fn category(&self) -> Option<&str> {
        self.s().category.as_deref()
    }
    async fn verified(&self) -> Option<bool> {
        self.s().verified
    }
    async fn certified(&self) -> Option<bool> {
        self.s().certified
    }
    // Free text that can be large: taken from the response budget.
    async fn readme(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        charge_response(ctx, self.s().readme.as_ref().map_or(0, String::len))?;
        Ok(self.s().readme.as_deref())
    }
    async fn logo(&self) -> Option<&str> {
        self.s().logo.as_deref()
    }
    async fn documentation_url(&self) -> Option<&str> {
        self.s().documentation_url.as_deref()
    }
    async fn repository_url(&self) -> Option<&str> {
        self.s().repository_url.as_deref()
    }
    async fn source_code(&self) -> Option<&str> {
        self.s().source_code.as_deref()
    }
    async fn published_date(&self) -> Option<&str> {
        self.s().published_date.as_deref()
    }
    async fn last_updated(&self) -> Option<&str> {
        self.s().last_updated.as_deref()
    }
    async fn runtime_metadata(&self) -> Option<Json<serde_json::Value>> {
        self.s().runtime_metadata.as_ref().map(|v| Json(redact_json(v)))
    }
    async fn custom_properties(&self) -> Option<Json<serde_json::Value>> {
        custom(&self.s().custom_properties)
    }
    /// Which file format the server came from: `mcp_servers` (Kubeflow) or `mcpservers` (flat).
    async fn format(&self) -> &str {
        self.s().format
    }
}
