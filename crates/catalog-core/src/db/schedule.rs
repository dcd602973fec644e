//! Claims on due refreshes (`catalog_schedule_claims`): each replica's scheduler computes the
//! same due time for a source (see `crate::schedule`) and the one whose claim on
//! (source, due time) is recorded runs it. A claim holds until `claimed_until_ms`; after that
//! another replica may take it over (the one that claimed died before the refresh recorded a
//! new last refresh time, which would have moved the due time on).

use sea_orm::{ConnectionTrait, Statement};

use super::{Backend, Db, DbError};

/// A claim to record: the source, its due time and who runs it until when (ms since epoch).
#[derive(Clone, Debug)]
pub struct ScheduleClaim<'a> {
    pub plugin: &'a str,
    pub source_id: &'a str,
    pub due_ms: i64,
    pub owner: &'a str,
    pub now_ms: i64,
    pub hold_ms: i64,
}

impl Db {
    /// Records `claim` unless a live claim on the same (source, due time) exists. `Ok(true)`:
    /// this replica runs the refresh due then.
    pub(crate) async fn claim_schedule(&self, claim: &ScheduleClaim<'_>) -> Result<bool, DbError> {
        let sql = match self.backend {
            Backend::Postgres => {
                "INSERT INTO catalog_schedule_claims (plugin, source_id, due_ms, owner, claimed_until_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (plugin, source_id, due_ms) DO UPDATE
                   SET owner = EXCLUDED.owner, claimed_until_ms = EXCLUDED.claimed_until_ms
                   WHERE catalog_schedule_claims.claimed_until_ms < $6"
            }
            Backend::Sqlite => {
                "INSERT INTO catalog_schedule_claims (plugin, source_id, due_ms, owner, claimed_until_ms)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (plugin, source_id, due_ms) DO UPDATE
                   SET owner = excluded.owner, claimed_until_ms = excluded.claimed_until_ms
                   WHERE catalog_schedule_claims.claimed_until_ms < ?"
            }
        };
        let values: [sea_orm::Value; 6] = [
            claim.plugin.into(),
            claim.source_id.into(),
            claim.due_ms.into(),
            claim.owner.into(),
            claim.now_ms.saturating_add(claim.hold_ms).into(),
            claim.now_ms.into(),
        ];
        let done = self
            .timed(self.conn.execute_raw(Statement::from_sql_and_values(self.conn.get_database_backend(), sql, values)))
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Drops claims that ended before `before_ms` (their due times are long past).
    pub(crate) async fn prune_schedule_claims(&self, before_ms: i64) -> Result<u64, DbError> {
        let sql = match self.backend {
            Backend::Postgres => "DELETE FROM catalog_schedule_claims WHERE claimed_until_ms < $1",
            Backend::Sqlite => "DELETE FROM catalog_schedule_claims WHERE claimed_until_ms < ?",
        };
        let done = self
            .timed(self.conn.execute_raw(Statement::from_sql_and_values(
                self.conn.get_database_backend(),
                sql,
                [before_ms.into()],
            )))
            .await?;
        Ok(done.rows_affected())
    }
}
