//! The catalog service: apply, refresh, rollback and the read model, tying together the sources
//! file, the plugins, the store, the database and the in-memory snapshots.
//!
//! Invariants:
//! - Invalid input changes nothing: validation and the removal guard run before any write.
//! - One writer at a time (`write_lock`): read sources file → check expectedRevision → write
//!   catalog file → write sources file → record revision. A failure after a file write restores
//!   the previous bytes, so files and revisions never disagree.
//! - A refresh swaps a source's snapshot only on success; failures keep the last good entities.

mod refresh;
mod watch;

pub use refresh::RefreshRequest;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::Mutex;

use super::diagnostics::{Diagnostic, ValidationReport};
use super::events::{EventKind, Events};
use super::fetch::FetchConfig;
use super::jobs::{JobPhase, JobRegistry, RefreshJob};
use super::paths;
use super::plugins::{Entity, PluginKind};
use super::redact::{redact_json, redact_yaml_text};
use super::refresh::{Impact, RefreshMode, Snapshot, diff};
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
    /// A dependency (the database) is down; the caller may retry after the given seconds.
    #[error("{message}; retry in {retry_after_secs} s")]
    Unavailable { message: String, retry_after_secs: u32 },
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for CatalogError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => {
                CatalogError::Unavailable { message: "the database is unavailable".into(), retry_after_secs: 5 }
            }
            other => CatalogError::Internal(other.to_string()),
        }
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

/// Tuning for the catalog service.
#[derive(Clone, Debug)]
pub struct CatalogOptions {
    /// How many sources of one plugin refresh at the same time.
    pub refresh_concurrency: usize,
    /// How many refresh jobs run at the same time; later ones wait in phase QUEUED.
    pub max_running_jobs: usize,
    pub fetch: FetchConfig,
    /// How often to look for edits made outside the API; `None` turns the watcher off.
    pub watch_interval: Option<std::time::Duration>,
    /// Files no source may write or read back (the SQLite database; `-wal`/`-shm`/`-journal`
    /// are implied).
    pub reserved_paths: Vec<PathBuf>,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            refresh_concurrency: 4,
            max_running_jobs: 4,
            fetch: FetchConfig::default(),
            watch_interval: Some(std::time::Duration::from_secs(2)),
            reserved_paths: Vec::new(),
        }
    }
}

