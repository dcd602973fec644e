//! The paths the performance work changed, checked for behaviour (never for timing): entity
//! cursors that stay put across refreshes, the refresh diff (unchanged vs updated), and paging
//! with and without a search across sources.

use crate::support;

use serde_json::{Value, json};
use std::path::Path;
use support::*;

const PAGE: &str = "query($first: Int, $after: String, $search: String, $source: ID) {
  entities(plugin: \"models\", first: $first, after: $after, search: $search, sourceId: $source) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { name } }
  }
}";

const REFRESH: &str = "mutation($id: ID!) {
  refreshSource(plugin: \"models\", id: $id, mode: FULL, wait: true) {
    phase
    results { status entitiesLoaded entitiesAdded entitiesUpdated entitiesRemoved entitiesUnchanged }
  }
}";

/// Models `test/m{i}` for every i in `range`, in order.
fn models(range: impl Iterator<Item = usize>, description: impl Fn(usize) -> String) -> String {
    let mut s = String::from("source: Test\nmodels:\n");
    for i in range {
        s.push_str(&format!(
            "  - name: test/m{i}\n    provider: Tester\n    description: {}\n    artifacts:\n      - uri: oci://registry.example.com/test/m{i}:1\n",
            description(i)
        ));
    }
    s
}

fn plain(i: usize) -> String {
    format!("model number {i}")
}

/// Two model sources, `a` (30 models) and `b` (`b/x{i}`, 5 models), with the watcher off so only
/// the test's refreshes load the files.
async fn start(dir: &Path) -> Server {
    std::fs::write(dir.join("a.yaml"), models(0..30, plain)).unwrap();
    let mut b = String::from("source: B\nmodels:\n");
    for i in 0..5 {
        b.push_str(&format!(
            "  - name: b/x{i}\n    provider: Other\n    description: model number {i} of b\n    artifacts:\n      - uri: oci://registry.example.com/b/x{i}:1\n"
        ));
    }
    std::fs::write(dir.join("b.yaml"), b).unwrap();
    std::fs::write(
        dir.join("sources.yaml"),
        "model_catalogs:\n  - name: A\n    id: a\n    type: yaml\n    enabled: true\n    properties:\n      yamlCatalogPath: a.yaml\n  - name: B\n    id: b\n    type: yaml\n    enabled: true\n    properties:\n      yamlCatalogPath: b.yaml\nmcp_catalogs: []\n",
    )
    .unwrap();
    let db = database_url(Backend::Sqlite, dir).await;
    TestServer::new(dir).sources(dir.join("sources.yaml")).database(&db).flags(&["--watch-interval", "0"]).start().await
}

fn names(page: &Value) -> Vec<String> {
    page["edges"].as_array().unwrap().iter().map(|e| e["node"]["name"].as_str().unwrap().to_string()).collect()
}

async fn page(server: &Server, vars: Value) -> Value {
    server.ok(PAGE, vars).await["entities"].clone()
}

