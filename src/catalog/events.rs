//! Catalog change events, broadcast to in-process subscribers.
//!
//! The channel is bounded (256): a subscriber that falls behind loses the oldest events and is
//! told so (`Lagged`), instead of making publishers wait. Events mean "something changed,
//! refetch", so skipping is safe.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

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

pub const EVENT_BUFFER: usize = 256;

pub struct Events {
    tx: broadcast::Sender<CatalogEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(EVENT_BUFFER).0 }
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
        // No receivers is fine: nobody is listening.
        let _ = self.tx.send(CatalogEvent {
            kind,
            plugin: plugin.to_string(),
            source_id: source_id.map(str::to_string),
            revision,
            job_id: job_id.map(str::to_string),
            at: Utc::now(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CatalogEvent> {
        self.tx.subscribe()
    }
}
