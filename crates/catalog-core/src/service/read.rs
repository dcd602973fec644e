//! The read model: plugins, sources with status, entities, content, revisions, jobs, readiness.

use super::*;

impl Catalog {
    // ---- reads ---------------------------------------------------------------------------------

    pub fn plugins(&self) -> Vec<PluginView> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        PluginKind::ALL
            .into_iter()
            .map(|p| PluginView {
                name: p.name(),
                source_count: state.config.sources().filter(|(k, _)| *k == p).count(),
                entity_count: state.snapshots.iter().filter(|((k, _), _)| *k == p).map(|(_, s)| s.entities.len()).sum(),
            })
            .collect()
    }

    /// Every source with its status, from memory (the read model: no database call).
    pub async fn sources(&self, plugin: Option<PluginKind>) -> Result<Vec<SourceView>> {
        let config = self.config();
        let rows: Vec<(PluginKind, &SourceEntry, Option<StatusRow>, Option<i32>)> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            config
                .sources()
                .filter(|(p, _)| plugin.is_none_or(|want| want == *p))
                .map(|(p, e)| {
                    let k = (p, e.id.clone());
                    (p, e, state.statuses.get(&k).cloned(), state.revisions.get(&k).copied())
                })
                .collect()
        };
        Ok(rows.into_iter().map(|(p, e, row, revision)| self.view(p, e, row.as_ref(), revision)).collect())
    }

    /// One source with its status, from memory.
    pub async fn source(&self, plugin: PluginKind, id: &str) -> Result<Option<SourceView>> {
        let config = self.config();
        let Some(entry) = config.find(plugin, id) else {
            return Ok(None);
        };
        let key = (plugin, id.to_string());
        let (row, revision) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            (state.statuses.get(&key).cloned(), state.revisions.get(&key).copied())
        };
        Ok(Some(self.view(plugin, entry, row.as_ref(), revision)))
    }

    pub(super) fn view(
        &self,
        plugin: PluginKind,
        entry: &SourceEntry,
        row: Option<&StatusRow>,
        revision: Option<i32>,
    ) -> SourceView {
        let snapshot = self.snapshot(&(plugin, entry.id.clone()));
        let entity_count = snapshot.map(|s| s.entities.len()).unwrap_or(0);
        let state = if !entry.enabled {
            SourceState::Disabled
        } else if !self.was_attempted(&(plugin, entry.id.clone())) {
            // Not loaded since start: a row from an earlier run describes entities this
            // process does not serve (yet).
            SourceState::Loading
        } else {
            row.map(|r| SourceState::parse(&r.state)).unwrap_or(SourceState::Loading)
        };
        let status = SourceStatus {
            state,
            entity_count,
            last_refresh_time: row.and_then(|r| r.last_refresh_time),
            last_refresh_status: row.and_then(|r| r.last_refresh_status.clone()),
            last_refresh_summary: row.and_then(|r| r.last_refresh_summary.clone()),
            last_error: row.and_then(|r| r.last_error.clone()),
            entities_loaded: row.map(|r| r.entities_loaded).unwrap_or(0),
            entities_removed: row.map(|r| r.entities_removed).unwrap_or(0),
            duration_ms: row.map(|r| r.duration_ms).unwrap_or(0),
            diagnostics: row.and_then(|r| serde_json::from_str(&r.diagnostics).ok()).unwrap_or_default(),
            retry_count: row.map_or(0, |r| r.retry_count),
            next_retry_at: row.and_then(|r| r.next_retry_at).filter(|_| entry.enabled && !entry.suspended),
        };
        let next_refresh_at = self.next_refresh_at(plugin, entry, row);
        SourceView { plugin, entry: entry.clone(), revision, status, next_refresh_at }
    }

    /// The catalog YAML of a yaml source, secrets redacted. `None` for other types or a missing
    /// file.
    pub fn content(&self, plugin: PluginKind, id: &str) -> Option<String> {
        let config = self.config();
        let entry = config.find(plugin, id)?;
        self.read_content(&config, plugin, entry).map(|t| redact_yaml_text(&t))
    }

    /// Entities of a plugin, optionally of one source and matching a search text, in file order.
    pub fn entities(
        &self,
        plugin: PluginKind,
        source_id: Option<&str>,
        search: Option<&str>,
    ) -> Vec<(String, Arc<Entity>)> {
        self.entities_page(plugin, source_id, search, None, usize::MAX)
            .items
            .into_iter()
            .map(|(sid, e, _)| (sid, e))
            .collect()
    }

    /// One page of [`Catalog::entities`]: up to `first` entities after `after`, in file order.
    ///
    /// Without a search a page costs O(first): the cursor names (source, entity), found through
    /// the snapshot's name index, not an offset to skip to. With a search every entity is
    /// matched once (the total count needs it), without allocating per entity. A cursor stays
    /// valid across refreshes: the next page starts after the same entity as long as it exists
    /// (if it was removed, at the position it had, which the next entity now holds).
    pub fn entities_page(
        &self,
        plugin: PluginKind,
        source_id: Option<&str>,
        search: Option<&str>,
        after: Option<&EntityCursor>,
        first: usize,
    ) -> EntityPage {
        let config = self.config();
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let lists: Vec<(&str, Arc<Snapshot>)> = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            config
                .sources()
                .filter(|(p, e)| *p == plugin && source_id.is_none_or(|s| s == e.id))
                .filter_map(|(p, e)| state.snapshots.get(&(p, e.id.clone())).map(|s| (e.id.as_str(), s.clone())))
                .collect()
        };
        // The global position (over the unfiltered list) the page starts at.
        let start = match after {
            None => 0,
            Some(c) => {
                let mut base = 0usize;
                let mut found = None;
                for (sid, snap) in &lists {
                    if *sid == c.source_id {
                        found = snap.position(&c.name).map(|i| base + i + 1);
                        break;
                    }
                    base += snap.entities.len();
                }
                // Gone: the next entity moved into its position.
                found.unwrap_or(c.ordinal)
            }
        };
        let mut page = EntityPage::default();
        let mut base = 0usize;
        for (sid, snap) in &lists {
            let len = snap.entities.len();
            match needle.as_deref() {
                None => {
                    page.total += len;
                    let from = start.saturating_sub(base).min(len);
                    let room = first.saturating_sub(page.items.len());
                    let to = from.saturating_add(room).min(len);
                    for (i, e) in snap.entities[from..to].iter().enumerate() {
                        page.items.push((sid.to_string(), e.clone(), EntityCursor::at(sid, e, base + from + i)));
                    }
                }
                Some(n) => {
                    for (i, e) in snap.entities.iter().enumerate() {
                        if !e.matches(n) {
                            continue;
                        }
                        page.total += 1;
                        let at = base + i;
                        if at < start {
                            page.has_previous = true;
                        } else if page.items.len() < first {
                            page.items.push((sid.to_string(), e.clone(), EntityCursor::at(sid, e, at)));
                        } else {
                            page.has_next = true;
                        }
                    }
                }
            }
            base += len;
        }
        if needle.is_none() {
            let start = start.min(page.total);
            page.has_previous = start > 0;
            page.has_next = start.saturating_add(page.items.len()) < page.total;
        }
        page
    }

    pub async fn revisions(&self, plugin: PluginKind, id: &str, limit: u64) -> Result<Vec<RevisionView>> {
        Ok(self.db.revisions(plugin.name(), id, limit).await?.into_iter().map(revision_view).collect())
    }

    /// Recent jobs, newest first (running ones with their live state).
    pub async fn recent_jobs(&self, limit: u64) -> Result<Vec<RefreshJob>> {
        Ok(self
            .db
            .recent_jobs(limit)
            .await?
            .into_iter()
            .map(|row| self.jobs.get(&row.id).unwrap_or_else(|| job_from_row(row)))
            .collect())
    }

    pub async fn job(&self, id: &str) -> Result<Option<RefreshJob>> {
        if let Some(job) = self.jobs.get(id) {
            return Ok(Some(job));
        }
        Ok(self.db.job(id).await?.map(job_from_row))
    }

    /// The readiness checks. Answers within about a second whatever the database does: the
    /// ping is cut at 800 ms (probes usually time out at 1 s).
    pub async fn readiness(&self) -> Vec<ReadyCheck> {
        let db = match tokio::time::timeout(std::time::Duration::from_millis(800), self.db.ping()).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Unavailable("no answer to a ping within 800 ms".into())),
        };
        let first = self.first_refresh_done.load(Ordering::Acquire);
        let config_errors = self.config_errors();
        let reachable = self.store.reachable().await;
        // An invalid configuration (a broken sources file, one plugin's broken ConfigMap) is
        // degraded, not failed: the last good one is served (per plugin) and failing the probe
        // would take every replica out for one bad edit. A store that cannot be read fails.
        let config_ok = reachable.is_ok();
        vec![
            ReadyCheck {
                name: "config",
                ok: config_ok,
                detail: match (reachable, config_errors.first()) {
                    (Err(why), _) => why,
                    (Ok(()), None) => format!("loaded {}", self.store.describe()),
                    (Ok(()), Some(_)) => format!(
                        "degraded: the configuration in {} is invalid or unreadable (the last good one is in use \
                         for the plugins it concerns; the others are unaffected): {}",
                        self.store.describe(),
                        config_errors.iter().map(|d| d.render()).collect::<Vec<_>>().join("; ")
                    ),
                },
            },
            ReadyCheck {
                name: "firstRefresh",
                ok: first,
                detail: if !first {
                    "initial refresh still running".into()
                } else {
                    match self.loading_sources() {
                        loading if loading.is_empty() => "done".into(),
                        // Degraded, not failed: these are somebody else's servers.
                        loading => {
                            format!("done; still loading (LOADING, served once they load): {}", loading.join(", "))
                        }
                    }
                },
            },
            ReadyCheck {
                name: "database",
                ok: db.is_ok(),
                detail: match db {
                    Ok(()) => format!("{} reachable", self.db.backend()),
                    Err(e) => e.to_string(),
                },
            },
        ]
    }
}
