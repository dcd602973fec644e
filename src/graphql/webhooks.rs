//! Outgoing webhooks in the API: `Query.webhooks`, `Webhook.deliveries`, and the operator
//! mutations `createWebhook`, `updateWebhook`, `deleteWebhook`, `redeliverWebhook`. Mapping
//! only: the checks, the queue and the delivery loop are the core's (`Catalog::*_webhook`).
//! Merged into the root types (`graphql::QueryRoot`, `graphql::MutationRoot`).

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::audit::{self, AuditAction, Target};
use super::errors::{invalid_input, not_found, to_graphql};
use super::guards::{OperatorAction, RequireRole};
use super::subscription::CatalogEventKind;
use super::{actor, catalog};
use crate::auth::Role;
use catalog_core::{DeliveryState, MAX_DELIVERIES_PAGE, WebhookSpec};

/// Longest webhook or delivery id accepted (ours are UUIDs and numbers).
const MAX_ID_LEN: usize = 128;
/// The audit trail's `plugin` for webhook changes (they are not about one plugin).
const AUDIT_PLUGIN: &str = "webhooks";

/// Which Secret holds a receiver's signing secret (`whsec_<base64>`), read as url sources read
/// `authSecretRef`: `--secrets-dir/<name>/<key>` (or the env var
/// `CATALOG_BFF_SECRET_<NAME>_<KEY>`), or with `--store kubernetes` the Secret in the server's
/// namespace, which must carry the label `catalog-bff.io/source-credential=true`.
#[derive(InputObject)]
pub struct WebhookSecretRefInput {
    /// The Secret's name.
    pub name: String,
    /// The data key within the Secret.
    pub key: String,
}

/// A receiver's settings. Every field is checked before anything is stored: a refused URL, an
/// empty or repeated event list, an unknown plugin, or a secret that cannot be read or is not a
/// `whsec_` key is VALIDATION_FAILED naming the field (`input.url`, `input.events[1]`,
/// `input.plugins[0]`, `input.secretRef`).
#[derive(InputObject)]
pub struct WebhookInput {
    /// Where to POST events: `https://HOST/PATH`. The same outbound rules as url sources: no
    /// loopback, private, link-local... addresses unless `--url-allow` lists them (checked here
    /// for literal addresses, and after DNS and on every redirect when sending).
    pub url: String,
    /// The event kinds to send (at least one, each once).
    pub events: Vec<CatalogEventKind>,
    /// Only events of these plugins; left out, every plugin.
    pub plugins: Option<Vec<String>>,
    /// The signing secret.
    pub secret_ref: WebhookSecretRefInput,
}

impl WebhookInput {
    fn into_spec(self) -> Result<WebhookSpec> {
        for (field, v) in
            [("input.secretRef.name", &self.secret_ref.name), ("input.secretRef.key", &self.secret_ref.key)]
        {
            if v.len() > 253 {
                return Err(invalid_input(
                    format!("`{field}` is {} characters long; at most 253", v.len()),
                    field,
                    "use the Secret's name and data key",
                ));
            }
        }
        if self.url.len() > 4096 {
            return Err(invalid_input("`input.url` is longer than 4096 characters", "input.url", "use a shorter URL"));
        }
        Ok(WebhookSpec {
            url: self.url,
            events: self.events.into_iter().map(|k| catalog_core::EventKind::from(k).as_str().to_string()).collect(),
            plugins: self.plugins,
            secret_name: self.secret_ref.name,
            secret_key: self.secret_ref.key,
        })
    }
}

/// Where a receiver's signing secret is (never its value).
#[derive(SimpleObject)]
pub struct WebhookSecretRef {
    /// The Secret's name.
    pub name: String,
    /// The data key within the Secret.
    pub key: String,
}

/// A registered receiver of catalog events.
pub struct Webhook(catalog_core::Webhook);

/// The state of one delivery.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum WebhookDeliveryState {
    /// Queued, being sent, or waiting for its next attempt (`nextAttemptAt`).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up after `--webhook-retry-for`.
    Failed,
}

impl From<DeliveryState> for WebhookDeliveryState {
    fn from(s: DeliveryState) -> Self {
        match s {
            DeliveryState::Pending => WebhookDeliveryState::Pending,
            DeliveryState::Delivered => WebhookDeliveryState::Delivered,
            DeliveryState::Failed => WebhookDeliveryState::Failed,
        }
    }
}

/// One event sent (or to be sent) to one receiver, with its last attempt.
pub struct WebhookDelivery(catalog_core::WebhookDelivery);

