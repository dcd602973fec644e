//! Cross-replica propagation latency: two real server binaries (A and B) on one PostgreSQL, so
//! only the change feed (NOTIFY/LISTEN) carries changes. Measures, over 200 applies on A, the
//! time from sending the mutation to A until a graphql-transport-ws subscriber on B receives its
//! APPLIED event (B has re-read the config by then). Two stores, one after the other:
//! - `file`: one sources directory, the file watcher off;
//! - `kubernetes`: the ConfigMaps on the tests' fake API server (real HTTP, in this process),
//!   seeded from the file run's sources; B re-reads the ConfigMap through the API.
//!
//! Run by hand: `CATALOG_BFF_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench --bench propagation` (prints p50 / p99 / max per store). `PROPAGATION_STORE=file`
//! or `=kubernetes` runs one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints its figures and stops at the first thing that goes wrong"
)]

#[path = "../tests/it/support/fake_kube.rs"]
mod fake_kube;

use futures_util::{SinkExt, StreamExt};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// How a replica finds its sources.
#[derive(Clone)]
enum Store {
    /// The bundled example written into the data directory (the first replica).
    Example,
    /// The sources file in the data directory.
    File,
    /// ConfigMaps through the API server this kubeconfig names, seeded from this file.
    Kubernetes { kubeconfig: std::path::PathBuf, seed: std::path::PathBuf },
}

const NAMESPACE: &str = "bench";

fn start(dir: &Path, db: &str, name: &str, store: &Store) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_catalog-bff"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--rate-limit", "0"])
        .args(["--replica-id", name, "--database", db, "--data-dir"])
        .arg(dir);
    match store {
        Store::Example => {
            cmd.args(["--watch-interval", "0"]);
        }
        Store::File => {
            cmd.args(["--watch-interval", "0"]).arg("--sources").arg(dir.join("sources.yaml"));
        }
        Store::Kubernetes { kubeconfig, seed } => {
            // The watch on each ConfigMap stays on (it is how the kubernetes store sees outside
            // edits); the periodic re-read is rare, as in a deployment.
            cmd.args(["--store", "kubernetes", "--namespace", NAMESPACE, "--watch-interval", "30", "--seed"])
                .arg(seed)
                .env("KUBECONFIG", kubeconfig);
        }
    }
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("start server");
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

async fn wait_ready(http: &reqwest::Client, addr: &str) {
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let Ok(admin) = std::env::var("CATALOG_BFF_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED propagation bench: set CATALOG_BFF_TEST_POSTGRES_URL to a PostgreSQL server");
        return;
    };
    catalog_core::install_crypto_provider();
    let which = std::env::var("PROPAGATION_STORE").unwrap_or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dir.path().join("file");
    std::fs::create_dir_all(&files).expect("data dir");
    if which.is_empty() || which == "file" {
        let db = database(&admin).await;
        run("file", &files, &db, &Store::Example, &Store::File, &files).await;
    } else {
        // The kubernetes run seeds from the example's sources file.
        let (mut a, addr) = start(&files, &database(&admin).await, "seed", &Store::Example);
        wait_ready(&reqwest::Client::new(), &addr).await;
        let _ = a.kill();
        let _ = a.wait();
    }
    if which.is_empty() || which == "kubernetes" {
        let kube = fake_kube::FakeKube::start().await;
        let kubeconfig = kube.kubeconfig(dir.path(), NAMESPACE);
        let store = Store::Kubernetes { kubeconfig, seed: files.join("sources.yaml") };
        let (a_dir, b_dir) = (dir.path().join("kube-a"), dir.path().join("kube-b"));
        for d in [&a_dir, &b_dir] {
            std::fs::create_dir_all(d).expect("data dir");
        }
        let db = database(&admin).await;
        run("kubernetes", &a_dir, &db, &store, &store, &b_dir).await;
    }
}

/// A new, empty database on the server `admin` names.
async fn database(admin: &str) -> String {
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let conn = sea_orm::Database::connect(admin).await.expect("connect to PostgreSQL");
    conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
    match admin.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &admin[..i]),
        _ => format!("{admin}/{name}"),
    }
}

async fn run(label: &str, a_dir: &Path, db: &str, a_store: &Store, b_store: &Store, b_dir: &Path) {
    let http = reqwest::Client::new();
    let (mut a, addr_a) = start(a_dir, db, "bench-a", a_store);
    wait_ready(&http, &addr_a).await;
    let (mut b, addr_b) = start(b_dir, db, "bench-b", b_store);
    wait_ready(&http, &addr_b).await;
    let mut req = format!("ws://{addr_b}/graphql/ws").into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    ws.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.expect("init");
    let _ack = ws.next().await;
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { catalogEvents(plugin: \"models\") { kind revision } }"}});
    ws.send(Message::Text(sub.to_string().into())).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant)>();
    tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let at = Instant::now();
            if let Ok(v) = serde_json::from_str::<Value>(&t)
                && v["payload"]["data"]["catalogEvents"]["kind"] == "APPLIED"
                && let Some(rev) = v["payload"]["data"]["catalogEvents"]["revision"].as_i64()
            {
                let _ = etx.send((rev, at));
            }
        }
    });

    let (mut rtt, mut propagation) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let t0 = Instant::now();
        let q = json!({"query": "mutation($l: [String!]) { applySource(plugin: \"models\", input: {id: \"team_models\", labels: $l}) { revision } }", "variables": {"l": [format!("bench {i}")]}});
        let resp: Value = http
            .post(format!("http://{addr_a}/graphql"))
            .json(&q)
            .send()
            .await
            .expect("apply")
            .json()
            .await
            .expect("body");
        rtt.push(t0.elapsed());
        let Some(rev) = resp["data"]["applySource"]["revision"].as_i64() else { panic!("apply failed: {resp}") };
        loop {
            let (seen, at) = erx.recv().await.expect("event stream ended");
            if seen == rev {
                propagation.push(at.duration_since(t0));
                break;
            }
        }
    }
    for (what, v) in [("apply round trip on A", &mut rtt), ("apply sent to A -> APPLIED on B", &mut propagation)] {
        println!(
            "{label:10} {what:34} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  (n={})",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0),
            v.len()
        );
    }
    let _ = a.kill();
    let _ = b.kill();
    let _ = a.wait();
    let _ = b.wait();
}
