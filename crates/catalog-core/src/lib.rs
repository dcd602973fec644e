//! The catalog core: sources, plugins, validation, the config stores (file, ConfigMaps),
//! refresh, revisions, the database and the replicas' change feed.
//!
//! This file is the whole API: every module is private, and what the server (and the tests)
//! may use is re-exported below, grouped by what it is for. The core knows nothing about
//! GraphQL or HTTP (its Cargo.toml has no axum, tower or async-graphql), and it is the only
//! crate that talks to the database (the server has no sea-orm or sqlx): breaking either rule
//! is a compile error. See ARCHITECTURE.md for the map.

// Diagnostics are deliberately rich (file, line, column, field, suggestion, hint) and only built
// on error paths, so their size in `Result::Err` does not matter.
#![expect(
    clippy::result_large_err,
    reason = "diagnostics are rich (file, position, field, suggestion, hint) and only built on error paths"
)]

mod allocator;
mod db;
mod diagnostics;
mod events;
mod fetch;
mod hooks;
mod jobs;
mod outbound;
mod paths;
mod plugins;
mod redact;
mod refresh;
mod schedule;
mod service;
mod sources;
mod store;
mod tls;
mod validate;
mod webhooks;
mod yaml;

// ---- The service, its options and its one error type ------------------------------------------
pub use service::{Catalog, CatalogError, CatalogOptions, ClusterOptions, Result, default_replica_id};

// ---- Requests into it -------------------------------------------------------------------------
pub use hooks::HookSignature;
pub use service::{ApplyOptions, EntityCursor, HookOutcome, HookRequest, RefreshRequest};
pub use validate::{Checked, SourceDraft, SourcePatch, check as validate_source, json_to_yaml};

// ---- What it hands out: views, entities, diagnostics, jobs, events ----------------------------
pub use diagnostics::{Diagnostic, Layer, LayerReport, Severity, ValidationReport};
pub use events::{CatalogEvent, EventKind};
pub use jobs::{JobPhase, RefreshJob};
/// The entity types of each plugin's catalog format.
pub use plugins::{Entity, PluginKind, mcp, models};
pub use refresh::{DURATION_BUCKETS, Impact, RefreshMode, RefreshResult, RefreshStatus};
pub use service::{
    ApplyOutcome, AuditRow, EntityPage, HistoryPage, PluginView, ReadyCheck, RevisionAction, RevisionView, SourceState,
    SourceStatus, SourceView,
};

// ---- The audit trail's records (written and read through `Catalog`) ----------------------------
pub use db::NewAudit;

// ---- Sources, and helpers the API layer shares with the core ----------------------------------
pub use redact::redact_json;
pub use schedule::{SchedulePolicy, parse_duration, parse_interval as parse_refresh_interval};
pub use sources::{Dialect, SourceEntry, SourcesFile, valid_id};

// ---- Setting it up (the server's start-up) ----------------------------------------------------
pub use db::Db;
pub use fetch::{FetchConfig, KubeSecrets};
pub use outbound::UrlAllow;
pub use paths::Reserved;
pub use store::atomic::write_atomic;
pub use store::{ConfigStore, file::FileStore, kubernetes::KubeStore};
pub use yaml::{limits as yaml_limits, set_limits as set_yaml_limits};

// ---- Process-wide plumbing ----------------------------------------------------------------------
pub use allocator::{on_park, released as memory_released};
pub use tls::install_crypto_provider;

// ---- Outgoing webhooks (registered and listed through `Catalog`) --------------------------------
pub use webhooks::{
    DeliveryPage, DeliveryState, MAX_DELIVERIES_PAGE, MAX_WEBHOOKS, SECRET_PREFIX, Webhook, WebhookDelivery,
    WebhookOptions, WebhookSpec, WebhookStats, secret_key as webhook_secret_key, signature as webhook_signature,
};
