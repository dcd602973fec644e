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
///
/// Entities are `Arc`ed so a refresh whose entity did not change keeps the old allocation (see
/// [`Snapshot::reusing`]) and readers share them without copies. `by_name` finds an entity by
/// name without a second copy of every name: it maps a 64-bit hash of the name to the index, and
/// every hit is checked against the entity's real name.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entities: Vec<Arc<Entity>>,
    by_name: ByName,
    /// Two names with the same 64-bit hash (never seen in practice): lookups that miss the
    /// index then scan the list, so the answer stays exact.
    name_collision: bool,
    /// Hash of the raw catalog content the snapshot was built from (INCREMENTAL refresh).
    pub content_hash: String,
    /// The HTTP `ETag` of a url source's last fetch, sent as `If-None-Match` by INCREMENTAL.
    pub etag: Option<String>,
}

/// The process's name hash: foldhash (SipHash was 5% of a 100k-entity refresh), seeded at
/// random once per process, so every snapshot (old and new, in `reusing`) hashes alike and a
/// catalog cannot be written to collide on purpose (a collision would only cost scans anyway).
fn name_key(name: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::LazyLock<foldhash::quality::RandomState> = std::sync::LazyLock::new(Default::default);
    SEED.hash_one(name)
}

/// `by_name`'s map: its keys are already hashes, so a cheap hasher over them.
type ByName = HashMap<u64, u32, foldhash::fast::RandomState>;

impl Snapshot {
    /// A snapshot of `entities` where every entity equal to the old snapshot's entity of the
    /// same name is the old `Arc`: a refresh of unchanged content keeps one copy of each entity
    /// (the freshly parsed duplicates are dropped right here) and readers holding the old
    /// snapshot share the same memory.
    pub fn reusing(old: Option<&Snapshot>, entities: Vec<Entity>, content_hash: String) -> Snapshot {
        let mut snap = Snapshot {
            entities: Vec::with_capacity(entities.len()),
            by_name: ByName::with_capacity_and_hasher(entities.len(), Default::default()),
            name_collision: false,
            content_hash,
            etag: None,
        };
        for e in entities {
            let shared = match old.and_then(|o| o.get(e.name())) {
                Some(prev) if **prev == e => prev.clone(),
                _ => Arc::new(e),
            };
            let i = u32::try_from(snap.entities.len()).unwrap_or(u32::MAX);
            if snap.by_name.insert(name_key(shared.name()), i).is_some() {
                snap.name_collision = true;
            }
            snap.entities.push(shared);
        }
        // A collision overwrote an earlier index: keep the first one for each hash instead, so
        // the index is a pure function of the list (the scan covers the rest).
        if snap.name_collision {
            snap.by_name.clear();
            for (i, e) in snap.entities.iter().enumerate() {
                snap.by_name.entry(name_key(e.name())).or_insert(u32::try_from(i).unwrap_or(u32::MAX));
            }
        }
        snap
    }

    /// The position of the entity called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.by_name.get(&name_key(name)) {
            let i = i as usize;
            if self.entities.get(i).is_some_and(|e| e.name() == name) {
                return Some(i);
            }
        }
        if self.name_collision { self.entities.iter().position(|e| e.name() == name) } else { None }
    }

    /// The entity called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Entity>> {
        self.position(name).and_then(|i| self.entities.get(i))
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

/// What replacing `old` with `new` does. An entity is updated when it differs from the old one
/// of the same name (structural equality: exact, and cheaper than hashing a serialisation).
pub fn diff(old: Option<&Snapshot>, new: &[Entity]) -> Impact {
    let mut impact = Impact { current_count: old.map_or(0, |s| s.entities.len()), ..Impact::default() };
    // Old positions still present in `new`: a bitmap, not a set of names.
    let mut seen = vec![false; impact.current_count];
    for e in new {
        match old.and_then(|o| o.position(e.name())) {
            None => {
                impact.to_add += 1;
                push_name(&mut impact.added_names, e.name());
            }
            Some(i) => {
                seen[i] = true;
                if old.and_then(|o| o.entities.get(i)).is_some_and(|prev| **prev == *e) {
                    impact.unchanged += 1;
                } else {
                    impact.to_update += 1;
                    push_name(&mut impact.updated_names, e.name());
                }
            }
        }
    }
    if let Some(old) = old {
        for (e, _) in old.entities.iter().zip(&seen).filter(|(_, s)| !**s) {
            impact.to_remove += 1;
            push_name(&mut impact.removed_names, e.name());
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

impl RefreshResult {
    /// A refresh of `plugin/source_id` that starts now: a success with nothing loaded yet.
    pub fn started(plugin: &str, source_id: &str, dry_run: bool) -> RefreshResult {
        let now = Utc::now();
        RefreshResult {
            plugin: plugin.to_string(),
            source_id: source_id.to_string(),
            status: RefreshStatus::Success,
            entities_loaded: 0,
            entities_added: 0,
            entities_removed: 0,
            entities_updated: 0,
            entities_unchanged: 0,
            artifacts_loaded: 0,
            started_at: now,
            finished_at: now,
            duration_ms: 0,
            summary: String::new(),
            dry_run,
            impact: Impact::default(),
            diagnostics: Vec::new(),
        }
    }
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
