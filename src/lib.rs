//! catalog-bff: a GraphQL backend-for-frontend for catalog source management.

// Diagnostics are deliberately rich (file, line, column, field, suggestion, hint) and only built
// on error paths, so their size in `Result::Err` does not matter.
#![expect(
    clippy::result_large_err,
    reason = "diagnostics are rich (file, position, field, suggestion, hint) and only built on error paths"
)]

pub mod auth;
pub mod cache;
pub mod config;
pub mod example;
pub mod graphql;
pub mod http;
pub mod k8s;
pub mod logging;
pub mod server;
