//! GraphQL subscriptions over WebSocket at `/graphql/ws`: `graphql-transport-ws` and the legacy
//! `graphql-ws` (subscriptions-transport-ws) subprotocol.
//!
//! The protocol state machine is async-graphql's. Around it this module adds what a server at
//! the edge needs and the state machine does not do:
//! - negotiation through `async_graphql_axum::GraphQLProtocol`, with a clear 400 when no
//!   protocol fits;
//! - limits: the message and frame size (a bigger message closes the socket with 1009 before it
//!   is buffered), small read/write buffers, and a `connection_init` deadline (4408);
//! - the connection slot (`--max-connections`), taken only once `connection_init` is accepted,
//!   so sockets that never authenticate cannot lock authenticated clients out;
//! - a protocol guard for graphql-transport-ws that closes with the protocol's codes: 4400
//!   invalid message, 4401 subscribe before `connection_ack`, 4403 init refused, 4409 duplicate
//!   subscription id, 4429 a second `connection_init`. The legacy protocol keeps the state
//!   machine's behaviour;
//! - keep-alive pings (`ping` / legacy `ka`) so idle connections survive proxies, and the
//!   shutdown path (the subscription streams complete first, so clients get `complete`).

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use async_graphql_axum::GraphQLProtocol;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, oneshot};

use super::AppState;
use super::fanout::{self, Item, Membership};
use super::security::{self, ConnectionSlot};
use crate::graphql::subscription::{ConnectionBudget, FanoutRun, Subscriber};

/// WebSocket limits (`--max-ws-message-bytes`, `--ws-init-timeout`).
#[derive(Clone, Debug)]
pub struct WsOptions {
    /// Largest message and frame accepted from a client.
    pub max_message_bytes: usize,
    /// How long a socket may stay open before its `connection_init` is accepted.
    pub init_timeout: Duration,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions { max_message_bytes: 64 * 1024, init_timeout: Duration::from_secs(10) }
    }
}

/// Socket read chunk. tungstenite's default (128 KiB) is sized for bulk data; GraphQL client
/// messages are a few hundred bytes, and the buffer exists per connection (10k subscribers ×
/// 128 KiB = 1.3 GB). tungstenite also zero-fills the whole chunk before every read attempt,
/// and the state machine polls the socket each time an event wakes the connection, so the
/// chunk size is paid on every delivery too. A larger message still arrives whole: the buffer
/// grows to the frame's length (at most `--max-ws-message-bytes`) when its header is read.
const READ_BUFFER_BYTES: usize = 2 * 1024;
/// Write coalescing size: 0 writes each message when it is sent. Every send is flushed at once
/// anyway (one message, then wait for the next event), so a coalescing buffer would only hold
/// memory per connection.
const WRITE_BUFFER_BYTES: usize = 0;

/// A close frame's reason may hold at most 123 bytes (RFC 6455 §5.5).
const MAX_CLOSE_REASON: usize = 123;

pub async fn upgrade(
    State(app): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    peer: Option<axum::Extension<super::connections::PeerAddr>>,
    protocol: Result<GraphQLProtocol, StatusCode>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Browsers do not apply CORS to WebSockets: the Origin check is the only thing that stops a
    // foreign page from subscribing with the user's credentials.
    if !security::origin_allowed(&app, &headers) {
        return security::forbidden_origin();
    }
    // While authenticated connections hold every slot, say so before upgrading; the slot
    // itself is taken only once `connection_init` is accepted (see `serve`).
    if app.connections.load(Ordering::Acquire) >= app.options.max_connections {
        return security::too_many_connections();
    }
    let header_token = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Read-your-writes from the upgrade request (header or `?minGeneration=`); a
    // `connection_init` payload's `minGeneration` wins.
    let min_generation = match super::graphql::requested_generation(&headers, uri.query()) {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    let request_id = security::request_id(&headers).map(str::to_string);
    let upgrade = upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS);
    // GraphQLProtocol decides whether any protocol fits. The server must then speak the one
    // axum names in the response header (the client's and the server's preference differ when
    // a client offers both), so the state machine follows axum's choice.
    let spoken =
        upgrade.selected_protocol().and_then(|v| v.to_str().ok()).and_then(|p| WebSocketProtocols::from_str(p).ok());
    let (Ok(_), Some(protocol)) = (protocol, spoken) else {
        return (
            StatusCode::BAD_REQUEST,
            "send Sec-WebSocket-Protocol: graphql-transport-ws (or the legacy graphql-ws)",
        )
            .into_response();
    };
    let max = app.options.ws.max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            serve(
                socket,
                app,
                protocol,
                Upgrade { header_token, request_id, min_generation, peer: peer.map(|p| p.0.0) },
            )
        })
}

