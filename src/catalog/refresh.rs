//! Refresh bookkeeping: snapshots, diffs and per-source results.
//!
//! A refresh loads a source into a new [`Snapshot`], diffs it with the current one and swaps
//! only on success. The types here are pure data; the orchestration lives in `service`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

use super::diagnostics::Diagnostic;
use super::plugins::Entity;

/// The loaded entities of one source: immutable, swapped atomically as a whole.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entities: Vec<Arc<Entity>>,
    /// name → content hash, to tell updated from unchanged on the next refresh.
    pub hashes: HashMap<String, String>,
    /// Hash of the raw catalog content the snapshot was built from (INCREMENTAL refresh).
    pub content_hash: String,
    /// The HTTP `ETag` of a url source's last fetch, sent as `If-None-Match` by INCREMENTAL.
    pub etag: Option<String>,
}

impl Snapshot {
    pub fn new(entities: Vec<Entity>, content_hash: String) -> Snapshot {
        let hashes = entities.iter().map(|e| (e.name().to_string(), e.content_hash())).collect();
        Snapshot { entities: entities.into_iter().map(Arc::new).collect(), hashes, content_hash, etag: None }
    }

    pub fn artifact_count(&self) -> usize {
        self.entities.iter().map(|e| e.artifact_count()).sum()
    }
}

/// What replacing a source's entities would do. Names lists hold at most [`IMPACT_NAMES`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Impact {
    pub to_add: usize,
    pub to_update: usize,
    pub to_remove: usize,
    pub unchanged: usize,
    pub added_names: Vec<String>,
    pub updated_names: Vec<String>,
    pub removed_names: Vec<String>,
    /// Entity count before the change.
    pub current_count: usize,
}

pub const IMPACT_NAMES: usize = 10;

impl Impact {
    /// More than half of a non-empty source would disappear: likely a truncated file.
    pub fn needs_confirmation(&self) -> bool {
        self.current_count > 0 && self.to_remove * 2 > self.current_count
    }
}

pub fn diff(old: Option<&Snapshot>, new: &[Entity]) -> Impact {
    let empty = HashMap::new();
    let old_hashes = old.map(|s| &s.hashes).unwrap_or(&empty);
    let mut impact = Impact { current_count: old_hashes.len(), ..Impact::default() };
    let mut seen = std::collections::HashSet::new();
    for e in new {
        seen.insert(e.name());
        match old_hashes.get(e.name()) {
            None => {
                impact.to_add += 1;
                push_name(&mut impact.added_names, e.name());
            }
            Some(h) if *h != e.content_hash() => {
                impact.to_update += 1;
                push_name(&mut impact.updated_names, e.name());
            }
            Some(_) => impact.unchanged += 1,
        }
    }
    if let Some(old) = old {
        for e in &old.entities {
            if !seen.contains(e.name()) {
                impact.to_remove += 1;
                push_name(&mut impact.removed_names, e.name());
            }
        }
    }
    impact
}

fn push_name(list: &mut Vec<String>, name: &str) {
    if list.len() < IMPACT_NAMES {
        list.push(name.to_string());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefreshStatus {
    Success,
    Partial,
    Failure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefreshMode {
    Full,
    Incremental,
}

/// The outcome of refreshing one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshResult {
    pub plugin: String,
    pub source_id: String,
    pub status: RefreshStatus,
    pub entities_loaded: usize,
    pub entities_added: usize,
    pub entities_removed: usize,
    pub entities_updated: usize,
    pub entities_unchanged: usize,
    pub artifacts_loaded: usize,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub summary: String,
    pub dry_run: bool,
    /// What the refresh changed (or, for a dry run, would change), with the first few names.
    pub impact: Impact,
    pub diagnostics: Vec<Diagnostic>,
}

/// "Loaded 6 entities", "Loaded 6 entities, removed 1", "Unchanged (6 entities)".
pub fn summary(loaded: usize, impact: &Impact, incremental_skip: bool) -> String {
    if incremental_skip {
        return format!("Unchanged ({loaded} {})", plural(loaded));
    }
    let mut s = format!("Loaded {loaded} {}", plural(loaded));
    if impact.to_remove > 0 {
        s.push_str(&format!(", removed {}", impact.to_remove));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "entity" } else { "entities" }
}

/// Refresh counters and a duration histogram per plugin, for `/metrics`.
#[derive(Default)]
pub struct RefreshStats {
    inner: std::sync::Mutex<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    counts: std::collections::BTreeMap<(String, &'static str), u64>,
    /// plugin → (bucket counts, sum of seconds, count)
    durations: std::collections::BTreeMap<String, (Vec<u64>, f64, u64)>,
}

/// Histogram bucket upper bounds, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct StatsSnapshot {
    pub counts: Vec<((String, &'static str), u64)>,
    pub durations: Vec<(String, Vec<u64>, f64, u64)>,
}

impl RefreshStats {
    pub fn record(&self, plugin: &str, status: RefreshStatus, seconds: f64) {
        let word = match status {
            RefreshStatus::Success => "success",
            RefreshStatus::Partial => "partial",
            RefreshStatus::Failure => "failure",
        };
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *s.counts.entry((plugin.to_string(), word)).or_insert(0) += 1;
        let (buckets, sum, count) =
            s.durations.entry(plugin.to_string()).or_insert_with(|| (vec![0; DURATION_BUCKETS.len()], 0.0, 0));
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                buckets[i] += 1;
            }
        }
        *sum += seconds;
        *count += 1;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        StatsSnapshot {
            counts: s.counts.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            durations: s.durations.iter().map(|(p, (b, sum, c))| (p.clone(), b.clone(), *sum, *c)).collect(),
        }
    }
}
