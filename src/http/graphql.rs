//! The GraphQL-over-HTTP endpoint.
//!
//! Written by hand rather than with async-graphql-axum's extractors, because those answer
//! `application/graphql-response+json` regardless of `Accept`, parse any Content-Type as JSON
//! and run mutations over GET. Here:
//! - POST needs `Content-Type: application/json` (else 415); the body is capped.
//! - GET runs queries only (a mutation is 405), whatever names the document: its text, an APQ
//!   hash or a trusted-document id; the document is resolved first, then the operation type is
//!   decided. Without `query` and without `extensions` it serves GraphiQL.
//! - Document size and token limits are checked before the cache lookup, so they hold on cache
//!   hits too; the serialised response is checked against `--max-response-bytes`.
//! - The response type follows `Accept`; with `application/graphql-response+json`, a request
//!   that fails to parse or validate answers 400.
//! - Every error carries `extensions.code`.
//! - Read-your-writes across replicas: a mutation's response carries the cluster generation
//!   after it (`extensions.catalogGeneration` and `X-Catalog-Generation`); a request with
//!   `X-Catalog-Min-Generation: N` first waits until this replica has applied N (bounded by
//!   `--consistency-wait`, then UNAVAILABLE). The wait comes before the cache key is read, so
//!   the key's generation is one that includes N.
//! - A repeated query is answered from the cache without GraphQL parsing: a single request
//!   with a `query` and no `extensions` is read as borrowed text ([`Plain`]), the document's
//!   facts (limits verdict, normalised text, operation types) come from the document cache,
//!   and a hit writes the stored `Bytes`. A miss goes on to the full path with the same key.

use async_graphql::{BatchRequest, BatchResponse, Request, Response, Variables};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use std::collections::HashMap;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::http::HeaderName;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;
use tracing::Instrument;

use super::documents::{DocumentFacts, Touches};
use super::{AppState, security};
use crate::auth::Caller;
use crate::cache::{CacheKey, CachedAnswer, KeyRef};
use crate::graphql::errors::{INTERNAL, VALIDATION_FAILED};
use crate::graphql::extensions::{DocumentChecked, classify_errors, response_too_large};

/// The consistency token on a mutation's response.
pub const GENERATION_HEADER: &str = "x-catalog-generation";
/// The token a client sends back to read its own writes on any replica.
pub const MIN_GENERATION_HEADER: &str = "x-catalog-min-generation";

/// A constant `HeaderName`: looking up by `&str` parses the name on every request.
const MIN_GENERATION: HeaderName = HeaderName::from_static(MIN_GENERATION_HEADER);

/// The query parameter that asks for the same as `X-Catalog-Min-Generation`, for clients that
/// cannot set headers (`EventSource`, a browser's `WebSocket`).
pub const MIN_GENERATION_PARAM: &str = "minGeneration";

/// The generation a request asks to read at: `X-Catalog-Min-Generation`, else the
/// `minGeneration` parameter of the URL's query string. `Err`: not a non-negative integer.
pub(crate) fn requested_generation(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<u64>, axum::response::Response> {
    let raw = match headers.get(MIN_GENERATION) {
        Some(v) => Some(v.to_str().unwrap_or("").trim().to_string()),
        None => query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(MIN_GENERATION_PARAM).and_then(|r| r.strip_prefix('=')))
                .map(str::to_string)
        }),
    };
    match raw {
        None => Ok(None),
        Some(r) => match r.parse::<u64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(error_body(
                StatusCode::BAD_REQUEST,
                VALIDATION_FAILED,
                "X-Catalog-Min-Generation (or minGeneration) must be a non-negative integer: send back the X-Catalog-Generation of a mutation's response",
            )),
        },
    }
}

