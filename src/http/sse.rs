//! GraphQL over Server-Sent Events at `/graphql/stream`: the graphql-sse protocol's
//! "distinct connections" mode. One request = one operation: `POST` a JSON body (or `GET` with
//! `query`, `operationName`, `variables`), `Accept: text/event-stream`; the answer is a stream of
//! `event: next` messages with one execution result each, then `event: complete`. Queries and
//! mutations work too (one `next`, then `complete`). Keep-alive comments are sent while idle.
//! GET runs no mutation, whatever names the document (text, APQ hash, trusted-document id);
//! each event is checked against `--max-response-bytes`.

use async_graphql::Request;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use catalog_api::ErrorCode;
use futures_util::StreamExt;
use std::collections::HashMap;

use super::AppState;
use super::security::{self, ConnectionSlot};
use crate::graphql::extensions::{classify_errors, response_too_large};

fn bad(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"errors": [{"message": message, "extensions": {"code": ErrorCode::ValidationFailed.as_str()}}]})))
        .into_response()
}

/// Origin, connection limit, authentication and read-your-writes, then the stream.
async fn open(
    app: AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    peer: Option<std::net::IpAddr>,
    req: Request,
) -> Response {
    if !security::origin_allowed(&app, headers) {
        return security::forbidden_origin();
    }
    // `X-Catalog-Min-Generation` or `?minGeneration=` (an EventSource cannot set headers): the
    // stream starts once this replica has applied that generation, else UNAVAILABLE.
    match super::graphql::requested_generation(headers, query) {
        Err(resp) => return resp,
        Ok(Some(n)) => {
            if let Err(resp) = super::graphql::wait_generation(&app, headers, n).await {
                return resp;
            }
        }
        Ok(None) => {}
    }
    let Some(slot) = ConnectionSlot::acquire(&app) else {
        return security::too_many_connections();
    };
    let caller = match security::authenticate(&app, headers, peer).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let req = crate::graphql::request_data(req.data(caller), security::request_id(headers));
    stream(app, req, slot, security::request_id(headers).map(str::to_string))
}

fn stream(app: AppState, req: Request, slot: ConnectionSlot, request_id: Option<String>) -> Response {
    let keepalive = app.options.keepalive;
    let max = app.options.schema.limits.max_response_bytes;
    let events = app
        .schema
        .execute_stream(req)
        .map(move |resp| {
            let mut data = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
            if data.len() > max {
                let mut r = async_graphql::Response::from_errors(vec![response_too_large(max)]);
                classify_errors(&mut r, request_id.as_deref());
                data = serde_json::to_string(&r).unwrap_or_else(|_| "{}".into());
            }
            Ok::<_, std::convert::Infallible>(Event::default().event("next").data(data))
        })
        .chain(futures_util::stream::once(async move {
            // The connection slot is held until the stream is done.
            drop(slot);
            Ok(Event::default().event("complete").data(""))
        }));
    Sse::new(events).keep_alive(KeepAlive::new().interval(keepalive)).into_response()
}

pub async fn post(State(app): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let query = parts.uri.query();
    let body = match super::body::read(body, app.options.max_body_bytes.saturating_add(1024), app.options.body_timeout)
        .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return bad(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send the operation as JSON (Content-Type: application/json)");
    }
    if body.len() > app.options.max_body_bytes {
        return bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "request body is {} bytes; the limit is {} (--max-body-bytes)",
                body.len(),
                app.options.max_body_bytes
            ),
        );
    }
    match serde_json::from_slice::<Request>(&body) {
        Ok(req) => open(app, &headers, query, security::peer(&parts.extensions), req).await,
        Err(e) => bad(StatusCode::BAD_REQUEST, &format!("the body is not a GraphQL request: {e}")),
    }
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<super::connections::PeerAddr>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let query = params.get("query").cloned().unwrap_or_default();
    let extensions = params.get("extensions").cloned().filter(|s| !s.is_empty());
    if query.is_empty() && extensions.is_none() {
        return bad(StatusCode::BAD_REQUEST, "pass the operation as ?query=... (or its hash in ?extensions=...)");
    }
    let mut req = match super::graphql::get_request(
        query,
        params.get("operationName").cloned(),
        params.get("variables").cloned(),
        extensions,
    ) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Resolve the persisted document before deciding: GET never runs a mutation. A document
    // that does not resolve is reported by the stream itself.
    let _ = app.guardrails.resolve_document(&mut req);
    if super::graphql::is_mutation(&req) {
        return super::graphql::mutation_over_get();
    }
    open(app, &headers, raw.as_deref(), peer.map(|p| p.0.0), req).await
}
