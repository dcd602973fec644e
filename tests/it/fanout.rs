//! Many live subscribers: one event reaches every `catalogEvents` subscriber, a subscriber that
//! leaves (with a close frame, or by dropping its socket) frees its connection slot and its
//! subscription (the `/metrics` gauges return to 0), and a subscribe message far larger than
//! the per-connection read buffer still arrives whole. Subscribers of the same `catalogEvents`
//! document share one stream (the fan-out hub): each still gets its own id, a different
//! selection its own payload, and `complete` stops only the subscriber that sent it.

use crate::support;

use futures_util::SinkExt;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const EVENTS: &str = "subscription { catalogEvents(plugin: \"models\") { kind plugin sourceId } }";
const REFRESH: &str = "mutation { refreshSource(plugin: \"models\", id: \"team_models\", wait: true) { phase } }";

/// Polls a gauge until it reads `want` (or 30 s pass); returns the last value read.
async fn settle(server: &Server, name: &str, want: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = server.metric(name).await;
        if v == want || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next `next` message's event, skipping other messages (None: closed or 15 s passed).
async fn next_event(ws: &mut WsClient) -> Option<Value> {
    loop {
        let m = ws.next_message(15).await?;
        if m["type"] == "next" {
            return Some(m["payload"]["data"]["catalogEvents"].clone());
        }
    }
}

/// A legacy `graphql-ws` (subscriptions-transport-ws) socket with one `start`ed subscription.
async fn legacy(base: &str, id: &str) -> WsClient {
    let mut req = format!("{}/graphql/ws", base.replacen("http", "ws", 1)).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "graphql-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    socket.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.unwrap();
    let mut ws = WsClient { socket };
    loop {
        let m = ws.next_message(10).await.expect("connection_ack");
        if m["type"] == "connection_ack" {
            break;
        }
    }
    let start = json!({"id": id, "type": "start", "payload": {"query": EVENTS}});
    ws.socket.send(Message::Text(start.to_string().into())).await.unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_leave_free_their_connections_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    assert_eq!(server.metric("catalog_bff_subscriptions_active").await, 0.0);

    // 60 graphql-transport-ws connections with two subscriptions each, 20 legacy ones with one.
    let mut modern = Vec::new();
    for i in 0..60 {
        let mut ws = WsClient::connect(&server.base, None).await.unwrap();
        ws.subscribe(&format!("a{i}"), EVENTS, json!({})).await;
        ws.subscribe(&format!("b{i}"), EVENTS, json!({})).await;
        modern.push(ws);
    }
    let mut old = Vec::new();
    for i in 0..20 {
        old.push(legacy(&server.base, &format!("l{i}")).await);
    }
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 140.0).await, 140.0);
    assert_eq!(server.metric("catalog_bff_connections_open").await, 80.0);

    // One change reaches every subscription, on both protocols.
    server.ok(REFRESH, json!({})).await;
    for ws in modern.iter_mut() {
        for _ in 0..2 {
            let ev = next_event(ws).await.expect("an event on every graphql-transport-ws subscription");
            assert_eq!(ev["plugin"], "models", "{ev}");
        }
    }
    for ws in old.iter_mut() {
        let m = ws.next_message(15).await.expect("an event on every legacy subscription");
        assert_eq!(m["type"], "data", "{m}");
        assert_eq!(m["payload"]["data"]["catalogEvents"]["plugin"], "models", "{m}");
    }

    // Half the clients say goodbye with a close frame, the others just drop their sockets
    // (no close frame: the TCP connection ends under the server).
    for (i, ws) in modern.into_iter().chain(old).enumerate() {
        if i % 2 == 0 {
            let mut ws = ws;
            ws.socket.close(None).await.unwrap();
        } else {
            drop(ws);
        }
    }
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 0.0).await, 0.0, "every subscription ended");
    assert_eq!(settle(&server, "catalog_bff_connections_open", 0.0).await, 0.0, "every connection slot freed");

    // The server still serves a new subscriber.
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("again", EVENTS, json!({})).await;
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 1.0).await, 1.0);
    server.ok(REFRESH, json!({})).await;
    assert!(next_event(&mut ws).await.is_some(), "a new subscriber gets events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_message_larger_than_the_read_buffer_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    // ~24 KB: several times the per-connection read buffer, under the 32 KB document and
    // 64 KB message limits. The comment is not a token, so the token limit does not apply.
    let padded = format!("# {}\n{EVENTS}", "x".repeat(24 * 1024));
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    ws.subscribe("big", &padded, json!({})).await;
    // A small message right behind the big one, in the same read: it must not be lost.
    ws.subscribe("small", EVENTS, json!({})).await;
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 2.0).await, 2.0);
    server.ok(REFRESH, json!({})).await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let m = ws.next_message(15).await.expect("events for both subscriptions");
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "next" {
            let id = m["id"].as_str().unwrap().to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.sort();
    assert_eq!(ids, ["big", "small"]);
}

const APPLY: &str = r#"mutation($c: String!) { applySource(plugin: "models", input: {id: "team_models", content: $c}, options: {confirmRemovals: true}) { revision } }"#;
/// The same event, another selection: another shared stream, another payload.
const EVENTS_REVISION: &str = "subscription { catalogEvents(plugin: \"models\") { kind revision } }";

