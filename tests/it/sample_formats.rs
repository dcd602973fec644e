//! The project's own sample catalogs (`tests/data/samples/`) in every format the upstream-fixture
//! tests cover: both sources dialects, the deprecated `catalogs:` alias, unknown plugin sections,
//! both MCP formats, typed custom properties, error cases; and byte-preserving write-back in
//! both dialects. These run in every clone; the upstream files add real-world coverage when
//! `../shared` is present.

use crate::support;

use serde_json::json;
use std::path::{Path, PathBuf};
use support::*;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/samples")
}

/// Copies one sample tree into a scratch dir (the server may write) and starts on it.
async fn start_copy(tree: &str, sources: &str) -> (Server, tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    copy_dir(&samples().join(tree), work.path());
    let sources = work.path().join(sources);
    let db = database_url(Backend::Sqlite, work.path()).await;
    let server = TestServer::new(work.path()).sources(&sources).database(&db).start().await;
    (server, work, sources)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeflow_dialect_sample_loads_with_counts_states_and_errors() {
    let (server, _work, _) = start_copy("kubeflow", "sources.yaml").await;
    let st = source_states(&server).await;
    assert_eq!(st["models/fleet_models"], ("AVAILABLE".to_string(), 3));
    assert_eq!(st["models/edge_models"], ("ERROR".to_string(), 0));
    assert_eq!(st["models/retired_models"], ("DISABLED".to_string(), 0));
    assert_eq!(st["models/hub_mirror"].0, "ERROR");
    assert_eq!(st["models/shared_volume_models"], ("ERROR".to_string(), 0));
    assert_eq!(st["mcp/ops_mcp_servers"], ("AVAILABLE".to_string(), 2));
    assert_eq!(st["mcp/nosource_mcp_servers"], ("AVAILABLE".to_string(), 2));
    assert_eq!(st.len(), 7, "agent_catalogs must not become sources: {st:?}");

    // The unknown field is reported with file, line and the field name.
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "edge_models"})).await;
    let err = src["source"]["status"]["lastError"].as_str().unwrap();
    assert!(err.contains("edge-models.yaml:9") && err.contains("unknown field `servingHints`"), "{err}");
    let missing = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "shared_volume_models"})).await;
    assert!(missing["source"]["status"]["lastError"].as_str().unwrap().contains("models.yaml"));

    // Artifacts, metrics artifacts and tools are all counted.
    let job = server
        .ok("mutation { refreshSource(plugin: \"models\", id: \"fleet_models\") { results { artifactsLoaded entitiesUnchanged } } }", json!({}))
        .await;
    assert_eq!(job["refreshSource"]["results"][0]["artifactsLoaded"], 4);
    assert_eq!(job["refreshSource"]["results"][0]["entitiesUnchanged"], 3);
    let tools = server
        .ok("{ entities(plugin: \"mcp\", sourceId: \"ops_mcp_servers\") { edges { node { name ... on McpServer { toolCount securityIndicators { sast } } } } } }", json!({}))
        .await;
    let edges = tools["entities"]["edges"].as_array().unwrap();
    let total: u64 = edges.iter().map(|e| e["node"]["toolCount"].as_u64().unwrap()).sum();
    assert_eq!(total, 4);
    assert_eq!(edges[0]["node"]["securityIndicators"]["sast"], true);
    assert!(server.log_text().contains("agent_catalogs"), "no warning for the unknown section");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sectioned_dialect_sample_loads_flat_mcp_and_warns_on_unknown_sections() {
    let (server, _work, _) = start_copy("sectioned", "config/sources.yaml").await;
    let st = source_states(&server).await;
    assert_eq!(st.len(), 3, "{st:?}");
    assert_eq!(st["models/lab_models"], ("AVAILABLE".to_string(), 2));
    assert_eq!(st["models/staging_models"], ("AVAILABLE".to_string(), 1));
    assert_eq!(st["mcp/lab-mcp"], ("AVAILABLE".to_string(), 2));
    let flat = server
        .ok("{ entities(plugin: \"mcp\", search: \"notebook\") { totalCount edges { node { name ... on McpServer { format toolCount transports serverUrl } } } } }", json!({}))
        .await;
    let node = &flat["entities"]["edges"][0]["node"];
    assert_eq!(node["name"], "notebook-exec");
    assert_eq!(node["format"], "mcpservers");
    assert_eq!(node["toolCount"], 4);
    assert_eq!(node["transports"], json!(["stdio", "http"]));
    let logs = server.log_text();
    for section in ["knowledge", "prompts"] {
        assert!(logs.contains(&format!("catalogs.{section}")), "no warning for {section}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_catalogs_alias_sample_loads_with_a_deprecation_warning() {
    let (server, _work, _) = start_copy("kubeflow", "legacy-sources.yaml").await;
    let st = source_states(&server).await;
    assert_eq!(st["models/fleet_models"], ("AVAILABLE".to_string(), 3));
    assert_eq!(st["models/edge_models"].0, "ERROR");
    assert!(server.log_text().contains("deprecated name of `model_catalogs:`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_back_samples_keeps_every_other_byte_in_both_dialects() {
    // Plugin-sectioned dialect: sections of other plugins and untouched entries stay as they were.
    let (server, work, sources) = start_copy("sectioned", "config/sources.yaml").await;
    let before = std::fs::read_to_string(&sources).unwrap();
    server
        .ok(APPLY, json!({"plugin": "models", "input": {"id": "staging_models", "name": "Staging (renamed)", "labels": ["Staging"]}}))
        .await;
    server
        .ok(APPLY, json!({"plugin": "mcp", "input": {"id": "new-mcp", "content": "mcp_servers:\n  - name: fresh\n    tools: []\n"}}))
        .await;
    let after = std::fs::read_to_string(&sources).unwrap();
    let tail = |t: &str| t[t.find("  knowledge:").unwrap()..].to_string();
    assert_eq!(tail(&before), tail(&after), "sections of other plugins must not change");
    assert!(after.starts_with("apiVersion: catalog/v1alpha1\nkind: CatalogSources\n"));
    assert!(after.contains("name: Staging (renamed)"));
    let lab =
        &before[before.find("      - id: lab_models").unwrap()..before.find("      - id: staging_models").unwrap()];
    assert!(after.contains(lab));
    assert!(work.path().join("config/new-mcp-mcp.yaml").exists());
    drop(server);

    // Kubeflow dialect: comments, namedQueries and the unknown section survive; one entry changes.
    let (server, _work, sources) = start_copy("kubeflow", "sources.yaml").await;
    let before = std::fs::read_to_string(&sources).unwrap();
    server.ok(APPLY, json!({"plugin": "mcp", "input": {"id": "nosource_mcp_servers", "enabled": false}})).await;
    let after = std::fs::read_to_string(&sources).unwrap();
    let agents = &before[before.find("agent_catalogs:").unwrap()..];
    let agents_block = &agents[..agents.find("\n\n").unwrap_or(agents.len())];
    assert!(after.contains(agents_block), "agent_catalogs changed:\n{after}");
    assert!(after.contains("# namedQueries: reusable filter presets, kept as they are."));
    assert_eq!(source_states(&server).await["mcp/nosource_mcp_servers"].0, "DISABLED");
    // Only the one entry's lines changed: everything before and after it is byte-identical.
    let start = before.find("  - name: \"Unlabelled MCP Servers\"").unwrap();
    let end = before.find("\n\n# A section for a plugin").unwrap();
    assert_eq!(&after[..start], &before[..start]);
    assert!(after.ends_with(&before[end..]), "bytes after the entry changed:\n{after}");
    assert!(after[start..after.len() - (before.len() - end)].contains("enabled: false"));
}
