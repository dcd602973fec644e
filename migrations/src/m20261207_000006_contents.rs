//! What every replica serves, decided once: `catalog_contents` keeps catalog texts by sha256
//! (url bodies always, so a restart with the host down serves the last good entities; on
//! PostgreSQL yaml texts too, so a replica loads exactly what another one decided), and
//! `catalog_refresh_status` names, per source, the content its entities come from
//! (`content_hash`), the one before (`previous_hash`) and the url's `etag`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogContents {
    Table,
    Sha256,
    Body,
    Bytes,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CatalogRefreshStatus {
    Table,
    ContentHash,
    PreviousHash,
    Etag,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogContents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CatalogContents::Sha256).string().not_null().primary_key())
                    .col(ColumnDef::new(CatalogContents::Body).text().not_null())
                    .col(ColumnDef::new(CatalogContents::Bytes).big_integer().not_null())
                    .col(ColumnDef::new(CatalogContents::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for col in [CatalogRefreshStatus::ContentHash, CatalogRefreshStatus::PreviousHash, CatalogRefreshStatus::Etag] {
            manager
                .alter_table(
                    Table::alter()
                        .table(CatalogRefreshStatus::Table)
                        .add_column(ColumnDef::new(col).string().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogContents::Table).to_owned()).await
    }
}
