//! Cached reads at wire speed: the README's `sources` query, answered from the response cache by
//! the real release server, against a bare axum handler that returns the same bytes, load-tested
//! in the same run by the same tool (wrk) with the same settings; prints both and the ratio.
//!
//! Both servers are pinned to core 0 and wrk to core 1 (`taskset`), so the figure is what one
//! core of the server does. The bare handler runs in a child process of this bench (the bench
//! binary re-executes itself), so it gets the same runtime setup as the server: tokio on one
//! core, axum 0.8, hyper 1.
//!
//! Run by hand: `cargo bench --bench http_cached` (needs `wrk` and `taskset`; `BENCH_SECS`,
//! default 10, sets the length of each run; `BENCH_CONNECTIONS`, default 64; `BENCH_ROUNDS`,
//! default 5, the number of bare-then-server rounds whose median ratio is the figure;
//! `BENCH_BIN` runs another build of the server, e.g. an older one, against the same bare
//! handler).
//!
//! With `benches/yoga`'s packages installed (`npm ci --prefix benches/yoga`; needs `node`),
//! each round also load-tests graphql-yoga with its response cache (`benches/yoga/server.mjs`,
//! pinned to core 0 as well) serving the same data, checked to answer the same bytes, and
//! prints catalog-bff ÷ graphql-yoga.
//!
//! Each round also load-tests the same server with its response cache off (`--cache-ttl 0`,
//! on its own copy of the example) and prints uncached ÷ cached: what a cache miss costs now
//! that reads come from the in-memory read model.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints its figures and stops at the first thing that goes wrong"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QUERY: &str = "{ sources { plugin id name enabled revision status { state entityCount lastRefreshSummary } } }";
const BARE_ENV: &str = "HTTP_CACHED_BARE";