/// Waits for `X-Catalog-Min-Generation` (or `?minGeneration=`); the error response when it is
/// invalid or this replica did not catch up in time. Without either nothing waits, and the
/// waiting future (boxed) is not part of the caller's.
async fn wait_min_generation(
    app: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), axum::response::Response> {
    if !headers.contains_key(MIN_GENERATION) && !query.is_some_and(|q| q.contains(MIN_GENERATION_PARAM)) {
        return Ok(());
    }
    Box::pin(wait_for_min_generation(app, headers, query)).await
}

async fn wait_for_min_generation(
    app: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), axum::response::Response> {
    let Some(wanted) = requested_generation(headers, query)? else { return Ok(()) };
    wait_generation(app, headers, wanted).await
}

/// Waits until this replica has applied generation `wanted`; else the UNAVAILABLE response.
pub(crate) async fn wait_generation(
    app: &AppState,
    headers: &HeaderMap,
    wanted: u64,
) -> Result<(), axum::response::Response> {
    match app.catalog.wait_for_generation(wanted).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let resp = Response::from_errors(vec![
                crate::graphql::errors::to_graphql(e).into_server_error(Default::default()),
            ]);
            Err(respond(headers, BatchResponse::Single(resp), app.options.schema.limits.max_response_bytes))
        }
    }
}

/// Puts the consistency token on a mutation's response body (`extensions.catalogGeneration`).
fn stamp_extensions(resp: &mut Response, generation: u64) {
    resp.extensions.insert("catalogGeneration".into(), async_graphql::Value::from(generation));
}

/// ... and header.
fn stamp_header(resp: &mut axum::response::Response, generation: u64) {
    if let Ok(v) = HeaderValue::from_str(&generation.to_string()) {
        resp.headers_mut().insert(HeaderName::from_static(GENERATION_HEADER), v);
    }
}

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

/// Last resort: the guardrails extension already gives every error a code and the request id
/// (on every transport); this covers errors made here, outside the schema.
fn add_codes(resp: &mut Response, request_id: Option<&str>) {
    classify_errors(resp, request_id);
}

/// A response with only errors and no data: the request itself was rejected.
fn is_request_error(resp: &Response) -> bool {
    resp.data == async_graphql::Value::Null && !resp.errors.is_empty() && resp.errors.iter().all(|e| e.path.is_empty())
}

fn respond(headers: &HeaderMap, mut batch: BatchResponse, max_response: usize) -> axum::response::Response {
    let graphql_response = wants_graphql_response(headers);
    let request_id = security::request_id(headers).map(str::to_string);
    let request_id = request_id.as_deref();
    let mut status = StatusCode::OK;
    let body = match &mut batch {
        BatchResponse::Single(r) => {
            add_codes(r, request_id);
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
            list.iter_mut().for_each(|r| add_codes(r, request_id));
            serde_json::to_string(&batch)
        }
    };
    let content_type = if graphql_response { GRAPHQL_RESPONSE_JSON } else { APPLICATION_JSON };
    match body {
        Ok(body) if body.len() > max_response => {
            let mut r = Response::from_errors(vec![response_too_large(max_response)]);
            add_codes(&mut r, request_id);
            match serde_json::to_string(&serde_json::json!({"errors": r.errors})) {
                Ok(b) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], b).into_response(),
                Err(e) => {
                    error_body(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, &format!("cannot encode response: {e}"))
                }
            }
        }
        Ok(body) => (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response(),
        Err(e) => error_body(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL, &format!("cannot encode response: {e}")),
    }
}

/// The route this handler serves without a request span up front (see `fast_path`): the span
/// it opens around what may log, and the mark on its response that names its access line.
pub(super) const GRAPHQL_POST: crate::logging::Unspanned =
    crate::logging::Unspanned { method: "POST", path: "/graphql" };

