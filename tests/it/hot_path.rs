//! The cache-hit path: a repeated query is answered from the response cache without GraphQL
//! parsing, and still follows every rule the full path does: operation types chosen by
//! `operationName`, variables in the key, answers per caller, mutations never over GET, the
//! metrics label of the operation.

use crate::support;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use support::*;

const OPERATOR_TOKEN: &str = "hot-operator-token";
const VIEWER_TOKEN: &str = "hot-viewer-token";

async fn post(server: &Server, token: Option<&str>, body: &str) -> (u16, HeaderMap, Value) {
    let mut req = server
        .client
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

fn x_cache(h: &HeaderMap) -> &str {
    h.get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_hit_and_keep_the_full_paths_rules() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await;

    // The same document, spaced differently, shares one entry; the body is the same bytes.
    let a = json!({"query": "query Sources { sources { id name revision } }"}).to_string();
    let b = json!({"query": "query Sources {\n  sources {\n    id\n    name\n    revision\n  }\n}"}).to_string();
    let (s1, h1, v1) = post(&server, None, &a).await;
    let (s2, h2, v2) = post(&server, None, &b).await;
    assert_eq!((s1, x_cache(&h1)), (200, "miss"));
    assert_eq!((s2, x_cache(&h2)), (200, "hit"), "{v2}");
    assert_eq!(v1, v2);
    // Hits count under the operation's name (a first sighting counts as `other`).
    let (_, h3, _) = post(&server, None, &a).await;
    assert_eq!(x_cache(&h3), "hit");
    assert!(server.metric("catalog_bff_graphql_operations_total{operation=\"Sources\",outcome=\"ok\"}").await >= 2.0);

    // Variables are part of the key: another value is another answer.
    let q = "query One($p: String!) { sources(plugin: $p) { plugin id } }";
    let models = json!({"query": q, "variables": {"p": "models"}}).to_string();
    let mcp = json!({"query": q, "variables": {"p": "mcp"}}).to_string();
    let (_, _, m1) = post(&server, None, &models).await;
    let (_, h, m2) = post(&server, None, &models).await;
    assert_eq!(x_cache(&h), "hit");
    assert_eq!(m1, m2);
    let (_, h, other) = post(&server, None, &mcp).await;
    assert_eq!(x_cache(&h), "miss");
    assert_eq!(other["data"]["sources"][0]["plugin"], "mcp", "{other}");
    assert_eq!(m1["data"]["sources"][0]["plugin"], "models", "{m1}");

    // One document, two operations: the name decides. The mutation runs every time (never a
    // hit) and, once answered, no read sees the entries from before it.
    let doc = "query Read { sources(plugin: \"models\") { id labels revision } } \
               mutation Write($l: [String!]) { applySource(plugin: \"models\", input: {id: \"team_models\", labels: $l}) { revision } }";
    let read = json!({"query": doc, "operationName": "Read"}).to_string();
    let (_, _, before) = post(&server, None, &read).await;
    let (_, h, _) = post(&server, None, &read).await;
    assert_eq!(x_cache(&h), "hit");
    for i in 0..2 {
        let write =
            json!({"query": doc, "operationName": "Write", "variables": {"l": [format!("hot {i}")]}}).to_string();
        let (status, h, v) = post(&server, None, &write).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(x_cache(&h), "none", "a mutation is never answered from the cache: {v}");
        assert!(v["data"]["applySource"]["revision"].is_number(), "{v}");
        let (_, h, after) = post(&server, None, &read).await;
        assert_eq!(x_cache(&h), "miss", "a read after a mutation's response is computed again");
        let labels = after["data"]["sources"][0]["labels"].to_string();
        assert!(labels.contains(&format!("hot {i}")), "{after} (before: {before})");
    }

    // GET: the same hit path, and a mutation chosen by name is refused (405) whatever the cache
    // holds for the document's query.
    let url = format!("{}/graphql", server.base);
    let get = |op: &'static str| server.client.get(&url).query(&[("query", doc), ("operationName", op)]).send();
    let r1 = get("Read").await.unwrap();
    assert_eq!(r1.status(), 200);
    let r2 = get("Read").await.unwrap();
    assert_eq!(x_cache(r2.headers()), "hit");
    let w = get("Write").await.unwrap();
    assert_eq!(w.status(), 405);
    assert_eq!(w.headers().get("allow").unwrap(), "POST");

    // A request the hit path does not read (a batch, a body with `extensions`) still works.
    let batch = json!([{"query": "{ plugins { name } }"}, {"query": "{ plugins { name } }"}]).to_string();
    let (status, _, v) = post(&server, None, &batch).await;
    assert_eq!((status, v.as_array().map(Vec::len)), (200, Some(2)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_callers_cached_answer_never_reaches_a_restricted_caller() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let tokens =
        support::tokens_file(dir.path(), &[("ops", "operator", OPERATOR_TOKEN), ("dash", "viewer", VIEWER_TOKEN)]);
    let contract = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&[
            "--auth",
            "static",
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--trusted-documents",
            contract.to_str().unwrap(),
            "--trusted-documents-exempt",
            "operator",
            "--rate-limit",
            "0",
        ])
        .start()
        .await;
    let body = json!({"query": "{ sources { id name enabled } }"}).to_string();
    // The operator may run any document; its answer is cached...
    for expected in ["miss", "hit"] {
        let (status, h, v) = post(&server, Some(OPERATOR_TOKEN), &body).await;
        assert_eq!((status, x_cache(&h)), (200, expected), "{v}");
        assert!(v["data"]["sources"].is_array(), "{v}");
    }
    // ...under the operator's key only: the viewer is refused, every time.
    for _ in 0..2 {
        let (_, h, v) = post(&server, Some(VIEWER_TOKEN), &body).await;
        assert_eq!(x_cache(&h), "none", "{v}");
        assert!(v["errors"][0]["message"].as_str().unwrap_or_default().contains("trusted documents"), "{v}");
        assert!(v.get("data").is_none_or(Value::is_null), "{v}");
    }
    // No token: 401 before any lookup.
    let (status, _, _) = post(&server, None, &body).await;
    assert_eq!(status, 401);
}

/// A change to one plugin keeps the answers that read only the other plugin cached (keyed by
/// that plugin's generation), while everything that reads the changed plugin, or everything,
/// is computed again; a plugin named by a variable counts as named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_plugin_keeps_the_other_plugins_answers_cached() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await;
    let scoped = "query Scoped($p: String!) { sources(plugin: $p) { id labels revision status { entityCount } } }";
    let models = json!({"query": scoped, "variables": {"p": "models"}}).to_string();
    let mcp = json!({"query": scoped, "variables": {"p": "mcp"}}).to_string();
    let entities = json!({"query": "{ entities(plugin: \"models\", first: 2) { totalCount } }"}).to_string();
    let all = json!({"query": "{ sources { plugin id labels } }"}).to_string();
    let prime = |body: String| {
        let server = &server;
        async move {
            let (_, _, first) = post(server, None, &body).await;
            let (_, h, again) = post(server, None, &body).await;
            assert_eq!(x_cache(&h), "hit", "{body}");
            assert_eq!(first, again);
            first
        }
    };
    let models_before = prime(models.clone()).await;
    let entities_before = prime(entities.clone()).await;
    prime(mcp.clone()).await;
    prime(all.clone()).await;

    // A change to `mcp`, its plugin named by a variable, and the refresh it starts.
    let write = json!({
        "query": "mutation W($p: String!, $l: [String!]) { applySource(plugin: $p, input: {id: \"platform_mcp\", labels: $l}) { revision } }",
        "variables": {"p": "mcp", "l": ["scoped"]},
    })
    .to_string();
    let (status, _, v) = post(&server, None, &write).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"]["applySource"]["revision"].is_number(), "{v}");
    let (_, h, after) = post(&server, None, &mcp).await;
    assert_eq!(x_cache(&h), "miss", "the changed plugin's answer is computed again");
    assert!(after.to_string().contains("scoped"), "{after}");
    let (_, h, after) = post(&server, None, &all).await;
    assert_eq!(x_cache(&h), "miss", "an answer that reads every plugin is computed again");
    assert!(after.to_string().contains("scoped"), "{after}");
    let (_, h, same) = post(&server, None, &models).await;
    assert_eq!(x_cache(&h), "hit", "a change to mcp keeps the models answer: {same}");
    assert_eq!(same, models_before);
    let (_, h, same) = post(&server, None, &entities).await;
    assert_eq!(x_cache(&h), "hit", "a change to mcp keeps the models entities: {same}");
    assert_eq!(same, entities_before);

    // A change to `models` (named in the text): now the models answers are computed again.
    prime(mcp.clone()).await;
    let write = json!({"query": "mutation { applySource(plugin: \"models\", input: {id: \"team_models\", labels: [\"scoped too\"]}) { revision } }"}).to_string();
    let (status, _, v) = post(&server, None, &write).await;
    assert_eq!(status, 200, "{v}");
    let (_, h, after) = post(&server, None, &models).await;
    assert_eq!(x_cache(&h), "miss");
    assert!(after.to_string().contains("scoped too"), "{after}");
    let (_, h, _) = post(&server, None, &entities).await;
    assert_eq!(x_cache(&h), "miss");
    let (_, h, _) = post(&server, None, &mcp).await;
    assert_eq!(x_cache(&h), "hit", "a change to models keeps the mcp answer");
}

/// A request that cannot run (a document that does not parse, an operation that cannot be
/// chosen, a subscription over POST) changes nothing, so it leaves every cached answer
/// cached: before, any of them emptied the response cache, so one client sending garbage
/// kept every other client's reads a miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_run_leaves_the_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).start().await;
    let read = json!({"query": "{ sources(plugin: \"models\") { id labels } }"}).to_string();
    let (_, _, first) = post(&server, None, &read).await;
    let (_, h, _) = post(&server, None, &read).await;
    assert_eq!(x_cache(&h), "hit");
    for garbage in [
        json!({"query": "{ sources { id "}).to_string(),
        json!({"query": "query A { plugins { name } } query B { plugins { name } }"}).to_string(),
        json!({"query": "query A { plugins { name } }", "operationName": "Nope"}).to_string(),
        json!({"query": "subscription { catalogEvents { kind } }"}).to_string(),
    ] {
        let (_, _, v) = post(&server, None, &garbage).await;
        assert!(v["errors"].is_array(), "{garbage}: {v}");
        let (_, h, again) = post(&server, None, &read).await;
        assert_eq!(x_cache(&h), "hit", "after {garbage}");
        assert_eq!(again, first);
    }
    // A mutation, even one that fails, still counts as a change.
    let failing = json!({"query": "mutation { rollbackSource(plugin: \"models\", id: \"team_models\", revision: 999) { revision } }"}).to_string();
    let (_, _, v) = post(&server, None, &failing).await;
    assert!(v["errors"].is_array(), "{v}");
    let (_, h, _) = post(&server, None, &read).await;
    assert_eq!(x_cache(&h), "miss", "a mutation, even a failed one, is computed again after");
}
