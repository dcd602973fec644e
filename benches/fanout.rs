//! Fan-out: one event to N graphql-transport-ws subscribers of `catalogEvents`, against the real
//! server binary on SQLite. For N = 1k and then 10k (`FANOUT_SIZES=1000,10000` to change), opens
//! N connections, each with one subscription, sends 5 `applySource` mutations one after the
//! other (each emits one APPLIED event), and prints p50 / p99 / max from the mutation's ack
//! (its HTTP response) to each subscriber's receipt of the event, plus the server's RSS before
//! the connections, with them open, and a few seconds after they all disconnected.
//!
//! Run: `cargo bench --bench fanout`. The bench raises its own open-file limit to the hard limit
//! (10k client sockets need it); if the hard limit is below ~10.5k, raise it first
//! (`ulimit -Hn 65536`, as root). `FANOUT_BIN=path/to/catalog-bff` measures another build of
//! the server (e.g. an older one, for a before/after figure); `FANOUT_KEEP=30` keeps the server
//! running 30 s after the last run (to inspect its memory).
//!
//! The client runs on the same machine as the server, so both share the cores: receipt times
//! are taken the moment a message is read, before any parsing, to keep the client's own work
//! out of the figure as far as possible.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints its figures and stops at the first thing that goes wrong"
)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const EVENTS_PER_RUN: usize = 5;
const SUBSCRIPTION: &str = r#"subscription { catalogEvents(plugin: "models") { kind sourceId revision } }"#;
const APPLY: &str = r#"mutation($c: String!) { applySource(plugin: "models", input: {id: "team_models", content: $c}, options: {confirmRemovals: true}) { revision } }"#;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The server's resident set and its high-water mark, in MB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The server's CPU time (user + system) so far, in ms (assumes the usual 100 ticks/s).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is the 3rd field, utime the 14th, stime the 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
}

fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc_rlimit { cur: 0, max: 0 };
        if getrlimit(RLIMIT_NOFILE, &mut lim) == 0 {
            lim.cur = lim.max;
            let _ = setrlimit(RLIMIT_NOFILE, &lim);
            getrlimit(RLIMIT_NOFILE, &mut lim);
        }
        lim.cur
    }
}

// A dependency-free binding of the two calls (Linux, 64-bit rlim_t).
#[repr(C)]
struct libc_rlimit {
    cur: u64,
    max: u64,
}
const RLIMIT_NOFILE: i32 = 7;
unsafe extern "C" {
    fn getrlimit(resource: i32, rlim: *mut libc_rlimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const libc_rlimit) -> i32;
}

fn start(dir: &std::path::Path) -> (Child, String) {
    let bin = std::env::var("FANOUT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_catalog-bff").to_string());
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--rate-limit", "0"])
        .args(["--max-connections", "100000", "--watch-interval", "0", "--db-timeout", "30", "--data-dir"])
        .arg(dir)
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
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server address");
    (child, addr)
}

