//! The one error taxonomy of the catalog core; the GraphQL layer maps it in one place.

use crate::db::DbError;
use crate::diagnostics::ValidationReport;
use crate::refresh::Impact;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("validation failed:\n{}", .0.summary())]
    Validation(ValidationReport),
    #[error("{0}")]
    NotFound(String),
    #[error("revision conflict: expected revision {expected}, but the current revision is {current}; reload and retry")]
    Conflict { expected: i32, current: i32 },
    #[error(
        "this change would remove {} of {} entities; set confirmRemovals to proceed",
        .0.to_remove, .0.current_count
    )]
    RemovalsNeedConfirmation(Impact),
    /// A dependency (the database) is down; the caller may retry after the given seconds.
    #[error("{message}; retry in {retry_after_secs} s")]
    Unavailable { message: String, retry_after_secs: u32 },
    /// A caller that proved nothing (a hook whose signature does not verify).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for CatalogError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(_) => {
                CatalogError::Unavailable { message: "the database is unavailable".into(), retry_after_secs: 5 }
            }
            other => CatalogError::Internal(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;
