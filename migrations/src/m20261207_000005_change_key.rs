//! The change feed's idempotency key: `change_key` on `catalog_changes`, unique. A publisher
//! that retries an insert whose first attempt did commit (its answer was lost) finds the row
//! by its key instead of recording the change twice. Null for rows written before it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogChanges {
    Table,
    ChangeKey,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CatalogChanges::Table)
                    .add_column(ColumnDef::new(CatalogChanges::ChangeKey).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("catalog_changes_change_key")
                    .table(CatalogChanges::Table)
                    .col(CatalogChanges::ChangeKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("catalog_changes_change_key").table(CatalogChanges::Table).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(CatalogChanges::Table).drop_column(CatalogChanges::ChangeKey).to_owned())
            .await
    }
}
