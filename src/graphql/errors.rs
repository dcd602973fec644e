//! The one place where core errors and argument mistakes become GraphQL errors with
//! `extensions.code`.
//!
//! The taxonomy: a client mistake is `VALIDATION_FAILED` (or `NOT_FOUND`) and says which
//! argument and what is allowed; `INTERNAL` is only for our own faults, and its message is
//! generic (the full text, which may hold absolute paths, goes to the server log once). The
//! argument checks below run before any resolver touches the core, so a refused argument
//! changes nothing.

use async_graphql::{Error, ErrorExtensions};
use catalog_api::ErrorCode;
use serde_json::json;

use catalog_core::CatalogError;

pub const VALIDATION_FAILED: &str = ErrorCode::ValidationFailed.as_str();
pub const NOT_FOUND: &str = ErrorCode::NotFound.as_str();
pub const CONFLICT: &str = ErrorCode::Conflict.as_str();
pub const REMOVALS_NEED_CONFIRMATION: &str = ErrorCode::RemovalsNeedConfirmation.as_str();
pub const UNAVAILABLE: &str = ErrorCode::Unavailable.as_str();
pub const INTERNAL: &str = ErrorCode::Internal.as_str();

fn to_value(v: serde_json::Value) -> async_graphql::Value {
    async_graphql::Value::from_json(v).unwrap_or(async_graphql::Value::Null)
}

/// The code of an error's `extensions.code`, typed: `None` when it has none, or a word not in
/// the list (only ever set by this server, so that would be a bug).
pub fn code_of(extensions: Option<&async_graphql::ErrorExtensionValues>) -> Option<ErrorCode> {
    match extensions?.get("code")? {
        async_graphql::Value::String(s) => ErrorCode::parse(s),
        async_graphql::Value::Enum(name) => ErrorCode::parse(name.as_str()),
        _ => None,
    }
}

/// The `extensions.code` a core error is answered with (see [`to_graphql`]).
pub fn code_of_catalog(err: &CatalogError) -> ErrorCode {
    match err {
        CatalogError::Validation(_) => ErrorCode::ValidationFailed,
        CatalogError::NotFound(_) => ErrorCode::NotFound,
        CatalogError::Conflict { .. } => ErrorCode::Conflict,
        CatalogError::RemovalsNeedConfirmation(_) => ErrorCode::RemovalsNeedConfirmation,
        CatalogError::Unavailable { .. } => ErrorCode::Unavailable,
        CatalogError::Unauthenticated(_) => ErrorCode::Unauthenticated,
        CatalogError::Internal(_) => ErrorCode::Internal,
    }
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
        CatalogError::Unauthenticated(_) => {
            Error::new(message).extend_with(|_, e| e.set("code", ErrorCode::Unauthenticated.as_str()))
        }
        CatalogError::Internal(_) => internal(&message),
    }
}

/// The client-facing text of every `INTERNAL` error: the details (paths, OS errors) are ours,
/// and the request id that the HTTP layer adds to the error leads to them in the log.
pub const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// Logs `detail` once and returns the generic `INTERNAL` error.
pub fn internal(detail: &str) -> Error {
    tracing::error!(error = %detail, "internal error");
    Error::new(INTERNAL_MESSAGE).extend_with(|_, e| e.set("code", INTERNAL))
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
        e.set("field", field.as_str());
        e.set(
            "diagnostics",
            to_value(
                json!([{"layer": "FIELDS", "severity": "ERROR", "message": message, "field": field, "hint": hint}]),
            ),
        );
    })
}

// ---- argument checks ---------------------------------------------------------------------------

/// Longest source id accepted (a DNS label-ish bound: ids become file and ConfigMap key names).
pub const MAX_ID_LEN: usize = 253;
/// Longest refresh job id accepted (ours are UUIDs).
pub const MAX_JOB_ID_LEN: usize = 128;
/// Longest `search` text accepted by `entities`.
pub const MAX_SEARCH_LEN: usize = 256;
/// Deepest nesting accepted in `properties` JSON (real properties are one or two levels deep).
pub const MAX_PROPERTIES_DEPTH: usize = 32;
/// Longest plugin name worth looking up (longer ones are refused without being echoed).
const MAX_PLUGIN_LEN: usize = 64;

