//! Database rows ↔ core values.

use super::*;

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

pub(super) fn revision_view(r: RevisionRow) -> RevisionView {
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

pub(super) fn job_row(job: &RefreshJob) -> JobRow {
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
        queued_reason: job.queued_reason.clone(),
        actor: job.actor.clone(),
        started_at: job.started_at,
        finished_at: job.finished_at,
        created_at: job.created_at,
    }
}

pub(super) fn job_from_row(r: JobRow) -> RefreshJob {
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
        queued_reason: r.queued_reason,
        actor: r.actor,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}
