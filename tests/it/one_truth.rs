//! Issue 27: one truth on every replica. What a refresh decides is recorded once (the content
//! in the database, the status row naming it) and followed by every other replica, which loads
//! exactly that content instead of fetching or deciding again; a url source's last good
//! content survives a restart with its host down.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

/// A sources dir with a yaml source `local` and a url source `remote` behind `host`.
fn write_sources(dir: &Path, host: &CatalogHost) {
    let sources = format!(
        "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Remote\n    id: remote\n    type: url\n    properties:\n      url: {}\n",
        host.url
    );
    std::fs::write(dir.join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.join("local.yaml"), models_yaml(2)).unwrap();
}

async fn replica(dir: &Path, db: &str, name: &str) -> Server {
    let args = ["--watch-interval", "0", "--url-allow", "127.0.0.1", "--rate-limit", "0", "--replica-id", name];
    TestServer::new(dir).sources(dir.join("sources.yaml")).database(db).flags(&args).start().await
}

const REMOTE: &str = "{ source(plugin: \"models\", id: \"remote\") { status { state entityCount lastRefreshSummary } } entities(plugin: \"models\", sourceId: \"remote\") { totalCount nodes { name } } }";

/// `remote`'s state, entity count and entity names on `server`.
async fn remote(server: &Server) -> (String, u64, Vec<String>) {
    let d = server.ok(REMOTE, json!({})).await;
    let names =
        d["entities"]["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    (
        d["source"]["status"]["state"].as_str().unwrap().to_string(),
        d["source"]["status"]["entityCount"].as_u64().unwrap(),
        names,
    )
}

