//! Refresh, memory, start → ready, search and deep pages on a generated 111k-model catalog.
//!
//! Generates two model catalogs in the Kubeflow format (100k models, ~40 MB, and 11k models,
//! ~4 MB: 111k entities, ~44 MB), starts the real release server on them (SQLite) and prints:
//! - start → ready (`/readyz` 200) on a fresh data directory (5 times, each its own; p50 and
//!   every run), then on a restart of the last one's data directory (3 times; p50 and every
//!   run: the catalogs are parsed again, the database already holds their revisions);
//! - the FULL refresh of the 100k source through the GraphQL API (`refreshSource`, `wait: true`),
//!   5 times: round trip, entities/s, and the server's RSS (VmRSS, VmHWM) right after each and
//!   1 s later;
//! - the bare `serde_yaml_ng` parse of the same file in this process, into a `Value` and into a
//!   plain `#[derive(Deserialize)]` struct (the limit), and the ratio refresh ÷ parse;
//! - the server's subset reader (`catalog_yaml::subset`) on the same list, on one thread;
//! - p50 of `entities(search:)` and of a deep page (`after:` a cursor ~90k entities in).
//!
//! Run by hand: `cargo bench --bench refresh` (build with `--features system-alloc` to compare
//! with the system allocator). It prints figures and asserts no timing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints its figures and stops at the first thing that goes wrong"
)]

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIG: usize = 100_000;
const SMALL: usize = 11_000;

fn catalog(prefix: &str, n: usize) -> String {
    let licenses = ["apache-2.0", "mit", "cc-by-4.0", "llama3", "gemma"];
    let tasks = ["text-generation", "summarization", "translation", "image-classification", "embedding"];
    let mut s = String::with_capacity(n * 420);
    s.push_str("source: Bench\nmodels:\n");
    for i in 0..n {
        let _ = write!(
            s,
            "  - name: {prefix}/model-{i:06}\n    provider: Provider {p}\n    description: Model {i} about topic{t}, for benchmarks.\n    license: {lic}\n    tasks:\n      - {t1}\n      - {t2}\n    customProperties:\n      size:\n        metadataType: MetadataStringValue\n        string_value: \"{sz}b\"\n    artifacts:\n      - uri: oci://registry.example.com/{prefix}/model-{i:06}:1.0.{r}\n        createTimeSinceEpoch: \"1760000000000\"\n      - uri: hf://{prefix}/model-{i:06}\n",
            p = i % 97,
            t = i % 1000,
            lic = licenses[i % licenses.len()],
            t1 = tasks[i % tasks.len()],
            t2 = tasks[(i / 7) % tasks.len()],
            sz = 1 + i % 70,
            r = i % 13,
        );
    }
    s
}

/// The same shape as the models plugin reads, without its checks: what a bare parse costs.
#[derive(Deserialize)]
#[expect(dead_code, reason = "parsed to measure the parse; the values are not read")]
struct PlainFile {
    source: Option<String>,
    models: Vec<PlainModel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "parsed to measure the parse; the values are not read")]
struct PlainModel {
    name: String,
    provider: Option<String>,
    description: Option<String>,
    license: Option<String>,
    tasks: Option<Vec<String>>,
    custom_properties: Option<BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default)]
    artifacts: Vec<PlainArtifact>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "parsed to measure the parse; the values are not read")]
struct PlainArtifact {
    uri: Option<String>,
    create_time_since_epoch: Option<String>,
}

/// Fresh starts measured besides the one the restarts build on.
const FRESH_STARTS: usize = 4;
/// Restarts of that one's data directory (the last one stays up for the rest of the bench).
const RESTARTS: usize = 3;

