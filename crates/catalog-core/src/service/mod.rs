//! The catalog service: apply, refresh, rollback and the read model, tying together the config
//! store (file or ConfigMaps), the plugins, the database and the in-memory snapshots.
//!
//! Invariants:
//! - Invalid input changes nothing: validation and the removal guard run before any write.
//! - One writer at a time (`write_lock`): read the config → check expectedRevision → commit the
//!   plugin's change to the store → record revision. A failure after the commit reverts it, so
//!   the store and revisions never disagree.
//! - A refresh swaps a source's snapshot only on success; failures keep the last good entities.

mod apply;
mod audit;
mod cancel;
mod cluster;
mod contents;
mod decide;
mod error;
mod hooks;
mod read;
mod refresh;
mod rows;
mod schedule;
mod views;
mod watch;
mod webhooks;

use apply::filter_entities;
pub use audit::AuditRow;
pub use cluster::{ClusterOptions, default_replica_id};
pub use error::{CatalogError, Result};
pub use hooks::{HookOutcome, HookRequest};
pub use refresh::RefreshRequest;
use rows::*;
pub use views::*;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::Mutex;

use super::diagnostics::{Diagnostic, Layer, ValidationReport};
use super::events::{EventKind, Events};
use super::fetch::FetchConfig;
use super::jobs::{JobPhase, JobRegistry, RefreshJob};
use super::plugins::{Entity, PluginKind};
use super::redact::{redact_json, redact_yaml_text};
use super::refresh::{Impact, RefreshMode, Snapshot, diff};
use super::sources::{Patterns, SourceEntry};
use super::store::{Config, ConfigStore, Doc, LoadError};
use super::validate::{SourceDraft, SourcePatch, check, yaml_to_json};
use crate::db::{Db, DbError, JobRow, NewRevision, RevisionRow, StatusRow};

type SourceKey = (PluginKind, String);

/// What readers see, under one lock: the configuration, each source's entities, and the read
/// model of what the database holds about them (status rows, latest revision numbers), kept
/// current by this replica's own writes and by the change feed, so that `sources`, `source`
/// and `entities` read no database.
struct State {
    config: Arc<Config>,
    snapshots: HashMap<SourceKey, Arc<Snapshot>>,
    statuses: HashMap<SourceKey, StatusRow>,
    revisions: HashMap<SourceKey, i32>,
}

/// Tuning for the catalog service.
#[derive(Clone, Debug)]
pub struct CatalogOptions {
    /// How many sources of one plugin refresh at the same time.
    pub refresh_concurrency: usize,
    /// How many refresh jobs load their yaml (non-url) sources at the same time; later ones
    /// wait in phase QUEUED.
    pub max_running_jobs: usize,
    /// How many refresh jobs fetch their url sources at the same time; a separate budget, so a
    /// stalled host never holds up a yaml refresh.
    pub max_running_fetches: usize,
    /// At start, how long readiness waits for url sources (yaml sources are always waited for).
    pub ready_wait: std::time::Duration,
    pub fetch: FetchConfig,
    /// How often to look for edits made outside the API; `None` turns the watcher off.
    pub watch_interval: Option<std::time::Duration>,
    /// Several replicas on one PostgreSQL (see `cluster`).
    pub cluster: ClusterOptions,
    /// Scheduled refreshes and retries (`refreshInterval`, `--default-refresh-interval`,
    /// `--retry-*`).
    pub schedule: crate::schedule::SchedulePolicy,
    /// Outgoing webhooks: timeouts, retries, concurrency (`--webhook-*`).
    pub webhooks: crate::webhooks::WebhookOptions,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            refresh_concurrency: 4,
            max_running_jobs: 4,
            max_running_fetches: 4,
            ready_wait: std::time::Duration::from_secs(10),
            fetch: FetchConfig::default(),
            watch_interval: Some(std::time::Duration::from_secs(2)),
            cluster: ClusterOptions::default(),
            schedule: crate::schedule::SchedulePolicy::default(),
            webhooks: crate::webhooks::WebhookOptions::default(),
        }
    }
}

