//! `--auth kubernetes` end to end: the real binary, a fake Kubernetes API server reached
//! through KUBECONFIG (as in a cluster), SQLite, the default file store (auth and store are
//! independent). Tokens are checked with TokenReview, roles with SubjectAccessReview.

use crate::support;

use serde_json::{Value, json};
use support::fake_kube::FakeKube;
use support::*;

const NS: &str = "team-a";
const VIEWER: &str = "viewer-token";
const OPERATOR: &str = "operator-token";

/// A fake cluster where alice may read both plugins' ConfigMaps and bob may update them.
async fn cluster() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.add_user(VIEWER, "alice@example.com", &["team-a:readers"]);
    fake.allow("alice@example.com", "get", "configmaps", NS, None);
    fake.add_user(OPERATOR, "system:serviceaccount:ci:pipeline", &["system:serviceaccounts"]);
    for plugin in ["models", "mcp"] {
        let name = format!("catalog-bff-{plugin}");
        fake.allow("system:serviceaccount:ci:pipeline", "update", "configmaps", NS, Some(&name));
    }
    fake
}

async fn start(fake: &FakeKube, dir: &std::path::Path, extra: &[&str]) -> Server {
    let kubeconfig = fake.kubeconfig(dir, NS);
    let db = database_url(Backend::Sqlite, dir).await;
    let mut args = vec!["--auth", "kubernetes"];
    args.extend_from_slice(extra);
    TestServer::new(dir).database(&db).flags(&args).envs(&[("KUBECONFIG", kubeconfig.to_str().unwrap())]).start().await
}

async fn post(server: &Server, token: Option<&str>, query: &str, variables: Value) -> (u16, Value, Option<String>) {
    let mut req =
        server.client.post(format!("{}/graphql", server.base)).json(&json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, resp.json().await.unwrap_or(Value::Null), retry)
}

fn apply_vars(n: usize) -> Value {
    json!({"plugin": "models", "input": {"id": "partner_models", "content": models_yaml(n)}, "options": {"confirmRemovals": true}})
}

#[tokio::test]
async fn a_viewer_reads_an_operator_applies_as_its_kubernetes_user() {
    let fake = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), &[]).await;
    let before = tree_bytes(dir.path());

    let (status, body, _) = post(&server, Some(VIEWER), "{ sources { id } }", json!({})).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(body["data"]["sources"].as_array().is_some_and(|s| !s.is_empty()), "{body:#}");
    let (_, body, _) = post(&server, Some(VIEWER), APPLY, apply_vars(2)).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body:#}");
    assert_eq!(tree_bytes(dir.path()), before, "a refused apply changes nothing");

    let (status, body, _) = post(&server, Some(OPERATOR), APPLY, apply_vars(3)).await;
    assert!(status == 200 && body.get("errors").is_none(), "{body:#}");
    let (_, src, _) =
        post(&server, Some(VIEWER), SOURCE_QUERY, json!({"plugin": "models", "id": "partner_models"})).await;
    assert_eq!(src["data"]["source"]["revisions"][0]["actor"], "system:serviceaccount:ci:pipeline", "{src:#}");

    // The SubjectAccessReviews asked about the plugin's ConfigMap in --namespace, for the user
    // the TokenReview named, with its groups.
    assert!(fake.count_requests("subjectaccessreviews") > 0);
}

#[tokio::test]
async fn unknown_missing_and_roleless_tokens_are_refused() {
    let fake = cluster().await;
    fake.add_user("nobody-token", "mallory", &[]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), &[]).await;
    let (status, body, _) = post(&server, None, "{ sources { id } }", json!({})).await;
    assert_eq!((status, error_code(&body).as_deref()), (401, Some("UNAUTHENTICATED")), "{body:#}");
    assert_eq!(fake.count_requests("tokenreviews"), 0, "no token, nothing to review");
    let (status, body, _) = post(&server, Some("made-up"), "{ sources { id } }", json!({})).await;
    assert_eq!((status, error_code(&body).as_deref()), (401, Some("UNAUTHENTICATED")), "{body:#}");
    // Known to the cluster, but no role on the ConfigMaps.
    let (status, body, _) = post(&server, Some("nobody-token"), "{ sources { id } }", json!({})).await;
    assert_eq!((status, error_code(&body).as_deref()), (403, Some("FORBIDDEN")), "{body:#}");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("mallory") && msg.contains("catalog-bff-"), "{msg}");
}

