//! catalog-bff: a GraphQL backend-for-frontend for catalog source management.

pub mod catalog;
pub mod config;
pub mod db;
pub mod example;
pub mod graphql;
pub mod http;
pub mod server;
pub mod tls;
pub mod cache;
