//! Issue 8, item 6: when PostgreSQL stops answering, probes and requests fail fast with a clear
//! code, refused mutations are still audited in the log, what lives in memory is still served,
//! and everything recovers when the database comes back. PostgreSQL is cut with a TCP proxy
//! that, once cut, holds every connection open and forwards nothing (the worst case: no
//! "connection refused", just silence).

use crate::support;

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::tcp_cut::Proxy;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_with_unavailable_and_recovers() {
    if skip_without_postgres("postgres_outage_fails_fast_with_unavailable_and_recovers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(Backend::Postgres, dir.path()).await;
    // postgres://user@127.0.0.1:PORT/db → the same through the proxy.
    let hostport = url.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
    let proxy = Arc::new(Proxy::start(hostport.clone()).await);
    let proxied = url.replace(&hostport, &format!("127.0.0.1:{}", proxy.port));
    let server = TestServer::new(dir.path())
        .database(&proxied)
        .flags(&["--db-timeout", "1", "--watch-interval", "0"])
        .start()
        .await;
    let before = server.ok("{ entities(plugin: \"models\") { totalCount } }", json!({})).await;
    let entity_count = before["entities"]["totalCount"].as_u64().unwrap();
    assert!(entity_count > 0);

    proxy.cut.send_replace(true);
    // A probe answers well inside a kubelet's default 1 s probe timeout would allow the old
    // behaviour (30 s) to show; the bound here is generous for a loaded CI machine.
    let quick = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let ready = quick.get(format!("{}/readyz", server.base)).send().await.expect("/readyz answered in time");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["failed"], json!(["database"]), "{body}");
    assert_eq!(quick.get(format!("{}/healthz", server.base)).send().await.unwrap().status(), 200);

    // A mutation that needs the database: UNAVAILABLE with retryAfter, not a 60 s wait.
    let slowest = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let resp: serde_json::Value = slowest
        .post(format!("{}/graphql", server.base))
        .json(&json!({"query": APPLY, "variables": {"plugin": "models", "input": {"id": "team_models", "labels": ["During outage"]}}}))
        .send()
        .await
        .expect("the mutation answered in time")
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&resp).as_deref(), Some("UNAVAILABLE"), "{resp:#}");
    assert!(resp["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() > 0);
    // Nothing was written: the sources file still has the old labels.
    let text = std::fs::read_to_string(dir.path().join("sources.yaml")).unwrap();
    assert!(!text.contains("During outage"));
    // The refused mutation is audited in the log even though the audit table is out of reach.
    let audited = server
        .log_text()
        .lines()
        .any(|l| l.contains("\"target\":\"audit\"") && l.contains("applySource") && l.contains("UNAVAILABLE"));
    assert!(audited, "no audit log line for the refused mutation:\n{}", server.log_text());
    // What lives in memory is still served.
    let still = server.ok("{ entities(plugin: \"models\") { totalCount } }", json!({})).await;
    assert_eq!(still["entities"]["totalCount"], entity_count);

    proxy.cut.send_replace(false);
    eventually("ready again after the database came back", Duration::from_secs(30), async || {
        let r = quick.get(format!("{}/readyz", server.base)).send().await.unwrap();
        if r.status() == 200 { Ok(()) } else { Err(r.status()) }
    })
    .await;
    server.ok(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "labels": ["After outage"]}})).await;
    assert!(std::fs::read_to_string(dir.path().join("sources.yaml")).unwrap().contains("After outage"));
}
