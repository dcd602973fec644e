//! Safe at the edge: GraphQL-over-HTTP conformance (graphql-http's audit), CSRF and origins,
//! limits, roles and tokens, trusted documents and persisted queries, metrics and audit.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use support::*;

const OPERATOR_TOKEN: &str = "op-token-1234";
const VIEWER_TOKEN: &str = "viewer-token-5678";

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    support::tokens_file(dir, &[("ci-pipeline", "operator", OPERATOR_TOKEN), ("dashboard", "viewer", VIEWER_TOKEN)])
}

async fn post(server: &Server, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req =
        server.client.post(format!("{}/graphql", server.base)).header("content-type", "application/json").json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_http_audit_passes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let out = tokio::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/audit.mjs"))
        .arg(&server.base)
        .output()
        .await
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let summary = text.lines().find(|l| l.starts_with("audit: ")).unwrap_or_else(|| panic!("no summary:\n{text}"));
    eprintln!("graphql-http {summary}");
    assert!(summary.contains(" 0 warn, 0 error"), "audit found problems:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_websocket_and_sse_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&["--allowed-origins", "https://console.example.com"])
        .start()
        .await;
    let err = WsClient::connect(&server.base, Some("https://evil.example")).await.err().expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(WsClient::connect(&server.base, Some("https://console.example.com")).await.is_ok());
    let own = server.base.clone();
    assert!(WsClient::connect(&server.base, Some(&own)).await.is_ok(), "same origin must pass");
    let sse = server
        .client
        .post(format!("{}/graphql/stream", server.base))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("origin", "https://evil.example")
        .json(&json!({"query": "subscription { catalogEvents { kind } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 403);
    // CORS is off by default: no Access-Control-Allow-Origin for anyone.
    let r = server
        .client
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .header("origin", "https://console.example.com")
        .json(&json!({"query": "{ plugins { name } }"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_bombs_get_clear_errors_and_the_server_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    // A lower complexity limit than the default (1000) keeps the bomb small; the mechanism is the same.
    let server = std::sync::Arc::new(
        TestServer::new(dir.path()).database(&db).flags(&["--max-complexity", "200"]).start().await,
    );
    // Another client keeps querying throughout.
    let bystander = {
        let s = server.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let d = s.ok("{ plugins { name entityCount } }", json!({})).await;
                assert_eq!(d["plugins"].as_array().unwrap().len(), 2);
            }
        })
    };
    let aliases: String = (0..40).map(|i| format!("a{i}: plugins {{ name }} ")).collect();
    let fields = "id name type enabled labels revision plugin content properties status { state entityCount lastRefreshTime lastError durationMs }";
    let complexity: String = (0..20).map(|i| format!("c{i}: sources {{ {fields} }} ")).collect();
    let cases: Vec<(&str, String, &str)> = vec![
        ("aliases", format!("{{ {aliases} }}"), "aliases; the limit is 30"),
        ("complexity", format!("{{ {complexity} }}"), "complex"),
        ("document size", format!("{{ plugins {{ name }} }} #{}", "x".repeat(40 * 1024)), "bytes; the limit is"),
    ];
    for (name, q, needle) in &cases {
        let (status, body) = post(&server, None, json!({"query": q})).await;
        assert!(status == 200 || status == 400, "{name}: {status}");
        let msg = body["errors"][0]["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.to_lowercase().contains(needle), "{name}: {body:#}");
        assert!(body["errors"][0]["extensions"]["code"].is_string(), "{name}: {body:#}");
    }
    // Depth: a nested introspection query beyond 16 levels.
    let mut q = "name".to_string();
    for _ in 0..20 {
        q = format!("ofType {{ {q} }}");
    }
    let (_, body) = post(
        &server,
        None,
        json!({"query": format!("{{ __type(name: \"Source\") {{ fields {{ type {{ {q} }} }} }} }}")}),
    )
    .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().to_lowercase().contains("nested too deep"), "{body:#}");
    // Body size: 2 MiB.
    let big = "x".repeat(2 * 1024 * 1024);
    let r = server
        .client
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .body(format!("{{\"query\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The rest of the refused body is still on that connection: the server says it closes it,
    // so the client's next request goes on a fresh connection instead of being lost.
    assert_eq!(r.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"), "{:?}", r.headers());
    for _ in 0..5 {
        let r = server
            .client
            .post(format!("{}/graphql", server.base))
            .header("content-type", "application/json")
            .body(format!("{{\"query\":\"{big}\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let (status, _) = post(&server, None, json!({"query": "{ plugins { name } }"})).await;
        assert_eq!(status, 200);
    }
    // Batch: 11 requests against a cap of 10.
    let batch: Vec<Value> = (0..11).map(|_| json!({"query": "{ plugins { name } }"})).collect();
    let (status, body) = post(&server, None, Value::Array(batch)).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("the limit is 10"), "{body:#}");
    let ok_batch: Vec<Value> = (0..3).map(|_| json!({"query": "{ plugins { name } }"})).collect();
    let (status, body) = post(&server, None, Value::Array(ok_batch)).await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(3)));
    bystander.await.unwrap();
    let d = server.ok("{ plugins { name } }", json!({})).await;
    assert!(d["plugins"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_actor_and_audit() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, dir.path()).await;
        let tokens = tokens_file(dir.path());
        let server = TestServer::new(dir.path())
            .database(&db)
            .flags(&["--auth", "static", "--tokens-file", tokens.to_str().unwrap(), "--rate-limit", "3"])
            .start()
            .await;
        let q = json!({"query": "{ sources { id } }"});
        let (status, body) = post(&server, None, q.clone()).await;
        assert_eq!(
            (status, body["errors"][0]["extensions"]["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{body:#}"
        );
        let (status, body) = post(&server, Some("not-a-token"), q.clone()).await;
        assert_eq!((status, body["errors"][0]["extensions"]["code"].as_str()), (401, Some("UNAUTHENTICATED")));
        let (status, body) = post(&server, Some(VIEWER_TOKEN), q.clone()).await;
        assert_eq!(status, 200);
        assert!(body["data"]["sources"].is_array());
        // `viewer` tells a UI who it is talking as, and whether to offer edits.
        let who = json!({"query": "{ viewer { name role canEdit } }"});
        let (_, body) = post(&server, Some(VIEWER_TOKEN), who.clone()).await;
        assert_eq!(
            body["data"]["viewer"],
            json!({"name": "dashboard", "role": "VIEWER", "canEdit": false}),
            "{body:#}"
        );
        let (_, body) = post(&server, Some(OPERATOR_TOKEN), who).await;
        assert_eq!(
            body["data"]["viewer"],
            json!({"name": "ci-pipeline", "role": "OPERATOR", "canEdit": true}),
            "{body:#}"
        );

        let apply = |content: String| json!({"query": APPLY, "variables": {"plugin": "models", "input": {"id": "partner_models", "content": content}, "options": {"confirmRemovals": true}}});
        let (_, body) = post(&server, Some(VIEWER_TOKEN), apply(models_yaml(2))).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body:#}");
        let (_, body) = post(&server, Some(OPERATOR_TOKEN), apply(models_yaml(3))).await;
        assert!(body.get("errors").is_none(), "{body:#}");
        let rev = body["data"]["applySource"]["revision"].as_i64().unwrap();

        // The caller's name is the actor on the revision and in the audit trail.
        let (_, src) = post(
            &server,
            Some(VIEWER_TOKEN),
            json!({"query": SOURCE_QUERY, "variables": {"plugin": "models", "id": "partner_models"}}),
        )
        .await;
        assert_eq!(src["data"]["source"]["revisions"][0]["actor"], "ci-pipeline");
        let (_, audit) = post(
            &server,
            Some(VIEWER_TOKEN),
            json!({"query": "{ auditLog(limit: 10) { actor action plugin sourceId revision outcome } }"}),
        )
        .await;
        let log = audit["data"]["auditLog"].as_array().unwrap();
        assert_eq!(log[0]["actor"], "ci-pipeline");
        assert_eq!(log[0]["action"], "APPLY_SOURCE");
        assert_eq!(log[0]["revision"], rev);
        assert_eq!(log[0]["outcome"], "OK");
        assert!(log.iter().any(|r| r["actor"] == "dashboard" && r["outcome"] == "FORBIDDEN"), "{log:#?}");

        // Rate limit: 3 changes a minute; the 4th gets RATE_LIMITED with retryAfter.
        for n in 4..6 {
            let (_, body) = post(&server, Some(OPERATOR_TOKEN), apply(models_yaml(n))).await;
            assert!(body.get("errors").is_none(), "{body:#}");
        }
        let (_, body) = post(&server, Some(OPERATOR_TOKEN), apply(models_yaml(9))).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body:#}");
        assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() >= 1);

        // WebSocket: the token travels in connection_init; without one the connection is refused.
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("{}/graphql/ws", server.base.replacen("http", "ws", 1)).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        use futures_util::{SinkExt, StreamExt};
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "connection_init", "payload": {}}).to_string().into(),
        ))
        .await
        .unwrap();
        let closed = ws.next().await;
        assert!(
            matches!(closed, Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(ref f)))) if f.reason.contains("authentication required")),
            "{closed:?}"
        );
        let mut req = format!("{}/graphql/ws", server.base.replacen("http", "ws", 1)).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {VIEWER_TOKEN}")}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        let ack = ws.next().await.unwrap().unwrap();
        assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    }
}

/// A server with trusted documents on (from `ui-contract/`), and that directory.
async fn trusted_server(dir: &Path) -> (Server, std::path::PathBuf) {
    let db = database_url(Backend::Sqlite, dir).await;
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    let args = ["--trusted-documents", contract.to_str().unwrap(), "--rate-limit", "0"];
    (TestServer::new(dir).database(&db).flags(&args).start().await, contract)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_documents_and_persisted_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (server, contract) = trusted_server(dir.path()).await;

    let (_, body) = post(&server, None, json!({"query": "{ sources { id name } }"})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body:#}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("trusted documents"));

    let text = std::fs::read_to_string(contract.join("sources-table.graphql")).unwrap();
    // The file holds the table's query and its row mutations: the request names its operation.
    let (_, body) =
        post(&server, None, json!({"query": text, "operationName": "SourcesTable", "variables": {"plugin": "models"}}))
            .await;
    assert!(body.get("errors").is_none(), "{body:#}");
    assert!(body["data"]["sources"].is_array());

    // By id: extensions.persistedQuery.sha256Hash of the document, no query text.
    let hash = catalog_bff::auth::sha256_hex(&text);
    let (_, body) = post(
        &server,
        None,
        json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}, "operationName": "SourcesTable", "variables": {}}),
    )
    .await;
    assert!(body["data"]["plugins"].is_array(), "{body:#}");

    // The manifest command lists every ui-contract document.
    let out = std::process::Command::new(BIN).args(["trusted-documents"]).arg(&contract).output().unwrap();
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = std::fs::read_dir(&contract)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "graphql"))
        .count();
    assert!(files >= 5, "ui-contract has {files} .graphql files");
    assert_eq!(manifest.as_object().unwrap().len(), files);
    assert_eq!(manifest[&hash], text.as_str());
    drop(server);

    // Automatic persisted queries work for everyone without trusted documents.
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).start().await;
    let q = "{ plugins { name sourceCount } }";
    let h = catalog_bff::auth::sha256_hex(q);
    let pq = json!({"persistedQuery": {"version": 1, "sha256Hash": h}});
    let (_, body) = post(&server, None, json!({"extensions": pq})).await;
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    let (_, body) = post(&server, None, json!({"query": q, "extensions": pq})).await;
    assert!(body["data"]["plugins"].is_array());
    let (_, body) = post(&server, None, json!({"extensions": pq})).await;
    assert!(body["data"]["plugins"].is_array(), "{body:#}");
    let (_, body) = post(&server, None, json!({"query": "{ sources { id } }", "extensions": pq})).await;
    assert_eq!(body["errors"][0]["extensions"]["reason"], "PERSISTED_QUERY_HASH_MISMATCH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_contract_runs_with_trusted_documents_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, contract) = trusted_server(dir.path()).await;
    let content = std::fs::read_to_string(dir.path().join("team-models.yaml")).unwrap();
    let input = json!({"id": "team_models", "content": content});
    let mut ran = 0;
    for (file, ops) in [
        ("sources-table.graphql", vec![("SourcesTable", json!({}))]),
        ("source-details.graphql", vec![("SourceDetails", json!({"plugin": "models", "id": "team_models"}))]),
        (
            "save-source.graphql",
            vec![
                ("ValidateSource", json!({"plugin": "models", "input": input})),
                ("PreviewSource", json!({"plugin": "models", "input": input})),
                ("SaveSource", json!({"plugin": "models", "input": input})),
            ],
        ),
        (
            "refresh-rollback.graphql",
            vec![
                ("RefreshSource", json!({"plugin": "models", "id": "team_models"})),
                ("RefreshPlugin", json!({"plugin": "mcp"})),
                ("RefreshJob", json!({"id": "x"})),
                ("RollbackSource", json!({"plugin": "models", "id": "team_models", "revision": 1})),
            ],
        ),
    ] {
        let text = std::fs::read_to_string(contract.join(file)).unwrap();
        for (op, vars) in ops {
            let body = server.gql_op(&text, op, vars).await;
            assert!(body.get("errors").is_none(), "{op}: {body:#}");
            ran += 1;
        }
    }
    assert_eq!(ran, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_refreshes_cache_hits_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let text = |s: &Server| {
        let url = format!("{}/metrics", s.base);
        let c = s.client.clone();
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let line_value = |t: &str, prefix: &str| -> f64 {
        t.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = text(&server).await;
    let refreshes = line_value(&before, "refresh_operations_total{plugin=\"models\",status=\"success\"}");
    assert!(refreshes >= 2.0, "the initial refresh is counted:\n{before}");
    server
        .ok("mutation RefreshTeam { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({}))
        .await;
    // The first run of a document counts as `other` (operation names label only documents seen
    // before, so clients cannot mint series); the next two are labelled.
    for _ in 0..3 {
        server.ok("query Plugins { plugins { name } }", json!({})).await;
    }
    let after = text(&server).await;
    assert_eq!(line_value(&after, "refresh_operations_total{plugin=\"models\",status=\"success\"}"), refreshes + 1.0);
    assert!(line_value(&after, "refresh_duration_seconds_count{plugin=\"models\"}") >= refreshes + 1.0);
    assert!(after.contains("refresh_duration_seconds_bucket{plugin=\"models\",le=\"+Inf\"}"));
    assert!(
        line_value(&after, "catalog_bff_cache_hits_total") >= line_value(&before, "catalog_bff_cache_hits_total") + 1.0
    );
    // A one-off mutation document is not labelled by its name.
    assert_eq!(
        line_value(&after, "catalog_bff_graphql_operations_total{operation=\"RefreshTeam\",outcome=\"ok\"}"),
        0.0
    );
    assert!(line_value(&after, "catalog_bff_graphql_operations_total{operation=\"other\",outcome=\"ok\"}") >= 2.0);
    assert_eq!(line_value(&after, "catalog_bff_graphql_operations_total{operation=\"Plugins\",outcome=\"ok\"}"), 2.0);
    assert!(
        line_value(&after, "catalog_bff_http_requests_total{status=\"200\"}")
            > line_value(&before, "catalog_bff_http_requests_total{status=\"200\"}")
    );
}

#[test]
fn unauthenticated_mode_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth none on 0.0.0.0:0") && err.contains("--auth static"), "{err}");
    assert!(!dir.path().join("sources.yaml").exists(), "nothing may be written before settings are valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_and_connection_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&["--max-subscriptions-per-connection", "2", "--max-connections", "2"])
        .start()
        .await;
    let sub = "subscription { catalogEvents { kind } }";
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("1", sub, json!({})).await;
    ws.subscribe("2", sub, json!({})).await;
    ws.subscribe("3", sub, json!({})).await;
    // The three are started concurrently, so any one of them may be the one over the limit.
    let m = ws.next_message(10).await.expect("an error for one subscription");
    let refused = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{m}");
    assert!(m["payload"]["errors"][0]["message"].as_str().unwrap().contains("at most 2 subscriptions"));
    assert_eq!(ws.next_message(10).await.unwrap()["type"], "complete");
    // The connection and the other two subscriptions are unaffected.
    server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 2 {
        let m = ws.next_message(10).await.unwrap();
        assert_eq!(m["type"], "next", "{m}");
        got.insert(m["id"].as_str().unwrap().to_string());
    }
    assert!(!got.contains(&refused));

    // Two connections allowed: the third is refused with 503, and a slot frees when one closes.
    let second = WsClient::connect(&server.base, None).await.unwrap();
    let err = WsClient::connect(&server.base, None).await.err().expect("third connection refused");
    assert!(err.to_string().contains("503"), "{err}");
    drop(second);
    eventually("the slot is released", std::time::Duration::from_secs(10), async || {
        WsClient::connect(&server.base, None).await.map(drop)
    })
    .await;
}
