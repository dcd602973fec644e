//! Trust at the edge, WebSocket part: graphql-transport-ws close codes (4400, 4401, 4408, 4409,
//! 4429), the message size limit (1009, and the server stays healthy), protocol negotiation,
//! and connection slots that only authenticated sockets hold.

use crate::support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const EVENTS: &str = "subscription { catalogEvents { kind } }";

/// Opens `/graphql/ws` offering `protocols`, sends nothing; returns the socket and the
/// protocol the server chose.
async fn open(base: &str, protocols: &str) -> (Socket, Option<String>) {
    let mut req = format!("{}/graphql/ws", base.replacen("http", "ws", 1)).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    let (socket, resp) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
    let chosen = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string());
    (socket, chosen)
}

async fn send(ws: &mut Socket, msg: Value) {
    ws.send(Message::Text(msg.to_string().into())).await.unwrap();
}

/// Reads until the server closes; the close code and reason (None: no close frame arrived
/// within `secs`, or the connection broke without one).
async fn close_of(ws: &mut Socket, secs: u64) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Close(Some(f))) => return Some((f.code.into(), f.reason.to_string())),
            Ok(Message::Close(None)) => return None,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// The next text message that is not a keep-alive ping.
async fn next_text(ws: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message").unwrap().unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "ping" && v["type"] != "ka" {
                return v;
            }
        }
    }
}

