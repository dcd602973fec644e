//! Refresh jobs: what is running, for which sources, and how far it got.
//!
//! A job's live state sits in a `watch` channel: readers (the mutation waiting for the end,
//! later subscriptions) always see the latest snapshot and never slow the job down.

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
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Queued => "QUEUED",
            JobPhase::Running => "RUNNING",
            JobPhase::Succeeded => "SUCCEEDED",
            JobPhase::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> JobPhase {
        match s {
            "QUEUED" => JobPhase::Queued,
            "RUNNING" => JobPhase::Running,
            "SUCCEEDED" => JobPhase::Succeeded,
            _ => JobPhase::Failed,
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed)
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

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, watch::Sender<RefreshJob>>,
    by_target: HashMap<String, String>,
}

pub fn target(plugin: &str, source_id: Option<&str>) -> String {
    match source_id {
        Some(s) => format!("{plugin}/{s}"),
        None => plugin.to_string(),
    }
}

impl JobRegistry {
    /// Registers `job` unless a job for the same target (or, for a source, its whole plugin)
    /// is running: then returns that job's receiver instead, and `false`.
    pub fn start_or_join(&self, job: RefreshJob) -> (watch::Receiver<RefreshJob>, bool) {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mine = target(&job.plugin, job.source_id.as_deref());
        let candidates = [mine.clone(), job.plugin.clone()];
        for t in &candidates {
            if let Some(id) = reg.by_target.get(t)
                && let Some(tx) = reg.by_id.get(id)
            {
                return (tx.subscribe(), false);
            }
        }
        let (tx, rx) = watch::channel(job.clone());
        reg.by_target.insert(mine, job.id.clone());
        reg.by_id.insert(job.id, tx);
        (rx, true)
    }

    pub fn update(&self, job: &RefreshJob) {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = reg.by_id.get(&job.id) {
            tx.send_replace(job.clone());
        }
    }

    /// Publishes the final state and forgets the job (the database keeps it).
    pub fn finish(&self, job: &RefreshJob) {
        let mut reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = reg.by_id.remove(&job.id) {
            tx.send_replace(job.clone());
        }
        reg.by_target.retain(|_, id| *id != job.id);
    }

    pub fn get(&self, id: &str) -> Option<RefreshJob> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.get(id).map(|tx| tx.borrow().clone())
    }

    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<RefreshJob>> {
        let reg = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        reg.by_id.get(id).map(|tx| tx.subscribe())
    }

    pub fn running_count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.len()
    }
}
