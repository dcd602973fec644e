//! The catalog service: apply, refresh, rollback and the read model, tying together the sources
//! file, the plugins, the store, the database and the in-memory snapshots.
//!
//! Invariants:
//! - Invalid input changes nothing: validation and the removal guard run before any write.
//! - One writer at a time (`write_lock`): read sources file → check expectedRevision → write
//!   catalog file → write sources file → record revision. A failure after a file write restores
//!   the previous bytes, so files and revisions never disagree.
//! - A refresh swaps a source's snapshot only on success; failures keep the last good entities.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::Mutex;

use super::diagnostics::{Diagnostic, Layer, ValidationReport};
use super::events::{EventKind, Events};
use super::jobs::{JobPhase, JobRegistry, RefreshJob};
use super::plugins::{Entity, PluginKind};
use super::redact::{redact_json, redact_yaml_text};
use super::refresh::{Impact, RefreshMode, RefreshResult, RefreshStatus, Snapshot, diff, summary};
use super::sources::{SourceEntry, SourcesFile, glob_match};
use super::store::write_atomic;
use super::validate::{SourceDraft, SourcePatch, check, yaml_to_json};
use crate::db::{Db, DbError, JobRow, NewRevision, RevisionRow, StatusRow};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("validation failed:\n{}", .0.summary())]
    Validation(ValidationReport),
    #[error("{0}")]
    NotFound(String),
    #[error("revision conflict: expected revision {expected}, but the current revision is {current}; reload and retry")]
    Conflict { expected: i32, current: i32 },
    #[error(
        "this change would remove {} of {} entities; set confirmRemovals to proceed",
        .0.to_remove, .0.current_count
    )]
    RemovalsNeedConfirmation(Impact),
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for CatalogError {
    fn from(e: DbError) -> Self {
        CatalogError::Internal(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// Source state, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceState {
    Available,
    PartiallyAvailable,
    Error,
    Disabled,
    Loading,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Available => "AVAILABLE",
            SourceState::PartiallyAvailable => "PARTIALLY_AVAILABLE",
            SourceState::Error => "ERROR",
            SourceState::Disabled => "DISABLED",
            SourceState::Loading => "LOADING",
        }
    }

    fn parse(s: &str) -> SourceState {
        match s {
            "AVAILABLE" => SourceState::Available,
            "PARTIALLY_AVAILABLE" => SourceState::PartiallyAvailable,
            "ERROR" => SourceState::Error,
            "DISABLED" => SourceState::Disabled,
            _ => SourceState::Loading,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub state: SourceState,
    pub entity_count: usize,
    pub last_refresh_time: Option<DateTime<Utc>>,
    pub last_refresh_status: Option<String>,
    pub last_refresh_summary: Option<String>,
    pub last_error: Option<String>,
    pub entities_loaded: i64,
    pub entities_removed: i64,
    pub duration_ms: i64,
    pub diagnostics: Vec<Diagnostic>,
}

/// A source with everything the API shows about it, secrets redacted.
#[derive(Clone, Debug)]
pub struct SourceView {
    pub plugin: PluginKind,
    pub entry: SourceEntry,
    /// `properties` as JSON, redacted.
    pub properties: serde_json::Value,
    pub revision: Option<i32>,
    pub status: SourceStatus,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub revision: i32,
    pub content_hash: String,
    pub action: String,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    /// The entry as JSON, properties redacted.
    pub entry: serde_json::Value,
    /// The catalog content, secrets redacted.
    pub content: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    pub refresh_after_apply: bool,
    pub dry_run: bool,
    pub expected_revision: Option<i32>,
    pub confirm_removals: bool,
}

#[derive(Clone, Debug)]
pub struct ApplyOutcome {
    pub source: SourceView,
    /// The revision now current (unchanged for a dry run or a no-op apply).
    pub revision: i32,
    pub changed: bool,
    pub dry_run: bool,
    pub validation: ValidationReport,
    pub impact: Impact,
    pub refresh: Option<RefreshJob>,
}

#[derive(Clone, Debug)]
pub struct PluginView {
    pub name: &'static str,
    pub source_count: usize,
    pub entity_count: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReadyCheck {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

type SourceKey = (PluginKind, String);

struct State {
    file: Arc<SourcesFile>,
    snapshots: HashMap<SourceKey, Arc<Snapshot>>,
}

pub struct Catalog {
    sources_path: PathBuf,
    db: Db,
    state: RwLock<State>,
    write_lock: Mutex<()>,
    source_locks: std::sync::Mutex<HashMap<SourceKey, Arc<Mutex<()>>>>,
    pub jobs: JobRegistry,
    pub events: Events,
    first_refresh_done: AtomicBool,
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update(b"\x00");
    }
    hex::encode(h.finalize())
}

fn entry_json(entry: &SourceEntry) -> String {
    serde_json::to_string(entry).unwrap_or_default()
}

fn revision_hash(entry: &SourceEntry, content: Option<&str>) -> String {
    sha256_hex(&[entry_json(entry).as_bytes(), content.unwrap_or_default().as_bytes()])
}

/// Reads a file that may legitimately be missing.
fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Catalog {
    /// Reads the sources file and records a revision for every source whose on-disk content
    /// is not the latest recorded one. Does not refresh: call [`Catalog::refresh_all`].
    pub async fn open(sources_path: PathBuf, db: Db) -> anyhow::Result<Arc<Catalog>> {
        let file = SourcesFile::read(&sources_path).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(Diagnostic::render).collect();
            anyhow::anyhow!("the sources file is invalid:\n{}", lines.join("\n"))
        })?;
        for w in &file.warnings {
            tracing::warn!("{}", w.render());
        }
        let interrupted = db.fail_interrupted_jobs(Utc::now()).await?;
        if interrupted > 0 {
            tracing::warn!(count = interrupted, "marked refresh jobs interrupted by a restart as FAILED");
        }
        let catalog = Arc::new(Catalog {
            sources_path,
            db,
            state: RwLock::new(State { file: Arc::new(file), snapshots: HashMap::new() }),
            write_lock: Mutex::new(()),
            source_locks: std::sync::Mutex::new(HashMap::new()),
            jobs: JobRegistry::default(),
            events: Events::default(),
            first_refresh_done: AtomicBool::new(false),
        });
        catalog.record_disk_revisions().await?;
        Ok(catalog)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn sources_path(&self) -> &Path {
        &self.sources_path
    }

    fn file(&self) -> Arc<SourcesFile> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).file.clone()
    }

    fn snapshot(&self, key: &SourceKey) -> Option<Arc<Snapshot>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).snapshots.get(key).cloned()
    }

    /// Records a revision for sources whose entry or content changed since the last revision
    /// (first start: action `import`, actor `system`; later: `external`).
    async fn record_disk_revisions(&self) -> Result<()> {
        let file = self.file();
        for (plugin, entry) in &file.sources {
            let content = self.read_content(&file, entry).ok().flatten();
            let hash = revision_hash(entry, content.as_deref());
            let latest = self.db.latest_revision(plugin.name(), &entry.id).await?;
            let (revision, action, actor) = match &latest {
                None => (1, "import", "system"),
                Some(r) if r.content_hash != hash => (r.revision + 1, "external", "external"),
                Some(_) => continue,
            };
            self.db
                .insert_revision(NewRevision {
                    plugin: plugin.name(),
                    source_id: &entry.id,
                    revision,
                    content_hash: &hash,
                    entry: &entry_json(entry),
                    content: content.as_deref(),
                    action,
                    actor,
                })
                .await?;
        }
        Ok(())
    }

    fn read_content(&self, file: &SourcesFile, entry: &SourceEntry) -> std::io::Result<Option<String>> {
        match entry.yaml_catalog_path() {
            Some(p) if entry.type_ == "yaml" => read_optional(&file.resolve(p)),
            _ => Ok(None),
        }
    }

    // ---- reads ---------------------------------------------------------------------------------

    pub fn plugins(&self) -> Vec<PluginView> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        PluginKind::ALL
            .into_iter()
            .map(|p| PluginView {
                name: p.name(),
                source_count: state.file.sources.iter().filter(|(k, _)| *k == p).count(),
                entity_count: state.snapshots.iter().filter(|((k, _), _)| *k == p).map(|(_, s)| s.entities.len()).sum(),
            })
            .collect()
    }

    pub fn unknown_sections(&self) -> Vec<String> {
        self.file().unknown_sections.clone()
    }

    pub fn warnings(&self) -> Vec<Diagnostic> {
        self.file().warnings.clone()
    }

    pub async fn sources(&self, plugin: Option<PluginKind>) -> Result<Vec<SourceView>> {
        let file = self.file();
        let statuses: HashMap<(String, String), StatusRow> = self
            .db
            .all_statuses()
            .await?
            .into_iter()
            .map(|r| ((r.plugin_name.clone(), r.source_id.clone()), r))
            .collect();
        let revisions: HashMap<(String, String), i32> =
            self.db.latest_revision_numbers().await?.into_iter().map(|(p, s, r)| ((p, s), r)).collect();
        Ok(file
            .sources
            .iter()
            .filter(|(p, _)| plugin.is_none_or(|want| want == *p))
            .map(|(p, e)| {
                let k = (p.name().to_string(), e.id.clone());
                self.view(*p, e, statuses.get(&k), revisions.get(&k).copied())
            })
            .collect())
    }

    pub async fn source(&self, plugin: PluginKind, id: &str) -> Result<Option<SourceView>> {
        let file = self.file();
        let Some(entry) = file.find(plugin, id) else {
            return Ok(None);
        };
        let status = self.db.status(plugin.name(), id).await?;
        let revision = self.db.latest_revision(plugin.name(), id).await?.map(|r| r.revision);
        Ok(Some(self.view(plugin, entry, status.as_ref(), revision)))
    }

    fn view(
        &self,
        plugin: PluginKind,
        entry: &SourceEntry,
        row: Option<&StatusRow>,
        revision: Option<i32>,
    ) -> SourceView {
        let snapshot = self.snapshot(&(plugin, entry.id.clone()));
        let entity_count = snapshot.map(|s| s.entities.len()).unwrap_or(0);
        let state = if !entry.enabled {
            SourceState::Disabled
        } else {
            row.map(|r| SourceState::parse(&r.state)).unwrap_or(SourceState::Loading)
        };
        let status = SourceStatus {
            state,
            entity_count,
            last_refresh_time: row.and_then(|r| r.last_refresh_time),
            last_refresh_status: row.and_then(|r| r.last_refresh_status.clone()),
            last_refresh_summary: row.and_then(|r| r.last_refresh_summary.clone()),
            last_error: row.and_then(|r| r.last_error.clone()),
            entities_loaded: row.map(|r| r.entities_loaded).unwrap_or(0),
            entities_removed: row.map(|r| r.entities_removed).unwrap_or(0),
            duration_ms: row.map(|r| r.duration_ms).unwrap_or(0),
            diagnostics: row.and_then(|r| serde_json::from_str(&r.diagnostics).ok()).unwrap_or_default(),
        };
        SourceView {
            plugin,
            properties: redact_json(&yaml_to_json(&serde_yaml_ng::Value::Mapping(entry.properties.clone()))),
            entry: entry.clone(),
            revision,
            status,
        }
    }

    /// The catalog YAML of a yaml source, secrets redacted. `None` for other types or a missing
    /// file.
    pub fn content(&self, plugin: PluginKind, id: &str) -> Option<String> {
        let file = self.file();
        let entry = file.find(plugin, id)?;
        self.read_content(&file, entry).ok().flatten().map(|t| redact_yaml_text(&t))
    }

    /// Entities of a plugin, optionally of one source and matching a search text, in file order.
    pub fn entities(
        &self,
        plugin: PluginKind,
        source_id: Option<&str>,
        search: Option<&str>,
    ) -> Vec<(String, Arc<Entity>)> {
        let file = self.file();
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut out = Vec::new();
        for (p, e) in &file.sources {
            if *p != plugin || source_id.is_some_and(|s| s != e.id) {
                continue;
            }
            if let Some(snap) = self.snapshot(&(*p, e.id.clone())) {
                for ent in &snap.entities {
                    if needle.as_deref().is_none_or(|n| ent.matches(n)) {
                        out.push((e.id.clone(), ent.clone()));
                    }
                }
            }
        }
        out
    }

    pub async fn revisions(&self, plugin: PluginKind, id: &str, limit: u64) -> Result<Vec<RevisionView>> {
        Ok(self.db.revisions(plugin.name(), id, limit).await?.into_iter().map(revision_view).collect())
    }

    pub async fn job(&self, id: &str) -> Result<Option<RefreshJob>> {
        if let Some(job) = self.jobs.get(id) {
            return Ok(Some(job));
        }
        Ok(self.db.job(id).await?.map(job_from_row))
    }

    pub async fn readiness(&self) -> Vec<ReadyCheck> {
        let db = self.db.ping().await;
        let first = self.first_refresh_done.load(Ordering::Acquire);
        let config_ok = self.sources_path.exists();
        vec![
            ReadyCheck {
                name: "config",
                ok: config_ok,
                detail: if config_ok {
                    format!("loaded {}", self.sources_path.display())
                } else {
                    format!("{} is not readable", self.sources_path.display())
                },
            },
            ReadyCheck {
                name: "firstRefresh",
                ok: first,
                detail: if first { "done".into() } else { "initial refresh still running".into() },
            },
            ReadyCheck {
                name: "database",
                ok: db.is_ok(),
                detail: match db {
                    Ok(()) => format!("{} reachable", self.db.backend()),
                    Err(e) => e.to_string(),
                },
            },
        ]
    }

    // ---- validate / apply / rollback ----------------------------------------------------------

    /// Fills in what an edit may leave out: a yaml source keeps its catalog path and content.
    fn prepare(&self, file: &SourcesFile, mut draft: SourceDraft) -> SourceDraft {
        let existing = file.find(draft.plugin, &draft.entry.id);
        if draft.entry.type_ == "yaml" && draft.entry.yaml_catalog_path().is_none() {
            let path = existing
                .and_then(|e| e.yaml_catalog_path().map(str::to_string))
                .unwrap_or_else(|| format!("{}-{}.yaml", draft.entry.id, draft.plugin.name()));
            draft.entry.properties.insert("yamlCatalogPath".into(), path.into());
        }
        if draft.content.is_none()
            && draft.entry.type_ == "yaml"
            && let Some(p) = draft.entry.yaml_catalog_path()
        {
            draft.content = read_optional(&file.resolve(p)).ok().flatten();
        }
        draft
    }

    /// Turns a partial edit into a full draft against the current sources file.
    pub fn draft(&self, plugin: PluginKind, patch: SourcePatch) -> SourceDraft {
        let file = self.file();
        let existing = file.find(plugin, &patch.id).cloned();
        patch.into_draft(plugin, existing.as_ref())
    }

    pub fn validate(&self, draft: SourceDraft) -> ValidationReport {
        let file = self.file();
        check(&self.prepare(&file, draft)).report
    }

    pub async fn apply(self: &Arc<Self>, draft: SourceDraft, opts: ApplyOptions, actor: &str) -> Result<ApplyOutcome> {
        self.apply_as(draft, opts, actor, "apply").await
    }

    pub async fn rollback(
        self: &Arc<Self>,
        plugin: PluginKind,
        id: &str,
        revision: i32,
        opts: ApplyOptions,
        actor: &str,
    ) -> Result<ApplyOutcome> {
        let row =
            self.db.revision(plugin.name(), id, revision).await?.ok_or_else(|| {
                CatalogError::NotFound(format!("revision {revision} of {plugin}/{id} does not exist"))
            })?;
        let entry: SourceEntry = serde_json::from_str(&row.entry)
            .map_err(|e| CatalogError::Internal(format!("revision {revision} of {plugin}/{id} is unreadable: {e}")))?;
        let draft = SourceDraft { plugin, entry, content: row.content };
        self.apply_as(draft, opts, actor, "rollback").await
    }

    async fn apply_as(
        self: &Arc<Self>,
        draft: SourceDraft,
        opts: ApplyOptions,
        actor: &str,
        action: &str,
    ) -> Result<ApplyOutcome> {
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let guard = self.write_lock.lock().await;

        // Always splice against the file as it is on disk now, not our cached copy.
        let file = SourcesFile::read(&self.sources_path).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(Diagnostic::render).collect();
            CatalogError::Internal(format!(
                "the sources file on disk is invalid, fix it before applying:\n{}",
                lines.join("\n")
            ))
        })?;
        let draft = self.prepare(&file, draft);
        let checked = check(&draft);
        if !checked.report.valid() {
            return Err(CatalogError::Validation(checked.report));
        }
        let latest = self.db.latest_revision(plugin.name(), &id).await?;
        let current = latest.as_ref().map(|r| r.revision).unwrap_or(0);
        if let Some(expected) = opts.expected_revision
            && expected != current
        {
            return Err(CatalogError::Conflict { expected, current });
        }
        let key = (plugin, id.clone());
        let old_snapshot = self.snapshot(&key);
        let new_entities = filter_entities(&draft.entry, checked.entities.clone().unwrap_or_default());
        let impact = if draft.entry.enabled {
            diff(old_snapshot.as_deref(), &new_entities)
        } else {
            diff(old_snapshot.as_deref(), &[])
        };
        // Disabling a source removes its entities on purpose; the guard is for content that
        // shrank (a truncated file), so it applies to enabled sources only.
        if draft.entry.enabled && impact.needs_confirmation() && !opts.confirm_removals {
            return Err(CatalogError::RemovalsNeedConfirmation(impact));
        }

        let existing = file.find(plugin, &id).cloned();
        let catalog_path = draft.entry.yaml_catalog_path().map(|p| file.resolve(p));
        let old_content = match &catalog_path {
            Some(p) => {
                read_optional(p).map_err(|e| CatalogError::Internal(format!("cannot read {}: {e}", p.display())))?
            }
            None => None,
        };
        let content_changed = draft.content.is_some() && draft.content != old_content;
        let entry_changed = existing.as_ref() != Some(&draft.entry);
        let changed = content_changed || entry_changed || latest.is_none();

        if opts.dry_run || !changed {
            drop(guard);
            let source = self.source(plugin, &id).await?;
            let view = source.unwrap_or_else(|| self.view(plugin, &draft.entry, None, None));
            let refresh = if !opts.dry_run && opts.refresh_after_apply {
                Some(self.refresh(plugin, Some(&id), RefreshMode::Full, false, true, true, actor).await?)
            } else {
                None
            };
            return Ok(ApplyOutcome {
                source: self.source(plugin, &id).await?.unwrap_or(view),
                revision: current,
                changed: false,
                dry_run: opts.dry_run,
                validation: checked.report,
                impact,
                refresh,
            });
        }

        // Compute the new sources text and prove it reads back to exactly our entry before
        // touching the disk.
        let new_sources_text = if entry_changed { Some(file.with_entry(plugin, &draft.entry)) } else { None };
        let new_file = match &new_sources_text {
            Some(text) => {
                let parsed = SourcesFile::parse(&self.sources_path, text.clone()).map_err(|d| {
                    CatalogError::Internal(format!(
                        "refusing to write: the rewritten sources file does not parse: {}",
                        d[0].render()
                    ))
                })?;
                if parsed.find(plugin, &id) != Some(&draft.entry) {
                    return Err(CatalogError::Internal(
                        "refusing to write: the rewritten sources file does not read back to the applied entry".into(),
                    ));
                }
                parsed
            }
            None => file.clone(),
        };

        let mut undo: Vec<(PathBuf, Option<String>)> = Vec::new();
        let result: Result<RevisionRow> = async {
            if content_changed && let (Some(path), Some(content)) = (&catalog_path, &draft.content) {
                undo.push((path.clone(), old_content.clone()));
                write_atomic(path, content.as_bytes()).map_err(|e| {
                    CatalogError::Internal(format!("writing {} failed: {e}; nothing was changed", path.display()))
                })?;
            }
            if let Some(text) = &new_sources_text {
                undo.push((self.sources_path.clone(), Some(file.text.clone())));
                write_atomic(&self.sources_path, text.as_bytes()).map_err(|e| {
                    CatalogError::Internal(format!(
                        "writing {} failed: {e}; nothing was changed",
                        self.sources_path.display()
                    ))
                })?;
            }
            let row = self
                .db
                .insert_revision(NewRevision {
                    plugin: plugin.name(),
                    source_id: &id,
                    revision: current + 1,
                    content_hash: &revision_hash(&draft.entry, draft.content.as_deref()),
                    entry: &entry_json(&draft.entry),
                    content: draft.content.as_deref(),
                    action,
                    actor,
                })
                .await
                .map_err(|e| match e {
                    DbError::RevisionTaken { .. } => CatalogError::Conflict {
                        expected: opts.expected_revision.unwrap_or(current),
                        current: current + 1,
                    },
                    other => {
                        CatalogError::Internal(format!("recording the revision failed: {other}; nothing was changed"))
                    }
                })?;
            Ok(row)
        }
        .await;
        let row = match result {
            Ok(row) => row,
            Err(e) => {
                for (path, old) in undo.iter().rev() {
                    let restored = match old {
                        Some(bytes) => write_atomic(path, bytes.as_bytes()),
                        None => std::fs::remove_file(path),
                    };
                    if let Err(re) = restored {
                        tracing::error!(path = %path.display(), error = %re, "could not restore a file after a failed apply");
                    }
                }
                return Err(e);
            }
        };
        self.state.write().unwrap_or_else(|p| p.into_inner()).file = Arc::new(new_file);
        drop(guard);
        tracing::info!(plugin = plugin.name(), source = %id, revision = row.revision, actor, action, "source applied");
        let kind = if action == "rollback" { EventKind::RolledBack } else { EventKind::Applied };
        self.events.publish(kind, plugin.name(), Some(&id), Some(row.revision), None);

        let refresh = if opts.refresh_after_apply {
            // The removal guard already ran against this exact content above.
            Some(self.refresh(plugin, Some(&id), RefreshMode::Full, false, true, true, actor).await?)
        } else {
            None
        };
        let source = self
            .source(plugin, &id)
            .await?
            .ok_or_else(|| CatalogError::Internal("the applied source vanished".into()))?;
        Ok(ApplyOutcome {
            source,
            revision: row.revision,
            changed: true,
            dry_run: false,
            validation: checked.report,
            impact,
            refresh,
        })
    }

    // ---- refresh -------------------------------------------------------------------------------

    /// Refreshes one source (`source_id`) or every source of a plugin. Returns the finished job
    /// when `wait`, else the job as just started. A request for a target that already has a
    /// running job gets that job.
    #[allow(clippy::too_many_arguments)]
    pub async fn refresh(
        self: &Arc<Self>,
        plugin: PluginKind,
        source_id: Option<&str>,
        mode: RefreshMode,
        dry_run: bool,
        confirm_removals: bool,
        wait: bool,
        actor: &str,
    ) -> Result<RefreshJob> {
        let file = self.file();
        let sources: Vec<String> = match source_id {
            Some(id) => {
                if file.find(plugin, id).is_none() {
                    return Err(CatalogError::NotFound(format!("source {plugin}/{id} does not exist")));
                }
                vec![id.to_string()]
            }
            None => file.sources.iter().filter(|(p, _)| *p == plugin).map(|(_, e)| e.id.clone()).collect(),
        };
        let now = Utc::now();
        let job = RefreshJob {
            id: uuid::Uuid::new_v4().to_string(),
            plugin: plugin.name().to_string(),
            source_id: source_id.map(str::to_string),
            total: sources.len(),
            sources,
            mode,
            dry_run,
            phase: JobPhase::Queued,
            completed: 0,
            current_source: None,
            results: Vec::new(),
            error: None,
            actor: actor.to_string(),
            created_at: now,
            started_at: None,
            finished_at: None,
        };
        let (mut rx, started) = self.jobs.start_or_join(job.clone());
        if started {
            self.db.upsert_job(job_row(&job)).await?;
            let this = self.clone();
            tokio::spawn(async move { this.run_job(job, confirm_removals).await });
        }
        if wait {
            let done = rx
                .wait_for(|j| j.phase.is_done())
                .await
                .map(|j| j.clone())
                .map_err(|_| CatalogError::Internal("the refresh job ended without a result".into()))?;
            return Ok(done);
        }
        let snapshot = rx.borrow().clone();
        Ok(snapshot)
    }

    async fn run_job(self: Arc<Self>, mut job: RefreshJob, confirm_removals: bool) {
        let plugin = PluginKind::parse(&job.plugin).unwrap_or(PluginKind::Models);
        job.phase = JobPhase::Running;
        job.started_at = Some(Utc::now());
        self.publish_job(&job).await;
        self.events.publish(EventKind::RefreshStarted, &job.plugin, job.source_id.as_deref(), None, Some(&job.id));
        for id in job.sources.clone() {
            job.current_source = Some(id.clone());
            self.publish_job(&job).await;
            let result = self.refresh_source(plugin, &id, job.mode, job.dry_run, confirm_removals).await;
            job.results.push(result);
            job.completed += 1;
            self.publish_job(&job).await;
            if !job.dry_run {
                self.events.publish(EventKind::Refreshed, &job.plugin, Some(&id), None, Some(&job.id));
            }
        }
        job.current_source = None;
        job.finished_at = Some(Utc::now());
        let failed = job.results.iter().filter(|r| r.status != RefreshStatus::Success).count();
        job.phase = if failed == 0 { JobPhase::Succeeded } else { JobPhase::Failed };
        if failed > 0 {
            job.error = Some(format!("{failed} of {} sources did not refresh cleanly", job.total));
        }
        if let Err(e) = self.db.upsert_job(job_row(&job)).await {
            tracing::error!(job = %job.id, error = %e, "could not persist the finished refresh job");
        }
        self.events.publish(EventKind::RefreshFinished, &job.plugin, job.source_id.as_deref(), None, Some(&job.id));
        self.jobs.finish(&job);
    }

    async fn publish_job(&self, job: &RefreshJob) {
        self.jobs.update(job);
        if let Err(e) = self.db.upsert_job(job_row(job)).await {
            tracing::warn!(job = %job.id, error = %e, "could not persist refresh job progress");
        }
    }

    /// Refreshes every source once; marks the catalog ready when done.
    pub async fn refresh_all(self: &Arc<Self>) {
        for plugin in PluginKind::ALL {
            if let Err(e) = self.refresh(plugin, None, RefreshMode::Full, false, true, true, "system").await {
                tracing::error!(plugin = plugin.name(), error = %e, "initial refresh failed");
            }
        }
        self.first_refresh_done.store(true, Ordering::Release);
    }

    fn source_lock(&self, key: &SourceKey) -> Arc<Mutex<()>> {
        let mut locks = self.source_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    async fn refresh_source(
        &self,
        plugin: PluginKind,
        id: &str,
        mode: RefreshMode,
        dry_run: bool,
        confirm_removals: bool,
    ) -> RefreshResult {
        let key = (plugin, id.to_string());
        let lock = self.source_lock(&key);
        let _guard = lock.lock().await;
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let file = self.file();
        let old = self.snapshot(&key);
        let old_count = old.as_ref().map(|s| s.entities.len()).unwrap_or(0);
        let mut result = RefreshResult {
            plugin: plugin.name().to_string(),
            source_id: id.to_string(),
            status: RefreshStatus::Success,
            entities_loaded: 0,
            entities_added: 0,
            entities_removed: 0,
            entities_updated: 0,
            entities_unchanged: 0,
            artifacts_loaded: 0,
            started_at: started,
            finished_at: started,
            duration_ms: 0,
            summary: String::new(),
            dry_run,
            diagnostics: Vec::new(),
        };
        let outcome = self.load_source(&file, plugin, id);
        let (state, new_snapshot) = match outcome {
            Loaded::Disabled => {
                result.entities_removed = old_count;
                result.summary = "Source is disabled".into();
                (SourceState::Disabled, Some(Snapshot::default()))
            }
            Loaded::Failed(diags) => {
                result.status = RefreshStatus::Failure;
                result.entities_loaded = old_count;
                result.summary = format!("Refresh failed; kept {old_count} previously loaded entities");
                result.diagnostics = diags;
                (SourceState::Error, None)
            }
            Loaded::Ok { entities, diagnostics, content_hash } => {
                let unchanged_content = old.as_ref().is_some_and(|s| s.content_hash == content_hash);
                if mode == RefreshMode::Incremental && unchanged_content {
                    result.entities_loaded = old_count;
                    result.entities_unchanged = old_count;
                    result.artifacts_loaded = old.as_ref().map(|s| s.artifact_count()).unwrap_or(0);
                    result.summary = summary(old_count, &Impact::default(), true);
                    result.diagnostics = diagnostics;
                    (self.current_state(&key).await, None)
                } else {
                    let impact = diff(old.as_deref(), &entities);
                    if impact.needs_confirmation() && !confirm_removals {
                        result.status = RefreshStatus::Failure;
                        result.entities_loaded = old_count;
                        result.summary = format!(
                            "Refusing to remove {} of {} entities without confirmRemovals; kept the previous entities",
                            impact.to_remove, impact.current_count
                        );
                        result.diagnostics.push(
                            Diagnostic::error(Layer::Semantics, result.summary.clone())
                                .hint("if the removal is intended, refresh again with confirmRemovals: true"),
                        );
                        (SourceState::Error, None)
                    } else {
                        let partial = diagnostics.iter().any(Diagnostic::is_error);
                        if partial {
                            result.status = RefreshStatus::Partial;
                        }
                        result.entities_loaded = entities.len();
                        result.entities_added = impact.to_add;
                        result.entities_removed = impact.to_remove;
                        result.entities_updated = impact.to_update;
                        result.entities_unchanged = impact.unchanged;
                        result.artifacts_loaded = entities.iter().map(Entity::artifact_count).sum();
                        result.summary = summary(entities.len(), &impact, false);
                        result.diagnostics = diagnostics;
                        let state = if partial { SourceState::PartiallyAvailable } else { SourceState::Available };
                        (state, Some(Snapshot::new(entities, content_hash)))
                    }
                }
            }
        };
        result.finished_at = Utc::now();
        result.duration_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
        if dry_run {
            return result;
        }
        let entity_count = match &new_snapshot {
            Some(s) => s.entities.len(),
            None => old_count,
        };
        if let Some(s) = new_snapshot {
            self.state.write().unwrap_or_else(|p| p.into_inner()).snapshots.insert(key.clone(), Arc::new(s));
        }
        let last_error = match result.status {
            RefreshStatus::Success => None,
            _ => result.diagnostics.iter().find(|d| d.is_error()).map(Diagnostic::render),
        };
        let row = StatusRow {
            plugin_name: plugin.name().to_string(),
            source_id: id.to_string(),
            state: state.as_str().to_string(),
            entity_count: i64::try_from(entity_count).unwrap_or(i64::MAX),
            last_refresh_time: Some(result.finished_at),
            last_refresh_status: Some(state_word(state).to_string()),
            last_refresh_summary: Some(result.summary.clone()),
            last_error,
            entities_loaded: i64::try_from(result.entities_loaded).unwrap_or(i64::MAX),
            entities_removed: i64::try_from(result.entities_removed).unwrap_or(i64::MAX),
            duration_ms: result.duration_ms,
            diagnostics: serde_json::to_string(&result.diagnostics).unwrap_or_else(|_| "[]".into()),
            updated_at: Utc::now(),
        };
        if let Err(e) = self.db.upsert_status(row).await {
            tracing::error!(plugin = plugin.name(), source = id, error = %e, "could not persist refresh status");
            result.status = RefreshStatus::Failure;
            result
                .diagnostics
                .push(Diagnostic::error(Layer::Semantics, format!("could not persist refresh status: {e}")));
        }
        tracing::info!(plugin = plugin.name(), source = id, status = status_word(result.status), summary = %result.summary, "refreshed");
        result
    }

    async fn current_state(&self, key: &SourceKey) -> SourceState {
        match self.db.status(key.0.name(), &key.1).await {
            Ok(Some(r)) => SourceState::parse(&r.state),
            _ => SourceState::Available,
        }
    }

    fn load_source(&self, file: &SourcesFile, plugin: PluginKind, id: &str) -> Loaded {
        let Some(entry) = file.find(plugin, id) else {
            return Loaded::Failed(vec![Diagnostic::error(
                Layer::Semantics,
                format!("source {plugin}/{id} is no longer in the sources file"),
            )]);
        };
        if !entry.enabled {
            return Loaded::Disabled;
        }
        let text = match entry.type_.as_str() {
            "yaml" => {
                let Some(rel) = entry.yaml_catalog_path() else {
                    return Loaded::Failed(vec![
                        Diagnostic::error(Layer::Semantics, "properties.yamlCatalogPath is missing")
                            .field("properties.yamlCatalogPath"),
                    ]);
                };
                let path = file.resolve(rel);
                match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        return Loaded::Failed(vec![
                            Diagnostic::error(
                                Layer::Syntax,
                                format!("cannot read catalog file {}: {e}", path.display()),
                            )
                            .in_file(rel)
                            .hint("check that the file exists and is readable by the server"),
                        ]);
                    }
                }
            }
            other => {
                return Loaded::Failed(vec![
                    Diagnostic::error(
                        Layer::Semantics,
                        format!("source type `{other}` is not supported by this server"),
                    )
                    .field("type")
                    .hint("supported types: yaml (a catalog file) and url (a catalog over HTTP); the entry is kept as it is"),
                ]);
            }
        };
        let label = entry.yaml_catalog_path().unwrap_or(id).to_string();
        let content_hash = sha256_hex(&[text.as_bytes()]);
        match plugin.load(&text, &label) {
            Err(diags) => Loaded::Failed(diags),
            Ok(loaded) => Loaded::Ok {
                entities: filter_entities(entry, loaded.entities),
                diagnostics: loaded.diagnostics,
                content_hash,
            },
        }
    }

    pub fn is_ready(&self) -> bool {
        self.first_refresh_done.load(Ordering::Acquire)
    }
}

