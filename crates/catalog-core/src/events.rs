//! Catalog change events, broadcast to in-process subscribers and, with PostgreSQL, to the
//! other replicas through the change feed.
//!
//! The channel is bounded (256): a subscriber that falls behind loses the oldest events and is
//! told so (`Lagged`), instead of making publishers wait. Events mean "something changed,
//! refetch", so skipping is safe.
//!
//! Every local change goes through [`Events::publish`] (catalog events) or
//! [`Events::job_changed`] (a refresh job's state), so no call site can forget the other
//! replicas: in cluster mode both also queue a [`Change`] that a background task records in
//! `catalog_changes` and NOTIFYs (see `service/cluster.rs`). Queueing keeps publishers
//! synchronous and never blocks them on the database; a mutation that needs its consistency
//! token waits for the queue to flush ([`Events::flushed_through`]).
//!
//! Generations: `applied` is the highest change id this replica has caught up with, in order
//! (what `X-Catalog-Min-Generation` waits for); `published` the highest id it recorded itself
//! (what a mutation hands back as its token). Without a feed (SQLite, one replica) both are a
//! local counter of published events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    Applied,
    Refreshed,
    RolledBack,
    RefreshStarted,
    RefreshFinished,
    ConfigChangedExternally,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Applied => "APPLIED",
            EventKind::Refreshed => "REFRESHED",
            EventKind::RolledBack => "ROLLED_BACK",
            EventKind::RefreshStarted => "REFRESH_STARTED",
            EventKind::RefreshFinished => "REFRESH_FINISHED",
            EventKind::ConfigChangedExternally => "CONFIG_CHANGED_EXTERNALLY",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Applied,
            EventKind::Refreshed,
            EventKind::RolledBack,
            EventKind::RefreshStarted,
            EventKind::RefreshFinished,
            EventKind::ConfigChangedExternally,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The change-feed kind of a refresh job's state change.
pub const JOB_KIND: &str = "JOB";

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEvent {
    pub kind: EventKind,
    pub plugin: String,
    pub source_id: Option<String>,
    pub revision: Option<i32>,
    pub job_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// A local change on its way to the change feed, with its place in the local queue.
#[derive(Clone, Debug)]
pub struct Change {
    pub seq: u64,
    pub kind: &'static str,
    pub plugin: String,
    pub source_id: Option<String>,
    pub revision: Option<i32>,
    pub job_id: Option<String>,
}

pub const EVENT_BUFFER: usize = 256;

pub struct Events {
    tx: broadcast::Sender<CatalogEvent>,
    /// Set in cluster mode: the queue the change-feed publisher drains.
    outbox: OnceLock<mpsc::UnboundedSender<Change>>,
    /// Local queue position of the last change queued, and of the last one recorded (or given
    /// up on).
    queued: AtomicU64,
    flushed: watch::Sender<u64>,
    applied: watch::Sender<u64>,
    published: AtomicU64,
    /// The LISTEN connection is up (always true without a feed).
    feed_up: AtomicBool,
    feed_detail: std::sync::Mutex<String>,
    /// The change this replica could not apply yet (id, why, since when), if any.
    stuck: std::sync::Mutex<Option<(u64, String, std::time::Instant)>>,
    /// Set when outgoing webhooks run: every event that happened on this replica is offered
    /// to their queue (bounded; a full queue counts the event in `hook_lost`, never waits).
    /// Events from other replicas (`deliver_remote`) are not: their replica queued them.
    hook: OnceLock<mpsc::Sender<CatalogEvent>>,
    hook_lost: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BUFFER).0,
            outbox: OnceLock::new(),
            queued: AtomicU64::new(0),
            flushed: watch::channel(0).0,
            applied: watch::channel(0).0,
            published: AtomicU64::new(0),
            feed_up: AtomicBool::new(true),
            feed_detail: std::sync::Mutex::new("single replica (no change feed)".into()),
            stuck: std::sync::Mutex::new(None),
            hook: OnceLock::new(),
            hook_lost: AtomicU64::new(0),
        }
    }
}

impl Events {
    pub fn publish(
        &self,
        kind: EventKind,
        plugin: &str,
        source_id: Option<&str>,
        revision: Option<i32>,
        job_id: Option<&str>,
    ) {
        let ev = CatalogEvent {
            kind,
            plugin: plugin.to_string(),
            source_id: source_id.map(str::to_string),
            revision,
            job_id: job_id.map(str::to_string),
            at: Utc::now(),
        };
        // (Closed, not full: the server is shutting down and its enqueuer has stopped.)
        if let Some(hook) = self.hook.get()
            && let Err(mpsc::error::TrySendError::Full(_)) = hook.try_send(ev.clone())
        {
            let lost = self.hook_lost.fetch_add(1, Ordering::AcqRel) + 1;
            if lost.is_power_of_two() {
                tracing::error!(
                    lost,
                    kind = kind.as_str(),
                    plugin,
                    "webhook queue full (the database has been unreachable for long): events lost for webhooks"
                );
            }
        }
        // No receivers is fine: nobody is listening.
        let _ = self.tx.send(ev);
        self.queue(kind.as_str(), plugin, source_id, revision, job_id);
    }

