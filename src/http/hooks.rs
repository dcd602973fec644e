//! `POST /hooks/refresh/{plugin}` and `POST /hooks/refresh/{plugin}/{id}`: a signed
//! notification (a Git push) starts an INCREMENTAL refresh at once. No bearer token: the body's
//! signature against the source's `webhookSecretRef` is the credential (the core checks it,
//! `Catalog::hook_refresh`). Answers:
//! - 202 `{"jobs": [{"id", "plugin", "sourceId", "phase"}]}`: refreshes started;
//! - 401 UNAUTHENTICATED: no signature, or it does not verify (one message for every reason);
//! - 404 NOT_FOUND: no such plugin; 409 CONFLICT: every verified source is suspended/disabled;
//! - 413 over 1 MiB (refused unread when Content-Length says so), 408 a body too slow;
//! - 429 RATE_LIMITED: more than `--rate-limit` hooks a minute for one target, or 30 hooks for
//!   it in 60 s that did not verify (whatever `--rate-limit` says; ids that are not sources
//!   share one budget per plugin);
//! - 503 UNAVAILABLE: a webhookSecretRef could not be read (the sender may retry).
//!
//! Every answer but 404/408/413/429 is audited (action `hookRefresh`, actor `webhook`): at most
//! 30 unverified ones per target a minute.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use catalog_api::ErrorCode;
use catalog_core::{CatalogError, HookRequest, HookSignature, NewAudit};

use super::AppState;
use super::security::gql_error;

/// The largest hook body read (GitHub's push payloads are capped at 25 MB, but a refresh needs
/// none of it: the signature covers the body, and 1 MiB covers every real push event).
pub const MAX_HOOK_BODY: usize = 1024 * 1024;

/// Hook calls for one target that may fail to verify per [`super::security::FAILURE_WINDOW`].
pub const MAX_HOOK_FAILURES: u32 = 30;

/// Failed hook verifications per target in the current window (targets are `hook:plugin/id`;
/// the cache is bounded, its entries expire with the window).
pub struct HookFailures(moka::sync::Cache<String, std::sync::Arc<std::sync::atomic::AtomicU32>>);

impl Default for HookFailures {
    fn default() -> Self {
        HookFailures(
            moka::sync::Cache::builder().max_capacity(10_000).time_to_live(super::security::FAILURE_WINDOW).build(),
        )
    }
}

impl HookFailures {
    /// Counts an attempt for `target`; `false` (and nothing counted) when the window's budget
    /// of unverified attempts is spent.
    fn attempt(&self, target: &str) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        let n = self.0.get_with(target.to_string(), Default::default);
        let before = n.fetch_add(1, AcqRel);
        if before >= MAX_HOOK_FAILURES {
            n.fetch_sub(1, AcqRel);
            return false;
        }
        true
    }

    /// The attempt verified: it does not count against the budget.
    fn verified(&self, target: &str) {
        use std::sync::atomic::Ordering::AcqRel;
        if let Some(n) = self.0.get(target) {
            let _ = n.fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |v| v.checked_sub(1));
        }
    }
}

pub async fn plugin(State(app): State<AppState>, Path(plugin): Path<String>, req: axum::extract::Request) -> Response {
    hook(app, plugin, None, req).await
}

pub async fn source(
    State(app): State<AppState>,
    Path((plugin, id)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    hook(app, plugin, Some(id), req).await
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

async fn hook(app: AppState, plugin: String, id: Option<String>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(kind) = catalog_core::PluginKind::parse(&plugin) else {
        return gql_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such plugin; see the `plugins` query");
    };
    if id.as_deref().is_some_and(|id| id.len() > crate::graphql::errors::MAX_ID_LEN || !catalog_core::valid_id(id)) {
        return gql_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "not a source id");
    }
    // One bucket per configured target; every id that is not a source of the plugin shares one
    // (`plugin/?`), so a caller inventing ids keeps no state and meets the same limits. (What
    // follows answers such ids exactly as a source without a matching secret.)
    let known = match id.as_deref() {
        Some(id) => app.catalog.source(kind, id).await.ok().flatten().is_some(),
        None => true,
    };
    let who = match (id.as_deref(), known) {
        (Some(id), true) => format!("hook:{}/{id}", kind.name()),
        (Some(_), false) => format!("hook:{}/?", kind.name()),
        (None, _) => format!("hook:{}", kind.name()),
    };
    if let Err(wait) = app.hook_limits.check(&who) {
        let mut resp = gql_error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            &format!("too many hook calls for this target (--rate-limit); retry in {} s", wait.as_secs().max(1)),
        );
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return resp;
    }
    // A target whose hooks keep failing to verify is refused before any secret is read (a
    // secret read may be a Kubernetes API call), whatever --rate-limit says. The attempt counts
    // before the secrets are read (concurrent calls cannot pass the check together) and is
    // given back when the signature verifies.
    if !app.hook_failures.attempt(&who) {
        let mut resp = gql_error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            &format!(
                "{MAX_HOOK_FAILURES} hook calls for this target failed to verify in the last {} s; retry later with a valid signature",
                super::security::FAILURE_WINDOW.as_secs()
            ),
        );
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, super::security::FAILURE_WINDOW.as_secs().into());
        return resp;
    }
    let body = match super::body::read(body, MAX_HOOK_BODY, app.options.body_timeout).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let h = &parts.headers;
    let signature = HookSignature {
        github: header(h, "x-hub-signature-256"),
        id: header(h, "webhook-id"),
        timestamp: header(h, "webhook-timestamp"),
        signature: header(h, "webhook-signature"),
    };
    let request = HookRequest { plugin: kind, source_id: id.as_deref(), body: &body, signature };
    let outcome = app.catalog.hook_refresh(request).await;
    if outcome.is_ok() {
        app.hook_failures.verified(&who);
    }
    let code = match &outcome {
        Ok(o) if o.jobs.is_empty() => ErrorCode::Conflict.as_str(),
        Ok(_) => "OK",
        Err(e) => crate::graphql::errors::code_of_catalog(e).as_str(),
    };
    let audit = NewAudit {
        actor: "webhook",
        action: "hookRefresh",
        plugin: kind.name(),
        source_id: id.as_deref(),
        revision: None,
        outcome: code,
    };
    if let Err(e) = app.catalog.record_audit(audit).await {
        tracing::warn!(error = %e, "could not record the audit entry of a hook");
    }
    match outcome {
        Ok(o) if o.jobs.is_empty() => gql_error(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            &format!(
                "every source the signature verifies for is suspended or disabled ({}); resume it first",
                o.skipped.join(", ")
            ),
        ),
        Ok(o) => {
            let jobs: Vec<serde_json::Value> = o
                .jobs
                .iter()
                .map(|j| serde_json::json!({"id": j.id, "plugin": j.plugin, "sourceId": j.source_id, "phase": j.phase.as_str()}))
                .collect();
            let body = serde_json::json!({"jobs": jobs, "skipped": o.skipped});
            (StatusCode::ACCEPTED, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string())
                .into_response()
        }
        Err(CatalogError::Unauthenticated(m)) => gql_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, &m),
        Err(CatalogError::Unavailable { message, .. }) => {
            gql_error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, &message)
        }
        Err(CatalogError::NotFound(m)) => gql_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, &m),
        Err(e) => {
            tracing::error!(error = %e, "a verified hook could not start its refresh");
            gql_error(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, crate::graphql::errors::INTERNAL_MESSAGE)
        }
    }
}
