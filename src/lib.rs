//! catalog-bff: a GraphQL backend-for-frontend for catalog source management.

pub mod catalog;
pub mod db;
pub mod graphql;
pub mod http;
pub mod config;
pub mod example;
pub mod server;
