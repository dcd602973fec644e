//! catalog-bff: a GraphQL backend-for-frontend for catalog source management.

pub mod catalog;
pub mod db;