enum Loaded {
    Disabled,
    Failed(Vec<Diagnostic>),
    Ok { entities: Vec<Entity>, diagnostics: Vec<Diagnostic>, content_hash: String },
}

/// Applies `includedModels` / `excludedModels` (exclusions win).
fn filter_entities(entry: &SourceEntry, entities: Vec<Entity>) -> Vec<Entity> {
    if entry.included_models.is_none() && entry.excluded_models.is_none() {
        return entities;
    }
    entities
        .into_iter()
        .filter(|e| {
            let name = e.name();
            let included = entry.included_models.as_ref().is_none_or(|inc| inc.iter().any(|p| glob_match(p, name)));
            let excluded = entry.excluded_models.as_ref().is_some_and(|exc| exc.iter().any(|p| glob_match(p, name)));
            included && !excluded
        })
        .collect()
}

/// Upstream's status words, as stored in `last_refresh_status`.
fn state_word(s: SourceState) -> &'static str {
    match s {
        SourceState::Available => "available",
        SourceState::PartiallyAvailable => "partially-available",
        SourceState::Error => "error",
        SourceState::Disabled => "disabled",
        SourceState::Loading => "loading",
    }
}

fn status_word(s: RefreshStatus) -> &'static str {
    match s {
        RefreshStatus::Success => "available",
        RefreshStatus::Partial => "partially-available",
        RefreshStatus::Failure => "error",
    }
}