fn models(i: usize) -> String {
    format!("models:\n  - name: fan/m{i}\n    artifacts:\n      - uri: oci://x/m:{i}\n")
}

/// The next message that is not a keep-alive, as (type, id, payload).
async fn message(ws: &mut WsClient) -> (String, String, Value) {
    let m = ws.next_message(15).await.expect("a message");
    (m["type"].as_str().unwrap_or("").to_string(), m["id"].as_str().unwrap_or("").to_string(), m["payload"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_one_document_share_its_events_with_their_own_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    // Two connections with the same document (one of them with two subscriptions of it), one
    // with another selection, and a legacy connection with the same document.
    let mut a = WsClient::connect(&server.base, None).await.unwrap();
    a.subscribe("a1", EVENTS, json!({})).await;
    let mut b = WsClient::connect(&server.base, None).await.unwrap();
    b.subscribe("b1", EVENTS, json!({})).await;
    b.subscribe("b2", EVENTS, json!({})).await;
    let mut c = WsClient::connect(&server.base, None).await.unwrap();
    c.subscribe("c1", EVENTS_REVISION, json!({})).await;
    let mut l = legacy(&server.base, "l1").await;
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 5.0).await, 5.0);

    let rev = server.ok(APPLY, json!({"c": models(1)})).await["applySource"]["revision"].clone();
    let applied =
        json!({"data": {"catalogEvents": {"kind": "APPLIED", "plugin": "models", "sourceId": "team_models"}}});
    assert_eq!(message(&mut a).await, ("next".into(), "a1".into(), applied.clone()));
    let mut got = vec![message(&mut b).await, message(&mut b).await];
    got.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(got, [("next".into(), "b1".into(), applied.clone()), ("next".into(), "b2".into(), applied.clone())]);
    let with_revision = json!({"data": {"catalogEvents": {"kind": "APPLIED", "revision": rev}}});
    assert_eq!(message(&mut c).await, ("next".into(), "c1".into(), with_revision));
    assert_eq!(message(&mut l).await, ("data".into(), "l1".into(), applied.clone()), "legacy: `data`");

    // `complete` from one subscriber stops it alone (the server confirms with `complete`, as
    // async-graphql's state machine does), and the others still get the next event.
    let done = json!({"id": "b1", "type": "complete"});
    b.socket.send(Message::Text(done.to_string().into())).await.unwrap();
    assert_eq!(message(&mut b).await, ("complete".into(), "b1".into(), Value::Null));
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 4.0).await, 4.0);
    server.ok(APPLY, json!({"c": models(2)})).await;
    assert_eq!(message(&mut a).await, ("next".into(), "a1".into(), applied.clone()));
    assert_eq!(message(&mut b).await, ("next".into(), "b2".into(), applied.clone()));
    assert_eq!(message(&mut c).await.1, "c1");
    assert_eq!(message(&mut l).await.1, "l1");
    assert!(b.next_message(1).await.is_none(), "nothing more for the completed b1");
    // One execution per distinct document: the five subscriptions above ran two streams.
    let started = server.log_text().matches("shared catalogEvents stream started").count();
    assert_eq!(started, 2, "one shared stream per document");

    // The id may be reused once completed; a duplicate of a live one is still refused (4409).
    b.subscribe("b1", EVENTS, json!({})).await;
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 5.0).await, 5.0);
    b.subscribe("b2", EVENTS, json!({})).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        loop {
            match b.socket.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(4409));

    drop((a, b, c, l));
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 0.0).await, 0.0, "every subscription ended");
    assert_eq!(settle(&server, "catalog_bff_connections_open", 0.0).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_document_keeps_the_errors_and_the_budget_of_its_own_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let mut ws = WsClient::connect(&server.base, None).await.unwrap();
    // A running shared stream of a valid document does not let an invalid plugin through.
    ws.subscribe("ok", EVENTS, json!({})).await;
    ws.subscribe("bad", "subscription { catalogEvents(plugin: \"nosuch\") { kind } }", json!({})).await;
    let (kind, id, payload) = message(&mut ws).await;
    assert_eq!((kind.as_str(), id.as_str()), ("next", "bad"), "{payload}");
    assert_eq!(payload["errors"][0]["extensions"]["code"], "NOT_FOUND", "{payload}");
    assert_eq!(message(&mut ws).await, ("complete".into(), "bad".into(), Value::Null));
    // The default budget is 20 subscriptions a connection: the hub's count against it.
    for i in 1..20 {
        ws.subscribe(&format!("s{i}"), EVENTS, json!({})).await;
    }
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 20.0).await, 20.0);
    ws.subscribe("over", EVENTS, json!({})).await;
    let (kind, id, payload) = message(&mut ws).await;
    assert_eq!((kind.as_str(), id.as_str()), ("next", "over"), "{payload}");
    assert_eq!(payload["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{payload}");
    assert!(payload["errors"][0]["message"].as_str().unwrap().contains("--max-subscriptions-per-connection"));
    assert_eq!(message(&mut ws).await, ("complete".into(), "over".into(), Value::Null));
    drop(ws);
    assert_eq!(settle(&server, "catalog_bff_subscriptions_active", 0.0).await, 0.0);
}
