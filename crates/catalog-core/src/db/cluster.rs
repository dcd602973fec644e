//! What several replicas on one PostgreSQL share beyond plain rows: the change feed
//! (`catalog_changes` + NOTIFY), advisory locks per plugin, and refresh-job claims under a lease.
//!
//! Everything here is PostgreSQL-only; on SQLite (one replica) the locks are no-ops and there
//! is no feed. sqlx is used directly, on sea-orm's own pool, because sea-orm has no API for a
//! session-held lock or for LISTEN.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Db, DbError, JobRow};

/// The NOTIFY channel of the change feed.
pub const CHANNEL: &str = "catalog_bff_changes";

/// One row of the change feed; its `id` is the cluster generation after the change.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRow {
    pub id: i64,
    /// An event kind (`APPLIED`, `REFRESHED`, ...) or `JOB` (a refresh job's state changed).
    pub kind: String,
    pub plugin: String,
    pub source_id: Option<String>,
    pub revision: Option<i32>,
    pub job_id: Option<String>,
    /// The replica that made the change.
    pub origin: String,
    pub created_at: DateTime<Utc>,
    /// Seconds since it was recorded, by the database's clock (replica clocks may differ).
    pub age_secs: f64,
}

/// A change to record (the id is assigned by the database).
#[derive(Clone, Debug)]
pub struct NewChange {
    /// Unique per change, the same on every attempt to record it: a retried insert whose first
    /// attempt committed finds its row instead of recording the change twice.
    pub key: String,
    pub kind: String,
    pub plugin: String,
    pub source_id: Option<String>,
    pub revision: Option<i32>,
    pub job_id: Option<String>,
    pub origin: String,
}

/// What [`Db::claim_job`] found.
pub enum Claim {
    /// The job row is inserted, owned by this replica: run it.
    Mine,
    /// A live job for the same target (or its whole plugin) runs already: follow it.
    Running(Box<JobRow>),
}

/// A job whose lease ran out, now FAILED.
pub struct Expired {
    pub id: String,
    pub plugin: String,
    pub target: Option<String>,
}

/// Cross-replica locks, one per plugin, shared by the tasks of this replica.
///
/// Inside one replica the in-process write lock already serialises writers, so the PostgreSQL
/// advisory lock only has to keep *other* replicas out. It is therefore held once per replica
/// and counted: the first local holder takes it on a dedicated pooled connection, later local
/// holders join, the last one releases it. This is what lets a task that re-reads the config
/// (which takes the write lock inside) hold the cluster lock around it without ever waiting
/// in a cycle with a local apply (write lock, then cluster lock).
#[derive(Default)]
pub(super) struct ClusterLocks {
    plugins: std::sync::Mutex<HashMap<String, Arc<Shared>>>,
}

#[derive(Default)]
struct Shared {
    /// Held while the advisory lock is being acquired, so local holders queue behind one try.
    gate: tokio::sync::Mutex<()>,
    state: std::sync::Mutex<Held>,
}

#[derive(Default)]
struct Held {
    count: usize,
    conn: Option<PoolConnection<Postgres>>,
}

/// Holds the cluster-wide write lock of one plugin until dropped (SQLite: holds nothing).
pub struct PluginLock {
    shared: Option<Arc<Shared>>,
}

impl Drop for PluginLock {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else { return };
        let conn = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.count = st.count.saturating_sub(1);
            if st.count > 0 { None } else { st.conn.take() }
        };
        if let Some(mut conn) = conn
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                // Closing the session would release the lock too; unlocking keeps the
                // connection for the pool. A failed unlock closes it, to be sure.
                let unlocked = tokio::time::timeout(
                    Duration::from_secs(5),
                    sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut *conn),
                )
                .await;
                if !matches!(unlocked, Ok(Ok(_))) {
                    let _ = conn.detach();
                }
            });
        }
    }
}

