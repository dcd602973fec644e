//! Refresh orchestration: jobs, per-source refresh, loading from files and URLs.
//!
//! A plugin job refreshes its sources concurrently (bounded by `refresh_concurrency`); one
//! failing source does not stop the others. Each source has its own lock, so two jobs never
//! refresh the same source at once.
//!
//! A job runs in two parts side by side, each with its own budget of slots: its yaml (and
//! other local) sources take a job slot (`max_running_jobs`), its url sources a fetch slot
//! (`max_running_fetches`). A host that stalls holds a fetch slot for at most its fetch budget
//! and never a job slot, so yaml refreshes (the ones an apply asks for among them) never queue
//! behind url fetches. A part waiting for its slot says why in the job's `queued_reason`.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::Mutex;

use super::decide::{Loaded, decide};
use super::{
    Catalog, CatalogError, Result, SourceKey, SourceState, filter_entities, job_from_row, job_row, sha256_hex,
    state_word,
};
use crate::db::StatusRow;
use crate::db::cluster::Claim;
use crate::diagnostics::{Diagnostic, Layer};
use crate::events::EventKind;
use crate::fetch::{Fetched, fetch};
use crate::jobs::{ALL_PLUGINS, JobPhase, RefreshJob, Registered};
use crate::plugins::PluginKind;
use crate::refresh::{RefreshMode, RefreshResult, RefreshStatus, Snapshot};
use crate::store::Config;

/// A catalog's text as read or fetched, before it is parsed.
pub(super) struct Text {
    pub(super) text: String,
    /// Where it came from, for diagnostics (the file, or the url).
    pub(super) label: String,
    pub(super) etag: Option<String>,
}

/// How a job runs, from its request.
#[derive(Clone, Copy, Debug)]
struct JobOptions {
    confirm_removals: bool,
    /// [`RefreshRequest::initial`].
    initial: bool,
    /// Takes no slot (see [`JobRun::unqueued`]).
    unqueued: bool,
}

/// What every source of one job is refreshed with.
#[derive(Clone, Copy, Debug)]
pub(super) struct JobRun {
    mode: RefreshMode,
    dry_run: bool,
    confirm_removals: bool,
    /// [`RefreshRequest::initial`].
    initial: bool,
    /// [`RefreshRequest::unqueued`].
    unqueued: bool,
}

/// The job a refresh belongs to, for the fencing token its writes carry (PostgreSQL: a status
/// row is written only while this replica holds the job's lease).
#[derive(Clone, Debug)]
pub(super) struct Fence {
    pub(super) job_id: String,
    pub(super) owner: String,
    /// Set once a write was refused: the lease is lost, the job's other sources are skipped.
    pub(super) lost: Arc<std::sync::atomic::AtomicBool>,
    /// `Some(actor)` once the job was cancelled (`Catalog::cancel_job`).
    pub(super) cancel: tokio::sync::watch::Receiver<Option<String>>,
}

impl Fence {
    fn cancelled(&self) -> Option<String> {
        self.cancel.borrow().clone()
    }

    /// Resolves once the job is cancelled (never, when nobody can cancel it any more).
    async fn until_cancelled(&self) {
        let mut rx = self.cancel.clone();
        if rx.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a load was given up before it finished.
enum GivenUp {
    /// The source changed while it was read (`Catalog::supersede`).
    Superseded,
    /// The job was cancelled.
    Cancelled,
}

/// The two budgets a job's parts wait in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// yaml and other local sources: `max_running_jobs`.
    Job = 0,
    /// url sources: `max_running_fetches`.
    Fetch = 1,
}

impl Slot {
    fn waiting_for(self, size: usize) -> String {
        match self {
            Slot::Job => {
                format!("waiting for a job slot: {size} refresh jobs are loading sources (--max-running-jobs {size})")
            }
            Slot::Fetch => format!(
                "waiting for a fetch slot: {size} refresh jobs are fetching url sources (--max-running-fetches {size})"
            ),
        }
    }
}

/// A request to refresh one source or every source of a plugin.
#[derive(Clone, Debug)]
pub struct RefreshRequest {
    pub plugin: PluginKind,
    /// One source, or `None` for every source of the plugin.
    pub source_id: Option<String>,
    pub mode: RefreshMode,
    pub dry_run: bool,
    /// Allow a refresh that removes more than half of a source's entities.
    pub confirm_removals: bool,
    /// Return the finished job instead of the job as just registered.
    pub wait: bool,
    pub actor: String,
    /// The write (see [`Catalog::write_seq`]) this refresh must see: set by an apply, so the
    /// refresh it asks for never coalesces with a job that may have read older content.
    pub after_write: Option<u64>,
    /// The start's refresh (`refresh_all` sets it, nothing else): a plugin-wide refresh also
    /// loads suspended sources that have nothing stored to serve, and url sources serve their
    /// stored last good content while their hosts answer.
    pub initial: bool,
    /// Take no job or fetch slot: an apply's refresh of the source it changed (one source,
    /// applies rate-limited per caller), which must not queue behind other jobs' url fetches.
    pub unqueued: bool,
    /// One job over every plugin's sources (`refreshAll`); `plugin` and `source_id` are then
    /// ignored. Its `plugin` reads `*` and its sources `plugin/id`.
    pub all_plugins: bool,
}

impl RefreshRequest {
    /// A FULL, waiting refresh with the removal guard on, for `actor`.
    pub fn new(plugin: PluginKind, source_id: Option<&str>, actor: &str) -> RefreshRequest {
        RefreshRequest {
            plugin,
            source_id: source_id.map(str::to_string),
            mode: RefreshMode::Full,
            dry_run: false,
            confirm_removals: false,
            wait: true,
            actor: actor.to_string(),
            after_write: None,
            initial: false,
            unqueued: false,
            all_plugins: false,
        }
    }

