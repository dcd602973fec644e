//! Several replicas on one PostgreSQL: the change feed, cross-replica locks, job leases and
//! read-your-writes. None of it depends on the config store: a replica learns *that* something
//! changed from the feed and re-reads the config through the same path as an external edit
//! ([`Catalog::check_external`]), which is idempotent (a revision another replica recorded is
//! not recorded again).
//!
//! - Publishing: [`Events`] queues every local change; [`Catalog::publisher_loop`] records it in
//!   `catalog_changes` and NOTIFYs, one at a time, so ids follow the local order.
//! - Applying: [`Catalog::feed_loop`] LISTENs on a dedicated connection; every notification
//!   (and a heartbeat) reads the rows after the last applied id, in order, and applies the
//!   other replicas' ones: config re-read, snapshot reload (no status row, no job), job state,
//!   then the event to local subscribers. Ids are gap-free and in commit order
//!   (`Db::publish_change`), so the rows after the applied id are exactly what is left to do.
//!   A change that cannot be applied (the config store or the database unreachable) is
//!   retried with backoff, never skipped: the applied generation stays before it, so a
//!   `X-Catalog-Min-Generation` read waits or is refused rather than answered stale, and after
//!   `--consistency-wait` `/readyz` fails `changeFeed` naming the change. After a lost
//!   connection it reconnects with backoff and resynchronises from the table, so nothing is
//!   missed; `/readyz` shows `changeFeed` failing meanwhile.
//! - Jobs: claimed in the database (one live job per target cluster-wide), owned under a
//!   lease that [`Catalog::lease_loop`] renews every third of it; the same loop fails the jobs
//!   of replicas that stopped renewing.
//! - Config re-reads (the feed and the periodic poll that replaces the file watcher here) hold
//!   every plugin's cluster lock, so they never record as "external" the bytes a writer on
//!   another replica has written but not recorded yet.
//!
//! SQLite: one replica; none of these loops run (one log line says so).

use super::apply::Proposed;
use super::*;
use crate::db::cluster::{ChangeRow, FeedEvent, NewChange, PluginLock};
use crate::events::{CatalogEvent, JOB_KIND};
use std::time::Duration;

/// Cluster settings (`--replica-id`, `--job-lease`, `--consistency-wait`).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// This replica's name in job leases, the change feed and logs.
    pub replica_id: String,
    pub job_lease: Duration,
    /// How long a request with `X-Catalog-Min-Generation` waits for this replica.
    pub consistency_wait: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replica_id: default_replica_id(),
            job_lease: Duration::from_secs(15),
            consistency_wait: Duration::from_secs(5),
        }
    }
}

/// The host name (the pod name in Kubernetes) plus a short random suffix, so two processes on
/// one host never share a lease.
pub fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "catalog-bff".into());
    let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().take(6).collect();
    format!("{host}-{suffix}")
}

impl Proposed {
    /// The plugin an apply writes to: known before the write lock, so its cluster lock can be
    /// taken right after it.
    pub(super) fn plugin(&self) -> PluginKind {
        match self {
            Proposed::Patch(p, _) => *p,
            Proposed::Draft(d) => d.plugin,
        }
    }
}

impl Catalog {
    /// The cluster-wide write lock of every plugin, in a fixed order.
    pub(super) async fn lock_all_plugins(&self) -> Result<Vec<PluginLock>> {
        let mut held = Vec::new();
        for p in PluginKind::ALL {
            held.push(self.db.lock_plugin(p.name()).await?);
        }
        Ok(held)
    }

    /// Re-reads the config under every plugin's cluster lock.
    pub async fn reread_config(self: &Arc<Self>) -> Result<Vec<SourceKey>> {
        let _locks = self.lock_all_plugins().await?;
        self.check_external().await
    }

