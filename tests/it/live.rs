//! Live refresh: async jobs, progress and change events over WebSocket and SSE (with the real
//! npm clients graphql-ws and graphql-sse, and a Rust client), the cache, external edits.

use crate::support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;

const EVENTS: &str =
    "subscription($p: String) { catalogEvents(plugin: $p) { kind plugin sourceId revision jobId at } }";
const PROGRESS: &str = "subscription($id: ID!) { refreshProgress(jobId: $id) { id phase queuedReason total completed currentSource results { sourceId status } } }";

async fn wait_subscribers(server: &Server, n: f64) {
    eventually("subscriptions become active", Duration::from_secs(20), async || {
        let active = server.metric("catalog_bff_subscriptions_active").await;
        if active < n { Err(active) } else { Ok(()) }
    })
    .await;
}

/// Two url sources behind a slow host, so a plugin job takes a while.
async fn slow_plugin(dir: &std::path::Path, delay_ms: u64) -> CatalogHost {
    let host = CatalogHost::start(models_yaml(3)).await;
    host.state.lock().unwrap().delay_ms = delay_ms;
    let sources = format!(
        "model_catalogs:\n  - name: Slow A\n    id: slow_a\n    type: url\n    properties:\n      url: {u}\n  - name: Slow B\n    id: slow_b\n    type: url\n    properties:\n      url: {u}\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\nmcp_catalogs:\n  - name: M\n    id: m\n    type: yaml\n    properties:\n      yamlCatalogPath: m.yaml\n",
        u = host.url
    );
    std::fs::write(dir.join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.join("local.yaml"), models_yaml(2)).unwrap();
    std::fs::write(dir.join("m.yaml"), "mcp_servers:\n  - name: s1\n  - name: s2\n").unwrap();
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_graphql_ws_and_graphql_sse_receive_events_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    // Slow enough that the node client is surely subscribed while the job still waits.
    let _host = slow_plugin(dir.path(), 3000).await;
    // One job fetching url sources at a time, so a second one observably waits.
    let server = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&[
            "--max-running-jobs",
            "1",
            "--max-running-fetches",
            "1",
            "--refresh-concurrency",
            "1",
            "--url-allow",
            "127.0.0.1",
        ])
        .start()
        .await;

    for (round, transport) in ["ws", "sse"].into_iter().enumerate() {
        // The previous round's clients are gone once the server has noticed their close.
        eventually("old subscriptions end", Duration::from_secs(20), async || {
            let active = server.metric("catalog_bff_subscriptions_active").await;
            if active > 0.0 { Err(active) } else { Ok(()) }
        })
        .await;
        let (_child, mut events) = node_client(transport, &server.base, EVENTS, json!({"p": "models"}));
        assert_eq!(next_line(&mut events, 20).await, "CONNECTED");
        wait_subscribers(&server, 1.0).await;

        let t0 = Instant::now();
        let out = server
            .ok(APPLY, json!({"plugin": "models", "input": {"id": "local", "content": models_yaml(3 + round)}, "options": {"refreshAfterApply": true}}))
            .await;
        let rev = out["applySource"]["revision"].as_i64().unwrap();
        let mut kinds = Vec::new();
        while !kinds.contains(&"REFRESHED".to_string()) {
            let line = next_line(&mut events, 20).await;
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{transport}: {line}"));
            let ev = &v["data"]["catalogEvents"];
            assert_eq!(ev["plugin"], "models");
            if ev["kind"] == "APPLIED" {
                assert_eq!(ev["sourceId"], "local");
                assert_eq!(ev["revision"], rev);
            }
            kinds.push(ev["kind"].as_str().unwrap().to_string());
        }
        eprintln!("{transport}: APPLIED..REFRESHED seen {:?} after apply started", t0.elapsed());
        assert!(kinds.contains(&"APPLIED".to_string()), "{transport}: {kinds:?}");

        // A plugin job behind a running one: its url sources wait for the fetch slot (its yaml
        // source need not), saying why, then it runs with monotonic progress, then done.
        let blocker = server.ok("mutation { refreshPlugin(plugin: \"mcp\", wait: false) { id } }", json!({})).await;
        let _ = blocker;
        let slow = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"slow_a\", wait: false) { id } }", json!({}))
            .await;
        let job =
            server.ok("mutation { refreshPlugin(plugin: \"models\", wait: false) { id phase } }", json!({})).await;
        let id = job["refreshPlugin"]["id"].as_str().unwrap().to_string();
        let _ = slow;
        let (_c2, mut progress) = node_client(transport, &server.base, PROGRESS, json!({"id": id}));
        assert_eq!(next_line(&mut progress, 20).await, "CONNECTED");
        let mut phases = Vec::new();
        let mut completed = Vec::new();
        let mut reasons = Vec::new();
        loop {
            let line = next_line(&mut progress, 30).await;
            if line == "COMPLETE" {
                break;
            }
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{transport}: {line}"));
            let j = &v["data"]["refreshProgress"];
            assert_eq!(j["id"], id.as_str());
            phases.push(j["phase"].as_str().unwrap().to_string());
            completed.push(j["completed"].as_u64().unwrap());
            reasons.extend(j["queuedReason"].as_str().map(str::to_string));
        }
        assert!(matches!(phases.first().map(String::as_str), Some("QUEUED" | "RUNNING")), "{transport}: {phases:?}");
        assert!(
            reasons.iter().any(|r| r.contains("waiting for a fetch slot") && r.contains("--max-running-fetches 1")),
            "{transport}: {reasons:?}"
        );
        assert!(phases.contains(&"RUNNING".to_string()), "{transport}: {phases:?}");
        assert_eq!(phases.last().map(String::as_str), Some("SUCCEEDED"), "{transport}: {phases:?}");
        assert!(completed.windows(2).all(|w| w[0] <= w[1]), "{transport}: completed not monotonic: {completed:?}");
        assert_eq!(completed.last(), Some(&3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_follows_progress_and_a_finished_job_completes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let _host = slow_plugin(dir.path(), 200).await;
    let server = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&["--refresh-concurrency", "1", "--url-allow", "127.0.0.1"])
        .start()
        .await;
    let job =
        server.ok("mutation { refreshPlugin(plugin: \"models\", wait: false) { id phase total } }", json!({})).await;
    let id = job["refreshPlugin"]["id"].as_str().unwrap().to_string();
    assert!(["QUEUED", "RUNNING"].contains(&job["refreshPlugin"]["phase"].as_str().unwrap()));
    // A second request for the same target gets the running job.
    let again = server.ok("mutation { refreshPlugin(plugin: \"models\", wait: false) { id } }", json!({})).await;
    assert_eq!(again["refreshPlugin"]["id"], id.as_str());

    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("1", PROGRESS, json!({"id": id})).await;
    let mut last = json!(null);
    loop {
        let m = ws.next_message(30).await.expect("message");
        match m["type"].as_str() {
            Some("next") => last = m["payload"]["data"]["refreshProgress"].clone(),
            Some("complete") => break,
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert_eq!(last["phase"], "SUCCEEDED");
    assert_eq!(last["completed"], 3);
    // The job is persisted; subscribing to it now yields the final state and completes.
    ws.subscribe("2", PROGRESS, json!({"id": id})).await;
    let m = ws.next_message(10).await.unwrap();
    assert_eq!(m["payload"]["data"]["refreshProgress"]["phase"], "SUCCEEDED");
    assert_eq!(ws.next_message(10).await.unwrap()["type"], "complete");
    let stored = server
        .ok(
            "query($id: ID!) { refreshJob(id: $id) { phase total completed results { sourceId status } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(stored["refreshJob"]["results"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_delay_a_refresh_of_1000_entities() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    // Subscribers that never read: events and progress.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut ws = WsClient::connect(&server.base, None).await.unwrap();
        ws.subscribe("e", EVENTS, json!({})).await;
        stalled.push(ws);
    }
    wait_subscribers(&server, 3.0).await;
    let stall_started = Instant::now();
    std::fs::write(dir.path().join("team-models.yaml"), models_yaml(1000)).unwrap();
    let mut durations = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        let job = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\", confirmRemovals: true) { phase results { entitiesLoaded } } }", json!({}))
            .await;
        assert_eq!(job["refreshSource"]["phase"], "SUCCEEDED", "round {round}");
        assert_eq!(job["refreshSource"]["results"][0]["entitiesLoaded"], 1000);
        durations.push(t.elapsed());
    }
    // All five refreshes finished while the subscribers were still not reading.
    assert!(
        stall_started.elapsed() < Duration::from_secs(10),
        "refreshes waited for stalled subscribers: {durations:?}"
    );
    eprintln!("refresh of 1000 entities with 3 stalled subscribers: {durations:?}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stall_started.elapsed())).await;
    // The stalled subscribers are still served once they read.
    let m = stalled[0].next_message(10).await.expect("event after the stall");
    assert_eq!(m["type"], "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_mutation_response_never_see_older_state() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, dir.path()).await;
        // 500 applies in a row: the per-caller rate limit is not what this test is about.
        let server =
            std::sync::Arc::new(TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await);
        std::fs::write(dir.path().join("partner-models.yaml"), models_yaml(1)).unwrap();
        server.ok("mutation { refreshSource(plugin: \"models\", id: \"partner_models\", confirmRemovals: true) { phase } }", json!({})).await;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // (response arrived at, revision, count) per apply.
        let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, i64, u64)>::new()));
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (server, done) = (server.clone(), done.clone());
            readers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let d = server
                        .ok("{ sources(plugin: \"models\") { id revision status { entityCount } } }", json!({}))
                        .await;
                    let s =
                        d["sources"].as_array().unwrap().iter().find(|s| s["id"] == "partner_models").unwrap().clone();
                    seen.push((started, s["revision"].as_i64().unwrap(), s["status"]["entityCount"].as_u64().unwrap()));
                }
                seen
            }));
        }
        let applies = 500;
        for i in 0..applies {
            let n = 2 + i;
            let out = server
                .ok(APPLY, json!({"plugin": "models", "input": {"id": "partner_models", "content": models_yaml(n)}, "options": {"refreshAfterApply": true}}))
                .await;
            let rev = out["applySource"]["revision"].as_i64().unwrap();
            assert_eq!(out["applySource"]["source"]["status"]["entityCount"], n);
            acks.lock().unwrap().push((Instant::now(), rev, n as u64));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let acks = acks.lock().unwrap().clone();
        let mut reads = 0;
        for r in readers {
            for (started, rev, count) in r.await.unwrap() {
                reads += 1;
                // The newest apply whose response had arrived before this read started.
                if let Some((_, want_rev, want_count)) = acks.iter().rev().find(|(at, _, _)| *at <= started) {
                    assert!(
                        rev >= *want_rev,
                        "{backend:?}: read saw revision {rev} after revision {want_rev} was acknowledged"
                    );
                    assert!(
                        count >= *want_count,
                        "{backend:?}: read saw {count} entities after {want_count} were acknowledged"
                    );
                }
            }
        }
        let hits = server.metric("catalog_bff_cache_hits_total").await;
        eprintln!("{backend:?}: {applies} applies, {reads} concurrent reads checked, cache hits {hits}");
        assert!(reads > 100, "readers barely ran: {reads}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_are_counted_and_mutations_invalidate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let post = |q: &'static str| {
        server
            .client
            .post(format!("{}/graphql", server.base))
            .header("content-type", "application/json")
            .json(&json!({"query": q}))
            .send()
    };
    let q = "{ sources { id revision status { entityCount } } }";
    let a = post(q).await.unwrap();
    assert_eq!(a.headers()["x-cache"], "miss");
    let b = post("{  sources {  id revision status { entityCount } } }").await.unwrap();
    assert_eq!(b.headers()["x-cache"], "hit", "whitespace must not matter");
    assert_eq!(server.metric("catalog_bff_cache_hits_total").await, 1.0);
    server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
    let c = post(q).await.unwrap();
    assert_eq!(c.headers()["x-cache"], "miss", "a mutation must invalidate");
    assert!(server.metric("catalog_bff_cache_misses_total").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_dry_run_and_the_removal_guard() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let inc = server
            .ok("mutation { refreshPlugin(plugin: \"models\", mode: INCREMENTAL) { phase results { sourceId status entitiesUnchanged entitiesLoaded summary } } }", json!({}))
            .await;
        let results = inc["refreshPlugin"]["results"].as_array().unwrap();
        let team = results.iter().find(|r| r["sourceId"] == "team_models").unwrap();
        assert_eq!(team["entitiesUnchanged"], 3, "{backend:?}: {team:#}");
        assert!(team["summary"].as_str().unwrap().starts_with("Unchanged"));

        // Dry run: the impact with names, nothing changes.
        let text = std::fs::read_to_string(dir.path().join("team-models.yaml")).unwrap();
        let truncated = text[..text.find("  - name: acme/embedder-small").unwrap()].to_string();
        std::fs::write(dir.path().join("team-models.yaml"), &truncated).unwrap();
        let dry = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\", dryRun: true) { results { dryRun impact { toRemove removedNames unchanged } } } }", json!({}))
            .await;
        let impact = &dry["refreshSource"]["results"][0]["impact"];
        assert_eq!(impact["toRemove"], 2);
        assert_eq!(impact["removedNames"], json!(["acme/embedder-small", "acme/code-helper-7b"]));
        let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await;
        assert_eq!(src["source"]["status"]["entityCount"], 3, "a dry run changed something");

        // The truncated file removes 2 of 3: refused without confirmRemovals, entities kept.
        let guarded = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase results { status diagnostics { message hint } } } }", json!({}))
            .await;
        assert_eq!(guarded["refreshSource"]["results"][0]["status"], "FAILURE");
        let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await;
        assert_eq!(src["source"]["status"]["entityCount"], 3);
        assert!(src["source"]["status"]["lastError"].as_str().unwrap().contains("confirmRemovals"));
        let confirmed = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\", confirmRemovals: true) { results { status entitiesLoaded entitiesRemoved } } }", json!({}))
            .await;
        assert_eq!(confirmed["refreshSource"]["results"][0]["entitiesRemoved"], 2);

        // Apply: the same guard, as REMOVALS_NEED_CONFIRMATION with the impact.
        let body = server
            .gql(APPLY, json!({"plugin": "mcp", "input": {"id": "lab_mcp", "content": "mcpservers: []\n"}}))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("REMOVALS_NEED_CONFIRMATION"), "{body:#}");
        assert_eq!(body["errors"][0]["extensions"]["impact"]["toRemove"], 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_sources_200_304_retry_and_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let host = CatalogHost::start(models_yaml(4)).await;
    host.state.lock().unwrap().etag = Some("\"v1\"".into());
    std::fs::create_dir_all(dir.path().join("secrets/catalog-host")).unwrap();
    std::fs::write(dir.path().join("secrets/catalog-host/token"), "s3cr3t\n").unwrap();
    let sources = format!(
        "model_catalogs:\n  - name: Remote\n    id: remote\n    type: url\n    properties:\n      url: {}\n      authSecretRef: {{name: catalog-host, key: token}}\n",
        host.url
    );
    std::fs::write(dir.path().join("sources.yaml"), sources).unwrap();
    let secrets = dir.path().join("secrets");
    let server = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&[
            "--fetch-backoff-ms",
            "20",
            "--fetch-max-bytes",
            "20000",
            "--secrets-dir",
            secrets.to_str().unwrap(),
            "--url-allow",
            "127.0.0.1",
        ])
        .start()
        .await;
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "remote"})).await;
    assert_eq!(src["source"]["status"]["state"], "AVAILABLE", "{src:#}");
    assert_eq!(src["source"]["status"]["entityCount"], 4);
    assert_eq!(host.state.lock().unwrap().last_auth.as_deref(), Some("Bearer s3cr3t"));

    // INCREMENTAL costs one 304.
    let before = host.state.lock().unwrap().requests;
    let inc = server.ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", mode: INCREMENTAL) { results { status entitiesUnchanged } } }", json!({})).await;
    assert_eq!(inc["refreshSource"]["results"][0]["entitiesUnchanged"], 4);
    let (requests, not_modified) = {
        let st = host.state.lock().unwrap();
        (st.requests, st.not_modified)
    };
    assert_eq!((requests - before, not_modified), (1, 1));

    // 500 twice, then 200: retried with backoff and loaded.
    {
        let mut st = host.state.lock().unwrap();
        st.fail_next = 2;
        st.body = models_yaml(5);
        st.etag = Some("\"v2\"".into());
    }
    let before = host.state.lock().unwrap().requests;
    let r = server
        .ok(
            "mutation { refreshSource(plugin: \"models\", id: \"remote\") { results { status entitiesLoaded } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["refreshSource"]["results"][0]["status"], "SUCCESS");
    assert_eq!(r["refreshSource"]["results"][0]["entitiesLoaded"], 5);
    assert_eq!(host.state.lock().unwrap().requests - before, 3);

    // An oversized body is refused and the last good entities stay.
    host.state.lock().unwrap().body = models_yaml(400);
    let r = server.ok("mutation { refreshSource(plugin: \"models\", id: \"remote\") { results { status diagnostics { message } } } }", json!({})).await;
    assert_eq!(r["refreshSource"]["results"][0]["status"], "FAILURE");
    let msg = r["refreshSource"]["results"][0]["diagnostics"][0]["message"].as_str().unwrap();
    assert!(msg.contains("limit of 20000 bytes") || msg.contains("the limit is 20000"), "{msg}");
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "remote"})).await;
    assert_eq!(src["source"]["status"]["entityCount"], 5);
    assert_eq!(src["source"]["status"]["state"], "ERROR");

    // Persistent 500s: fails after the retries with the reason.
    host.state.lock().unwrap().fail_next = 100;
    let r = server.ok("mutation { refreshSource(plugin: \"models\", id: \"remote\") { results { status diagnostics { message } } } }", json!({})).await;
    let msg = r["refreshSource"]["results"][0]["diagnostics"][0]["message"].as_str().unwrap();
    assert!(msg.contains("HTTP 500") && msg.contains("after 4 attempts"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_refresh_reads_failed_after_restart() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, dir.path()).await;
        let host = slow_plugin(dir.path(), 0).await;
        let sources = dir.path().join("sources.yaml");
        let server = TestServer::new(dir.path())
            .sources(&sources)
            .database(&db)
            .flags(&["--refresh-concurrency", "1", "--url-allow", "127.0.0.1"])
            .start()
            .await;
        host.state.lock().unwrap().delay_ms = 60_000;
        let job = server.ok("mutation { refreshPlugin(plugin: \"models\", wait: false) { id } }", json!({})).await;
        let id = job["refreshPlugin"]["id"].as_str().unwrap().to_string();
        eventually("the job runs", Duration::from_secs(10), async || {
            let j = server.ok("query($id: ID!) { refreshJob(id: $id) { phase } }", json!({"id": id})).await;
            if j["refreshJob"]["phase"] == "RUNNING" { Ok(()) } else { Err(j) }
        })
        .await;
        let (dir_path, db) = server.kill();
        host.state.lock().unwrap().delay_ms = 0;
        // PostgreSQL may have other live replicas: a job is failed only once its lease expired.
        let server = TestServer::new(&dir_path)
            .sources(&sources)
            .database(&db)
            .flags(&["--url-allow", "127.0.0.1", "--job-lease", "3"])
            .start()
            .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let j = loop {
            let j = server
                .ok("query($id: ID!) { refreshJob(id: $id) { phase error finishedAt } }", json!({"id": id}))
                .await;
            if j["refreshJob"]["phase"] == "FAILED" || backend == Backend::Sqlite || Instant::now() > deadline {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(j["refreshJob"]["phase"], "FAILED", "{backend:?}: {j:#}");
        let expected = match backend {
            Backend::Sqlite => "interrupted by restart",
            Backend::Postgres => "stopped renewing its lease",
        };
        assert!(j["refreshJob"]["error"].as_str().unwrap_or_default().contains(expected), "{j:#}");
        assert!(j["refreshJob"]["finishedAt"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_edits_are_noticed_recorded_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--watch-interval", "0.2"]).start().await;
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("e", EVENTS, json!({"p": "mcp"})).await;
    wait_subscribers(&server, 1.0).await;
    let q = "{ x: sources(plugin: \"mcp\") { id revision status { entityCount state lastError } revisions { actor action } } }";
    let _ = server.ok(q, json!({})).await; // warm the cache: the edit must invalidate it

    // A valid hand edit: one more flat MCP server.
    let path = dir.path().join("lab-mcp-servers.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}  - name: \"hand-added\"\n    toolCount: 1\n")).unwrap();
    let m = ws.next_message(20).await.expect("event");
    let ev = &m["payload"]["data"]["catalogEvents"];
    assert_eq!(ev["kind"], "CONFIG_CHANGED_EXTERNALLY", "{m}");
    assert_eq!(ev["sourceId"], "lab_mcp");
    eventually("the external edit is picked up", Duration::from_secs(20), async || {
        let d = server.ok(q, json!({})).await;
        let lab = d["x"].as_array().unwrap().iter().find(|s| s["id"] == "lab_mcp").unwrap().clone();
        if lab["status"]["entityCount"] == 3 {
            assert_eq!(lab["revisions"][0]["actor"], "external");
            assert_eq!(lab["revisions"][0]["action"], "EXTERNAL");
            return Ok(());
        }
        Err(lab)
    })
    .await;

    // An invalid hand edit keeps the last good entities and shows the error.
    std::fs::write(&path, "mcpservers:\n  - name: broken\n    toolCont: 1\n").unwrap();
    eventually("the invalid external edit is surfaced", Duration::from_secs(20), async || {
        let d = server.ok(q, json!({})).await;
        let lab = d["x"].as_array().unwrap().iter().find(|s| s["id"] == "lab_mcp").unwrap().clone();
        if lab["status"]["state"] == "ERROR" {
            assert_eq!(lab["status"]["entityCount"], 3);
            let err = lab["status"]["lastError"].as_str().unwrap();
            assert!(err.contains("lab-mcp-servers.yaml:3:5") && err.contains("toolCount"), "{err}");
            return Ok(());
        }
        Err(lab)
    })
    .await;

    // An invalid sources file keeps the last good configuration and says why: degraded, not
    // failed (the probe stays up while the last good configuration is served).
    std::fs::write(dir.path().join("sources.yaml"), "mcp_catalogs: [\n").unwrap();
    eventually("/readyz reports the invalid sources file as degraded", Duration::from_secs(20), async || {
        let r = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if body["degraded"][0] == "config" {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["failed"], json!([]));
            assert!(body.to_string().contains("invalid YAML"), "{body}");
            return Ok(());
        }
        Err((status, body))
    })
    .await;
    let d = server.ok("{ sources { id } configErrors { message line } }", json!({})).await;
    assert_eq!(d["sources"].as_array().unwrap().len(), 5);
    assert!(d["configErrors"][0]["line"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_open_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("e", EVENTS, json!({})).await;
    wait_subscribers(&server, 1.0).await;
    let pid = server.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let m = ws.next_message(10).await.expect("complete before close");
    assert_eq!(m["type"], "complete", "{m}");
    assert_eq!(m["id"], "e");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_graphql_ws_protocol_and_keepalive_pings() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--keepalive-interval", "0.3"]).start().await;

    // graphql-transport-ws: the server pings an idle connection.
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    let raw = tokio::time::timeout(Duration::from_secs(5), ws.socket.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(raw.to_text().unwrap()).unwrap()["type"], "ping");

    // Legacy subscriptions-transport-ws ("graphql-ws"): ack, keep-alive `ka`, `start` → `data`.
    let mut req = format!("{}/graphql/ws", server.base.replacen("http", "ws", 1)).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-ws".parse().unwrap());
    let (mut legacy, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-ws");
    legacy.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.unwrap();
    let start = json!({"id": "1", "type": "start", "payload": {"query": EVENTS, "variables": {"p": "models"}}});
    let mut seen = Vec::new();
    let mut started = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen.contains(&"data".to_string()) && seen.contains(&"ka".to_string())) {
        assert!(Instant::now() < deadline, "legacy protocol saw only {seen:?}");
        let msg = tokio::time::timeout(Duration::from_secs(10), legacy.next()).await.unwrap().unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        let kind = v["type"].as_str().unwrap().to_string();
        if kind == "connection_ack" && !started {
            legacy.send(Message::Text(start.to_string().into())).await.unwrap();
            started = true;
            wait_subscribers(&server, 1.0).await;
            server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
        }
        if kind == "data" {
            assert!(v["payload"]["data"]["catalogEvents"]["kind"].is_string(), "{v}");
        }
        seen.push(kind);
    }
    assert!(seen.contains(&"ka".to_string()), "no keep-alive on the legacy protocol: {seen:?}");
}