    /// A FULL, waiting refresh of every source of every plugin (`refreshAll`) for `actor`.
    pub fn everything(actor: &str) -> RefreshRequest {
        RefreshRequest { all_plugins: true, ..RefreshRequest::new(PluginKind::Models, None, actor) }
    }
}

/// A source of a job: its plugin and id.
type Member = (PluginKind, String);

/// `plugin/id`: how a job over every plugin names its sources.
fn global(plugin: PluginKind, id: &str) -> String {
    format!("{}/{id}", plugin.name())
}

/// The source a job's `sources` entry names: `id` in a plugin's job, `plugin/id` in a job over
/// every plugin. `None` for a name this version cannot read.
fn member(job_plugin: &str, source: &str) -> Option<Member> {
    if job_plugin == ALL_PLUGINS {
        let (p, id) = source.split_once('/')?;
        return Some((PluginKind::parse(p)?, id.to_string()));
    }
    Some((PluginKind::parse(job_plugin)?, source.to_string()))
}

impl Catalog {
    /// Refreshes one source or every source of a plugin. Returns the finished job when
    /// `req.wait`, else the job as just registered. A request for a target that already has a
    /// running job gets that job, unless the request must see a write the running job may have
    /// missed (`after_write`): then it waits for that job to end and starts its own.
    pub async fn refresh(self: &Arc<Self>, req: RefreshRequest) -> Result<RefreshJob> {
        let plugin = req.plugin;
        let config = self.config();
        let job_plugin = if req.all_plugins { ALL_PLUGINS.to_string() } else { plugin.name().to_string() };
        let sources: Vec<String> = match req.source_id.as_deref() {
            // Every plugin's sources, as `plugin/id`, suspended ones left out.
            _ if req.all_plugins => {
                config.sources().filter(|(_, e)| !e.suspended).map(|(p, e)| global(p, &e.id)).collect()
            }
            Some(id) => {
                if config.find(plugin, id).is_none() {
                    return Err(CatalogError::NotFound(format!("source {plugin}/{id} does not exist")));
                }
                vec![id.to_string()]
            }
            // A plugin-wide refresh skips suspended sources, except at start for one that has
            // nothing stored to serve (a yaml source's file is what it serves; a url source
            // without a kept content would otherwise stay LOADING).
            None => config
                .sources()
                .filter(|(p, e)| *p == plugin && (!e.suspended || (req.initial && !self.has_stored_content(*p, e))))
                .map(|(_, e)| e.id.clone())
                .collect(),
        };
        let mut rx = loop {
            let job = RefreshJob {
                id: uuid::Uuid::new_v4().to_string(),
                plugin: job_plugin.clone(),
                source_id: req.source_id.clone().filter(|_| !req.all_plugins),
                total: sources.len(),
                sources: sources.clone(),
                mode: req.mode,
                dry_run: req.dry_run,
                phase: JobPhase::Queued,
                completed: 0,
                current_source: None,
                results: Vec::new(),
                error: None,
                queued_reason: None,
                actor: req.actor.clone(),
                created_at: Utc::now(),
                started_at: None,
                finished_at: None,
            };
            match self.jobs.start_or_join(job.clone(), self.write_seq(), req.after_write) {
                Registered::Joined(rx) => break rx,
                Registered::Started(rx) => {
                    // Cluster-wide: a live job for this target on another replica wins.
                    let target = crate::jobs::target(&job.plugin, job.source_id.as_deref());
                    let cluster = &self.options.cluster;
                    match self.db.claim_job(&job_row(&job), &target, &cluster.replica_id, cluster.job_lease).await {
                        Err(e) => {
                            self.jobs.finish(&job);
                            return Err(e.into());
                        }
                        Ok(Claim::Mine) => {
                            self.events.job_changed(&job.plugin, &job.id);
                            let this = self.clone();
                            let options = JobOptions {
                                confirm_removals: req.confirm_removals,
                                initial: req.initial,
                                unqueued: req.unqueued && req.source_id.is_some(),
                            };
                            tokio::spawn(async move { this.run_job(job, options).await });
                            break rx;
                        }
                        Ok(Claim::Running(other)) => {
                            self.jobs.finish(&job);
                            let mut theirs = self.follow_remote_job(job_from_row(*other)).await;
                            if req.after_write.is_none() {
                                break theirs;
                            }
                            // It may have read the config before our write: let it end, retry.
                            let _ = theirs.wait_for(|j| j.phase.is_done()).await;
                        }
                    }
                }
                Registered::TooOld(mut older) => {
                    // That job may have read the files before our write: let it finish (the
                    // per-source lock would serialise us behind it anyway), then run our own.
                    let _ = older.wait_for(|j| j.phase.is_done()).await;
                }
            }
        };
        if req.wait {
            let done = rx
                .wait_for(|j| j.phase.is_done())
                .await
                .map(|j| j.clone())
                .map_err(|_| CatalogError::Internal("the refresh job ended without a result".into()))?;
            return Ok(done);
        }
        // A job answered at once is answered as it settled: running, or queued with the reason
        // (the job's task sets it a moment after it was registered).
        let settled = rx.wait_for(|j| j.phase != JobPhase::Queued || j.queued_reason.is_some());
        let _ = tokio::time::timeout(std::time::Duration::from_millis(250), settled).await;
        let snapshot = rx.borrow().clone();
        Ok(snapshot)
    }

