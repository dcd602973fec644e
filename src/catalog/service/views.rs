//! What the core hands out: source, status, revision and apply views (secrets redacted).

use super::*;

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

    /// A state as stored in `catalog_refresh_status.state`. A word this version does not know
    /// (a newer replica wrote it, or the row was edited by hand) reads as ERROR, loudly, rather
    /// than silently as some other state.
    pub(super) fn parse(s: &str) -> SourceState {
        match s {
            "AVAILABLE" => SourceState::Available,
            "PARTIALLY_AVAILABLE" => SourceState::PartiallyAvailable,
            "ERROR" => SourceState::Error,
            "DISABLED" => SourceState::Disabled,
            "LOADING" => SourceState::Loading,
            other => {
                tracing::warn!(state = other, "unknown source state in the database; showing ERROR");
                SourceState::Error
            }
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

/// Why a revision was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionAction {
    /// `applySource`.
    Apply,
    /// `rollbackSource`: a new revision with an older one's content.
    Rollback,
    /// The configuration found on first start.
    Import,
    /// An edit made outside the API (a file edit, `kubectl edit`).
    External,
}

impl RevisionAction {
    /// The word stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionAction::Apply => "apply",
            RevisionAction::Rollback => "rollback",
            RevisionAction::Import => "import",
            RevisionAction::External => "external",
        }
    }
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
