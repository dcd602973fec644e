//! Persistence: refresh status, source revisions and refresh jobs, through sea-orm on SQLite
//! (the default) or PostgreSQL. Migrations run on connect.
//!
//! Several replicas on one PostgreSQL also share a change feed, advisory locks and job leases:
//! see [`cluster`].
//!
//! The catalog core talks to the database only through [`Db`]: plain records in, plain records
//! out, so no sea-orm type leaks into the core's API.

pub mod cluster;
pub mod entities;
pub mod schedule;
pub mod webhooks;

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use entities::{audit, refresh_job, refresh_status, source_revision};

/// The bound of one SQLite checkpoint ([`Db::checkpoint`]).
const CHECKPOINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub use audit::Model as AuditRow;
pub use refresh_job::Model as JobRow;
pub use refresh_status::Model as StatusRow;
pub use source_revision::Model as RevisionRow;

/// A source's latest revision, without its content ([`Db::latest_revision`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestRevision {
    pub revision: i32,
    pub content_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Db(sea_orm::DbErr),
    /// The database cannot be reached (no connection within the timeout, connection refused):
    /// the request may succeed later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("revision {revision} of {plugin}/{source_id} already exists (a concurrent write won)")]
    RevisionTaken { plugin: String, source_id: String, revision: i32 },
}

impl From<sea_orm::DbErr> for DbError {
    fn from(e: sea_orm::DbErr) -> Self {
        match e {
            sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => DbError::Unavailable(e.to_string()),
            other => DbError::Db(other),
        }
    }
}

/// Which database a [`Db`] talks to (from the URL's scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    backend: Backend,
    /// Upper bound for one database call (pool acquire included).
    timeout: std::time::Duration,
    /// Cross-replica write locks held by this process (PostgreSQL; see [`cluster`]).
    locks: std::sync::Arc<cluster::ClusterLocks>,
}

/// A new revision to record.
pub struct NewRevision<'a> {
    pub plugin: &'a str,
    pub source_id: &'a str,
    pub revision: i32,
    pub content_hash: &'a str,
    pub entry: &'a str,
    pub content: Option<&'a str>,
    pub action: &'a str,
    pub actor: &'a str,
}

/// One audit record to write.
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub plugin: &'a str,
    pub source_id: Option<&'a str>,
    pub revision: Option<i32>,
    pub outcome: &'a str,
}

impl Db {
    pub(crate) async fn insert_audit(&self, a: NewAudit<'_>) -> Result<(), DbError> {
        let am = audit::ActiveModel {
            actor: Set(a.actor.to_string()),
            action: Set(a.action.to_string()),
            plugin: Set(a.plugin.to_string()),
            source_id: Set(a.source_id.map(str::to_string)),
            revision: Set(a.revision),
            outcome: Set(a.outcome.to_string()),
            created_at: Set(Utc::now()),
            ..Default::default()
        };
        self.timed(audit::Entity::insert(am).exec(&self.conn)).await?;
        Ok(())
    }

    pub(crate) async fn audit_log(&self, limit: u64) -> Result<Vec<AuditRow>, DbError> {
        use audit::Column as C;
        self.timed(audit::Entity::find().order_by_desc(C::Id).limit(limit).all(&self.conn)).await
    }

    /// One page of the audit trail, newest first: rows with `id < before` (all when `None`),
    /// optionally of one plugin and source, at most `limit` rows (keyset paging: the database
    /// reads only the page, and a cursor stays valid while rows are added).
    pub(crate) async fn audit_page(
        &self,
        before: Option<i64>,
        plugin: Option<&str>,
        source_id: Option<&str>,
        limit: u64,
    ) -> Result<Vec<AuditRow>, DbError> {
        use audit::Column as C;
        let mut q = audit::Entity::find();
        if let Some(b) = before {
            q = q.filter(C::Id.lt(b));
        }
        if let Some(p) = plugin {
            q = q.filter(C::Plugin.eq(p));
        }
        if let Some(s) = source_id {
            q = q.filter(C::SourceId.eq(s));
        }
        self.timed(q.order_by_desc(C::Id).limit(limit).all(&self.conn)).await
    }

