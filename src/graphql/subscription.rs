//! Subscriptions: `refreshProgress(jobId)` and `catalogEvents(plugin)`.
//!
//! Both streams end when the server shuts down, so clients receive `complete`. Progress comes
//! from a `watch` channel: a subscriber that reads slowly simply sees the latest snapshot next,
//! and never holds up the job. Events come from a bounded broadcast channel: a subscriber that
//! falls behind skips what it missed (events only mean "refetch").
//!
//! `catalogEvents` over WebSocket is usually run once per distinct document by the fan-out hub
//! (`http/fanout.rs`) rather than once per subscriber: [`FanoutRun`] in the request data tells
//! the resolver which of the hub's two runs it is in, and [`Subscriber`] counts each of the
//! hub's subscribers in the gauge and the connection's budget exactly as a stream of its own
//! would be counted.

use async_graphql::{Context, Enum, ErrorExtensions, ID, Result, SimpleObject, Subscription as SubscriptionDerive};
use catalog_api::ErrorCode;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{broadcast, watch};

use super::catalog;
use super::errors::{self, not_found, to_graphql};
use super::types::RefreshJob;
use catalog_core::RefreshJob as CoreJob;

/// Live subscription count, shared with `/metrics`.
#[derive(Default)]
pub struct SubscriptionGauge(pub AtomicI64);

/// Decrements the gauge (and the connection's budget) when the stream is dropped (completed
/// or cancelled).
struct Counted(Option<Arc<SubscriptionGauge>>, Option<Arc<AtomicI64>>);

