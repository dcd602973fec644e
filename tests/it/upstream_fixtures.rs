//! The real upstream files in `../shared/fixtures/upstream` load with upstream's counts and
//! states, and writing back keeps what we don't own byte-for-byte. Without the fixtures each test
//! prints `SKIPPED <name>` and returns; `sample_formats.rs` covers the same formats on our own data.

use crate::support;

use serde_json::json;
use std::collections::BTreeMap;
use support::*;

async fn start_on(sources: &std::path::Path, dir: &std::path::Path) -> Server {
    let db = database_url(Backend::Sqlite, dir).await;
    TestServer::new(dir).sources(sources).database(&db).start().await
}

fn expect(pairs: &[(&str, &str, u64)]) -> BTreeMap<String, (String, u64)> {
    pairs.iter().map(|(k, s, n)| (k.to_string(), (s.to_string(), *n))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeflow_demo_and_kf_reg_load_with_upstream_counts() {
    let Some(fx) = upstream_fixtures("kubeflow_demo_and_kf_reg_load_with_upstream_counts") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("kubeflow/demo/dev-sources.yaml"), dir.path()).await;
    assert_eq!(
        source_states(&server).await,
        expect(&[
            ("models/organization_ai_models", "AVAILABLE", 6),
            ("models/validated_ai_models", "AVAILABLE", 5),
            ("models/community_custom_models", "AVAILABLE", 5),
            ("mcp/organization_mcp_servers", "AVAILABLE", 5),
            ("mcp/community_mcp_servers", "AVAILABLE", 4),
        ])
    );
    // 31 of the validated catalog's 36 artifacts are metrics artifacts; all 36 load.
    let job = server
        .ok("mutation { refreshSource(plugin: \"models\", id: \"validated_ai_models\") { results { artifactsLoaded entitiesUnchanged } } }", json!({}))
        .await;
    assert_eq!(job["refreshSource"]["results"][0]["artifactsLoaded"], 36);
    assert_eq!(job["refreshSource"]["results"][0]["entitiesUnchanged"], 5);
    // 15 tools in the organization MCP catalog, typed customProperties included.
    let tools = server
        .ok("{ entities(plugin: \"mcp\", sourceId: \"organization_mcp_servers\") { edges { node { ... on McpServer { toolCount tools { name } securityIndicators { sast } } } } } }", json!({}))
        .await;
    let total: usize = tools["entities"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["tools"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 15);
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("kf-reg/config/sources.yaml"), dir.path()).await;
    assert_eq!(
        source_states(&server).await,
        expect(&[
            ("models/organization_ai_models", "AVAILABLE", 6),
            ("models/validated_ai_models", "AVAILABLE", 4),
            ("models/community_custom_models", "AVAILABLE", 4),
            ("mcp/mcp-default", "AVAILABLE", 6),
        ])
    );
    // The flat `mcpservers:` format normalises into McpServer.
    let flat = server
        .ok("{ entities(plugin: \"mcp\", search: \"kubernetes\") { totalCount edges { node { name ... on McpServer { format toolCount transports serverUrl } } } } }", json!({}))
        .await;
    let node = &flat["entities"]["edges"][0]["node"];
    assert_eq!(node["name"], "kubernetes-mcp-server");
    assert_eq!(node["format"], "mcpservers");
    assert_eq!(node["toolCount"], 12);
    assert_eq!(node["transports"], json!(["stdio", "http"]));
    // Unknown plugin sections are reported as warnings, not dropped.
    let logs = server.log_text();
    for section in ["knowledge", "prompts", "agents", "guardrails", "policies", "skills"] {
        assert!(logs.contains(&format!("catalogs.{section}")), "no warning for {section}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_disabled_and_legacy_cases() {
    let Some(fx) = upstream_fixtures("error_disabled_and_legacy_cases") else { return };
    let dir = tempfile::tempdir().unwrap();
    // Absolute /shared-data paths do not exist here: every source is an error, none crash.
    let server = start_on(&fx.join("kubeflow/odh/default-sources.yaml"), dir.path()).await;
    let st = source_states(&server).await;
    assert_eq!(st, expect(&[("models/redhat_ai", "ERROR", 0), ("models/redhat_ai_validated", "ERROR", 0)]));
    let errs = server.ok(LIST, json!({})).await;
    assert!(
        errs["sources"][0]["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("/shared-data/catalog/models-catalog.yaml")
    );
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("kubeflow/testdata/test-catalog-sources.yaml"), dir.path()).await;
    assert_eq!(
        source_states(&server).await,
        expect(&[("models/catalog1", "AVAILABLE", 3), ("models/catalog2", "DISABLED", 0)])
    );
    // Extra properties pass through (and nothing secret-looking is redacted).
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "catalog1"})).await;
    assert_eq!(src["source"]["properties"]["privateProp11"], 54321);
    drop(server);

    // ODH's validated catalog has fields the strict Kubeflow loader rejects: an error with the
    // position and field, while the other sources load; agent_catalogs is kept with a warning.
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("opendatahub/demo/dev-sources.yaml"), dir.path()).await;
    let st = source_states(&server).await;
    assert_eq!(st["models/validated_ai_models"], ("ERROR".to_string(), 0));
    assert_eq!(st["models/organization_ai_models"], ("AVAILABLE".to_string(), 6));
    assert_eq!(st["mcp/community_mcp_servers"], ("AVAILABLE".to_string(), 4));
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "validated_ai_models"})).await;
    let err = src["source"]["status"]["lastError"].as_str().unwrap();
    assert!(err.contains("dev-validated-models.yaml:") && err.contains("unknown field `validatedTasks`"), "{err}");
    assert!(server.log_text().contains("agent_catalogs"));
    drop(server);

    // `type: hf` sources are kept and show an error; the yaml one loads.
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("kubeflow/base/hf-sources-example.yaml"), dir.path()).await;
    let st = source_states(&server).await;
    assert_eq!(st["models/sample_catalog"], ("AVAILABLE".to_string(), 1));
    assert_eq!(st["models/hf-specific"].0, "ERROR");
    assert_eq!(st["models/hf-meta-llama"].0, "DISABLED");
    drop(server);

    // The MCP catalog with no `source:` key, and the legacy `catalogs:` alias.
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("opendatahub/testdata/test-sources-with-mcp.yaml"), dir.path()).await;
    assert_eq!(
        source_states(&server).await,
        expect(&[("models/test-models", "AVAILABLE", 3), ("mcp/test-mcp-servers", "AVAILABLE", 7)])
    );
    drop(server);
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(&fx.join("kubeflow/demo/legacy-dev-catalog-sources.yaml"), dir.path()).await;
    assert_eq!(source_states(&server).await.len(), 3);
    assert!(server.log_text().contains("deprecated name of `model_catalogs:`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_back_keeps_unknown_sections_byte_for_byte_in_both_dialects() {
    let Some(fx) = upstream_fixtures("writing_back_keeps_unknown_sections_byte_for_byte_in_both_dialects") else {
        return;
    };
    // Plugin-sectioned dialect (kf-reg): copy the tree so relative paths still resolve.
    let work = tempfile::tempdir().unwrap();
    copy_dir(&fx.join("kf-reg"), work.path());
    let sources = work.path().join("config/sources.yaml");
    let before = std::fs::read_to_string(&sources).unwrap();
    let db_dir = tempfile::tempdir().unwrap();
    let server = start_on(&sources, db_dir.path()).await;
    server
        .ok(
            APPLY,
            json!({"plugin": "models", "input": {"id": "community_custom_models", "name": "Community (renamed)", "labels": ["Community"]}}),
        )
        .await;
    server
        .ok(APPLY, json!({"plugin": "mcp", "input": {"id": "new-mcp", "content": "mcp_servers:\n  - name: fresh\n    tools: []\n"}}))
        .await;
    let after = std::fs::read_to_string(&sources).unwrap();
    let tail = |t: &str| t[t.find("  knowledge:").unwrap()..].to_string();
    assert_eq!(tail(&before), tail(&after), "sections of other plugins must not change");
    assert!(after.starts_with("apiVersion: catalog/v1alpha1\nkind: CatalogSources\n"));
    assert!(after.contains("name: Community (renamed)"));
    // The untouched model entries are byte-identical too.
    let org = &before[before.find("      - id: organization_ai_models").unwrap()
        ..before.find("      - id: community_custom_models").unwrap()];
    assert!(after.contains(org));
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "mcp", "id": "new-mcp"})).await;
    assert_eq!(src["source"]["properties"]["yamlCatalogPath"], "new-mcp-mcp.yaml");
    assert!(work.path().join("config/new-mcp-mcp.yaml").exists());
    drop(server);

    // Kubeflow dialect with agent_catalogs (ODH demo): comments and unknown sections survive.
    let work = tempfile::tempdir().unwrap();
    copy_dir(&fx.join("opendatahub/demo"), work.path());
    let sources = work.path().join("dev-sources.yaml");
    let before = std::fs::read_to_string(&sources).unwrap();
    let db_dir = tempfile::tempdir().unwrap();
    let server = start_on(&sources, db_dir.path()).await;
    server.ok(APPLY, json!({"plugin": "mcp", "input": {"id": "community_mcp_servers", "enabled": false}})).await;
    let after = std::fs::read_to_string(&sources).unwrap();
    let agents = &before[before.find("agent_catalogs:").unwrap()..];
    let agents_block = &agents[..agents.find("\n\n").unwrap_or(agents.len())];
    assert!(after.contains(agents_block), "agent_catalogs changed:\n{after}");
    assert!(after.contains("# namedQueries define reusable server-side filter presets"));
    let st = source_states(&server).await;
    assert_eq!(st["mcp/community_mcp_servers"].0, "DISABLED");
    // Only the one entry's lines changed.
    let changed: Vec<_> = before.lines().zip(after.lines()).filter(|(a, b)| a != b).collect();
    assert!(changed.len() <= 2, "{changed:?}");
}
