//! HTTP behaviour: GraphiQL, content types, GET rules, error codes, probes.

use crate::support;

use serde_json::{Value, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_over_http_basics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let url = format!("{}/graphql", server.base);
    let c = &server.client;

    // GraphiQL for people.
    let page = c.get(&url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().to_lowercase().contains("graphiql"));

    // A query over GET, honouring operationName.
    let doc = "query A { plugins { name } } query B { sources { id } }";
    let r = c
        .get(&url)
        .query(&[("query", doc), ("operationName", "B")])
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert!(body["data"]["sources"].is_array(), "{body:#}");

    // A mutation over GET is refused: a link must never change configuration.
    let r =
        c.get(&url).query(&[("query", "mutation { refreshPlugin(plugin: \"models\") { id } }")]).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // A form or text/plain POST (what a browser can send cross-site without preflight) is refused.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = c
            .post(&url)
            .header("content-type", ct)
            .body(r#"{"query":"mutation { refreshPlugin(plugin: \"models\") { id } }"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{ct}");
    }

    // graphql-response+json: a document that does not validate is a 400 with no data, and the
    // error carries a code.
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ nope }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/graphql-response+json");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("data").is_none() || body["data"].is_null());
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED");

    // Unknown plugin → NOT_FOUND naming the known ones.
    let body = server.gql("{ sources(plugin: \"agents\") { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("models, mcp"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_each_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let health = server.client.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    let names: Vec<&str> = body["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["config", "firstRefresh", "database"]);

    // The config store becomes unreachable: not ready, and the body says which check failed.
    let sources = dir.path().join("sources.yaml");
    let moved = dir.path().join("sources.yaml.away");
    std::fs::rename(&sources, &moved).unwrap();
    let r = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failed"], json!(["config"]));
    std::fs::rename(&moved, &sources).unwrap();
    let r = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_sources_file_stops_startup_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources.yaml");
    std::fs::write(&sources, "model_catalogs:\n  - name: A\n    id: a\n    typo: yaml\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--sources"])
        .arg(&sources)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sources.yaml:4:5: error: unknown field `typo`"), "{err}");
    assert!(err.contains("did you mean `type`?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_first_refresh_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(2)).await;
    host.state.lock().unwrap().delay_ms = 2000;
    let sources = dir.path().join("sources.yaml");
    std::fs::write(
        &sources,
        format!(
            "model_catalogs:\n  - name: Slow\n    id: slow\n    type: url\n    properties:\n      url: {}\n",
            host.url
        ),
    )
    .unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .sources(&sources)
        .database(&db)
        .flags(&["--url-allow", "127.0.0.1"])
        .no_wait()
        .start()
        .await;
    let r = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failed"], json!(["firstRefresh"]), "{body:#}");
    // Liveness does not wait for the refresh.
    assert_eq!(server.client.get(format!("{}/healthz", server.base)).send().await.unwrap().status(), 200);
    server.wait_ready().await;
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "slow"})).await;
    assert_eq!(src["source"]["status"]["entityCount"], 2);
}
