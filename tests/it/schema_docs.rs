//! The schema is the UI team's documentation: every type, field, argument, input field and enum
//! value the server exposes has a real description. The test asks the running server itself
//! (the standard introspection query over HTTP), so it checks what GraphiQL and codegen see,
//! not what the Rust source looks like.

use crate::support;

use serde_json::{Value, json};
use support::*;

/// The introspection query GraphiQL and codegen tools send (trimmed to what descriptions need,
/// plus deprecated items, which are documented too).
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    types {
      kind
      name
      description
      fields(includeDeprecated: true) {
        name
        description
        args { name description }
      }
      inputFields { name description }
      enumValues(includeDeprecated: true) { name description }
    }
  }
}"#;

/// Empty, whitespace, or a generated placeholder ("Implement the DateTime<Utc> scalar").
fn undocumented(desc: &Value) -> bool {
    match desc.as_str() {
        None => true,
        Some(text) => {
            let t = text.trim();
            t.is_empty() || t.starts_with("Implement")
        }
    }
}

/// Every item without a real description, named `Type`, `Type.field`, `Type.field(arg)`,
/// `Enum.VALUE` or `Input.field`.
fn missing(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for t in schema["types"].as_array().expect("types") {
        let name = t["name"].as_str().unwrap_or_default();
        if name.starts_with("__") {
            continue;
        }
        if undocumented(&t["description"]) {
            out.push(name.to_string());
        }
        for f in t["fields"].as_array().into_iter().flatten() {
            let field = f["name"].as_str().unwrap_or_default();
            if undocumented(&f["description"]) {
                out.push(format!("{name}.{field}"));
            }
            for a in f["args"].as_array().into_iter().flatten() {
                if undocumented(&a["description"]) {
                    out.push(format!("{name}.{field}({})", a["name"].as_str().unwrap_or_default()));
                }
            }
        }
        for f in t["inputFields"].as_array().into_iter().flatten() {
            if undocumented(&f["description"]) {
                out.push(format!("{name}.{}", f["name"].as_str().unwrap_or_default()));
            }
        }
        for v in t["enumValues"].as_array().into_iter().flatten() {
            if undocumented(&v["description"]) {
                out.push(format!("{name}.{}", v["name"].as_str().unwrap_or_default()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_field_argument_and_value_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let data = server.ok(INTROSPECTION, json!({})).await;
    let schema = &data["__schema"];
    let types = schema["types"].as_array().expect("introspection lists types");
    // The check itself must look at the real schema, not an empty answer.
    for want in ["Query", "Mutation", "Subscription", "Source", "DateTime", "RefreshJob"] {
        assert!(types.iter().any(|t| t["name"] == want), "introspection lacks {want}: {data:#}");
    }
    let missing = missing(schema);
    assert!(
        missing.is_empty(),
        "{} schema items have no description (or a placeholder one); describe each for the UI team:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_time_says_rfc_3339_in_utc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let data = server.ok(r#"{ __type(name: "DateTime") { kind description } }"#, json!({})).await;
    assert_eq!(data["__type"]["kind"], "SCALAR");
    let desc = data["__type"]["description"].as_str().unwrap_or_default();
    assert!(desc.contains("RFC 3339") && desc.contains("UTC"), "DateTime description: {desc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_has_a_global_id_that_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let data = server.ok("{ sources { id plugin globalId } }", json!({})).await;
    let sources = data["sources"].as_array().unwrap();
    assert!(sources.iter().any(|s| s["plugin"] == "models") && sources.iter().any(|s| s["plugin"] == "mcp"));
    let mut seen = std::collections::HashSet::new();
    for s in sources {
        let gid = s["globalId"].as_str().unwrap();
        assert!(seen.insert(gid.to_string()), "globalId {gid} is not unique");
        let found = server
            .ok("query($g: ID!) { sourceByGlobalId(globalId: $g) { id plugin globalId } }", json!({"g": gid}))
            .await;
        assert_eq!(found["sourceByGlobalId"], *s, "sourceByGlobalId({gid})");
    }
    // A source of one plugin is not found through the other plugin's globalId.
    let models_id = sources.iter().find(|s| s["plugin"] == "models").unwrap()["id"].as_str().unwrap();
    let other = server
        .ok("query($g: ID!) { sourceByGlobalId(globalId: $g) { id } }", json!({"g": format!("mcp/{models_id}")}))
        .await;
    assert!(other["sourceByGlobalId"].is_null(), "{other}");
    let bad = server.gql("{ sourceByGlobalId(globalId: \"no-slash\") { id } }", json!({})).await;
    assert_eq!(error_code(&bad).as_deref(), Some("VALIDATION_FAILED"), "{bad}");
}