/// One event sent (or to be sent) to one receiver, with its last attempt.
#[Object]
impl WebhookDelivery {
    /// The delivery's id (for `redeliverWebhook`).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The receiver.
    async fn webhook_id(&self) -> ID {
        ID(self.0.webhook_id.clone())
    }
    /// The `webhook-id` header: the same on every attempt and on a redelivery, so a receiver
    /// can drop duplicates.
    async fn message_id(&self) -> &str {
        &self.0.message_id
    }
    /// The event's kind (null for a kind this server version does not know).
    async fn event_kind(&self) -> Option<CatalogEventKind> {
        self.0.event_kind.map(Into::into)
    }
    /// The plugin of the event.
    async fn plugin(&self) -> &str {
        &self.0.plugin
    }
    /// The source of the event, when it names one.
    async fn source_id(&self) -> Option<ID> {
        self.0.source_id.clone().map(ID)
    }
    /// PENDING, DELIVERED or FAILED.
    async fn state(&self) -> WebhookDeliveryState {
        self.0.state.into()
    }
    /// Attempts so far.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// The HTTP status of the last attempt (null: no answer).
    async fn status_code(&self) -> Option<i32> {
        self.0.status_code
    }
    /// How long the last attempt took.
    async fn duration_ms(&self) -> Option<i64> {
        self.0.duration_ms
    }
    /// Why the last attempt failed.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// The start of the receiver's last answer (at most 512 bytes).
    async fn response_excerpt(&self) -> Option<&str> {
        self.0.response_excerpt.as_deref()
    }
    /// When the event was queued for this receiver.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the last attempt started.
    async fn last_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_attempt_at
    }
    /// When the next attempt is due (PENDING only).
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }
    /// When the receiver answered 2xx.
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
    /// The delivery this one sends again (`redeliverWebhook`).
    async fn redelivery_of(&self) -> Option<ID> {
        self.0.redelivery_of.map(|id| ID(id.to_string()))
    }
    /// The body as signed and sent: `{type, timestamp, data}`.
    async fn payload(&self) -> &str {
        &self.0.payload
    }
}

/// A page of deliveries, newest first.
#[derive(SimpleObject)]
pub struct WebhookDeliveryPage {
    /// The deliveries of this page, newest first.
    pub nodes: Vec<WebhookDelivery>,
    /// Pass it as `after` for the next page; null on the last page.
    pub end_cursor: Option<String>,
    /// Whether older deliveries follow.
    pub has_next_page: bool,
    /// Deliveries of this receiver in all.
    pub total_count: i64,
}

fn cursor(id: i64) -> String {
    hex::encode(format!("d:{id}"))
}

fn parse_cursor(text: &str) -> Result<i64> {
    let refused = || {
        invalid_input(
            "`after` is not a cursor of this connection",
            "after",
            "pass `endCursor` from a previous page of the same receiver's deliveries",
        )
    };
    if text.len() > 64 {
        return Err(refused());
    }
    let raw = hex::decode(text).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(refused)?;
    raw.strip_prefix("d:").and_then(|n| n.parse().ok()).ok_or_else(refused)
}

/// A registered receiver of catalog events: where they are POSTed, which ones, and where the
/// signing secret is.
#[Object]
impl Webhook {
    /// The receiver's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Where events are POSTed.
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// The event kinds it receives.
    async fn events(&self) -> Vec<CatalogEventKind> {
        self.0.events.iter().map(|k| (*k).into()).collect()
    }
    /// Only events of these plugins; null: every plugin.
    async fn plugins(&self) -> Option<&[String]> {
        self.0.plugins.as_deref()
    }
    /// Where its signing secret is (never the value).
    async fn secret_ref(&self) -> WebhookSecretRef {
        WebhookSecretRef { name: self.0.secret_name.clone(), key: self.0.secret_key.clone() }
    }
    /// Who registered it.
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    /// When it was registered.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When its settings last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Its deliveries, newest first, a page at a time.
    #[graphql(complexity = "usize::try_from(first.clamp(1, 100)).unwrap_or(100) * child_complexity")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "Page size, 1 to 100; more is VALIDATION_FAILED naming the cap.")] first: i32,
        #[graphql(desc = "`endCursor` of the previous page; left out, the newest deliveries.")] after: Option<String>,
    ) -> Result<WebhookDeliveryPage> {
        let cap = i32::try_from(MAX_DELIVERIES_PAGE).unwrap_or(100);
        if !(1..=cap).contains(&first) {
            return Err(invalid_input(
                format!("`first` must be between 1 and {cap}; got {first}"),
                "first",
                "ask for at most 100 deliveries and page with `after: endCursor`",
            ));
        }
        let after = after.as_deref().map(parse_cursor).transpose()?;
        let first = u64::try_from(first).unwrap_or(20);
        let page = Box::pin(catalog(ctx)?.webhook_deliveries(&self.0.id, after, first)).await.map_err(to_graphql)?;
        let end_cursor = if page.has_more { page.deliveries.last().map(|d| cursor(d.id)) } else { None };
        Ok(WebhookDeliveryPage {
            nodes: page.deliveries.into_iter().map(WebhookDelivery).collect(),
            end_cursor,
            has_next_page: page.has_more,
            total_count: page.total,
        })
    }
}