fn start(dir: &Path) -> (Child, String, Instant) {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalog-bff"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--rate-limit", "0"])
        .args(["--watch-interval", "0", "--max-body-bytes", "1048576", "--data-dir"])
        .arg(dir)
        .arg("--sources")
        .arg(dir.join("sources.yaml"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(a) = v["fields"]["addr"].as_str()
            {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(120)).expect("server address");
    (child, addr, t0)
}

async fn wait_ready(http: &reqwest::Client, addr: &str) {
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

async fn gql(http: &reqwest::Client, addr: &str, query: &str) -> Value {
    let body: Value = http
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body
}

fn p50(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = catalog("bench", BIG);
    let small = catalog("extra", SMALL);
    std::fs::write(dir.path().join("big.yaml"), &big).expect("write");
    std::fs::write(dir.path().join("small.yaml"), &small).expect("write");
    std::fs::write(
        dir.path().join("sources.yaml"),
        "model_catalogs:\n  - name: Big\n    id: big\n    type: yaml\n    enabled: true\n    properties:\n      yamlCatalogPath: big.yaml\n  - name: Small\n    id: small\n    type: yaml\n    enabled: true\n    properties:\n      yamlCatalogPath: small.yaml\nmcp_catalogs: []\n",
    )
    .expect("write");
    let yaml_mb = (big.len() + small.len()) as f64 / 1e6;
    println!(
        "catalog: {} + {} models, {:.1} MB + {:.1} MB of YAML ({yaml_mb:.1} MB)",
        BIG,
        SMALL,
        big.len() as f64 / 1e6,
        small.len() as f64 / 1e6
    );

    // The limit: the bare parse of the 100k file, best of 3.
    let best = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let parse_value = best(&|| {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&big).expect("parse");
        std::hint::black_box(v);
    });
    let parse_struct = best(&|| {
        let v: PlainFile = serde_yaml_ng::from_str(&big).expect("parse");
        assert_eq!(v.models.len(), BIG);
        std::hint::black_box(v);
    });
    let rate = |d: Duration| BIG as f64 / d.as_secs_f64();
    println!(
        "bare serde_yaml_ng parse of the 100k file: into Value {parse_value:.2?} ({:.0} entities/s), into a plain struct {parse_struct:.2?} ({:.0} entities/s)",
        rate(parse_value),
        rate(parse_struct)
    );

    // The server's fast path on the same list, on one thread (the server cuts it in pieces and
    // reads them on every core; a piece it declines goes to serde_yaml_ng).
    let list = big.split_once("models:\n").map_or("", |(_, l)| l);
    let subset = best(&|| {
        let v: Option<Vec<PlainModel>> = catalog_yaml::subset::from_str(list);
        assert_eq!(v.as_ref().map(Vec::len), Some(BIG), "the subset reader declined the generated catalog");
        std::hint::black_box(v);
    });
    println!(
        "the subset reader (catalog_yaml::subset) on the same list, one thread: {subset:.2?} ({:.0} entities/s, {:.1}x the plain-struct parse)",
        rate(subset),
        parse_struct.as_secs_f64() / subset.as_secs_f64()
    );

    catalog_core::install_crypto_provider();
    let http = reqwest::Client::new();
    // Fresh starts vary with the host (most of their CPU is a new process's first page faults):
    // a few first, each on a new data directory holding the same three files, then the one
    // the restarts below start on again.
    let mut fresh = Vec::new();
    for _ in 0..FRESH_STARTS {
        let other = tempfile::tempdir().expect("tempdir");
        for f in ["big.yaml", "small.yaml", "sources.yaml"] {
            std::fs::copy(dir.path().join(f), other.path().join(f)).expect("copy");
        }
        let (mut server, addr, t0) = start(other.path());
        wait_ready(&http, &addr).await;
        fresh.push(t0.elapsed());
        let _ = server.kill();
        let _ = server.wait();
    }
    let (mut server, addr, t0) = start(dir.path());
    wait_ready(&http, &addr).await;
    let cold = t0.elapsed();
    let (r, h) = rss(server.id());
    fresh.push(cold);
    let runs: Vec<String> = fresh.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
    println!(
        "start -> ready, fresh data dir: {cold:.2?}; RSS {r:.0} MB (peak {h:.0} MB); {} fresh starts: p50 {:.2?} (ms: {})",
        fresh.len(),
        p50(&mut fresh),
        runs.join(", ")
    );
    // Restarts: the same catalogs parsed again (there is no snapshot cache any more; the
    // README's Benchmarks say why), the database already holding their revisions.
    let (mut restarts, mut addr) = (Vec::new(), addr);
    for _ in 0..RESTARTS {
        let _ = server.kill();
        let _ = server.wait();
        let (next, next_addr, t0) = start(dir.path());
        wait_ready(&http, &next_addr).await;
        restarts.push(t0.elapsed());
        (server, addr) = (next, next_addr);
    }
    let pid = server.id();
    let (r0, h0) = rss(pid);
    let warm = *restarts.last().expect("a restart");
    let runs: Vec<String> = restarts.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
    println!(
        "start -> ready, restart: {warm:.2?}; RSS {r0:.0} MB (peak {h0:.0} MB); {} restarts: p50 {:.2?} (ms: {})",
        restarts.len(),
        p50(&mut restarts),
        runs.join(", ")
    );
    let budget = 3.0 * yaml_mb + 50.0;
    println!("RSS budget (3 x YAML + 50 MB): {budget:.0} MB");

    let mut rounds = Vec::new();
    for i in 1..=5 {
        let t = Instant::now();
        let v = gql(
            &http,
            &addr,
            "mutation { refreshSource(plugin: \"models\", id: \"big\", mode: FULL, wait: true) { phase results { status entitiesLoaded entitiesUnchanged durationMs } } }",
        )
        .await;
        let d = t.elapsed();
        let res = &v["data"]["refreshSource"]["results"][0];
        assert_eq!(res["entitiesLoaded"], BIG, "{v}");
        let (r, h) = rss(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (settled, _) = rss(pid);
        println!(
            "FULL refresh {i}: {d:.2?} round trip ({:.0} entities/s; server {} ms), RSS {r:.0} MB, 1 s later {settled:.0} MB (peak {h:.0} MB)",
            rate(d),
            res["durationMs"]
        );
        rounds.push(d);
    }
    let best_refresh = rounds.iter().min().copied().unwrap_or_default();
    let mut sorted = rounds.clone();
    let median = p50(&mut sorted);
    println!(
        "refresh p50 {median:.2?} ({:.0} entities/s); ratio refresh / bare parse: {:.2} of the plain-struct parse, {:.2} of the Value parse (best round {best_refresh:.2?})",
        rate(median),
        parse_struct.as_secs_f64() / median.as_secs_f64(),
        parse_value.as_secs_f64() / median.as_secs_f64()
    );

    // Distinct queries (the response cache would answer a repeated one).
    let mut search = Vec::new();
    for k in 1..42 {
        let q = format!(
            "{{ entities(plugin: \"models\", search: \"Topic{k}7,\", first: 20) {{ totalCount edges {{ cursor node {{ name }} }} }} }}"
        );
        let t = Instant::now();
        let v = gql(&http, &addr, &q).await;
        search.push(t.elapsed());
        assert!(v["data"]["entities"]["totalCount"].as_u64().unwrap_or(0) > 0, "{v}");
    }
    // Cursors deep in the list: page through with the largest page, keep the end cursors.
    let mut after: Option<String> = None;
    let mut deep_cursors = Vec::new();
    let mut seen = 0usize;
    let page_t = Instant::now();
    loop {
        let arg = after.as_ref().map(|c| format!(", after: \"{c}\"")).unwrap_or_default();
        let v = gql(
            &http,
            &addr,
            &format!("{{ entities(plugin: \"models\", first: 500{arg}) {{ pageInfo {{ endCursor hasNextPage }} edges {{ cursor }} }} }}"),
        )
        .await;
        let conn = &v["data"]["entities"];
        seen += conn["edges"].as_array().map(Vec::len).unwrap_or(0);
        let end = conn["pageInfo"]["endCursor"].as_str().map(str::to_string);
        if (90_000..111_000).contains(&seen) {
            deep_cursors.extend(end.clone());
        }
        if conn["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = end;
    }
    let paging = page_t.elapsed();
    let mut deep = Vec::new();
    for c in deep_cursors.iter().take(41) {
        let q = format!(
            "{{ entities(plugin: \"models\", first: 20, after: \"{c}\") {{ totalCount edges {{ cursor node {{ name }} }} }} }}"
        );
        let t = Instant::now();
        gql(&http, &addr, &q).await;
        deep.push(t.elapsed());
    }
    println!(
        "entities over {} entities: search p50 {:.2?} (n={}), deep page (first: 20 after ~90k+) p50 {:.2?} (n={}); all {seen} in pages of 500: {paging:.2?}",
        BIG + SMALL,
        p50(&mut search),
        search.len(),
        p50(&mut deep),
        deep.len()
    );
    let (r, h) = rss(pid);
    println!("RSS at the end {r:.0} MB (peak {h:.0} MB); budget {budget:.0} MB");
    let _ = server.kill();
    let _ = server.wait();
}