/// Starts `bin serve` pinned to core 0 on a free port with the rate limit off, its data in
/// `data` and its output in `log`, plus `extra` flags; returns it and its base URL once ready.
async fn start_server(http: &reqwest::Client, bin: &str, data: &Path, log: &Path, extra: &[&str]) -> (Stopped, String) {
    let port = free_port();
    let log = std::fs::File::create(log).expect("log file");
    let server = Stopped(
        pinned(Path::new(bin))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--rate-limit", "0"])
            .args(extra)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start server"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_up(http, &format!("{base}/readyz")).await;
    (server, base)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The child-process mode: a bare axum handler returning the bytes in the given file.
fn bare(spec: &str) {
    let (port, file) = spec.split_once(':').expect("port:file");
    let body = axum::body::Bytes::from(std::fs::read(file).expect("body file"));
    let addr = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/graphql",
            axum::routing::post(move || {
                let body = body.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind bare");
        axum::serve(listener, app).await.expect("serve bare");
    });
}

async fn wait_up(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await
            && (r.status().is_success() || r.status().as_u16() == 405)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

/// The answer of `base`'s `/graphql` to the JSON request `body`.
async fn post(http: &reqwest::Client, base: &str, body: &str) -> axum::body::Bytes {
    let resp = http
        .post(format!("{base}/graphql"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("query");
    resp.bytes().await.expect("body")
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(url: &str, script: &Path, secs: u64, connections: u32) -> Figures {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk (apt install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RESULT ")).unwrap_or_else(|| panic!("wrk printed:\n{text}"));
    let f: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().expect("number")).collect();
    if f[3] > 0.0 {
        eprintln!("  wrk: {} non-2xx/3xx responses or errors", f[3]);
    }
    Figures { rps: f[0], p50_ms: f[1] / 1000.0, p99_ms: f[2] / 1000.0 }
}

fn pinned(program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(program);
    cmd
}

/// A child process stopped when dropped (also when the bench panics).
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    match std::env::var(BARE_ENV) {
        Ok(spec) => bare(&spec),
        Err(_) => tokio::runtime::Runtime::new().expect("runtime").block_on(run()),
    }
}

async fn run() {
    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: u32 = std::env::var("BENCH_CONNECTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    catalog_core::install_crypto_provider();
    let http = reqwest::Client::new();

    // The real server: the README's first command, on a port of ours, rate limit off.
    let bin = std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_catalog-bff").to_string());
    let (_server, base) = start_server(&http, &bin, dir.path(), &dir.path().join("server.log"), &[]).await;
    // The same server with the response cache off (`--cache-ttl 0`), on its own copy of the
    // example: every request executes the query against the in-memory read model.
    let uncached_dir = tempfile::tempdir().expect("tempdir");
    let (_uncached, uncached_base) =
        start_server(&http, &bin, uncached_dir.path(), &dir.path().join("uncached.log"), &["--cache-ttl", "0"]).await;
    let body = serde_json::json!({ "query": QUERY }).to_string();
    let bytes = post(&http, &base, &body).await;
    assert!(bytes.starts_with(b"{\"data\""), "{}", String::from_utf8_lossy(&bytes));
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &bytes).expect("write body");

    // The bare handler, returning those bytes.
    let bare_port = free_port();
    let _bare = Stopped(
        pinned(&std::env::current_exe().expect("exe"))
            .env(BARE_ENV, format!("{bare_port}:{}", body_file.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("start bare axum"),
    );
    let bare_base = format!("http://127.0.0.1:{bare_port}");
    wait_up(&http, &format!("{bare_base}/graphql")).await;

    // graphql-yoga with its response cache, on the same data, when its packages are installed.
    let yoga_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/yoga");
    let yoga_port = free_port();
    let yoga = if yoga_dir.join("node_modules").is_dir() {
        let child = pinned(Path::new("node"))
            .arg(yoga_dir.join("server.mjs"))
            .arg(yoga_port.to_string())
            .arg(&body_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("start graphql-yoga (node)");
        Some(Stopped(child))
    } else {
        println!("graphql-yoga comparison skipped: run `npm ci --prefix benches/yoga` first");
        None
    };
    let yoga_base = format!("http://127.0.0.1:{yoga_port}");
    if yoga.is_some() {
        wait_up(&http, &format!("{yoga_base}/graphql")).await;
        let theirs = post(&http, &yoga_base, &body).await;
        assert_eq!(theirs, bytes, "graphql-yoga answered other bytes than catalog-bff");
    }

    let script = dir.path().join("post.lua");
    let mut f = std::fs::File::create(&script).expect("script");
    writeln!(
        f,
        "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         done = function(s, latency, requests)\n  io.write(string.format(\"RESULT %f %f %f %d\\n\", \
         s.requests / (s.duration / 1e6), latency:percentile(50), latency:percentile(99), \
         s.errors.status + s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))\nend"
    )
    .expect("write script");
    drop(f);

    println!(
        "cached `sources` query, {} bytes per response, wrk -t1 -c{connections} -d{secs}s on core 1, servers on core 0",
        bytes.len()
    );
    // Warm both, then alternate in rounds: each round runs the bare handler and then the
    // server back to back, so the round's ratio compares two runs under the same conditions
    // (this VM's speed drifts by a quarter between runs); the figure is the median round.
    let _ = wrk(&format!("{base}/graphql"), &script, 2, connections);
    let _ = wrk(&format!("{bare_base}/graphql"), &script, 2, connections);
    let _ = wrk(&format!("{uncached_base}/graphql"), &script, 2, connections);
    let mut uncached_over_cached = Vec::new();
    if yoga.is_some() {
        let _ = wrk(&format!("{yoga_base}/graphql"), &script, 2, connections);
    }
    let mut rounds_seen = Vec::new();
    let mut over_yoga = Vec::new();
    println!("{:<28} {:>10} {:>9} {:>9}", "", "req/s", "p50 ms", "p99 ms");
    for round in 1..=rounds {
        let theirs = wrk(&format!("{bare_base}/graphql"), &script, secs, connections);
        let ours = wrk(&format!("{base}/graphql"), &script, secs, connections);
        println!("round {round}/{rounds}");
        println!(
            "{:<28} {:>10.0} {:>9.2} {:>9.2}",
            "  bare axum, same bytes", theirs.rps, theirs.p50_ms, theirs.p99_ms
        );
        println!("{:<28} {:>10.0} {:>9.2} {:>9.2}", "  catalog-bff (cache hit)", ours.rps, ours.p50_ms, ours.p99_ms);
        println!("  ratio {:.2}", ours.rps / theirs.rps);
        rounds_seen.push(ours.rps / theirs.rps);
        let uncached = wrk(&format!("{uncached_base}/graphql"), &script, secs, connections);
        println!(
            "{:<28} {:>10.0} {:>9.2} {:>9.2}",
            "  catalog-bff --cache-ttl 0", uncached.rps, uncached.p50_ms, uncached.p99_ms
        );
        println!("  uncached / cached {:.2}", uncached.rps / ours.rps);
        uncached_over_cached.push(uncached.rps / ours.rps);
        if yoga.is_some() {
            let yoga = wrk(&format!("{yoga_base}/graphql"), &script, secs, connections);
            println!(
                "{:<28} {:>10.0} {:>9.2} {:>9.2}",
                "  graphql-yoga (cache hit)", yoga.rps, yoga.p50_ms, yoga.p99_ms
            );
            println!("  catalog-bff / graphql-yoga {:.1}x", ours.rps / yoga.rps);
            over_yoga.push(ours.rps / yoga.rps);
        }
    }
    rounds_seen.sort_by(f64::total_cmp);
    let median = rounds_seen[rounds_seen.len() / 2];
    let listed: Vec<String> = rounds_seen.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio catalog-bff / bare axum: {median:.2}, the median of {rounds} rounds (sorted: {}) (goal >= 0.6)",
        listed.join(", ")
    );

    uncached_over_cached.sort_by(f64::total_cmp);
    let listed: Vec<String> = uncached_over_cached.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio uncached (--cache-ttl 0) / cached: {:.2}, the median of {rounds} rounds (sorted: {}) (goal >= 0.5)",
        uncached_over_cached[uncached_over_cached.len() / 2],
        listed.join(", ")
    );

    if !over_yoga.is_empty() {
        over_yoga.sort_by(f64::total_cmp);
        let listed: Vec<String> = over_yoga.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "catalog-bff / graphql-yoga with its response cache: {:.1}x, the median of {rounds} rounds (sorted: {}) (goal >= 10x)",
            over_yoga[over_yoga.len() / 2],
            listed.join(", ")
        );
    }

    let metrics = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.unwrap_or_default();
    for line in metrics.lines().filter(|l| l.starts_with("catalog_bff_cache_")) {
        println!("  {line}");
    }
}