/// The generation a `connection_init` asks to read at: its payload's `minGeneration`, else
/// the upgrade request's. `None` for other messages or when nothing is asked; `Err` for a
/// `minGeneration` that is not a non-negative integer.
fn init_generation(bytes: &[u8], upgrade: Option<u64>) -> Option<Result<u64, String>> {
    // Cheap before parsing: only a `connection_init` is looked at.
    if !bytes.windows(15).any(|w| w == b"connection_init") {
        return None;
    }
    let msg: ClientEnvelope = serde_json::from_slice(bytes).ok()?;
    if msg.kind != "connection_init" {
        return None;
    }
    match msg.payload.as_ref().and_then(|p| p.get("minGeneration")) {
        None | Some(serde_json::Value::Null) => upgrade.map(Ok),
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| "Invalid message received: `minGeneration` must be a non-negative integer".to_string()),
        ),
    }
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

/// The connection's protocol state as the guard sees it: what the client sent (init,
/// subscribe, complete) and what the server sent (ack, complete, error).
struct Guard {
    /// graphql-transport-ws: enforce the protocol's rules. Legacy: only track the ack.
    strict: bool,
    init_received: bool,
    acked: bool,
    /// Subscription ids the client started and that have not completed.
    active: HashSet<String>,
    /// Why the input ended, when the guard or a read error ended it: the close frame to send.
    close: Option<(u16, String)>,
    /// Set by `connection_init` once accepted: what the fan-out hub needs to serve a
    /// subscription itself.
    session: Option<Session>,
    /// Subscription ids served from the fan-out hub (not by the state machine).
    shared: HashSet<String>,
    /// Subscription ids handed to the state machine and not completed yet: a legacy `start`
    /// that reuses one replaces the state machine's stream, so it must go there too.
    delegated: HashSet<String>,
    /// What the input told the connection's loop and the loop has not done yet (the loop is
    /// woken through a `Notify`). A queue here rather than a channel: tokio's channels
    /// allocate their first block of 32 slots up front, kilobytes per connection for a queue
    /// that is empty almost always.
    commands: VecDeque<Cmd>,
}

/// The connection's caller and budget, from its accepted `connection_init`.
struct Session {
    caller: crate::auth::Caller,
    budget: ConnectionBudget,
}

/// The parts of a client message the guard looks at.
#[derive(serde::Deserialize)]
struct ClientEnvelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    payload: Option<serde_json::Value>,
}

/// The parts of a server message the guard looks at (the payload is skipped, not built).
#[derive(serde::Deserialize)]
struct ServerHead {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

impl Guard {
    fn new(strict: bool) -> Guard {
        Guard {
            strict,
            init_received: false,
            acked: false,
            active: HashSet::new(),
            close: None,
            session: None,
            shared: HashSet::new(),
            delegated: HashSet::new(),
            commands: VecDeque::new(),
        }
    }

