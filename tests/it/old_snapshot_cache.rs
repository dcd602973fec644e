//! The startup snapshot cache is gone (README, "Benchmarks": a restart parses as fast as it
//! read the cache). What an earlier version left in `DATA_DIR/snapshot-cache/` is removed at
//! start, its own files only, with one info line; anything else in there stays.

use crate::support;

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Backend, Server, TestServer, database_url};

const SOURCES: &str = "model_catalogs:
  - name: Models
    id: small
    type: yaml
    properties:
      yamlCatalogPath: small.yaml
";

const MODELS: &str =
    "source: Test\nmodels:\n  - name: test/a\n    description: a\n  - name: test/b\n    description: b\n";

const REMOVED: &str = "removed the snapshot cache an earlier version left";

/// A data directory with a catalog and what an earlier version's cache left in it.
async fn setup(extra: &[&str]) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("sources.yaml"), SOURCES).unwrap();
    std::fs::write(dir.join("small.yaml"), MODELS).unwrap();
    let cache = dir.join("snapshot-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::write(cache.join("models.3f2a9c.snap"), b"CBFFSNAP old").unwrap();
    std::fs::write(cache.join(".models.3f2a9c.snap.tmp-4242"), b"half").unwrap();
    for name in extra {
        std::fs::write(cache.join(name), b"not the server's").unwrap();
    }
    let db = database_url(Backend::Sqlite, dir).await;
    (tmp, db)
}

async fn start(dir: &Path, db: &str) -> Server {
    TestServer::new(dir).sources(dir.join("sources.yaml")).database(db).start().await
}

/// The log lines containing `needle`, once there is one or after 5 s (the log is written by a
/// batching thread).
fn lines(server: &Server, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<String> = server.log_text().lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn serves_both_models(server: &Server) {
    let page = server.ok("{ entities(plugin: \"models\", first: 10) { totalCount } }", json!({})).await;
    assert_eq!(page["entities"]["totalCount"], 2, "{page:#}");
}

#[tokio::test]
async fn an_old_cache_directory_is_removed_at_start() {
    let (tmp, db) = setup(&[]).await;
    let server = start(tmp.path(), &db).await;
    assert!(!tmp.path().join("snapshot-cache").exists());
    let logged = lines(&server, REMOVED);
    assert_eq!(logged.len(), 1, "{}", server.log_text());
    assert!(logged[0].contains("INFO"), "{}", logged[0]);
    serves_both_models(&server).await;
    let (dir, _) = server.stop();
    // The next start has nothing to remove and says nothing.
    let again = start(&dir, &db).await;
    assert!(lines(&again, REMOVED).is_empty(), "{}", again.log_text());
    assert!(!dir.join("snapshot-cache").exists());
    serves_both_models(&again).await;
    again.stop();
}

#[tokio::test]
async fn only_the_caches_own_files_are_removed() {
    let (tmp, db) = setup(&["notes.txt", "catalog.yaml"]).await;
    let server = start(tmp.path(), &db).await;
    let cache = tmp.path().join("snapshot-cache");
    let mut left: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["catalog.yaml", "notes.txt"]);
    assert_eq!(lines(&server, REMOVED).len(), 1, "{}", server.log_text());
    serves_both_models(&server).await;
    server.stop();
}
