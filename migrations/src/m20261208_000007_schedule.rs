//! Sources that refresh on their own: the retry state of each source's refreshes
//! (`retry_count`, `next_retry_at` on `catalog_refresh_status`, written with the outcome that
//! decided them, so every replica and the next start read the same), and
//! `catalog_schedule_claims`: one row per (source, due time) that a replica took, so exactly
//! one replica runs each due refresh. Due times are milliseconds since the epoch, computed
//! alike by every replica from the status row; `claimed_until` lets another replica take a
//! due refresh over when the one that claimed it died before recording anything.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogScheduleClaims {
    Table,
    Plugin,
    SourceId,
    DueMs,
    Owner,
    ClaimedUntilMs,
    JobId,
}

#[derive(DeriveIden)]
enum CatalogRefreshStatus {
    Table,
    RetryCount,
    NextRetryAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogScheduleClaims::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CatalogScheduleClaims::Plugin).string().not_null())
                    .col(ColumnDef::new(CatalogScheduleClaims::SourceId).string().not_null())
                    .col(ColumnDef::new(CatalogScheduleClaims::DueMs).big_integer().not_null())
                    .col(ColumnDef::new(CatalogScheduleClaims::Owner).string().not_null())
                    .col(ColumnDef::new(CatalogScheduleClaims::ClaimedUntilMs).big_integer().not_null())
                    .col(ColumnDef::new(CatalogScheduleClaims::JobId).string().null())
                    .primary_key(
                        Index::create()
                            .col(CatalogScheduleClaims::Plugin)
                            .col(CatalogScheduleClaims::SourceId)
                            .col(CatalogScheduleClaims::DueMs),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshStatus::Table)
                    .add_column(ColumnDef::new(CatalogRefreshStatus::RetryCount).integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshStatus::Table)
                    .add_column(ColumnDef::new(CatalogRefreshStatus::NextRetryAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogScheduleClaims::Table).to_owned()).await
    }
}
