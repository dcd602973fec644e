//! Measures, against the real server binary on SQLite:
//! - applySource(refreshAfterApply) round trip, and
//! - the time from sending that mutation to the APPLIED and REFRESHED events arriving at a
//!   graphql-transport-ws subscriber.
//!
//! Run: `cargo bench --bench live_latency` (prints p50 / p95 / max over 100 applies).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints its figures and stops at the first thing that goes wrong"
)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn models(n: usize) -> String {
    let mut s = String::from("models:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: bench/m{i}\n    artifacts:\n      - uri: oci://x/m{i}:1\n"));
    }
    s
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    catalog_core::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalog-bff"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--rate-limit", "0", "--data-dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
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
    let http = reqwest::Client::new();
    let gql = |q: Value| {
        http.post(format!("http://{addr}/graphql")).header("content-type", "application/json").json(&q).send()
    };
    while gql(json!({"query": "{ plugins { name } }"})).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut req = format!("ws://{addr}/graphql/ws").into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    ws.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.expect("init");
    let _ack = ws.next().await;
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { catalogEvents(plugin: \"models\") { kind sourceId } }"}});
    ws.send(Message::Text(sub.to_string().into())).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Events are timestamped by a separate reader as they arrive, independent of the response.
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let at = Instant::now();
            if let Ok(v) = serde_json::from_str::<Value>(&t)
                && let Some(kind) = v["payload"]["data"]["catalogEvents"]["kind"].as_str()
            {
                let _ = etx.send((kind.to_string(), at));
            }
        }
    });
    let (mut rtt, mut applied, mut refreshed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..100 {
        let content = models(5 + i % 2);
        let t0 = Instant::now();
        let q = json!({"query": "mutation($c: String!) { applySource(plugin: \"models\", input: {id: \"team_models\", content: $c}, options: {refreshAfterApply: true, confirmRemovals: true}) { revision } }", "variables": {"c": content}});
        let resp = gql(q).await.expect("apply").text().await.expect("body");
        rtt.push(t0.elapsed());
        assert!(resp.contains("revision"), "{resp}");
        let (mut a, mut r) = (None, None);
        while a.is_none() || r.is_none() {
            let (kind, at) = erx.recv().await.expect("event stream ended");
            match kind.as_str() {
                "APPLIED" => a = Some(at.duration_since(t0)),
                "REFRESHED" => r = Some(at.duration_since(t0)),
                _ => {}
            }
        }
        applied.push(a.unwrap_or_default());
        refreshed.push(r.unwrap_or_default());
    }
    for (name, v) in [
        ("applySource+refresh round trip", &mut rtt),
        ("mutation sent -> APPLIED at subscriber", &mut applied),
        ("mutation sent -> REFRESHED at subscriber", &mut refreshed),
    ] {
        println!(
            "{name:42} p50 {:>9.2?}  p95 {:>9.2?}  max {:>9.2?}  (n={})",
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 1.0),
            v.len()
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