    /// Checks one client message before the state machine sees it; `Err` is the close frame.
    fn incoming(&mut self, bytes: &[u8]) -> Result<(), (u16, String)> {
        if !self.strict {
            return Ok(());
        }
        let invalid = |why: String| (4400, format!("Invalid message received: {why}"));
        let msg: ClientEnvelope = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        match msg.kind.as_str() {
            "connection_init" => {
                if self.init_received {
                    return Err((4429, "Too many initialisation requests".into()));
                }
                self.init_received = true;
            }
            "subscribe" => {
                let Some(id) = msg.id.filter(|i| !i.is_empty()) else {
                    return Err(invalid("`subscribe` needs a non-empty `id`".into()));
                };
                if !msg.payload.as_ref().is_some_and(serde_json::Value::is_object) {
                    return Err(invalid("`subscribe` needs a `payload` object".into()));
                }
                if !self.acked {
                    return Err((4401, "Unauthorized".into()));
                }
                if self.active.contains(&id) {
                    return Err((4409, format!("Subscriber for {id} already exists")));
                }
                self.active.insert(id);
            }
            "complete" => {
                let Some(id) = msg.id else {
                    return Err(invalid("`complete` needs an `id`".into()));
                };
                self.active.remove(&id);
            }
            "ping" | "pong" => {}
            other => return Err(invalid(format!("unknown message type `{other}`"))),
        }
        Ok(())
    }

    /// Notes one server message; true when it is the `connection_ack`.
    fn outgoing(&mut self, text: &str) -> bool {
        // Data messages are most of the traffic (one per event per subscriber) and change no
        // state: recognise them by the state machine's fixed prefix instead of parsing them.
        if text.starts_with(r#"{"type":"next","#) || text.starts_with(r#"{"type":"data","#) {
            return false;
        }
        let Ok(head) = serde_json::from_str::<ServerHead>(text) else { return false };
        match head.kind.as_str() {
            "connection_ack" => {
                self.acked = true;
                return true;
            }
            "complete" | "error" => {
                if let Some(id) = head.id {
                    self.active.remove(&id);
                    self.delegated.remove(&id);
                }
            }
            _ => {}
        }
        false
    }