/// `s` cut to at most `n` characters (an oversized id is recorded cut, not whole).
fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn checked_id<'a>(field: &str, id: &'a str) -> Result<&'a str> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(invalid_input(
            format!("`{field}` must be 1 to {MAX_ID_LEN} characters"),
            field,
            "pass an id from `webhooks`",
        ));
    }
    Ok(id)
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The registered webhook receivers (at most 100), oldest first. Operators only: a
    /// receiver's URL may carry a token.
    #[graphql(guard = "RequireRole(Role::Operator)")]
    async fn webhooks(&self, ctx: &Context<'_>) -> Result<Vec<Webhook>> {
        let hooks = Box::pin(catalog(ctx)?.webhooks()).await.map_err(to_graphql)?;
        Ok(hooks.into_iter().map(Webhook).collect())
    }
}

#[derive(Default)]
pub struct WebhookMutation;

/// Runs a webhook change and writes its audit record, whatever the outcome.
async fn audited<T>(
    ctx: &Context<'_>,
    action: AuditAction,
    id: Option<&str>,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let out = fut.await;
    let id = id.map(|i| cut(i, MAX_ID_LEN));
    let target = Target { action, plugin: AUDIT_PLUGIN, source_id: id };
    match &out {
        Ok(_) => audit::record(ctx, target, None, Ok(())).await,
        Err(e) => audit::record(ctx, target, None, Err(e)).await,
    }
    out
}

#[Object]
impl WebhookMutation {
    /// Registers a receiver: from now on every matching event is POSTed to it, signed
    /// (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`),
    /// retried with backoff until a 2xx or `--webhook-retry-for`. Nothing is stored when any
    /// setting is refused.
    #[graphql(guard = "OperatorAction")]
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The receiver's URL, event kinds, plugins and signing secret.")] input: WebhookInput,
    ) -> Result<Webhook> {
        let mut created: Option<String> = None;
        let out = async {
            let spec = input.into_spec()?;
            let hook = Box::pin(catalog(ctx)?.create_webhook(spec, &actor(ctx))).await.map_err(to_graphql)?;
            created = Some(hook.id.clone());
            Ok(Webhook(hook))
        }
        .await;
        audited(ctx, AuditAction::CreateWebhook, created.as_deref(), async { out }).await
    }

    /// Replaces a receiver's settings (checked as for `createWebhook`). Unknown id: NOT_FOUND.
    #[graphql(guard = "OperatorAction")]
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The receiver (`Webhook.id`).")] id: ID,
        #[graphql(desc = "Its new settings (all of them).")] input: WebhookInput,
    ) -> Result<Webhook> {
        audited(ctx, AuditAction::UpdateWebhook, Some(&id), async {
            let id = checked_id("id", &id)?;
            let spec = input.into_spec()?;
            let hook = Box::pin(catalog(ctx)?.update_webhook(id, spec)).await.map_err(to_graphql)?;
            Ok(Webhook(hook))
        })
        .await
    }

    /// Removes a receiver and its deliveries (queued ones are not sent); returns what was
    /// removed. Unknown id: NOT_FOUND.
    #[graphql(guard = "OperatorAction")]
    async fn delete_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The receiver (`Webhook.id`).")] id: ID,
    ) -> Result<Webhook> {
        audited(ctx, AuditAction::DeleteWebhook, Some(&id), async {
            let id = checked_id("id", &id)?;
            let hook = Box::pin(catalog(ctx)?.delete_webhook(id)).await.map_err(to_graphql)?;
            Ok(Webhook(hook))
        })
        .await
    }

    /// Sends a delivery's event again, as a new delivery with the same `webhook-id` and body.
    /// Unknown delivery: NOT_FOUND.
    #[graphql(guard = "OperatorAction")]
    async fn redeliver_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The delivery to send again (`WebhookDelivery.id`).")] delivery_id: ID,
    ) -> Result<WebhookDelivery> {
        audited(ctx, AuditAction::RedeliverWebhook, Some(&delivery_id), async {
            let Ok(id) = delivery_id.parse::<i64>() else {
                return Err(not_found(format!("delivery `{}` does not exist", cut(&delivery_id, 64))));
            };
            let d = Box::pin(catalog(ctx)?.redeliver_webhook(id)).await.map_err(to_graphql)?;
            Ok(WebhookDelivery(d))
        })
        .await
    }
}
