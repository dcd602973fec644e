//! Sources that refresh on their own: the scheduler loop.
//!
//! Every second each replica looks at every enabled, not suspended source and works out when
//! it is due (`crate::schedule`): its interval after the last refresh, or its retry time after
//! a refresh that failed in a way a retry may fix, whichever is earlier. Both are derived from
//! the status row (`last_refresh_time`, `next_retry_at`), which every replica reads alike and
//! which survives restarts, so a restart does not reset a schedule and all replicas compute
//! the same due time. A due source is claimed in the database (`Db::claim_schedule`, keyed by
//! the source and its due time): the one replica whose claim is recorded starts an INCREMENTAL
//! refresh job with actor `scheduler`; the others skip it. The job's own claim (one live job
//! per target across replicas) and lease apply as for any other refresh. When the refresh
//! ends, its status row moves the due time on. A claim holds for twice `--job-lease`: if the
//! replica that claimed dies before its refresh recorded anything, another one takes the due
//! refresh over after that (a takeover while the first job still runs follows that job).

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

use super::{Catalog, RefreshRequest};
use crate::db::StatusRow;
use crate::db::schedule::ScheduleClaim;
use crate::plugins::PluginKind;
use crate::refresh::RefreshMode;
use crate::schedule::{DueWhy, SchedulePolicy, next_due, next_refresh_ms, parse_interval};
use crate::sources::{SourceEntry, SourceKind};

/// The longest the scheduler sleeps between two looks for due sources (a source whose entry
/// or status changed meanwhile is seen by then).
const TICK: Duration = Duration::from_secs(1);
/// The shortest: a look costs a pass over the sources.
const MIN_SLEEP: Duration = Duration::from_millis(50);
/// How long a claim on a due refresh holds before another replica may take it over: twice the
/// job lease (30 s by default), so a replica that died mid-refresh is replaced about when its
/// job's lease has run out.
fn claim_hold(job_lease: Duration) -> Duration {
    (job_lease * 2).max(Duration::from_secs(2))
}
/// Claims are dropped this long after they ended.
const CLAIM_KEEP: Duration = Duration::from_secs(24 * 3600);

/// How often `entry` refreshes on its own: its `refreshInterval`, else the default for `url`
/// sources; `None` for a yaml source without one (the watcher serves it), a disabled or a
/// suspended source, or an interval that does not parse (the entry check refuses those).
pub(super) fn interval_of(entry: &SourceEntry, policy: &SchedulePolicy) -> Option<Duration> {
    if !entry.enabled || entry.suspended {
        return None;
    }
    match entry.refresh_interval.as_deref() {
        Some(text) => parse_interval(text).ok(),
        None if entry.kind() == SourceKind::Url => policy.default_url_interval,
        None => None,
    }
}

/// When `entry` next refreshes on its own (ms since the epoch) and why, from its status row.
/// `None`: not scheduled (no interval and no retry due), disabled, suspended, or never loaded
/// yet (the initial refresh or an apply loads it first).
pub(super) fn due(
    plugin: PluginKind,
    entry: &SourceEntry,
    row: Option<&StatusRow>,
    policy: &SchedulePolicy,
) -> Option<(i64, DueWhy)> {
    if !entry.enabled || entry.suspended {
        return None;
    }
    let row = row?;
    let last_ms = row.last_refresh_time?.timestamp_millis();
    let by_interval = interval_of(entry, policy).map(|i| next_refresh_ms(plugin.name(), &entry.id, last_ms, i));
    next_due(by_interval, row.next_retry_at.map(|t| t.timestamp_millis()))
}

impl Catalog {
    /// `Source.nextRefreshAt`: when the source next refreshes on its own, if it does.
    pub(super) fn next_refresh_at(
        &self,
        plugin: PluginKind,
        entry: &SourceEntry,
        row: Option<&StatusRow>,
    ) -> Option<DateTime<Utc>> {
        due(plugin, entry, row, &self.options.schedule).and_then(|(ms, _)| DateTime::from_timestamp_millis(ms))
    }

