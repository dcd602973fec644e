//! Secrets never leave the server; entity-level problems give PARTIALLY_AVAILABLE.

use crate::support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_secrets_warn_and_are_redacted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let content = "models:\n  - name: a/secretive\n    customProperties:\n      api_token:\n        metadataType: MetadataStringValue\n        string_value: hunter2-value\n    artifacts:\n      - uri: oci://x/y:1\n";
    let out = server
        .ok(
            APPLY,
            json!({"plugin": "models", "input": {"id": "secret_src", "content": content,
                   "properties": {"password": "p4ssw0rd-value"}},
                   "options": {"refreshAfterApply": true}}),
        )
        .await;
    let warnings = out["applySource"]["validation"]["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w["field"] == "input.properties.password" && w["layer"] == "SECURITY"));
    assert!(warnings.iter().any(|w| w["line"] == 6), "{warnings:?}");
    // The file keeps the real value (it is the operator's file), the API never shows it.
    assert!(std::fs::read_to_string(dir.path().join("secret_src-models.yaml")).unwrap().contains("hunter2-value"));
    let everything = server
        .gql(
            "query($id: ID!) { source(plugin: \"models\", id: $id) { properties content revisions { entry content } } \
             entities(plugin: \"models\", sourceId: $id) { edges { node { ... on Model { customProperties } } } } }",
            json!({"id": "secret_src"}),
        )
        .await
        .to_string();
    assert!(everything.contains("<redacted>"), "{everything}");
    assert!(!everything.contains("hunter2-value") && !everything.contains("p4ssw0rd-value"), "{everything}");

    // Saving redacted content back would destroy the secret: refused, nothing changes.
    let shown = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "secret_src"})).await["source"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let body = server.gql(APPLY, json!({"plugin": "models", "input": {"id": "secret_src", "content": shown}})).await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"));
    assert_eq!(body["errors"][0]["extensions"]["diagnostics"][0]["line"], 6);
    assert!(std::fs::read_to_string(dir.path().join("secret_src-models.yaml")).unwrap().contains("hunter2-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_entities_in_a_hand_edited_file_give_partial_availability() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let text = format!("{}  - name: test/m0\n    description: duplicate\n", models_yaml(3));
    std::fs::write(dir.path().join("partner-models.yaml"), &text).unwrap();
    let job = server
        .ok(
            "mutation { refreshSource(plugin: \"models\", id: \"partner_models\", confirmRemovals: true) { phase results { status entitiesLoaded diagnostics { message line column field } } } }",
            json!({}),
        )
        .await;
    let r = &job["refreshSource"]["results"][0];
    assert_eq!(r["status"], "PARTIAL", "{job:#}");
    assert_eq!(r["entitiesLoaded"], 3);
    assert_eq!(r["diagnostics"][0]["line"], 21); // the second `name: test/m0`
    assert_eq!(job["refreshSource"]["phase"], "FAILED");
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "partner_models"})).await;
    assert_eq!(src["source"]["status"]["state"], "PARTIALLY_AVAILABLE");
    assert_eq!(src["source"]["status"]["lastRefreshStatus"], "partially-available");
    // The same content through the API is refused: apply never accepts known-bad entities.
    let body = server.gql(APPLY, json!({"plugin": "models", "input": {"id": "partner_models", "content": text}})).await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_paths_from_the_api_stay_inside_the_sources_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let outside = dir.path().parent().unwrap().join("escaped.yaml");
    for path in ["../escaped.yaml", outside.to_str().unwrap(), "sub/../../escaped.yaml"] {
        let body = server
            .gql(APPLY, json!({"plugin": "models", "input": {"id": "sneaky", "content": models_yaml(1), "properties": {"yamlCatalogPath": path}}}))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{path}: {body:#}");
        assert_eq!(body["errors"][0]["extensions"]["diagnostics"][0]["field"], "input.properties.yamlCatalogPath");
    }
    assert!(!outside.exists());
    // The server assigns a new source's location; naming exactly that one is accepted.
    server
        .ok(APPLY, json!({"plugin": "models", "input": {"id": "nested", "content": models_yaml(1), "properties": {"yamlCatalogPath": "nested-models.yaml"}}}))
        .await;
    assert!(dir.path().join("nested-models.yaml").exists());
}
