//! The audit trail.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogAudit {
    Table,
    Id,
    Actor,
    Action,
    Plugin,
    SourceId,
    Revision,
    Outcome,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogAudit::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(CatalogAudit::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(CatalogAudit::Actor).string().not_null())
                    .col(ColumnDef::new(CatalogAudit::Action).string().not_null())
                    .col(ColumnDef::new(CatalogAudit::Plugin).string().not_null())
                    .col(ColumnDef::new(CatalogAudit::SourceId).string().null())
                    .col(ColumnDef::new(CatalogAudit::Revision).integer().null())
                    .col(ColumnDef::new(CatalogAudit::Outcome).string().not_null())
                    .col(ColumnDef::new(CatalogAudit::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogAudit::Table).to_owned()).await
    }
}