async fn refresh(server: &Server, id: &str) -> Value {
    let out = server.ok(REFRESH, json!({"id": id})).await;
    assert_eq!(out["refreshSource"]["phase"], "SUCCEEDED", "{out:#}");
    out["refreshSource"]["results"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_gives_the_same_next_page_after_a_full_refresh_of_unchanged_content() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let first = page(&server, json!({"first": 10, "source": "a"})).await;
    let cursor = first["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    let before = page(&server, json!({"first": 10, "after": cursor, "source": "a"})).await;
    assert_eq!(names(&before), (10..20).map(|i| format!("test/m{i}")).collect::<Vec<_>>());

    let result = refresh(&server, "a").await;
    assert_eq!(result["entitiesUnchanged"], 30, "{result:#}");

    let after = page(&server, json!({"first": 10, "after": cursor, "source": "a"})).await;
    assert_eq!(names(&after), names(&before));
    assert_eq!(after["pageInfo"], before["pageInfo"], "cursors and page info are the same");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_stays_on_its_entity_when_entities_before_it_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let first = page(&server, json!({"first": 10})).await;
    assert_eq!(names(&first).last().map(String::as_str), Some("test/m9"));
    let cursor = first["pageInfo"]["endCursor"].as_str().unwrap().to_string();

    // m0..m2 go away (3 of 30: under the removal guard); m9 itself is unchanged.
    std::fs::write(dir.path().join("a.yaml"), models(3..30, plain)).unwrap();
    let result = refresh(&server, "a").await;
    assert_eq!((result["entitiesRemoved"].as_u64(), result["entitiesUnchanged"].as_u64()), (Some(3), Some(27)));

    // An offset cursor would now skip m10..m12.
    let next = page(&server, json!({"first": 5, "after": cursor})).await;
    assert_eq!(names(&next), (10..15).map(|i| format!("test/m{i}")).collect::<Vec<_>>());
    assert_eq!(next["totalCount"], 27 + 5);
    assert_eq!(next["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(next["pageInfo"]["hasNextPage"], true);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_on_a_removed_entity_continues_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let first = page(&server, json!({"first": 10, "source": "a"})).await;
    let cursor = first["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    // m9, the cursor's own entity, is removed.
    std::fs::write(dir.path().join("a.yaml"), models((0..30).filter(|i| *i != 9), plain)).unwrap();
    refresh(&server, "a").await;
    let next = page(&server, json!({"first": 3, "after": cursor, "source": "a"})).await;
    // From the position m9 had, which m10 now holds: nothing skipped.
    assert_eq!(names(&next), ["test/m10", "test/m11", "test/m12"]);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_tells_updated_from_unchanged_entities() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let same = refresh(&server, "a").await;
    assert_eq!(
        (same["entitiesUnchanged"].as_u64(), same["entitiesUpdated"].as_u64(), same["entitiesAdded"].as_u64()),
        (Some(30), Some(0), Some(0)),
        "{same:#}"
    );
    std::fs::write(
        dir.path().join("a.yaml"),
        models(0..31, |i| if i == 4 { "a new description".into() } else { plain(i) }),
    )
    .unwrap();
    let changed = refresh(&server, "a").await;
    assert_eq!(
        (changed["entitiesUnchanged"].as_u64(), changed["entitiesUpdated"].as_u64(), changed["entitiesAdded"].as_u64()),
        (Some(29), Some(1), Some(1)),
        "{changed:#}"
    );
    let four = page(&server, json!({"search": "A NEW DESCRIPTION"})).await;
    assert_eq!(names(&four), ["test/m4"]);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_entity_once_with_and_without_a_search() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    for (search, expected) in [
        (None, (0..30).map(|i| format!("test/m{i}")).chain((0..5).map(|i| format!("b/x{i}"))).collect::<Vec<_>>()),
        // Case-insensitive, across both sources: "number 1" matches m1, m10..m19 and b/x1.
        (
            Some("NUMBER 1"),
            std::iter::once("test/m1".to_string())
                .chain((10..20).map(|i| format!("test/m{i}")))
                .chain(std::iter::once("b/x1".to_string()))
                .collect(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let p = page(&server, json!({"first": 4, "after": after, "search": search})).await;
            assert_eq!(p["totalCount"], expected.len(), "{search:?}: {p:#}");
            assert_eq!(p["pageInfo"]["hasPreviousPage"], pages > 0, "{search:?}: {p:#}");
            seen.extend(names(&p));
            pages += 1;
            if p["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = p["pageInfo"]["endCursor"].as_str().map(str::to_string);
        }
        assert_eq!(seen, expected, "{search:?}");
        assert_eq!(pages, expected.len().div_ceil(4), "{search:?}");
    }
    server.stop();
}

const REVISIONS: &str = "{ sources { revisions(limit: 100) { revision } } }";

async fn revisions_via_api(server: &Server) -> usize {
    let v = server.ok(REVISIONS, json!({})).await;
    v["sources"].as_array().unwrap().iter().map(|s| s["revisions"].as_array().unwrap().len()).sum()
}

/// The revisions the SQLite *file* holds, its write-ahead log ignored (`immutable` reads the
/// main file only): what checkpoints have copied there. `None` while it has no such table yet.
async fn revisions_in_file(db: &Path) -> Option<usize> {
    use sqlx::Connection;
    let mut conn =
        sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}?immutable=true", db.display())).await.ok()?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM catalog_source_revisions").fetch_one(&mut conn).await.ok()?;
    let _ = conn.close().await;
    usize::try_from(n).ok()
}

async fn file_reaches(db: &Path, want: usize) -> Option<usize> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = revisions_in_file(db).await;
        if got == Some(want) || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// SQLite runs without automatic checkpoints (they made the commit that grew the log copy it
/// into the file and fsync, inside the import at start and inside a large apply): the server's
/// checkpointer copies the import and later applies into the database file, and a process
/// killed right after an apply loses nothing. (That the commit no longer copies is a speed
/// property: `benches/refresh.rs` shows it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_reach_the_database_file_in_the_background_and_a_kill_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let imported = revisions_via_api(&server).await;
    assert!(imported >= 2, "the example's import recorded {imported} revisions");
    assert_eq!(file_reaches(&db, imported).await, Some(imported), "the import never reached the database file");

    let apply = |id: &str, n: usize| json!({"plugin": "models", "input": {"id": id, "name": id, "type": "yaml", "content": models_yaml(n)}});
    server.ok(APPLY, apply("checkpointed", 3)).await;
    assert_eq!(revisions_via_api(&server).await, imported + 1);
    assert_eq!(file_reaches(&db, imported + 1).await, Some(imported + 1), "an apply never reached the database file");

    // Killed right after an apply (most likely before the next checkpoint): a restart has it.
    server.ok(APPLY, apply("unflushed", 2)).await;
    let (dir_path, database) = server.kill();
    let server = TestServer::new(&dir_path).database(&database).start().await;
    let v = server
        .ok("{ source(plugin: \"models\", id: \"unflushed\") { revision status { entityCount } } }", json!({}))
        .await;
    assert_eq!(v["source"]["revision"], 1, "{v}");
    assert_eq!(revisions_via_api(&server).await, imported + 2);
    server.stop();
    assert_eq!(revisions_in_file(&db).await, Some(imported + 2), "a clean stop left revisions outside the file");
}

/// On SQLite the initial refresh runs beside the import of the first revisions and then hands
/// over to the watcher. Disabled sources refresh at once, so the watcher (every 10 ms here)
/// starts while large catalogs are still being recorded: it must wait for the import, not
/// record the same revisions as external edits (which made the start fail with "revision 1
/// already exists" or left `EXTERNAL` first revisions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_never_races_the_import_of_first_revisions() {
    const SOURCES: usize = 6;
    let big = models(0..12_000, plain);
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut sources = String::from("model_catalogs:\n");
        for k in 0..SOURCES {
            std::fs::write(dir.path().join(format!("big{k}.yaml")), &big).unwrap();
            sources.push_str(&format!(
                "  - name: Big {k}\n    id: big{k}\n    type: yaml\n    enabled: false\n    properties:\n      yamlCatalogPath: big{k}.yaml\n"
            ));
        }
        sources.push_str("mcp_catalogs: []\n");
        std::fs::write(dir.path().join("sources.yaml"), sources).unwrap();
        let db = database_url(Backend::Sqlite, dir.path()).await;
        // A generous database timeout: the suite runs beside other tests, and what is checked
        // here is which revisions exist, not how fast they are read.
        let server = TestServer::new(dir.path())
            .database(&db)
            .flags(&["--watch-interval", "0.01", "--db-timeout", "30"])
            .start()
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let v = server.ok("{ sources { id revisions(limit: 10) { revision action actor } } }", json!({})).await;
        let all = v["sources"].as_array().unwrap();
        assert_eq!(all.len(), SOURCES, "{v}");
        for s in all {
            assert_eq!(
                s["revisions"],
                json!([{"revision": 1, "action": "IMPORT", "actor": "system"}]),
                "round {round}: {s}"
            );
        }
        let logs = server.log_text();
        assert!(!logs.contains("already exists"), "round {round}: {logs}");
        server.stop();
    }
}
