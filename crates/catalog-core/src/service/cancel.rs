//! Cancelling a refresh job (`cancelRefreshJob`).
//!
//! A job that runs on this replica is told through its cancel signal (`JobRegistry::cancel`):
//! its url fetches in flight are dropped at once (the connection closes), a part waiting for a
//! slot stops waiting, and no further source starts; sources already swapped stay swapped and
//! are listed in its results; the job ends CANCELLED. A yaml load in flight finishes (it is
//! quick) and counts as refreshed.
//!
//! A job that runs on another replica (PostgreSQL) is ended in its row: the row reads
//! CANCELLED at once, the change feed tells the owner, which cancels its task the same way,
//! and whatever the owner loads after that is refused by the job's fence (status writes need
//! the job QUEUED or RUNNING), so nothing is swapped in after the cancel.

use std::sync::Arc;
use std::time::Duration;

use super::{Catalog, CatalogError, Result, job_from_row};
use crate::diagnostics::{Diagnostic, Layer, ValidationReport};
use crate::events::EventKind;
use crate::jobs::{CancelAsked, RefreshJob};

/// How long a cancel waits for a local job's task to end it.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

impl Catalog {
    /// Ends the QUEUED or RUNNING job `id` as CANCELLED on behalf of `actor`, and returns it.
    /// An unknown job is NOT_FOUND; a finished one is VALIDATION_FAILED and stays as it was.
    pub async fn cancel_job(self: &Arc<Self>, id: &str, actor: &str) -> Result<RefreshJob> {
        if self.jobs.cancel(id, actor) == CancelAsked::Here {
            self.scheduled.record_cancel();
            if let Some(mut rx) = self.jobs.subscribe(id) {
                let ended = tokio::time::timeout(CANCEL_WAIT, rx.wait_for(|j| j.phase.is_done())).await;
                if let Ok(Ok(job)) = ended {
                    return Ok(job.clone());
                }
            }
            return self
                .job(id)
                .await?
                .ok_or_else(|| CatalogError::NotFound(format!("refresh job {id} does not exist")));
        }
        let Some(row) = self.db.job(id).await? else {
            return Err(CatalogError::NotFound(format!("refresh job {id} does not exist")));
        };
        let job = job_from_row(row);
        if job.phase.is_done() {
            return Err(already_ended(&job));
        }
        // It runs on another replica: end it in its row; the owner learns from the feed.
        let message = format!("cancelled by {actor}");
        if !self.db.cancel_job_row(id, &message, chrono::Utc::now()).await? {
            // It ended between the two reads.
            let now = self.db.job(id).await?.map(job_from_row).unwrap_or(job);
            return Err(already_ended(&now));
        }
        self.scheduled.record_cancel();
        self.events.job_changed(&job.plugin, id);
        self.events.publish(EventKind::RefreshFinished, &job.plugin, job.source_id.as_deref(), None, Some(id));
        let now = self.db.job(id).await?.map(job_from_row).unwrap_or(job);
        self.jobs.update_remote(&now);
        self.bump_plugin_named(&now.plugin);
        Ok(now)
    }

    /// The change feed or the lease loop saw that a job this replica runs was cancelled through
    /// another replica: stop its task. (A job failed elsewhere by its lease is the lost-lease
    /// path: its next status write is refused and it ends with what its row says.)
    pub(super) fn stop_if_ended_elsewhere(&self, job: &RefreshJob) {
        if job.phase == crate::jobs::JobPhase::Cancelled
            && !self.jobs.is_remote(&job.id)
            && self.jobs.get(&job.id).is_some()
        {
            let by = job.error.clone().unwrap_or_else(|| "another replica".into());
            self.jobs.cancel(&job.id, by.trim_start_matches("cancelled by "));
        }
    }
}

fn already_ended(job: &RefreshJob) -> CatalogError {
    CatalogError::Validation(ValidationReport::from_diagnostics(vec![
        Diagnostic::error(
            Layer::Semantics,
            format!(
                "refresh job {} already ended ({}); only a QUEUED or RUNNING job can be cancelled",
                job.id,
                job.phase.as_str()
            ),
        )
        .field("id")
        .hint("list running jobs with refreshJobsConnection; a finished job is kept as it ended"),
    ]))
}
