//! Outgoing webhooks: the receivers operators register (`catalog_webhooks`) and the queue of
//! deliveries to them (`catalog_webhook_deliveries`), one row per (receiver, event), claimed by
//! one replica at a time under a lease and kept with the outcome of its last attempt.
//!
//! Times the delivery loop compares are Unix milliseconds (BIGINT): the same comparison on
//! SQLite and PostgreSQL, with no text-encoded timestamps to order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CatalogWebhooks {
    Table,
    Id,
    Url,
    Events,
    Plugins,
    SecretName,
    SecretKey,
    CreatedBy,
    CreatedMs,
    UpdatedMs,
}

#[derive(DeriveIden)]
enum CatalogWebhookDeliveries {
    Table,
    Id,
    WebhookId,
    MsgId,
    EventKey,
    EventType,
    Plugin,
    SourceId,
    Payload,
    State,
    Attempts,
    NextAttemptMs,
    CreatedMs,
    GiveUpMs,
    LeaseOwner,
    LeaseUntilMs,
    LastStatus,
    LastDurationMs,
    LastError,
    ResponseExcerpt,
    LastAttemptMs,
    DeliveredMs,
    RedeliveryOf,
    UpdatedMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use CatalogWebhookDeliveries as D;
        use CatalogWebhooks as W;
        manager
            .create_table(
                Table::create()
                    .table(W::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(W::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(W::Url).text().not_null())
                    // Comma-separated event kinds (APPLIED,REFRESH_FINISHED).
                    .col(ColumnDef::new(W::Events).string().not_null())
                    // Comma-separated plugin names; NULL: every plugin.
                    .col(ColumnDef::new(W::Plugins).string().null())
                    .col(ColumnDef::new(W::SecretName).string().not_null())
                    .col(ColumnDef::new(W::SecretKey).string().not_null())
                    .col(ColumnDef::new(W::CreatedBy).string().not_null())
                    .col(ColumnDef::new(W::CreatedMs).big_integer().not_null())
                    .col(ColumnDef::new(W::UpdatedMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(D::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(D::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(D::WebhookId).string().not_null())
                    // The `webhook-id` header: the same on every attempt and on a redelivery.
                    .col(ColumnDef::new(D::MsgId).string().not_null())
                    // Idempotency: one delivery per (receiver, event), however often the event
                    // is enqueued.
                    .col(ColumnDef::new(D::EventKey).string().not_null())
                    .col(ColumnDef::new(D::EventType).string().not_null())
                    .col(ColumnDef::new(D::Plugin).string().not_null())
                    .col(ColumnDef::new(D::SourceId).string().null())
                    .col(ColumnDef::new(D::Payload).text().not_null())
                    // PENDING | DELIVERED | FAILED
                    .col(ColumnDef::new(D::State).string().not_null())
                    .col(ColumnDef::new(D::Attempts).integer().not_null())
                    .col(ColumnDef::new(D::NextAttemptMs).big_integer().not_null())
                    .col(ColumnDef::new(D::CreatedMs).big_integer().not_null())
                    .col(ColumnDef::new(D::GiveUpMs).big_integer().not_null())
                    .col(ColumnDef::new(D::LeaseOwner).string().null())
                    .col(ColumnDef::new(D::LeaseUntilMs).big_integer().null())
                    .col(ColumnDef::new(D::LastStatus).integer().null())
                    .col(ColumnDef::new(D::LastDurationMs).big_integer().null())
                    .col(ColumnDef::new(D::LastError).text().null())
                    .col(ColumnDef::new(D::ResponseExcerpt).text().null())
                    .col(ColumnDef::new(D::LastAttemptMs).big_integer().null())
                    .col(ColumnDef::new(D::DeliveredMs).big_integer().null())
                    .col(ColumnDef::new(D::RedeliveryOf).big_integer().null())
                    // Every write sets it: a replica sees that another one changed the queue
                    // (its response cache of the deliveries view) by `MAX(updated_ms)`.
                    .col(ColumnDef::new(D::UpdatedMs).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_event")
                    .table(D::Table)
                    .col(D::WebhookId)
                    .col(D::EventKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_due")
                    .table(D::Table)
                    .col(D::State)
                    .col(D::NextAttemptMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_updated")
                    .table(D::Table)
                    .col(D::UpdatedMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogWebhookDeliveries::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(CatalogWebhooks::Table).to_owned()).await
    }
}