pub async fn post(State(app): State<AppState>, req: axum::extract::Request) -> axum::response::Response {
    // The headers are moved out of the request, not cloned (axum's `HeaderMap` extractor
    // copies every header).
    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    // Moved out, not copied: only its query string is read (`?minGeneration=`).
    let uri = std::mem::take(&mut parts.uri);
    let query = uri.query();
    let body = match super::body::read(body, app.options.max_body_bytes.saturating_add(1024), app.options.body_timeout)
        .await
    {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    // Only JSON: a form or text/plain POST is what a cross-site page can send without a CORS
    // preflight, so refusing it is the CSRF defence.
    if !media.eq_ignore_ascii_case(APPLICATION_JSON) && !media.eq_ignore_ascii_case("application/graphql+json") {
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
    // This request has no span yet (see `fast_path::access_log_span`): what may log runs in it.
    let span = || GRAPHQL_POST.span(security::request_id(&headers).unwrap_or("-"));
    let peer = security::peer(&parts.extensions);
    let authenticated = if app.options.auth.logs() {
        security::authenticate(&app, &headers, peer).instrument(span()).await
    } else {
        security::authenticate(&app, &headers, peer).await
    };
    let caller = match authenticated {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    // The cache-hit path: no GraphQL parsing, no copy of the body.
    let (mut prepared, mut waited) = (None, false);
    if let Some(plain) = Plain::read(&body) {
        if let Err(resp) = wait_min_generation(&app, &headers, query).instrument(span()).await {
            return resp;
        }
        waited = true;
        match lookup(&app, &headers, &caller, plain.query.as_ref(), plain.operation(), plain.variables()).await {
            Lookup::Hit(resp) => return resp,
            Lookup::Miss(p) => prepared = p,
        }
    }
    // Boxed: the full path's future (execution, batches) is large, and a hit would otherwise
    // carry (and every layer around it move) all of it.
    let span = span();
    let query = query.map(str::to_string);
    Box::pin(post_full(app, headers, query, body, caller, prepared, waited)).instrument(span).await
}

/// POST past the cache-hit path: a miss, or a request the hit path does not read.
async fn post_full(
    app: AppState,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
    caller: Caller,
    prepared: Option<Prepared>,
    waited: bool,
) -> axum::response::Response {
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
    if !waited && let Err(resp) = wait_min_generation(&app, &headers, query.as_deref()).await {
        return resp;
    }
    let request_id = security::request_id(&headers).map(str::to_string);
    match batch {
        BatchRequest::Single(req) => {
            let req = crate::graphql::request_data(req.data(caller), request_id.as_deref());
            execute_single(&app, &headers, req, prepared).await
        }
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
            // Resolve persisted documents first, so a hash-only mutation in a batch still
            // invalidates the cache; a document that does not resolve fails in the schema.
            let mut list = list;
            for r in &mut list {
                let _ = app.guardrails.resolve_document(r);
            }
            let facts: Vec<_> = list.iter().map(|r| app.documents.facts(&app.guardrails, &r.query).ok()).collect();
            let mutates = list.iter().zip(&facts).any(|(r, f)| may_change(f.as_deref(), r));
            let names: Vec<String> =
                list.iter().zip(&facts).map(|(r, f)| operation_label(&app, r, f.as_deref())).collect();
            let list = list
                .into_iter()
                .map(|r| crate::graphql::request_data(r.data(caller.clone()), request_id.as_deref()))
                .collect();
            let max_response = app.options.schema.limits.max_response_bytes;
            let mut resp = BatchResponse::Batch(execute_batch(&app, list, max_response).await);
            let token = if mutates {
                invalidate(&app);
                let token = app.catalog.consistency_token().await;
                if let BatchResponse::Batch(rs) = &mut resp {
                    rs.iter_mut().for_each(|r| stamp_extensions(r, token));
                }
                Some(token)
            } else {
                None
            };
            if let BatchResponse::Batch(rs) = &resp {
                for (name, r) in names.iter().zip(rs) {
                    app.metrics.operation(name, outcome(r));
                }
            }
            let mut out = respond(&headers, resp, app.options.schema.limits.max_response_bytes);
            if let Some(token) = token {
                stamp_header(&mut out, token);
            }
            out
        }
    }
}

/// A batch's operations, one after the other (async-graphql's `execute_batch` runs them all at
/// once), drawing on one response budget: a large field charges it as it resolves, and each
/// finished answer is counted whole (its JSON length). Once the budget is spent, the operation
/// that spent it answers RESPONSE_TOO_LARGE and the rest are not run. So a batch holds at most
/// about `--max-response-bytes` of answers, however many operations it has, and runs one
/// operation's work at a time.
async fn execute_batch(app: &AppState, list: Vec<Request>, max_response: usize) -> Vec<Response> {
    use crate::graphql::extensions::ResponseBudget;
    let budget = ResponseBudget::new(max_response);
    let mut out = Vec::with_capacity(list.len());
    for req in list {
        if budget.is_spent() {
            out.push(Response::from_errors(vec![response_too_large(max_response)]));
            continue;
        }
        // Whatever this operation charges while it runs is part of its JSON, counted after.
        let before = budget.used();
        let resp = app.schema.execute(req.data(budget.clone())).await;
        let bytes = json_len(&resp);
        if budget.settle(before, bytes) {
            out.push(resp);
        } else {
            drop(resp);
            out.push(Response::from_errors(vec![response_too_large(max_response)]));
        }
    }
    out
}

/// The length of a response's JSON, counted without building it.
fn json_len(resp: &Response) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, resp);
    n.0
}

