//! GraphQL subscriptions over WebSocket at `/graphql/ws`: `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws) subprotocol.
//!
//! The protocol state machine is async-graphql's; this module adds server keep-alive pings
//! (`ping` / legacy `ka`) so idle connections survive proxies, and ends the socket when the
//! server shuts down (the subscription streams complete first, so clients get `complete`).

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use std::str::FromStr;

use super::AppState;
use super::security::{self, ConnectionSlot};

pub async fn upgrade(State(app): State<AppState>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    // Browsers do not apply CORS to WebSockets: the Origin check is the only thing that stops a
    // foreign page from subscribing with the user's credentials.
    if !security::origin_allowed(&app, &headers) {
        return security::forbidden_origin();
    }
    let Some(slot) = ConnectionSlot::acquire(&app) else {
        return security::too_many_connections();
    };
    let header_token = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let protocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| WebSocketProtocols::from_str(p.trim()).ok()));
    let Some(protocol) = protocol else {
        return (
            StatusCode::BAD_REQUEST,
            "send Sec-WebSocket-Protocol: graphql-transport-ws (or the legacy graphql-ws)",
        )
            .into_response();
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(socket, app, protocol, header_token, slot))
}

/// The token from `connection_init` (`{"authorization": "Bearer ..."}` or `{"token": "..."}`),
/// else from the upgrade request's Authorization header.
fn init_token(payload: &serde_json::Value, header: Option<&str>) -> Option<String> {
    let from_payload = ["authorization", "Authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
        .and_then(|h| crate::auth::bearer(Some(h)).map(str::to_string))
        .or_else(|| payload.get("token").and_then(|v| v.as_str()).map(str::to_string));
    from_payload.or_else(|| crate::auth::bearer(header).map(str::to_string))
}

async fn serve(
    socket: WebSocket,
    app: AppState,
    protocol: WebSocketProtocols,
    header_token: Option<String>,
    _slot: ConnectionSlot,
) {
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|m| futures_util::future::ready(!matches!(m, Ok(Message::Close(_)) | Err(_))))
        .filter_map(|m| {
            futures_util::future::ready(match m {
                Ok(Message::Text(t)) => Some(t.as_bytes().to_vec()),
                Ok(Message::Binary(b)) => Some(b.to_vec()),
                _ => None,
            })
        });
    let auth = app.options.auth.clone();
    let per_connection = app.options.max_subscriptions_per_connection;
    let on_init = move |payload: serde_json::Value| async move {
        let token = init_token(&payload, header_token.as_deref());
        let caller = auth.authenticate(token.as_deref()).await.map_err(|e| async_graphql::Error::new(e.to_string()))?;
        let mut data = async_graphql::Data::default();
        data.insert(caller);
        data.insert(crate::graphql::subscription::ConnectionBudget::new(per_connection));
        Ok(data)
    };
    let mut out = async_graphql::http::WebSocket::new(app.schema.clone(), input, protocol)
        .on_connection_init(on_init)
        .map(|msg| match msg {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame { code, reason: reason.into() })),
        });
    let ping = match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    };
    let mut ticker = tokio::time::interval(app.options.keepalive);
    ticker.tick().await;
    let mut shutdown = app.catalog.shutdown_signal();
    loop {
        tokio::select! {
            msg = out.next() => match msg {
                Some(m) => if sink.send(m).await.is_err() { break },
                None => break,
            },
            _ = ticker.tick() => if sink.send(Message::Text(ping.into())).await.is_err() { break },
            _ = crate::graphql::subscription::stopped(&mut shutdown) => {
                // Give the subscription streams a moment to emit `complete`, then close.
                let mut grace = Box::pin(tokio::time::sleep(std::time::Duration::from_millis(200)));
                loop {
                    tokio::select! {
                        msg = out.next() => match msg {
                            Some(m) => if sink.send(m).await.is_err() { break },
                            None => break,
                        },
                        _ = &mut grace => break,
                    }
                }
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001, reason: "server shutting down".into() }))).await;
                break;
            }
        }
    }
}
