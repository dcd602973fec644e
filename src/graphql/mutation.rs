//! Mutations: apply, refresh, rollback. Each maps arguments to a core call and back.

use async_graphql::{Context, ID, InputObject, Json, Object, Result};

use super::audit::{self, AuditAction, Target};
use super::errors::{self, invalid_input, to_graphql};
use super::guards::OperatorAction;
use super::types::{ApplyResult, RefreshJob, RefreshMode, Source};
use super::{actor, catalog};
use catalog_core::ApplyOptions as CoreApplyOptions;
use catalog_core::RefreshRequest;
use catalog_core::{SourcePatch, json_to_yaml};

/// A source to create or update. Fields left out keep their current value (for a new source:
/// name = id, type = yaml, enabled = true).
#[derive(InputObject)]
pub struct SourceInput {
    /// The source id (`^[a-z0-9][a-z0-9_-]*$`, at most 253 characters); an existing id updates
    /// that source, a new one creates it.
    pub id: ID,
    /// Display name; left out, the current name (new source: the id).
    pub name: Option<String>,
    /// `yaml` or `url`; left out, the current type (new source: `yaml`).
    #[graphql(name = "type")]
    pub type_: Option<String>,
    /// Whether to load and serve the source; left out, the current value (new source: true).
    pub enabled: Option<bool>,
    /// Free-form labels; left out, the current labels. Sent, they replace all labels.
    pub labels: Option<Vec<String>>,
    /// JSON object, e.g. `{"yamlCatalogPath": "my-models.yaml"}`.
    pub properties: Option<Json<serde_json::Value>>,
    /// The catalog YAML for a yaml source; left out, the current file is kept.
    pub content: Option<String>,
    /// Glob patterns of entity names to load; left out, the current ones.
    pub included_models: Option<Vec<String>>,
    /// Glob patterns of entity names not to load; left out, the current ones.
    pub excluded_models: Option<Vec<String>>,
    /// How often the source refreshes on its own: a Go-style duration of at least `10s`
    /// (`30s`, `10m`, `1h`); left out, the current one; `""` removes it (a url source then
    /// uses `--default-refresh-interval`, a yaml source refreshes on edits only).
    pub refresh_interval: Option<String>,
}

impl SourceInput {
    /// Checks the arguments (id, properties shape and depth) and maps them to the core's patch.
    pub fn into_patch(self) -> Result<SourcePatch> {
        errors::source_id("input.id", &self.id)?;
        if let Some(Json(p)) = &self.properties {
            // Checked before the YAML conversion, which recurses: deep nesting is refused in
            // time linear in the input, and no real source needs more than a few levels.
            let depth = errors::json_depth(p);
            if depth > errors::MAX_PROPERTIES_DEPTH {
                return Err(invalid_input(
                    format!(
                        "`input.properties` nests {depth} levels deep; at most {} levels are allowed",
                        errors::MAX_PROPERTIES_DEPTH
                    ),
                    "input.properties",
                    "send a flat object such as {\"yamlCatalogPath\": \"models.yaml\"}",
                ));
            }
        }
        let properties = match self.properties {
            None => None,
            Some(Json(serde_json::Value::Object(_))) | Some(Json(serde_json::Value::Null)) => {
                match self.properties.map(|j| json_to_yaml(&j.0)) {
                    Some(serde_yaml_ng::Value::Mapping(m)) => Some(m),
                    _ => Some(serde_yaml_ng::Mapping::new()),
                }
            }
            Some(_) => {
                return Err(invalid_input(
                    "`properties` must be a JSON object",
                    "input.properties",
                    "send an object such as {\"yamlCatalogPath\": \"models.yaml\"}",
                ));
            }
        };
        Ok(SourcePatch {
            id: self.id.to_string(),
            name: self.name,
            type_: self.type_,
            enabled: self.enabled,
            labels: self.labels,
            properties,
            content: self.content,
            included_models: self.included_models,
            excluded_models: self.excluded_models,
            refresh_interval: self.refresh_interval,
            suspended: None,
        })
    }
}

/// How to apply (or roll back) a source. Every field is optional.
#[derive(InputObject, Default)]
pub struct ApplyOptions {
    /// Refresh the source right after writing it; the result carries the finished job.
    #[graphql(default = false)]
    pub refresh_after_apply: bool,
    /// Validate and compute the impact, change nothing.
    #[graphql(default = false)]
    pub dry_run: bool,
    /// Fail with CONFLICT (and `extensions.currentRevision`) unless this is the source's
    /// current revision (`Source.revision`); left out, no check. Must be 1 or more.
    pub expected_revision: Option<i32>,
    /// Allow a change that removes more than half of the source's entities; without it such a
    /// change fails with REMOVALS_NEED_CONFIRMATION (and `extensions.impact`).
    #[graphql(default = false)]
    pub confirm_removals: bool,
}