/// `ok`, or the first error's code (VALIDATION_FAILED when it has none: async-graphql's own
/// errors before `classify_errors` names them).
fn outcome(resp: &Response) -> &'static str {
    match resp.errors.first() {
        None => "ok",
        Some(e) if e.extensions.as_ref().is_none_or(|x| x.get("code").is_none()) => VALIDATION_FAILED,
        Some(e) => {
            crate::graphql::errors::code_of(e.extensions.as_ref()).map_or(INTERNAL, catalog_api::ErrorCode::as_str)
        }
    }
}

/// The operation label for metrics: the given name or the document's single operation's name,
/// bounded by [`super::metrics::HttpMetrics::operation_label`] (`other` for names of one-off
/// documents and beyond the cap), or `anonymous`. Without facts (the document failed its
/// limits) only a given name counts.
fn operation_label(app: &AppState, req: &Request, facts: Option<&DocumentFacts>) -> String {
    let name = req.operation_name.as_deref().or_else(|| facts.and_then(DocumentFacts::single_name));
    match facts {
        Some(f) => {
            let known =
                app.guardrails.is_trusted_normalized(&f.normalized) || app.guardrails.is_registered_digest(&f.digest);
            app.metrics.operation_label(name, &f.normalized_digest, known)
        }
        None => {
            let known = app.guardrails.is_trusted(&req.query) || app.guardrails.is_registered(&req.query);
            let normalized = crate::cache::normalize(&req.query);
            app.metrics.operation_label(name, &crate::auth::sha256_hex(&normalized), known)
        }
    }
}

/// A single request read as the client's text, without GraphQL parsing: what the cache-hit
/// path needs. Only requests with a `query` and no `extensions` (persisted-query hashes and
/// trusted-document ids need resolving) take this path; anything else, including a body this
/// does not read, goes the full way and gets its errors there.
#[derive(Deserialize)]
struct Plain<'a> {
    #[serde(borrow)]
    query: Cow<'a, str>,
    #[serde(borrow, default, rename = "operationName")]
    operation_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    variables: Option<&'a RawValue>,
    #[serde(borrow, default)]
    extensions: Option<&'a RawValue>,
}