    /// Starts the change feed, the publisher and the lease loop (PostgreSQL), or says that
    /// this is a single replica (SQLite). `poll`: the external-edit check interval, run here
    /// under the cluster locks instead of by the plain watcher.
    pub(super) async fn start_cluster(self: &Arc<Self>, poll: Option<Duration>) -> anyhow::Result<()> {
        if !self.db.is_postgres() {
            tracing::info!(
                backend = %self.db.backend(),
                "single replica: SQLite is local to this process; run several replicas on PostgreSQL"
            );
            return Ok(());
        }
        let start = u64::try_from(self.db.last_change_id().await?).unwrap_or(0);
        let Some(rx) = self.events.enable_feed(start) else { return Ok(()) };
        let c = &self.options.cluster;
        tracing::info!(
            replica = %c.replica_id,
            generation = start,
            job_lease_s = c.job_lease.as_secs_f64(),
            "cluster mode: changes travel by PostgreSQL LISTEN/NOTIFY"
        );
        // Before anything runs here: what this replica id still owns is from a previous life.
        let own = self.db.fail_own_jobs(&c.replica_id).await?;
        self.events.set_feed(false, "connecting".into());
        tokio::spawn(self.clone().publisher_loop(rx));
        tokio::spawn(self.clone().feed_loop());
        tokio::spawn(self.clone().lease_loop());
        self.announce_failed(own, "its previous process stopped");
        if let Some(every) = poll {
            tokio::spawn(self.clone().poll_loop(every));
        }
        Ok(())
    }

    fn replica(&self) -> &str {
        &self.options.cluster.replica_id
    }

    // ---- read-your-writes ---------------------------------------------------------------------

    /// The consistency token of a mutation that just returned: the cluster generation after
    /// everything this replica changed so far (waits, bounded by `--db-timeout`, for its
    /// changes to be recorded).
    pub async fn consistency_token(&self) -> u64 {
        self.events.flushed_through(self.db.timeout()).await
    }

    /// The cluster generation this replica has applied.
    pub fn cluster_generation(&self) -> u64 {
        self.events.applied_generation()
    }

    /// Waits until this replica has applied generation `wanted` (bounded by
    /// `--consistency-wait`), else UNAVAILABLE.
    pub async fn wait_for_generation(&self, wanted: u64) -> Result<u64> {
        let wait = self.options.cluster.consistency_wait;
        self.events.wait_applied(wanted, wait).await.map_err(|at| CatalogError::Unavailable {
            message: format!(
                "replica is behind: at {at}, asked for {wanted} (waited {} ms, --consistency-wait); retry",
                wait.as_millis()
            ),
            retry_after_secs: 1,
        })
    }

    /// The `changeFeed` readiness check; `None` without a feed (SQLite). Fails while the
    /// LISTEN connection is down, and when a change has not applied for longer than
    /// `--consistency-wait` (this replica would serve what that change replaced).
    pub fn change_feed_check(&self) -> Option<(bool, String)> {
        if !self.events.feed_enabled() {
            return None;
        }
        let (up, detail) = self.events.feed_status();
        if let Some((id, why, for_how_long)) = self.events.stuck()
            && for_how_long > self.options.cluster.consistency_wait
        {
            return Some((
                false,
                format!(
                    "behind: change {id} has not applied for {:.1} s (--consistency-wait {:.1} s), retrying: {why}",
                    for_how_long.as_secs_f64(),
                    self.options.cluster.consistency_wait.as_secs_f64()
                ),
            ));
        }
        Some((up, detail))
    }

    /// A receiver of a job's live state, also for a job running on another replica (followed
    /// from the feed). `None`: unknown or finished (read the row).
    pub async fn follow_job(&self, id: &str) -> Option<tokio::sync::watch::Receiver<RefreshJob>> {
        if let Some(rx) = self.jobs.subscribe(id) {
            return Some(rx);
        }
        if !self.events.feed_enabled() {
            return None;
        }
        let job = job_from_row(self.db.job(id).await.ok()??);
        if job.phase.is_done() {
            return None;
        }
        Some(self.follow_remote_job(job).await)
    }

    /// Follows a job of another replica; re-reads its row after registering, in case it ended
    /// before (its last notification would then have been missed).
    pub(super) async fn follow_remote_job(&self, job: RefreshJob) -> tokio::sync::watch::Receiver<RefreshJob> {
        let id = job.id.clone();
        let rx = self.jobs.follow_remote(job);
        if let Ok(Some(row)) = self.db.job(&id).await {
            self.jobs.update_remote(&job_from_row(row));
        }
        rx
    }

    // ---- background loops -------------------------------------------------------------------

