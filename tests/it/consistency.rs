//! Issue 8, item 5: concurrent applies never leave stale entities behind, and a partial apply
//! merges with the file as it is on disk, not with a cached copy.

use crate::support;

use serde_json::json;
use support::*;

const STATE: &str = r#"query($plugin: String!, $id: ID!) {
  source(plugin: $plugin, id: $id) { revision content revisions(limit: 1) { revision content } status { entityCount } }
  entities(plugin: $plugin, sourceId: $id, first: 1) { totalCount }
}"#;

fn count_models(content: &str) -> u64 {
    content.lines().filter(|l| l.starts_with("  - name: ")).count() as u64
}

/// 20 applies at once without `expectedRevision`, each with its own number of models: after the
/// round the file, `content`, the latest revision and the served entities all agree, and the
/// response of the apply that wrote last reports its own count. Before the fix, a refresh asked
/// for by an apply could join a job that had read the previous apply's file (about 1 round in 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_with_refresh_never_serve_an_older_apply() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, dir.path()).await;
        // 160 applies in a few seconds: past the default per-caller rate limit.
        let server = TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await;
        server
            .ok(APPLY, json!({"plugin": "models", "input": {"id": "race", "content": models_yaml(1)}, "options": {"refreshAfterApply": true}}))
            .await;
        for round in 0..8 {
            let applies = (0..20).map(|i| {
                let server = &server;
                let n = 10 + i;
                async move {
                    let body = server
                        .gql(
                            APPLY,
                            json!({"plugin": "models", "input": {"id": "race", "content": models_yaml(n)},
                                   "options": {"refreshAfterApply": true, "confirmRemovals": true}}),
                        )
                        .await;
                    (n as u64, body)
                }
            });
            let results = futures_util::future::join_all(applies).await;
            let mut last = (0, 0u64);
            for (n, body) in &results {
                assert!(body["errors"].is_null(), "{backend:?} round {round}: {body:#}");
                let res = &body["data"]["applySource"];
                assert_eq!(res["refresh"]["phase"], "SUCCEEDED", "{backend:?}: {body:#}");
                let rev = res["revision"].as_i64().unwrap();
                if rev > last.0 {
                    last = (rev, *n);
                }
            }
            // The apply that wrote last saw its own content loaded.
            let (_, winner) = results.iter().find(|(_, b)| b["data"]["applySource"]["revision"] == last.0).unwrap();
            assert_eq!(
                winner["data"]["applySource"]["source"]["status"]["entityCount"], last.1,
                "{backend:?} round {round}: the last writer's response shows another apply's entities"
            );
            let state = server.ok(STATE, json!({"plugin": "models", "id": "race"})).await;
            let content = state["source"]["content"].as_str().unwrap();
            let on_disk = std::fs::read_to_string(dir.path().join("race-models.yaml")).unwrap();
            assert_eq!(content, on_disk);
            assert_eq!(state["source"]["revision"], last.0);
            assert_eq!(state["source"]["revisions"][0]["content"].as_str().unwrap(), on_disk);
            assert_eq!(count_models(&on_disk), last.1);
            assert_eq!(
                state["entities"]["totalCount"], last.1,
                "{backend:?} round {round}: entities are from an older apply than the file"
            );
            assert_eq!(state["source"]["status"]["entityCount"], last.1);
        }
    }
}

/// An operator renames a source by hand; within the watch interval (here: the watcher is off) a
/// partial apply that changes only the labels must keep the new name, not restore the cached one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_apply_merges_with_the_file_on_disk_not_a_cached_copy() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(backend, dir.path()).await;
        let server = TestServer::new(dir.path()).database(&db).flags(&["--watch-interval", "0"]).start().await;
        let sources = dir.path().join("sources.yaml");
        let text = std::fs::read_to_string(&sources).unwrap();
        assert!(text.contains("name: \"Partner Models\""));
        std::fs::write(&sources, text.replace("name: \"Partner Models\"", "name: \"Partner Models (edited by hand)\""))
            .unwrap();
        server
            .ok(APPLY, json!({"plugin": "models", "input": {"id": "partner_models", "labels": ["Partner", "Audited"]}}))
            .await;
        let after = std::fs::read_to_string(&sources).unwrap();
        assert!(
            after.contains("Partner Models (edited by hand)"),
            "{backend:?}: the hand edit was overwritten:\n{after}"
        );
        assert!(after.contains("Audited"));
        let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "partner_models"})).await;
        assert_eq!(src["source"]["name"], "Partner Models (edited by hand)");
        assert_eq!(src["source"]["labels"], json!(["Partner", "Audited"]));
    }
}

/// A plugin job has already refreshed `local` and is still busy with a slow url source when an
/// apply changes `local` and asks for a refresh: that refresh must not join the running job
/// (which read the old file) but run again, so the apply's response shows the new count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_after_apply_does_not_join_a_job_that_read_older_content() {
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    let sources = format!(
        "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Slow\n    id: slow\n    type: url\n    properties:\n      url: {}\n",
        host.url
    );
    std::fs::write(dir.path().join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.path().join("local.yaml"), models_yaml(2)).unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .sources(dir.path().join("sources.yaml"))
        .database(&db)
        .flags(&["--refresh-concurrency", "1", "--url-allow", "127.0.0.1"])
        .start()
        .await;
    host.state.lock().unwrap().delay_ms = 2000;
    let job = server.ok("mutation { refreshPlugin(plugin: \"models\", wait: false) { id } }", json!({})).await;
    let id = job["refreshPlugin"]["id"].as_str().unwrap().to_string();
    // Wait until the job has loaded `local` and is waiting on the slow host.
    eventually("the plugin job gets past `local`", std::time::Duration::from_secs(20), async || {
        let j =
            server.ok("query($id: ID!) { refreshJob(id: $id) { completed currentSource } }", json!({"id": id})).await;
        if j["refreshJob"]["completed"] == 1 { Ok(()) } else { Err(j) }
    })
    .await;
    let out = server
        .ok(APPLY, json!({"plugin": "models", "input": {"id": "local", "content": models_yaml(5)}, "options": {"refreshAfterApply": true}}))
        .await;
    let res = &out["applySource"];
    assert_ne!(res["refresh"]["id"], id, "the apply's refresh joined the job that read the old file");
    assert_eq!(res["refresh"]["phase"], "SUCCEEDED");
    assert_eq!(res["source"]["status"]["entityCount"], 5, "{res:#}");
    let e = server.ok("{ entities(plugin: \"models\", sourceId: \"local\") { totalCount } }", json!({})).await;
    assert_eq!(e["entities"]["totalCount"], 5);
}