    /// The state machine's own close codes, in graphql-transport-ws terms: it closes with
    /// 1002 both for a refused `connection_init` (4403) and an unreadable message (4400).
    fn close_code(&self, code: u16, reason: String) -> (u16, String) {
        if !self.strict {
            return (code, reason);
        }
        match code {
            1002 if self.init_received && !self.acked => (4403, reason),
            1002 => (4400, reason),
            1011 if !self.acked => (4401, "Unauthorized".into()),
            _ => (code, reason),
        }
    }
}

fn lock(g: &Mutex<Guard>) -> MutexGuard<'_, Guard> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

fn close_frame(code: u16, reason: impl Into<String>) -> Message {
    let mut reason = reason.into();
    if reason.len() > MAX_CLOSE_REASON {
        let mut cut = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// The close frame for a failed read: 1009 for a message over the limit (tungstenite stops at
/// the frame header, so the body is never buffered), 1002 for anything else.
fn read_failure(err: &axum::Error, max: usize) -> (u16, String) {
    let inner = std::error::Error::source(err).and_then(|e| e.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(_)) => {
            (1009, format!("message too big: at most {max} bytes (--max-ws-message-bytes)"))
        }
        _ => (1002, format!("cannot read the message: {err}")),
    }
}

/// What to do with one message from the state machine.
enum Step {
    Send(Message),
    /// Send this close frame, then end the connection.
    Close(Message),
}

/// Passes a state machine message through the guard; takes the connection slot on the ack.
fn forward(app: &AppState, guard: &Mutex<Guard>, slot: &mut Option<ConnectionSlot>, msg: WsMessage) -> Step {
    match msg {
        WsMessage::Text(text) => {
            if lock(guard).outgoing(&text) {
                match ConnectionSlot::acquire(app) {
                    Some(s) => *slot = Some(s),
                    None => {
                        return Step::Close(close_frame(
                            1013,
                            "too many open subscription connections; retry later (--max-connections)",
                        ));
                    }
                }
            }
            Step::Send(Message::Text(text.into()))
        }
        WsMessage::Close(code, reason) => {
            let (code, reason) = lock(guard).close_code(code, reason);
            Step::Close(close_frame(code, reason))
        }
    }
}

/// What the client's input tells the connection's loop about subscriptions served from the
/// fan-out hub.
enum Cmd {
    /// Serve subscription `id` from this share of a shared stream.
    Attach { id: String, membership: Membership, subscriber: Subscriber },
    /// The client completed `id`: stop it and confirm with `complete` (as the state machine does).
    Stop(String),
    /// A legacy `start` reused `id` for the state machine: stop ours without a word.
    Replace(String),
}

/// What one of the hub's subscriptions yields to the connection's loop.
enum Out {
    /// A `next` (legacy: `data`) message, ready to send.
    Message(String),
    /// The shared stream ended: send `complete` for this id.
    End(String),
}

/// A state machine message for a subscription id.
fn complete_message(id: &str) -> String {
    format!(r#"{{"type":"complete","id":{}}}"#, serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into()))
}

/// One subscription served from the hub: each shared payload in this connection's envelope,
/// byte for byte what the state machine would send (`{"type":"next","id":..,"payload":..}`).
/// Ends quietly when cancelled (its sender dropped), with [`Out::End`] when the shared stream
/// ends. Holds the subscriber's count (gauge and budget) while it lives.
fn member_stream(
    protocol: WebSocketProtocols,
    id: String,
    membership: Membership,
    subscriber: Subscriber,
    cancel: oneshot::Receiver<()>,
) -> BoxStream<'static, Out> {
    let kind = match protocol {
        WebSocketProtocols::GraphQLWS => "next",
        WebSocketProtocols::SubscriptionsTransportWS => "data",
    };
    let prefix = format!(
        r#"{{"type":"{kind}","id":{},"payload":"#,
        serde_json::to_string(&id).unwrap_or_else(|_| "\"\"".into())
    );
    struct State {
        id: String,
        prefix: String,
        membership: Membership,
        _subscriber: Subscriber,
        cancel: oneshot::Receiver<()>,
        ended: bool,
    }
    let state = State { id, prefix, membership, _subscriber: subscriber, cancel, ended: false };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            // Cancellation first: once the loop has stopped a subscription, it yields nothing more.
            let item: Result<Item, _> = tokio::select! {
                biased;
                _ = &mut st.cancel => return None,
                item = st.membership.rx.recv() => item,
            };
            match item {
                Ok(Some(payload)) => {
                    let mut m = String::with_capacity(st.prefix.len() + payload.len() + 1);
                    m.push_str(&st.prefix);
                    m.push_str(&payload);
                    m.push('}');
                    return Some((Out::Message(m), st));
                }
                Ok(None) | Err(broadcast::error::RecvError::Closed) => {
                    st.ended = true;
                    let id = std::mem::take(&mut st.id);
                    return Some((Out::End(id), st));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "a slow catalogEvents subscriber skipped events");
                }
            }
        }
    })
    .boxed()
}

/// A copy of a request's operation (a `Request` is not `Clone`; its data is not needed here).
fn copy_request(req: &async_graphql::Request) -> async_graphql::Request {
    let mut copy = async_graphql::Request::new(req.query.clone()).variables(req.variables.clone());
    copy.operation_name = req.operation_name.clone();
    copy.extensions = req.extensions.clone();
    copy
}