impl<'a> Plain<'a> {
    fn read(body: &'a [u8]) -> Option<Plain<'a>> {
        let plain: Plain = serde_json::from_slice(body).ok()?;
        let no_extensions = plain.extensions.is_none_or(|e| matches!(e.get().trim(), "{}" | "null"));
        (no_extensions && !plain.query.is_empty()).then_some(plain)
    }

    fn operation(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }

    fn variables(&self) -> &str {
        self.variables.map(RawValue::get).filter(|v| *v != "null").unwrap_or("")
    }
}

/// A cache lookup's outcome: the answer, or what the full path needs to store one.
enum Lookup {
    Hit(axum::response::Response),
    Miss(Option<Prepared>),
}

/// A request's document facts and cache key, worked out before it runs.
struct Prepared {
    facts: Arc<DocumentFacts>,
    key: Option<CacheKey>,
    /// The key was already looked up (and missed): do not look again, or count a second miss.
    looked_up: bool,
}

/// The cache key of a query, borrowed from the request (nothing is allocated); `None` for
/// anything else or with the cache off. The generation is read here, before the query executes
/// (see the module docs of `cache`).
fn cache_key<'a>(
    app: &AppState,
    facts: &'a DocumentFacts,
    operation: Option<&'a str>,
    variables: &'a str,
    caller: &'a Caller,
) -> Option<KeyRef<'a>> {
    (app.cache.enabled() && facts.operation_type(operation) == Some(OperationType::Query)).then(|| KeyRef {
        generation: read_generation(app, facts.touches(operation), variables),
        document: &facts.normalized,
        document_hash: facts.document_hash,
        operation,
        variables,
        role: caller.role,
        caller: &caller.name,
    })
}

/// The generation a query's answer is keyed by: of the plugins it reads, when it reads only
/// some (a change to another plugin then keeps it cached), else of everything. `variables` is
/// the request's variables as JSON text, read only when a plugin is named by a variable.
fn read_generation(app: &AppState, touches: &Touches, variables: &str) -> u64 {
    let values = touches
        .uses_variables()
        .then(|| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(variables).ok())
        .flatten();
    let plugins = touches.plugins(|v| values.as_ref()?.get(v)?.as_str().map(str::to_string));
    match plugins {
        Some(plugins) => app.catalog.plugins_generation(&plugins),
        None => app.catalog.generation(),
    }
}

/// Looks a plain request up in the cache. A document that fails its limits is not looked up:
/// the full path reports the error.
async fn lookup(
    app: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    query: &str,
    operation: Option<&str>,
    variables: &str,
) -> Lookup {
    let Ok(facts) = app.documents.facts(&app.guardrails, query) else {
        return Lookup::Miss(None);
    };
    let key = cache_key(app, &facts, operation, variables, caller);
    if let Some(key) = &key
        && let Some(answer) = app.cache.get(key).await
    {
        app.metrics.operation(&answer.label, "ok");
        return Lookup::Hit(cached(wants_graphql_response(headers), answer.body, "hit"));
    }
    // The owned key only for a miss, which stores under it.
    let key = key.map(|k| k.to_key(&facts.normalized));
    Lookup::Miss(Some(Prepared { facts, key, looked_up: true }))
}

/// Runs one request through the response cache: queries are looked up and stored, anything
/// else invalidates the cache before the response is sent. The persisted document is resolved
/// and the document limits are checked first (once: the extension skips them afterwards), so
/// no limit is skipped by a cache hit.
async fn execute_single(
    app: &AppState,
    headers: &HeaderMap,
    mut req: Request,
    prepared: Option<Prepared>,
) -> axum::response::Response {
    let max_response = app.options.schema.limits.max_response_bytes;
    let prepared = match prepared {
        Some(p) => Ok(p),
        None => app
            .guardrails
            .resolve_document(&mut req)
            .and_then(|()| app.documents.facts(&app.guardrails, &req.query))
            .map(|facts| Prepared { facts, key: None, looked_up: false }),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let label = operation_label(app, &req, None);
            let resp = Response::from_errors(vec![e]);
            app.metrics.operation(&label, outcome(&resp));
            return respond(headers, BatchResponse::Single(resp), max_response);
        }
    };
    let len = req.query.len();
    let req = req.data(DocumentChecked(len));
    execute_checked(app, headers, req, prepared).await
}

