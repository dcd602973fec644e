//! Issue 29: `cancelRefreshJob` ends a running job as CANCELLED within 2 s, with a slow host
//! mid-fetch: sources refreshed before stay refreshed (listed in `results`), the others keep
//! what they served; a finished job cannot be cancelled; on a cluster the replica that runs
//! the job stops when another replica cancels it.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

fn write_sources(dir: &Path, host: &CatalogHost) {
    let sources = format!(
        "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Remote\n    id: remote\n    type: url\n    properties:\n      url: {}\n",
        host.url
    );
    std::fs::write(dir.join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.join("local.yaml"), models_yaml(2)).unwrap();
}

const JOB: &str = "query($id: ID!) { refreshJob(id: $id) { id phase error results { sourceId status } } }";
const CANCEL: &str =
    "mutation($id: ID!) { cancelRefreshJob(id: $id) { id phase error completed total results { sourceId status } } }";

fn entities(v: &Value) -> u64 {
    v["source"]["status"]["entityCount"].as_u64().unwrap()
}
const REMOTE: &str = "{ source(plugin: \"models\", id: \"remote\") { status { entityCount state } } }";
const LOCAL: &str = "{ source(plugin: \"models\", id: \"local\") { status { entityCount } } }";

/// Starts a refresh of every models source with the host stalling, and waits until the job
/// fetches `remote` (and `local` is done).
async fn stalled_job(server: &Server, host: &CatalogHost) -> String {
    host.state.lock().unwrap().delay_ms = 30_000;
    std::fs::write(server.dir.join("local.yaml"), models_yaml(4)).unwrap();
    let out = server.ok("mutation { refreshPlugin(plugin: \"models\", wait: false) { id } }", json!({})).await;
    let id = out["refreshPlugin"]["id"].as_str().unwrap().to_string();
    eventually("the job is fetching the stalled host", Duration::from_secs(10), async || {
        let j = server.ok(JOB, json!({"id": id})).await;
        let results = j["refreshJob"]["results"].as_array().cloned().unwrap_or_default();
        let requests = host.state.lock().unwrap().requests;
        if j["refreshJob"]["phase"] == "RUNNING" && results.len() == 1 && requests >= 2 { Ok(()) } else { Err(j) }
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_ends_within_2s_with_a_slow_host_mid_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let args = ["--url-allow", "127.0.0.1", "--rate-limit", "0", "--watch-interval", "0", "--fetch-retries", "0"];
    let server =
        TestServer::new(dir.path()).sources(dir.path().join("sources.yaml")).database(&db).flags(&args).start().await;
    eventually("the first load", Duration::from_secs(10), async || {
        let r = server.ok(REMOTE, json!({})).await;
        if entities(&r) == 3 { Ok(()) } else { Err(r) }
    })
    .await;
    let id = stalled_job(&server, &host).await;

    let asked = Instant::now();
    let out = server.ok(CANCEL, json!({"id": id})).await;
    let took = asked.elapsed();
    let job = &out["cancelRefreshJob"];
    assert_eq!(job["phase"], "CANCELLED", "{out}");
    assert!(took < Duration::from_secs(2), "the cancel took {took:?}");
    // `local` was swapped before the cancel and is listed; `remote` was not.
    let ids: Vec<&Value> = job["results"].as_array().unwrap().iter().map(|r| &r["sourceId"]).collect();
    assert_eq!(ids, [&json!("local")], "{out}");
    assert!(job["error"].as_str().unwrap().contains("cancelled by"), "{out}");
    assert_eq!(entities(&server.ok(LOCAL, json!({})).await), 4);
    let r = server.ok(REMOTE, json!({})).await;
    assert_eq!(entities(&r), 3, "the cancelled fetch changed what is served: {r}");
    eprintln!("cancelled in {took:?}");

    // The row and the registry agree, and a finished job cannot be cancelled again.
    let j = server.ok(JOB, json!({"id": id})).await;
    assert_eq!(j["refreshJob"]["phase"], "CANCELLED", "{j}");
    let body = server.gql(CANCEL, json!({"id": id})).await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("already ended (CANCELLED)"), "{body}");
    assert_eq!(server.ok(JOB, json!({"id": id})).await, j, "the finished job changed");
    let body = server.gql(CANCEL, json!({"id": "no-such-job"})).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");

    // Counted, and the audit trail names the cancel.
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "catalog_bff_cancelled_jobs_total 1"), "{metrics}");
    let audit = server.ok("{ auditLog(limit: 5) { action outcome } }", json!({})).await;
    assert!(
        audit["auditLog"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "CANCEL_REFRESH_JOB" && a["outcome"] == "OK"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_through_another_replica_stops_where_it_runs() {
    if skip_without_postgres("a_job_cancelled_through_another_replica_stops_where_it_runs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let start = |name: &'static str| {
        let args = [
            "--url-allow",
            "127.0.0.1",
            "--rate-limit",
            "0",
            "--watch-interval",
            "0",
            "--fetch-retries",
            "0",
            "--replica-id",
            name,
        ];
        TestServer::new(dir.path()).sources(dir.path().join("sources.yaml")).database(&db).flags(&args).start()
    };
    let a = start("replica-a").await;
    let b = start("replica-b").await;
    for s in [&a, &b] {
        eventually("the first load", Duration::from_secs(10), async || {
            let r = s.ok(REMOTE, json!({})).await;
            if entities(&r) == 3 { Ok(()) } else { Err(r) }
        })
        .await;
    }
    let id = stalled_job(&a, &host).await;

    let asked = Instant::now();
    let out = b.ok(CANCEL, json!({"id": id})).await;
    assert_eq!(out["cancelRefreshJob"]["phase"], "CANCELLED", "{out}");
    // Where it runs, the job's task stops (its fetch dropped) and reads CANCELLED.
    eventually("A's job ends", Duration::from_secs(2), async || {
        let j = a.ok(JOB, json!({"id": id})).await;
        if j["refreshJob"]["phase"] == "CANCELLED" { Ok(()) } else { Err(j) }
    })
    .await;
    eprintln!("A stopped {:?} after B was asked", asked.elapsed());
    let logs = a.logs.lock().unwrap().join("\n");
    assert!(logs.contains("its job was cancelled"), "A did not give up the fetch");
    for s in [&a, &b] {
        assert_eq!(entities(&s.ok(REMOTE, json!({})).await), 3, "{}", s.base);
    }
    let body = a.gql(CANCEL, json!({"id": id})).await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body}");
}
