//! Outgoing webhooks as the API sees them (register, change, remove, list, deliveries,
//! redeliver), and the two loops behind them: the enqueuer, which turns this replica's own
//! events into queued deliveries, and the delivery loop (`webhooks::Deliverer`).
//!
//! Cluster: an event is queued only by the replica where it happened (`Events::publish`
//! offers it to the queue; events followed from the change feed are not), once per receiver
//! (the (receiver, event key) pair is unique, so a retried enqueue adds nothing); every
//! replica's delivery loop claims due rows under a lease, so each is sent by one replica.
//!
//! Database away: events wait in the bounded in-memory queue (`WebhookOptions::buffer`, 10 000
//! events), the enqueuer retries the oldest batch with backoff (up to 5 s apart) until it is
//! stored, and when the queue is full newer events are dropped for webhooks, counted
//! (`catalog_bff_webhook_events_lost_total`) and logged (the catalog itself is not affected).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Catalog, CatalogError, Result};
use crate::db::webhooks::{NewDelivery, WebhookRow};
use crate::diagnostics::{Diagnostic, Layer, ValidationReport};
use crate::events::{CatalogEvent, EventKind};
use crate::jobs::RefreshJob;
use crate::refresh::RefreshStatus;
use crate::webhooks::{
    DeliveryPage, EventFacts, MAX_DELIVERIES_PAGE, MAX_WEBHOOKS, Webhook, WebhookDelivery, WebhookSpec, WebhookStats,
    event_key, payload, secret_key, validate,
};

/// Events taken from the queue at once (one receivers read, one transaction).
const BATCH: usize = 64;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn invalid(diags: Vec<Diagnostic>) -> CatalogError {
    CatalogError::Validation(ValidationReport::from_diagnostics(diags))
}

fn msg_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// What the body says about a job's state: its phase, counts (of the one source for a
/// REFRESHED event, else of the whole job) and error.
fn job_facts(job: &RefreshJob, source: Option<&str>) -> EventFacts {
    let result = source.and_then(|s| job.results.iter().find(|r| r.source_id == s));
    let counts = match result {
        Some(r) => serde_json::json!({
            "status": r.status,
            "entitiesLoaded": r.entities_loaded,
            "entitiesAdded": r.entities_added,
            "entitiesRemoved": r.entities_removed,
            "entitiesUpdated": r.entities_updated,
            "entitiesUnchanged": r.entities_unchanged,
        }),
        None => {
            let failed = job.results.iter().filter(|r| r.status != RefreshStatus::Success).count();
            serde_json::json!({
                "total": job.total,
                "completed": job.completed,
                "succeeded": job.results.len() - failed,
                "failed": failed,
                "entitiesLoaded": job.results.iter().map(|r| r.entities_loaded).sum::<usize>(),
                "entitiesRemoved": job.results.iter().map(|r| r.entities_removed).sum::<usize>(),
            })
        }
    };
    let error = match result {
        Some(r) if r.status != RefreshStatus::Success => Some(r.summary.clone()),
        Some(_) => None,
        None => job.error.clone(),
    };
    EventFacts { phase: Some(job.phase.as_str().to_string()), counts: Some(counts), error }
}

/// An event ready to queue: its key and body, fixed once (a retry queues the same).
struct Prepared {
    ev: CatalogEvent,
    key: String,
    body: String,
}

