//! Issue 9, item 2: several replicas, one truth. Three real binaries share one sources
//! directory and one PostgreSQL; changes travel by LISTEN/NOTIFY (the file watcher is off with
//! `--watch-interval 0`, so only the change feed can carry them): an apply on A is read on B
//! with its consistency token, B's and C's subscribers get its event, a job on A is followed
//! from C, a killed replica's job is failed by another after its lease, two applies with the
//! same expectedRevision on two replicas have exactly one winner, and a replica that lost its
//! feed (a PostgreSQL restart or a silent network cut, by a TCP proxy) catches up after
//! reconnecting.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const EVENTS: &str = "subscription($p: String) { catalogEvents(plugin: $p) { kind plugin sourceId revision jobId } }";
const PROGRESS: &str = "subscription($id: ID!) { refreshProgress(jobId: $id) { id phase total completed } }";
const JOB: &str = "query($id: ID!) { refreshJob(id: $id) { id phase error completed } }";
const LABELS: &str = "query($id: ID!) { source(plugin: \"models\", id: $id) { labels revision } }";

/// A sources dir with a yaml source `local` and a url source `slow` behind `host`.
fn write_sources(dir: &Path, host: &CatalogHost) {
    let sources = format!(
        "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Slow\n    id: slow\n    type: url\n    properties:\n      url: {}\nmcp_catalogs:\n  - name: M\n    id: m\n    type: yaml\n    properties:\n      yamlCatalogPath: m.yaml\n",
        host.url
    );
    std::fs::write(dir.join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.join("local.yaml"), models_yaml(2)).unwrap();
    std::fs::write(dir.join("m.yaml"), "mcp_servers:\n  - name: s1\n").unwrap();
}

/// Starts a replica named `name` on the shared dir and database.
async fn replica(dir: &Path, db: &str, name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--watch-interval", "0", "--url-allow", "127.0.0.1", "--rate-limit", "0", "--replica-id", name];
    args.extend_from_slice(extra);
    TestServer::new(dir).sources(dir.join("sources.yaml")).database(db).flags(&args).start().await
}

/// POSTs with optional `X-Catalog-Min-Generation`; returns the body and `X-Catalog-Generation`.
async fn post(server: &Server, query: &str, variables: Value, min_generation: Option<u64>) -> (Value, Option<u64>) {
    let mut req =
        server.client.post(format!("{}/graphql", server.base)).json(&json!({"query": query, "variables": variables}));
    if let Some(g) = min_generation {
        req = req.header("x-catalog-min-generation", g.to_string());
    }
    let resp = req.send().await.unwrap();
    let token = resp.headers().get("x-catalog-generation").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (resp.json().await.unwrap(), token)
}

async fn wait_subscribers(server: &Server, n: f64) {
    eventually("subscriptions become active", Duration::from_secs(20), async || {
        let active = server.metric("catalog_bff_subscriptions_active").await;
        if active < n { Err(active) } else { Ok(()) }
    })
    .await;
}