pub struct Catalog {
    sources_path: PathBuf,
    db: Db,
    options: CatalogOptions,
    http: reqwest::Client,
    state: RwLock<State>,
    write_lock: Mutex<()>,
    source_locks: std::sync::Mutex<HashMap<SourceKey, Arc<Mutex<()>>>>,
    pub jobs: JobRegistry,
    pub events: Events,
    pub refresh_stats: super::refresh::RefreshStats,
    first_refresh_done: AtomicBool,
    /// Bumped after every change a reader can see; response caches key on it.
    generation: AtomicU64,
    /// Counts writes to the sources or catalog files (API or external), under `write_lock`.
    /// A refresh job remembers the value it was registered at; see [`RefreshRequest::after_write`].
    writes: AtomicU64,
    /// Revision hash of each source's last recorded revision: what the watcher compares with.
    known: std::sync::Mutex<HashMap<SourceKey, String>>,
    /// The last error reading the sources file from disk (external edit), if it is invalid now.
    config_error: std::sync::Mutex<Option<Vec<Diagnostic>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    job_slots: Arc<tokio::sync::Semaphore>,
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
    pub async fn open(sources_path: PathBuf, db: Db, options: CatalogOptions) -> anyhow::Result<Arc<Catalog>> {
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
        let http = super::fetch::client(&options.fetch);
        let job_slots = Arc::new(tokio::sync::Semaphore::new(options.max_running_jobs.max(1)));
        let catalog = Arc::new(Catalog {
            sources_path,
            db,
            options,
            http,
            generation: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            known: std::sync::Mutex::new(HashMap::new()),
            config_error: std::sync::Mutex::new(None),
            shutdown: tokio::sync::watch::channel(false).0,
            job_slots,
            state: RwLock::new(State { file: Arc::new(file), snapshots: HashMap::new() }),
            write_lock: Mutex::new(()),
            source_locks: std::sync::Mutex::new(HashMap::new()),
            jobs: JobRegistry::default(),
            refresh_stats: Default::default(),
            events: Events::default(),
            first_refresh_done: AtomicBool::new(false),
        });
        catalog.record_disk_revisions(("import", "system")).await?;
        Ok(catalog)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn file(&self) -> Arc<SourcesFile> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).file.clone()
    }

    fn snapshot(&self, key: &SourceKey) -> Option<Arc<Snapshot>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).snapshots.get(key).cloned()
    }

    /// Records a revision for sources whose entry or content changed since the last revision
    /// (first start: action `import`, actor `system`; later: `external`). Returns the sources
    /// that got a new revision.
    async fn record_disk_revisions(&self, first: (&str, &str)) -> Result<Vec<(SourceKey, i32)>> {
        let file = self.file();
        let mut changed = Vec::new();
        for (plugin, entry) in &file.sources {
            let key = (*plugin, entry.id.clone());
            let content = self.read_content(&file, entry).ok().flatten();
            let hash = revision_hash(entry, content.as_deref());
            if self.known_hash(&key).as_deref() == Some(hash.as_str()) {
                continue;
            }
            let latest = self.db.latest_revision(plugin.name(), &entry.id).await?;
            let (revision, action, actor) = match &latest {
                None => (1, first.0, first.1),
                Some(r) if r.content_hash != hash => (r.revision + 1, "external", "external"),
                Some(_) => {
                    self.set_known(key, hash);
                    continue;
                }
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
            self.set_known(key.clone(), hash);
            changed.push((key, revision));
        }
        Ok(changed)
    }

    fn known_hash(&self, key: &SourceKey) -> Option<String> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn set_known(&self, key: SourceKey, hash: String) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(key, hash);
    }

    /// A number that changes whenever anything a reader can see changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The number of file writes so far.
    pub(crate) fn write_seq(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Records a write (call with `write_lock` held, after the bytes are on disk); returns its
    /// sequence number.
    fn note_write(&self) -> u64 {
        self.writes.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Ends subscriptions and background loops.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Problems with the sources file on disk right now (an invalid external edit).
    pub fn config_errors(&self) -> Vec<Diagnostic> {
        self.config_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
    }

    /// The catalog text of a yaml source, for the API (`content`) and revisions. Only what
    /// `paths::readable_catalog_path` allows is read: never the sources file, the database,
    /// another source's file, or anything outside the sources file's directory (a deployer's
    /// outside location still loads on refresh; its text is just not shown).
    fn read_content(&self, file: &SourcesFile, entry: &SourceEntry) -> std::io::Result<Option<String>> {
        let Some(rel) = entry.yaml_catalog_path().filter(|_| entry.type_ == "yaml") else {
            return Ok(None);
        };
        // Callers pass an entry of `file`; find its plugin (by identity, else by equal entry).
        let plugin = file
            .sources
            .iter()
            .find(|(_, e)| std::ptr::eq(e, entry))
            .or_else(|| file.sources.iter().find(|(_, e)| e == entry))
            .map(|(p, _)| *p);
        match plugin {
            Some(plugin) => self.read_catalog(file, plugin, &entry.id, rel),
            None => Ok(None),
        }
    }

    fn read_catalog(
        &self,
        file: &SourcesFile,
        plugin: PluginKind,
        id: &str,
        rel: &str,
    ) -> std::io::Result<Option<String>> {
        if file.path_conflict(plugin, id).is_some() {
            return Ok(None);
        }
        match paths::readable_catalog_path(file, plugin, id, rel, &self.options.reserved_paths) {
            Ok(path) => read_optional(&path),
            Err(_) => Ok(None),
        }
    }

    /// Checks a catalog location right before writing it (symlinks resolved on the real
    /// filesystem) and returns the path to write. Apply calls this under the write lock.
    pub fn writable_catalog_path(
        &self,
        file: &SourcesFile,
        plugin: PluginKind,
        id: &str,
        rel: &str,
    ) -> std::result::Result<PathBuf, Diagnostic> {
        if let Some(d) = file.path_conflict(plugin, id) {
            return Err(d.clone().field(paths::FIELD));
        }
        paths::writable_catalog_path(file, plugin, id, rel, &self.options.reserved_paths)
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

    /// Recent jobs, newest first (running ones with their live state).
    pub async fn recent_jobs(&self, limit: u64) -> Result<Vec<RefreshJob>> {
        Ok(self
            .db
            .recent_jobs(limit)
            .await?
            .into_iter()
            .map(|row| self.jobs.get(&row.id).unwrap_or_else(|| job_from_row(row)))
            .collect())
    }

    pub async fn job(&self, id: &str) -> Result<Option<RefreshJob>> {
        if let Some(job) = self.jobs.get(id) {
            return Ok(Some(job));
        }
        Ok(self.db.job(id).await?.map(job_from_row))
    }

    /// The readiness checks. Answers within about a second whatever the database does: the
    /// ping is cut at 800 ms (probes usually time out at 1 s).
    pub async fn readiness(&self) -> Vec<ReadyCheck> {
        let db = match tokio::time::timeout(std::time::Duration::from_millis(800), self.db.ping()).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Unavailable("no answer to a ping within 800 ms".into())),
        };
        let first = self.first_refresh_done.load(Ordering::Acquire);
        let config_errors = self.config_errors();
        let config_ok = self.sources_path.exists() && config_errors.is_empty();
        vec![
            ReadyCheck {
                name: "config",
                ok: config_ok,
                detail: match config_errors.first() {
                    _ if config_ok => format!("loaded {}", self.sources_path.display()),
                    Some(d) => {
                        format!("the sources file on disk is invalid (the last good one is in use): {}", d.render())
                    }
                    None => format!("{} is not readable", self.sources_path.display()),
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

    /// Fills in what an edit may leave out (a yaml source keeps its catalog path and content)
    /// and decides where its bytes go: the server assigns the location of a new source
    /// (`{id}-{plugin}.yaml` beside the sources file), an existing one keeps its own, and new
    /// content must be writable there (see `paths`). Refuses before anything is written.
    fn prepare(&self, file: &SourcesFile, mut draft: SourceDraft) -> Result<SourceDraft> {
        if draft.entry.type_ != "yaml" {
            return Ok(draft);
        }
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let existing = file.find(plugin, &id);
        let requested = draft
            .entry
            .properties
            .get("yamlCatalogPath")
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| format!("{v:?}")));
        let invalid = |d: Diagnostic| CatalogError::Validation(ValidationReport::from_diagnostics(vec![d]));
        let rel = paths::assign(plugin, &id, requested.as_deref(), existing).map_err(invalid)?;
        draft.entry.properties.insert("yamlCatalogPath".into(), rel.clone().into());
        if draft.content.is_some() {
            self.writable_catalog_path(file, plugin, &id, &rel).map_err(invalid)?;
        } else if existing.is_some() {
            draft.content = self.read_catalog(file, plugin, &id, &rel).ok().flatten();
        }
        Ok(draft)
    }

    /// The layered validation of a prepared draft plus what needs the server's settings: the
    /// outbound URL policy of `url` sources (`--url-allow`).
    fn check_draft(&self, draft: &SourceDraft, existing: Option<&SourceEntry>) -> super::validate::Checked {
        let mut checked = check(draft, existing);
        if draft.entry.type_ == "url"
            && let Some(url) = draft.entry.url()
            && let Err(msg) = super::outbound::check_source_url(&self.options.fetch.url_allow, url)
        {
            let mut diags: Vec<Diagnostic> = checked.report.diagnostics().cloned().collect();
            diags.push(
                Diagnostic::error(super::diagnostics::Layer::Security, msg)
                    .field("input.properties.url")
                    .hint("point the source at a catalog host outside the cluster's private ranges, or list the host with --url-allow"),
            );
            checked.report = ValidationReport::from_diagnostics(diags);
        }
        checked
    }

    /// Turns a partial edit into a full draft against the current sources file.
    pub fn draft(&self, plugin: PluginKind, patch: SourcePatch) -> SourceDraft {
        let file = self.file();
        let existing = file.find(plugin, &patch.id).cloned();
        patch.into_draft(plugin, existing.as_ref())
    }

    /// Validates a (partial) edit against the current sources file without changing anything.
    /// The CPU work (YAML parsing, plugin checks) runs on the blocking pool, so a large or
    /// hostile input never stalls the async workers that serve everyone else's requests; its
    /// cost is bounded by the body limit and the linear-time depth check.
    pub async fn validate_source(self: &Arc<Self>, plugin: PluginKind, patch: SourcePatch) -> ValidationReport {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.validate(this.draft(plugin, patch))).await {
            Ok(report) => report,
            Err(e) => ValidationReport::from_diagnostics(vec![Diagnostic::error(
                super::diagnostics::Layer::Semantics,
                format!("validation did not finish: {e}"),
            )]),
        }
    }

    pub fn validate(&self, draft: SourceDraft) -> ValidationReport {
        let file = self.file();
        let existing = file.find(draft.plugin, &draft.entry.id).cloned();
        match self.prepare(&file, draft) {
            Ok(draft) => self.check_draft(&draft, existing.as_ref()).report,
            Err(CatalogError::Validation(report)) => report,
            Err(e) => ValidationReport::from_diagnostics(vec![Diagnostic::error(
                super::diagnostics::Layer::Semantics,
                e.to_string(),
            )]),
        }
    }

    /// Applies a (partial) edit. The patch is merged with the source as it is on disk now,
    /// under the write lock, so fields it leaves out keep their current values even when the
    /// file was edited outside the API a moment ago.
    pub async fn apply(
        self: &Arc<Self>,
        plugin: PluginKind,
        patch: SourcePatch,
        opts: ApplyOptions,
        actor: &str,
    ) -> Result<ApplyOutcome> {
        self.apply_as(Proposed::Patch(plugin, patch), opts, actor, "apply").await
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
        self.apply_as(Proposed::Draft(draft), opts, actor, "rollback").await
    }

    #[tracing::instrument(name = "apply", skip_all, fields(action, actor))]
    async fn apply_as(
        self: &Arc<Self>,
        proposed: Proposed,
        opts: ApplyOptions,
        actor: &str,
        action: &str,
    ) -> Result<ApplyOutcome> {
        let guard = self.write_lock.lock().await;

        // Merge and splice against the same bytes: the file as it is on disk now, read under
        // the lock (not our cached copy, which may be a watch interval old).
        let file = SourcesFile::read(&self.sources_path).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(Diagnostic::render).collect();
            CatalogError::Internal(format!(
                "the sources file on disk is invalid, fix it before applying:\n{}",
                lines.join("\n")
            ))
        })?;
        let draft = match proposed {
            Proposed::Draft(d) => d,
            Proposed::Patch(plugin, patch) => {
                let existing = file.find(plugin, &patch.id).cloned();
                patch.into_draft(plugin, existing.as_ref())
            }
        };
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let draft = self.prepare(&file, draft)?;
        let checked = self.check_draft(&draft, file.find(plugin, &id));
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
        let rel = draft.entry.yaml_catalog_path().filter(|_| draft.content.is_some());
        let old_content = match rel {
            Some(rel) => self.read_catalog(&file, plugin, &id, rel).map_err(|e| {
                CatalogError::Internal(format!("cannot read the current catalog of {plugin}/{id} ({rel}): {e}"))
            })?,
            None => None,
        };
        let content_changed = draft.content.is_some() && draft.content != old_content;
        // Where new content goes: re-checked here, under the lock, right before the write
        // (symlinks resolved, ownership, reserved files), not only when the input was checked.
        // An entry-only edit writes no catalog, so a deployer's location outside the directory
        // does not block a rename.
        let catalog_path = match rel {
            Some(rel) if content_changed => Some(
                self.writable_catalog_path(&file, plugin, &id, rel)
                    .map_err(|d| CatalogError::Validation(ValidationReport::from_diagnostics(vec![d])))?,
            ),
            _ => None,
        };
        let entry_changed = existing.as_ref() != Some(&draft.entry);
        let changed = content_changed || entry_changed || latest.is_none();

        if opts.dry_run || !changed {
            drop(guard);
            let refresh = if !opts.dry_run && opts.refresh_after_apply {
                // Nothing was written: any running job sees the current content.
                let req = RefreshRequest { confirm_removals: true, ..RefreshRequest::new(plugin, Some(&id), actor) };
                Some(self.refresh(req).await?)
            } else {
                None
            };
            // A dry run of a new source has nothing stored yet: show the draft.
            let source = match self.source(plugin, &id).await? {
                Some(s) => s,
                None => self.view(plugin, &draft.entry, None, None),
            };
            return Ok(ApplyOutcome {
                source,
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
                    DbError::Unavailable(_) => CatalogError::Unavailable {
                        message:
                            "the database is unavailable, so the revision could not be recorded; nothing was changed"
                                .into(),
                        retry_after_secs: 5,
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
        self.set_known(key.clone(), row.content_hash.clone());
        let write = self.note_write();
        self.bump();
        drop(guard);
        tracing::info!(plugin = plugin.name(), source = %id, revision = row.revision, actor, action, "source applied");
        let kind = if action == "rollback" { EventKind::RolledBack } else { EventKind::Applied };
        self.events.publish(kind, plugin.name(), Some(&id), Some(row.revision), None);

        let refresh = if opts.refresh_after_apply {
            // The removal guard already ran against this exact content above. The refresh must
            // read this write: it may join only a job registered after it.
            let req = RefreshRequest {
                confirm_removals: true,
                after_write: Some(write),
                ..RefreshRequest::new(plugin, Some(&id), actor)
            };
            Some(self.refresh(req).await?)
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
}

/// What an apply proposes: a partial edit (merged under the write lock) or a whole source (a
/// rollback's recorded revision).
enum Proposed {
    Patch(PluginKind, SourcePatch),
    Draft(SourceDraft),
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
pub(super) fn state_word(s: SourceState) -> &'static str {
    match s {
        SourceState::Available => "available",
        SourceState::PartiallyAvailable => "partially-available",
        SourceState::Error => "error",
        SourceState::Disabled => "disabled",
        SourceState::Loading => "loading",
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