#[tokio::test]
async fn decisions_are_cached_for_the_ttl_by_token_hash() {
    let fake = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), &["--auth-cache-ttl", "600"]).await;
    let (status, ..) = post(&server, Some(VIEWER), "{ sources { id } }", json!({})).await;
    assert_eq!(status, 200);
    let reviews = fake.count_requests("tokenreviews");
    let access = fake.count_requests("subjectaccessreviews");
    assert_eq!(reviews, 1);
    let (status, ..) = post(&server, Some(VIEWER), "{ plugins { name } }", json!({})).await;
    assert_eq!(status, 200);
    let (status, ..) = post(&server, Some("made-up"), "{ plugins { name } }", json!({})).await;
    assert_eq!(status, 401);
    let (status, ..) = post(&server, Some("made-up"), "{ plugins { name } }", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(fake.count_requests("tokenreviews"), reviews + 1, "one review per token within the TTL");
    assert_eq!(fake.count_requests("subjectaccessreviews"), access);
}

/// The API server is asked a bounded number of times whatever the clients do: concurrent
/// requests with one new token share one review, and one address's unknown tokens stop being
/// reviewed after the failure limit (429), while tokens already decided keep working from it.
#[tokio::test]
async fn token_floods_cost_a_bounded_number_of_reviews() {
    let fake = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), &["--auth-cache-ttl", "600"]).await;
    let asks: Vec<_> = (0..40).map(|_| post(&server, Some(VIEWER), "{ plugins { name } }", json!({}))).collect();
    for (status, body, _) in futures_util::future::join_all(asks).await {
        assert_eq!(status, 200, "{body:#}");
    }
    assert_eq!(fake.count_requests("tokenreviews"), 1, "40 concurrent requests with one token: one review");

    let before = fake.count_requests("tokenreviews");
    let mut limited = None;
    for i in 0..45 {
        let (status, body, retry) = post(&server, Some(&format!("guess-{i}")), "{ plugins { name } }", json!({})).await;
        if status == 429 {
            assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body:#}");
            assert!(retry.is_some(), "429 says when to retry");
            limited.get_or_insert(i);
        } else {
            assert_eq!(status, 401, "{body:#}");
            assert!(limited.is_none(), "once limited, unknown tokens stay limited");
        }
    }
    assert_eq!(limited, Some(30), "the 31st failed authentication from one address is refused");
    assert_eq!(fake.count_requests("tokenreviews") - before, 30, "no review past the limit");
    // A token already decided still works from that address; a new one waits for the window.
    let (status, ..) = post(&server, Some(VIEWER), "{ plugins { name } }", json!({})).await;
    assert_eq!(status, 200);
    let (status, ..) = post(&server, Some(OPERATOR), "{ plugins { name } }", json!({})).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn a_websocket_connection_init_with_the_token_is_accepted() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let fake = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), &[]).await;
    let connect = async |payload: Value| {
        let mut req = format!("{}/graphql/ws", server.base.replacen("http", "ws", 1)).into_client_request().unwrap();
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let init = json!({"type": "connection_init", "payload": payload});
        socket.send(Message::Text(init.to_string().into())).await.unwrap();
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await.unwrap();
        match reply {
            Some(Ok(Message::Text(t))) => {
                serde_json::from_str::<Value>(&t).unwrap()["type"].as_str().unwrap().to_string()
            }
            Some(Ok(Message::Close(frame))) => format!("close {}", frame.map(|f| u16::from(f.code)).unwrap_or(0)),
            other => format!("{other:?}"),
        }
    };
    assert_eq!(connect(json!({"Authorization": format!("Bearer {VIEWER}")})).await, "connection_ack");
    assert_ne!(connect(json!({"Authorization": "Bearer made-up"})).await, "connection_ack");
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_and_not_cached() {
    let fake = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&fake, dir.path(), &["--auth-cache-ttl", "600"]).await;
    // The API server answers 500: UNAVAILABLE with a retry hint, and nothing is remembered.
    fake.set_failing(true);
    let (status, body, retry) = post(&server, Some(VIEWER), "{ sources { id } }", json!({})).await;
    assert_eq!((status, error_code(&body).as_deref()), (503, Some("UNAVAILABLE")), "{body:#}");
    assert!(body["errors"][0]["extensions"]["retryAfter"].as_u64().is_some(), "{body:#}");
    assert!(retry.is_some());
    fake.set_failing(false);
    let (status, body, _) = post(&server, Some(VIEWER), "{ sources { id } }", json!({})).await;
    assert_eq!(status, 200, "the failure was not cached: {body:#}");

    // The API server is gone (connection refused): a new token gets UNAVAILABLE too, while the
    // viewer's cached decision keeps working for the TTL.
    fake.stop();
    let (status, body, _) = post(&server, Some(OPERATOR), "{ sources { id } }", json!({})).await;
    assert_eq!((status, error_code(&body).as_deref()), (503, Some("UNAVAILABLE")), "{body:#}");
    let (status, ..) = post(&server, Some(VIEWER), "{ sources { id } }", json!({})).await;
    assert_eq!(status, 200);
}

#[test]
fn without_a_kubernetes_configuration_the_server_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--auth", "kubernetes", "--data-dir"])
        .arg(dir.path())
        .env("KUBECONFIG", dir.path().join("missing"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--auth kubernetes needs a Kubernetes configuration"), "{err}");
}
