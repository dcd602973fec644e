//! Trust at the edge, the HTTP part (issue 8): GET never runs a mutation whatever names the
//! document, document limits hold on cache hits, the response-size limit, complexity that
//! counts list sizes and `content`, codes on async-graphql's own errors, GraphQL-shaped error
//! bodies with request ids, and bounded metric labels. Every test talks to the real binary.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use support::*;

async fn post_json(server: &Server, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = server
        .client
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn get(server: &Server, params: &[(&str, &str)]) -> (u16, String) {
    let r = server
        .client
        .get(format!("{}/graphql", server.base))
        .query(params)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn job_count(server: &Server) -> usize {
    let d = server.ok("{ refreshJobs(limit: 500) { id } }", json!({})).await;
    d["refreshJobs"].as_array().unwrap().len()
}

async fn revision_count(server: &Server) -> usize {
    let d = server
        .ok("{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 500) { revision } } }", json!({}))
        .await;
    d["source"]["revisions"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_never_runs_a_mutation_registered_by_apq_hash() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let mutation = "mutation { refreshPlugin(plugin: \"models\", wait: true) { id phase } }";
    let hash = catalog_bff::auth::sha256_hex(mutation);
    let pq = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}}).to_string();
    // Registered over POST (this runs it once, legitimately).
    let (status, _, body) =
        post_json(&server, json!({"query": mutation, "extensions": serde_json::from_str::<Value>(&pq).unwrap()})).await;
    assert_eq!(status, 200);
    assert!(body["data"]["refreshPlugin"]["id"].is_string(), "{body:#}");
    let jobs = job_count(&server).await;
    let revisions = revision_count(&server).await;

    // Hash only, with no `query` and with an empty `query` (the reported attack): 405.
    for params in [vec![("extensions", pq.as_str())], vec![("query", ""), ("extensions", pq.as_str())]] {
        let (status, body) = get(&server, &params).await;
        assert_eq!(status, 405, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "VALIDATION_FAILED", "{v:#}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("POST"), "{v:#}");
    }
    // Over SSE's GET too.
    let r = server
        .client
        .get(format!("{}/graphql/stream", server.base))
        .query(&[("extensions", pq.as_str())])
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(job_count(&server).await, jobs, "nothing ran");
    assert_eq!(revision_count(&server).await, revisions);

    // A hash-only GET *query* answers its result (not GraphiQL).
    let q = "{ plugins { name } }";
    let qpq = json!({"persistedQuery": {"version": 1, "sha256Hash": catalog_bff::auth::sha256_hex(q)}});
    let (_, _, body) = post_json(&server, json!({"query": q, "extensions": qpq})).await;
    assert!(body["data"]["plugins"].is_array());
    let (status, body) = get(&server, &[("extensions", &qpq.to_string())]).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON (GraphiQL?): {body:.200}"));
    assert_eq!(v["data"]["plugins"].as_array().map(Vec::len), Some(2), "{v:#}");
    // A bare GET is still GraphiQL.
    let (status, page) = get(&server, &[]).await;
    assert_eq!(status, 200);
    assert!(page.to_lowercase().contains("graphiql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_never_runs_a_mutation_named_by_trusted_document_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    // Operators (everyone with --auth none) may also send other documents: used to count jobs.
    let args = [
        "--trusted-documents",
        contract.to_str().unwrap(),
        "--trusted-documents-exempt",
        "operator",
        "--rate-limit",
        "0",
    ];
    let server = TestServer::new(dir.path()).database(&db).flags(&args).start().await;
    let jobs = job_count(&server).await;
    let text = std::fs::read_to_string(contract.join("refresh-rollback.graphql")).unwrap();
    let id = json!({"documentId": catalog_bff::auth::sha256_hex(&text)}).to_string();
    let (status, body) = get(
        &server,
        &[("extensions", id.as_str()), ("operationName", "RefreshPlugin"), ("variables", r#"{"plugin":"models"}"#)],
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(job_count(&server).await, jobs, "nothing ran");
    // The same document's query operation runs over GET.
    let (status, body) = get(
        &server,
        &[
            ("extensions", id.as_str()),
            ("operationName", "RefreshJob"),
            ("variables", r#"{"id":"00000000-0000-0000-0000-000000000000"}"#),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("errors").is_none() && v["data"]["refreshJob"].is_null(), "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_limits_apply_on_cache_hits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let q = "{ plugins { name } }";
    for expected in ["miss", "hit"] {
        let (_, headers, body) = post_json(&server, json!({"query": q})).await;
        assert_eq!(headers["x-cache"], expected);
        assert!(body["data"]["plugins"].is_array());
    }
    // A 500 KB padded copy (comments normalise away, so it has the cached entry's key).
    let padded = format!("{q}\n#{}", "x".repeat(500 * 1024));
    let (_, headers, body) = post_json(&server, json!({"query": padded})).await;
    assert!(headers.get("x-cache").is_none(), "served from the cache: {headers:?}");
    assert!(body.get("data").is_none_or(Value::is_null), "{body:#}");
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("the limit is 32768") && msg.contains("--max-document-bytes"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_size_limit_are_refused_on_post_get_and_sse() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--max-response-bytes", "3000"]).start().await;
    // The example's catalog files are ~5 KB together: `content` fields use up the budget.
    let (_, _, body) = post_json(&server, json!({"query": "{ sources { id content } }"})).await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("3000 bytes") && msg.contains("--max-response-bytes"), "{msg}");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "RESPONSE_TOO_LARGE");
    assert!(body.to_string().len() < 6000, "the response was built in full: {} bytes", body.to_string().len());

    // Without large fields: the final check on the serialised size.
    let fields = "id name type enabled labels properties revision status { state lastRefreshSummary lastRefreshTime }";
    let big: String = (0..8).map(|i| format!("s{i}: sources {{ {fields} }} ")).collect();
    let big = format!("{{ {big} }}");
    let (_, _, body) = post_json(&server, json!({"query": big})).await;
    assert_eq!(body["errors"][0]["extensions"]["reason"], "RESPONSE_TOO_LARGE", "{body:#}");
    let (_, text) = get(&server, &[("query", &big)]).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["errors"][0]["extensions"]["reason"], "RESPONSE_TOO_LARGE", "{v:#}");

    // SSE: the one `next` event carries the error instead of the data.
    let r = server
        .client
        .post(format!("{}/graphql/stream", server.base))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .json(&json!({"query": "{ sources { id content } }"}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("RESPONSE_TOO_LARGE") && text.contains("event: complete"), "{text}");

    // WebSocket: the budget is in every request's data, so `content` is refused there too, and
    // the complexity limit holds (both come from the guardrails extension).
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("1", "{ sources { id content } }", json!({})).await;
    let m = ws.next_message(10).await.expect("a result");
    assert_eq!(m["type"], "next", "{m}");
    let errors = m["payload"]["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{m}");
    for e in errors {
        assert_eq!(e["extensions"]["reason"], "RESPONSE_TOO_LARGE", "{m}");
        assert_eq!(e["extensions"]["code"], "VALIDATION_FAILED", "{m}");
    }
    let bomb = "{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 500) { content } } }";
    ws.subscribe("2", bomb, json!({})).await;
    let m = loop {
        let m = ws.next_message(10).await.expect("a result");
        if m["id"] == "2" {
            break m;
        }
    };
    assert!(m.to_string().contains("--max-complexity"), "{m}");

    // Small responses are untouched.
    let d = server.ok("{ plugins { name } }", json!({})).await;
    assert_eq!(d["plugins"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complexity_counts_list_sizes_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    // The reported 823-byte bomb shape: 10 aliases x revisions(limit: 500) { content }.
    let aliases: String =
        (0..10).map(|i| format!("r{i}: revisions(limit: 500) {{ revision action content createdAt }} ")).collect();
    let bomb = format!("{{ source(plugin: \"models\", id: \"team_models\") {{ {aliases} }} }}");
    assert!(bomb.len() < 1024);
    let (_, _, body) = post_json(&server, json!({"query": bomb})).await;
    assert!(body.get("data").is_none_or(Value::is_null), "{body:#}");
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("--max-complexity") && msg.contains("the limit is 5000"), "{msg}");
    // One list alone is enough when it selects `content`.
    let (_, _, body) = post_json(
        &server,
        json!({"query": "{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 500) { content } } }"}),
    )
    .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("--max-complexity"), "{body:#}");
    for q in [
        "{ auditLog(limit: 1000) { actor action plugin sourceId revision outcome } }",
        "{ refreshJobs(limit: 500) { id plugin sourceId phase total completed currentSource startedAt finishedAt error results { status summary durationMs } } }",
    ] {
        let (_, _, body) = post_json(&server, json!({"query": q})).await;
        assert!(body["errors"][0]["message"].as_str().unwrap_or("").contains("--max-complexity"), "{q}: {body:#}");
    }
    // The largest entity page with a few fields still fits under the default.
    let d = server
        .ok("{ entities(plugin: \"models\", first: 500) { edges { node { id name provider } } } }", json!({}))
        .await;
    assert!(d["entities"]["edges"].is_array());
    // The depth error names its flag too.
    let mut q = "name".to_string();
    for _ in 0..20 {
        q = format!("ofType {{ {q} }}");
    }
    let (_, _, body) = post_json(
        &server,
        json!({"query": format!("{{ __type(name: \"Source\") {{ fields {{ type {{ {q} }} }} }} }}")}),
    )
    .await;
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("--max-depth") && msg.contains("the limit is 16"), "{msg}");
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_errors_are_validation_failed_with_the_field_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let cases: &[(&str, Value, &[&str])] = &[
        ("{ entities(plugin: \"models\", first: 100000) { totalCount } }", json!({}), &["first", "500"]),
        ("{ auditLog(limit: 5000) { actor } }", json!({}), &["limit", "1000"]),
        ("{ refreshJobs(limit: 0) { id } }", json!({}), &["limit", "1"]),
        ("query($n: Int) { entities(plugin: \"models\", first: $n) { totalCount } }", json!({"n": 100000}), &["first"]),
        ("query($n: Int!) { refreshJobs(limit: $n) { id } }", json!({"n": "many"}), &["n"]),
        ("{ entities(plugin: 5) { totalCount } }", json!({}), &["plugin"]),
        ("{ plugins { name ", json!({}), &[]),
    ];
    for (q, vars, needles) in cases {
        let (_, headers, body) = post_json(&server, json!({"query": q, "variables": vars})).await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{q}: {body:#}");
        let msg = body["errors"][0]["message"].as_str().unwrap();
        for n in *needles {
            assert!(msg.contains(n), "{q}: `{n}` not in {msg}");
        }
        // Every error names the request id the response carries.
        let id = headers["x-request-id"].to_str().unwrap();
        assert_eq!(body["errors"][0]["extensions"]["requestId"], id, "{q}: {body:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_graphql_shaped_and_carry_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&["--cors-origins", "https://console.example.com"])
        .start()
        .await;
    let url = format!("{}/graphql", server.base);
    // No connection reuse: a refusal that leaves the body unread ends its connection, and a
    // pooled client could pick that connection for the next request (IncompleteMessage).
    // No transparent decoding (the server's reqwest has gzip on, and features unify): the
    // compression checks below read `content-encoding` as sent.
    let c = &reqwest::Client::builder().pool_max_idle_per_host(0).no_gzip().build().unwrap();
    // 413 beyond the body limit (the layer's own refusal, before the handler).
    let big = "x".repeat(2 * 1024 * 1024);
    let r = c.post(&url).header("content-type", "application/json").body(format!("{{\"query\":\"{big}\"}}")).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 413);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED", "{body:#}");
    assert_eq!(body["errors"][0]["extensions"]["requestId"], id.as_str());
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("--max-body-bytes"), "{body:#}");
    // 415 and 405, with the client's id echoed.
    let r = c.post(&url).header("content-type", "text/plain").header("x-request-id", "client-id-42").body("{}");
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.headers()["x-request-id"], "client-id-42");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["requestId"], "client-id-42", "{body:#}");
    let r = c.put(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED", "{body:#}");
    // An id that is not sane is replaced.
    let r = c.get(format!("{}/healthz", server.base)).header("x-request-id", "a b <script>").send().await.unwrap();
    let fresh = r.headers()["x-request-id"].to_str().unwrap();
    assert!(fresh != "a b <script>" && !fresh.is_empty());
    // A GraphQL error in a 200 response carries the id too.
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("x-request-id", "trace-me-7")
        .json(&json!({"query": "{ source(plugin: \"nope\", id: \"x\") { id } }"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND", "{body:#}");
    assert_eq!(body["errors"][0]["extensions"]["requestId"], "trace-me-7");
    // ... and appears in the access log line of that request.
    let mut logged = false;
    for _ in 0..50 {
        if server.log_text().lines().any(|l| l.contains("trace-me-7") && l.contains("status") && l.contains("latency"))
        {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged, "no access log line with the request id:\n{}", server.log_text());
    // CORS (tower-http): the configured origin only.
    for (origin, allowed) in [("https://console.example.com", true), ("https://evil.example", false)] {
        let r = c
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(r.headers().get("access-control-allow-origin").is_some(), allowed, "{origin}");
    }
    // Compression for JSON, never for an event stream.
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .json(&json!({"query": "{ sources { id name type labels status { state } } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
    let r = c
        .post(format!("{}/graphql/stream", server.base))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip")
        .json(&json!({"query": "{ sources { id name type labels status { state } } }"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert!(r.text().await.unwrap().contains("event: next"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_name_labels_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    // 500 random names, each document sent twice (so it counts as seen before).
    for i in 0..500u32 {
        let name = format!("Op{:08x}", i.wrapping_mul(2_654_435_761));
        let doc = format!("query {name} {{ plugins {{ name }} }}");
        for _ in 0..2 {
            let (_, _, body) = post_json(&server, json!({"query": doc, "operationName": name})).await;
            assert!(body["data"]["plugins"].is_array());
        }
    }
    let text = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let series = text.lines().filter(|l| l.starts_with("catalog_bff_graphql_operations_total{")).count();
    assert!(series <= 200 + 5, "{series} series");
    assert!(text.contains("catalog_bff_graphql_operations_total{operation=\"other\",outcome=\"ok\"}"));
}

/// A cached `POST /graphql` runs without a request span (the hot path); its access line must
/// still name the request exactly as the span would, on a miss and on a hit, and a line logged
/// while the request runs (the audit line of a mutation) must still carry the request's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_and_in_request_log_lines_name_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).start().await;
    let c = reqwest::Client::new();
    let url = format!("{}/graphql", server.base);
    let query = json!({"query": "{ sources { plugin id revision } }"});
    let mut outcomes = Vec::new();
    for id in ["read-miss-1", "read-hit-2"] {
        let r = c.post(&url).header("x-request-id", id).json(&query).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-request-id"], id);
        outcomes.push(r.headers()["x-cache"].to_str().unwrap().to_string());
    }
    assert_eq!(outcomes, ["miss", "hit"], "the second read must be answered from the cache");
    let apply = json!({"query": APPLY, "variables": {"plugin": "models", "input": {"id": "team_models", "labels": ["Logged"]}}});
    let r = c.post(&url).header("x-request-id", "audit-me-3").json(&apply).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(body["errors"].is_null(), "{body:#}");

    // The test servers log JSON: the same span, as `span` and as the last of `spans`.
    let in_span = |v: &Value, id: &str| {
        let span = json!({"method": "POST", "path": "/graphql", "request_id": id, "name": "request"});
        v["span"] == span && v["spans"].as_array().and_then(|s| s.last()) == Some(&span)
    };
    let lines = |text: &str, target: &str, id: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == target && in_span(v, id))
            .collect()
    };
    let ids = ["read-miss-1", "read-hit-2", "audit-me-3"];
    let mut text = String::new();
    for _ in 0..50 {
        text = server.log_text();
        if ids.iter().all(|id| !lines(&text, "tower_http::trace::on_response", id).is_empty())
            && !lines(&text, "audit", "audit-me-3").is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for id in ids {
        let access = lines(&text, "tower_http::trace::on_response", id);
        assert_eq!(access.len(), 1, "one access line in the request's span for {id}:\n{text}");
        assert_eq!(access[0]["fields"]["message"], "finished processing request");
        assert_eq!(access[0]["fields"]["status"], 200);
        assert!(access[0]["fields"]["latency"].as_str().is_some_and(|l| l.ends_with(" ms")), "{}", access[0]);
    }
    let audited = lines(&text, "audit", "audit-me-3");
    assert_eq!(audited.len(), 1, "the mutation's audit line in the request's span:\n{text}");
    assert_eq!(audited[0]["fields"]["action"], "applySource", "{}", audited[0]);
}

/// A body that arrives in several chunks is read whole (the handler joins the frames) and the
/// body limit counts all of them: over the limit is a 413, whatever the chunking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_joined_and_limited_as_a_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--max-body-bytes", "4096"]).start().await;
    let addr = server.base.trim_start_matches("http://").to_string();
    // One request per connection, its chunks written one by one with a pause between them.
    let send = |chunks: Vec<String>| {
        let addr = addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            for c in &chunks {
                s.write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes()).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            }
            // The server may answer (and close) before the last chunk when it refuses early.
            let _ = s.write_all(b"0\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).to_string()
        }
    };
    let body = json!({"query": "{ sources { plugin id } }"}).to_string();
    let (a, b) = body.split_at(10);
    let (b, c) = b.split_at(12);
    let answer = send(vec![a.to_string(), b.to_string(), c.to_string()]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"plugin\":\"models\""), "the joined body ran as one query: {answer}");
    // Three chunks of 2 KB each: every chunk is under the limit and under the read cap (the
    // limit + 1 KiB), their sum is past both.
    let filler = "x".repeat(2048);
    let answer = send(vec![format!("{{\"query\":\"{filler}"), filler.clone(), format!("{filler}\"}}")]).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Refused while reading (the cap counts every chunk), not after buffering the whole body,
    // whose own check would name its size.
    assert!(answer.contains("the request body is too large; the limit is 4096 bytes"), "{answer}");
}
