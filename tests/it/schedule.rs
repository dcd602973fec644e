//! Issue 29: the catalog keeps itself fresh. Sources refresh on their own on their
//! `refreshInterval` (exactly once per due time across replicas), failed refreshes are retried
//! with growing delays until they recover, and a suspended source is left alone by the
//! schedule, the watcher and plugin-wide refreshes.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

/// A sources dir with a yaml source `local` and a url source `remote` behind `host`, with the
/// extra entry lines `remote_extra` (e.g. `    refreshInterval: 10s\n`).
fn write_sources(dir: &Path, host: &CatalogHost, remote_extra: &str) {
    let sources = format!(
        "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Remote\n    id: remote\n    type: url\n{remote_extra}    properties:\n      url: {}\n",
        host.url
    );
    std::fs::write(dir.join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.join("local.yaml"), models_yaml(2)).unwrap();
}

const REMOTE: &str = "{ source(plugin: \"models\", id: \"remote\") { suspended refreshInterval nextRefreshAt status { state entityCount lastRefreshTime retryCount nextRetryAt } } }";

async fn remote(server: &Server) -> Value {
    server.ok(REMOTE, json!({})).await["source"].clone()
}

fn ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
}

fn requests(host: &CatalogHost) -> usize {
    host.state.lock().unwrap().requests
}