impl ApplyOptions {
    /// Checks the options and maps them to the core's: `expectedRevision` is a revision
    /// number (1 or more); anything else could never match and would read as a CONFLICT.
    fn into_core(o: Option<ApplyOptions>) -> Result<CoreApplyOptions> {
        let o = o.unwrap_or_default();
        let expected_revision =
            o.expected_revision.map(|r| errors::revision("options.expectedRevision", r)).transpose()?;
        Ok(CoreApplyOptions {
            refresh_after_apply: o.refresh_after_apply,
            dry_run: o.dry_run,
            expected_revision,
            confirm_removals: o.confirm_removals,
        })
    }
}

/// The id as the audit trail records it: a refused, oversized id is cut, not stored whole.
fn audit_id(id: &str) -> &str {
    match id.char_indices().nth(errors::MAX_ID_LEN) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

pub struct Mutation;

/// Runs a change and writes its audit record, whatever the outcome.
async fn audited<T>(
    ctx: &Context<'_>,
    target: Target<'_>,
    revision: impl Fn(&T) -> Option<i32>,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let out = fut.await;
    match &out {
        Ok(v) => audit::record(ctx, target, revision(v), Ok(())).await,
        Err(e) => audit::record(ctx, target, None, Err(e)).await,
    }
    out
}

/// `suspendSource` / `resumeSource`: an apply of the entry's `suspended` key (a revision,
/// audited), answered with the source as it is now. An unknown source is NOT_FOUND, never
/// created.
async fn set_suspended(
    ctx: &Context<'_>,
    action: AuditAction,
    plugin: &str,
    id: &str,
    suspended: bool,
) -> Result<Source> {
    let target = Target { action, plugin: audit_id(plugin), source_id: Some(audit_id(id)) };
    audited(ctx, target, |s: &Source| s.0.revision, async {
        let kind = errors::plugin("plugin", plugin)?;
        let id = errors::source_id("id", id)?;
        let c = catalog(ctx)?;
        let not_found =
            || to_graphql(catalog_core::CatalogError::NotFound(format!("source {plugin}/{id} does not exist")));
        let current = c.source(kind, id).await.map_err(to_graphql)?.ok_or_else(not_found)?;
        if current.entry.suspended != suspended {
            let patch = SourcePatch { id: id.to_string(), suspended: Some(suspended), ..SourcePatch::default() };
            c.apply(kind, patch, CoreApplyOptions::default(), &actor(ctx)).await.map_err(to_graphql)?;
        }
        let now = c.source(kind, id).await.map_err(to_graphql)?.ok_or_else(not_found)?;
        Ok(Source(now))
    })
    .await
}

struct RefreshArgs {
    mode: Option<RefreshMode>,
    dry_run: Option<bool>,
    wait: Option<bool>,
    confirm_removals: Option<bool>,
}

/// Shared by `refreshSource`, `refreshPlugin` and `refreshAll` (plugin `*`): defaults, the
/// core call, the audit record.
async fn refresh(
    ctx: &Context<'_>,
    action: AuditAction,
    plugin: &str,
    source_id: Option<&str>,
    a: RefreshArgs,
) -> Result<RefreshJob> {
    let target = Target { action, plugin: audit_id(plugin), source_id: source_id.map(audit_id) };
    audited(ctx, target, |_| None, async {
        let base = match action {
            AuditAction::RefreshAll => RefreshRequest::everything(&actor(ctx)),
            _ => {
                let kind = errors::plugin("plugin", plugin)?;
                let source_id = source_id.map(|id| errors::source_id("id", id)).transpose()?;
                RefreshRequest::new(kind, source_id, &actor(ctx))
            }
        };
        let req = RefreshRequest {
            mode: a.mode.unwrap_or(RefreshMode::Full).into(),
            dry_run: a.dry_run.unwrap_or(false),
            confirm_removals: a.confirm_removals.unwrap_or(false),
            wait: a.wait.unwrap_or(true),
            ..base
        };
        let job = catalog(ctx)?.refresh(req).await.map_err(to_graphql)?;
        Ok(RefreshJob(job))
    })
    .await
}

/// Changes. Each needs the operator role (else FORBIDDEN, or UNAUTHENTICATED without a token),
/// counts against `--changes-per-minute` (RATE_LIMITED), is written to the audit log, and
/// invalidates the cache before it returns.
#[Object(name = "CatalogMutation")]
impl Mutation {
    /// Validates, writes (atomically), records a revision and optionally refreshes a source.
    /// Invalid input is VALIDATION_FAILED (with `extensions.diagnostics`) and changes nothing.
    #[graphql(guard = "OperatorAction")]
    async fn apply_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source to create or update.")] input: SourceInput,
        #[graphql(desc = "Dry run, refresh after apply, expected revision, removal confirmation.")] options: Option<
            ApplyOptions,
        >,
    ) -> Result<ApplyResult> {
        let id = input.id.to_string();
        let dry = options.as_ref().is_some_and(|o| o.dry_run);
        let action = if dry { AuditAction::ApplySourceDryRun } else { AuditAction::ApplySource };
        let target = Target { action, plugin: audit_id(&plugin), source_id: Some(audit_id(&id)) };
        audited(ctx, target, |r: &ApplyResult| Some(r.0.revision), async {
            let kind = errors::plugin("plugin", &plugin)?;
            let patch = input.into_patch()?;
            let options = ApplyOptions::into_core(options)?;
            let c = catalog(ctx)?;
            let out = c.apply(kind, patch, options, &actor(ctx)).await.map_err(to_graphql)?;
            Ok(ApplyResult(out))
        })
        .await
    }

    /// Refreshes one source. With `wait` (the default) the finished job is returned.
    #[expect(clippy::too_many_arguments, reason = "each argument is a GraphQL argument of the field")]
    #[graphql(guard = "OperatorAction")]
    async fn refresh_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source id within the plugin; an unknown source is NOT_FOUND.")] id: ID,
        #[graphql(
            default_with = "Some(RefreshMode::Full)",
            desc = "FULL (reload everything) or INCREMENTAL (skip unchanged content)."
        )]
        mode: Option<RefreshMode>,
        #[graphql(default_with = "Some(false)", desc = "Report what would change, swap nothing in.")] dry_run: Option<
            bool,
        >,
        #[graphql(
            default_with = "Some(true)",
            desc = "True: return the finished job. False: return at once (QUEUED or RUNNING); follow it with `refreshProgress`."
        )]
        wait: Option<bool>,
        #[graphql(
            default_with = "Some(false)",
            desc = "Allow removing more than half of the source's entities (else REMOVALS_NEED_CONFIRMATION)."
        )]
        confirm_removals: Option<bool>,
    ) -> Result<RefreshJob> {
        let args = RefreshArgs { mode, dry_run, wait, confirm_removals };
        refresh(ctx, AuditAction::RefreshSource, &plugin, Some(&id), args).await
    }

    /// Refreshes every source of a plugin. A failing source does not stop the others; the job
    /// ends FAILED with per-source results if any source failed.
    #[graphql(guard = "OperatorAction")]
    async fn refresh_plugin(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(
            default_with = "Some(RefreshMode::Full)",
            desc = "FULL (reload everything) or INCREMENTAL (skip unchanged content)."
        )]
        mode: Option<RefreshMode>,
        #[graphql(default_with = "Some(false)", desc = "Report what would change, swap nothing in.")] dry_run: Option<
            bool,
        >,
        #[graphql(
            default_with = "Some(true)",
            desc = "True: return the finished job. False: return at once (QUEUED or RUNNING); follow it with `refreshProgress`."
        )]
        wait: Option<bool>,
        #[graphql(
            default_with = "Some(false)",
            desc = "Allow removing more than half of a source's entities (else that source fails with REMOVALS_NEED_CONFIRMATION)."
        )]
        confirm_removals: Option<bool>,
    ) -> Result<RefreshJob> {
        let args = RefreshArgs { mode, dry_run, wait, confirm_removals };
        refresh(ctx, AuditAction::RefreshPlugin, &plugin, None, args).await
    }

    /// Ends a QUEUED or RUNNING refresh job as CANCELLED: url fetches in flight are aborted,
    /// sources not swapped yet keep their entities, sources already swapped stay swapped and
    /// are listed in `results`. On a cluster the replica that runs the job stops within about
    /// a second. A finished job is VALIDATION_FAILED and stays as it ended; an unknown one is
    /// NOT_FOUND.
    #[graphql(guard = "OperatorAction")]
    async fn cancel_refresh_job(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The job's id (`RefreshJob.id`).")] id: ID,
    ) -> Result<RefreshJob> {
        let c = catalog(ctx)?;
        let id = id.to_string();
        // The audit record names the job's plugin when the job exists.
        let plugin = match errors::job_id("id", &id) {
            Ok(_) => c.job(&id).await.ok().flatten().map(|j| j.plugin).unwrap_or_default(),
            Err(_) => String::new(),
        };
        let target = Target { action: AuditAction::CancelRefreshJob, plugin: &plugin, source_id: None };
        audited(ctx, target, |_| None, async {
            let id = errors::job_id("id", &id)?;
            let job = c.cancel_job(id, &actor(ctx)).await.map_err(to_graphql)?;
            Ok(RefreshJob(job))
        })
        .await
    }

    /// Suspends a source (Flux's `suspend`): it keeps serving its last entities, and the
    /// scheduler, the watcher and plugin-wide refreshes skip it; `refreshSource` still
    /// refreshes it. Recorded as a revision (the entry says `suspended: true`).
    #[graphql(guard = "OperatorAction")]
    async fn suspend_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source id within the plugin; an unknown source is NOT_FOUND.")] id: ID,
    ) -> Result<Source> {
        set_suspended(ctx, AuditAction::SuspendSource, &plugin, &id, true).await
    }

    /// Resumes a suspended source: the scheduler, the watcher and plugin-wide refreshes take
    /// it again (a refresh that came due while it was suspended runs at once).
    #[graphql(guard = "OperatorAction")]
    async fn resume_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source id within the plugin; an unknown source is NOT_FOUND.")] id: ID,
    ) -> Result<Source> {
        set_suspended(ctx, AuditAction::ResumeSource, &plugin, &id, false).await
    }

    /// Refreshes every source of every plugin in one job (suspended sources left out): one
    /// progress stream, and a failing source does not stop the others. The job's `plugin`
    /// reads `*` and its `sources` (and `currentSource`) `plugin/id`; each result names its
    /// plugin. Its REFRESH_STARTED and REFRESH_FINISHED events carry plugin `*` (a
    /// subscription filtered by plugin sees each source's REFRESHED).
    #[graphql(guard = "OperatorAction")]
    async fn refresh_all(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default_with = "Some(RefreshMode::Full)",
            desc = "FULL (reload everything) or INCREMENTAL (skip unchanged content)."
        )]
        mode: Option<RefreshMode>,
        #[graphql(default_with = "Some(false)", desc = "Report what would change, swap nothing in.")] dry_run: Option<
            bool,
        >,
        #[graphql(
            default_with = "Some(true)",
            desc = "True: return the finished job. False: return at once (QUEUED or RUNNING); follow it with `refreshProgress`."
        )]
        wait: Option<bool>,
        #[graphql(
            default_with = "Some(false)",
            desc = "Allow removing more than half of a source's entities (else that source fails with REMOVALS_NEED_CONFIRMATION)."
        )]
        confirm_removals: Option<bool>,
    ) -> Result<RefreshJob> {
        let args = RefreshArgs { mode, dry_run, wait, confirm_removals };
        refresh(ctx, AuditAction::RefreshAll, "*", None, args).await
    }

    /// Re-applies revision `revision` as a new revision (history is never rewritten).
    #[graphql(guard = "OperatorAction")]
    async fn rollback_source(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`models` or `mcp`; an unknown plugin is NOT_FOUND.")] plugin: String,
        #[graphql(desc = "The source id within the plugin; an unknown source is NOT_FOUND.")] id: ID,
        #[graphql(
            desc = "The revision whose entry and content to re-apply (see `Source.revisions`); an unknown one is NOT_FOUND."
        )]
        revision: i32,
        #[graphql(desc = "Refresh after the rollback, expected revision, removal confirmation, dry run.")]
        options: Option<ApplyOptions>,
    ) -> Result<ApplyResult> {
        let target =
            Target { action: AuditAction::RollbackSource, plugin: audit_id(&plugin), source_id: Some(audit_id(&id)) };
        audited(ctx, target, |r: &ApplyResult| Some(r.0.revision), async {
            let kind = errors::plugin("plugin", &plugin)?;
            let id = errors::source_id("id", &id)?;
            let revision = errors::revision("revision", revision)?;
            let options = ApplyOptions::into_core(options)?;
            let out = catalog(ctx)?.rollback(kind, id, revision, options, &actor(ctx)).await.map_err(to_graphql)?;
            Ok(ApplyResult(out))
        })
        .await
    }
}
