//! The checked-in SDL matches the code, and every UI operation in `ui-contract/` validates and
//! runs against a real server.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use support::*;

#[test]
fn checked_in_schema_matches_the_code() {
    let out = std::process::Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/schema.graphql");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "schema/schema.graphql is stale: run `cargo run -- schema > schema/schema.graphql`"
    );
    // The contract names other teams' tests rely on, looked up in the SDL without its
    // descriptions and with each argument list on one line (arguments with descriptions are
    // printed one per line).
    let generated = without_descriptions(&generated);
    for name in [
        "plugins: [Plugin!]!",
        "sources(plugin: String): [Source!]!",
        "source(plugin: String!, id: ID!): Source",
        "refreshJob(id: ID!): RefreshJob",
        "validateSource(plugin: String!, input: SourceInput!): ValidationReport!",
        "applySource(plugin: String!, input: SourceInput!, options: ApplyOptions): ApplyResult!",
        "rollbackSource(plugin: String!, id: ID!, revision: Int!, options: ApplyOptions): ApplyResult!",
        "interface CatalogEntity",
        "PARTIALLY_AVAILABLE",
        "lastRefreshSummary",
        "entitiesUnchanged",
    ] {
        assert!(generated.contains(name), "schema lost `{name}`");
    }
}

/// The SDL with every description (`"""..."""` and `"..."`) removed and whitespace inside
/// argument lists collapsed, so `f(\n  a: Int,\n  b: Int\n): T` reads `f(a: Int, b: Int): T`.
fn without_descriptions(sdl: &str) -> String {
    let mut out = String::new();
    let mut rest = sdl;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("\"\"\"") {
            let end = after.find("\"\"\"").expect("closed block string");
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').expect("closed string");
            rest = &after[end + 1..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let mut joined = String::new();
    let mut depth = 0;
    let mut space = false;
    for c in out.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth > 0 && c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !joined.ends_with('(') && c != ')' {
            joined.push(' ');
        }
        space = false;
        joined.push(c);
    }
    joined
}

fn operations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("query ").or_else(|| l.strip_prefix("mutation ")))
        .map(|rest| rest.split(['(', ' ', '{']).next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ui_operation_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A signing secret for the Webhooks page's CreateWebhook (read from the env, as any secret).
    let secret = [("CATALOG_BFF_SECRET_UI_CONTRACT_SIGNING", "whsec_dWktY29udHJhY3Qgc2lnbmluZyBrZXkgMzIgYnl0ZXM=")];
    let server = TestServer::new(dir.path()).envs(&secret).start().await;
    let content = std::fs::read_to_string(dir.path().join("team-models.yaml")).unwrap();
    // DeleteWebhook removes the receiver CreateWebhook made.
    let created = std::sync::Mutex::new(String::new());
    let input = json!({"id": "team_models", "content": content, "labels": ["Team", "Edited"]});
    let started_job = std::sync::Mutex::new(String::new());
    let vars = |op: &str| -> Value {
        match op {
            "SourcesTable" => json!({"plugin": "models"}),
            "SourceDetails" => json!({"plugin": "models", "id": "team_models", "first": 2}),
            "ValidateSource" | "PreviewSource" | "SaveSource" => json!({"plugin": "models", "input": input}),
            "RefreshSource" => json!({"plugin": "models", "id": "team_models"}),
            "RefreshPlugin" => json!({"plugin": "mcp", "mode": "INCREMENTAL"}),
            "RollbackSource" => json!({"plugin": "models", "id": "team_models", "revision": 1}),
            "RefreshJob" => json!({"id": "00000000-0000-0000-0000-000000000000"}),
            "Viewer" => json!({}),
            "SourceHistory" => json!({"plugin": "models", "id": "team_models"}),
            "StartRefreshSource" => json!({"plugin": "models", "id": "partner_models"}),
            "StartRefreshPlugin" => json!({"plugin": "mcp"}),
            // The console's Refresh all over every plugin, and its Jobs panel.
            "StartRefreshAll" => json!({"mode": "INCREMENTAL"}),
            "RefreshJobs" => json!({"first": 20}),
            "RollbackSourceChecked" => json!({"plugin": "models", "id": "team_models", "revision": 1}),
            "SuspendSource" | "ResumeSource" => json!({"plugin": "models", "id": "partner_models"}),
            // The job StartRefreshPlugin (same file, just before) started.
            "CancelRefreshJob" => json!({"id": started_job.lock().unwrap().clone()}),
            "Webhooks" => json!({}),
            "CreateWebhook" => json!({"input": {"url": "https://hooks.example.com/catalog", "events": ["APPLIED"],
                "secretRef": {"name": "ui-contract", "key": "signing"}}}),
            // No delivery exists: NOT_FOUND (checked below) proves the document runs.
            "RedeliverWebhook" => json!({"deliveryId": "0"}),
            "DeleteWebhook" => json!({"id": created.lock().unwrap().clone()}),
            other => panic!("no variables for {other}: add them here"),
        }
    };
    let dir_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    let mut ran = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir_path).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "graphql")) {
        let text = std::fs::read_to_string(file).unwrap();
        for op in operations(&text) {
            let body = server.gql_op(&text, &op, vars(&op)).await;
            if op == "StartRefreshPlugin" {
                *started_job.lock().unwrap() =
                    body["data"]["refreshPlugin"]["id"].as_str().unwrap_or_default().to_string();
            }
            if op == "CancelRefreshJob" && error_code(&body).as_deref() == Some("VALIDATION_FAILED") {
                // The mcp refresh may have ended before the cancel: the document still validated
                // and ran against the schema (the server answers a finished job this way).
                let msg = body["errors"][0]["message"].as_str().unwrap_or_default();
                assert!(msg.contains("already ended"), "{op}: {body:#}");
                ran += 1;
                continue;
            }
            if op == "RedeliverWebhook" {
                assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{op}: {body:#}");
                ran += 1;
                continue;
            }
            assert!(body.get("errors").is_none(), "{}: {op} failed: {body:#}", file.display());
            if op == "CreateWebhook" {
                *created.lock().unwrap() = body["data"]["createWebhook"]["id"].as_str().unwrap().to_string();
            }
            assert!(body["data"].is_object(), "{op}: {body:#}");
            ran += 1;
        }
    }
    assert_eq!(ran, 23, "expected 23 UI operations");
}

