//! The startup snapshot cache against the real binary: a restart with unchanged catalogs takes
//! the entities from `DATA_DIR/snapshot-cache/`, and nothing else ever changes what is served
//! (a changed catalog, a changed filter, a damaged file), `--snapshot-cache off` touches nothing,
//! and the directory is no source's catalog location.

use crate::support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{APPLY, Backend, Server, TestServer, database_url};

const SOURCES: &str = "model_catalogs:
  - name: Models
    id: big
    type: yaml
    properties:
      yamlCatalogPath: big.yaml
mcp_catalogs:
  - name: Servers
    id: servers
    type: yaml
    properties:
      yamlCatalogPath: servers.yaml
";

/// 30 models, one duplicate (a partial load: its diagnostic must come back too), custom
/// properties whose float text must survive exactly.
fn models(version: &str) -> String {
    let mut s = String::from("source: Test\nmodels:\n");
    for i in 0..30 {
        s.push_str(&format!(
            "  - name: test/m{i}\n    provider: Tester\n    description: model {i} {version}\n    tasks: [a, b]\n    customProperties:\n      score: {{metadataType: MetadataDoubleValue, double_value: 0.30000000000000004}}\n      tiny: {{double_value: 4.9e-324}}\n      odd: {{double_value: .nan}}\n    artifacts:\n      - uri: oci://registry.example.com/test/m{i}:1\n        customProperties:\n          size: {{metadataType: MetadataIntValue, int_value: \"{i}\"}}\n"
        ));
    }
    s.push_str("  - name: test/m3\n    description: the duplicate\n");
    s
}

const SERVERS: &str = "mcp_servers:
  - name: files
    description: reads files
    tools:
      - name: read
        accessType: read_only
        parameters:
          - {name: path, type: string, required: true}
    runtimeMetadata: {a: 1.5, b: [null, 2]}
    customProperties:
      x: {string_value: \"y\"}
    transports: [http]
  - name: nan
    runtimeMetadata: .nan
";

const ENTITIES: &str = r#"query($plugin: String!) {
  entities(plugin: $plugin, first: 50) {
    totalCount
    edges { cursor node {
      id name sourceId description provider
      ... on Model { license maturity language tasks readme customProperties
        artifacts { uri artifactType metricsType name customProperties } }
      ... on McpServer { tags transports toolCount runtimeMetadata customProperties format
        tools { name accessType parameters { name type required } } endpoints { http sse } }
    } }
  }
}"#;

const STATUS: &str = r#"query($plugin: String!, $id: ID!) {
  source(plugin: $plugin, id: $id) {
    revision
    status { state entityCount diagnostics { message line column } }
    revisions(limit: 50) { revision action contentHash }
  }
}"#;

/// Everything a client can see of both sources.
async fn everything(server: &Server) -> Value {
    json!({
        "models": server.ok(ENTITIES, json!({"plugin": "models"})).await,
        "mcp": server.ok(ENTITIES, json!({"plugin": "mcp"})).await,
        "big": server.ok(STATUS, json!({"plugin": "models", "id": "big"})).await,
        "servers": server.ok(STATUS, json!({"plugin": "mcp", "id": "servers"})).await,
    })
}

fn cache_dir(dir: &Path) -> PathBuf {
    dir.join("snapshot-cache")
}