/// Decides whether a client message (already past the guard) is served from the fan-out hub.
/// True: handled here (queued for the loop in `Guard::commands`), the state machine never sees it.
/// False: the state machine gets it, unchanged. Everything the hub cannot answer exactly as
/// the state machine would (a refused document, a spent budget, another root field) goes there.
async fn intercept(app: &AppState, guard: &Mutex<Guard>, bytes: &[u8]) -> bool {
    let Ok(msg) = serde_json::from_slice::<ClientEnvelope>(bytes) else { return false };
    let Some(id) = msg.id else { return false };
    match msg.kind.as_str() {
        "complete" | "stop" => {
            let mut g = lock(guard);
            if g.shared.remove(&id) {
                g.commands.push_back(Cmd::Stop(id));
                return true;
            }
            false
        }
        "subscribe" | "start" => {
            let shared = subscribe_shared(app, guard, &id, msg.payload).await;
            let mut g = lock(guard);
            match shared {
                Some((membership, subscriber)) => {
                    g.shared.insert(id.clone());
                    g.commands.push_back(Cmd::Attach { id, membership, subscriber });
                    true
                }
                None => {
                    if g.shared.remove(&id) {
                        g.commands.push_back(Cmd::Replace(id.clone()));
                    }
                    g.delegated.insert(id);
                    false
                }
            }
        }
        _ => false,
    }
}

/// A share of the hub's stream for this subscription, if it can be served from the hub.
async fn subscribe_shared(
    app: &AppState,
    guard: &Mutex<Guard>,
    id: &str,
    payload: Option<serde_json::Value>,
) -> Option<(Membership, Subscriber)> {
    let (caller, budget) = {
        let g = lock(guard);
        if g.delegated.contains(id) {
            return None;
        }
        let s = g.session.as_ref()?;
        (s.caller.clone(), s.budget.clone())
    };
    let mut req: async_graphql::Request = serde_json::from_value(payload?).ok()?;
    // The document a persisted-query hash or trusted-document id names (the state machine's
    // run would resolve it the same way); one that does not resolve is its to report.
    app.guardrails.resolve_document(&mut req).ok()?;
    let key = fanout::Key::new(&req, &caller);
    // The budget first, like the resolver; a spent budget is answered by the state machine
    // (it counts against the same budget, so it refuses too, with its error).
    let slot = budget.slot()?;
    let membership = match app.fanout.join(&key) {
        Some(m) => m,
        None => {
            if !fanout::shareable(&req) {
                return None;
            }
            // Every check this subscriber's own stream would make (limits, trusted documents,
            // arguments), without waiting for an event. Any answer at all is an error: the
            // state machine then runs the subscription and answers exactly as it always has.
            let mut check = app.schema.execute_stream(copy_request(&req).data(caller.clone()).data(FanoutRun::Check));
            if check.next().await.is_some() {
                return None;
            }
            // Not the connection's request id: the stream's answers go to every subscriber.
            let stream = app.schema.execute_stream(req.data(caller).data(FanoutRun::Shared));
            app.fanout.start(key, stream)
        }
    };
    membership.shared.ready().await;
    Some((membership, Subscriber::new(&app.subscriptions, slot)))
}

/// What the upgrade request carried that the connection keeps.
struct Upgrade {
    /// The Authorization header, used when `connection_init` carries no token.
    header_token: Option<String>,
    /// The upgrade request's id: every error on this connection carries it.
    request_id: Option<String>,
    /// The generation the upgrade request asked to read at.
    min_generation: Option<u64>,
    /// The client's address (for the limit on failed authentications).
    peer: Option<std::net::IpAddr>,
}

