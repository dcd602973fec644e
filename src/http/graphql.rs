//! The GraphQL-over-HTTP endpoint.
//!
//! Written by hand rather than with async-graphql-axum's extractors, because those answer
//! `application/graphql-response+json` regardless of `Accept`, parse any Content-Type as JSON
//! and run mutations over GET. Here:
//! - POST needs `Content-Type: application/json` (else 415); the body is capped.
//! - GET runs queries only (a mutation is 405) and reads `operationName`; without `query` it
//!   serves GraphiQL.
//! - The response type follows `Accept`; with `application/graphql-response+json`, a request
//!   that fails to parse or validate answers 400.
//! - Every error carries `extensions.code`.

use async_graphql::http::GraphiQLSource;
use async_graphql::{BatchRequest, BatchResponse, ErrorExtensionValues, Request, Response, ServerError, Variables};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use std::collections::HashMap;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::http::HeaderName;
use std::sync::Arc;

use super::{AppState, security};
use crate::auth::Caller;
use crate::cache::{CacheKey, normalize};
use crate::graphql::errors::{INTERNAL, VALIDATION_FAILED};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const APPLICATION_JSON: &str = "application/json";

/// Whether to answer `application/graphql-response+json` (only when the client lists it before
/// `application/json`); a missing `Accept` or `*/*` gets `application/json`, as the
/// GraphQL-over-HTTP spec recommends for compatibility.
fn wants_graphql_response(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim();
        match media {
            GRAPHQL_RESPONSE_JSON => return true,
            APPLICATION_JSON | "*/*" | "application/*" => return false,
            _ => {}
        }
    }
    false
}

fn error_body(status: StatusCode, code: &str, message: &str) -> axum::response::Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": code}}]});
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(APPLICATION_JSON))], body.to_string()).into_response()
}

/// Adds `extensions.code` to errors that have none (parse and validation errors from
/// async-graphql itself), so every error carries one.
fn add_codes(resp: &mut Response) {
    let request_error = resp.data == async_graphql::Value::Null;
    for err in &mut resp.errors {
        add_code(err, request_error);
    }
}

fn add_code(err: &mut ServerError, request_error: bool) {
    let ext = err.extensions.get_or_insert_with(ErrorExtensionValues::default);
    if ext.get("code").is_none() {
        if request_error && err.path.is_empty() {
            ext.set("code", VALIDATION_FAILED);
            ext.set("reason", "GRAPHQL_VALIDATION");
        } else {
            ext.set("code", INTERNAL);
        }
    }
}

/// A response with only errors and no data: the request itself was rejected.
fn is_request_error(resp: &Response) -> bool {
    resp.data == async_graphql::Value::Null && !resp.errors.is_empty() && resp.errors.iter().all(|e| e.path.is_empty())
}

fn respond(headers: &HeaderMap, mut batch: BatchResponse) -> axum::response::Response {
    let graphql_response = wants_graphql_response(headers);
    let mut status = StatusCode::OK;
    let body = match &mut batch {
        BatchResponse::Single(r) => {
            add_codes(r);
            if is_request_error(r) {
                if graphql_response {
                    status = StatusCode::BAD_REQUEST;
                }
                // A request that never executed has no `data` entry at all.
                serde_json::to_string(&serde_json::json!({"errors": r.errors}))
            } else {
                serde_json::to_string(&batch)
            }
        }
        BatchResponse::Batch(list) => {
            list.iter_mut().for_each(add_codes);
            serde_json::to_string(&batch)
        }
    };
    let content_type = if graphql_response { GRAPHQL_RESPONSE_JSON } else { APPLICATION_JSON };
    match body {
        Ok(body) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response(),
        Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, &format!("cannot encode response: {e}")),
    }
}

pub async fn post(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    // Only JSON: a form or text/plain POST is what a cross-site page can send without a CORS
    // preflight, so refusing it is the CSRF defence.
    if media != APPLICATION_JSON && media != "application/graphql+json" {
        return error_body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            VALIDATION_FAILED,
            "send GraphQL requests as POST with Content-Type: application/json",
        );
    }
    let max = app.options.max_body_bytes;
    if body.len() > max {
        return error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            VALIDATION_FAILED,
            &format!("request body is {} bytes; the limit is {max} (--max-body-bytes)", body.len()),
        );
    }
    let caller = match security::authenticate(&app, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                VALIDATION_FAILED,
                &format!("the body is not a GraphQL request: {e}; send {{\"query\": \"...\", \"variables\": {{...}}}}"),
            );
        }
    };
    match batch {
        BatchRequest::Single(req) => execute_single(&app, &headers, req.data(caller)).await,
        BatchRequest::Batch(list) => {
            let cap = app.options.max_batch;
            if cap == 0 {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    VALIDATION_FAILED,
                    "batched requests are turned off (--max-batch 0)",
                );
            }
            if list.len() > cap {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    VALIDATION_FAILED,
                    &format!("the batch has {} requests; the limit is {cap} (--max-batch)", list.len()),
                );
            }
            let mutates = list.iter().any(|r| !is_query(r));
            let names: Vec<String> = list.iter().map(operation_label).collect();
            let list = list.into_iter().map(|r| r.data(caller.clone())).collect();
            let resp = app.schema.execute_batch(BatchRequest::Batch(list)).await;
            if mutates {
                invalidate(&app);
            }
            if let BatchResponse::Batch(rs) = &resp {
                for (name, r) in names.iter().zip(rs) {
                    app.metrics.operation(name, &outcome(r));
                }
            }
            respond(&headers, resp)
        }
    }
}