    /// Records queued local changes in the feed, in order. A change that cannot be recorded
    /// (database down) is retried with backoff for up to 30 s, then dropped with an error
    /// (the other replicas' periodic config poll still converges them).
    async fn publisher_loop(self: Arc<Self>, mut rx: tokio::sync::mpsc::UnboundedReceiver<events::Change>) {
        let mut shutdown = self.shutdown_signal();
        loop {
            let change = tokio::select! {
                c = rx.recv() => match c { Some(c) => c, None => return },
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let new = NewChange {
                key: format!("{}:{}", self.replica(), uuid::Uuid::new_v4().simple()),
                kind: change.kind.to_string(),
                plugin: change.plugin.clone(),
                source_id: change.source_id.clone(),
                revision: change.revision,
                job_id: change.job_id.clone(),
                origin: self.replica().to_string(),
            };
            // Retried (with the same key, so it is recorded once) until it is recorded: the
            // other replicas learn of it from nowhere else. Later changes wait behind it, so
            // the feed keeps this replica's order.
            let mut pause = Duration::from_millis(100);
            let mut warned = false;
            loop {
                match self.db.publish_change(&new).await {
                    Ok(id) => {
                        self.events.mark_flushed(change.seq, u64::try_from(id).ok());
                        if warned {
                            tracing::info!(kind = change.kind, plugin = %change.plugin, generation = id, "published a change after retrying");
                        }
                        break;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(kind = change.kind, plugin = %change.plugin, error = %e, "could not publish a change; retrying until it is recorded");
                            warned = true;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// LISTENs for changes; reconnects with backoff and resynchronises after a lost connection.
    async fn feed_loop(self: Arc<Self>) {
        if !self.db.is_postgres() {
            return;
        }
        let mut shutdown = self.shutdown_signal();
        let mut pause = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut feed = match self.db.listen().await {
                Ok(f) => f,
                Err(e) => {
                    self.events.set_feed(false, format!("LISTEN connection down, reconnecting: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            // Whatever happened while we were not listening is in the table.
            let mut gap = self.catch_up_logged().await;
            let mut retry = Duration::from_millis(25);
            self.events.set_feed(true, format!("listening on {}", crate::db::cluster::CHANNEL));
            tracing::info!(generation = self.cluster_generation(), "change feed connected");
            loop {
                // A change that did not apply is tried again soon (backing off to a second);
                // otherwise the heartbeat also catches a notification that was missed.
                let quiet = if gap {
                    retry = (retry * 2).min(Duration::from_secs(1));
                    retry
                } else {
                    retry = Duration::from_millis(25);
                    Duration::from_secs(2)
                };
                let next = tokio::select! {
                    n = feed.next(quiet) => n,
                    _ = shutdown.wait_for(|s| *s) => return,
                };
                match next {
                    FeedEvent::Notified | FeedEvent::Quiet => gap = self.catch_up_logged().await,
                    FeedEvent::Lost => break,
                }
            }
            self.events.set_feed(false, "LISTEN connection lost; reconnecting".into());
            tracing::warn!(generation = self.cluster_generation(), "change feed connection lost; reconnecting");
        }
    }

    /// [`Catalog::catch_up`], logging a failure; returns whether a change is waiting to be
    /// retried (the loop then looks again soon, with backoff).
    async fn catch_up_logged(self: &Arc<Self>) -> bool {
        match self.catch_up().await {
            Ok(()) => {
                self.events.set_stuck(None);
                false
            }
            Err((generation, e)) => {
                let since = self.events.set_stuck(Some((generation, e.to_string())));
                if since.is_none() {
                    tracing::warn!(generation, error = %e, "could not apply a change from another replica; retrying until it applies");
                }
                true
            }
        }
    }

    /// Applies, in id order, every change after the applied generation. On a change that
    /// cannot be applied, stops before it and returns its id and why: it is retried, never
    /// skipped.
    async fn catch_up(self: &Arc<Self>) -> std::result::Result<(), (u64, CatalogError)> {
        loop {
            let applied = self.cluster_generation();
            let rows = self
                .db
                .changes_since(i64::try_from(applied).unwrap_or(i64::MAX), 500)
                .await
                .map_err(|e| (applied + 1, e.into()))?;
            if rows.is_empty() {
                return Ok(());
            }
            for row in &rows {
                let id = u64::try_from(row.id).unwrap_or(0);
                if row.origin != self.replica() {
                    self.apply_remote(row).await.map_err(|e| (id, e))?;
                }
                self.events.set_applied(id);
            }
            if rows.len() < 500 {
                return Ok(());
            }
        }
    }

    /// Brings this replica up to date with one change another replica made. Fails only when
    /// the config could not be re-read (the change is then retried, not skipped).
    async fn apply_remote(self: &Arc<Self>, row: &ChangeRow) -> Result<()> {
        let plugin = PluginKind::parse(&row.plugin);
        if row.kind == JOB_KIND {
            if let Some(id) = &row.job_id
                && let Some(job) = self.db.job(id).await?
            {
                let job = job_from_row(job);
                if self.jobs.is_remote(id) {
                    self.jobs.update_remote(&job);
                } else if !job.phase.is_done() && self.jobs.get(id).is_none() {
                    self.jobs.follow_remote(job);
                } else {
                    self.stop_if_ended_elsewhere(&job);
                }
            }
            self.bump_plugin_named(&row.plugin);
            return Ok(());
        }
        let Some(kind) = EventKind::parse(&row.kind) else {
            tracing::debug!(kind = %row.kind, "ignoring a change of an unknown kind (a newer replica?)");
            return Ok(());
        };
        match kind {
            EventKind::Applied | EventKind::RolledBack | EventKind::ConfigChangedExternally => {
                self.reread_config().await?;
            }
            EventKind::Refreshed => {
                if let (Some(p), Some(id)) = (plugin, &row.source_id) {
                    self.reload_snapshot(p, id).await?;
                }
            }
            EventKind::RefreshStarted | EventKind::RefreshFinished => {}
        }
        // The change is to this plugin (a config re-read above bumps what else it changed).
        self.bump_plugin_named(&row.plugin);
        self.events.deliver_remote(CatalogEvent {
            kind,
            plugin: row.plugin.clone(),
            source_id: row.source_id.clone(),
            revision: row.revision,
            job_id: row.job_id.clone(),
            at: row.created_at,
        });
        Ok(())
    }

    /// Renews this replica's job leases every third of `--job-lease`, fails the jobs of
    /// replicas whose lease expired, re-reads followed jobs (a safety net for a missed
    /// notification) and prunes old feed rows.
    async fn lease_loop(self: Arc<Self>) {
        let lease = self.options.cluster.job_lease.max(Duration::from_millis(300));
        let period = lease / 3;
        let mut shutdown = self.shutdown_signal();
        let mut rounds: u64 = 0;
        loop {
            if let Err(e) = self.db.renew_leases(self.replica(), lease).await {
                tracing::warn!(error = %e, "could not renew job leases");
            }
            match self.db.expire_leases().await {
                Ok(expired) => {
                    for job in &expired {
                        if let Ok(Some(row)) = self.db.job(&job.id).await {
                            self.jobs.update_remote(&job_from_row(row));
                        }
                    }
                    self.announce_failed(expired, "its replica stopped renewing its lease");
                }
                Err(e) => tracing::warn!(error = %e, "could not check job leases"),
            }
            for id in self.jobs.remote_ids() {
                if let Ok(Some(row)) = self.db.job(&id).await {
                    self.jobs.update_remote(&job_from_row(row));
                }
            }
            // A safety net for a missed notification: a job run here that was ended elsewhere.
            for id in self.jobs.local_ids() {
                if let Ok(Some(row)) = self.db.job(&id).await {
                    self.stop_if_ended_elsewhere(&job_from_row(row));
                }
            }
            rounds += 1;
            if rounds % 100 == 1
                && let Err(e) = self.db.prune_changes(Duration::from_secs(24 * 3600)).await
            {
                tracing::debug!(error = %e, "pruning the change feed failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Tells everyone (the feed, local subscribers) that these jobs were failed here.
    fn announce_failed(&self, jobs: Vec<crate::db::cluster::Expired>, why: &str) {
        for job in jobs {
            let source = job.target.as_deref().and_then(|t| t.split_once('/')).map(|(_, s)| s.to_string());
            tracing::warn!(job = %job.id, plugin = %job.plugin, "refresh job FAILED: {why}");
            self.events.job_changed(&job.plugin, &job.id);
            self.events.publish(EventKind::RefreshFinished, &job.plugin, source.as_deref(), None, Some(&job.id));
            self.bump_plugin_named(&job.plugin);
        }
    }

    /// The external-edit check, under the cluster locks.
    async fn poll_loop(self: Arc<Self>, every: Duration) {
        let mut shutdown = self.shutdown_signal();
        loop {
            // The store's own notification (a ConfigMap watch event) wakes it at once.
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.store.changed() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.reread_config().await {
                tracing::warn!(error = %e, "checking for external edits failed");
            }
        }
    }
}

use crate::events;