    /// How many audit rows match the filter (the connection's `totalCount`).
    pub(crate) async fn audit_count(&self, plugin: Option<&str>, source_id: Option<&str>) -> Result<u64, DbError> {
        use audit::Column as C;
        use sea_orm::PaginatorTrait;
        let mut q = audit::Entity::find();
        if let Some(p) = plugin {
            q = q.filter(C::Plugin.eq(p));
        }
        if let Some(s) = source_id {
            q = q.filter(C::SourceId.eq(s));
        }
        self.timed(q.count(&self.conn)).await
    }

    /// Connects and runs migrations. `sqlite://path?mode=rwc` creates the file. Every later
    /// call fails with [`DbError::Unavailable`] after `timeout` (pool acquire included).
    pub async fn connect(url: &str, timeout: std::time::Duration) -> anyhow::Result<Db> {
        let Some(backend) = Backend::of(url) else {
            anyhow::bail!("unsupported database URL `{url}`: use sqlite://PATH or postgres://USER@HOST/DB");
        };
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false).acquire_timeout(timeout).connect_timeout(timeout);
        if backend == Backend::Sqlite {
            // One writer at a time is what SQLite allows anyway; a small pool avoids
            // "database is locked" churn. The pragmas on every connection of the pool (a
            // `PRAGMA` statement would reach one of them: `synchronous` and `busy_timeout` are
            // per connection), WAL with `synchronous=NORMAL`: a commit does not fsync, a
            // checkpoint does. No automatic checkpoint: SQLite runs it inside the commit that
            // grew the log past 1000 pages, so the import of a 45 MB catalog at start (and an
            // apply of one) paid for copying it into the database file and two fsyncs before
            // answering; [`Db::checkpoint_loop`] does it in the background instead.
            opts.max_connections(4).map_sqlx_sqlite_opts(|o| {
                use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                // 16 KiB pages for a new database (an existing one keeps its size): a
                // revision holds a whole catalog, and 4 KiB pages wrote a 45 MB one in ~22k
                // `pwrite`s, twice (WAL, then checkpoint); small rows cost one page either way.
                o.page_size(16 * 1024)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(std::time::Duration::from_secs(5))
                    .pragma("wal_autocheckpoint", "0")
                    // The log is emptied by each checkpoint but keeps its largest size on disk
                    // (a 45 MB catalog's import or apply): cut it back when it restarts.
                    .pragma("journal_size_limit", "4194304")
            });
        }
        let conn = Database::connect(opts).await?;
        Migrator::up(&conn, None).await?;
        Ok(Db { conn, backend, timeout, locks: Default::default() })
    }

    /// The bound of one database call (`--db-timeout`).
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.timeout
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite: copies what the write-ahead log holds into the database file
    /// (`PRAGMA wal_checkpoint(PASSIVE)`: it waits for no reader or writer and copies what it
    /// can; with nothing new in the log it costs a look at the log's index). PostgreSQL: nothing.
    /// Bounded by [`CHECKPOINT_TIMEOUT`] rather than `--db-timeout`: copying a whole catalog's
    /// revision can take longer than a query should, and SQLite finishes it either way.
    pub(crate) async fn checkpoint(&self) -> Result<(), DbError> {
        if self.is_postgres() {
            return Ok(());
        }
        use sea_orm::ConnectionTrait;
        let call = self.conn.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)");
        bounded(CHECKPOINT_TIMEOUT, call, || {
            format!("the checkpoint did not finish within {} s", CHECKPOINT_TIMEOUT.as_secs())
        })
        .await
        .map(drop)
    }

    /// SQLite: [`Db::checkpoint`] every `every` until `shutdown`, skipping a round while `hold()`
    /// says so (the server checkpoints once more after it stopped serving). A failure is logged
    /// once, and again once it works, not every round. PostgreSQL: returns at once.
    pub(crate) async fn checkpoint_loop(
        self,
        every: std::time::Duration,
        hold: impl Fn() -> bool + Send + 'static,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.is_postgres() {
            return;
        }
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if hold() {
                continue;
            }
            match self.checkpoint().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the SQLite checkpoint works again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, every_ms = every.as_millis(), "could not checkpoint the SQLite write-ahead log; retrying");
                }
                Err(_) => {}
            }
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), DbError> {
        self.timed(self.conn.ping()).await
    }

    /// Runs one database call, bounded by the configured timeout: when the database is down
    /// or a connection hangs, callers get [`DbError::Unavailable`] quickly instead of waiting
    /// for the pool's own (long) timeouts.
    async fn timed<T>(&self, call: impl std::future::Future<Output = Result<T, sea_orm::DbErr>>) -> Result<T, DbError> {
        bounded(self.timeout, call, || {
            format!("no answer from the database within {} ms (--db-timeout)", self.timeout.as_millis())
        })
        .await
    }

    // ---- refresh status --------------------------------------------------------------------

    pub(crate) async fn upsert_status(&self, row: StatusRow) -> Result<(), DbError> {
        use refresh_status::Column as C;
        let am: refresh_status::ActiveModel = row.into();
        self.timed(
            refresh_status::Entity::insert(am)
                .on_conflict(
                    OnConflict::columns([C::PluginName, C::SourceId])
                        .update_columns([
                            C::State,
                            C::EntityCount,
                            C::LastRefreshTime,
                            C::LastRefreshStatus,
                            C::LastRefreshSummary,
                            C::LastError,
                            C::EntitiesLoaded,
                            C::EntitiesRemoved,
                            C::DurationMs,
                            C::Diagnostics,
                            C::UpdatedAt,
                            C::ContentHash,
                            C::PreviousHash,
                            C::Etag,
                            C::RetryCount,
                            C::NextRetryAt,
                        ])
                        .to_owned(),
                )
                .exec(&self.conn),
        )
        .await?;
        Ok(())
    }

    /// [`Db::upsert_status`] carrying a fencing token: `(job id, owner)`. On PostgreSQL the row
    /// is written only if that job is still running under that owner's live lease, checked in
    /// the same statement; `Ok(false)`: fenced out (the lease was lost), nothing written.
    /// Without a token, or on SQLite (one replica), it is the plain upsert.
    pub(crate) async fn upsert_status_fenced(
        &self,
        row: StatusRow,
        fence: Option<(&str, &str)>,
    ) -> Result<bool, DbError> {
        let (Some((job, owner)), Some(pool)) = (fence, self.pg_pool()) else {
            self.upsert_status(row).await?;
            return Ok(true);
        };
        let sql = "INSERT INTO catalog_refresh_status
               (plugin_name, source_id, state, entity_count, last_refresh_time, last_refresh_status,
                last_refresh_summary, last_error, entities_loaded, entities_removed, duration_ms,
                diagnostics, updated_at, content_hash, previous_hash, etag, retry_count, next_retry_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $19, $20
             WHERE EXISTS (SELECT 1 FROM catalog_refresh_jobs
                           WHERE id = $17 AND owner = $18 AND phase IN ('QUEUED', 'RUNNING') AND lease_until > now())
             ON CONFLICT (plugin_name, source_id) DO UPDATE SET
               state = EXCLUDED.state, entity_count = EXCLUDED.entity_count,
               last_refresh_time = EXCLUDED.last_refresh_time, last_refresh_status = EXCLUDED.last_refresh_status,
               last_refresh_summary = EXCLUDED.last_refresh_summary, last_error = EXCLUDED.last_error,
               entities_loaded = EXCLUDED.entities_loaded, entities_removed = EXCLUDED.entities_removed,
               duration_ms = EXCLUDED.duration_ms, diagnostics = EXCLUDED.diagnostics,
               updated_at = EXCLUDED.updated_at, content_hash = EXCLUDED.content_hash,
               previous_hash = EXCLUDED.previous_hash, etag = EXCLUDED.etag,
               retry_count = EXCLUDED.retry_count, next_retry_at = EXCLUDED.next_retry_at";
        let done = self
            .timed_sqlx(
                "recording a refresh",
                sqlx::query(sql)
                    .bind(&row.plugin_name)
                    .bind(&row.source_id)
                    .bind(&row.state)
                    .bind(row.entity_count)
                    .bind(row.last_refresh_time)
                    .bind(&row.last_refresh_status)
                    .bind(&row.last_refresh_summary)
                    .bind(&row.last_error)
                    .bind(row.entities_loaded)
                    .bind(row.entities_removed)
                    .bind(row.duration_ms)
                    .bind(&row.diagnostics)
                    .bind(row.updated_at)
                    .bind(&row.content_hash)
                    .bind(&row.previous_hash)
                    .bind(&row.etag)
                    .bind(job)
                    .bind(owner)
                    .bind(row.retry_count)
                    .bind(row.next_retry_at)
                    .execute(pool),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- contents ------------------------------------------------------------------------------

    /// Keeps `body` under its hash, unless it is kept already.
    pub(crate) async fn store_content(&self, sha256: &str, body: &str) -> Result<(), DbError> {
        let now = Utc::now();
        let bytes = i64::try_from(body.len()).unwrap_or(i64::MAX);
        macro_rules! insert {
            ($pool:expr, $sql:literal) => {{
                let mut conn = $pool.acquire().await.map_err(acquire_err)?;
                sqlx::query($sql)
                    .bind(sha256)
                    .bind(body)
                    .bind(bytes)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
                    .map_err(|e| sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into())))
            }};
        }
        let call = async {
            if self.backend == Backend::Postgres {
                insert!(
                    self.conn.get_postgres_connection_pool(),
                    "INSERT INTO catalog_contents (sha256, body, bytes, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING"
                )
            } else {
                insert!(
                    self.conn.get_sqlite_connection_pool(),
                    "INSERT INTO catalog_contents (sha256, body, bytes, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING"
                )
            }
        };
        self.timed(call).await
    }

    /// Whether a content is kept (so a large one is not sent again).
    pub(crate) async fn has_content(&self, sha256: &str) -> Result<bool, DbError> {
        Ok(self.content_row("1", sha256).await?.is_some())
    }

    /// A kept content by its hash.
    pub(crate) async fn content(&self, sha256: &str) -> Result<Option<String>, DbError> {
        match self.content_row("body", sha256).await? {
            Some(r) => Ok(Some(r.try_get::<String>("", "body").map_err(DbError::Db)?)),
            None => Ok(None),
        }
    }

    /// `SELECT {column}` of the kept content with this hash.
    async fn content_row(&self, column: &str, sha256: &str) -> Result<Option<sea_orm::QueryResult>, DbError> {
        use sea_orm::ConnectionTrait;
        let param = if self.backend == Backend::Postgres { "$1" } else { "?" };
        let sql = format!("SELECT {column} FROM catalog_contents WHERE sha256 = {param}");
        self.timed(self.conn.query_one_raw(sea_orm::Statement::from_sql_and_values(
            self.conn.get_database_backend(),
            sql,
            [sha256.into()],
        )))
        .await
    }

    /// Drops the contents no source serves now or served just before.
    pub(crate) async fn prune_contents(&self) -> Result<u64, DbError> {
        use sea_orm::ConnectionTrait;
        let sql = "DELETE FROM catalog_contents WHERE NOT EXISTS (
              SELECT 1 FROM catalog_refresh_status s
              WHERE s.content_hash = catalog_contents.sha256 OR s.previous_hash = catalog_contents.sha256)";
        let done = self
            .timed(self.conn.execute_raw(sea_orm::Statement::from_string(self.conn.get_database_backend(), sql)))
            .await?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn all_statuses(&self) -> Result<Vec<StatusRow>, DbError> {
        self.timed(refresh_status::Entity::find().all(&self.conn)).await
    }

    pub(crate) async fn status(&self, plugin: &str, source_id: &str) -> Result<Option<StatusRow>, DbError> {
        self.timed(refresh_status::Entity::find_by_id((plugin.to_string(), source_id.to_string())).one(&self.conn))
            .await
    }

    // ---- revisions -------------------------------------------------------------------------

    /// The latest revision's number and content hash: the columns callers compare, not the row
    /// (whose content is the whole catalog text: 45 MB read for a number, on every `source`).
    pub(crate) async fn latest_revision(
        &self,
        plugin: &str,
        source_id: &str,
    ) -> Result<Option<LatestRevision>, DbError> {
        use source_revision::Column as C;
        let row: Option<(i32, String)> = self
            .timed(
                source_revision::Entity::find()
                    .select_only()
                    .column(C::Revision)
                    .column(C::ContentHash)
                    .filter(C::PluginName.eq(plugin))
                    .filter(C::SourceId.eq(source_id))
                    .order_by_desc(C::Revision)
                    .into_tuple()
                    .one(&self.conn),
            )
            .await?;
        Ok(row.map(|(revision, content_hash)| LatestRevision { revision, content_hash }))
    }

    /// Latest revision number per (plugin, source), for listing many sources in one query.
    pub(crate) async fn latest_revision_numbers(&self) -> Result<Vec<(String, String, i32)>, DbError> {
        use source_revision::Column as C;
        let rows: Vec<(String, String, Option<i32>)> = self
            .timed(
                source_revision::Entity::find()
                    .select_only()
                    .column(C::PluginName)
                    .column(C::SourceId)
                    .column_as(C::Revision.max(), "max_revision")
                    .group_by(C::PluginName)
                    .group_by(C::SourceId)
                    .into_tuple()
                    .all(&self.conn),
            )
            .await?;
        Ok(rows.into_iter().map(|(p, s, r)| (p, s, r.unwrap_or(0))).collect())
    }

    pub(crate) async fn revision(
        &self,
        plugin: &str,
        source_id: &str,
        revision: i32,
    ) -> Result<Option<RevisionRow>, DbError> {
        use source_revision::Column as C;
        self.timed(
            source_revision::Entity::find()
                .filter(C::PluginName.eq(plugin))
                .filter(C::SourceId.eq(source_id))
                .filter(C::Revision.eq(revision))
                .one(&self.conn),
        )
        .await
    }

    pub(crate) async fn revisions(
        &self,
        plugin: &str,
        source_id: &str,
        limit: u64,
    ) -> Result<Vec<RevisionRow>, DbError> {
        use source_revision::Column as C;
        self.timed(
            source_revision::Entity::find()
                .filter(C::PluginName.eq(plugin))
                .filter(C::SourceId.eq(source_id))
                .order_by_desc(C::Revision)
                .limit(limit)
                .all(&self.conn),
        )
        .await
    }

    /// One page of a source's revisions, newest first: revision numbers below `before` (all
    /// when `None`), at most `limit` rows (keyset paging on the revision number).
    pub(crate) async fn revisions_page(
        &self,
        plugin: &str,
        source_id: &str,
        before: Option<i32>,
        limit: u64,
    ) -> Result<Vec<RevisionRow>, DbError> {
        use source_revision::Column as C;
        let mut q = source_revision::Entity::find().filter(C::PluginName.eq(plugin)).filter(C::SourceId.eq(source_id));
        if let Some(b) = before {
            q = q.filter(C::Revision.lt(b));
        }
        self.timed(q.order_by_desc(C::Revision).limit(limit).all(&self.conn)).await
    }

    /// How many revisions a source has.
    pub(crate) async fn revision_count(&self, plugin: &str, source_id: &str) -> Result<u64, DbError> {
        use sea_orm::PaginatorTrait;
        use source_revision::Column as C;
        self.timed(
            source_revision::Entity::find()
                .filter(C::PluginName.eq(plugin))
                .filter(C::SourceId.eq(source_id))
                .count(&self.conn),
        )
        .await
    }

    /// Records a revision and returns its number.
    ///
    /// Through sqlx directly, not an `ActiveModel`: the row carries the whole catalog text, and
    /// sea-orm's insert copies every value twice on the way to sqlx (building the statement,
    /// then binding it), which for a 45 MB catalog was a fifth of a fresh start. Without
    /// `RETURNING` too: SQLite would stage the row in a temporary file to hand it back. The
    /// errors map as sea-orm maps them (pool errors are `Unavailable`, a taken revision
    /// number is [`DbError::RevisionTaken`]); the timestamp is bound as sea-orm binds it.
    pub(crate) async fn insert_revision(&self, r: NewRevision<'_>) -> Result<i32, DbError> {
        const COLUMNS: &str =
            "plugin_name, source_id, revision, content_hash, entry, content, action, actor, created_at";
        let now = Utc::now();
        // The same statement on either pool; only the placeholders differ.
        macro_rules! insert {
            ($pool:expr, $placeholders:literal) => {{
                let sql = format!("INSERT INTO catalog_source_revisions ({COLUMNS}) VALUES ({})", $placeholders);
                let mut conn = $pool.acquire().await.map_err(acquire_err)?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(r.plugin)
                    .bind(r.source_id)
                    .bind(r.revision)
                    .bind(r.content_hash)
                    .bind(r.entry)
                    .bind(r.content)
                    .bind(r.action)
                    .bind(r.actor)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
                    .map_err(|e| sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into())))
            }};
        }
        let call = async {
            if self.backend == Backend::Postgres {
                insert!(self.conn.get_postgres_connection_pool(), "$1, $2, $3, $4, $5, $6, $7, $8, $9")
            } else {
                insert!(self.conn.get_sqlite_connection_pool(), "?, ?, ?, ?, ?, ?, ?, ?, ?")
            }
        };
        match self.timed(call).await {
            Ok(()) => Ok(r.revision),
            Err(DbError::Db(e)) if is_unique_violation(&e) => Err(DbError::RevisionTaken {
                plugin: r.plugin.to_string(),
                source_id: r.source_id.to_string(),
                revision: r.revision,
            }),
            Err(e) => Err(e),
        }
    }

    // ---- jobs --------------------------------------------------------------------------------

    /// Inserts or updates a job row. A row that is already finished (SUCCEEDED, FAILED, ...)
    /// is never changed: a replica whose lease expired (another one marked its job FAILED
    /// "interrupted") cannot write its late progress or result over that verdict.
    pub(crate) async fn upsert_job(&self, row: JobRow) -> Result<(), DbError> {
        use refresh_job::Column as C;
        let am: refresh_job::ActiveModel = row.into();
        let result = self
            .timed(
                refresh_job::Entity::insert(am)
                    .on_conflict(
                        OnConflict::column(C::Id)
                            .update_columns([
                                C::Phase,
                                C::Total,
                                C::Completed,
                                C::CurrentSource,
                                C::Results,
                                C::Error,
                                C::QueuedReason,
                                C::StartedAt,
                                C::FinishedAt,
                            ])
                            .action_and_where({
                                use sea_orm::sea_query::ExprTrait;
                                sea_orm::sea_query::Expr::col((refresh_job::Entity, C::Phase))
                                    .is_in(["QUEUED", "RUNNING"])
                            })
                            .to_owned(),
                    )
                    .exec(&self.conn),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(DbError::Db(sea_orm::DbErr::RecordNotInserted)) => {
                tracing::warn!("a finished job row was not overwritten (its lease had expired)");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Most recent jobs first.
    pub(crate) async fn recent_jobs(&self, limit: u64) -> Result<Vec<JobRow>, DbError> {
        use refresh_job::Column as C;
        self.timed(refresh_job::Entity::find().order_by_desc(C::CreatedAt).limit(limit).all(&self.conn)).await
    }

    /// One page of jobs, newest first by (created_at, id): jobs after the cursor `before`
    /// (all when `None`), at most `limit` rows. The id breaks ties between jobs created in the
    /// same instant, so the order (and a cursor) is stable.
    pub(crate) async fn jobs_page(
        &self,
        before: Option<(DateTime<Utc>, &str)>,
        limit: u64,
    ) -> Result<Vec<JobRow>, DbError> {
        use refresh_job::Column as C;
        use sea_orm::Condition;
        let mut q = refresh_job::Entity::find();
        if let Some((at, id)) = before {
            q = q.filter(
                Condition::any()
                    .add(C::CreatedAt.lt(at))
                    .add(Condition::all().add(C::CreatedAt.eq(at)).add(C::Id.lt(id))),
            );
        }
        self.timed(q.order_by_desc(C::CreatedAt).order_by_desc(C::Id).limit(limit).all(&self.conn)).await
    }

    /// How many jobs are recorded.
    pub(crate) async fn job_count(&self) -> Result<u64, DbError> {
        use sea_orm::PaginatorTrait;
        self.timed(refresh_job::Entity::find().count(&self.conn)).await
    }

    pub(crate) async fn job(&self, id: &str) -> Result<Option<JobRow>, DbError> {
        self.timed(refresh_job::Entity::find_by_id(id.to_string()).one(&self.conn)).await
    }

    /// Ends the job `id` as CANCELLED with `message`, if it is still QUEUED or RUNNING.
    /// `Ok(false)`: it had already ended, and is unchanged.
    pub(crate) async fn cancel_job_row(&self, id: &str, message: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
        use refresh_job::Column as C;
        let res = self
            .timed(
                refresh_job::Entity::update_many()
                    .col_expr(C::Phase, sea_orm::sea_query::Expr::value("CANCELLED"))
                    .col_expr(C::Error, sea_orm::sea_query::Expr::value(message))
                    .col_expr(C::CurrentSource, sea_orm::sea_query::Expr::value(Option::<String>::None))
                    .col_expr(C::QueuedReason, sea_orm::sea_query::Expr::value(Option::<String>::None))
                    .col_expr(C::FinishedAt, sea_orm::sea_query::Expr::value(now))
                    .filter(C::Id.eq(id))
                    .filter(C::Phase.is_in(["QUEUED", "RUNNING"]))
                    .exec(&self.conn),
            )
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Marks jobs left QUEUED or RUNNING by a previous process as FAILED.
    pub(crate) async fn fail_interrupted_jobs(&self, now: DateTime<Utc>) -> Result<u64, DbError> {
        use refresh_job::Column as C;
        let res = self
            .timed(
                refresh_job::Entity::update_many()
                    .col_expr(C::Phase, sea_orm::sea_query::Expr::value("FAILED"))
                    .col_expr(C::Error, sea_orm::sea_query::Expr::value("interrupted by restart"))
                    .col_expr(C::FinishedAt, sea_orm::sea_query::Expr::value(now))
                    .filter(C::Phase.is_in(["QUEUED", "RUNNING"]))
                    .exec(&self.conn),
            )
            .await?;
        Ok(res.rows_affected)
    }
}

/// `call`, or [`DbError::Unavailable`] with `message()` when it takes longer than `limit`.
async fn bounded<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, sea_orm::DbErr>>,
    message: impl FnOnce() -> String,
) -> Result<T, DbError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(DbError::from),
        Err(_) => Err(DbError::Unavailable(message())),
    }
}

