//! The one place where core errors become GraphQL errors with `extensions.code`.

use async_graphql::{Error, ErrorExtensions};
use serde_json::json;

use crate::catalog::service::CatalogError;

pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const CONFLICT: &str = "CONFLICT";
pub const REMOVALS_NEED_CONFIRMATION: &str = "REMOVALS_NEED_CONFIRMATION";
pub const UNAVAILABLE: &str = "UNAVAILABLE";
pub const INTERNAL: &str = "INTERNAL";

fn to_value(v: serde_json::Value) -> async_graphql::Value {
    async_graphql::Value::from_json(v).unwrap_or(async_graphql::Value::Null)
}

pub fn to_graphql(err: CatalogError) -> Error {
    let message = err.to_string();
    match err {
        CatalogError::Validation(report) => {
            let diags: Vec<_> = report.errors().cloned().collect();
            let warnings: Vec<_> = report.warnings().cloned().collect();
            Error::new(message).extend_with(|_, e| {
                e.set("code", VALIDATION_FAILED);
                e.set("diagnostics", to_value(json!(diags)));
                e.set("warnings", to_value(json!(warnings)));
            })
        }
        CatalogError::NotFound(_) => Error::new(message).extend_with(|_, e| e.set("code", NOT_FOUND)),
        CatalogError::Conflict { expected, current } => Error::new(message).extend_with(|_, e| {
            e.set("code", CONFLICT);
            e.set("currentRevision", current);
            e.set("expectedRevision", expected);
        }),
        CatalogError::RemovalsNeedConfirmation(impact) => Error::new(message).extend_with(|_, e| {
            e.set("code", REMOVALS_NEED_CONFIRMATION);
            e.set("impact", to_value(json!(impact)));
        }),
        CatalogError::Unavailable { retry_after_secs, .. } => Error::new(message).extend_with(move |_, e| {
            e.set("code", UNAVAILABLE);
            e.set("retryAfter", retry_after_secs);
        }),
        CatalogError::Internal(_) => {
            tracing::error!(error = %message, "internal error");
            Error::new(message).extend_with(|_, e| e.set("code", INTERNAL))
        }
    }
}

pub fn not_found(message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", NOT_FOUND))
}

pub fn invalid_input(message: impl Into<String>, field: &str, hint: &str) -> Error {
    let message = message.into();
    let field = field.to_string();
    let hint = hint.to_string();
    Error::new(message.clone()).extend_with(move |_, e| {
        e.set("code", VALIDATION_FAILED);
        e.set(
            "diagnostics",
            to_value(
                json!([{"layer": "FIELDS", "severity": "ERROR", "message": message, "field": field, "hint": hint}]),
            ),
        );
    })
}
