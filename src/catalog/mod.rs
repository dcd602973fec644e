//! The catalog core: sources, plugins, validation, the file store, refresh, revisions.
//! It knows nothing about GraphQL or HTTP (an architecture invariant; see ARCHITECTURE.md).

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
pub mod validate;
pub mod yaml;
