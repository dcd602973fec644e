//! The webhook tables: receivers (`catalog_webhooks`) and the delivery queue
//! (`catalog_webhook_deliveries`). Plain SQL through sea-orm's raw statements, the same text on
//! both databases (written with `$N` placeholders, turned into SQLite's `?N`); the one
//! difference is the claim, which on PostgreSQL skips rows another replica is claiming
//! (`FOR UPDATE SKIP LOCKED`) and on SQLite (one writer at a time) needs nothing more than its
//! conditional UPDATE.
//!
//! Times are Unix milliseconds (see the migration).

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, TransactionTrait, Value};

use super::{Backend, Db, DbError};

/// A registered receiver as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// Comma-separated event kinds.
    pub events: String,
    /// Comma-separated plugin names; `None`: every plugin.
    pub plugins: Option<String>,
    pub secret_name: String,
    pub secret_key: String,
    pub created_by: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One delivery (a receiver × an event) as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub msg_id: String,
    pub event_key: String,
    pub event_type: String,
    pub plugin: String,
    pub source_id: Option<String>,
    pub payload: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_ms: i64,
    pub created_ms: i64,
    pub give_up_ms: i64,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub last_status: Option<i32>,
    pub last_duration_ms: Option<i64>,
    pub last_error: Option<String>,
    pub response_excerpt: Option<String>,
    pub last_attempt_ms: Option<i64>,
    pub delivered_ms: Option<i64>,
    pub redelivery_of: Option<i64>,
}

/// A delivery to queue.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub webhook_id: String,
    pub msg_id: String,
    pub event_key: String,
    pub event_type: String,
    pub plugin: String,
    pub source_id: Option<String>,
    pub payload: String,
    pub created_ms: i64,
    pub give_up_ms: i64,
    pub redelivery_of: Option<i64>,
}

/// How an attempt ended, to record.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    /// DELIVERED, PENDING (retry at `next_attempt_ms`) or FAILED (given up).
    pub state: &'static str,
    pub next_attempt_ms: i64,
    pub status: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub excerpt: Option<String>,
    pub at_ms: i64,
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, msg_id, event_key, event_type, plugin, source_id, payload, state, \
     attempts, next_attempt_ms, created_ms, give_up_ms, lease_owner, lease_until_ms, last_status, last_duration_ms, \
     last_error, response_excerpt, last_attempt_ms, delivered_ms, redelivery_of";

const WEBHOOK_COLUMNS: &str = "id, url, events, plugins, secret_name, secret_key, created_by, created_ms, updated_ms";

fn webhook_row(r: &QueryResult) -> Result<WebhookRow, sea_orm::DbErr> {
    Ok(WebhookRow {
        id: r.try_get("", "id")?,
        url: r.try_get("", "url")?,
        events: r.try_get("", "events")?,
        plugins: r.try_get("", "plugins")?,
        secret_name: r.try_get("", "secret_name")?,
        secret_key: r.try_get("", "secret_key")?,
        created_by: r.try_get("", "created_by")?,
        created_ms: r.try_get("", "created_ms")?,
        updated_ms: r.try_get("", "updated_ms")?,
    })
}

fn delivery_row(r: &QueryResult) -> Result<DeliveryRow, sea_orm::DbErr> {
    Ok(DeliveryRow {
        id: r.try_get("", "id")?,
        webhook_id: r.try_get("", "webhook_id")?,
        msg_id: r.try_get("", "msg_id")?,
        event_key: r.try_get("", "event_key")?,
        event_type: r.try_get("", "event_type")?,
        plugin: r.try_get("", "plugin")?,
        source_id: r.try_get("", "source_id")?,
        payload: r.try_get("", "payload")?,
        state: r.try_get("", "state")?,
        attempts: r.try_get("", "attempts")?,
        next_attempt_ms: r.try_get("", "next_attempt_ms")?,
        created_ms: r.try_get("", "created_ms")?,
        give_up_ms: r.try_get("", "give_up_ms")?,
        lease_owner: r.try_get("", "lease_owner")?,
        lease_until_ms: r.try_get("", "lease_until_ms")?,
        last_status: r.try_get("", "last_status")?,
        last_duration_ms: r.try_get("", "last_duration_ms")?,
        last_error: r.try_get("", "last_error")?,
        response_excerpt: r.try_get("", "response_excerpt")?,
        last_attempt_ms: r.try_get("", "last_attempt_ms")?,
        delivered_ms: r.try_get("", "delivered_ms")?,
        redelivery_of: r.try_get("", "redelivery_of")?,
    })
}