    /// Runs until shutdown (started after the initial refresh).
    pub(super) async fn schedule_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown_signal();
        let mut rounds: u64 = 0;
        let mut sleep = MIN_SLEEP;
        // Due times another replica claimed, and until when its claim holds: not asked for again
        // before that (after it, a takeover is possible).
        let mut theirs = std::collections::HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => return,
            }
            // Until the next due time, at most a tick: a due refresh starts on time, not on the
            // next whole tick.
            let next = self.start_due(Utc::now(), &mut theirs).await;
            let until = next.map(|due| due - Utc::now().timestamp_millis());
            sleep =
                until.and_then(|ms| u64::try_from(ms).ok()).map_or(TICK, Duration::from_millis).clamp(MIN_SLEEP, TICK);
            rounds += 1;
            if rounds % 3600 == 1 {
                let before = Utc::now().timestamp_millis() - i64::try_from(CLAIM_KEEP.as_millis()).unwrap_or(0);
                if let Err(e) = self.db.prune_schedule_claims(before).await {
                    tracing::debug!(error = %e, "pruning schedule claims failed");
                }
            }
        }
    }

    /// Starts a refresh for every source due at `now` that this replica claims; returns the
    /// earliest due time still ahead, if any.
    async fn start_due(
        self: &Arc<Self>,
        now: DateTime<Utc>,
        theirs: &mut std::collections::HashMap<(PluginKind, String, i64), i64>,
    ) -> Option<i64> {
        let now_ms = now.timestamp_millis();
        let config = self.config();
        let mut ahead: Option<i64> = None;
        // One read lock for the whole pass, and the rows read in place (a row carries its
        // diagnostics' JSON: cloning every row on every look was most of the pass's work).
        let due_now: Vec<(PluginKind, String, i64, DueWhy)> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            config
                .sources()
                .filter_map(|(plugin, entry)| {
                    let row = state.statuses.get(&(plugin, entry.id.clone()));
                    let (at, why) = due(plugin, entry, row, &self.options.schedule)?;
                    if at > now_ms {
                        ahead = Some(ahead.map_or(at, |a| a.min(at)));
                        return None;
                    }
                    Some((plugin, entry.id.clone(), at, why))
                })
                .collect()
        };
        drop(config);
        theirs.retain(|(p, id, at), until| {
            *until > now_ms && due_now.iter().any(|(p2, id2, at2, _)| p == p2 && id == id2 && at == at2)
        });
        let hold_ms = i64::try_from(claim_hold(self.options.cluster.job_lease).as_millis()).unwrap_or(i64::MAX);
        for (plugin, id, due_ms, why) in due_now {
            if theirs.contains_key(&(plugin, id.clone(), due_ms)) {
                continue;
            }
            // A refresh of it is running (here or followed): its end moves the due time on.
            if self.jobs.busy(plugin.name(), &id) {
                continue;
            }
            let claim = ScheduleClaim {
                plugin: plugin.name(),
                source_id: &id,
                due_ms,
                owner: &self.options.cluster.replica_id,
                now_ms,
                hold_ms,
            };
            match self.db.claim_schedule(&claim).await {
                Ok(true) => {}
                Ok(false) => {
                    theirs.insert((plugin, id.clone(), due_ms), now_ms.saturating_add(hold_ms));
                    continue;
                }
                Err(e) => {
                    tracing::debug!(plugin = plugin.name(), source = %id, error = %e, "could not claim a due refresh; trying again");
                    continue;
                }
            }
            let late_ms = now_ms - due_ms;
            match why {
                DueWhy::Interval => {
                    tracing::info!(plugin = plugin.name(), source = %id, late_ms, "scheduled refresh")
                }
                DueWhy::Retry => {
                    tracing::info!(plugin = plugin.name(), source = %id, late_ms, "retrying a failed refresh")
                }
            }
            self.scheduled.record(why);
            let req = RefreshRequest {
                mode: RefreshMode::Incremental,
                wait: false,
                ..RefreshRequest::new(plugin, Some(&id), "scheduler")
            };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.refresh(req).await {
                    tracing::warn!(plugin = plugin.name(), source = %id, error = %e, "a scheduled refresh could not start");
                }
            });
        }
        ahead
    }
}

/// Scheduled refreshes and retries started by this replica, and jobs cancelled through it,
/// for `/metrics`.
#[derive(Default)]
pub struct ScheduleStats {
    interval: std::sync::atomic::AtomicU64,
    retry: std::sync::atomic::AtomicU64,
    cancelled: std::sync::atomic::AtomicU64,
}

impl ScheduleStats {
    fn record(&self, why: DueWhy) {
        let counter = match why {
            DueWhy::Interval => &self.interval,
            DueWhy::Retry => &self.retry,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn record_cancel(&self) {
        self.cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (scheduled runs, retries, cancellations) here since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.interval.load(Relaxed), self.retry.load(Relaxed), self.cancelled.load(Relaxed))
    }
}