async fn replica(dir: &Path, db: &str, name: &str) -> Server {
    let args = ["--watch-interval", "0", "--url-allow", "127.0.0.1", "--rate-limit", "0", "--replica-id", name];
    TestServer::new(dir).sources(dir.join("sources.yaml")).database(db).flags(&args).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10s_schedule_refreshes_a_changed_url_source_once_across_three_replicas() {
    if skip_without_postgres("a_10s_schedule_refreshes_a_changed_url_source_once_across_three_replicas") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host, "    refreshInterval: 10s\n");
    let db = database_url(Backend::Postgres, dir.path()).await;
    let a = replica(dir.path(), &db, "replica-a").await;
    let b = replica(dir.path(), &db, "replica-b").await;
    let c = replica(dir.path(), &db, "replica-c").await;
    let all = [&a, &b, &c];
    for s in all {
        eventually("every replica serves the first fetch", Duration::from_secs(10), async || {
            let r = remote(s).await;
            if r["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
        })
        .await;
    }

    // The host changes; nobody asks for a refresh.
    let changed = Instant::now();
    host.state.lock().unwrap().body = models_yaml(5);
    for s in all {
        eventually("the schedule refreshes the changed source on every replica", Duration::from_secs(12), async || {
            let r = remote(s).await;
            if r["status"]["entityCount"] == 5 { Ok(()) } else { Err(r) }
        })
        .await;
    }
    eprintln!("all three replicas serve the change {:?} after it", changed.elapsed());

    // Every replica computes the same next due time from the same status row.
    let due = eventually("the replicas agree on the next refresh", Duration::from_secs(5), async || {
        let seen: Vec<Value> = futures_util::future::join_all(all.map(remote)).await;
        let times: Vec<&Value> = seen.iter().map(|r| &r["nextRefreshAt"]).collect();
        if times.iter().all(|t| *t == times[0] && t.is_string()) { Ok(ms(times[0])) } else { Err(seen) }
    })
    .await;
    let last = ms(&remote(&a).await["status"]["lastRefreshTime"]);
    assert!((9_000..=11_000).contains(&(due - last)), "next refresh {due} is not 10s ± 10% after {last}");

    // Another interval passes: one fetch per due time across the three replicas.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let arrivals: Vec<Instant> =
        host.state.lock().unwrap().arrivals.iter().copied().filter(|t| *t >= changed).collect();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("fetches since the change: {} at gaps {gaps:?}", arrivals.len());
    assert!(!arrivals.is_empty() && arrivals.len() <= 3, "{} fetches in ~22 s with a 10 s interval", arrivals.len());
    assert!(gaps.iter().all(|g| *g >= Duration::from_secs(8)), "two fetches for one due time: gaps {gaps:?}");
    let jobs = a.ok("{ refreshJobs(limit: 20) { actor sources } }", json!({})).await;
    let scheduled = jobs["refreshJobs"].as_array().unwrap().iter().filter(|j| j["actor"] == "scheduler").count();
    assert!(scheduled >= 1, "no job by the scheduler: {jobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_is_retried_with_growing_delays_and_recovers_by_itself() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let host = CatalogHost::start(models_yaml(3)).await;
        write_sources(dir.path(), &host, "");
        let db = database_url(backend, dir.path()).await;
        let args = [
            "--url-allow",
            "127.0.0.1",
            "--rate-limit",
            "0",
            "--fetch-retries",
            "0",
            "--default-refresh-interval",
            "0",
            "--retry-initial-interval",
            "1s",
            "--retry-max-interval",
            "4s",
        ];
        let server = TestServer::new(dir.path())
            .sources(dir.path().join("sources.yaml"))
            .database(&db)
            .flags(&args)
            .start()
            .await;
        eventually("the first fetch", Duration::from_secs(10), async || {
            let r = remote(&server).await;
            if r["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
        })
        .await;
        let r = remote(&server).await;
        assert_eq!((r["status"]["retryCount"].clone(), r["nextRefreshAt"].clone()), (json!(0), Value::Null), "{r}");

        // The host fails: one explicit refresh fails, and the retries take over.
        host.state.lock().unwrap().fail_next = usize::MAX;
        let failed_at = Instant::now();
        let out = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: true) { phase } }", json!({}))
            .await;
        assert_eq!(out["refreshSource"]["phase"], "FAILED");
        let r = remote(&server).await;
        assert_eq!((r["status"]["state"].clone(), r["status"]["entityCount"].clone()), (json!("ERROR"), json!(3)));
        assert_eq!(r["status"]["retryCount"], 1, "{r}");
        let wait = ms(&r["status"]["nextRetryAt"]) - ms(&r["status"]["lastRefreshTime"]);
        assert!((900..=1100).contains(&wait), "first retry {wait} ms after the failure, not 1s ± 10%");
        assert_eq!(r["nextRefreshAt"], r["status"]["nextRetryAt"], "{r}");

        let r = eventually("three automatic retries", Duration::from_secs(15), async || {
            let r = remote(&server).await;
            if r["status"]["retryCount"].as_i64() >= Some(4) { Ok(r) } else { Err(r) }
        })
        .await;
        assert_eq!(r["status"]["entityCount"], 3, "a failed retry dropped entities: {r}");
        let arrivals: Vec<Instant> =
            host.state.lock().unwrap().arrivals.iter().copied().filter(|t| *t >= failed_at).collect();
        let gaps: Vec<f64> = arrivals.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        eprintln!("{backend:?}: retry gaps {gaps:?}");
        // 1 s, 2 s, 4 s (capped), each ± 10 %, plus a tick of up to 1 s.
        assert!(gaps.len() >= 3, "{gaps:?}");
        assert!(gaps[0] >= 0.85 && gaps[0] < 2.3, "{gaps:?}");
        assert!(gaps[1] >= 1.75 && gaps[1] < 3.3, "{gaps:?}");
        assert!(gaps[2] >= 3.5 && gaps[2] < 5.5, "{gaps:?}");

        // The host comes back: the next retry recovers the source with nobody asking.
        host.state.lock().unwrap().body = models_yaml(4);
        host.state.lock().unwrap().fail_next = 0;
        let r = eventually("the source recovers by itself", Duration::from_secs(8), async || {
            let r = remote(&server).await;
            if r["status"]["state"] == "AVAILABLE" { Ok(r) } else { Err(r) }
        })
        .await;
        assert_eq!(r["status"]["entityCount"], 4, "{r}");
        assert_eq!((r["status"]["retryCount"].clone(), r["status"]["nextRetryAt"].clone()), (json!(0), Value::Null));

        // A catalog that does not parse is a failure of the content: not retried.
        host.state.lock().unwrap().body = "models: [unclosed\n".into();
        let out = server
            .ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: true) { phase } }", json!({}))
            .await;
        assert_eq!(out["refreshSource"]["phase"], "FAILED");
        let before = requests(&host);
        let r = remote(&server).await;
        assert_eq!((r["status"]["retryCount"].clone(), r["status"]["nextRetryAt"].clone()), (json!(0), Value::Null));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(requests(&host), before, "{backend:?}: content that does not parse was fetched again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_source_is_skipped_by_the_schedule_and_refresh_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host, "    refreshInterval: 10s\n");
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let args = ["--url-allow", "127.0.0.1", "--rate-limit", "0"];
    let server =
        TestServer::new(dir.path()).sources(dir.path().join("sources.yaml")).database(&db).flags(&args).start().await;
    eventually("the first fetch", Duration::from_secs(10), async || {
        let r = remote(&server).await;
        if r["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
    })
    .await;
    let r = remote(&server).await;
    assert_eq!((r["suspended"].clone(), r["refreshInterval"].clone()), (json!(false), json!("10s")));
    assert!(r["nextRefreshAt"].is_string(), "{r}");

    let out = server
        .ok("mutation { suspendSource(plugin: \"models\", id: \"remote\") { suspended nextRefreshAt revision status { entityCount } } }", json!({}))
        .await;
    assert_eq!(out["suspendSource"]["suspended"], true, "{out}");
    assert_eq!(out["suspendSource"]["nextRefreshAt"], Value::Null, "{out}");
    assert_eq!(out["suspendSource"]["status"]["entityCount"], 3, "{out}");
    let file = std::fs::read_to_string(dir.path().join("sources.yaml")).unwrap();
    assert!(file.contains("suspended: true"), "{file}");

    // The host changes. A plugin-wide refresh leaves the suspended source out; the schedule
    // does not run it; it keeps serving what it served.
    host.state.lock().unwrap().body = models_yaml(5);
    let before = requests(&host);
    let job = server
        .ok("mutation { refreshPlugin(plugin: \"models\", wait: true) { phase results { sourceId } } }", json!({}))
        .await;
    let ids: Vec<&Value> = job["refreshPlugin"]["results"].as_array().unwrap().iter().map(|r| &r["sourceId"]).collect();
    assert_eq!(ids, [&json!("local")], "{job}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(requests(&host), before, "a suspended source was fetched");
    assert_eq!(remote(&server).await["status"]["entityCount"], 3);

    // An explicit refresh still runs.
    let out = server
        .ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: true) { phase } }", json!({}))
        .await;
    assert_eq!(out["refreshSource"]["phase"], "SUCCEEDED");
    assert_eq!(remote(&server).await["status"]["entityCount"], 5);

    let out = server
        .ok("mutation { resumeSource(plugin: \"models\", id: \"remote\") { suspended nextRefreshAt } }", json!({}))
        .await;
    assert_eq!(out["resumeSource"]["suspended"], false, "{out}");
    assert!(out["resumeSource"]["nextRefreshAt"].is_string(), "{out}");
    let file = std::fs::read_to_string(dir.path().join("sources.yaml")).unwrap();
    assert!(!file.contains("suspended"), "{file}");

    // Not a source: NOT_FOUND, nothing created.
    let body = server.gql("mutation { suspendSource(plugin: \"models\", id: \"nope\") { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    assert!(server.ok("{ source(plugin: \"models\", id: \"nope\") { id } }", json!({})).await["source"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_interval_must_be_a_duration_of_at_least_10s() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).start().await;
    let revision = |v: &Value| v["source"]["revision"].clone();
    let q = "{ source(plugin: \"models\", id: \"team_models\") { revision refreshInterval } }";
    let before = server.ok(q, json!({})).await;
    for bad in ["5s", "10", "ten minutes", "1h-5m", "9999999h"] {
        let body = server
            .gql(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "refreshInterval": bad}}))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{bad}: {body}");
        let d = &body["errors"][0]["extensions"]["diagnostics"][0];
        assert_eq!(d["field"], "input.refreshInterval", "{bad}: {d}");
        assert!(d["hint"].as_str().unwrap_or_default().contains("10s"), "{bad}: {d}");
        assert_eq!(revision(&server.ok(q, json!({})).await), revision(&before), "{bad} changed something");
    }
    let out =
        server.ok(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "refreshInterval": "1h30m"}})).await;
    assert!(out["applySource"]["revision"].as_i64() > revision(&before).as_i64(), "{out}");
    assert_eq!(server.ok(q, json!({})).await["source"]["refreshInterval"], "1h30m");
    // `""` removes it again.
    server.ok(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "refreshInterval": ""}})).await;
    assert_eq!(server.ok(q, json!({})).await["source"]["refreshInterval"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_all_covers_both_plugins_in_one_job_and_a_failing_source_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await;
    // One models source fails to read: the others still refresh, the job ends FAILED.
    std::fs::remove_file(dir.path().join("partner-models.yaml")).unwrap();
    let q = "mutation { refreshAll(wait: true) { plugin phase total completed sources sourceId error results { plugin sourceId status } } }";
    let out = server.ok(q, json!({})).await;
    let job = &out["refreshAll"];
    let sources = server.ok("{ sources { plugin id suspended } }", json!({})).await;
    let expected: Vec<String> = sources["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}/{}", s["plugin"].as_str().unwrap(), s["id"].as_str().unwrap()))
        .collect();
    assert_eq!((job["plugin"].clone(), job["sourceId"].clone()), (json!("*"), Value::Null), "{out}");
    assert_eq!(job["sources"], json!(expected), "{out}");
    assert_eq!(
        (job["total"].as_u64(), job["completed"].as_u64()),
        (Some(expected.len() as u64), Some(expected.len() as u64))
    );
    let results = job["results"].as_array().unwrap();
    let plugins: std::collections::BTreeSet<&str> = results.iter().map(|r| r["plugin"].as_str().unwrap()).collect();
    assert_eq!(plugins, ["mcp", "models"].into(), "{out}");
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] == "FAILURE").map(|r| &r["sourceId"]).collect();
    assert_eq!(failed, [&json!("partner_models")], "{out}");
    assert_eq!(job["phase"], "FAILED", "{out}");
    // A suspended source is left out.
    server.ok("mutation { suspendSource(plugin: \"mcp\", id: \"platform_mcp\") { suspended } }", json!({})).await;
    let out = server.ok(q, json!({})).await;
    assert!(!out["refreshAll"]["sources"].as_array().unwrap().contains(&json!("mcp/platform_mcp")), "{out}");
}