fn rows<T>(
    rs: Vec<QueryResult>,
    f: impl Fn(&QueryResult) -> Result<T, sea_orm::DbErr>,
) -> Result<Vec<T>, sea_orm::DbErr> {
    rs.iter().map(f).collect()
}

impl Db {
    /// A statement in this database's dialect: `$N` placeholders become `?N` on SQLite.
    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        match self.backend {
            Backend::Postgres => Statement::from_sql_and_values(DbBackend::Postgres, sql, values),
            Backend::Sqlite => Statement::from_sql_and_values(DbBackend::Sqlite, sql.replace('$', "?"), values),
        }
    }

    pub(crate) async fn webhooks(&self, limit: u64) -> Result<Vec<WebhookRow>, DbError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM catalog_webhooks ORDER BY created_ms, id LIMIT $1");
        let stmt = self.stmt(&sql, vec![i64::try_from(limit).unwrap_or(i64::MAX).into()]);
        self.timed(async { rows(self.conn.query_all_raw(stmt).await?, webhook_row) }).await
    }

    pub(crate) async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, DbError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM catalog_webhooks WHERE id = $1");
        let stmt = self.stmt(&sql, vec![id.into()]);
        self.timed(async { self.conn.query_one_raw(stmt).await?.as_ref().map(webhook_row).transpose() }).await
    }

    /// Inserts a receiver unless `max` are registered already (checked in the same
    /// transaction); `Ok(false)`: the cap is reached, nothing stored.
    pub(crate) async fn insert_webhook(&self, w: &WebhookRow, max: u64) -> Result<bool, DbError> {
        let count = self.stmt("SELECT COUNT(*) AS n FROM catalog_webhooks", vec![]);
        let insert = self.stmt(
            "INSERT INTO catalog_webhooks (id, url, events, plugins, secret_name, secret_key, created_by, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                w.id.clone().into(),
                w.url.clone().into(),
                w.events.clone().into(),
                w.plugins.clone().into(),
                w.secret_name.clone().into(),
                w.secret_key.clone().into(),
                w.created_by.clone().into(),
                w.created_ms.into(),
                w.updated_ms.into(),
            ],
        );
        self.timed(async {
            let txn = self.conn.begin().await?;
            let n = txn.query_one_raw(count).await?.and_then(|r| r.try_get::<i64>("", "n").ok()).unwrap_or(0);
            if u64::try_from(n).unwrap_or(0) >= max {
                txn.rollback().await?;
                return Ok(false);
            }
            txn.execute_raw(insert).await?;
            txn.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Replaces a receiver's settings; `Ok(false)`: no such receiver.
    pub(crate) async fn update_webhook(&self, w: &WebhookRow) -> Result<bool, DbError> {
        let stmt = self.stmt(
            "UPDATE catalog_webhooks SET url = $2, events = $3, plugins = $4, secret_name = $5, secret_key = $6, updated_ms = $7
             WHERE id = $1",
            vec![
                w.id.clone().into(),
                w.url.clone().into(),
                w.events.clone().into(),
                w.plugins.clone().into(),
                w.secret_name.clone().into(),
                w.secret_key.clone().into(),
                w.updated_ms.into(),
            ],
        );
        Ok(self.timed(self.conn.execute_raw(stmt)).await?.rows_affected() > 0)
    }

    /// Deletes a receiver and its deliveries (queued ones are never sent); `Ok(false)`: no
    /// such receiver.
    pub(crate) async fn delete_webhook(&self, id: &str) -> Result<bool, DbError> {
        let deliveries = self.stmt("DELETE FROM catalog_webhook_deliveries WHERE webhook_id = $1", vec![id.into()]);
        let webhook = self.stmt("DELETE FROM catalog_webhooks WHERE id = $1", vec![id.into()]);
        self.timed(async {
            let txn = self.conn.begin().await?;
            txn.execute_raw(deliveries).await?;
            let gone = txn.execute_raw(webhook).await?.rows_affected() > 0;
            txn.commit().await?;
            Ok(gone)
        })
        .await
    }

    /// Queues deliveries in one transaction; a delivery whose (receiver, event key) is queued
    /// already is skipped (a retried enqueue). Returns how many were new.
    pub(crate) async fn enqueue_deliveries(&self, new: &[NewDelivery]) -> Result<u64, DbError> {
        if new.is_empty() {
            return Ok(0);
        }
        let stmts: Vec<Statement> = new
            .iter()
            .map(|d| {
                self.stmt(
                    "INSERT INTO catalog_webhook_deliveries
                       (webhook_id, msg_id, event_key, event_type, plugin, source_id, payload, state, attempts,
                        next_attempt_ms, created_ms, give_up_ms, redelivery_of, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', 0, $8, $8, $9, $10, $8)
                     ON CONFLICT (webhook_id, event_key) DO NOTHING",
                    vec![
                        d.webhook_id.clone().into(),
                        d.msg_id.clone().into(),
                        d.event_key.clone().into(),
                        d.event_type.clone().into(),
                        d.plugin.clone().into(),
                        d.source_id.clone().into(),
                        d.payload.clone().into(),
                        d.created_ms.into(),
                        d.give_up_ms.into(),
                        d.redelivery_of.into(),
                    ],
                )
            })
            .collect();
        self.timed(async {
            let txn = self.conn.begin().await?;
            let mut added = 0;
            for s in stmts {
                added += txn.execute_raw(s).await?.rows_affected();
            }
            txn.commit().await?;
            Ok(added)
        })
        .await
    }

    /// Claims up to `limit` due deliveries for `owner` until `lease_until_ms`: PENDING, due, and
    /// not under another live lease. The attempt counter grows here, so the outcome write can
    /// be fenced by (owner, attempt). On PostgreSQL rows another replica is claiming are
    /// skipped, not waited for.
    pub(crate) async fn claim_deliveries(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>, DbError> {
        let lock = if self.backend == Backend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE catalog_webhook_deliveries
                SET lease_owner = $1, lease_until_ms = $3, attempts = attempts + 1, last_attempt_ms = $2,
                    updated_ms = $2
              WHERE id IN (SELECT id FROM catalog_webhook_deliveries
                            WHERE state = 'PENDING' AND next_attempt_ms <= $2
                              AND (lease_until_ms IS NULL OR lease_until_ms < $2)
                            ORDER BY next_attempt_ms, id LIMIT $4 {lock})
                AND state = 'PENDING' AND (lease_until_ms IS NULL OR lease_until_ms < $2)
             RETURNING {DELIVERY_COLUMNS}"
        );
        let stmt = self.stmt(
            &sql,
            vec![owner.into(), now_ms.into(), lease_until_ms.into(), i64::try_from(limit).unwrap_or(100).into()],
        );
        self.timed(async { rows(self.conn.query_all_raw(stmt).await?, delivery_row) }).await
    }

    /// Records an attempt's outcome, only while `owner` still holds the lease of attempt
    /// `attempt` (a replica that lost it records nothing); `Ok(false)`: fenced out.
    pub(crate) async fn finish_delivery(
        &self,
        id: i64,
        owner: &str,
        attempt: i32,
        o: &AttemptOutcome,
    ) -> Result<bool, DbError> {
        let delivered = (o.state == "DELIVERED").then_some(o.at_ms);
        let stmt = self.stmt(
            "UPDATE catalog_webhook_deliveries
                SET state = $4, next_attempt_ms = $5, last_status = $6, last_duration_ms = $7, last_error = $8,
                    response_excerpt = $9, delivered_ms = $10, lease_owner = NULL, lease_until_ms = NULL,
                    updated_ms = $11
              WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'PENDING'",
            vec![
                id.into(),
                owner.into(),
                attempt.into(),
                o.state.into(),
                o.next_attempt_ms.into(),
                o.status.into(),
                o.duration_ms.into(),
                o.error.clone().into(),
                o.excerpt.clone().into(),
                delivered.into(),
                o.at_ms.into(),
            ],
        );
        Ok(self.timed(self.conn.execute_raw(stmt)).await?.rows_affected() > 0)
    }

    /// A receiver's deliveries, newest first: ids below `before` (all when `None`), at most
    /// `limit` (keyset paging).
    pub(crate) async fn deliveries_page(
        &self,
        webhook_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>, DbError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM catalog_webhook_deliveries
              WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let stmt = self.stmt(
            &sql,
            vec![webhook_id.into(), before.unwrap_or(i64::MAX).into(), i64::try_from(limit).unwrap_or(100).into()],
        );
        self.timed(async { rows(self.conn.query_all_raw(stmt).await?, delivery_row) }).await
    }

    pub(crate) async fn delivery_count(&self, webhook_id: &str) -> Result<i64, DbError> {
        let stmt = self.stmt(
            "SELECT COUNT(*) AS n FROM catalog_webhook_deliveries WHERE webhook_id = $1",
            vec![webhook_id.into()],
        );
        let row = self.timed(self.conn.query_one_raw(stmt)).await?;
        Ok(row.and_then(|r| r.try_get::<i64>("", "n").ok()).unwrap_or(0))
    }

    pub(crate) async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>, DbError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM catalog_webhook_deliveries WHERE id = $1");
        let stmt = self.stmt(&sql, vec![id.into()]);
        self.timed(async { self.conn.query_one_raw(stmt).await?.as_ref().map(delivery_row).transpose() }).await
    }

    /// The delivery queued for `(webhook_id, event_key)` (a redelivery's own row).
    pub(crate) async fn delivery_by_key(
        &self,
        webhook_id: &str,
        event_key: &str,
    ) -> Result<Option<DeliveryRow>, DbError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM catalog_webhook_deliveries WHERE webhook_id = $1 AND event_key = $2"
        );
        let stmt = self.stmt(&sql, vec![webhook_id.into(), event_key.into()]);
        self.timed(async { self.conn.query_one_raw(stmt).await?.as_ref().map(delivery_row).transpose() }).await
    }

    /// A stamp that changes whenever the receivers or the delivery queue change, on any
    /// replica: (receivers, their latest update, the queue's latest write). Indexed reads only.
    pub(crate) async fn webhooks_stamp(&self) -> Result<(i64, i64, i64), DbError> {
        let stmt = self.stmt(
            "SELECT (SELECT COUNT(*) FROM catalog_webhooks) AS n,
                    (SELECT COALESCE(MAX(updated_ms), 0) FROM catalog_webhooks) AS w,
                    (SELECT COALESCE(MAX(updated_ms), 0) FROM catalog_webhook_deliveries) AS d",
            vec![],
        );
        let row = self.timed(self.conn.query_one_raw(stmt)).await?;
        let get = |c: &str| row.as_ref().and_then(|r| r.try_get::<i64>("", c).ok()).unwrap_or(0);
        Ok((get("n"), get("w"), get("d")))
    }

    /// Drops finished deliveries older than `before_ms` (the view keeps recent history).
    pub(crate) async fn prune_deliveries(&self, before_ms: i64) -> Result<u64, DbError> {
        let stmt = self.stmt(
            "DELETE FROM catalog_webhook_deliveries WHERE state <> 'PENDING' AND created_ms < $1",
            vec![before_ms.into()],
        );
        Ok(self.timed(self.conn.execute_raw(stmt)).await?.rows_affected())
    }
}