pub struct Catalog {
    store: Arc<dyn ConfigStore>,
    db: Db,
    options: CatalogOptions,
    http: reqwest::Client,
    state: RwLock<State>,
    write_lock: Mutex<()>,
    source_locks: std::sync::Mutex<HashMap<SourceKey, Arc<Mutex<()>>>>,
    jobs: JobRegistry,
    events: Events,
    refresh_stats: crate::refresh::RefreshStats,
    first_refresh_done: AtomicBool,
    /// Bumped after every change a reader can see; response caches key on it.
    generation: AtomicU64,
    /// Per plugin (by [`PluginKind::index`]): changes whenever that plugin's sources or
    /// entities as a reader sees them changed. Every bump of one also bumps `generation`.
    plugin_generations: [AtomicU64; PluginKind::ALL.len()],
    /// Counts writes to the sources or catalog files (API or external), under `write_lock`.
    /// A refresh job remembers the value it was registered at; see [`RefreshRequest::after_write`].
    writes: AtomicU64,
    /// Revision hash of each source's last recorded revision: what the watcher compares with.
    known: std::sync::Mutex<HashMap<SourceKey, String>>,
    /// The last error reading the sources file from disk (external edit), if it is invalid now.
    config_error: std::sync::Mutex<Option<Vec<Diagnostic>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Slots of jobs' yaml parts (`max_running_jobs`) and url parts (`max_running_fetches`).
    job_slots: Arc<tokio::sync::Semaphore>,
    fetch_slots: Arc<tokio::sync::Semaphore>,
    /// Sources whose refresh ended at least once since start (or that another replica's
    /// refresh was reloaded for): until then an enabled source reads LOADING, whatever a
    /// status row from an earlier run says.
    attempted: std::sync::Mutex<std::collections::HashSet<SourceKey>>,
    /// Contents kept in the database so far (pruning runs every 16th).
    contents_kept: AtomicU64,
    /// The loads in progress, each with the signal that gives it up (`Catalog::supersede`).
    loading: std::sync::Mutex<HashMap<SourceKey, Arc<tokio::sync::Notify>>>,
    /// Scheduled refreshes and retries this replica started (`service/schedule.rs`).
    scheduled: schedule::ScheduleStats,
    /// Outgoing webhooks: the delivery loop and its counters (see `service/webhooks.rs`).
    webhooks: Arc<crate::webhooks::Deliverer>,
}

/// How often the SQLite write-ahead log is copied into the database file ([`Db::checkpoint_loop`]).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest the checkpointer waits for the initial refresh (a url source can take long).
const CHECKPOINT_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

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

impl Catalog {
    /// Reads the configuration, records a revision for every source whose stored content is
    /// not the latest recorded one, and starts the background work: the initial refresh (which
    /// readiness waits for), then the external-edit watcher.
    ///
    /// On SQLite (one replica) the initial refresh starts before the import and runs beside
    /// it: it reads the files itself and nothing it does depends on a revision, and no request
    /// can arrive before this returns (the caller accepts connections after). On PostgreSQL it starts
    /// after the import and the cluster feed, as replicas share refresh jobs through the
    /// database (`start_cluster` fails this replica id's old jobs first).
    pub async fn open(
        store: Arc<dyn ConfigStore>,
        db: Db,
        mut options: CatalogOptions,
    ) -> anyhow::Result<Arc<Catalog>> {
        let config = store.load().await.map_err(|e| match e {
            LoadError::Invalid(_) => {
                anyhow::anyhow!("the sources configuration ({}) is invalid:\n{}", store.describe(), e.render())
            }
            LoadError::Unavailable(_) => anyhow::anyhow!("cannot read the sources configuration: {}", e.render()),
        })?;
        for doc in config.docs() {
            for w in &doc.file.warnings {
                tracing::warn!("{}", w.render());
            }
        }
        // One plugin's broken ConfigMap does not keep the other plugin from starting: that
        // plugin starts without sources, says why (configErrors, /readyz) and loads once fixed.
        let start_errors = config.errors();
        for d in &start_errors {
            tracing::error!("a plugin's configuration is invalid; it starts without sources: {}", d.render());
        }
        // One replica (SQLite): every unfinished job is this process's own, left by a restart.
        // On PostgreSQL only expired leases are failed (`cluster`), never a live replica's jobs;
        // the external-edit check runs there under the cluster locks instead of the watcher.
        let poll = if db.is_postgres() { options.watch_interval.take() } else { None };
        if !db.is_postgres() {
            let interrupted = db.fail_interrupted_jobs(Utc::now()).await?;
            if interrupted > 0 {
                tracing::warn!(count = interrupted, "marked refresh jobs interrupted by a restart as FAILED");
            }
        }
        let http = super::fetch::client(&options.fetch);
        let job_slots = Arc::new(tokio::sync::Semaphore::new(options.max_running_jobs.max(1)));
        let fetch_slots = Arc::new(tokio::sync::Semaphore::new(options.max_running_fetches.max(1)));
        let webhooks = Arc::new(crate::webhooks::Deliverer::new(
            db.clone(),
            options.fetch.clone(),
            options.webhooks.clone(),
            options.cluster.replica_id.clone(),
        ));
        let catalog = Arc::new(Catalog {
            webhooks,
            store,
            db,
            options,
            http,
            generation: AtomicU64::new(0),
            plugin_generations: std::array::from_fn(|_| AtomicU64::new(0)),
            writes: AtomicU64::new(0),
            known: std::sync::Mutex::new(HashMap::new()),
            config_error: std::sync::Mutex::new((!start_errors.is_empty()).then_some(start_errors)),
            shutdown: tokio::sync::watch::channel(false).0,
            job_slots,
            fetch_slots,
            attempted: std::sync::Mutex::new(std::collections::HashSet::new()),
            contents_kept: AtomicU64::new(0),
            loading: std::sync::Mutex::new(HashMap::new()),
            scheduled: schedule::ScheduleStats::default(),
            state: RwLock::new(State {
                config: Arc::new(config),
                snapshots: HashMap::new(),
                statuses: HashMap::new(),
                revisions: HashMap::new(),
            }),
            write_lock: Mutex::new(()),
            source_locks: std::sync::Mutex::new(HashMap::new()),
            jobs: JobRegistry::default(),
            refresh_stats: Default::default(),
            events: Events::default(),
            first_refresh_done: AtomicBool::new(false),
        });
        catalog.load_read_model().await?;
        // Before anything can publish an event (the initial refresh starts below).
        catalog.start_webhooks();
        let one_replica = !catalog.db.is_postgres();
        if one_replica {
            catalog.clone().start_background();
        }
        {
            // The write lock keeps the watcher (which the initial refresh hands over to, on
            // SQLite possibly before this is done) from recording the same revisions; the
            // cluster locks keep other replicas' imports and applies out (no-ops on SQLite).
            let _write = catalog.write_lock.lock().await;
            let _cluster = catalog.lock_all_plugins().await?;
            catalog.record_disk_revisions(&catalog.config(), RevisionAction::Import).await?;
        }
        catalog.start_cluster(poll).await?;
        if !one_replica {
            catalog.clone().start_background();
        }
        Ok(catalog)
    }