    /// A refresh job's state changed (its row is already written): other replicas re-read it.
    pub fn job_changed(&self, plugin: &str, job_id: &str) {
        self.queue(JOB_KIND, plugin, None, None, Some(job_id));
    }

    fn queue(
        &self,
        kind: &'static str,
        plugin: &str,
        source_id: Option<&str>,
        revision: Option<i32>,
        job_id: Option<&str>,
    ) {
        let Some(outbox) = self.outbox.get() else {
            // One replica: the generation is the local count of changes.
            if kind != JOB_KIND {
                let g = self.published.fetch_add(1, Ordering::AcqRel) + 1;
                self.applied.send_replace(g);
            }
            return;
        };
        let seq = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let change = Change {
            seq,
            kind,
            plugin: plugin.to_string(),
            source_id: source_id.map(str::to_string),
            revision,
            job_id: job_id.map(str::to_string),
        };
        if outbox.send(change).is_err() {
            // The publisher is gone (shutting down): nothing will flush this.
            self.flushed.send_replace(seq);
        }
    }

    /// Turns on the webhook queue: local events from now on go to the returned receiver too,
    /// at most `capacity` waiting. Only the first call gets it.
    pub fn enable_hook(&self, capacity: usize) -> Option<mpsc::Receiver<CatalogEvent>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.hook.set(tx).ok()?;
        Some(rx)
    }

    /// Events the webhook queue had no room for.
    pub fn hook_lost(&self) -> u64 {
        self.hook_lost.load(Ordering::Acquire)
    }

    /// Delivers an event that happened on another replica to this replica's subscribers only.
    pub fn deliver_remote(&self, ev: CatalogEvent) {
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CatalogEvent> {
        self.tx.subscribe()
    }

    // ---- cluster bookkeeping (used by the change feed) ---------------------------------------

    /// Turns on the change feed; returns the queue to drain. Only the first call gets it.
    pub fn enable_feed(&self, start_generation: u64) -> Option<mpsc::UnboundedReceiver<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.outbox.set(tx).ok()?;
        self.applied.send_replace(start_generation);
        self.published.store(start_generation, Ordering::Release);
        Some(rx)
    }

    pub fn feed_enabled(&self) -> bool {
        self.outbox.get().is_some()
    }

    /// The publisher recorded change `seq` as cluster generation `id` (`None`: gave up).
    pub fn mark_flushed(&self, seq: u64, id: Option<u64>) {
        if let Some(id) = id {
            self.published.fetch_max(id, Ordering::AcqRel);
        }
        self.flushed.send_if_modified(|f| {
            let grew = seq > *f;
            if grew {
                *f = seq;
            }
            grew
        });
    }

    /// Waits (at most `wait`) until every change queued so far is recorded; returns the
    /// generation a client may wait for to see them (the highest this replica recorded or
    /// applied).
    pub async fn flushed_through(&self, wait: std::time::Duration) -> u64 {
        let target = self.queued.load(Ordering::Acquire);
        let mut rx = self.flushed.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|f| *f >= target)).await;
        self.published.load(Ordering::Acquire).max(self.applied_generation())
    }

    /// The highest change id this replica has caught up with.
    pub fn applied_generation(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn set_applied(&self, g: u64) {
        self.applied.send_if_modified(|a| {
            let grew = g > *a;
            if grew {
                *a = g;
            }
            grew
        });
    }

    /// Waits (at most `wait`) until this replica has applied generation `g`; returns the
    /// generation it is at.
    pub async fn wait_applied(&self, g: u64, wait: std::time::Duration) -> std::result::Result<u64, u64> {
        let mut rx = self.applied.subscribe();
        match tokio::time::timeout(wait, rx.wait_for(|a| *a >= g)).await {
            Ok(Ok(a)) => Ok(*a),
            _ => Err(self.applied_generation()),
        }
    }

    /// Records the change that could not be applied (`None`: all applied). Returns since when
    /// that same change has been stuck, if it already was.
    pub fn set_stuck(&self, stuck: Option<(u64, String)>) -> Option<std::time::Instant> {
        let mut s = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        match stuck {
            None => {
                *s = None;
                None
            }
            Some((id, why)) => {
                let since = s.as_ref().filter(|(prev, _, _)| *prev == id).map(|(_, _, at)| *at);
                *s = Some((id, why, since.unwrap_or_else(std::time::Instant::now)));
                since
            }
        }
    }

    /// The change that could not be applied yet: its id, why, and for how long.
    pub fn stuck(&self) -> Option<(u64, String, std::time::Duration)> {
        self.stuck
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(id, why, at)| (*id, why.clone(), at.elapsed()))
    }

    pub fn set_feed(&self, up: bool, detail: String) {
        self.feed_up.store(up, Ordering::Release);
        *self.feed_detail.lock().unwrap_or_else(|p| p.into_inner()) = detail;
    }

    /// The `changeFeed` readiness check: up?, and why.
    pub fn feed_status(&self) -> (bool, String) {
        (self.feed_up.load(Ordering::Acquire), self.feed_detail.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}
