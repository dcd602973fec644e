//! What every replica serves, decided once and kept in the database.
//!
//! A refresh decides what a source serves (its content, or the last good one when the load
//! failed or the removal guard refused it) on the replica that runs the job, and records the
//! decision before serving it: the content's text under its sha256 in `catalog_contents`
//! ([`Catalog::keep_content`]), then the status row naming that hash. Every other replica
//! follows the decision ([`Catalog::reload_snapshot`], from the change feed's REFRESHED):
//! it loads exactly the decided content, from its own configuration when that is the same
//! text, else from the database, and never re-decides (no removal guard, no fetch). So all
//! replicas serve the same `contentHash` and entities after one fetch.
//!
//! Which texts are kept: a `url` source's always (the next start serves the last good entities
//! at once, whatever its host does: [`Catalog::seed_stored`]); a yaml source's only with
//! several replicas (PostgreSQL): on one replica its file is the copy. The current and the
//! previous content of each source are kept; older ones are pruned.
//!
//! Lock: the per-source lock, as for a refresh; the database call that reads a decision and
//! the swap happen under it, so a follow and a local refresh never interleave.

use super::*;
use crate::refresh::Snapshot;

impl Catalog {
    /// Whether a source's loaded text is kept in the database (see the module docs).
    pub(super) fn keeps_content(&self, entry: &SourceEntry) -> bool {
        entry.type_ == "url" || self.db.is_postgres()
    }

    /// Whether a url source has a kept content to serve (its status row names one).
    pub(super) fn has_stored_content(&self, plugin: PluginKind, entry: &SourceEntry) -> bool {
        entry.type_ == "url" && self.status_of(&(plugin, entry.id.clone())).is_some_and(|r| r.content_hash.is_some())
    }

    /// Keeps `text` under `hash`, unless it is kept already (a large yaml text is not sent
    /// again on every refresh of unchanged content); drops the contents no source refers to
    /// any more, now and then.
    pub(super) async fn keep_content(&self, hash: &str, text: &str) -> std::result::Result<(), DbError> {
        if hash.is_empty() || self.db.has_content(hash).await? {
            return Ok(());
        }
        self.db.store_content(hash, text).await?;
        if self.contents_kept.fetch_add(1, Ordering::Relaxed) % 16 == 15 {
            match self.db.prune_contents().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "pruned catalog contents no source refers to"),
                Err(e) => tracing::debug!(error = %e, "pruning catalog contents failed"),
            }
        }
        Ok(())
    }

    /// Serves `snapshot` for `key` from now on.
    pub(super) fn swap_snapshot(&self, key: &SourceKey, snapshot: Arc<Snapshot>) {
        let replaced = self.state.write().unwrap_or_else(|p| p.into_inner()).snapshots.insert(key.clone(), snapshot);
        // The old snapshot's entities that the new one does not share are freed when the last
        // reader lets go: let the workers collect afterwards.
        drop(replaced);
        crate::allocator::released();
    }

    /// Another replica refreshed this source: serve what it decided, without writing a status
    /// row or starting a job. Fails (and the change feed retries) only when the decision or
    /// its content cannot be read.
    pub(super) async fn reload_snapshot(&self, plugin: PluginKind, id: &str) -> Result<()> {
        let key = (plugin, id.to_string());
        let lock = self.source_lock(&key);
        let _guard = lock.lock().await;
        let Some(row) = self.db.status(plugin.name(), id).await? else { return Ok(()) };
        self.remember_status(row.clone());
        let state = SourceState::parse(&row.state);
        if state == SourceState::Loading {
            return Ok(());
        }
        let snapshot = match (&row.content_hash, state) {
            (_, SourceState::Disabled) | (None, _) => Snapshot::default(),
            (Some(hash), _) => {
                if self.snapshot(&key).is_some_and(|s| s.content_hash == *hash) {
                    self.mark_attempted(&key);
                    self.bump_plugin(plugin);
                    return Ok(());
                }
                match self.decided_snapshot(plugin, id, hash, row.etag.clone()).await? {
                    Some(s) => s,
                    None => {
                        return Err(CatalogError::Unavailable {
                            message: format!(
                                "the content {hash} that source {plugin}/{id} serves on another replica is neither in this replica's configuration nor in the database"
                            ),
                            retry_after_secs: 1,
                        });
                    }
                }
            }
        };
        self.swap_snapshot(&key, Arc::new(snapshot));
        self.mark_attempted(&key);
        self.bump_plugin(plugin);
        Ok(())
    }

    /// At start, before a url source is fetched: serve the content the last good load of it
    /// kept, so the source is not empty (or LOADING) for as long as its host takes, and a
    /// failed fetch keeps these entities. Nothing when there is none.
    pub(super) async fn seed_stored(&self, plugin: PluginKind, id: &str) {
        let key = (plugin, id.to_string());
        let lock = self.source_lock(&key);
        let _guard = lock.lock().await;
        if self.snapshot(&key).is_some() {
            return;
        }
        // The read model holds the status rows since the catalog opened.
        let Some(row) = self.status_of(&key) else { return };
        let (Some(hash), false) = (row.content_hash, SourceState::parse(&row.state) == SourceState::Disabled) else {
            return;
        };
        match self.decided_snapshot(plugin, id, &hash, row.etag).await {
            Ok(Some(s)) => {
                tracing::info!(
                    plugin = plugin.name(),
                    source = id,
                    entities = s.entities.len(),
                    "serving the last good content of a url source until it is fetched"
                );
                self.swap_snapshot(&key, Arc::new(s));
                self.mark_attempted(&key);
                self.bump_plugin(plugin);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(plugin = plugin.name(), source = id, error = %e, "could not load the last good content of a url source")
            }
        }
    }

    /// The snapshot of content `hash` for a source: parsed from this replica's own copy when
    /// it is that text (a yaml source whose file or ConfigMap key already holds it), else
    /// from the database. `None`: the content is nowhere.
    async fn decided_snapshot(
        &self,
        plugin: PluginKind,
        id: &str,
        hash: &str,
        etag: Option<String>,
    ) -> Result<Option<Snapshot>> {
        let config = self.config();
        let Some(entry) = config.find(plugin, id).cloned() else {
            return Ok(None);
        };
        let own = match entry.type_.as_str() {
            "yaml" => self.read_content(&config, plugin, &entry).filter(|t| sha256_hex(&[t.as_bytes()]) == hash),
            _ => None,
        };
        let text = match own {
            Some(t) => t,
            None => match self.db.content(hash).await? {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        let label =
            entry.url().map(str::to_string).or_else(|| entry.yaml_catalog().map(str::to_string)).unwrap_or_default();
        let loaded = self.parse_source(plugin, entry, refresh::Text { text, label, etag: etag.clone() }, false).await;
        match loaded {
            super::decide::Loaded::Ok { entities, content_hash, .. } => {
                let old = self.snapshot(&(plugin, id.to_string()));
                let mut snap = Snapshot::reusing(old.as_deref(), entities, content_hash);
                snap.etag = etag;
                Ok(Some(snap))
            }
            // It parsed where it was decided; here it does not (another build?).
            _ => {
                Err(CatalogError::Internal(format!("the decided content {hash} of {plugin}/{id} does not parse here")))
            }
        }
    }
}