/// A replica killed while it runs a scheduled refresh: another one runs that due refresh after
/// the job's lease (and the claim's hold, twice the lease) ran out, and the source recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_scheduled_refresh_is_replaced_after_the_lease() {
    use sqlx::Connection;
    if skip_without_postgres("a_replica_killed_mid_scheduled_refresh_is_replaced_after_the_lease") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host, "    refreshInterval: 10s\n");
    let db = database_url(Backend::Postgres, dir.path()).await;
    let start = |name: &'static str| {
        let args = [
            "--watch-interval",
            "0",
            "--url-allow",
            "127.0.0.1",
            "--rate-limit",
            "0",
            "--fetch-retries",
            "0",
            "--job-lease",
            "3",
            "--replica-id",
            name,
        ];
        TestServer::new(dir.path()).sources(dir.path().join("sources.yaml")).database(&db).flags(&args).start()
    };
    let a = start("replica-a").await;
    let b = start("replica-b").await;
    for s in [&a, &b] {
        eventually("the first fetch", Duration::from_secs(10), async || {
            let r = remote(s).await;
            if r["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
        })
        .await;
    }
    // The next scheduled fetch stalls at the host; whoever runs it is killed mid-fetch.
    host.state.lock().unwrap().delay_ms = 60_000;
    host.state.lock().unwrap().body = models_yaml(5);
    let mut conn = sqlx::postgres::PgConnection::connect(&db).await.unwrap();
    let owner: String = eventually("a scheduled job runs", Duration::from_secs(15), async || {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT owner FROM catalog_refresh_jobs WHERE actor = 'scheduler' AND phase = 'RUNNING' LIMIT 1",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        row.ok_or("none yet")
    })
    .await;
    let (killed, survivor) = if owner == "replica-a" { (a, b) } else { (b, a) };
    let _ = killed.kill();
    host.state.lock().unwrap().delay_ms = 0;
    let died = std::time::Instant::now();
    eventually("the survivor runs the due refresh", Duration::from_secs(20), async || {
        let r = remote(&survivor).await;
        if r["status"]["entityCount"] == 5 { Ok(()) } else { Err(r) }
    })
    .await;
    eprintln!("{owner} killed mid-fetch; the other replica refreshed {:?} later", died.elapsed());
    let jobs: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT phase, owner, error FROM catalog_refresh_jobs WHERE actor = 'scheduler' ORDER BY created_at",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        jobs.iter()
            .any(|(phase, o, e)| phase == "FAILED" && *o == owner && e.as_deref().is_some_and(|e| e.contains("lease"))),
        "the killed replica's job is not FAILED by its lease: {jobs:?}"
    );
}