const ID_HINT: &str = "ids match ^[a-z0-9][a-z0-9_-]*$ (lowercase letters, digits, '_' and '-', starting with a letter or digit), at most 253 characters";

/// A source id argument (`id`, `sourceId`, `input.id`), checked once for every resolver: the
/// pattern and a length cap, before the id can reach a file name, a query or a message.
pub fn source_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Error> {
    if id.len() > MAX_ID_LEN {
        return Err(invalid_input(
            format!("`{field}` is {} characters long; a source id has at most {MAX_ID_LEN}", id.len()),
            field,
            ID_HINT,
        ));
    }
    if !catalog_core::valid_id(id) {
        return Err(invalid_input(format!("`{field}` is not a valid source id: `{id}`; {ID_HINT}"), field, ID_HINT));
    }
    Ok(id)
}

/// A refresh job id argument: only a length cap (an unknown id is simply not found).
pub fn job_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Error> {
    if id.len() > MAX_JOB_ID_LEN {
        return Err(invalid_input(
            format!("`{field}` is {} characters long; a refresh job id has at most {MAX_JOB_ID_LEN}", id.len()),
            field,
            "pass the `id` of a RefreshJob returned by refreshSource or refreshPlugin",
        ));
    }
    Ok(id)
}

/// A plugin argument: `NOT_FOUND` with the list of plugins for a name this server does not
/// have (the lookup is `graphql::plugin`); a name too long to be one is refused without
/// echoing it.
pub fn plugin(field: &str, name: &str) -> Result<catalog_core::PluginKind, Error> {
    use catalog_core::PluginKind;
    if name.len() > MAX_PLUGIN_LEN {
        let known: Vec<&str> = PluginKind::ALL.iter().map(|p| p.name()).collect();
        return Err(invalid_input(
            format!("`{field}` is {} characters long; known plugins: {}", name.len(), known.join(", ")),
            field,
            "pass one of the plugin names listed by the `plugins` query",
        ));
    }
    super::plugin(name)
}

/// An integer argument that must lie in `min..=max`; the message names the field and range.
pub fn in_range(field: &str, value: i32, min: i32, max: i32) -> Result<i32, Error> {
    if (min..=max).contains(&value) {
        return Ok(value);
    }
    Err(invalid_input(
        format!("`{field}` must be between {min} and {max}; got {value}"),
        field,
        &format!("pass a value from {min} to {max}"),
    ))
}

/// A revision number argument (`revision`, `options.expectedRevision`): revisions start at 1.
pub fn revision(field: &str, value: i32) -> Result<i32, Error> {
    if value >= 1 {
        return Ok(value);
    }
    Err(invalid_input(
        format!("`{field}` must be 1 or more (revisions start at 1); got {value}"),
        field,
        "pass a `revision` as returned by the `source` query, or leave the option out",
    ))
}

/// How deep a JSON value nests (a scalar is 0, `{}` is 1), without recursion.
pub fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                deepest = deepest.max(depth + 1);
                stack.extend(m.values().map(|c| (c, depth + 1)));
            }
            serde_json::Value::Array(a) => {
                deepest = deepest.max(depth + 1);
                stack.extend(a.iter().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": 2}]})), 3);
    }

    #[test]
    fn source_ids_are_checked_for_pattern_and_length() {
        assert!(source_id("id", "team_models").is_ok());
        assert!(source_id("id", "Bad/Id").is_err());
        assert!(source_id("id", &"a".repeat(MAX_ID_LEN)).is_ok());
        let long = "a".repeat(10_000);
        let err = source_id("id", &long).unwrap_err();
        assert!(err.message.len() < 200, "the id is not echoed: {}", err.message);
    }
}