/// A gauge from the server's `/metrics`.
async fn gauge(http: &reqwest::Client, addr: &str, name: &str) -> i64 {
    let Ok(r) = http.get(format!("http://{addr}/metrics")).send().await else { return -1 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(-1, |v| v as i64)
}

async fn wait_gauge(http: &reqwest::Client, addr: &str, name: &str, want: i64, secs: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let g = gauge(http, addr, name).await;
        if g == want || Instant::now() > deadline {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One subscriber: connects, subscribes, then reports every `next` it reads (with the time it
/// was read) until told to stop.
async fn subscriber(
    addr: String,
    received: mpsc::UnboundedSender<(Instant, String)>,
    subscribed: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut req = format!("ws://{addr}/graphql/ws").into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
    let mut attempt = 0;
    let (mut ws, _) = loop {
        match tokio_tungstenite::connect_async(req.clone()).await {
            Ok(c) => break c,
            Err(e) if attempt < 20 => {
                attempt += 1;
                if attempt == 20 {
                    eprintln!("connect failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    ws.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.expect("init");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("connection_ack") => break,
            Some(Ok(_)) => continue,
            other => panic!("no connection_ack: {other:?}"),
        }
    }
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}});
    ws.send(Message::Text(sub.to_string().into())).await.expect("subscribe");
    subscribed.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    if t.contains(r#""next""#) {
                        let _ = received.send((at, t.to_string()));
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = ws.close(None).await;
}

fn models(i: usize) -> String {
    let mut s = String::from("models:\n");
    for m in 0..3 + i % 2 {
        s.push_str(&format!("  - name: bench/m{m}\n    artifacts:\n      - uri: oci://x/m{m}:{i}\n"));
    }
    s
}

async fn run(n: usize, child: &Child, addr: &str, http: &reqwest::Client) {
    let pid = child.id();
    let (before, _) = rss(pid);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t_connect = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    // Connect in waves so the listen backlog never overflows.
    for chunk in 0..n.div_ceil(500) {
        for _ in chunk * 500..((chunk + 1) * 500).min(n) {
            tasks.push(tokio::spawn(subscriber(addr.to_string(), tx.clone(), subscribed.clone(), stop_rx.clone())));
        }
        while subscribed.load(Ordering::Relaxed) < ((chunk + 1) * 500).min(n) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(tx);
    let active = wait_gauge(http, addr, "catalog_bff_subscriptions_active", n as i64, 60).await;
    let connect_time = t_connect.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (during_idle, _) = rss(pid);
    eprintln!("fanout: {n} connected, server RSS {during_idle:.0} MB; sending events (server pid {pid})");
    let cpu0 = cpu_ms(pid);

    let mut from_ack = Vec::with_capacity(n * EVENTS_PER_RUN);
    let mut from_send = Vec::with_capacity(n * EVENTS_PER_RUN);
    let mut round_trip = Vec::with_capacity(EVENTS_PER_RUN);
    let mut missing = 0;
    for i in 0..EVENTS_PER_RUN {
        let t_send = Instant::now();
        let resp = http
            .post(format!("http://{addr}/graphql"))
            .header("content-type", "application/json")
            .json(&json!({"query": APPLY, "variables": {"c": models(n + i)}}))
            .send()
            .await
            .expect("apply");
        let body: Value = resp.json().await.expect("apply body");
        let t_ack = Instant::now();
        round_trip.push(t_ack - t_send);
        let Some(revision) = body["data"]["applySource"]["revision"].as_i64() else {
            println!("  applySource failed: {body}");
            continue;
        };
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got < n {
            let Ok(Some((at, text))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            let ev = &v["payload"]["data"]["catalogEvents"];
            if ev["kind"] == "APPLIED" && ev["revision"].as_i64() == Some(revision) {
                got += 1;
                from_ack.push(at.saturating_duration_since(t_ack));
                from_send.push(at.duration_since(t_send));
            }
        }
        missing += n - got;
    }
    let server_cpu = cpu_ms(pid) - cpu0;
    let (during, hwm) = rss(pid);

    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let left_subs = wait_gauge(http, addr, "catalog_bff_subscriptions_active", 0, 30).await;
    let left_conns = wait_gauge(http, addr, "catalog_bff_connections_open", 0, 30).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (after, _) = rss(pid);

    println!("N = {n} subscribers (connected and subscribed in {connect_time:.2?}; gauge {active})");
    for (name, v) in [
        ("mutation round trip", &mut round_trip),
        ("mutation ack -> event at subscriber", &mut from_ack),
        ("mutation sent -> event at subscriber", &mut from_send),
    ] {
        if v.is_empty() {
            println!("  {name:38} no events received");
            continue;
        }
        println!(
            "  {name:38} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  (n={})",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0),
            v.len()
        );
    }
    println!(
        "  server CPU for the {EVENTS_PER_RUN} events: {server_cpu} ms ({:.1} µs per delivery)",
        server_cpu as f64 * 1000.0 / (n * EVENTS_PER_RUN) as f64
    );
    if missing > 0 {
        println!("  {missing} deliveries missing after 30 s");
    }
    println!(
        "  server RSS: before {before:.0} MB, connected {during_idle:.0} MB, after {EVENTS_PER_RUN} events {during:.0} MB (peak {hwm:.0} MB), \
         5 s after all left {after:.0} MB; gauges after: subscriptions {left_subs}, connections {left_conns}"
    );
}

#[tokio::main]
async fn main() {
    catalog_core::install_crypto_provider();
    let limit = raise_fd_limit();
    let sizes: Vec<usize> = std::env::var("FANOUT_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if let Some(max) = sizes.iter().max()
        && (limit as usize) < max + 500
    {
        eprintln!("open-file limit is {limit}: raise it (ulimit -n {}) for {max} connections", max + 1000);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = start(dir.path());
    let http = reqwest::Client::new();
    while gauge(&http, &addr, "catalog_bff_connections_open").await < 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("server pid {} at {addr}, idle RSS {:.0} MB", child.id(), rss(child.id()).0);
    for n in sizes {
        run(n, &child, &addr, &http).await;
    }
    if let Some(secs) = std::env::var("FANOUT_KEEP").ok().and_then(|s| s.parse().ok()) {
        // Time to look at the idle server (e.g. attach a profiler or a debugger) before it stops.
        eprintln!("fanout: done; server pid {} kept for {secs} s", child.id());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