/// The cache files, once there are `n` of them and none changed for a moment (they are
/// written in the background after a refresh).
fn wait_for_files(dir: &Path, n: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<Vec<(PathBuf, Vec<u8>)>> = None;
    loop {
        let mut now: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(cache_dir(dir))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "snap"))
                    .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
                    .collect()
            })
            .unwrap_or_default();
        now.sort();
        if now.len() == n && last.as_ref() == Some(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "expected {n} snapshot cache files, have {}", now.len());
        last = Some(now);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Log lines containing `needle`, once at least `min` are there (the log is written by a
/// batching thread, so a line may land just after readiness) or after 5 s.
fn lines(server: &Server, needle: &str, min: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<String> = server.log_text().lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
        if found.len() >= min || Instant::now() > deadline {
            // A moment more for any further line of the same start.
            std::thread::sleep(Duration::from_millis(300));
            return server.log_text().lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many sources were taken from the cache, waiting for `expected` of them.
fn hits(server: &Server, expected: usize) -> usize {
    lines(server, "snapshot cache hit", expected).len()
}

fn misses(server: &Server) -> Vec<String> {
    lines(server, "snapshot cache miss", 1)
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    sources: PathBuf,
    db: String,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("sources.yaml"), SOURCES).unwrap();
    std::fs::write(dir.join("big.yaml"), models("v1")).unwrap();
    std::fs::write(dir.join("servers.yaml"), SERVERS).unwrap();
    let db = database_url(Backend::Sqlite, &dir).await;
    Setup { sources: dir.join("sources.yaml"), dir, db, _tmp: tmp }
}

impl Setup {
    async fn start(&self, extra: &[&str]) -> Server {
        TestServer::new(&self.dir).sources(&self.sources).database(&self.db).flags(extra).start().await
    }
}

#[tokio::test]
async fn a_restart_serves_the_same_entities_from_the_cache() {
    let s = setup().await;
    let first = s.start(&[]).await;
    let before = everything(&first).await;
    assert_eq!(before["models"]["entities"]["totalCount"], 30);
    assert_eq!(before["big"]["source"]["status"]["state"], "PARTIALLY_AVAILABLE");
    assert_eq!(hits(&first, 0), 0);
    let files = wait_for_files(&s.dir, 2);
    first.stop();

    let second = s.start(&[]).await;
    assert_eq!(hits(&second, 2), 2, "{}", second.log_text());
    let after = everything(&second).await;
    assert_eq!(after, before);
    // A hit is not rewritten, and the revisions did not grow (same content hash).
    assert_eq!(wait_for_files(&s.dir, 2), files);
    assert_eq!(after["big"]["source"]["revisions"].as_array().unwrap().len(), 1);
    // The float text survived exactly.
    let props = after["models"]["entities"]["edges"][0]["node"]["customProperties"].to_string();
    assert!(props.contains("0.30000000000000004") && props.contains("5e-324"), "{props}");
    second.stop();
}

#[tokio::test]
async fn a_catalog_changed_while_stopped_is_served_new() {
    let s = setup().await;
    let first = s.start(&[]).await;
    wait_for_files(&s.dir, 2);
    first.stop();
    std::fs::write(s.dir.join("big.yaml"), models("v2")).unwrap();

    let second = s.start(&[]).await;
    assert_eq!(hits(&second, 1), 1, "only the unchanged mcp source: {}", second.log_text());
    let e = second.ok(ENTITIES, json!({"plugin": "models"})).await;
    assert!(e["entities"]["edges"][0]["node"]["description"].as_str().unwrap().ends_with("v2"), "{e}");
    assert!(misses(&second).iter().any(|l| l.contains("other content")), "{:?}", misses(&second));
    // The changed source's file is rewritten for the new content: the next start hits twice.
    let before = everything(&second).await;
    wait_for_files(&s.dir, 2);
    second.stop();
    let third = s.start(&[]).await;
    assert_eq!(hits(&third, 2), 2, "{}", third.log_text());
    assert_eq!(everything(&third).await, before);
    third.stop();
}

#[tokio::test]
async fn a_filter_changed_while_stopped_is_applied() {
    let s = setup().await;
    let first = s.start(&[]).await;
    wait_for_files(&s.dir, 2);
    first.stop();
    let filtered = SOURCES.replace(
        "      yamlCatalogPath: big.yaml\n",
        "      yamlCatalogPath: big.yaml\n    excludedModels: [\"test/m1*\"]\n",
    );
    std::fs::write(&s.sources, filtered).unwrap();

    let second = s.start(&[]).await;
    let e = second.ok(ENTITIES, json!({"plugin": "models"})).await;
    // m1 and m10..m19 are gone.
    assert_eq!(e["entities"]["totalCount"], 19, "{e}");
    let names: Vec<&str> =
        e["entities"]["edges"].as_array().unwrap().iter().map(|x| x["node"]["name"].as_str().unwrap()).collect();
    assert!(!names.iter().any(|n| n.starts_with("test/m1")), "{names:?}");
    assert_eq!(hits(&second, 1), 1, "only the mcp source: {}", second.log_text());
    second.stop();
}

#[tokio::test]
async fn a_damaged_cache_file_is_ignored_and_rewritten() {
    let s = setup().await;
    let first = s.start(&[]).await;
    let before = everything(&first).await;
    let files = wait_for_files(&s.dir, 2);
    first.stop();
    // One byte in the middle of the models file's payload.
    let (path, bytes) =
        files.iter().find(|(p, _)| p.file_name().unwrap().to_str().unwrap().starts_with("models.")).unwrap();
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(path, &bad).unwrap();

    let second = s.start(&[]).await;
    assert_eq!(hits(&second, 1), 1, "{}", second.log_text());
    assert!(misses(&second).iter().any(|l| l.contains("checksum mismatch")), "{:?}", misses(&second));
    assert_eq!(everything(&second).await, before);
    // Rewritten, valid: the same bytes as the first write (same key, same load).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read(path).unwrap() != *bytes {
        assert!(Instant::now() < deadline, "the damaged file was not rewritten");
        std::thread::sleep(Duration::from_millis(100));
    }
    second.stop();
    let third = s.start(&[]).await;
    assert_eq!(hits(&third, 2), 2, "{}", third.log_text());
    assert_eq!(everything(&third).await, before);
    third.stop();
}

#[tokio::test]
async fn off_creates_and_reads_nothing() {
    let s = setup().await;
    let first = s.start(&["--snapshot-cache", "off"]).await;
    let before = everything(&first).await;
    // Give a background write every chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!cache_dir(&s.dir).exists());
    first.stop();
    assert!(!cache_dir(&s.dir).exists());

    // Files from an earlier run with the cache on are not read either.
    let on = s.start(&[]).await;
    wait_for_files(&s.dir, 2);
    on.stop();
    let off = TestServer::new(&s.dir)
        .sources(&s.sources)
        .database(&s.db)
        .envs(&[("CATALOG_BFF_SNAPSHOT_CACHE", "off")])
        .start()
        .await;
    assert_eq!(hits(&off, 0), 0, "{}", off.log_text());
    assert_eq!(everything(&off).await["models"], before["models"]);
    off.stop();
}

#[tokio::test]
async fn sources_removed_while_stopped_lose_their_cache_file() {
    let s = setup().await;
    let first = s.start(&[]).await;
    wait_for_files(&s.dir, 2);
    first.stop();
    let only_models = SOURCES.split("mcp_catalogs:").next().unwrap().to_string();
    std::fs::write(&s.sources, only_models).unwrap();
    let second = s.start(&[]).await;
    assert_eq!(hits(&second, 1), 1);
    let left = wait_for_files(&s.dir, 1);
    assert!(left[0].0.file_name().unwrap().to_str().unwrap().starts_with("models."));
    second.stop();
}

#[tokio::test]
async fn the_cache_directory_is_no_catalog_location() {
    let s = setup().await;
    // A deployer's entry pointing into the cache directory (the API never assigns such a path).
    let sources = format!(
        "{SOURCES}  - name: Sneaky\n    id: sneaky\n    type: yaml\n    properties:\n      yamlCatalogPath: snapshot-cache/sneaky.yaml\n"
    );
    std::fs::write(&s.sources, sources).unwrap();
    let server = s.start(&[]).await;
    wait_for_files(&s.dir, 2);
    let body = server
        .gql(
            APPLY,
            json!({"plugin": "mcp", "input": {"id": "sneaky", "content": SERVERS}, "options": {"refreshAfterApply": false}}),
        )
        .await;
    let text = body.to_string();
    assert!(
        text.contains("inside a directory the server keeps for itself (its snapshot cache); refusing to write"),
        "{body:#}"
    );
    assert!(!cache_dir(&s.dir).join("sneaky.yaml").exists());
    // A new source asking for a location in there is refused too.
    let body = server
        .gql(
            APPLY,
            json!({"plugin": "models", "input": {"id": "fresh", "name": "Fresh", "type": "yaml", "content": models("x"),
                   "properties": {"yamlCatalogPath": "snapshot-cache/models.x.snap"}}}),
        )
        .await;
    assert!(body.to_string().contains("is not this source's catalog location"), "{body:#}");
    assert!(!cache_dir(&s.dir).join("models.x.snap").exists());
    // Reading a cache file back through the API is refused as well.
    std::fs::write(cache_dir(&s.dir).join("sneaky.yaml"), SERVERS).unwrap();
    let src = server.ok(support::SOURCE_QUERY, json!({"plugin": "mcp", "id": "sneaky"})).await;
    assert!(src["source"]["content"].is_null(), "{src:#}");
    server.stop();
}