/// PostgreSQL away across a due time: nothing is fetched that could not be recorded (the claim
/// fails first), the last entities stay served, and the due refresh runs once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_due_while_postgres_is_away_runs_once_it_is_back() {
    if skip_without_postgres("a_refresh_due_while_postgres_is_away_runs_once_it_is_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host, "    refreshInterval: 10s\n");
    let url = database_url(Backend::Postgres, dir.path()).await;
    let hostport = url.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let proxy = support::tcp_cut::Proxy::start(hostport.clone()).await;
    let proxied = url.replace(&hostport, &format!("127.0.0.1:{}", proxy.port));
    let args = ["--watch-interval", "0", "--url-allow", "127.0.0.1", "--rate-limit", "0", "--db-timeout", "1"];
    let server = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&proxied)
        .flags(&args)
        .start()
        .await;
    eventually("the first fetch", Duration::from_secs(10), async || {
        let r = remote(&server).await;
        if r["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
    })
    .await;
    let due = ms(&remote(&server).await["nextRefreshAt"]);
    proxy.cut.send_replace(true);
    let cut_at = chrono::Utc::now().timestamp_millis();
    host.state.lock().unwrap().body = models_yaml(5);
    let before = requests(&host);
    // Past the due time, plus a few scheduler rounds.
    let wait_ms = (due - cut_at).max(0) + 4_000;
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap())).await;
    assert_eq!(requests(&host), before, "fetched while the result could not be recorded");
    assert_eq!(remote(&server).await["status"]["entityCount"], 3);
    proxy.cut.send_replace(false);
    let back = std::time::Instant::now();
    eventually("the due refresh runs once PostgreSQL is back", Duration::from_secs(20), async || {
        let r = remote(&server).await;
        if r["status"]["entityCount"] == 5 { Ok(()) } else { Err(r) }
    })
    .await;
    eprintln!("the due refresh ran {:?} after PostgreSQL came back", back.elapsed());
    assert_eq!(requests(&host), before + 1, "one fetch for the missed due time");
}