/// A graphql-transport-ws socket past `connection_ack`.
async fn acked(base: &str) -> Socket {
    let (mut ws, _) = open(base, "graphql-transport-ws").await;
    send(&mut ws, json!({"type": "connection_init"})).await;
    let ack = next_text(&mut ws).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

fn subscribe(id: &str) -> Value {
    json!({"type": "subscribe", "id": id, "payload": {"query": EVENTS}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_transport_ws_protocol_violations_close_with_the_protocol_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;

    // subscribe before connection_ack → 4401 Unauthorized.
    let (mut ws, chosen) = open(&server.base, "graphql-transport-ws").await;
    assert_eq!(chosen.as_deref(), Some("graphql-transport-ws"));
    send(&mut ws, subscribe("1")).await;
    assert_eq!(close_of(&mut ws, 10).await, Some((4401, "Unauthorized".to_string())));

    // A second connection_init → 4429.
    let mut ws = acked(&server.base).await;
    send(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(close_of(&mut ws, 10).await, Some((4429, "Too many initialisation requests".to_string())));

    // A subscribe whose id is already active → 4409.
    let mut ws = acked(&server.base).await;
    send(&mut ws, subscribe("dup")).await;
    send(&mut ws, subscribe("dup")).await;
    assert_eq!(close_of(&mut ws, 10).await, Some((4409, "Subscriber for dup already exists".to_string())));

    // Once the server completed a subscription, its id may be used again.
    let mut ws = acked(&server.base).await;
    let finished = json!({"type": "subscribe", "id": "once", "payload": {"query": "subscription { refreshProgress(jobId: \"no-such-job\") { phase } }"}});
    send(&mut ws, finished.clone()).await;
    assert_eq!(next_text(&mut ws).await["type"], "next");
    assert_eq!(next_text(&mut ws).await, json!({"type": "complete", "id": "once"}));
    send(&mut ws, finished).await;
    let again = next_text(&mut ws).await;
    assert_eq!(again["type"], "next", "the id was free again: {again}");
    assert_eq!(again["id"], "once");

    // Invalid messages → 4400: not JSON, an unknown type, a subscribe without an id.
    for bad in [
        Message::Text("hello".into()),
        Message::Text(json!({"type": "start", "id": "1", "payload": {"query": EVENTS}}).to_string().into()),
        Message::Text(json!({"type": "subscribe", "payload": {"query": EVENTS}}).to_string().into()),
    ] {
        let mut ws = acked(&server.base).await;
        ws.send(bad.clone()).await.unwrap();
        let close = close_of(&mut ws, 10).await;
        assert!(matches!(&close, Some((4400, r)) if r.starts_with("Invalid message received")), "{bad:?}: {close:?}");
    }

    // The connection-level protocol still works, and the server answers queries.
    let mut ws = acked(&server.base).await;
    send(&mut ws, subscribe("ok")).await;
    server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
    let m = next_text(&mut ws).await;
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("next"), Some("ok")), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_the_protocol_it_names_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;

    // A client offering both, legacy first: whatever the server picks, it must speak it.
    let (mut ws, chosen) = open(&server.base, "graphql-ws, graphql-transport-ws").await;
    send(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(next_text(&mut ws).await["type"], "connection_ack");
    let (start, data) = match chosen.as_deref() {
        Some("graphql-transport-ws") => ("subscribe", "next"),
        Some("graphql-ws") => ("start", "data"),
        other => panic!("no protocol chosen: {other:?}"),
    };
    let finished = "subscription { refreshProgress(jobId: \"no-such-job\") { phase } }";
    send(&mut ws, json!({"type": start, "id": "1", "payload": {"query": finished}})).await;
    assert_eq!(next_text(&mut ws).await["type"], data, "{chosen:?}");

    // No protocol this server speaks: a 400 that says what to send.
    let resp = server
        .client
        .get(format!("{}/graphql/ws", server.base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "mqtt")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("graphql-transport-ws"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_the_socket_with_1009_and_the_server_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let ws = acked(&server.base).await;
    let (mut sink, mut stream) = ws.split();
    // The server stops at the frame header and closes; the client may still be writing (and
    // then sees its write fail), so the frame goes out from a task of its own.
    let big = "x".repeat(5 * 1024 * 1024);
    let writer = tokio::spawn(async move { sink.send(Message::Text(big.into())).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let close = loop {
        match tokio::time::timeout_at(deadline, stream.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(close.0, 1009, "{close:?}");
    assert!(close.1.contains("--max-ws-message-bytes"), "{close:?}");
    let _ = writer.await;

    // Still healthy: probes, queries, and new sockets.
    let health = server.client.get(format!("{}/healthz", server.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let data = server.ok("{ plugins { name } }", json!({})).await;
    assert_eq!(data["plugins"].as_array().unwrap().len(), 2);
    let mut ws = acked(&server.base).await;
    // A message just under the limit is fine.
    let padded = format!("subscription {{ catalogEvents {{ kind }} }} #{}", "p".repeat(60 * 1024));
    send(&mut ws, json!({"type": "subscribe", "id": "1", "payload": {"query": padded}})).await;
    server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
    let m = next_text(&mut ws).await;
    assert_eq!(m["id"], "1", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_authenticate_hold_no_slot_and_are_closed_at_the_init_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&["--max-connections", "2", "--ws-init-timeout", "2"])
        .start()
        .await;

    // Two sockets that never send connection_init...
    let (mut idle_a, _) = open(&server.base, "graphql-transport-ws").await;
    let (mut idle_b, _) = open(&server.base, "graphql-ws").await;
    // ...do not keep two authenticated clients out (before the fix they held both slots).
    let first = WsClient::connect(&server.base, None).await.expect("first authenticated socket");
    let second = WsClient::connect(&server.base, None).await.expect("second authenticated socket");
    // Authenticated sockets do count: the limit still holds.
    let err = WsClient::connect(&server.base, None).await.err().expect("a third authenticated socket is refused");
    assert!(err.to_string().contains("503"), "{err}");

    // The idle ones are closed at the deadline with 4408.
    for idle in [&mut idle_a, &mut idle_b] {
        assert_eq!(close_of(idle, 30).await, Some((4408, "Connection initialisation timeout".to_string())));
    }
    // An authenticated socket is not subject to the deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut first = first;
    first.subscribe("1", EVENTS, json!({})).await;
    server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
    assert_eq!(first.next_message(10).await.expect("still open")["type"], "next");
    drop(second);
}
