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
    /// Failed refreshes in a row that a retry may fix; 0 otherwise.
    pub retry_count: i32,
    /// When the next automatic retry is due, if one is.
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// A source with everything the API shows about it, secrets redacted.
#[derive(Clone, Debug)]
pub struct SourceView {
    pub plugin: PluginKind,
    pub entry: SourceEntry,
    pub revision: Option<i32>,
    pub status: SourceStatus,
    /// When the source next refreshes on its own (its interval or a retry), if it does.
    pub next_refresh_at: Option<DateTime<Utc>>,
}

impl SourceView {
    /// `properties` as JSON, redacted: worked out when asked for (most reads do not select
    /// them), not for every source of every read.
    pub fn properties(&self) -> serde_json::Value {
        redact_json(&yaml_to_json(&serde_yaml_ng::Value::Mapping(self.entry.properties.clone())))
    }
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

    /// The action stored as [`RevisionAction::as_str`]; `None` for a word this version does
    /// not know (a newer replica wrote it, or the row was edited by hand).
    pub fn parse(s: &str) -> Option<RevisionAction> {
        [RevisionAction::Apply, RevisionAction::Rollback, RevisionAction::Import, RevisionAction::External]
            .into_iter()
            .find(|a| a.as_str() == s)
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

/// Where a page of entities continues: after the entity `name` of source `source_id`.
/// `ordinal` (its position in the plugin's list when the cursor was made) is only the fallback
/// for an entity that no longer exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityCursor {
    pub source_id: String,
    pub name: String,
    pub ordinal: usize,
}

/// Longest cursor [`EntityCursor::decode`] reads: an entity name is at most a few hundred bytes.
const MAX_CURSOR_LEN: usize = 8 * 1024;

impl EntityCursor {
    pub(super) fn at(source_id: &str, e: &Entity, ordinal: usize) -> EntityCursor {
        EntityCursor { source_id: source_id.to_string(), name: e.name().to_string(), ordinal }
    }

    /// The opaque form given to clients: hex of `ordinal \n source \n name`.
    pub fn encode(&self) -> String {
        hex::encode(format!("{}\n{}\n{}", self.ordinal, self.source_id, self.name))
    }

    /// `None` for anything [`EntityCursor::encode`] did not make.
    pub fn decode(text: &str) -> Option<EntityCursor> {
        if text.len() > MAX_CURSOR_LEN {
            return None;
        }
        let raw = String::from_utf8(hex::decode(text).ok()?).ok()?;
        let mut parts = raw.splitn(3, '\n');
        let ordinal = parts.next()?.parse().ok()?;
        let source_id = parts.next()?.to_string();
        let name = parts.next()?.to_string();
        Some(EntityCursor { source_id, name, ordinal })
    }
}

/// One page of entities (see [`Catalog::entities_page`]).
#[derive(Debug, Default)]
pub struct EntityPage {
    /// Entities matching the filter, across all pages.
    pub total: usize,
    pub has_previous: bool,
    pub has_next: bool,
    /// (source id, entity, its cursor), in file order.
    pub items: Vec<(String, Arc<Entity>, EntityCursor)>,
}

/// One page of a history list (revisions, jobs), newest first: at most `first` items, and
/// whether more follow. Each item's cursor comes from the item itself (its revision number,
/// its creation time and id), never from its position, so a cursor stays valid when newer
/// items are recorded.
#[derive(Debug)]
pub struct HistoryPage<T> {
    pub items: Vec<T>,
    pub has_next: bool,
    /// Items in the whole list (not only this page).
    pub total: u64,
}

impl<T> HistoryPage<T> {
    /// A page from `rows` read with `LIMIT first + 1`: the extra row only says that more follow.
    fn from_rows(mut rows: Vec<T>, first: u64, total: u64) -> HistoryPage<T> {
        let has_next = rows.len() as u64 > first;
        rows.truncate(usize::try_from(first).unwrap_or(usize::MAX));
        HistoryPage { items: rows, has_next, total }
    }
}

impl Catalog {
    /// Revisions of a source, newest first, with revision numbers below `before`.
    pub async fn revisions_page(
        &self,
        plugin: PluginKind,
        id: &str,
        before: Option<i32>,
        first: u64,
    ) -> Result<HistoryPage<RevisionView>> {
        let rows = self.db.revisions_page(plugin.name(), id, before, first + 1).await?;
        let total = self.db.revision_count(plugin.name(), id).await?;
        let page = HistoryPage::from_rows(rows, first, total);
        Ok(HistoryPage { items: page.items.into_iter().map(revision_view).collect(), has_next: page.has_next, total })
    }

    /// Refresh jobs, newest first, after the job (`created_at`, `id`) of a cursor; running jobs
    /// with their live state. Each job comes with its `created_at` as the database holds it:
    /// that (not the in-memory time, which can be more precise) is what a cursor must carry.
    pub async fn jobs_page(
        &self,
        before: Option<(DateTime<Utc>, &str)>,
        first: u64,
    ) -> Result<HistoryPage<(RefreshJob, DateTime<Utc>)>> {
        let rows = self.db.jobs_page(before, first + 1).await?;
        let total = self.db.job_count().await?;
        let page = HistoryPage::from_rows(rows, first, total);
        let items = page
            .items
            .into_iter()
            .map(|row| {
                let at = row.created_at;
                (self.jobs.get(&row.id).unwrap_or_else(|| job_from_row(row)), at)
            })
            .collect();
        Ok(HistoryPage { items, has_next: page.has_next, total })
    }
}
