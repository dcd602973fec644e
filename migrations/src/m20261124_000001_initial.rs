//! Refresh status, source revisions and refresh jobs.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogRefreshStatus {
    Table,
    PluginName,
    SourceId,
    State,
    EntityCount,
    LastRefreshTime,
    LastRefreshStatus,
    LastRefreshSummary,
    LastError,
    EntitiesLoaded,
    EntitiesRemoved,
    DurationMs,
    Diagnostics,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CatalogSourceRevisions {
    Table,
    Id,
    PluginName,
    SourceId,
    Revision,
    ContentHash,
    Entry,
    Content,
    Action,
    Actor,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CatalogRefreshJobs {
    Table,
    Id,
    Plugin,
    Sources,
    Mode,
    DryRun,
    Phase,
    Total,
    Completed,
    CurrentSource,
    Results,
    Error,
    Actor,
    StartedAt,
    FinishedAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogRefreshStatus::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CatalogRefreshStatus::PluginName).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshStatus::SourceId).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshStatus::State).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshStatus::EntityCount).big_integer().not_null().default(0))
                    .col(ColumnDef::new(CatalogRefreshStatus::LastRefreshTime).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(CatalogRefreshStatus::LastRefreshStatus).string().null())
                    .col(ColumnDef::new(CatalogRefreshStatus::LastRefreshSummary).text().null())
                    .col(ColumnDef::new(CatalogRefreshStatus::LastError).text().null())
                    .col(ColumnDef::new(CatalogRefreshStatus::EntitiesLoaded).big_integer().not_null().default(0))
                    .col(ColumnDef::new(CatalogRefreshStatus::EntitiesRemoved).big_integer().not_null().default(0))
                    .col(ColumnDef::new(CatalogRefreshStatus::DurationMs).big_integer().not_null().default(0))
                    .col(ColumnDef::new(CatalogRefreshStatus::Diagnostics).text().not_null().default("[]"))
                    .col(ColumnDef::new(CatalogRefreshStatus::UpdatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(
                        Index::create().col(CatalogRefreshStatus::PluginName).col(CatalogRefreshStatus::SourceId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CatalogSourceRevisions::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(CatalogSourceRevisions::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(CatalogSourceRevisions::PluginName).string().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::SourceId).string().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::Revision).integer().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::ContentHash).string().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::Entry).text().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::Content).text().null())
                    .col(ColumnDef::new(CatalogSourceRevisions::Action).string().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::Actor).string().not_null())
                    .col(ColumnDef::new(CatalogSourceRevisions::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // The unique index is what makes "two applies, one revision number" impossible even
        // across replicas sharing a database.
        manager
            .create_index(
                Index::create()
                    .name("ux_catalog_source_revisions_source_revision")
                    .table(CatalogSourceRevisions::Table)
                    .col(CatalogSourceRevisions::PluginName)
                    .col(CatalogSourceRevisions::SourceId)
                    .col(CatalogSourceRevisions::Revision)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CatalogRefreshJobs::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CatalogRefreshJobs::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(CatalogRefreshJobs::Plugin).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Sources).text().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Mode).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::DryRun).boolean().not_null().default(false))
                    .col(ColumnDef::new(CatalogRefreshJobs::Phase).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Total).integer().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Completed).integer().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::CurrentSource).string().null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Results).text().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Error).text().null())
                    .col(ColumnDef::new(CatalogRefreshJobs::Actor).string().not_null())
                    .col(ColumnDef::new(CatalogRefreshJobs::StartedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(CatalogRefreshJobs::FinishedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(CatalogRefreshJobs::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogRefreshJobs::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(CatalogSourceRevisions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(CatalogRefreshStatus::Table).to_owned()).await
    }
}