    #[tracing::instrument(name = "refresh_job", skip_all, fields(job = %job.id, plugin = %job.plugin, actor = %job.actor))]
    async fn run_job(self: Arc<Self>, job: RefreshJob, options: JobOptions) {
        let run = JobRun {
            mode: job.mode,
            dry_run: job.dry_run,
            confirm_removals: options.confirm_removals,
            initial: options.initial,
            unqueued: options.unqueued,
        };
        let config = self.config();
        let (remote, local): (Vec<Member>, Vec<Member>) = job
            .sources
            .iter()
            .filter_map(|s| member(&job.plugin, s))
            .partition(|(p, id)| config.find(*p, id).is_some_and(|e| e.type_ == "url"));
        drop(config);
        let fence = Fence {
            job_id: job.id.clone(),
            owner: self.options.cluster.replica_id.clone(),
            lost: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            cancel: self.jobs.cancel_signal(&job.id).unwrap_or_else(|| tokio::sync::watch::channel(None).1),
        };
        let shared = Arc::new(Mutex::new(job));
        let waiting = Arc::new(std::sync::Mutex::new([None, None]));
        futures_util::future::join(
            self.clone().run_part(shared.clone(), waiting.clone(), Slot::Job, local, run, fence.clone()),
            self.clone().run_part(shared.clone(), waiting, Slot::Fetch, remote, run, fence.clone()),
        )
        .await;
        let cancelled = fence.cancelled();
        if fence.lost.load(Ordering::Acquire) {
            // Another replica failed (or cancelled) this job: nothing more is written here (the
            // row would refuse it anyway), and what was refreshed after that is discarded.
            let mut job = shared.lock().await.clone();
            match self.db.job(&job.id).await {
                Ok(Some(row)) => job = job_from_row(row),
                _ => {
                    tracing::warn!(job = %fence.job_id, "this replica lost the job's lease; its results were discarded")
                }
            }
            self.jobs.finish(&job);
            return;
        }
        let mut job = shared.lock().await.clone();
        if job.phase == JobPhase::Queued {
            // No sources: it starts and ends at once.
            job.started_at = Some(Utc::now());
            self.events.publish(EventKind::RefreshStarted, &job.plugin, job.source_id.as_deref(), None, Some(&job.id));
        }
        job.current_source = None;
        job.queued_reason = None;
        job.finished_at = Some(Utc::now());
        let failed = job.results.iter().filter(|r| r.status != RefreshStatus::Success).count();
        job.phase = if failed == 0 { JobPhase::Succeeded } else { JobPhase::Failed };
        if failed > 0 {
            job.error = Some(format!("{failed} of {} sources did not refresh cleanly", job.total));
        }
        if let Some(by) = cancelled {
            job.phase = JobPhase::Cancelled;
            job.error = Some(format!(
                "cancelled by {by}: {} of {} sources were refreshed before; the others keep what they served",
                job.results.len(),
                job.total
            ));
            tracing::info!(job = %job.id, by = %by, refreshed = job.results.len(), total = job.total, "refresh job cancelled");
        }
        if let Err(e) = self.db.upsert_job(job_row(&job)).await {
            tracing::error!(job = %job.id, error = %e, "could not persist the finished refresh job");
        }
        self.events.job_changed(&job.plugin, &job.id);
        self.bump_plugin_named(&job.plugin);
        self.jobs.finish(&job);
        self.events.publish(EventKind::RefreshFinished, &job.plugin, job.source_id.as_deref(), None, Some(&job.id));
    }

