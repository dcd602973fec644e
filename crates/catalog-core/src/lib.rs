//! The catalog core: sources, plugins, validation, the config stores (file, ConfigMaps),
//! refresh, revisions, the database and the replicas' change feed.
//!
//! It knows nothing about GraphQL or HTTP (an architecture invariant; see ARCHITECTURE.md):
//! this crate's Cargo.toml has no axum, tower or async-graphql, so breaking the rule is a
//! compile error.

// Diagnostics are deliberately rich (file, line, column, field, suggestion, hint) and only built
// on error paths, so their size in `Result::Err` does not matter.
#![allow(clippy::result_large_err)]

pub mod allocator;
pub mod db;
pub mod diagnostics;
pub mod events;
pub mod fetch;
pub mod jobs;
pub mod outbound;
pub mod paths;
pub mod plugins;
pub mod redact;
pub mod refresh;
pub mod service;
pub mod snapshot_cache;
pub mod sources;
pub mod store;
pub mod tls;
pub mod validate;
pub mod yaml;