/// Waits (at most `secs`) until `check` holds for what `server` serves.
async fn eventually<F: Fn(&(String, u64, Vec<String>)) -> bool>(
    server: &Server,
    secs: u64,
    check: F,
) -> (String, u64, Vec<String>) {
    let what = format!("{} serves what is expected", server.base);
    support::eventually(&what, Duration::from_secs(secs), async || {
        let now = remote(server).await;
        if check(&now) { Ok(now) } else { Err(now) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_source_fetched_on_one_replica_is_served_by_every_replica_after_one_fetch() {
    if skip_without_postgres("a_url_source_fetched_on_one_replica_is_served_by_every_replica_after_one_fetch") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let a = replica(dir.path(), &db, "replica-a").await;
    let b = replica(dir.path(), &db, "replica-b").await;
    let c = replica(dir.path(), &db, "replica-c").await;
    for s in [&a, &b, &c] {
        eventually(s, 10, |(state, n, _)| state == "AVAILABLE" && *n == 3).await;
    }

    // The host now answers 5 models; one refresh on A fetches them once.
    host.state.lock().unwrap().body = models_yaml(5);
    let before = host.state.lock().unwrap().requests;
    let out =
        a.ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: true) { phase } }", json!({})).await;
    assert_eq!(out["refreshSource"]["phase"], "SUCCEEDED");
    let started = Instant::now();
    let on_a = remote(&a).await;
    assert_eq!(on_a.1, 5);
    for s in [&b, &c] {
        let seen = eventually(s, 5, |(_, n, _)| *n == 5).await;
        assert_eq!(seen, on_a, "{} serves something else than A", s.base);
    }
    eprintln!("B and C serve A's fetch {:?} after A answered", started.elapsed());
    assert_eq!(host.state.lock().unwrap().requests - before, 1, "B or C fetched the url themselves");

    // A restart of everything with the host down: the last good entities are served at once,
    // and the failed fetch keeps them.
    drop((b, c));
    let (dir_path, db) = a.stop();
    host.state.lock().unwrap().fail_next = usize::MAX;
    let a = TestServer::new(&dir_path)
        .sources(dir_path.join("sources.yaml"))
        .database(&db)
        .flags(&[
            "--watch-interval",
            "0",
            "--url-allow",
            "127.0.0.1",
            "--replica-id",
            "replica-a",
            "--fetch-retries",
            "0",
        ])
        .start()
        .await;
    let after = eventually(&a, 10, |(state, _, _)| state == "ERROR").await;
    assert_eq!(after.1, 5, "{after:?}");
    assert_eq!(after.2, on_a.2);
    let d = a.ok(REMOTE, json!({})).await;
    let summary = d["source"]["status"]["lastRefreshSummary"].as_str().unwrap();
    assert!(summary.contains("kept 5"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_url_host_down_keeps_the_last_good_entities() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let host = CatalogHost::start(models_yaml(4)).await;
        write_sources(dir.path(), &host);
        let db = database_url(backend, dir.path()).await;
        let args = ["--url-allow", "127.0.0.1", "--fetch-retries", "0"];
        let server = TestServer::new(dir.path())
            .sources(dir.path().join("sources.yaml"))
            .database(&db)
            .flags(&args)
            .start()
            .await;
        let good = eventually(&server, 10, |(state, n, _)| state == "AVAILABLE" && *n == 4).await;
        let (dir_path, db) = server.stop();
        host.state.lock().unwrap().fail_next = usize::MAX;
        let server =
            TestServer::new(&dir_path).sources(dir_path.join("sources.yaml")).database(&db).flags(&args).start().await;
        let after = eventually(&server, 10, |(state, _, _)| state == "ERROR").await;
        assert_eq!((after.1, &after.2), (4, &good.2), "{backend:?}: {after:?}");
        let v: Value = server.ok(REMOTE, json!({})).await;
        assert!(v["source"]["status"]["lastRefreshSummary"].as_str().unwrap().contains("kept 4"), "{backend:?}: {v}");
    }
}

/// `X-Catalog-Min-Generation` (or `minGeneration` where a client cannot set headers) on every
/// transport: a generation this replica has applied is answered; one it has not is refused
/// with UNAVAILABLE after `--consistency-wait`, never answered as if current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_generation_is_honoured_on_get_sse_and_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--consistency-wait", "0.3"]).start().await;
    // A mutation's token: what this replica has applied.
    let resp = server
        .client
        .post(format!("{}/graphql", server.base))
        .json(&json!({"query": APPLY, "variables": {"plugin": "models", "input": {"id": "team_models", "labels": ["x"]}}}))
        .send()
        .await
        .unwrap();
    let token: u64 = resp.headers()["x-catalog-generation"].to_str().unwrap().parse().unwrap();
    let ahead = token + 1_000_000;
    let q = "{ plugins { name } }";

    // GET with the parameter.
    for (g, ok) in [(token, true), (ahead, false)] {
        let url = format!("{}/graphql?query={}&minGeneration={g}", server.base, "%7Bplugins%7Bname%7D%7D");
        let body: Value = server.client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["errors"].is_null(), ok, "GET at {g}: {body}");
        if !ok {
            assert_eq!(body["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{body}");
        }
    }
    // SSE: POST with the header, GET with the parameter.
    for (g, ok) in [(token, true), (ahead, false)] {
        let post = server
            .client
            .post(format!("{}/graphql/stream", server.base))
            .header("accept", "text/event-stream")
            .header("x-catalog-min-generation", g.to_string())
            .json(&json!({"query": q}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let get = server
            .client
            .get(format!("{}/graphql/stream?query={}&minGeneration={g}", server.base, "%7Bplugins%7Bname%7D%7D"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for (how, text) in [("POST", &post), ("GET", &get)] {
            if ok {
                assert!(text.contains("event: next") && text.contains("plugins"), "SSE {how} at {g}: {text}");
            } else {
                assert!(text.contains("UNAVAILABLE") && !text.contains("event: next"), "SSE {how} at {g}: {text}");
            }
        }
    }
    // WebSocket: `minGeneration` in `connection_init`; behind, the connection closes with
    // 1013 (try again later) before any ack.
    for (g, ok) in [(token, true), (ahead, false)] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("{}/graphql/ws", server.base.replacen("http", "ws", 1)).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let init = json!({"type": "connection_init", "payload": {"minGeneration": g}});
        ws.send(Message::Text(init.to_string().into())).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        match (ok, first) {
            (true, Message::Text(t)) => assert!(t.contains("connection_ack"), "{t}"),
            (false, Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1013, "{frame:?}");
                assert!(frame.reason.contains("behind"), "{frame:?}");
            }
            (ok, other) => panic!("WebSocket at {g} (expected ok: {ok}): {other:?}"),
        }
    }
}

/// A replica paused past its job's lease (SIGSTOP, as a long GC pause or a frozen VM would)
/// finds, when it resumes, that another replica failed its job and served a newer fetch: its
/// late result is fenced out (the status row refuses a write without the live lease), so it
/// never serves or records its stale content; it follows what was decided meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_lease_discards_its_late_result() {
    if skip_without_postgres("a_replica_that_lost_its_lease_discards_its_late_result") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(10)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let args = |name| {
        vec![
            "--watch-interval",
            "0",
            "--url-allow",
            "127.0.0.1",
            "--rate-limit",
            "0",
            "--job-lease",
            "3",
            "--fetch-timeout",
            "30",
            "--replica-id",
            name,
        ]
    };
    let a = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&args("replica-a"))
        .start()
        .await;
    let b = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&args("replica-b"))
        .start()
        .await;
    eventually(&b, 10, |(_, n, _)| *n == 10).await;
    // A starts a refresh; the host answers it (with 10 models) only after 6 s.
    host.state.lock().unwrap().delay_ms = 6000;
    let asked = Instant::now();
    let job =
        a.ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: false) { id } }", json!({})).await;
    let id = job["refreshSource"]["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = a.child.id().to_string();
    std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    // While A is frozen its lease runs out: B fails the job, then refreshes itself (11 models).
    support::eventually("B fails the frozen replica's job", Duration::from_secs(20), async || {
        let j = b.ok("query($id: ID!) { refreshJob(id: $id) { phase } }", json!({"id": id})).await;
        if j["refreshJob"]["phase"] == "FAILED" { Ok(()) } else { Err(j) }
    })
    .await;
    // The host has sent A its (now stale) 10 models, which wait in A's socket; then the
    // catalog moves on to 11 and B loads them.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(asked.elapsed())).await;
    {
        let mut h = host.state.lock().unwrap();
        h.delay_ms = 0;
        h.body = models_yaml(11);
    }
    let out =
        b.ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: true) { phase } }", json!({})).await;
    assert_eq!(out["refreshSource"]["phase"], "SUCCEEDED", "{out}");
    // A resumes and reads its stale answer: without the fence it would serve and record the
    // 10 models, and B would follow that record back to 10.
    std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let on_b = remote(&b).await;
    let on_a = eventually(&a, 10, |now| now.1 == on_b.1).await;
    assert_eq!(on_a, on_b, "A serves something else than what B decided");
    assert_eq!(on_b.1, 11);
    let j = a.ok("query($id: ID!) { refreshJob(id: $id) { phase error } }", json!({"id": id})).await;
    assert_eq!(j["refreshJob"]["phase"], "FAILED", "{j}");
    assert!(a.log_text().contains("lease") || a.log_text().contains("discarded"), "{}", a.log_text());
}