    /// One part of a job (its local or its url sources): waits for a slot of its kind, then
    /// refreshes its sources, `refresh_concurrency` at a time.
    async fn run_part(
        self: Arc<Self>,
        shared: Arc<Mutex<RefreshJob>>,
        waiting: Arc<std::sync::Mutex<[Option<String>; 2]>>,
        slot: Slot,
        ids: Vec<Member>,
        run: JobRun,
        fence: Fence,
    ) {
        if ids.is_empty() {
            return;
        }
        if slot == Slot::Fetch && run.initial && !run.dry_run {
            // The start's refresh: serve what the last good fetch kept while the hosts answer.
            for (plugin, id) in &ids {
                self.seed_stored(*plugin, id).await;
            }
        }
        let (slots, size) = match slot {
            Slot::Job => (&self.job_slots, self.options.max_running_jobs.max(1)),
            Slot::Fetch => (&self.fetch_slots, self.options.max_running_fetches.max(1)),
        };
        // The semaphores are never closed, so acquiring cannot fail.
        let _permit = if run.unqueued {
            None
        } else {
            match slots.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let set_reason = |reason: Option<String>| {
                        let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                        w[slot as usize] = reason;
                        let joined: Vec<&str> = w.iter().flatten().map(String::as_str).collect();
                        (!joined.is_empty()).then(|| joined.join("; "))
                    };
                    let reason = set_reason(Some(slot.waiting_for(size)));
                    {
                        let mut j = shared.lock().await;
                        j.queued_reason = reason;
                        self.publish_job(&j).await;
                    }
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => p.ok(),
                        () = fence.until_cancelled() => None,
                    };
                    let reason = set_reason(None);
                    let mut j = shared.lock().await;
                    j.queued_reason = reason;
                    permit
                }
            }
        };
        if fence.cancelled().is_some() {
            return;
        }
        {
            let mut j = shared.lock().await;
            if j.phase == JobPhase::Queued {
                j.phase = JobPhase::Running;
                j.started_at = Some(Utc::now());
                self.events.publish(EventKind::RefreshStarted, &j.plugin, j.source_id.as_deref(), None, Some(&j.id));
            }
            self.publish_job(&j).await;
        }
        let concurrency = self.options.refresh_concurrency.max(1);
        futures_util::stream::iter(ids)
            .map(|(plugin, id)| {
                let this = self.clone();
                let shared = shared.clone();
                let fence = fence.clone();
                async move {
                    if fence.lost.load(Ordering::Acquire) || fence.cancelled().is_some() {
                        return;
                    }
                    {
                        let mut j = shared.lock().await;
                        j.current_source = Some(if j.plugin == ALL_PLUGINS { global(plugin, &id) } else { id.clone() });
                        this.publish_job(&j).await;
                    }
                    let Some(result) = this.refresh_source(plugin, &id, &run, Some(&fence)).await else {
                        // Cancelled mid-load: not refreshed, not listed.
                        return;
                    };
                    if fence.lost.load(Ordering::Acquire) {
                        return;
                    }
                    let mut j = shared.lock().await;
                    j.results.push(result);
                    j.completed += 1;
                    this.publish_job(&j).await;
                    if !run.dry_run {
                        this.events.publish(EventKind::Refreshed, plugin.name(), Some(&id), None, Some(&j.id));
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
    }

    async fn publish_job(&self, job: &RefreshJob) {
        self.jobs.update(job);
        // Job progress is visible through `refreshJob`: cached answers must not outlive it.
        self.bump_plugin_named(&job.plugin);
        if let Err(e) = self.db.upsert_job(job_row(job)).await {
            tracing::warn!(job = %job.id, error = %e, "could not persist refresh job progress");
        }
        // After the row is written: other replicas re-read it.
        self.events.job_changed(&job.plugin, &job.id);
    }

    /// Refreshes every source once, plugin by plugin, and marks the catalog ready: when every
    /// yaml (local) source has loaded (or failed), and url sources have, or `ready_wait` passed.
    /// Readiness reflects this replica, not somebody else's server: url sources still loading
    /// then read LOADING and `/readyz` lists them without failing. Returns when every job has
    /// ended (the watcher starts after it).
    ///
    /// A plugin's job is started once the previous plugin's local sources are loaded (their
    /// parses need the cores), not after its url sources. (Starting every plugin's job at once
    /// was tried for start → ready and taken back: with replicas starting together, a replica
    /// once answered a later refresh with another job's id, in tests/it/replicas.rs under CI load;
    /// not yet understood. See issue 10's note.)
    pub(super) async fn refresh_all(self: &Arc<Self>) {
        // Suspended sources with a kept content serve it and are not loaded (see `refresh`).
        let suspended: Vec<(PluginKind, String)> = {
            let config = self.config();
            config
                .sources()
                .filter(|(p, e)| e.enabled && e.suspended && self.has_stored_content(*p, e))
                .map(|(p, e)| (p, e.id.clone()))
                .collect()
        };
        for (plugin, id) in suspended {
            self.seed_stored(plugin, &id).await;
        }
        let ready_by = tokio::time::Instant::now() + self.options.ready_wait;
        let mut jobs = Vec::new();
        for plugin in PluginKind::ALL {
            let req = RefreshRequest {
                confirm_removals: true,
                initial: true,
                wait: false,
                ..RefreshRequest::new(plugin, None, "system")
            };
            match self.refresh(req).await {
                Ok(job) => {
                    let config = self.config();
                    let local: Vec<String> = job
                        .sources
                        .iter()
                        .filter(|id| config.find(plugin, id).is_none_or(|e| e.type_ != "url"))
                        .cloned()
                        .collect();
                    self.wait_for_job(&job.id, |j| {
                        j.phase.is_done() || local.iter().all(|id| j.results.iter().any(|r| r.source_id == *id))
                    })
                    .await;
                    jobs.push((plugin, job));
                }
                Err(e) => tracing::error!(plugin = plugin.name(), error = %e, "initial refresh failed"),
            }
        }
        let all_done = async {
            for (_, job) in &jobs {
                self.wait_for_job(&job.id, |j| j.phase.is_done()).await;
            }
        };
        let waited = tokio::time::timeout_at(ready_by, all_done).await;
        self.load_what_joined_jobs_refreshed(&jobs).await;
        if waited.is_err() {
            let loading = self.loading_sources();
            tracing::warn!(
                loading = %loading.join(", "),
                "ready while url sources are still loading (--ready-wait {} s); they read LOADING until they load",
                self.options.ready_wait.as_secs_f64()
            );
        }
        self.first_refresh_done.store(true, std::sync::atomic::Ordering::Release);
        for (_, job) in &jobs {
            self.wait_for_job(&job.id, |j| j.phase.is_done()).await;
        }
        self.load_what_joined_jobs_refreshed(&jobs).await;
    }

    /// A job this replica joined runs on another replica (replicas starting together): the
    /// sources it has refreshed so far, some before this replica listened, have no snapshot
    /// here yet. Loads them.
    async fn load_what_joined_jobs_refreshed(&self, jobs: &[(PluginKind, RefreshJob)]) {
        for (plugin, job) in jobs {
            let now = match self.jobs.get(&job.id) {
                Some(j) => Some(j),
                None => self.db.job(&job.id).await.ok().flatten().map(job_from_row),
            };
            for r in now.map(|j| j.results).unwrap_or_default() {
                if self.snapshot(&(*plugin, r.source_id.clone())).is_none()
                    && let Err(e) = self.reload_snapshot(*plugin, &r.source_id).await
                {
                    tracing::warn!(plugin = plugin.name(), source = %r.source_id, error = %e, "could not load what another replica's refresh decided");
                }
            }
        }
    }

    /// Waits until the job `id` satisfies `done`, or has ended (and left the registry).
    async fn wait_for_job(&self, id: &str, done: impl Fn(&RefreshJob) -> bool) {
        if let Some(mut rx) = self.jobs.subscribe(id) {
            let _ = rx.wait_for(|j| done(j)).await;
        }
    }

    /// `plugin/id` of the enabled sources not loaded since start.
    pub fn loading_sources(&self) -> Vec<String> {
        let config = self.config();
        config
            .sources()
            .filter(|(p, e)| e.enabled && !self.was_attempted(&(*p, e.id.clone())))
            .map(|(p, e)| format!("{}/{}", p.name(), e.id))
            .collect()
    }

    /// [`Catalog::load_source`]; for a url source, given up when [`Catalog::supersede`] is
    /// called for it meanwhile, or when its job is cancelled (the fetch is dropped, so the
    /// connection is closed at once). A yaml load is never given up: it
    /// is quick, and it read the store after the write that asked for it (invariant 4a), so
    /// its requester gets what it asked for; a url fetch can stall for its whole budget while
    /// holding the source's lock, and the change's own refresh waits on that lock.
    async fn load_unless_superseded(
        &self,
        key: &SourceKey,
        config: &Config,
        if_none_match: Option<&str>,
        fence: Option<&Fence>,
    ) -> std::result::Result<Loaded, GivenUp> {
        if config.find(key.0, &key.1).is_none_or(|e| e.type_ != "url") {
            return Ok(self.load_source(config, key.0, &key.1, if_none_match).await);
        }
        let signal = Arc::new(tokio::sync::Notify::new());
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), signal.clone());
        let cancelled = async {
            match fence {
                Some(f) => f.until_cancelled().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            loaded = self.load_source(config, key.0, &key.1, if_none_match) => Ok(loaded),
            () = signal.notified() => Err(GivenUp::Superseded),
            () = cancelled => Err(GivenUp::Cancelled),
        };
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if loading.get(key).is_some_and(|s| Arc::ptr_eq(s, &signal)) {
            loading.remove(key);
        }
        outcome
    }

    /// Gives up the load of `key` in progress, if any: the source changed, so what it reads
    /// is stale (called with the write recorded, before the refresh that reads the change).
    pub(super) fn supersede(&self, key: &SourceKey) {
        if let Some(signal) = self.loading.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            signal.notify_one();
        }
    }

    pub(super) fn source_lock(&self, key: &SourceKey) -> Arc<Mutex<()>> {
        let mut locks = self.source_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    #[tracing::instrument(name = "refresh_source", skip_all, fields(plugin = plugin.name(), source = id))]
    pub(super) async fn refresh_source(
        &self,
        plugin: PluginKind,
        id: &str,
        run: &JobRun,
        fence: Option<&Fence>,
    ) -> Option<RefreshResult> {
        let (mode, dry_run, confirm_removals) = (run.mode, run.dry_run, run.confirm_removals);
        let key = (plugin, id.to_string());
        let lock = self.source_lock(&key);
        let _guard = lock.lock().await;
        let clock = std::time::Instant::now();
        let config = self.config();
        let old = self.snapshot(&key);
        let old_count = old.as_ref().map(|s| s.entities.len()).unwrap_or(0);
        let mut result = RefreshResult::started(plugin.name(), id, dry_run);
        let etag = if mode == RefreshMode::Incremental { old.as_ref().and_then(|s| s.etag.clone()) } else { None };
        let outcome = match self.load_unless_superseded(&key, &config, etag.as_deref(), fence).await {
            Ok(outcome) => outcome,
            Err(GivenUp::Cancelled) => {
                tracing::info!(plugin = plugin.name(), source = id, "refresh given up: its job was cancelled");
                return None;
            }
            Err(GivenUp::Superseded) => {
                // The source changed while it was read: what this load read is stale, and the
                // refresh that follows the change loads it. Nothing is recorded or swapped.
                result.status = RefreshStatus::Failure;
                result.entities_loaded = old_count;
                result.summary = format!(
                    "Superseded: the source changed while this refresh read it; the refresh after the change loads it (kept {old_count} entities meanwhile)"
                );
                result.finished_at = Utc::now();
                result.duration_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
                tracing::info!(plugin = plugin.name(), source = id, "refresh superseded by a change to the source");
                return Some(result);
            }
        };
        let current = self.current_state(&key);
        let decision = decide(old.as_deref(), current, outcome, mode, confirm_removals, &mut result);
        let (state, new_snapshot, kept_text, mut retry) =
            (decision.state, decision.snapshot, decision.text, decision.retry);
        result.finished_at = Utc::now();
        result.duration_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
        if dry_run {
            return Some(result);
        }
        self.refresh_stats.record(plugin.name(), result.status, clock.elapsed().as_secs_f64());
        let (mut state, mut new_snapshot) = (state, new_snapshot);
        // The decision is recorded before it is served: the content where every replica (and
        // the next start) loads it from, then the status row naming it. If either write
        // fails, nothing changes here either.
        if let (Some(s), Some(text)) = (&new_snapshot, kept_text)
            && let Err(e) = self.keep_content(&s.content_hash, &text).await
        {
            tracing::error!(plugin = plugin.name(), source = id, error = %e, "could not keep the catalog content");
            new_snapshot = None;
            state = SourceState::Error;
            retry = true;
            result.status = RefreshStatus::Failure;
            result.entities_loaded = old_count;
            result.summary = format!("Refresh failed; kept {old_count} previously loaded entities");
            result.diagnostics.push(
                Diagnostic::error(Layer::Semantics, format!("could not keep the catalog content in the database: {e}"))
                    .hint("the database is unreachable or full; the refresh can be retried once it answers"),
            );
        }
        let row = self.status_row(&key, state, new_snapshot.as_ref(), old.as_deref(), &result, retry);
        let token = fence.map(|f| (f.job_id.as_str(), f.owner.as_str()));
        match self.db.upsert_status_fenced(row.clone(), token).await {
            Ok(true) => self.remember_status(row),
            Ok(false) => {
                // Fenced: this replica no longer holds the job's lease (it was paused or cut
                // off longer than --job-lease, and another replica failed the job). What it
                // loaded may be stale: nothing is served or recorded here.
                if let Some(f) = fence {
                    f.lost.store(true, Ordering::Release);
                }
                tracing::warn!(plugin = plugin.name(), source = id, "refresh discarded: the job's lease was lost");
                result.status = RefreshStatus::Failure;
                result.summary =
                    "Discarded: this replica lost the job's lease (--job-lease) before it could record the result"
                        .into();
                return Some(result);
            }
            Err(e) => {
                tracing::error!(plugin = plugin.name(), source = id, error = %e, "could not persist refresh status");
                new_snapshot = None;
                result.status = RefreshStatus::Failure;
                result
                    .diagnostics
                    .push(Diagnostic::error(Layer::Semantics, format!("could not persist refresh status: {e}")));
            }
        }
        if let Some(s) = new_snapshot {
            self.swap_snapshot(&key, Arc::new(s));
        }
        self.mark_attempted(&key);
        self.bump_plugin(plugin);
        tracing::info!(
            plugin = plugin.name(),
            source = id,
            status = state_word(state),
            summary = %result.summary,
            duration_ms = result.duration_ms,
            "refreshed"
        );
        Some(result)
    }

    /// The status row that records a refresh's outcome: the state decided, what is served
    /// after it (the new snapshot, else the old one) and the snapshot it replaced.
    fn status_row(
        &self,
        key: &SourceKey,
        state: SourceState,
        new_snapshot: Option<&Snapshot>,
        old: Option<&Snapshot>,
        result: &RefreshResult,
        retry: bool,
    ) -> StatusRow {
        let (plugin, id) = (key.0, key.1.as_str());
        let old_count = old.map_or(0, |s| s.entities.len());
        let entity_count = match new_snapshot {
            Some(s) => s.entities.len(),
            None => old_count,
        };
        let served = new_snapshot
            .as_ref()
            .map(|s| (s.content_hash.clone(), s.etag.clone()))
            .or_else(|| old.as_ref().map(|s| (s.content_hash.clone(), s.etag.clone())));
        let previous_row = self.status_of(key);
        // A failure a retry may fix counts the retries and says when the next one is due;
        // anything else (a success, a failure of the content itself) ends the series.
        let (retry_count, next_retry_at) = if retry && result.status == RefreshStatus::Failure {
            let count = previous_row.as_ref().map_or(0, |r| r.retry_count).saturating_add(1);
            let failed_ms = result.finished_at.timestamp_millis();
            let delay = crate::schedule::retry_delay(
                plugin.name(),
                id,
                failed_ms,
                u32::try_from(count).unwrap_or(u32::MAX),
                &self.options.schedule,
            );
            let at_ms = failed_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            (count, DateTime::<Utc>::from_timestamp_millis(at_ms))
        } else {
            (0, None)
        };
        let previous_hash = match (new_snapshot, old) {
            (Some(n), Some(o)) if n.content_hash != o.content_hash => Some(o.content_hash.clone()),
            _ => previous_row.and_then(|r| r.previous_hash),
        };
        let last_error = match result.status {
            RefreshStatus::Success => None,
            _ => result.diagnostics.iter().find(|d| d.is_error()).map(Diagnostic::render),
        };
        StatusRow {
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
            content_hash: served.as_ref().map(|(h, _)| h.clone()).filter(|h| !h.is_empty()),
            previous_hash: previous_hash.filter(|h| !h.is_empty()),
            etag: served.and_then(|(_, e)| e),
            retry_count,
            next_retry_at,
        }
    }

    fn current_state(&self, key: &SourceKey) -> SourceState {
        match self.status_of(key) {
            Some(r) => SourceState::parse(&r.state),
            None => SourceState::Available,
        }
    }

    /// Loads one source.
    async fn load_source(&self, config: &Config, plugin: PluginKind, id: &str, if_none_match: Option<&str>) -> Loaded {
        let entry = match config.find(plugin, id) {
            Some(e) => e.clone(),
            None => {
                return Loaded::Failed(vec![Diagnostic::error(
                    Layer::Semantics,
                    format!("source {plugin}/{id} is no longer in the sources file"),
                )]);
            }
        };
        match self.read_source(config, plugin, id, if_none_match).await {
            Ok(text) => {
                let keep = self.keeps_content(&entry);
                self.parse_source(plugin, entry, text, keep).await
            }
            Err(not_read) => not_read,
        }
    }

    /// A source's text, from its file (or ConfigMap key) or its url; `Err` with what to
    /// report when there is none to parse (disabled, failed, not modified).
    async fn read_source(
        &self,
        config: &Config,
        plugin: PluginKind,
        id: &str,
        if_none_match: Option<&str>,
    ) -> std::result::Result<Text, Loaded> {
        let (Some(entry), Some(doc)) = (config.find(plugin, id), config.doc(plugin)) else {
            return Err(Loaded::Failed(vec![Diagnostic::error(
                Layer::Semantics,
                format!("source {plugin}/{id} is no longer in the sources file"),
            )]));
        };
        if !entry.enabled {
            return Err(Loaded::Disabled);
        }
        // A location already owned by another source (or the sources file): not loaded.
        if let Some(d) = config.path_conflict(plugin, id) {
            return Err(Loaded::Failed(vec![d.clone()]));
        }
        match entry.type_.as_str() {
            "yaml" => {
                let Some(rel) = entry.yaml_catalog_path() else {
                    return Err(Loaded::Failed(vec![
                        Diagnostic::error(Layer::Semantics, "properties.yamlCatalogPath is missing")
                            .field("properties.yamlCatalogPath"),
                    ]));
                };
                match self.store.load_catalog(doc, rel).await {
                    Ok(text) => Ok(Text { text, label: rel.to_string(), etag: None }),
                    Err(e) => Err(Loaded::Unreachable(vec![
                        Diagnostic::error(Layer::Syntax, e)
                            .in_file(rel)
                            .hint("check that the catalog exists and is readable by the server"),
                    ])),
                }
            }
            "url" => match fetch(&self.http, entry, if_none_match, &self.options.fetch).await {
                Ok(Fetched::NotModified) => Err(Loaded::NotModified),
                Ok(Fetched::Body { text, etag }) => {
                    Ok(Text { text, label: entry.url().unwrap_or(id).to_string(), etag })
                }
                Err(d) => Err(Loaded::Unreachable(vec![d])),
            },
            other => Err(Loaded::Failed(vec![
                Diagnostic::error(Layer::Semantics, format!("source type `{other}` is not supported by this server"))
                    .field("type")
                    .hint("supported types: yaml (a catalog file) and url (a catalog over HTTP); the entry is kept as it is"),
            ])),
        }
    }

    /// Parses a source's text into entities. `keep_text`: the text comes back in `Loaded::Ok`
    /// (to be kept in the database), else it is dropped as soon as it is parsed.
    pub(super) async fn parse_source(
        &self,
        plugin: PluginKind,
        entry: crate::sources::SourceEntry,
        text: Text,
        keep_text: bool,
    ) -> Loaded {
        let Text { text, label, etag } = text;
        // Hashing and parsing a large catalog takes a while of CPU: on a blocking thread, so the
        // runtime's workers keep answering (readiness probes, reads) and sources of one job
        // parse in parallel. The content hash (a sequential pass over the whole text, 45 MB:
        // ~50 ms) runs beside the parse.
        let parsed = tokio::task::spawn_blocking(move || {
            let (content_hash, loaded) = std::thread::scope(|s| {
                let hashing = s.spawn(|| sha256_hex(&[text.as_bytes()]));
                let loaded = plugin.load(&text, &label);
                (hashing.join().unwrap_or_else(|_| sha256_hex(&[text.as_bytes()])), loaded)
            });
            finish(Done { text, keep_text, loaded, content_hash, etag }, &entry)
        })
        .await;
        parsed.unwrap_or_else(|e| {
            Loaded::Failed(vec![Diagnostic::error(Layer::Semantics, format!("loading the catalog failed: {e}"))])
        })
    }
}

/// A finished parse, for [`finish`].
struct Done {
    text: String,
    keep_text: bool,
    loaded: std::result::Result<crate::plugins::Loaded, Vec<Diagnostic>>,
    content_hash: String,
    etag: Option<String>,
}

/// A parse's outcome as a [`Loaded`], the text dropped (unless it is kept) and the parse's
/// memory given back.
fn finish(done: Done, entry: &crate::sources::SourceEntry) -> Loaded {
    let Done { text, keep_text, loaded, content_hash, etag } = done;
    let text = if keep_text && loaded.is_ok() {
        Some(text)
    } else {
        drop(text);
        None
    };
    // The parse freed many times the file's size: give it back now, not at the allocator's
    // leisure (RSS after a refresh is what the operator sees).
    crate::allocator::collect_now();
    match loaded {
        Err(diags) => Loaded::Failed(diags),
        Ok(loaded) => Loaded::Ok {
            entities: filter_entities(entry, loaded.entities),
            diagnostics: loaded.diagnostics,
            content_hash,
            etag,
            text,
        },
    }
}