async fn execute_checked(
    app: &AppState,
    headers: &HeaderMap,
    req: Request,
    prepared: Prepared,
) -> axum::response::Response {
    let max_response = app.options.schema.limits.max_response_bytes;
    let Prepared { facts, key, looked_up } = prepared;
    let key = key.or_else(|| {
        let caller = req.data.get(&std::any::TypeId::of::<Caller>()).and_then(|d| d.downcast_ref::<Caller>())?;
        let variables = serde_json::to_string(&req.variables).unwrap_or_default();
        cache_key(app, &facts, req.operation_name.as_deref(), &variables, caller).map(|k| k.to_key(&facts.normalized))
    });
    let label = operation_label(app, &req, Some(&facts));
    let graphql_response = wants_graphql_response(headers);
    if !looked_up
        && let Some(key) = &key
        && let Some(answer) = app.cache.get(&key.view()).await
    {
        app.metrics.operation(&answer.label, "ok");
        return cached(graphql_response, answer.body, "hit");
    }
    let mutates = may_change(Some(&facts), &req);
    let hit_label: Arc<str> = match req.operation_name.as_deref().or_else(|| facts.single_name()) {
        Some(name) => app.metrics.seen_label(name).into(),
        None => "anonymous".into(),
    };
    let changes = mutates.then(|| {
        facts.touches(req.operation_name.as_deref()).plugins(|v| match req.variables.get(v) {
            Some(async_graphql::Value::String(s)) => Some(s.clone()),
            _ => None,
        })
    });
    let mut resp = app.schema.execute(req).await;
    let token = if let Some(plugins) = changes {
        match plugins {
            Some(plugins) => invalidate_plugins(app, &plugins),
            None => invalidate(app),
        }
        let token = app.catalog.consistency_token().await;
        stamp_extensions(&mut resp, token);
        Some(token)
    } else {
        None
    };
    add_codes(&mut resp, security::request_id(headers));
    app.metrics.operation(&label, outcome(&resp));
    if let Some(key) = key
        && resp.errors.is_empty()
        && let Ok(body) = serde_json::to_vec(&resp)
        && body.len() <= max_response
    {
        let body = Bytes::from(body);
        // Later hits are of a document seen before: they count under its name.
        app.cache.insert(key, CachedAnswer { body: body.clone(), label: hit_label }).await;
        return cached(graphql_response, body, "miss");
    }
    let mut out = respond(headers, BatchResponse::Single(resp), max_response);
    if let Some(token) = token {
        stamp_header(&mut out, token);
    }
    out
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn cached(graphql_response: bool, body: Bytes, outcome: &'static str) -> axum::response::Response {
    let content_type = if graphql_response { GRAPHQL_RESPONSE_JSON } else { APPLICATION_JSON };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type)), (X_CACHE, HeaderValue::from_static(outcome))],
        body,
    )
        .into_response()
}

/// After a mutation: nothing computed before it may be served after its response.
fn invalidate(app: &AppState) {
    app.catalog.bump();
    app.cache.invalidate_all();
}

/// After a mutation that changes only these plugins: answers that read them (or everything)
/// are keyed by a generation it bumps, so they are never served again; the other plugins'
/// answers stay cached. Nothing is freed here: the stale entries age out by TTL and size.
fn invalidate_plugins(app: &AppState, plugins: &[catalog_core::PluginKind]) {
    for p in plugins {
        app.catalog.bump_plugin(*p);
    }
}

