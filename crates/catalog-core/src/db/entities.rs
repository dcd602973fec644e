//! sea-orm entities, one module per table (see `migrations/` for the DDL).

pub mod refresh_status {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_refresh_status")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub plugin_name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub source_id: String,
        pub state: String,
        pub entity_count: i64,
        pub last_refresh_time: Option<ChronoDateTimeUtc>,
        pub last_refresh_status: Option<String>,
        pub last_refresh_summary: Option<String>,
        pub last_error: Option<String>,
        pub entities_loaded: i64,
        pub entities_removed: i64,
        pub duration_ms: i64,
        /// JSON array of diagnostics from the last refresh.
        pub diagnostics: String,
        pub updated_at: ChronoDateTimeUtc,
        /// The content (sha256, see `catalog_contents`) the source's entities come from: what
        /// the refresh that decided decided, followed by every replica. Null: none loaded.
        pub content_hash: Option<String>,
        /// The content served before `content_hash` (kept in `catalog_contents` too).
        pub previous_hash: Option<String>,
        /// A url source's `ETag` for that content.
        pub etag: Option<String>,
        /// Refreshes in a row that failed in a way a retry may fix (0 after a success, and after
        /// a failure of the content itself, which is not retried).
        pub retry_count: i32,
        /// When the next retry is due; null when none is (see `schedule`).
        pub next_retry_at: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod source_revision {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_source_revisions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub plugin_name: String,
        pub source_id: String,
        pub revision: i32,
        pub content_hash: String,
        /// The source entry, as JSON.
        pub entry: String,
        /// The catalog content (yaml sources), verbatim.
        pub content: Option<String>,
        pub action: String,
        pub actor: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod refresh_job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_refresh_jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub plugin: String,
        /// JSON array of source ids.
        pub sources: String,
        pub mode: String,
        pub dry_run: bool,
        pub phase: String,
        pub total: i32,
        pub completed: i32,
        pub current_source: Option<String>,
        /// JSON array of per-source results.
        pub results: String,
        pub error: Option<String>,
        /// Why the job (or part of it) waits for a slot; null when it does not.
        pub queued_reason: Option<String>,
        pub actor: String,
        pub started_at: Option<ChronoDateTimeUtc>,
        pub finished_at: Option<ChronoDateTimeUtc>,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_audit")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub actor: String,
        pub action: String,
        pub plugin: String,
        pub source_id: Option<String>,
        pub revision: Option<i32>,
        /// `OK` or the error code.
        pub outcome: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