/// The rules "the core knows no HTTP or GraphQL" and "only the core talks to the database" are
/// compile errors now (the core is its own crate and the server reaches it through its API);
/// what keeps them so is the manifests: the core may not depend on the API layers' crates, and
/// the server may not depend on the database crates.
#[test]
fn the_core_depends_on_no_api_layer_and_only_the_core_on_the_database() {
    fn dependencies(manifest: &str) -> Vec<String> {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest)).unwrap();
        let mut names = Vec::new();
        let mut in_deps = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_deps = line == "[dependencies]";
            } else if in_deps
                && !line.starts_with('#')
                && let Some((name, _)) = line.split_once('=')
            {
                names.push(name.trim().to_string());
            }
        }
        assert!(!names.is_empty(), "{manifest}: no [dependencies] found");
        names
    }
    let core = dependencies("crates/catalog-core/Cargo.toml");
    for forbidden in
        ["axum", "async-graphql", "async-graphql-axum", "tower", "tower-http", "hyper", "hyper-util", "catalog-bff"]
    {
        assert!(
            !core.contains(&forbidden.to_string()),
            "catalog-core depends on {forbidden}: the core must stay free of the API layers"
        );
    }
    let server = dependencies("Cargo.toml");
    for forbidden in ["sea-orm", "sqlx", "migration"] {
        assert!(
            !server.contains(&forbidden.to_string()),
            "the server depends on {forbidden}: only the core talks to the database"
        );
    }
    assert!(server.contains(&"catalog-core".to_string()));
}