/// A feed row that commits late (its writer held the feed lock for 1.5 s, as a slow
/// transaction would) is applied, not skipped: ids are assigned under that lock, so an apply
/// on A meanwhile waits and gets the next id, and B applies both in order. (Before, ids came
/// from a sequence and a reader skipped a hole after 1 s: the late row was lost for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_row_that_commits_late_is_applied_not_skipped() {
    if skip_without_postgres("a_feed_row_that_commits_late_is_applied_not_skipped") {
        return;
    }
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(1)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let a = replica(dir.path(), &db, "replica-a").await;
    let b = replica(dir.path(), &db, "replica-b").await;

    // Someone edits local.yaml on disk (no watcher runs: --watch-interval 0); the late feed row
    // announces it, so only a replica that applies that row notices.
    std::fs::write(dir.path().join("local.yaml"), models_yaml(7)).unwrap();
    let mut conn = sqlx::postgres::PgConnection::connect(&db).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('catalog-bff:feed'))").execute(&mut *tx).await.unwrap();
    let late: i64 = sqlx::query_scalar(
        "INSERT INTO catalog_changes (id, change_key, kind, plugin, source_id, revision, job_id, origin, created_at)
         SELECT COALESCE(MAX(id), 0) + 1, 'test-late-row', 'APPLIED', 'models', 'local', NULL, NULL, 'test', now()
         FROM catalog_changes RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    // An apply on A while the late row is uncommitted.
    let base = a.base.clone();
    let client = a.client.clone();
    let apply = tokio::spawn(async move {
        let vars = json!({"plugin": "models", "input": {"id": "other", "name": "Other", "type": "yaml", "content": models_yaml(3)}});
        let resp = client
            .post(format!("{base}/graphql"))
            .json(&json!({"query": APPLY, "variables": vars}))
            .send()
            .await
            .unwrap();
        let generation: i64 = resp.headers()["x-catalog-generation"].to_str().unwrap().parse().unwrap();
        let body: Value = resp.json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body:#}");
        generation
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!apply.is_finished(), "A's change was recorded while an earlier id was still uncommitted");
    tx.commit().await.unwrap();
    let generation = apply.await.unwrap();
    assert!(generation > late, "A's change got id {generation}, not after the late row's {late}");

    // B applies the late row (re-reads, finds the outside edit, records and loads it) and A's.
    support::eventually("B applies the late row", Duration::from_secs(10), async || {
        let d = b
            .ok("{ source(plugin: \"models\", id: \"local\") { status { entityCount } } other: source(plugin: \"models\", id: \"other\") { revision } }", json!({}))
            .await;
        if d["source"]["status"]["entityCount"] == 7 && d["other"]["revision"] == 1 { Ok(()) } else { Err(d) }
    })
    .await;
}

/// A feed insert whose commit outlasts `--db-timeout` (a deferred trigger sleeps 2.5 s at
/// COMMIT: the commit completes after the replica stopped waiting) is retried with the same
/// change key and recorded once: the retry finds the row the first attempt committed. (The
/// issue saw one change recorded 4 times.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_insert_that_outlasts_the_db_timeout_is_recorded_once() {
    if skip_without_postgres("a_feed_insert_that_outlasts_the_db_timeout_is_recorded_once") {
        return;
    }
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(1)).await;
    write_sources(dir.path(), &host);
    let db = database_url(Backend::Postgres, dir.path()).await;
    let args = ["--watch-interval", "0", "--url-allow", "127.0.0.1", "--rate-limit", "0", "--replica-id", "replica-a"];
    let a = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&[&args[..], &["--db-timeout", "1"]].concat())
        .start()
        .await;

    let mut conn = sqlx::postgres::PgConnection::connect(&db).await.unwrap();
    for statement in [
        "CREATE TABLE slow_feed (armed boolean)",
        "INSERT INTO slow_feed VALUES (true)",
        "CREATE FUNCTION slow_feed_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF EXISTS (SELECT 1 FROM slow_feed) THEN
             DELETE FROM slow_feed;
             PERFORM pg_sleep(2.5);
           END IF;
           RETURN NULL;
         END $$",
        "CREATE CONSTRAINT TRIGGER slow_feed_commit AFTER INSERT ON catalog_changes
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_feed_commit()",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }

    let vars = json!({"plugin": "models", "input": {"id": "other", "name": "Other", "type": "yaml", "content": models_yaml(3)}});
    let out = a.ok(APPLY, vars).await;
    assert!(out["applySource"]["revision"].is_number(), "{out:#}");
    // The first attempt's commit ends 2.5 s in; the retries back off from 100 ms.
    support::eventually("the slow commit happens and is retried", Duration::from_secs(15), async || {
        let armed: i64 = sqlx::query_scalar("SELECT count(*) FROM slow_feed").fetch_one(&mut conn).await.unwrap();
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM catalog_changes WHERE kind = 'APPLIED' AND source_id = 'other'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(rows <= 1, "one apply was recorded {rows} times in the change feed");
        if armed == 0 && rows == 1 && a.log_text().contains("published a change after retrying") {
            return Ok(());
        }
        Err(format!("armed {armed}, rows {rows}, log:\n{}", a.log_text()))
    })
    .await;
    // Later changes are recorded once each too, in order, after it.
    let vars = json!({"plugin": "models", "input": {"id": "other", "labels": ["after"]}});
    a.ok(APPLY, vars).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, kind FROM catalog_changes WHERE source_id = 'other' AND kind = 'APPLIED' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
}
