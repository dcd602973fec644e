//! The audit trail: who changed what, on which source, and how it ended. The API layer decides
//! what to record (it knows the caller and the mutation); the core stores it and reads it back,
//! so the database stays behind the core.

use super::{Catalog, Result};
use crate::db::{self, NewAudit};

/// One audited call, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub actor: String,
    /// The mutation's name as stored (e.g. `APPLY`).
    pub action: String,
    pub plugin: String,
    pub source_id: Option<String>,
    pub revision: Option<i32>,
    /// `OK` or the error code.
    pub outcome: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<db::AuditRow> for AuditRow {
    fn from(r: db::AuditRow) -> Self {
        AuditRow {
            id: r.id,
            actor: r.actor,
            action: r.action,
            plugin: r.plugin,
            source_id: r.source_id,
            revision: r.revision,
            outcome: r.outcome,
            created_at: r.created_at,
        }
    }
}

impl Catalog {
    /// Writes one audit record.
    pub async fn record_audit(&self, record: NewAudit<'_>) -> Result<()> {
        Ok(self.db.insert_audit(record).await?)
    }

    /// The newest `limit` audit records.
    pub async fn audit_log(&self, limit: u64) -> Result<Vec<AuditRow>> {
        Ok(self.db.audit_log(limit).await?.into_iter().map(AuditRow::from).collect())
    }

    /// One page of the audit trail, newest first: records with `id < before` (all when `None`),
    /// optionally of one plugin and source, at most `limit` (keyset paging).
    pub async fn audit_page(
        &self,
        before: Option<i64>,
        plugin: Option<&str>,
        source_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        let rows = self.db.audit_page(before, plugin, source_id, limit).await?;
        Ok(rows.into_iter().map(AuditRow::from).collect())
    }

    /// How many audit records match the filter.
    pub async fn audit_count(&self, plugin: Option<&str>, source_id: Option<&str>) -> Result<u64> {
        Ok(self.db.audit_count(plugin, source_id).await?)
    }

    /// Copies SQLite's write-ahead log into the database file (at shutdown); nothing on
    /// PostgreSQL.
    pub async fn checkpoint(&self) -> Result<()> {
        Ok(self.db.checkpoint().await?)
    }
}
