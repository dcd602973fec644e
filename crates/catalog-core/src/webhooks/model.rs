//! Receivers and deliveries as the core hands them out, the checks on a receiver's settings,
//! and the body of an event.

use chrono::{DateTime, TimeZone, Utc};
use std::time::Duration;

use crate::db::webhooks::{DeliveryRow, WebhookRow};
use crate::diagnostics::{Diagnostic, Layer};
use crate::events::{CatalogEvent, EventKind};
use crate::fetch::FetchConfig;
use crate::outbound::check_source_url;
use crate::plugins::PluginKind;

/// Most receivers one server keeps (each event becomes one row per matching receiver).
pub const MAX_WEBHOOKS: u64 = 100;
/// Largest page of `Webhook.deliveries`.
pub const MAX_DELIVERIES_PAGE: u64 = 100;
/// Longest receiver URL accepted.
const MAX_URL_LEN: usize = 2048;

/// How deliveries are sent (flags `--webhook-*`).
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Retries stop this long after the event (`--webhook-retry-for`); the delivery is then
    /// FAILED.
    pub retry_for: Duration,
    /// One attempt (connect, headers, the first bytes of the answer) ends within this
    /// (`--webhook-timeout`).
    pub timeout: Duration,
    /// Deliveries in flight at once on this replica (`--webhook-concurrency`).
    pub concurrency: usize,
    /// Events waiting to be queued in memory while the database is unreachable; more are
    /// counted as lost and logged.
    pub buffer: usize,
    /// How often a replica looks for due deliveries when nothing woke it.
    pub poll: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            retry_for: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            buffer: 10_000,
            poll: Duration::from_secs(1),
        }
    }
}

impl WebhookOptions {
    /// A claim's lease: long enough for an attempt and its record, so no other replica takes
    /// a delivery that is still being sent.
    pub(crate) fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// A receiver's settings, as an operator sends them.
#[derive(Clone, Debug)]
pub struct WebhookSpec {
    pub url: String,
    /// Event kinds as their names (`APPLIED`, ...): checked here, so an unknown one is named.
    pub events: Vec<String>,
    /// `None`: every plugin.
    pub plugins: Option<Vec<String>>,
    pub secret_name: String,
    pub secret_key: String,
}

/// A registered receiver (never its secret's value).
#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<EventKind>,
    pub plugins: Option<Vec<String>>,
    pub secret_name: String,
    pub secret_key: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Queued, being sent, or waiting for its next attempt.
    Pending,
    /// A 2xx answer was recorded.
    Delivered,
    /// Given up after `--webhook-retry-for`.
    Failed,
}