/// Whether `req` may change anything: only a mutation can. A document that failed its limits
/// or does not parse, or whose operation cannot be chosen, is refused before anything runs,
/// so it must not empty the response cache either (else one malformed request from anyone
/// would make every cached read a miss).
fn may_change(facts: Option<&DocumentFacts>, req: &Request) -> bool {
    facts.and_then(|f| f.operation_type(req.operation_name.as_deref())) == Some(OperationType::Mutation)
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
    peer: Option<axum::Extension<super::connections::PeerAddr>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    Query(params): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let params = GetParams {
        query: params.get("query").cloned(),
        operation_name: params.get("operationName").cloned(),
        variables: params.get("variables").cloned(),
        extensions: params.get("extensions").cloned(),
    };
    let query = params.query.unwrap_or_default();
    let extensions = params.extensions.filter(|s| !s.is_empty());
    // GraphiQL only for a bare GET: a hash-only request (Apollo Client's GET mode) has no
    // `query` but has `extensions`, and wants its result.
    if query.is_empty() && extensions.is_none() {
        return super::pages::graphiql(&app);
    }
    let caller = match security::authenticate(&app, &headers, peer.map(|p| p.0.0)).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let operation = params.operation_name.filter(|s| !s.is_empty());
    // The cache-hit path, as for POST: a plain query by text.
    let (mut prepared, mut waited) = (None, false);
    if extensions.is_none() {
        if let Ok(facts) = app.documents.facts(&app.guardrails, &query)
            && facts.operation_type(operation.as_deref()) == Some(OperationType::Mutation)
        {
            return mutation_over_get();
        }
        if let Err(resp) = wait_min_generation(&app, &headers, raw.as_deref()).await {
            return resp;
        }
        waited = true;
        let variables = params.variables.as_deref().map(str::trim).filter(|v| !v.is_empty() && *v != "null");
        match lookup(&app, &headers, &caller, &query, operation.as_deref(), variables.unwrap_or("")).await {
            Lookup::Hit(resp) => return resp,
            Lookup::Miss(p) => prepared = p,
        }
    }
    let mut req = match get_request(query, operation, params.variables, extensions) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // The document first (APQ hash or trusted-document id), then the decision.
    if let Err(e) = app.guardrails.resolve_document(&mut req) {
        let resp = Response::from_errors(vec![e]);
        return respond(&headers, BatchResponse::Single(resp), app.options.schema.limits.max_response_bytes);
    }
    // Mutations over GET would let a link or an <img> change configuration.
    if is_mutation(&req) {
        return mutation_over_get();
    }
    let req = crate::graphql::request_data(req.data(caller), security::request_id(&headers));
    if !waited && let Err(resp) = wait_min_generation(&app, &headers, raw.as_deref()).await {
        return resp;
    }
    execute_single(&app, &headers, req, prepared).await
}

/// 405 for a mutation sent with GET.
pub(crate) fn mutation_over_get() -> axum::response::Response {
    let mut resp = error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        VALIDATION_FAILED,
        "mutations must be sent with POST (GET runs queries only, whether the document is sent as text, by APQ hash or by trusted-document id)",
    );
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// A GraphQL request from GET parameters (shared by `/graphql` and `/graphql/stream`).
pub(crate) fn get_request(
    query: String,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
) -> Result<Request, axum::response::Response> {
    let mut req = Request::new(query);
    if let Some(op) = operation_name.filter(|s| !s.is_empty()) {
        req = req.operation_name(op);
    }
    if let Some(vars) = variables.filter(|s| !s.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(&vars) {
            Ok(v) => req = req.variables(Variables::from_json(v)),
            Err(e) => {
                return Err(error_body(
                    StatusCode::BAD_REQUEST,
                    VALIDATION_FAILED,
                    &format!("`variables` is not JSON: {e}"),
                ));
            }
        }
    }
    if let Some(ext) = extensions.filter(|s| !s.is_empty()) {
        match serde_json::from_str::<std::collections::HashMap<String, async_graphql::Value>>(&ext) {
            Ok(map) => req.extensions = async_graphql::Extensions(map),
            Err(e) => {
                return Err(error_body(
                    StatusCode::BAD_REQUEST,
                    VALIDATION_FAILED,
                    &format!("`extensions` is not a JSON object: {e}"),
                ));
            }
        }
    }
    Ok(req)
}

pub(crate) fn is_mutation(req: &Request) -> bool {
    operation_type(req) == Some(OperationType::Mutation)
}

/// The type of the operation `req` would run; `None` when the document does not parse or the
/// operation cannot be chosen (execution will report that).
fn operation_type(req: &Request) -> Option<OperationType> {
    let doc = crate::graphql::extensions::parse_bounded(&req.query)?;
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