    /// The SQLite checkpointer, then the initial refresh, the scheduler and the external-edit
    /// watcher in one task. The checkpointer skips its rounds while the initial refresh runs (its parse needs
    /// the cores; what the import wrote waits in the log), for at most `CHECKPOINT_HOLD`.
    fn start_background(self: Arc<Self>) {
        let started = std::time::Instant::now();
        let this = self.clone();
        let hold = move || !this.first_refresh_done.load(Ordering::Acquire) && started.elapsed() < CHECKPOINT_HOLD;
        tokio::spawn(self.db.clone().checkpoint_loop(CHECKPOINT_EVERY, hold, self.shutdown_signal()));
        tokio::spawn(async move {
            self.refresh_all().await;
            tokio::spawn(self.clone().schedule_loop());
            self.watch_loop().await;
        });
    }

    fn config(&self) -> Arc<Config> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).config.clone()
    }

    /// `file` or `kubernetes`.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Marks a source as loaded (or failed) at least once since start.
    fn mark_attempted(&self, key: &SourceKey) {
        self.attempted.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
    }

    fn was_attempted(&self, key: &SourceKey) -> bool {
        self.attempted.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    fn snapshot(&self, key: &SourceKey) -> Option<Arc<Snapshot>> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).snapshots.get(key).cloned()
    }

    /// Records a revision for sources whose entry or content changed since the last revision
    /// (first start: action `import`, actor `system`; later: `external`). Returns the sources
    /// that got a new revision.
    async fn record_disk_revisions(&self, config: &Config, first: RevisionAction) -> Result<Vec<(SourceKey, i32)>> {
        self.record_disk_revisions_of(config, None, first).await
    }

    /// [`Catalog::record_disk_revisions`] for one plugin's sources only (`Some`).
    async fn record_disk_revisions_of(
        &self,
        config: &Config,
        only: Option<PluginKind>,
        first: RevisionAction,
    ) -> Result<Vec<(SourceKey, i32)>> {
        let mut changed = Vec::new();
        for (plugin, entry) in config.sources().filter(|(p, _)| only.is_none_or(|o| o == *p)) {
            let key = (plugin, entry.id.clone());
            let content = self.read_content(config, plugin, entry);
            let hash = revision_hash(entry, content.as_deref());
            if self.known_hash(&key).as_deref() == Some(hash.as_str()) {
                continue;
            }
            let latest = self.db.latest_revision(plugin.name(), &entry.id).await?;
            let (revision, action, actor) = match &latest {
                None => (1, first, if first == RevisionAction::Import { "system" } else { "external" }),
                Some(r) if r.content_hash != hash => (r.revision + 1, RevisionAction::External, "external"),
                Some(r) => {
                    // Recorded already (by another replica, or before a restart).
                    self.remember_revision(&key, r.revision);
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
                    action: action.as_str(),
                    actor,
                })
                .await?;
            self.remember_revision(&key, revision);
            self.set_known(key.clone(), hash);
            changed.push((key, revision));
        }
        Ok(changed)
    }

    /// The read model: a source's latest revision number, as recorded.
    fn remember_revision(&self, key: &SourceKey, revision: i32) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let r = state.revisions.entry(key.clone()).or_insert(revision);
        *r = (*r).max(revision);
    }

    /// The read model: a source's status row, as recorded.
    fn remember_status(&self, row: StatusRow) {
        let Some(plugin) = PluginKind::parse(&row.plugin_name) else { return };
        let key = (plugin, row.source_id.clone());
        self.state.write().unwrap_or_else(|p| p.into_inner()).statuses.insert(key, row);
    }

    /// The read model: a source's status row.
    fn status_of(&self, key: &SourceKey) -> Option<StatusRow> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).statuses.get(key).cloned()
    }

    /// Fills the read model from the database (at start).
    async fn load_read_model(&self) -> Result<()> {
        let statuses = self.db.all_statuses().await?;
        let revisions = self.db.latest_revision_numbers().await?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        for row in statuses {
            if let Some(p) = PluginKind::parse(&row.plugin_name) {
                state.statuses.insert((p, row.source_id.clone()), row);
            }
        }
        for (p, s, r) in revisions {
            if let Some(p) = PluginKind::parse(&p) {
                state.revisions.insert((p, s), r);
            }
        }
        Ok(())
    }

    fn known_hash(&self, key: &SourceKey) -> Option<String> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn set_known(&self, key: SourceKey, hash: String) {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(key, hash);
    }

    /// Change events from now on (a bounded broadcast: a slow receiver skips, never blocks).
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<super::events::CatalogEvent> {
        self.events.subscribe()
    }

    /// Refresh counters since start, for `/metrics`.
    pub fn refresh_stats(&self) -> super::refresh::StatsSnapshot {
        self.refresh_stats.snapshot()
    }

    /// Refreshes this replica's scheduler started since start (on their interval, retries), and
    /// jobs cancelled through this replica.
    pub fn scheduled_counts(&self) -> (u64, u64, u64) {
        self.scheduled.counts()
    }

    /// Refresh jobs running in this process.
    pub fn running_jobs(&self) -> usize {
        self.jobs.running_count()
    }

    /// A number that changes whenever anything a reader can see changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A number that changes whenever anything a reader can see of these plugins' sources
    /// and entities changed (the sum of their counters: each only grows). The response cache
    /// keys a query that reads only these plugins by it, so a change to another plugin leaves
    /// its answers cached.
    pub fn plugins_generation(&self, plugins: &[PluginKind]) -> u64 {
        plugins.iter().map(|p| self.plugin_generations[p.index()].load(Ordering::Acquire)).sum()
    }

    /// Something every plugin's readers may see changed (or it is not known which plugin).
    /// Also called by the HTTP layer after a mutation, so that no answer cached before it is
    /// served after its response.
    pub fn bump(&self) {
        for g in &self.plugin_generations {
            g.fetch_add(1, Ordering::AcqRel);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Something only `plugin`'s readers (and readers of everything) may see changed.
    pub fn bump_plugin(&self, plugin: PluginKind) {
        self.plugin_generations[plugin.index()].fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// [`Catalog::bump_plugin`] for a plugin named as text (a job's); every plugin when the
    /// name is not one.
    pub(crate) fn bump_plugin_named(&self, plugin: &str) {
        match PluginKind::parse(plugin) {
            Some(p) => self.bump_plugin(p),
            None => self.bump(),
        }
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

    /// The catalog text of a yaml source, for the API (`content`) and revisions. Only what the
    /// store allows is read: a location the source owns (for files `paths::readable_catalog_path`:
    /// never the sources file, the database, another source's file, or anything outside the
    /// sources file's directory; a deployer's outside location still loads on refresh, its
    /// text is just not shown).
    fn read_content(&self, config: &Config, plugin: PluginKind, entry: &SourceEntry) -> Option<String> {
        let rel = entry.yaml_catalog()?;
        self.read_catalog(config, plugin, &entry.id, rel)
    }

    fn read_catalog(&self, config: &Config, plugin: PluginKind, id: &str, rel: &str) -> Option<String> {
        self.store.read_catalog(config.doc(plugin)?, plugin, id, rel)
    }

    /// Checks a catalog location right before writing it. Apply calls this under the write
    /// lock; the store checks again in `commit`.
    fn check_writable(
        &self,
        doc: &Doc,
        plugin: PluginKind,
        id: &str,
        rel: &str,
    ) -> std::result::Result<(), Diagnostic> {
        self.store.check_writable(doc, plugin, id, rel)
    }
}
