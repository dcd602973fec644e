//! GraphQL over Server-Sent Events at `/graphql/stream`: the graphql-sse protocol's
//! "distinct connections" mode. One request = one operation: `POST` a JSON body (or `GET` with
//! `query`, `operationName`, `variables`), `Accept: text/event-stream`; the answer is a stream of
//! `event: next` messages with one execution result each, then `event: complete`. Queries and
//! mutations work too (one `next`, then `complete`). Keep-alive comments are sent while idle.

use async_graphql::{Request, Variables};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::collections::HashMap;

use super::AppState;
use super::security::{self, ConnectionSlot};

fn bad(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"errors": [{"message": message, "extensions": {"code": "VALIDATION_FAILED"}}]})))
        .into_response()
}

/// Origin, connection limit and authentication, then the stream.
async fn open(app: AppState, headers: &HeaderMap, req: Request) -> Response {
    if !security::origin_allowed(&app, headers) {
        return security::forbidden_origin();
    }
    let Some(slot) = ConnectionSlot::acquire(&app) else {
        return security::too_many_connections();
    };
    let caller = match security::authenticate(&app, headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    stream(app, req.data(caller), slot)
}

fn stream(app: AppState, req: Request, slot: ConnectionSlot) -> Response {
    let keepalive = app.options.keepalive;
    let events = app
        .schema
        .execute_stream(req)
        .map(|resp| {
            let data = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
            Ok::<_, std::convert::Infallible>(Event::default().event("next").data(data))
        })
        .chain(futures_util::stream::once(async move {
            // The connection slot is held until the stream is done.
            drop(slot);
            Ok(Event::default().event("complete").data(""))
        }));
    Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive)).into_response()
}

pub async fn post(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return bad(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the operation as JSON (Content-Type: application/json)");
    }
    if body.len() > app.options.max_body_bytes {
        return bad(StatusCode::PAYLOAD_TOO_LARGE, "request body too large (--max-body-bytes)");
    }
    match serde_json::from_slice::<Request>(&body) {
        Ok(req) => open(app, &headers, req).await,
        Err(e) => bad(StatusCode::BAD_REQUEST, &format!("the body is not a GraphQL request: {e}")),
    }
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(query) = params.get("query") else {
        return bad(StatusCode::BAD_REQUEST, "pass the operation as ?query=...");
    };
    let mut req = Request::new(query.clone());
    if let Some(op) = params.get("operationName").filter(|s| !s.is_empty()) {
        req = req.operation_name(op.clone());
    }
    if let Some(vars) = params.get("variables").filter(|s| !s.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(vars) {
            Ok(v) => req = req.variables(Variables::from_json(v)),
            Err(e) => return bad(StatusCode::BAD_REQUEST, &format!("`variables` is not JSON: {e}")),
        }
    }
    if super::graphql::is_mutation(&req) {
        return bad(StatusCode::METHOD_NOT_ALLOWED, "mutations must be sent with POST");
    }
    open(app, &headers, req).await
}
