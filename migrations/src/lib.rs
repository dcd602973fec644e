//! Database migrations for catalog-bff. They run on every start, on SQLite and PostgreSQL alike.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_initial;
mod m20261124_000002_audit;
mod m20261201_000003_cluster;
mod m20261207_000004_queued_reason;
mod m20261207_000005_change_key;
mod m20261207_000006_contents;
mod m20261208_000007_schedule;
mod m20261208_000008_webhooks;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_initial::Migration),
            Box::new(m20261124_000002_audit::Migration),
            Box::new(m20261201_000003_cluster::Migration),
            Box::new(m20261207_000004_queued_reason::Migration),
            Box::new(m20261207_000005_change_key::Migration),
            Box::new(m20261207_000006_contents::Migration),
            Box::new(m20261208_000007_schedule::Migration),
            Box::new(m20261208_000008_webhooks::Migration),
        ]
    }
}