impl Counted {
    fn new(g: Option<Arc<SubscriptionGauge>>, budget: Option<Arc<AtomicI64>>) -> Counted {
        if let Some(g) = &g {
            g.0.fetch_add(1, Ordering::Relaxed);
        }
        Counted(g, budget)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.0.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.1 {
            b.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Subscriptions allowed on one WebSocket connection, and how many are open. Clones share the
/// count (the WebSocket connection keeps one for the subscriptions it serves from the hub).
#[derive(Clone)]
pub struct ConnectionBudget {
    max: usize,
    open: Arc<AtomicI64>,
}

impl ConnectionBudget {
    pub fn new(max: usize) -> ConnectionBudget {
        ConnectionBudget { max, open: Arc::new(AtomicI64::new(0)) }
    }
}

impl ConnectionBudget {
    /// One more open subscription, or None (and no change) when the budget is spent.
    fn take(&self) -> Option<Arc<AtomicI64>> {
        let now = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if usize::try_from(now).unwrap_or(usize::MAX) > self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(self.open.clone())
    }
}

/// Which of the fan-out hub's runs of a `catalogEvents` document this request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutRun {
    /// Every check a subscriber's own stream makes (document, limits, trusted documents,
    /// arguments), then an empty stream: nothing is counted and no event is waited for.
    Check,
    /// The one stream shared by the hub's subscribers: it is not counted itself, since the
    /// hub counts each subscriber ([`Subscriber`]).
    Shared,
}

/// A slot taken from a connection's budget (returned on drop), before the subscriber it is
/// for is counted ([`Subscriber::new`]).
pub struct BudgetSlot(Option<Arc<AtomicI64>>);

impl ConnectionBudget {
    /// A slot for one more subscription, or None when the budget is spent (the hub then leaves
    /// the subscription to the state machine, which answers with the budget's error).
    pub fn slot(&self) -> Option<BudgetSlot> {
        self.take().map(|open| BudgetSlot(Some(open)))
    }
}

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        if let Some(open) = self.0.take() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One subscriber served by the fan-out hub: counted in the gauge and in its connection's
/// budget while it lives, like a subscription stream of its own.
pub struct Subscriber(
    #[expect(dead_code, reason = "held for its Drop: the gauge and the budget count it while it lives")] Counted,
);

impl Subscriber {
    /// Counts the subscriber; call it once its events flow (as the resolver counts a stream
    /// once it is subscribed to the events).
    pub fn new(gauge: &Arc<SubscriptionGauge>, mut slot: BudgetSlot) -> Subscriber {
        Subscriber(Counted::new(Some(gauge.clone()), slot.0.take()))
    }
}

/// Takes a slot from the connection's budget, if it has one; the slot is returned on drop.
fn take_budget(ctx: &Context<'_>) -> Result<Option<Arc<AtomicI64>>> {
    let Some(b) = ctx.data_opt::<ConnectionBudget>() else { return Ok(None) };
    let Some(slot) = b.take() else {
        let max = b.max;
        return Err(async_graphql::Error::new(format!(
            "at most {max} subscriptions per connection (--max-subscriptions-per-connection)"
        ))
        .extend_with(move |_, e| {
            e.set("code", ErrorCode::RateLimited.as_str());
            e.set("limit", max as u64);
        }));
    };
    Ok(Some(slot))
}

/// What happened, in a `catalogEvents` event.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "catalog_core::EventKind")]
pub enum CatalogEventKind {
    /// `applySource` recorded a new revision (`sourceId`, `revision`).
    Applied,
    /// A source's entities were swapped in by a refresh (`sourceId`).
    Refreshed,
    /// `rollbackSource` recorded a new revision (`sourceId`, `revision`).
    RolledBack,
    /// A refresh job started (`jobId`).
    RefreshStarted,
    /// A refresh job ended (`jobId`); fetch it for the results.
    RefreshFinished,
    /// The sources file (or ConfigMap) was edited outside the API and reloaded.
    ConfigChangedExternally,
}

/// Something changed: refetch what you show.
#[derive(SimpleObject)]
pub struct CatalogEvent {
    /// What happened.
    pub kind: CatalogEventKind,
    /// The plugin it happened in: `models` or `mcp`.
    pub plugin: String,
    /// The source (id within the plugin); null for plugin-wide events.
    pub source_id: Option<ID>,
    /// The new revision, for APPLIED and ROLLED_BACK; null otherwise.
    pub revision: Option<i32>,
    /// The refresh job, for REFRESH_STARTED and REFRESH_FINISHED; null otherwise.
    pub job_id: Option<ID>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl From<catalog_core::CatalogEvent> for CatalogEvent {
    fn from(e: catalog_core::CatalogEvent) -> Self {
        CatalogEvent {
            kind: e.kind.into(),
            plugin: e.plugin,
            source_id: e.source_id.map(ID::from),
            revision: e.revision,
            job_id: e.job_id.map(ID::from),
            at: e.at,
        }
    }
}

pub struct Subscription;

struct Progress {
    rx: Option<watch::Receiver<CoreJob>>,
    first: Option<CoreJob>,
    shutdown: watch::Receiver<bool>,
    _count: Counted,
}

struct Events {
    /// A [`FanoutRun::Check`]: end at once, after the checks.
    check_only: bool,
    rx: broadcast::Receiver<catalog_core::CatalogEvent>,
    plugin: Option<String>,
    shutdown: watch::Receiver<bool>,
    _count: Counted,
}

/// Live updates over `/graphql/ws` (graphql-transport-ws) or `/graphql/stream` (SSE).
#[SubscriptionDerive]
impl Subscription {
    /// The job's current state first, then every change; completes when the job ends. A job
    /// that already ended yields its final state and completes.
    async fn refresh_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The job's `id`; an unknown job is NOT_FOUND.")] job_id: ID,
    ) -> Result<impl Stream<Item = RefreshJob> + use<>> {
        errors::job_id("jobId", &job_id)?;
        let c = catalog(ctx)?.clone();
        let budget = take_budget(ctx)?;
        let gauge = ctx.data_opt::<Arc<SubscriptionGauge>>().cloned();
        let state = match c.follow_job(&job_id).await {
            Some(rx) => {
                let first = rx.borrow().clone();
                Progress {
                    rx: Some(rx),
                    first: Some(first),
                    shutdown: c.shutdown_signal(),
                    _count: Counted::new(gauge, budget),
                }
            }
            None => {
                let job = c
                    .job(&job_id)
                    .await
                    .map_err(to_graphql)?
                    .ok_or_else(|| not_found(format!("refresh job {} does not exist", job_id.as_str())))?;
                Progress {
                    rx: None,
                    first: Some(job),
                    shutdown: c.shutdown_signal(),
                    _count: Counted::new(gauge, budget),
                }
            }
        };
        Ok(futures_util::stream::unfold(state, |mut st| async move {
            if let Some(job) = st.first.take() {
                if job.phase.is_done() {
                    st.rx = None;
                }
                return Some((RefreshJob(job), st));
            }
            let rx = st.rx.as_mut()?;
            let next = tokio::select! {
                changed = rx.changed() => changed.ok().map(|_| rx.borrow_and_update().clone()),
                _ = stopped(&mut st.shutdown) => None,
            };
            let job = next?;
            if job.phase.is_done() {
                st.rx = None;
            }
            Some((RefreshJob(job), st))
        }))
    }

    /// Catalog change events (APPLIED, REFRESHED, ROLLED_BACK, REFRESH_STARTED,
    /// REFRESH_FINISHED, CONFIG_CHANGED_EXTERNALLY), optionally of one plugin.
    async fn catalog_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only this plugin's events (`models` or `mcp`); all when left out. An unknown plugin is NOT_FOUND."
        )]
        plugin: Option<String>,
    ) -> Result<impl Stream<Item = CatalogEvent> + use<>> {
        if let Some(p) = &plugin {
            errors::plugin("plugin", p)?;
        }
        let c = catalog(ctx)?;
        let run = ctx.data_opt::<FanoutRun>().copied();
        let budget = take_budget(ctx)?;
        // The hub's runs are not subscribers: it counts each of its subscribers instead.
        let gauge = if run.is_some() { None } else { ctx.data_opt::<Arc<SubscriptionGauge>>().cloned() };
        let state = Events {
            check_only: run == Some(FanoutRun::Check),
            rx: c.subscribe_events(),
            plugin,
            shutdown: c.shutdown_signal(),
            _count: Counted::new(gauge, budget),
        };
        Ok(futures_util::stream::unfold(state, |mut st| async move {
            if st.check_only {
                return None;
            }
            loop {
                let ev = tokio::select! {
                    ev = st.rx.recv() => ev,
                    _ = stopped(&mut st.shutdown) => return None,
                };
                match ev {
                    Ok(ev) => {
                        if st.plugin.as_ref().is_none_or(|p| *p == ev.plugin) {
                            return Some((CatalogEvent::from(ev), st));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "a slow catalogEvents subscriber skipped events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

/// Resolves once the server starts shutting down.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