fn lock_key(plugin: &str) -> String {
    format!("catalog-bff:{plugin}")
}

fn sqlx_err(e: sqlx::Error) -> DbError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            DbError::Unavailable(e.to_string())
        }
        other => DbError::Unavailable(format!("database call failed: {other}")),
    }
}

impl Db {
    pub(crate) fn is_postgres(&self) -> bool {
        self.backend == super::Backend::Postgres
    }

    /// sea-orm's PostgreSQL pool, shared (never a second pool).
    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        self.is_postgres().then(|| self.conn.get_postgres_connection_pool())
    }

    fn unavailable(&self, what: &str) -> DbError {
        DbError::Unavailable(format!(
            "{what}: no answer from the database within {} ms (--db-timeout)",
            self.timeout.as_millis()
        ))
    }

    pub(super) async fn timed_sqlx<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(sqlx_err),
            Err(_) => Err(self.unavailable(what)),
        }
    }

    /// Takes the cluster-wide write lock of `plugin`
    /// (`pg_advisory_lock(hashtext('catalog-bff:'||plugin))` on a connection held for the
    /// guard's life), waiting at most `--db-timeout`. SQLite: a no-op.
    pub(crate) async fn lock_plugin(&self, plugin: &str) -> Result<PluginLock, DbError> {
        let Some(pool) = self.pg_pool() else {
            return Ok(PluginLock { shared: None });
        };
        let shared = {
            let mut map = self.locks.plugins.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(plugin.to_string()).or_default().clone()
        };
        let deadline = Instant::now() + self.timeout;
        let gate = match tokio::time::timeout_at(deadline.into(), shared.gate.lock()).await {
            Ok(g) => g,
            Err(_) => return Err(self.unavailable(&format!("waiting for the write lock of plugin {plugin}"))),
        };
        {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.count > 0 {
                st.count += 1;
                drop(gate);
                return Ok(PluginLock { shared: Some(shared.clone()) });
            }
        }
        let mut conn = match tokio::time::timeout_at(deadline.into(), pool.acquire()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(sqlx_err(e)),
            Err(_) => return Err(self.unavailable("acquiring a connection for the write lock")),
        };
        // Try, don't block: a blocked `pg_advisory_lock` cannot be abandoned cleanly when the
        // deadline passes, a failed try can.
        let mut pause = Duration::from_millis(2);
        loop {
            let got = tokio::time::timeout_at(
                deadline.into(),
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(hashtext($1))")
                    .bind(lock_key(plugin))
                    .fetch_one(&mut *conn),
            )
            .await;
            match got {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => return Err(sqlx_err(e)),
                Err(_) => {
                    let _ = conn.detach();
                    return Err(self.unavailable(&format!("waiting for the write lock of plugin {plugin}")));
                }
            }
            if Instant::now() + pause > deadline {
                return Err(DbError::Unavailable(format!(
                    "another replica held the write lock of plugin {plugin} for longer than {} ms (--db-timeout)",
                    self.timeout.as_millis()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.count = 1;
        st.conn = Some(conn);
        drop(st);
        drop(gate);
        Ok(PluginLock { shared: Some(shared) })
    }

    // ---- the change feed ----------------------------------------------------------------------

    /// Records a change and notifies every listener (the NOTIFY is delivered when the row is
    /// committed). Returns the change id: the cluster generation.
    ///
    /// Ids are assigned in commit order with no hole: the insert takes `MAX(id) + 1` under a
    /// transaction-scoped advisory lock that every writer of the feed takes, held until the
    /// commit. So a reader that sees id N+1 knows N is committed, and reads the feed in order
    /// by id, however late a change commits (a sequence would hand out ids in start order, and
    /// a reader could not tell a hole that will fill from one that never will). A retry of a
    /// change whose first attempt committed finds it by its key.
    pub(crate) async fn publish_change(&self, c: &NewChange) -> Result<i64, DbError> {
        let Some(pool) = self.pg_pool() else {
            return Err(DbError::Unavailable("the change feed needs PostgreSQL".into()));
        };
        let work = async {
            let mut tx = pool.begin().await?;
            // Try, don't block (as the plugin locks): a blocked lock cannot be abandoned
            // cleanly when the call's deadline passes.
            let mut pause = Duration::from_millis(1);
            loop {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('catalog-bff:feed'))")
                    .fetch_one(&mut *tx)
                    .await?;
                if got {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO catalog_changes (id, change_key, kind, plugin, source_id, revision, job_id, origin, created_at)
                 SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5, $6, $7, now() FROM catalog_changes
                 ON CONFLICT (change_key) DO NOTHING RETURNING id",
            )
            .bind(&c.key)
            .bind(&c.kind)
            .bind(&c.plugin)
            .bind(&c.source_id)
            .bind(c.revision)
            .bind(&c.job_id)
            .bind(&c.origin)
            .fetch_optional(&mut *tx)
            .await?;
            let id = match inserted {
                Some(id) => {
                    let payload = serde_json::json!({
                        "generation": id, "kind": c.kind, "plugin": c.plugin, "source": c.source_id,
                        "revision": c.revision, "jobId": c.job_id, "origin": c.origin,
                    });
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(payload.to_string())
                        .execute(&mut *tx)
                        .await?;
                    id
                }
                // Recorded by an earlier attempt whose answer was lost.
                None => {
                    sqlx::query_scalar("SELECT id FROM catalog_changes WHERE change_key = $1")
                        .bind(&c.key)
                        .fetch_one(&mut *tx)
                        .await?
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(id)
        };
        self.timed_sqlx("recording a change", work).await
    }

    /// Changes after `after`, oldest first, at most `limit`.
    pub(crate) async fn changes_since(&self, after: i64, limit: i64) -> Result<Vec<ChangeRow>, DbError> {
        let Some(pool) = self.pg_pool() else { return Ok(Vec::new()) };
        let rows = self
            .timed_sqlx(
                "reading the change feed",
                sqlx::query(
                    "SELECT id, kind, plugin, source_id, revision, job_id, origin, created_at,
                       EXTRACT(EPOCH FROM (now() - created_at))::float8 AS age_secs
                     FROM catalog_changes WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ChangeRow {
                    id: r.try_get("id").map_err(sqlx_err)?,
                    kind: r.try_get("kind").map_err(sqlx_err)?,
                    plugin: r.try_get("plugin").map_err(sqlx_err)?,
                    source_id: r.try_get("source_id").map_err(sqlx_err)?,
                    revision: r.try_get("revision").map_err(sqlx_err)?,
                    job_id: r.try_get("job_id").map_err(sqlx_err)?,
                    origin: r.try_get("origin").map_err(sqlx_err)?,
                    created_at: r.try_get("created_at").map_err(sqlx_err)?,
                    age_secs: r.try_get("age_secs").map_err(sqlx_err)?,
                })
            })
            .collect()
    }

    /// The newest change id (0 when there is none).
    pub(crate) async fn last_change_id(&self) -> Result<i64, DbError> {
        let Some(pool) = self.pg_pool() else { return Ok(0) };
        self.timed_sqlx(
            "reading the change feed",
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) FROM catalog_changes").fetch_one(pool),
        )
        .await
    }

    /// Forgets changes older than `keep` (a replica that was away longer starts over by
    /// re-reading everything, which it does at start anyway).
    pub(crate) async fn prune_changes(&self, keep: Duration) -> Result<u64, DbError> {
        let Some(pool) = self.pg_pool() else { return Ok(0) };
        let secs = keep.as_secs_f64();
        let done = self
            .timed_sqlx(
                "pruning the change feed",
                // The newest row stays whatever its age: ids continue from it (`publish_change`).
                sqlx::query(
                    "DELETE FROM catalog_changes WHERE created_at < now() - make_interval(secs => $1)
                       AND id < (SELECT MAX(id) FROM catalog_changes)",
                )
                .bind(secs)
                .execute(pool),
            )
            .await?;
        Ok(done.rows_affected())
    }

    // ---- jobs under a lease -----------------------------------------------------------------

    /// Inserts `row` owned by `owner` with a lease of `lease`, unless a live job (lease not
    /// expired) for the same `target` is QUEUED or RUNNING: then returns that one. A source's
    /// job does not follow its plugin's (which may wait on stalled url hosts; see
    /// `JobRegistry::start_or_join`). Serialised per plugin by a transaction-scoped advisory
    /// lock.
    pub(crate) async fn claim_job(
        &self,
        row: &JobRow,
        target: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, DbError> {
        let Some(pool) = self.pg_pool() else {
            self.upsert_job(row.clone()).await?;
            return Ok(Claim::Mine);
        };
        let deadline = Instant::now() + self.timeout;
        let work = async {
            let mut tx = pool.begin().await?;
            let mut pause = Duration::from_millis(2);
            loop {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
                    .bind(format!("catalog-bff-job:{}", row.plugin))
                    .fetch_one(&mut *tx)
                    .await?;
                if got {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            let running: Option<String> = sqlx::query_scalar(
                "SELECT id FROM catalog_refresh_jobs
                 WHERE phase IN ('QUEUED', 'RUNNING') AND lease_until > now() AND target = $1
                 ORDER BY created_at LIMIT 1",
            )
            .bind(target)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = running {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(Some(id));
            }
            sqlx::query(
                "INSERT INTO catalog_refresh_jobs
                   (id, plugin, sources, mode, dry_run, phase, total, completed, current_source, results,
                    error, actor, started_at, finished_at, created_at, owner, lease_until, target)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                    now() + make_interval(secs => $17), $18)",
            )
            .bind(&row.id)
            .bind(&row.plugin)
            .bind(&row.sources)
            .bind(&row.mode)
            .bind(row.dry_run)
            .bind(&row.phase)
            .bind(row.total)
            .bind(row.completed)
            .bind(&row.current_source)
            .bind(&row.results)
            .bind(&row.error)
            .bind(&row.actor)
            .bind(row.started_at)
            .bind(row.finished_at)
            .bind(row.created_at)
            .bind(owner)
            .bind(lease.as_secs_f64())
            .bind(target)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(None)
        };
        let found = match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r.map_err(sqlx_err)?,
            Err(_) => return Err(self.unavailable("claiming a refresh job")),
        };
        match found {
            None => Ok(Claim::Mine),
            Some(id) => match self.job(&id).await? {
                Some(other) => Ok(Claim::Running(Box::new(other))),
                // Gone between the two reads (it cannot be deleted; be safe): run ours.
                None => Ok(Claim::Mine),
            },
        }
    }

    /// Extends the lease of every unfinished job `owner` runs. Returns how many.
    pub(crate) async fn renew_leases(&self, owner: &str, lease: Duration) -> Result<u64, DbError> {
        let Some(pool) = self.pg_pool() else { return Ok(0) };
        let done = self
            .timed_sqlx(
                "renewing job leases",
                sqlx::query(
                    "UPDATE catalog_refresh_jobs SET lease_until = now() + make_interval(secs => $2)
                     WHERE owner = $1 AND phase IN ('QUEUED', 'RUNNING')",
                )
                .bind(owner)
                .bind(lease.as_secs_f64())
                .execute(pool),
            )
            .await?;
        Ok(done.rows_affected())
    }

    /// At start: marks FAILED the unfinished jobs owned by `owner`: replica ids are unique
    /// among live replicas, so these were left by this replica's previous process (a restart
    /// with the same `--replica-id`), which would otherwise renew their leases forever.
    pub(crate) async fn fail_own_jobs(&self, owner: &str) -> Result<Vec<Expired>, DbError> {
        let Some(pool) = self.pg_pool() else { return Ok(Vec::new()) };
        let rows = self
            .timed_sqlx(
                "failing this replica's interrupted jobs",
                sqlx::query(
                    "UPDATE catalog_refresh_jobs
                     SET phase = 'FAILED', current_source = NULL, finished_at = now(),
                         error = 'interrupted: replica ' || owner || ' restarted'
                     WHERE phase IN ('QUEUED', 'RUNNING') AND owner = $1
                     RETURNING id, plugin, target",
                )
                .bind(owner)
                .fetch_all(pool),
            )
            .await?;
        expired(&rows)
    }

    /// Marks FAILED every unfinished job whose lease expired (or that has none: left by a
    /// version without leases), naming the replica that stopped renewing. Never touches a job
    /// of a live replica. Returns the jobs it failed.
    pub(crate) async fn expire_leases(&self) -> Result<Vec<Expired>, DbError> {
        let Some(pool) = self.pg_pool() else { return Ok(Vec::new()) };
        let rows = self
            .timed_sqlx(
                "expiring job leases",
                sqlx::query(
                    "UPDATE catalog_refresh_jobs
                     SET phase = 'FAILED', current_source = NULL, finished_at = now(),
                         error = 'interrupted: replica ' || COALESCE(owner, '(unknown)') || ' stopped renewing its lease'
                     WHERE phase IN ('QUEUED', 'RUNNING') AND (lease_until IS NULL OR lease_until < now())
                     RETURNING id, plugin, target",
                )
                .fetch_all(pool),
            )
            .await?;
        expired(&rows)
    }
}

/// A LISTEN connection on the change feed's channel (a dedicated connection from the shared
/// pool), so the core never sees a sqlx type.
pub struct Feed {
    listener: sqlx::postgres::PgListener,
    timeout: Duration,
}

/// What [`Feed::next`] saw.
pub enum FeedEvent {
    /// A notification: read the table.
    Notified,
    /// Nothing for `quiet`, and the connection answered a ping.
    Quiet,
    /// The connection is gone (or hangs): reconnect.
    Lost,
}

impl Db {
    /// Opens the change feed's LISTEN connection, within `--db-timeout`.
    pub(crate) async fn listen(&self) -> Result<Feed, DbError> {
        let Some(pool) = self.pg_pool() else {
            return Err(DbError::Unavailable("the change feed needs PostgreSQL".into()));
        };
        let connect = async {
            let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(r) => r.map(|listener| Feed { listener, timeout: self.timeout }).map_err(sqlx_err),
            Err(_) => Err(self.unavailable("opening the LISTEN connection")),
        }
    }
}

impl Feed {
    /// Waits up to `quiet` for a notification; after silence, pings the connection (a cut
    /// network is silent, not closed).
    pub(crate) async fn next(&mut self, quiet: Duration) -> FeedEvent {
        match tokio::time::timeout(quiet, self.listener.try_recv()).await {
            Ok(Ok(Some(_))) => FeedEvent::Notified,
            Ok(Ok(None)) | Ok(Err(_)) => FeedEvent::Lost,
            Err(_) => {
                let ping =
                    tokio::time::timeout(self.timeout, sqlx::query("SELECT 1").execute(&mut self.listener)).await;
                if matches!(ping, Ok(Ok(_))) { FeedEvent::Quiet } else { FeedEvent::Lost }
            }
        }
    }
}

/// The `RETURNING id, plugin, target` rows of a job-failing update.
fn expired(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Expired>, DbError> {
    rows.iter()
        .map(|r| {
            Ok(Expired {
                id: r.try_get("id").map_err(sqlx_err)?,
                plugin: r.try_get("plugin").map_err(sqlx_err)?,
                target: r.try_get("target").map_err(sqlx_err)?,
            })
        })
        .collect()
}
