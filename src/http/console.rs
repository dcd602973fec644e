//! The operator console at `/`: our own HTML, CSS and JavaScript (no framework, no build step),
//! embedded in the binary so the console works with no internet access and no files beside the
//! binary. `/` is the page, `/console/<file>` its assets, and `/console/operations.json` every
//! `ui-contract/*.graphql` file by name: the console sends only those documents (a file's whole
//! text with the `operationName` it wants), so it keeps working with `--trusted-documents
//! ui-contract`, where each file is one trusted document.
//!
//! Responses carry `Cache-Control: no-cache` and a strong ETag (a browser revalidates and gets a
//! 304 when the binary did not change), and the console's Content-Security-Policy, so the page
//! runs under the policy it is written for (no inline script or style, no eval, own origin only).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::{LazyLock, OnceLock};

use super::AppState;

/// The policy the console is written for: everything from the server's own origin, nothing
/// inline (not even styles, which GraphiQL's policy in `pages::CSP` has to allow), no frames.
/// It replaces the pages' policy on the console's responses; the other page headers
/// (`nosniff`, `Referrer-Policy`, `X-Frame-Options`) come from the layer in `pages::router()`.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The console's static files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../web/console/index.html")),
    ("console.css", "text/css; charset=utf-8", include_str!("../../web/console/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../web/console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../web/console/api.js")),
    ("ws.js", "text/javascript; charset=utf-8", include_str!("../../web/console/ws.js")),
    ("util.js", "text/javascript; charset=utf-8", include_str!("../../web/console/util.js")),
    ("webhooks.html", "text/html; charset=utf-8", include_str!("../../web/console/webhooks.html")),
    ("webhooks.js", "text/javascript; charset=utf-8", include_str!("../../web/console/webhooks.js")),
];

/// Every `ui-contract/*.graphql` file (a test below fails when the directory holds one this
/// list lacks, so a new screen's operations cannot be forgotten here).
const OPERATIONS: &[(&str, &str)] = &[
    ("console.graphql", include_str!("../../ui-contract/console.graphql")),
    ("refresh-rollback.graphql", include_str!("../../ui-contract/refresh-rollback.graphql")),
    ("save-source.graphql", include_str!("../../ui-contract/save-source.graphql")),
    ("source-details.graphql", include_str!("../../ui-contract/source-details.graphql")),
    ("sources-table.graphql", include_str!("../../ui-contract/sources-table.graphql")),
    ("webhooks.graphql", include_str!("../../ui-contract/webhooks.graphql")),
];

/// `{ "<file>": "<text>", ... }`, built once.
fn operations_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let map: serde_json::Map<String, serde_json::Value> =
            OPERATIONS.iter().map(|(name, text)| (name.to_string(), serde_json::Value::from(*text))).collect();
        serde_json::Value::Object(map).to_string()
    })
}

/// Each file's ETag, hashed once (the files are fixed at build time).
static ASSET_TAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|(_, _, b)| etag(b.as_bytes())).collect());
static OPERATIONS_TAG: LazyLock<String> = LazyLock::new(|| etag(operations_json().as_bytes()));

/// A strong ETag from the bytes.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn serve(headers: &HeaderMap, content_type: &'static str, body: &'static str, tag: &str) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { body.into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

async fn index(headers: HeaderMap) -> Response {
    asset(&headers, "index.html")
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    if name == "operations.json" {
        return serve(&headers, "application/json", operations_json(), &OPERATIONS_TAG);
    }
    asset(&headers, &name)
}

fn asset(headers: &HeaderMap, name: &str) -> Response {
    match ASSETS.iter().position(|(n, _, _)| *n == name) {
        Some(i) => {
            let (_, content_type, body) = ASSETS[i];
            serve(headers, content_type, body, &ASSET_TAGS[i])
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no console file {name:?}; the console's files are {}", names()),
        )
            .into_response(),
    }
}

fn names() -> String {
    ASSETS.iter().map(|(n, _, _)| *n).chain(["operations.json"]).collect::<Vec<_>>().join(", ")
}

/// The console's routes: `/` and `/console/<file>`.
pub fn router() -> Router<AppState> {
    Router::new().route("/", get(index)).route("/console/{file}", get(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ui_contract_file_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".graphql"))
            .collect();
        on_disk.sort();
        let served: Vec<String> = OPERATIONS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(served, on_disk, "add the new ui-contract file to OPERATIONS in src/http/console.rs");
    }

    #[test]
    fn etags_differ_by_content() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b"a"), etag(b"a"));
    }
}