/// The next `catalogEvents` payload of kind `kind` on `ws` (others are skipped).
async fn next_event(ws: &mut WsClient, kind: &str) -> Value {
    loop {
        let msg = ws.next_message(20).await.unwrap_or_else(|| panic!("no {kind} event within 20 s"));
        let ev = &msg["payload"]["data"]["catalogEvents"];
        if ev["kind"] == kind {
            return ev.clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_on_a_is_read_on_b_with_its_token_and_reaches_subscribers_on_b_and_c() {
    if skip_without_postgres("an_apply_on_a_is_read_on_b_with_its_token_and_reaches_subscribers_on_b_and_c") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let a = replica(dir.path(), &db, "replica-a", &[]).await;
    let b = replica(dir.path(), &db, "replica-b", &[]).await;
    let c = replica(dir.path(), &db, "replica-c", &[]).await;
    let mut on_b = WsClient::connect(&b.base, None).await.unwrap();
    on_b.subscribe("1", EVENTS, json!({"p": "models"})).await;
    let mut on_c = WsClient::connect(&c.base, None).await.unwrap();
    on_c.subscribe("1", EVENTS, json!({"p": "models"})).await;
    wait_subscribers(&b, 1.0).await;
    wait_subscribers(&c, 1.0).await;

    let (out, token) =
        post(&a, APPLY, json!({"plugin": "models", "input": {"id": "local", "labels": ["saved on A"]}}), None).await;
    assert!(out["errors"].is_null(), "{out:#}");
    let revision = out["data"]["applySource"]["revision"].as_i64().unwrap();
    let token = token.expect("a mutation response carries X-Catalog-Generation");
    assert!(token > 0);
    assert_eq!(out["extensions"]["catalogGeneration"], token, "{out:#}");

    // B with the token: waits until it has applied A's change, then serves it.
    let (read, _) = post(&b, LABELS, json!({"id": "local"}), Some(token)).await;
    assert!(read["errors"].is_null(), "{read:#}");
    assert_eq!(read["data"]["source"]["labels"], json!(["saved on A"]), "{read:#}");
    assert_eq!(read["data"]["source"]["revision"], revision);

    for ws in [&mut on_b, &mut on_c] {
        let ev = next_event(ws, "APPLIED").await;
        assert_eq!(ev["sourceId"], "local");
        assert_eq!(ev["revision"], revision);
    }
    // C converges too (no token: the same generation is reached by the feed).
    let (read_c, _) = post(&c, LABELS, json!({"id": "local"}), Some(token)).await;
    assert_eq!(read_c["data"]["source"]["labels"], json!(["saved on A"]), "{read_c:#}");

    // A token from the future: a clear UNAVAILABLE naming both generations, after the bound.
    let (behind, _) = post(&b, LABELS, json!({"id": "local"}), Some(token + 1_000_000)).await;
    assert_eq!(error_code(&behind).as_deref(), Some("UNAVAILABLE"), "{behind:#}");
    let msg = behind["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("replica is behind") && msg.contains(&(token + 1_000_000).to_string()), "{msg}");
    assert!(behind["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() > 0);

    // Entities refreshed on A are served by B (B reloads the snapshot; no job of its own).
    let content = models_yaml(5);
    let (out, token) = post(
        &a,
        APPLY,
        json!({"plugin": "models", "input": {"id": "local", "content": content}, "options": {"refreshAfterApply": true}}),
        None,
    )
    .await;
    assert!(out["errors"].is_null(), "{out:#}");
    let (ents, _) =
        post(&b, "{ entities(plugin: \"models\", sourceId: \"local\") { totalCount } }", json!({}), token).await;
    assert_eq!(ents["data"]["entities"]["totalCount"], 5, "{ents:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_is_followed_from_c_to_its_end_and_shared_by_b() {
    if skip_without_postgres("a_job_on_a_is_followed_from_c_to_its_end_and_shared_by_b") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let a = replica(dir.path(), &db, "replica-a", &[]).await;
    let b = replica(dir.path(), &db, "replica-b", &[]).await;
    let c = replica(dir.path(), &db, "replica-c", &[]).await;
    host.state.lock().unwrap().delay_ms = 2500;

    let (job, _) =
        post(&a, "mutation { refreshSource(plugin: \"models\", id: \"slow\", wait: false) { id } }", json!({}), None)
            .await;
    let id = job["data"]["refreshSource"]["id"].as_str().unwrap().to_string();
    // The same target on B while A runs it: B answers with A's job, it does not start one.
    let (again, _) =
        post(&b, "mutation { refreshSource(plugin: \"models\", id: \"slow\", wait: false) { id } }", json!({}), None)
            .await;
    assert_eq!(again["data"]["refreshSource"]["id"], id, "{again:#}");

    let mut ws = WsClient::connect(&c.base, None).await.unwrap();
    ws.subscribe("p", PROGRESS, json!({"id": id})).await;
    let mut phases = Vec::new();
    loop {
        let msg = ws.next_message(30).await.expect("progress or complete within 30 s");
        if msg["type"] == "complete" {
            break;
        }
        let j = &msg["payload"]["data"]["refreshProgress"];
        assert_eq!(j["id"], id, "{msg}");
        phases.push(j["phase"].as_str().unwrap().to_string());
    }
    assert_eq!(phases.last().map(String::as_str), Some("SUCCEEDED"), "{phases:?}");
    assert!(phases.iter().any(|p| p == "RUNNING" || p == "QUEUED"), "C saw the job only once it ended: {phases:?}");
    // One job for the target cluster-wide: B joined A's instead of starting its own.
    let (jobs, _) = post(&c, "{ refreshJobs(limit: 50) { id total results { sourceId } } }", json!({}), None).await;
    let single: Vec<&Value> = jobs["data"]["refreshJobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["total"] == 1 && j["results"][0]["sourceId"] == "slow")
        .collect();
    assert_eq!(single.len(), 1, "{jobs:#}");
    assert_eq!(single[0]["id"], id);
    // B, which joined A's job, converges on its end too (by the feed, a few ms behind C maybe).
    eventually("B sees A's job end", Duration::from_secs(10), async || {
        let (done, _) = post(&b, JOB, json!({"id": id}), None).await;
        if done["data"]["refreshJob"]["phase"] == "SUCCEEDED" { Ok(()) } else { Err(done) }
    })
    .await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_job_is_failed_by_another_after_its_lease() {
    if skip_without_postgres("a_killed_replicas_job_is_failed_by_another_after_its_lease") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    // The floor (3 s): renewed every second.
    let lease = ["--job-lease", "3"];
    let a = replica(dir.path(), &db, "replica-a", &lease).await;
    let b = replica(dir.path(), &db, "replica-b", &lease).await;
    host.state.lock().unwrap().delay_ms = 60_000;
    let (job, _) =
        post(&a, "mutation { refreshSource(plugin: \"models\", id: \"slow\", wait: false) { id } }", json!({}), None)
            .await;
    let id = job["data"]["refreshSource"]["id"].as_str().unwrap().to_string();
    eventually("the job runs", Duration::from_secs(20), async || {
        let (j, _) = post(&b, JOB, json!({"id": id}), None).await;
        if j["data"]["refreshJob"]["phase"] == "RUNNING" { Ok(()) } else { Err(j) }
    })
    .await;
    // Longer than a lease (four renewals) while A is alive: B leaves A's job alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (alive, _) = post(&b, JOB, json!({"id": id}), None).await;
    assert_eq!(alive["data"]["refreshJob"]["phase"], "RUNNING", "B failed a live replica's job: {alive}");

    let _ = a.kill();
    let failed = eventually("B fails the dead replica's job", Duration::from_secs(30), async || {
        let (j, _) = post(&b, JOB, json!({"id": id}), None).await;
        if j["data"]["refreshJob"]["phase"] == "FAILED" { Ok(j) } else { Err(j) }
    })
    .await;
    let error = failed["data"]["refreshJob"]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("interrupted") && error.contains("replica-a") && error.contains("stopped renewing its lease"),
        "{error}"
    );
    // The target is free again: a new refresh on B is a new job.
    host.state.lock().unwrap().delay_ms = 0;
    let (fresh, _) =
        post(&b, "mutation { refreshSource(plugin: \"models\", id: \"slow\") { id phase } }", json!({}), None).await;
    assert_ne!(fresh["data"]["refreshSource"]["id"], id);
    assert_eq!(fresh["data"]["refreshSource"]["phase"], "SUCCEEDED", "{fresh:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_on_two_replicas_with_one_expected_revision_have_one_winner() {
    if skip_without_postgres("concurrent_applies_on_two_replicas_with_one_expected_revision_have_one_winner") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let a = replica(dir.path(), &db, "replica-a", &[]).await;
    let b = replica(dir.path(), &db, "replica-b", &[]).await;
    for round in 0..6 {
        let (cur, _) = post(&a, LABELS, json!({"id": "local"}), None).await;
        let expected = cur["data"]["source"]["revision"].as_i64().unwrap();
        let vars = |label: String| json!({"plugin": "models", "input": {"id": "local", "labels": [label]}, "options": {"expectedRevision": expected}});
        let (ra, rb) = tokio::join!(
            post(&a, APPLY, vars(format!("A{round}")), None),
            post(&b, APPLY, vars(format!("B{round}")), None)
        );
        let results = [("A", &ra.0), ("B", &rb.0)];
        let winners: Vec<&str> = results.iter().filter(|(_, r)| r["errors"].is_null()).map(|(n, _)| *n).collect();
        assert_eq!(winners.len(), 1, "round {round}: {ra:?} {rb:?}");
        let loser = results.iter().find(|(_, r)| !r["errors"].is_null()).unwrap().1;
        assert_eq!(error_code(loser).as_deref(), Some("CONFLICT"), "round {round}: {loser:#}");
        let label = format!("{}{round}", winners[0]);
        let token = ra.1.max(rb.1);
        // Files and revisions agree, on both replicas.
        let text = std::fs::read_to_string(dir.path().join("sources.yaml")).unwrap();
        assert!(text.contains(&label), "round {round}: the file does not have the winner's label {label}");
        assert!(!text.contains(&format!("{}{round}", if winners[0] == "A" { "B" } else { "A" })));
        for s in [&a, &b] {
            let (now, _) = post(s, LABELS, json!({"id": "local"}), token).await;
            assert_eq!(now["data"]["source"]["revision"], expected + 1, "round {round}: {now:#}");
            assert_eq!(now["data"]["source"]["labels"], json!([label]), "round {round}: {now:#}");
        }
    }
}

/// A TCP proxy to PostgreSQL that can be taken down like a restart (every connection closed,
/// new ones refused) or, `silent`, like a cut network (every connection held open, nothing
/// forwarded) until it comes back.
struct Proxy {
    port: u16,
    down: watch::Sender<bool>,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, down_rx) = watch::channel(false);
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mode = silent.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let upstream = upstream.clone();
                let mut rx = down_rx.clone();
                let silent = mode.clone();
                tokio::spawn(async move {
                    if *rx.borrow() {
                        if silent.load(std::sync::atomic::Ordering::SeqCst) {
                            let _ = rx.wait_for(|d| !*d).await;
                        }
                        drop(client);
                        return;
                    }
                    Proxy::relay(client, upstream, rx, silent).await
                });
            }
        });
        Proxy { port, down, silent }
    }

    fn take_down(&self, silent: bool) {
        self.silent.store(silent, std::sync::atomic::Ordering::SeqCst);
        self.down.send_replace(true);
    }

    async fn relay(
        mut client: TcpStream,
        upstream: String,
        mut down: watch::Receiver<bool>,
        silent: Arc<std::sync::atomic::AtomicBool>,
    ) {
        let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
        let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        enum Step {
            ToServer(usize),
            ToClient(usize),
            Down,
            Stop,
        }
        loop {
            let step = tokio::select! {
                n = client.read(&mut a) => match n { Ok(0) | Err(_) => Step::Stop, Ok(n) => Step::ToServer(n) },
                n = server.read(&mut b) => match n { Ok(0) | Err(_) => Step::Stop, Ok(n) => Step::ToClient(n) },
                r = down.wait_for(|d| *d) => { drop(r); Step::Down },
            };
            let written = match step {
                Step::ToServer(n) => server.write_all(&a[..n]).await,
                Step::ToClient(n) => client.write_all(&b[..n]).await,
                Step::Down => {
                    if silent.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = down.wait_for(|d| !*d).await;
                    }
                    return;
                }
                Step::Stop => return,
            };
            if written.is_err() {
                return;
            }
        }
    }
}

/// Waits until B's `/readyz` names `changeFeed` as failing.
async fn wait_feed_down(b: &Server) {
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    eventually("/readyz names the lost change feed", Duration::from_secs(20), async || {
        let r = quick.get(format!("{}/readyz", b.base)).send().await.map_err(|e| e.to_string())?;
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if body["failed"].as_array().is_some_and(|f| f.contains(&json!("changeFeed"))) {
            return Ok(());
        }
        Err(body.to_string())
    })
    .await;
}

async fn wait_ready_again(b: &Server) {
    eventually("B becomes ready again", Duration::from_secs(30), async || {
        match b.client.get(format!("{}/readyz", b.base)).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            other => Err(other.map(|r| r.status())),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_a_replica_lost_its_feed_reaches_it_after_reconnecting() {
    if skip_without_postgres("a_change_made_while_a_replica_lost_its_feed_reaches_it_after_reconnecting") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let hostport = db.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let proxy = Arc::new(Proxy::start(hostport.clone()).await);
    let proxied = db.replace(&hostport, &format!("127.0.0.1:{}", proxy.port));
    let a = replica(dir.path(), &db, "replica-a", &[]).await;
    let b = replica(dir.path(), &proxied, "replica-b", &["--db-timeout", "1"]).await;
    let mut on_b = WsClient::connect(&b.base, None).await.unwrap();
    on_b.subscribe("1", EVENTS, json!({"p": "models"})).await;
    wait_subscribers(&b, 1.0).await;

    // A restart (connections closed, then refused), then a cut network (silence).
    for (round, silent) in [false, true].into_iter().enumerate() {
        proxy.take_down(silent);
        wait_feed_down(&b).await;
        let label = format!("while B was away {round}");
        let (out, token) =
            post(&a, APPLY, json!({"plugin": "models", "input": {"id": "local", "labels": [label]}}), None).await;
        assert!(out["errors"].is_null(), "{out:#}");
        let revision = out["data"]["applySource"]["revision"].as_i64().unwrap();
        proxy.down.send_replace(false);
        wait_ready_again(&b).await;
        // The NOTIFY was lost with the connection; the resync from the table delivered it.
        let ev = next_event(&mut on_b, "APPLIED").await;
        assert_eq!(ev["revision"], revision, "round {round}");
        let (read, _) = post(&b, LABELS, json!({"id": "local"}), token).await;
        assert_eq!(read["data"]["source"]["labels"], json!([label]), "round {round}: {read:#}");
    }
}

/// Replicas starting together: B starts while A's initial job runs, joins it, and still serves
/// the sources that job refreshed before B was listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_joins_a_running_initial_job_serves_every_source() {
    if skip_without_postgres("a_replica_that_joins_a_running_initial_job_serves_every_source") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    host.state.lock().unwrap().delay_ms = 3000;
    let db = database_url(Backend::Postgres, dir.path()).await;
    let args = ["--watch-interval", "0", "--url-allow", "127.0.0.1", "--replica-id", "replica-a"];
    let a = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&args)
        .no_wait()
        .start()
        .await;
    // A's start-up job has loaded `local` and waits on the slow host.
    eventually("A's start-up job gets half way", Duration::from_secs(20), async || {
        let (jobs, _) = post(&a, "{ refreshJobs(limit: 10) { phase completed total } }", json!({}), None).await;
        let list = jobs["data"]["refreshJobs"].as_array().cloned().unwrap_or_default();
        if list.iter().any(|j| j["phase"] == "RUNNING" && j["total"] == 2 && j["completed"] == 1) {
            return Ok(());
        }
        Err(jobs)
    })
    .await;
    let b = replica(dir.path(), &db, "replica-b", &[]).await;
    let (ents, _) = post(&b, "{ entities(plugin: \"models\") { totalCount } }", json!({}), None).await;
    assert_eq!(ents["data"]["entities"]["totalCount"], 5, "B misses what A's job loaded before B listened: {ents:#}");
    let (jobs, _) = post(&b, "{ refreshJobs(limit: 10) { total } }", json!({}), None).await;
    let plugin_jobs = jobs["data"]["refreshJobs"].as_array().unwrap().iter().filter(|j| j["total"] == 2).count();
    assert_eq!(plugin_jobs, 1, "B ran its own start-up job instead of joining A's: {jobs:#}");
}

/// A replica restarted under the same `--replica-id` (a StatefulSet pod) fails the jobs its
/// previous process left at once, instead of renewing their leases forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_under_its_id_fails_its_previous_jobs_at_start() {
    if skip_without_postgres("a_replica_restarted_under_its_id_fails_its_previous_jobs_at_start") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let lease = ["--job-lease", "600"];
    let a = replica(dir.path(), &db, "replica-a", &lease).await;
    host.state.lock().unwrap().delay_ms = 60_000;
    let (job, _) =
        post(&a, "mutation { refreshSource(plugin: \"models\", id: \"slow\", wait: false) { id } }", json!({}), None)
            .await;
    let id = job["data"]["refreshSource"]["id"].as_str().unwrap().to_string();
    eventually("the job runs", Duration::from_secs(20), async || {
        let (j, _) = post(&a, JOB, json!({"id": id}), None).await;
        if j["data"]["refreshJob"]["phase"] != "RUNNING" { Err(j) } else { Ok(()) }
    })
    .await;
    let _ = a.kill();
    host.state.lock().unwrap().delay_ms = 0;
    let a = replica(dir.path(), &db, "replica-a", &lease).await;
    let (j, _) = post(&a, JOB, json!({"id": id}), None).await;
    assert_eq!(j["data"]["refreshJob"]["phase"], "FAILED", "{j:#}");
    let error = j["data"]["refreshJob"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("interrupted") && error.contains("replica-a") && error.contains("restarted"), "{error}");
}

/// An edit made outside the API is seen by every replica's watcher; it is recorded once (the
/// re-reads hold the cluster locks) and every replica serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_edit_is_recorded_once_and_served_by_every_replica() {
    if skip_without_postgres("an_external_edit_is_recorded_once_and_served_by_every_replica") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let sources = dir.path().join("sources.yaml");
    let mut servers = Vec::new();
    for name in ["replica-a", "replica-b", "replica-c"] {
        let args = ["--watch-interval", "0.1", "--url-allow", "127.0.0.1", "--replica-id", name];
        servers.push(TestServer::new(dir.path()).sources(&sources).database(&db).flags(&args).start().await);
    }
    std::fs::write(dir.path().join("local.yaml"), models_yaml(4)).unwrap();
    let revisions = "{ source(plugin: \"models\", id: \"local\") { revision revisions(limit: 10) { action } } entities(plugin: \"models\", sourceId: \"local\") { totalCount } }";
    for s in &servers {
        eventually("a replica serves the external edit", Duration::from_secs(20), async || {
            let (r, _) = post(s, revisions, json!({}), None).await;
            if r["data"]["entities"]["totalCount"] == 4 { Ok(()) } else { Err(r) }
        })
        .await;
    }
    // A while longer: every watcher has looked many times.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r, _) = post(&servers[0], revisions, json!({}), None).await;
    let actions: Vec<&str> =
        r["data"]["source"]["revisions"].as_array().unwrap().iter().map(|v| v["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["EXTERNAL", "IMPORT"], "{r:#}");
    assert_eq!(r["data"]["source"]["revision"], 2);

    // Applies on A while B's and C's watchers poll the same files: none of them records A's
    // written-but-not-yet-recorded bytes as an external edit, so every apply wins.
    for i in 0..30 {
        let (out, _) = post(
            &servers[0],
            APPLY,
            json!({"plugin": "models", "input": {"id": "local", "content": models_yaml(5 + i % 2)}}),
            None,
        )
        .await;
        assert!(out["errors"].is_null(), "apply {i}: {out:#}");
    }
    let (r, _) = post(
        &servers[0],
        "{ source(plugin: \"models\", id: \"local\") { revisions(limit: 50) { action } } }",
        json!({}),
        None,
    )
    .await;
    let external =
        r["data"]["source"]["revisions"].as_array().unwrap().iter().filter(|v| v["action"] == "EXTERNAL").count();
    assert_eq!(external, 1, "{r:#}");
}
