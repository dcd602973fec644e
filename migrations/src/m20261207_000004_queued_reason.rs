//! Why a refresh job waits: `queued_reason` on `catalog_refresh_jobs`, e.g. "waiting for a fetch
//! slot: 4 jobs are fetching url sources (--max-running-fetches 4)". Null when it does not wait.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogRefreshJobs {
    Table,
    QueuedReason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshJobs::Table)
                    .add_column(ColumnDef::new(CatalogRefreshJobs::QueuedReason).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshJobs::Table)
                    .drop_column(CatalogRefreshJobs::QueuedReason)
                    .to_owned(),
            )
            .await
    }
}