/// `ok`, or the first error's code.
fn outcome(resp: &Response) -> String {
    match resp.errors.first() {
        None => "ok".into(),
        Some(e) => e
            .extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_else(|| VALIDATION_FAILED.into()),
    }
}

/// The operation name for metrics: the given name, the document's single operation's name, or
/// `anonymous`.
fn operation_label(req: &Request) -> String {
    if let Some(n) = &req.operation_name {
        return n.clone();
    }
    async_graphql::parser::parse_query(&req.query)
        .ok()
        .and_then(|doc| match doc.operations {
            DocumentOperations::Single(_) => None,
            DocumentOperations::Multiple(map) if map.len() == 1 => map.keys().next().map(|k| k.to_string()),
            DocumentOperations::Multiple(_) => None,
        })
        .unwrap_or_else(|| "anonymous".into())
}

/// Runs one request through the response cache: queries are looked up and stored, anything
/// else invalidates the cache before the response is sent.
async fn execute_single(app: &AppState, headers: &HeaderMap, req: Request) -> axum::response::Response {
    let cacheable = app.cache.enabled() && is_query(&req);
    let key = cacheable.then(|| CacheKey {
        // Read before executing: see the module docs of `cache`.
        generation: app.catalog.generation(),
        document: normalize(&req.query),
        operation: req.operation_name.clone(),
        variables: serde_json::to_string(&req.variables).unwrap_or_default(),
        role: req
            .data
            .get(&std::any::TypeId::of::<Caller>())
            .and_then(|d| d.downcast_ref::<Caller>())
            .map(|c| format!("{}:{}", c.role.as_str(), c.name))
            .unwrap_or_default(),
    });
    let label = operation_label(&req);
    let graphql_response = wants_graphql_response(headers);
    if let Some(key) = &key
        && let Some(body) = app.cache.get(key).await
    {
        app.metrics.operation(&label, "ok");
        return cached(graphql_response, &body, "hit");
    }
    let mutates = !is_query(&req);
    let mut resp = app.schema.execute(req).await;
    if mutates {
        invalidate(app);
    }
    add_codes(&mut resp);
    app.metrics.operation(&label, &outcome(&resp));
    if let Some(key) = key
        && resp.errors.is_empty()
        && let Ok(body) = serde_json::to_string(&resp)
    {
        let body = Arc::new(body);
        app.cache.insert(key, body.clone()).await;
        return cached(graphql_response, &body, "miss");
    }
    respond(headers, BatchResponse::Single(resp))
}

fn cached(graphql_response: bool, body: &str, outcome: &'static str) -> axum::response::Response {
    let content_type = if graphql_response { GRAPHQL_RESPONSE_JSON } else { APPLICATION_JSON };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (HeaderName::from_static("x-cache"), HeaderValue::from_static(outcome)),
        ],
        body.to_string(),
    )
        .into_response()
}

/// After a mutation: nothing computed before it may be served after its response.
fn invalidate(app: &AppState) {
    app.catalog.bump();
    app.cache.invalidate_all();
}

fn is_query(req: &Request) -> bool {
    operation_type(req) == Some(OperationType::Query)
}

#[derive(Deserialize)]
pub struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

pub async fn get(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let params = GetParams {
        query: params.get("query").cloned(),
        operation_name: params.get("operationName").cloned(),
        variables: params.get("variables").cloned(),
        extensions: params.get("extensions").cloned(),
    };
    let Some(query) = params.query else {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql/ws")
                .title("catalog-bff")
                .finish(),
        )
        .into_response();
    };
    let mut req = Request::new(query);
    if let Some(op) = params.operation_name.filter(|s| !s.is_empty()) {
        req = req.operation_name(op);
    }
    if let Some(vars) = params.variables.filter(|s| !s.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(&vars) {
            Ok(v) => req = req.variables(Variables::from_json(v)),
            Err(e) => {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    VALIDATION_FAILED,
                    &format!("`variables` is not JSON: {e}"),
                );
            }
        }
    }
    if let Some(ext) = params.extensions.filter(|s| !s.is_empty()) {
        match serde_json::from_str::<std::collections::HashMap<String, async_graphql::Value>>(&ext) {
            Ok(map) => req.extensions = async_graphql::Extensions(map),
            Err(e) => {
                return error_body(
                    StatusCode::BAD_REQUEST,
                    VALIDATION_FAILED,
                    &format!("`extensions` is not a JSON object: {e}"),
                );
            }
        }
    }
    let caller = match security::authenticate(&app, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let req = req.data(caller);
    // Mutations over GET would let a link or an <img> change configuration.
    if is_mutation(&req) {
        let mut resp =
            error_body(StatusCode::METHOD_NOT_ALLOWED, VALIDATION_FAILED, "mutations must be sent with POST");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    execute_single(&app, &headers, req).await
}

pub(crate) fn is_mutation(req: &Request) -> bool {
    operation_type(req) == Some(OperationType::Mutation)
}

/// The type of the operation `req` would run; `None` when the document does not parse or the
/// operation cannot be chosen (execution will report that).
fn operation_type(req: &Request) -> Option<OperationType> {
    let doc = async_graphql::parser::parse_query(&req.query).ok()?;
    let op = match &doc.operations {
        DocumentOperations::Single(op) => Some(&op.node),
        DocumentOperations::Multiple(map) => match &req.operation_name {
            Some(name) => map.get(name.as_str()).map(|o| &o.node),
            None if map.len() == 1 => map.values().next().map(|o| &o.node),
            None => None,
        },
    };
    op.map(|o| o.ty)
}