impl DeliveryState {
    fn parse(s: &str) -> DeliveryState {
        match s {
            "DELIVERED" => DeliveryState::Delivered,
            "FAILED" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// One event to one receiver, with its last attempt.
#[derive(Clone, Debug)]
pub struct WebhookDelivery {
    pub id: i64,
    pub webhook_id: String,
    /// The `webhook-id` header (the same on every attempt and on a redelivery).
    pub message_id: String,
    pub event_kind: Option<EventKind>,
    pub plugin: String,
    pub source_id: Option<String>,
    pub state: DeliveryState,
    pub attempts: i32,
    pub status_code: Option<i32>,
    pub duration_ms: Option<i64>,
    pub last_error: Option<String>,
    pub response_excerpt: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The delivery this one re-sends (`redeliverWebhook`).
    pub redelivery_of: Option<i64>,
    /// The body as sent (signed).
    pub payload: String,
}

/// A page of deliveries, newest first.
#[derive(Clone, Debug)]
pub struct DeliveryPage {
    pub deliveries: Vec<WebhookDelivery>,
    pub has_more: bool,
    pub total: i64,
}

pub(crate) fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Webhook {
    pub(crate) fn from_row(r: WebhookRow) -> Webhook {
        Webhook {
            events: r.events.split(',').filter_map(EventKind::parse).collect(),
            plugins: r.plugins.map(|p| p.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()),
            id: r.id,
            url: r.url,
            secret_name: r.secret_name,
            secret_key: r.secret_key,
            created_by: r.created_by,
            created_at: at(r.created_ms),
            updated_at: at(r.updated_ms),
        }
    }

    /// Whether this receiver asked for `ev`.
    pub(crate) fn wants(&self, ev: &CatalogEvent) -> bool {
        self.events.contains(&ev.kind) && self.plugins.as_ref().is_none_or(|p| p.contains(&ev.plugin))
    }
}

impl WebhookDelivery {
    pub(crate) fn from_row(r: DeliveryRow) -> WebhookDelivery {
        let state = DeliveryState::parse(&r.state);
        WebhookDelivery {
            id: r.id,
            webhook_id: r.webhook_id,
            message_id: r.msg_id,
            event_kind: EventKind::parse(&r.event_type),
            plugin: r.plugin,
            source_id: r.source_id,
            state,
            attempts: r.attempts,
            status_code: r.last_status,
            duration_ms: r.last_duration_ms,
            last_error: r.last_error,
            response_excerpt: r.response_excerpt,
            created_at: at(r.created_ms),
            last_attempt_at: r.last_attempt_ms.map(at),
            next_attempt_at: (state == DeliveryState::Pending).then(|| at(r.next_attempt_ms)),
            delivered_at: r.delivered_ms.map(at),
            redelivery_of: r.redelivery_of,
            payload: r.payload,
        }
    }
}

/// Checks a receiver's settings: the URL through the outbound guard (literal addresses and
/// `localhost`; host names are checked after DNS when sending), the event kinds, the plugins,
/// and the secret reference's shape. Every problem is named by its input field. The secret
/// itself is read by the caller (it needs the secrets source).
pub(crate) fn validate(spec: &WebhookSpec, fetch: &FetchConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let err = |field: &str, msg: String, hint: &str| Diagnostic::error(Layer::Semantics, msg).field(field).hint(hint);
    let url = spec.url.trim();
    if url.len() > MAX_URL_LEN {
        out.push(err(
            "input.url",
            format!("the URL is {} characters long; at most {MAX_URL_LEN}", url.len()),
            "use a shorter URL",
        ));
    } else if !(url.starts_with("http://") || url.starts_with("https://")) {
        out.push(err(
            "input.url",
            format!("`{}` is not an http(s) URL", url.escape_debug()),
            "write the receiver's address as https://HOST/PATH",
        ));
    } else if let Err(msg) = check_source_url(&fetch.url_allow, url) {
        out.push(err(
            "input.url",
            format!("the receiver URL is refused: {msg}"),
            "use a public address, or list the host in --url-allow if this receiver is meant to be reached",
        ));
    }
    if spec.events.is_empty() {
        out.push(err(
            "input.events",
            "no event kinds: a receiver must ask for at least one".into(),
            "list the kinds to send, e.g. [APPLIED, REFRESH_FINISHED]",
        ));
    }
    for (i, e) in spec.events.iter().enumerate() {
        let field = format!("input.events[{i}]");
        match EventKind::parse(e) {
            None => out.push(err(&field, format!("`{}` is not an event kind", e.escape_debug()), &kinds_hint())),
            Some(_) if spec.events[..i].contains(e) => {
                out.push(err(&field, format!("`{e}` is listed twice"), "list each kind once"))
            }
            Some(_) => {}
        }
    }
    if let Some(plugins) = &spec.plugins {
        if plugins.is_empty() {
            out.push(err(
                "input.plugins",
                "an empty plugin list would match nothing".into(),
                "leave `plugins` out for every plugin, or name some",
            ));
        }
        let known: Vec<&str> = PluginKind::ALL.iter().map(|p| p.name()).collect();
        for (i, p) in plugins.iter().enumerate() {
            let field = format!("input.plugins[{i}]");
            if PluginKind::parse(p).is_none() {
                out.push(err(
                    &field,
                    format!("plugin `{}` does not exist", p.escape_debug()),
                    &format!("use one of: {}", known.join(", ")),
                ));
            } else if plugins[..i].contains(p) {
                out.push(err(&field, format!("`{p}` is listed twice"), "list each plugin once"));
            }
        }
    }
    if !crate::sources::valid_secret_name(&spec.secret_name) {
        out.push(err(
            "input.secretRef.name",
            format!("`{}` is not a Kubernetes Secret name", spec.secret_name.escape_debug()),
            "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters",
        ));
    }
    if !crate::sources::valid_secret_key(&spec.secret_key) {
        out.push(err(
            "input.secretRef.key",
            format!("`{}` is not a Secret data key", spec.secret_key.escape_debug()),
            "letters, digits, '-', '_' and '.', at most 253 characters, not `.` or `..`",
        ));
    }
    out
}

fn kinds_hint() -> String {
    let all = [
        EventKind::Applied,
        EventKind::Refreshed,
        EventKind::RolledBack,
        EventKind::RefreshStarted,
        EventKind::RefreshFinished,
        EventKind::ConfigChangedExternally,
    ];
    let names: Vec<&str> = all.iter().map(|k| k.as_str()).collect();
    format!("use one of: {}", names.join(", "))
}

/// What the body says about an event beyond the event itself (a job's state, when known).
#[derive(Clone, Debug, Default)]
pub(crate) struct EventFacts {
    pub phase: Option<String>,
    pub counts: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// The event's idempotency key: the same every time this event is enqueued, different for
/// any other event. Events that name a revision or a job are keyed by them; the rest
/// (a source removed outside the API) get a fresh id, taken once per event.
pub(crate) fn event_key(ev: &CatalogEvent) -> String {
    let source = ev.source_id.as_deref().unwrap_or("");
    match (&ev.job_id, ev.revision) {
        (Some(job), _) => format!("{}:{job}:{}/{source}", ev.kind.as_str(), ev.plugin),
        (None, Some(rev)) => format!("{}:{}/{source}:{rev}", ev.kind.as_str(), ev.plugin),
        (None, None) => format!("{}:{}/{source}:{}", ev.kind.as_str(), ev.plugin, uuid::Uuid::new_v4().simple()),
    }
}

/// The Standard Webhooks body: `{type, timestamp, data}`.
pub(crate) fn payload(ev: &CatalogEvent, facts: &EventFacts) -> String {
    let global_id = ev.source_id.as_ref().map(|s| format!("{}/{s}", ev.plugin));
    serde_json::json!({
        "type": format!("catalog.{}", ev.kind.as_str().to_ascii_lowercase()),
        "timestamp": ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "kind": ev.kind.as_str(),
            "plugin": ev.plugin,
            "sourceId": ev.source_id,
            "globalId": global_id,
            "revision": ev.revision,
            "jobId": ev.job_id,
            "phase": facts.phase,
            "counts": facts.counts,
            "error": facts.error,
        }
    })
    .to_string()
}