/// A pool error as sea-orm maps it (`sqlx_conn_acquire_err`): a timeout or a closed pool is
/// [`DbError::Unavailable`] through `From<DbErr>`.
fn acquire_err(e: sqlx::Error) -> sea_orm::DbErr {
    match e {
        sqlx::Error::PoolTimedOut => sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed),
        other => sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(other.into())),
    }
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phase: &str, completed: i32) -> JobRow {
        JobRow {
            id: "job-1".into(),
            plugin: "models".into(),
            sources: "[]".into(),
            mode: "FULL".into(),
            dry_run: false,
            phase: phase.into(),
            total: 3,
            completed,
            current_source: None,
            results: "[]".into(),
            error: None,
            queued_reason: None,
            actor: "t".into(),
            started_at: None,
            finished_at: None,
            created_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn a_finished_job_row_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url, std::time::Duration::from_secs(5)).await.unwrap();
        db.upsert_job(job("RUNNING", 1)).await.unwrap();
        db.upsert_job(job("RUNNING", 2)).await.unwrap();
        assert_eq!(db.job("job-1").await.unwrap().unwrap().completed, 2, "progress is written while running");
        db.upsert_job(job("FAILED", 2)).await.unwrap();
        // A late writer (its lease expired) reports progress and success: the verdict stays.
        db.upsert_job(job("RUNNING", 3)).await.unwrap();
        db.upsert_job(job("SUCCEEDED", 3)).await.unwrap();
        let row = db.job("job-1").await.unwrap().unwrap();
        assert_eq!((row.phase.as_str(), row.completed), ("FAILED", 2));
    }
}
