//! Refresh jobs: what is running, for which sources, and how far it got.
//!
//! A job's live state sits in a `watch` channel: readers (the mutation waiting for the end,
//! later subscriptions) always see the latest snapshot and never slow the job down.
//!
//! With several replicas the registry also holds the jobs this replica *follows*: jobs that
//! run on another replica, mirrored from the change feed (each job notification re-reads the
//! job's row). They look like local running jobs to readers, so `refreshProgress` and
//! `refreshJob` work the same on every replica, and a local request for the same target joins
//! them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

use super::refresh::{RefreshMode, RefreshResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobPhase {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Ended by `cancelRefreshJob`: the sources refreshed before it stay refreshed (they are in
    /// `results`), the others keep what they served.
    Cancelled,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Queued => "QUEUED",
            JobPhase::Running => "RUNNING",
            JobPhase::Succeeded => "SUCCEEDED",
            JobPhase::Failed => "FAILED",
            JobPhase::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> JobPhase {
        match s {
            "QUEUED" => JobPhase::Queued,
            "RUNNING" => JobPhase::Running,
            "SUCCEEDED" => JobPhase::Succeeded,
            "CANCELLED" => JobPhase::Cancelled,
            _ => JobPhase::Failed,
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshJob {
    pub id: String,
    pub plugin: String,
    /// Set for a single-source job; `None` for a whole-plugin job.
    pub source_id: Option<String>,
    pub sources: Vec<String>,
    pub mode: RefreshMode,
    pub dry_run: bool,
    pub phase: JobPhase,
    pub total: usize,
    pub completed: usize,
    pub current_source: Option<String>,
    pub results: Vec<RefreshResult>,
    pub error: Option<String>,
    /// Why the job, or its url part, waits for a slot (see `service::refresh`); `None` when it
    /// does not wait.
    #[serde(default)]
    pub queued_reason: Option<String>,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Running jobs, by id and by target (`plugin` or `plugin/source`).
#[derive(Default)]
pub struct JobRegistry {
    inner: Mutex<Registry>,
}

/// A running job: its live state and the write sequence number it was registered at.
struct Running {
    tx: watch::Sender<RefreshJob>,
    /// The catalog's write sequence when the job was registered. The job reads the files after
    /// this moment, so it sees every write numbered up to `write_seq`.
    write_seq: u64,
    /// Runs on another replica; mirrored from the change feed.
    remote: bool,
    /// Who cancelled it, once somebody did (`JobRegistry::cancel`).
    cancel: watch::Sender<Option<String>>,
}

/// What [`JobRegistry::cancel`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelAsked {
    /// The job runs here: its task was told, and ends it CANCELLED.
    Here,
    /// The job is followed (it runs on another replica) or not known here.
    Elsewhere,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Running>,
    by_target: HashMap<String, String>,
}

/// The `plugin` of a job over every plugin's sources (`refreshAll`); its target too.
pub const ALL_PLUGINS: &str = "*";

pub fn target(plugin: &str, source_id: Option<&str>) -> String {
    match source_id {
        Some(s) => format!("{plugin}/{s}"),
        None => plugin.to_string(),
    }
}

/// What [`JobRegistry::start_or_join`] did.
pub enum Registered {
    /// `job` is registered and the caller must run it.
    Started(watch::Receiver<RefreshJob>),
    /// A running job for the same target already sees every write the caller needs: follow it.
    Joined(watch::Receiver<RefreshJob>),
    /// A job for the target is running but was registered before a write the caller needs it to
    /// see: wait for it to end, then try again.
    TooOld(watch::Receiver<RefreshJob>),
}

impl JobRegistry {
    /// Registers `job` (created at write sequence `write_seq`) unless a job for the same target
    /// is running. A running job is joined only when it was registered at or after
    /// `needs_write` (the caller's own write), so a refresh asked for by an apply never reports
    /// content older than that apply.
    ///
    /// A source's refresh does not join (or wait for) a running job of its whole plugin: that
    /// job may be waiting on url hosts that stall, and a yaml refresh must not queue behind them.
    /// The per-source lock still keeps the two from loading the same source at once.
    pub fn start_or_join(&self, job: RefreshJob, write_seq: u64, needs_write: Option<u64>) -> Registered {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mine = target(&job.plugin, job.source_id.as_deref());
        if let Some(id) = reg.by_target.get(&mine)
            && let Some(running) = reg.by_id.get(id)
        {
            let rx = running.tx.subscribe();
            return match needs_write {
                Some(seq) if running.write_seq < seq => Registered::TooOld(rx),
                _ => Registered::Joined(rx),
            };
        }
        let (tx, rx) = watch::channel(job.clone());
        reg.by_target.insert(mine, job.id.clone());
        reg.by_id.insert(job.id, Running { tx, write_seq, remote: false, cancel: watch::channel(None).0 });
        Registered::Started(rx)
    }

    pub fn update(&self, job: &RefreshJob) {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = reg.by_id.get(&job.id) {
            running.tx.send_replace(job.clone());
        }
    }

    /// Publishes the final state and forgets the job (the database keeps it).
    pub fn finish(&self, job: &RefreshJob) {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = reg.by_id.remove(&job.id) {
            running.tx.send_replace(job.clone());
        }
        reg.by_target.retain(|_, id| *id != job.id);
    }

    pub fn get(&self, id: &str) -> Option<RefreshJob> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.get(id).map(|r| r.tx.borrow().clone())
    }

    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<RefreshJob>> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.get(id).map(|r| r.tx.subscribe())
    }

    /// Asks the job `id` to stop, on behalf of `actor`, if it runs here.
    pub fn cancel(&self, id: &str, actor: &str) -> CancelAsked {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match reg.by_id.get(id) {
            Some(r) if !r.remote => {
                r.cancel.send_if_modified(|by| {
                    let first = by.is_none();
                    if first {
                        *by = Some(actor.to_string());
                    }
                    first
                });
                CancelAsked::Here
            }
            _ => CancelAsked::Elsewhere,
        }
    }

    /// The signal a job's task watches for a cancellation (`Some(actor)` once cancelled).
    pub fn cancel_signal(&self, id: &str) -> Option<watch::Receiver<Option<String>>> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.get(id).map(|r| r.cancel.subscribe())
    }

    /// The ids of the jobs this replica runs (not the followed ones).
    pub fn local_ids(&self) -> Vec<String> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.iter().filter(|(_, r)| !r.remote).map(|(id, _)| id.clone()).collect()
    }

    /// Whether a job (run here or followed) covers `source` of `plugin`: one for the source, or
    /// one for its whole plugin.
    pub fn busy(&self, plugin: &str, source: &str) -> bool {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_target.contains_key(&target(plugin, Some(source)))
            || reg.by_target.contains_key(plugin)
            || reg.by_target.contains_key(ALL_PLUGINS)
    }

    /// Jobs running on this replica (followed ones are not counted).
    pub fn running_count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.values().filter(|r| !r.remote).count()
    }

    /// Follows `job`, running on another replica: registers it (unless known) and returns a
    /// receiver of its state. A local request for its target joins it, except one that must see
    /// a local write (the other replica may have read the files before it).
    pub fn follow_remote(&self, job: RefreshJob) -> watch::Receiver<RefreshJob> {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = reg.by_id.get(&job.id) {
            return running.tx.subscribe();
        }
        let (tx, rx) = watch::channel(job.clone());
        if !job.phase.is_done() {
            reg.by_target.entry(target(&job.plugin, job.source_id.as_deref())).or_insert_with(|| job.id.clone());
            reg.by_id.insert(job.id, Running { tx, write_seq: 0, remote: true, cancel: watch::channel(None).0 });
        }
        rx
    }

    /// A followed job's new state (read from its row); forgets it once it ended.
    pub fn update_remote(&self, job: &RefreshJob) {
        let known = {
            let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            reg.by_id.get(&job.id).map(|r| r.remote)
        };
        match known {
            Some(true) if job.phase.is_done() => self.finish(job),
            Some(true) => self.update(job),
            _ => {}
        }
    }

    /// Is `id` a job this replica follows (not one it runs)?
    pub fn is_remote(&self, id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(id).is_some_and(|r| r.remote)
    }

    /// The ids of the jobs this replica follows.
    pub fn remote_ids(&self) -> Vec<String> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.iter().filter(|(_, r)| r.remote).map(|(id, _)| id.clone()).collect()
    }
}
