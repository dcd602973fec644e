//! Issue 29 item 8: notifications in. `POST /hooks/refresh/{plugin}[/{id}]` starts an
//! INCREMENTAL refresh when the body's signature verifies against the source's
//! `webhookSecretRef` (GitHub's `X-Hub-Signature-256` and Standard Webhooks headers), and
//! refuses everything else without starting anything. The requests are signed here with the
//! senders' algorithms, not the server's code.

use crate::support;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PUSH: &str = r#"{"ref":"refs/heads/main","after":"1f2e3d"}"#;

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Standard Webhooks: `v1,` + base64(HMAC-SHA256(base64-decoded secret, "id.timestamp.body")).
fn standard_signature(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    m.update(format!("{id}.{ts}.").as_bytes());
    m.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
}

/// Request headers, as (name, value).
type Headers = Vec<(&'static str, String)>;

const REMOTE: &str = "{ source(plugin: \"models\", id: \"remote\") { status { entityCount } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_hook_starts_a_refresh_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("git-hook")).unwrap();
    std::fs::write(secrets.join("git-hook").join("secret"), SECRET).unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    let sources = format!(
        "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Remote\n    id: remote\n    type: url\n    properties:\n      url: {}\n      webhookSecretRef: {{name: git-hook, key: secret}}\n",
        host.url
    );
    std::fs::write(dir.path().join("sources.yaml"), sources).unwrap();
    std::fs::write(dir.path().join("local.yaml"), models_yaml(2)).unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let args = [
        "--url-allow",
        "127.0.0.1",
        "--rate-limit",
        "0",
        "--default-refresh-interval",
        "0",
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ];
    let server =
        TestServer::new(dir.path()).sources(dir.path().join("sources.yaml")).database(&db).flags(&args).start().await;
    eventually("the first fetch", Duration::from_secs(10), async || {
        let r = server.ok(REMOTE, json!({})).await;
        if r["source"]["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
    })
    .await;
    let url = format!("{}/hooks/refresh/models/remote", server.base);
    let post = |url: String, headers: Headers, body: Vec<u8>| {
        let client = server.client.clone();
        async move {
            let mut req = client.post(url).header("content-type", "application/json").body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    host.state.lock().unwrap().body = models_yaml(5);
    let before = host.state.lock().unwrap().requests;

    // Refused, nothing started: no signature, a wrong one, a tampered body, a stale timestamp.
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        ("no signature", vec![], PUSH.into()),
        ("wrong secret", vec![("x-hub-signature-256", github_signature("whsec_other", PUSH.as_bytes()))], PUSH.into()),
        (
            "tampered body",
            vec![("x-hub-signature-256", github_signature(SECRET, PUSH.as_bytes()))],
            PUSH.replace("main", "evil").into(),
        ),
        (
            "a replay from 10 minutes ago",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", (now - 600).to_string()),
                ("webhook-signature", standard_signature(SECRET, "msg_1", now - 600, PUSH.as_bytes())),
            ],
            PUSH.into(),
        ),
    ];
    for (case, headers, body) in cases {
        let (status, body) = post(url.clone(), headers, body).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{case}: {body}");
    }
    let (status, _) = post(format!("{}/hooks/refresh/nope/remote", server.base), vec![], PUSH.into()).await;
    assert_eq!(status, 404);
    let (status, _) = post(url.clone(), vec![], vec![b'x'; 1024 * 1024 + 1]).await;
    assert_eq!(status, 413);
    assert_eq!(host.state.lock().unwrap().requests, before, "a refused hook fetched the source");
    assert_eq!(server.ok(REMOTE, json!({})).await["source"]["status"]["entityCount"], 3);

    // GitHub's signature: 202 with the job; the refresh fetches the new content.
    let github = vec![("x-hub-signature-256", github_signature(SECRET, PUSH.as_bytes()))];
    let (status, body) = post(url.clone(), github, PUSH.into()).await;
    assert_eq!(status, 202, "{body}");
    let job = body["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(body["jobs"][0]["sourceId"], "remote", "{body}");
    let q = "query($id: ID!) { refreshJob(id: $id) { phase actor mode } }";
    let done = eventually("the hook's job ends", Duration::from_secs(10), async || {
        let j = server.ok(q, json!({"id": job})).await;
        if j["refreshJob"]["phase"] == "SUCCEEDED" { Ok(j) } else { Err(j) }
    })
    .await;
    assert_eq!(
        (done["refreshJob"]["actor"].clone(), done["refreshJob"]["mode"].clone()),
        (json!("webhook"), json!("INCREMENTAL"))
    );
    assert_eq!(server.ok(REMOTE, json!({})).await["source"]["status"]["entityCount"], 5);

    // Standard Webhooks, on the plugin's hook: only the source whose secret verifies.
    host.state.lock().unwrap().body = models_yaml(6);
    let ts = chrono::Utc::now().timestamp();
    let headers = vec![
        ("webhook-id", "msg_2".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", standard_signature(SECRET, "msg_2", ts, PUSH.as_bytes())),
    ];
    let (status, body) = post(format!("{}/hooks/refresh/models", server.base), headers, PUSH.into()).await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<&Value> = body["jobs"].as_array().unwrap().iter().map(|j| &j["sourceId"]).collect();
    assert_eq!(ids, [&json!("remote")], "{body}");
    eventually("the plugin hook refreshes remote", Duration::from_secs(10), async || {
        let r = server.ok(REMOTE, json!({})).await;
        if r["source"]["status"]["entityCount"] == 6 { Ok(()) } else { Err(r) }
    })
    .await;

    // A suspended source: verified, not refreshed (409).
    server.ok("mutation { suspendSource(plugin: \"models\", id: \"remote\") { suspended } }", json!({})).await;
    let github = vec![("x-hub-signature-256", github_signature(SECRET, PUSH.as_bytes()))];
    let (status, body) = post(url.clone(), github, PUSH.into()).await;
    assert_eq!(status, 409, "{body}");

    // A target whose hooks keep failing to verify is refused before any secret is read: 429
    // after 30 unverified attempts in a minute (5 so far: four refused, the oversized body),
    // even with a good signature, even with --rate-limit 0.
    for _ in 0..25 {
        let (status, _) = post(url.clone(), vec![("x-hub-signature-256", "sha256=00".into())], PUSH.into()).await;
        assert_eq!(status, 401);
    }
    let github = vec![("x-hub-signature-256", github_signature(SECRET, PUSH.as_bytes()))];
    let (status, body) = post(url.clone(), github, PUSH.into()).await;
    assert_eq!(status, 429, "{body}");

    // Every hook call is in the audit trail.
    let audit = server.ok("{ auditLog(limit: 100) { action outcome actor } }", json!({})).await;
    let hooks: Vec<(&str, &str)> = audit["auditLog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "HOOK_REFRESH")
        .map(|a| (a["outcome"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert!(hooks.contains(&("OK", "webhook")) && hooks.contains(&("UNAUTHENTICATED", "webhook")), "{audit}");
}