async fn serve(socket: WebSocket, app: AppState, protocol: WebSocketProtocols, upgrade: Upgrade) {
    let Upgrade { header_token, request_id, min_generation, peer } = upgrade;
    let (mut sink, stream) = socket.split();
    let guard = Arc::new(Mutex::new(Guard::new(protocol == WebSocketProtocols::GraphQLWS)));
    let max = app.options.ws.max_message_bytes;
    // The client's messages, through the guard. A violation (or a read error) records its close
    // frame and ends the input, which ends the state machine's output; the loop below sends it.
    // The loop's wake-up for commands the input queued in the guard.
    let wake = Arc::new(Notify::new());
    let input_app = app.clone();
    let input_wake = wake.clone();
    let input = futures_util::stream::unfold((stream, guard.clone()), move |(mut stream, guard)| {
        let app = input_app.clone();
        let wake = input_wake.clone();
        async move {
            loop {
                let bytes: Bytes = match stream.next().await? {
                    Ok(m @ (Message::Text(_) | Message::Binary(_))) => m.into_data(),
                    Ok(Message::Close(_)) => return None,
                    Ok(_) => continue,
                    Err(e) => {
                        lock(&guard).close = Some(read_failure(&e, max));
                        return None;
                    }
                };
                let verdict = lock(&guard).incoming(&bytes);
                if let Err(close) = verdict {
                    lock(&guard).close = Some(close);
                    return None;
                }
                // Read-your-writes: `connection_init` reaches the state machine (and is acked)
                // once this replica has applied the generation asked for; else the connection
                // closes with 1013 (try again later), which clients retry.
                if let Some(wanted) = init_generation(&bytes, min_generation) {
                    match wanted {
                        Err(why) => {
                            lock(&guard).close = Some((4400, why));
                            return None;
                        }
                        Ok(g) => {
                            if let Err(e) = app.catalog.wait_for_generation(g).await {
                                lock(&guard).close = Some((1013, e.to_string()));
                                return None;
                            }
                        }
                    }
                }
                if intercept(&app, &guard, &bytes).await {
                    wake.notify_one();
                    continue;
                }
                return Some((bytes, (stream, guard)));
            }
        }
    });
    let init_app = app.clone();
    let per_connection = app.options.max_subscriptions_per_connection;
    let session = guard.clone();
    let on_init = move |payload: serde_json::Value| async move {
        let token = init_token(&payload, header_token.as_deref());
        let caller = security::authenticate_token(&init_app, token.as_deref(), peer)
            .await
            .map_err(|e| async_graphql::Error::new(e.to_string()))?;
        let budget = ConnectionBudget::new(per_connection);
        // The fan-out hub serves subscriptions with the same caller and counts them in the
        // same budget as the state machine's.
        lock(&session).session = Some(Session { caller: caller.clone(), budget: budget.clone() });
        let mut data = async_graphql::Data::default();
        data.insert(caller);
        data.insert(budget);
        if let Some(id) = request_id {
            data.insert(crate::graphql::extensions::RequestId(id));
        }
        Ok(data)
    };
    let out = async_graphql::http::WebSocket::new(app.schema.clone(), input, protocol).on_connection_init(on_init);
    let mut out = std::pin::pin!(out);
    let ping = match protocol {
        WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
        WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
    };
    let mut ticker = tokio::time::interval(app.options.keepalive);
    ticker.tick().await;
    let mut shutdown = app.catalog.shutdown_signal();
    let mut init_deadline = std::pin::pin!(tokio::time::sleep(app.options.ws.init_timeout));
    // Held from the ack to the end of the connection.
    let mut slot: Option<ConnectionSlot> = None;
    // The subscriptions served from the fan-out hub, and how to stop each.
    let mut members: SelectAll<BoxStream<'static, Out>> = SelectAll::new();
    let mut cancels: HashMap<String, oneshot::Sender<()>> = HashMap::new();
    'conn: loop {
        tokio::select! {
            () = wake.notified() => {
                let queued = std::mem::take(&mut lock(&guard).commands);
                for cmd in queued {
                    match cmd {
                        Cmd::Attach { id, membership, subscriber } => {
                            let (cancel, cancelled) = oneshot::channel();
                            // A legacy `start` that reuses an id replaces its stream, like the state machine.
                            cancels.insert(id.clone(), cancel);
                            members.push(member_stream(protocol, id, membership, subscriber, cancelled));
                        }
                        Cmd::Stop(id) => {
                            if cancels.remove(&id).is_some()
                                && sink.send(Message::Text(complete_message(&id).into())).await.is_err()
                            {
                                break 'conn;
                            }
                        }
                        Cmd::Replace(id) => {
                            cancels.remove(&id);
                        }
                    }
                }
            }
            Some(out) = members.next(), if !members.is_empty() => match out {
                Out::Message(m) => if sink.send(Message::Text(m.into())).await.is_err() { break },
                Out::End(id) => {
                    if cancels.remove(&id).is_none() {
                        continue;
                    }
                    let m = complete_message(&id);
                    {
                        let mut g = lock(&guard);
                        g.shared.remove(&id);
                        g.outgoing(&m);
                    }
                    if sink.send(Message::Text(m.into())).await.is_err() { break }
                }
            },
            msg = out.next() => {
                let Some(msg) = msg else {
                    let close = lock(&guard).close.take();
                    if let Some((code, reason)) = close {
                        let _ = sink.send(close_frame(code, reason)).await;
                    }
                    break;
                };
                match forward(&app, &guard, &mut slot, msg) {
                    Step::Send(m) => if sink.send(m).await.is_err() { break },
                    Step::Close(m) => {
                        let _ = sink.send(m).await;
                        break;
                    }
                }
            }
            () = &mut init_deadline, if slot.is_none() => {
                let _ = sink.send(close_frame(4408, "Connection initialisation timeout")).await;
                break;
            }
            _ = ticker.tick() => if sink.send(Message::Text(ping.into())).await.is_err() { break },
            _ = crate::graphql::subscription::stopped(&mut shutdown) => {
                // The hub's subscriptions complete at once (their shared streams are ending too).
                let ids: Vec<String> = cancels.drain().map(|(id, _)| id).collect();
                drop(std::mem::take(&mut members));
                for id in ids {
                    lock(&guard).shared.remove(&id);
                    let _ = sink.send(Message::Text(complete_message(&id).into())).await;
                }
                // Give the subscription streams a moment to emit `complete`, then close.
                let mut grace = std::pin::pin!(tokio::time::sleep(Duration::from_millis(200)));
                loop {
                    tokio::select! {
                        msg = out.next() => match msg.map(|m| forward(&app, &guard, &mut slot, m)) {
                            Some(Step::Send(m)) => if sink.send(m).await.is_err() { break },
                            Some(Step::Close(m)) => {
                                let _ = sink.send(m).await;
                                return;
                            }
                            None => break,
                        },
                        _ = &mut grace => break,
                    }
                }
                let _ = sink.send(close_frame(1001, "server shutting down")).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Guard;

    #[test]
    fn the_guard_applies_graphql_transport_ws_rules() {
        let mut g = Guard::new(true);
        let sub = br#"{"type":"subscribe","id":"1","payload":{"query":"subscription { catalogEvents { kind } }"}}"#;
        assert_eq!(g.incoming(sub).unwrap_err().0, 4401, "subscribe before the ack");
        assert!(g.incoming(br#"{"type":"connection_init"}"#).is_ok());
        assert_eq!(g.incoming(br#"{"type":"connection_init"}"#).unwrap_err().0, 4429);
        assert!(g.outgoing(r#"{"type":"connection_ack"}"#));
        assert!(g.incoming(sub).is_ok());
        let dup = g.incoming(sub).unwrap_err();
        assert_eq!(dup, (4409, "Subscriber for 1 already exists".to_string()));
        g.outgoing(r#"{"type":"complete","id":"1"}"#);
        assert!(g.incoming(sub).is_ok(), "an id may be reused once its subscription completed");
        assert_eq!(g.incoming(b"not json").unwrap_err().0, 4400);
        assert_eq!(g.incoming(br#"{"type":"start","id":"2","payload":{}}"#).unwrap_err().0, 4400);
    }

    #[test]
    fn the_legacy_protocol_is_left_to_the_state_machine() {
        let mut g = Guard::new(false);
        assert!(g.incoming(b"anything").is_ok());
        assert_eq!(g.close_code(1011, "x".into()).0, 1011);
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let super::Message::Close(Some(f)) = super::close_frame(4409, "é".repeat(200)) else { panic!() };
        assert!(f.reason.len() <= 123);
    }
}