fn revision_view(r: RevisionRow) -> RevisionView {
    let entry: serde_json::Value = serde_json::from_str(&r.entry).unwrap_or(serde_json::Value::Null);
    RevisionView {
        revision: r.revision,
        content_hash: r.content_hash,
        action: r.action,
        actor: r.actor,
        created_at: r.created_at,
        entry: redact_json(&entry),
        content: r.content.map(|c| redact_yaml_text(&c)),
    }
}

fn job_row(job: &RefreshJob) -> JobRow {
    JobRow {
        id: job.id.clone(),
        plugin: job.plugin.clone(),
        sources: serde_json::to_string(&job.sources).unwrap_or_else(|_| "[]".into()),
        mode: match job.mode {
            RefreshMode::Full => "FULL".into(),
            RefreshMode::Incremental => "INCREMENTAL".into(),
        },
        dry_run: job.dry_run,
        phase: job.phase.as_str().to_string(),
        total: i32::try_from(job.total).unwrap_or(i32::MAX),
        completed: i32::try_from(job.completed).unwrap_or(i32::MAX),
        current_source: job.current_source.clone(),
        results: serde_json::to_string(&job.results).unwrap_or_else(|_| "[]".into()),
        error: job.error.clone(),
        actor: job.actor.clone(),
        started_at: job.started_at,
        finished_at: job.finished_at,
        created_at: job.created_at,
    }
}

fn job_from_row(r: JobRow) -> RefreshJob {
    let sources: Vec<String> = serde_json::from_str(&r.sources).unwrap_or_default();
    RefreshJob {
        source_id: if sources.len() == 1 { sources.first().cloned() } else { None },
        id: r.id,
        plugin: r.plugin,
        total: usize::try_from(r.total).unwrap_or(0),
        sources,
        mode: if r.mode == "INCREMENTAL" { RefreshMode::Incremental } else { RefreshMode::Full },
        dry_run: r.dry_run,
        phase: JobPhase::parse(&r.phase),
        completed: usize::try_from(r.completed).unwrap_or(0),
        current_source: r.current_source,
        results: serde_json::from_str(&r.results).unwrap_or_default(),
        error: r.error,
        actor: r.actor,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}
