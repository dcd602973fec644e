//! Cluster mode: the change feed (`catalog_changes`, whose ids are the cluster generation) and
//! refresh-job ownership under a lease (`owner`, `lease_until` on `catalog_refresh_jobs`).
//!
//! The change table keeps the small facts of every change (kind, plugin, source, revision, job,
//! origin replica); NOTIFY only says "look". A replica that lost its LISTEN connection reads the
//! rows after the last id it applied, so nothing is missed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogChanges {
    Table,
    Id,
    Kind,
    Plugin,
    SourceId,
    Revision,
    JobId,
    Origin,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CatalogRefreshJobs {
    Table,
    Owner,
    LeaseUntil,
    Target,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogChanges::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CatalogChanges::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(CatalogChanges::Kind).string().not_null())
                    .col(ColumnDef::new(CatalogChanges::Plugin).string().not_null())
                    .col(ColumnDef::new(CatalogChanges::SourceId).string().null())
                    .col(ColumnDef::new(CatalogChanges::Revision).integer().null())
                    .col(ColumnDef::new(CatalogChanges::JobId).string().null())
                    .col(ColumnDef::new(CatalogChanges::Origin).string().not_null())
                    .col(ColumnDef::new(CatalogChanges::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshJobs::Table)
                    .add_column(ColumnDef::new(CatalogRefreshJobs::Owner).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshJobs::Table)
                    .add_column(ColumnDef::new(CatalogRefreshJobs::LeaseUntil).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // `plugin` or `plugin/source`: what "one running job per target" compares.
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogRefreshJobs::Table)
                    .add_column(ColumnDef::new(CatalogRefreshJobs::Target).string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogChanges::Table).to_owned()).await
    }
}
