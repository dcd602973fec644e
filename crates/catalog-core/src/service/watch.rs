//! Noticing edits made outside the API.
//!
//! Every `watch_interval` the watcher re-reads the sources file and every yaml catalog file and
//! compares each source's (entry, content) hash with its last recorded revision. A change is
//! validated, recorded as a revision with actor `external`, announced as
//! CONFIG_CHANGED_EXTERNALLY and refreshed (with the removal guard on, so a truncated file keeps
//! the last good entities). An invalid sources file keeps the last good configuration; its
//! error shows in `/readyz` and in the `configErrors` query. Polling with content hashes was
//! chosen over inotify: it also works on ConfigMap volumes (symlink swaps) and network file
//! systems, and costs a few file reads per interval.

use std::sync::Arc;

use super::{Catalog, RefreshRequest, Result, RevisionAction, SourceKey};
use crate::diagnostics::{Diagnostic, Layer};
use crate::events::EventKind;
use crate::store::LoadError;

impl Catalog {
    /// Runs until shutdown.
    pub(super) async fn watch_loop(self: Arc<Self>) {
        let Some(interval) = self.options.watch_interval else {
            return;
        };
        let mut shutdown = self.shutdown_signal();
        loop {
            // The store's own notification (a ConfigMap watch event) or the interval, whichever
            // comes first: the interval doubles as a resync when a notification was missed.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.store.changed() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.check_external().await {
                tracing::warn!(error = %e, "checking for external edits failed");
            }
        }
    }

    fn set_config_error(&self, diags: Option<Vec<Diagnostic>>) {
        let mut slot = self.config_error.lock().unwrap_or_else(|p| p.into_inner());
        if *slot == diags {
            return;
        }
        for d in diags.iter().flatten() {
            tracing::error!(
                "sources file edited outside the API is invalid; keeping the last good one: {}",
                d.render()
            );
        }
        *slot = diags;
        drop(slot);
        // `configErrors` and every cached answer computed before are out of date.
        self.bump();
    }

    /// One check for external edits. Returns the sources that changed.
    pub async fn check_external(self: &Arc<Self>) -> Result<Vec<SourceKey>> {
        let guard = self.write_lock.lock().await;
        let current = self.config();
        let new = match self.store.load().await {
            Ok(c) => c,
            Err(LoadError::Invalid(diags)) => {
                self.set_config_error(Some(diags));
                return Ok(Vec::new());
            }
            Err(LoadError::Unavailable(msg)) => {
                // Not read, so not applied: the change feed retries (never counting a change
                // this replica could not read as applied), the watcher tries again next round.
                self.set_config_error(Some(vec![Diagnostic::error(Layer::Syntax, msg.clone())]));
                return Err(super::CatalogError::Unavailable {
                    message: format!("the configuration could not be read: {msg}"),
                    retry_after_secs: 1,
                });
            }
        };
        // A plugin whose document is broken now keeps its last good one; the others' are used.
        let new = new.over(&current);
        let broken = new.errors();
        let mut removed = Vec::new();
        let edited = new.changed_plugins(&current);
        if !new.same_text(&current) {
            for doc in new.docs() {
                for w in &doc.file.warnings {
                    tracing::warn!("{}", w.render());
                }
            }
            for (p, e) in current.sources() {
                if new.find(p, &e.id).is_none() {
                    removed.push((p, e.id.clone()));
                }
            }
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for key in &removed {
                state.snapshots.remove(key);
            }
            state.config = Arc::new(new);
        }
        self.set_config_error((!broken.is_empty()).then_some(broken));
        let changed = self.record_disk_revisions(&self.config(), RevisionAction::External).await?;
        if changed.is_empty() && removed.is_empty() {
            return Ok(Vec::new());
        }
        // The refreshes below must read these edits, not join a job that read the files before.
        let write = self.note_write();
        drop(guard);
        let mut plugins: Vec<crate::plugins::PluginKind> = edited;
        plugins.extend(changed.iter().map(|((p, _), _)| *p).chain(removed.iter().map(|(p, _)| *p)));
        plugins.sort();
        plugins.dedup();
        for p in plugins {
            self.bump_plugin(p);
        }
        for (plugin, id) in &removed {
            tracing::info!(plugin = plugin.name(), source = %id, "source removed outside the API");
            self.events.publish(EventKind::ConfigChangedExternally, plugin.name(), Some(id), None, None);
        }
        for ((plugin, id), revision) in &changed {
            self.supersede(&(*plugin, id.clone()));
            tracing::info!(plugin = plugin.name(), source = %id, revision, "source changed outside the API");
            self.events.publish(EventKind::ConfigChangedExternally, plugin.name(), Some(id), Some(*revision), None);
            // In its own task: the caller may hold the cluster's plugin locks (a re-read from the
            // change feed), and a refresh can take long (a queue, url retries); nothing here
            // may keep other replicas' applies waiting on it.
            if self.config().find(*plugin, id).is_some_and(|e| e.suspended) {
                // Recorded, not loaded: a suspended source keeps serving what it served.
                tracing::info!(plugin = plugin.name(), source = %id, "source is suspended; not refreshing it after the edit");
                continue;
            }
            let this = self.clone();
            let (plugin, id) = (*plugin, id.clone());
            tokio::spawn(async move {
                let req =
                    RefreshRequest { after_write: Some(write), ..RefreshRequest::new(plugin, Some(&id), "external") };
                if let Err(e) = this.refresh(req).await {
                    tracing::warn!(plugin = plugin.name(), source = %id, error = %e, "refresh after an external edit failed");
                }
            });
        }
        Ok(changed.into_iter().map(|(k, _)| k).chain(removed).collect())
    }
}