impl Catalog {
    /// Turns on the webhook queue and starts the enqueuer and the delivery loop.
    pub(super) fn start_webhooks(self: &Arc<Self>) {
        let Some(rx) = self.events.enable_hook(self.webhooks.options().buffer) else { return };
        tokio::spawn(self.clone().webhook_enqueue_loop(rx));
        let weak = Arc::downgrade(self);
        // A recorded attempt changes what `webhooks { deliveries }` answers: readers of
        // everything (not of one plugin's sources) key on `generation`.
        let changed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(c) = weak.upgrade() {
                c.generation.fetch_add(1, Ordering::AcqRel);
            }
        });
        tokio::spawn(self.webhooks.clone().run(self.shutdown_signal(), changed));
    }

    async fn webhook_enqueue_loop(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<CatalogEvent>) {
        let mut shutdown = self.shutdown_signal();
        let mut events = Vec::with_capacity(BATCH);
        loop {
            events.clear();
            let n = tokio::select! {
                n = rx.recv_many(&mut events, BATCH) => n,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if n == 0 {
                return;
            }
            // No receiver registered (the common case): nothing to prepare. (A database that
            // does not answer is not "none": the batch is prepared and its queuing retried.)
            if matches!(self.db.webhooks(1).await, Ok(rows) if rows.is_empty()) {
                events.clear();
                continue;
            }
            let mut batch = Vec::with_capacity(n);
            // One read of each job per batch: a refreshAll over N sources sends N events of one
            // job, each of which would otherwise copy its N results.
            let mut jobs: std::collections::HashMap<String, Option<crate::jobs::RefreshJob>> =
                std::collections::HashMap::new();
            for ev in events.drain(..) {
                let facts = match &ev.job_id {
                    Some(id) => {
                        if !jobs.contains_key(id) {
                            let job = self.job(id).await.ok().flatten();
                            jobs.insert(id.clone(), job);
                        }
                        match jobs.get(id).and_then(Option::as_ref) {
                            Some(job) => {
                                let source = ev.source_id.as_deref().filter(|_| ev.kind == EventKind::Refreshed);
                                job_facts(job, source)
                            }
                            None => EventFacts::default(),
                        }
                    }
                    None => EventFacts::default(),
                };
                batch.push(Prepared { key: event_key(&ev), body: payload(&ev, &facts), ev });
            }
            let mut delay = Duration::from_millis(200);
            let mut warned = false;
            loop {
                match self.enqueue_prepared(&batch).await {
                    Ok(added) => {
                        if warned {
                            tracing::info!(events = batch.len(), "webhook events queued after the database came back");
                        }
                        if added > 0 {
                            self.webhooks.stats.enqueued.fetch_add(added, Ordering::Relaxed);
                            self.webhooks.wake();
                        }
                        break;
                    }
                    Err(e) => {
                        if !warned {
                            warned = true;
                            tracing::warn!(error = %e, events = batch.len(), "cannot queue webhook deliveries; events wait in memory and are retried");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// One row per (event, receiver that asked for it), in one transaction.
    async fn enqueue_prepared(&self, batch: &[Prepared]) -> Result<u64> {
        let hooks: Vec<Webhook> = self.db.webhooks(MAX_WEBHOOKS).await?.into_iter().map(Webhook::from_row).collect();
        if hooks.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let retry_for = i64::try_from(self.webhooks.options().retry_for.as_millis()).unwrap_or(i64::MAX);
        let mut rows = Vec::new();
        for p in batch {
            for h in hooks.iter().filter(|h| h.wants(&p.ev)) {
                rows.push(NewDelivery {
                    webhook_id: h.id.clone(),
                    msg_id: msg_id(),
                    event_key: p.key.clone(),
                    event_type: p.ev.kind.as_str().to_string(),
                    plugin: p.ev.plugin.clone(),
                    source_id: p.ev.source_id.clone(),
                    payload: p.body.clone(),
                    created_ms: now,
                    give_up_ms: now.saturating_add(retry_for),
                    redelivery_of: None,
                });
            }
        }
        Ok(self.db.enqueue_deliveries(&rows).await?)
    }

    /// Checks a receiver's settings and that its secret can be read and is a `whsec_` key.
    async fn check_webhook(&self, spec: &WebhookSpec) -> Result<()> {
        let fetch = self.webhooks.fetch();
        let mut diags = validate(spec, fetch);
        if !diags.iter().any(|d| d.field.as_deref().is_some_and(|f| f.starts_with("input.secretRef"))) {
            match crate::fetch::read_secret(fetch, &spec.secret_name, &spec.secret_key, None).await {
                Err(d) => diags.push(d.field("input.secretRef")),
                Ok(value) => {
                    if let Err(why) = secret_key(&value) {
                        diags.push(
                            Diagnostic::error(
                                Layer::Semantics,
                                format!("secret {}/{}: {why}", spec.secret_name, spec.secret_key),
                            )
                            .field("input.secretRef")
                            .hint("store a Standard Webhooks secret: echo \"whsec_$(openssl rand -base64 32)\""),
                        );
                    }
                }
            }
        }
        if diags.is_empty() { Ok(()) } else { Err(invalid(diags)) }
    }

    fn webhook_row(spec: &WebhookSpec, id: String, actor: &str, created_ms: i64) -> WebhookRow {
        WebhookRow {
            id,
            url: spec.url.trim().to_string(),
            events: spec.events.join(","),
            plugins: spec.plugins.as_ref().map(|p| p.join(",")),
            secret_name: spec.secret_name.clone(),
            secret_key: spec.secret_key.clone(),
            created_by: actor.to_string(),
            created_ms,
            updated_ms: now_ms(),
        }
    }

    /// Registers a receiver (at most [`MAX_WEBHOOKS`]). Invalid settings, a secret that cannot
    /// be read or is not a `whsec_` key: VALIDATION_FAILED naming the field, nothing stored.
    pub async fn create_webhook(&self, spec: WebhookSpec, actor: &str) -> Result<Webhook> {
        self.check_webhook(&spec).await?;
        let row = Self::webhook_row(&spec, uuid::Uuid::new_v4().to_string(), actor, now_ms());
        if !self.db.insert_webhook(&row, MAX_WEBHOOKS).await? {
            return Err(invalid(vec![
                Diagnostic::error(
                    Layer::Semantics,
                    format!("{MAX_WEBHOOKS} receivers are registered already; that is the most"),
                )
                .field("input")
                .hint("delete a receiver you no longer need (deleteWebhook), or send more kinds to one receiver"),
            ]));
        }
        Ok(Webhook::from_row(row))
    }

    /// Replaces a receiver's settings (deliveries already queued keep their body and go to
    /// the new URL with the new secret).
    pub async fn update_webhook(&self, id: &str, spec: WebhookSpec) -> Result<Webhook> {
        let Some(old) = self.db.webhook(id).await? else {
            return Err(CatalogError::NotFound(format!("webhook `{id}` does not exist")));
        };
        self.check_webhook(&spec).await?;
        let row = Self::webhook_row(&spec, old.id, &old.created_by, old.created_ms);
        if !self.db.update_webhook(&row).await? {
            return Err(CatalogError::NotFound(format!("webhook `{id}` does not exist")));
        }
        Ok(Webhook::from_row(row))
    }

    /// Removes a receiver and its deliveries (queued ones are not sent); returns it.
    pub async fn delete_webhook(&self, id: &str) -> Result<Webhook> {
        let Some(old) = self.db.webhook(id).await? else {
            return Err(CatalogError::NotFound(format!("webhook `{id}` does not exist")));
        };
        if !self.db.delete_webhook(id).await? {
            return Err(CatalogError::NotFound(format!("webhook `{id}` does not exist")));
        }
        Ok(Webhook::from_row(old))
    }

    /// Every registered receiver, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        Ok(self.db.webhooks(MAX_WEBHOOKS).await?.into_iter().map(Webhook::from_row).collect())
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>> {
        Ok(self.db.webhook(id).await?.map(Webhook::from_row))
    }

    /// A receiver's deliveries, newest first: those with an id below `after` (all when
    /// `None`), at most `first` (capped at [`MAX_DELIVERIES_PAGE`]).
    pub async fn webhook_deliveries(&self, webhook_id: &str, after: Option<i64>, first: u64) -> Result<DeliveryPage> {
        let limit = first.clamp(1, MAX_DELIVERIES_PAGE);
        let mut rows = self.db.deliveries_page(webhook_id, after, limit + 1).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let total = self.db.delivery_count(webhook_id).await?;
        Ok(DeliveryPage { deliveries: rows.into_iter().map(WebhookDelivery::from_row).collect(), has_more, total })
    }

    /// Sends a delivery's event again, as a new delivery with the same `webhook-id` (the same
    /// message; receivers that de-duplicate by it may ignore it) and body, retried like any.
    pub async fn redeliver_webhook(&self, delivery_id: i64) -> Result<WebhookDelivery> {
        let Some(old) = self.db.delivery(delivery_id).await? else {
            return Err(CatalogError::NotFound(format!("delivery {delivery_id} does not exist")));
        };
        if self.db.webhook(&old.webhook_id).await?.is_none() {
            return Err(CatalogError::NotFound(format!("the receiver of delivery {delivery_id} was deleted")));
        }
        let now = now_ms();
        let retry_for = i64::try_from(self.webhooks.options().retry_for.as_millis()).unwrap_or(i64::MAX);
        let key = format!("redeliver:{}", uuid::Uuid::new_v4().simple());
        let new = NewDelivery {
            webhook_id: old.webhook_id.clone(),
            msg_id: old.msg_id,
            event_key: key.clone(),
            event_type: old.event_type,
            plugin: old.plugin,
            source_id: old.source_id,
            payload: old.payload,
            created_ms: now,
            give_up_ms: now.saturating_add(retry_for),
            redelivery_of: Some(old.id),
        };
        self.db.enqueue_deliveries(std::slice::from_ref(&new)).await?;
        self.webhooks.stats.enqueued.fetch_add(1, Ordering::Relaxed);
        self.webhooks.wake();
        match self.db.delivery_by_key(&old.webhook_id, &key).await? {
            Some(row) => Ok(WebhookDelivery::from_row(row)),
            None => Err(CatalogError::Internal("the redelivery was queued but cannot be read back".into())),
        }
    }

    /// Delivery counters since start, for `/metrics`.
    pub fn webhook_stats(&self) -> WebhookStats {
        let mut s = self.webhooks.stats.snapshot();
        s.lost = self.events.hook_lost();
        s
    }
}
