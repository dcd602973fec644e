//! Validate, apply and rollback: the write path (invariants 2, 3, 4b and 6).

use super::*;
use crate::paths;
use crate::sources::{SourceKind, SourcesFile};
use crate::store::{StoreError, Write};

/// How many times an apply re-reads and retries after someone else wrote the same plugin's
/// configuration (a ConfigMap 409) without touching the applied source.
const COMMIT_ATTEMPTS: usize = 3;

impl Catalog {
    // ---- validate / apply / rollback ----------------------------------------------------------

    /// Fills in what an edit may leave out (a yaml source keeps its catalog path and content)
    /// and decides where its bytes go: the server assigns the location of a new source
    /// (`{id}-{plugin}.yaml` beside the sources file), an existing one keeps its own, and new
    /// content must be writable there (see `paths`). Refuses before anything is written.
    fn prepare(&self, config: &Config, mut draft: SourceDraft) -> Result<SourceDraft> {
        if draft.entry.kind() != SourceKind::Yaml {
            return Ok(draft);
        }
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let existing = config.find(plugin, &id);
        let requested = draft
            .entry
            .properties
            .get("yamlCatalogPath")
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| format!("{v:?}")));
        let invalid = |d: Diagnostic| CatalogError::Validation(ValidationReport::from_diagnostics(vec![d]));
        let rel = paths::assign(plugin, &id, requested.as_deref(), existing).map_err(invalid)?;
        draft.entry.properties.insert("yamlCatalogPath".into(), rel.clone().into());
        if draft.content.is_some() {
            let doc = config
                .doc(plugin)
                .ok_or_else(|| CatalogError::Internal(format!("no configuration for plugin {plugin}")))?;
            self.check_writable(doc, plugin, &id, &rel).map_err(invalid)?;
        } else if existing.is_some() {
            draft.content = self.read_catalog(config, plugin, &id, &rel);
        }
        Ok(draft)
    }

    /// The layered validation of a prepared draft plus what needs the server's settings: the
    /// outbound URL policy of `url` sources (`--url-allow`).
    fn check_draft(&self, draft: &SourceDraft, existing: Option<&SourceEntry>) -> crate::validate::Checked {
        let mut checked = check(draft, existing);
        if draft.entry.kind() == SourceKind::Url
            && let Some(url) = draft.entry.url()
            && let Err(msg) = crate::outbound::check_source_url(&self.options.fetch.url_allow, url)
        {
            let mut diags: Vec<Diagnostic> = checked.report.diagnostics().cloned().collect();
            diags.push(
                Diagnostic::error(crate::diagnostics::Layer::Security, msg)
                    .field("input.properties.url")
                    .hint("point the source at a catalog host outside the cluster's private ranges, or list the host with --url-allow"),
            );
            checked.report = ValidationReport::from_diagnostics(diags);
        }
        checked
    }

    /// Turns a partial edit into a full draft against the current sources file.
    pub fn draft(&self, plugin: PluginKind, patch: SourcePatch) -> SourceDraft {
        let config = self.config();
        let existing = config.find(plugin, &patch.id).cloned();
        patch.into_draft(plugin, existing.as_ref())
    }

    /// Validates a (partial) edit against the current sources file without changing anything.
    /// The CPU work (YAML parsing, plugin checks) runs on the blocking pool, so a large or
    /// hostile input never stalls the async workers that serve everyone else's requests; its
    /// cost is bounded by the body limit and the linear-time depth check.
    pub async fn validate_source(self: &Arc<Self>, plugin: PluginKind, patch: SourcePatch) -> ValidationReport {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.validate(this.draft(plugin, patch))).await {
            Ok(report) => report,
            Err(e) => ValidationReport::from_diagnostics(vec![Diagnostic::error(
                crate::diagnostics::Layer::Semantics,
                format!("validation did not finish: {e}"),
            )]),
        }
    }

    pub fn validate(&self, draft: SourceDraft) -> ValidationReport {
        let config = self.config();
        let existing = config.find(draft.plugin, &draft.entry.id).cloned();
        match self.prepare(&config, draft) {
            Ok(draft) => self.check_draft(&draft, existing.as_ref()).report,
            Err(CatalogError::Validation(report)) => report,
            Err(e) => ValidationReport::from_diagnostics(vec![Diagnostic::error(
                crate::diagnostics::Layer::Semantics,
                e.to_string(),
            )]),
        }
    }

    /// Applies a (partial) edit. The patch is merged with the source as it is on disk now,
    /// under the write lock, so fields it leaves out keep their current values even when the
    /// file was edited outside the API a moment ago.
    pub async fn apply(
        self: &Arc<Self>,
        plugin: PluginKind,
        patch: SourcePatch,
        opts: ApplyOptions,
        actor: &str,
    ) -> Result<ApplyOutcome> {
        self.apply_as(Proposed::Patch(plugin, patch), opts, actor, RevisionAction::Apply).await
    }

    pub async fn rollback(
        self: &Arc<Self>,
        plugin: PluginKind,
        id: &str,
        revision: i32,
        opts: ApplyOptions,
        actor: &str,
    ) -> Result<ApplyOutcome> {
        let row =
            self.db.revision(plugin.name(), id, revision).await?.ok_or_else(|| {
                CatalogError::NotFound(format!("revision {revision} of {plugin}/{id} does not exist"))
            })?;
        let entry: SourceEntry = serde_json::from_str(&row.entry)
            .map_err(|e| CatalogError::Internal(format!("revision {revision} of {plugin}/{id} is unreadable: {e}")))?;
        let draft = SourceDraft { plugin, entry, content: row.content };
        self.apply_as(Proposed::Draft(draft), opts, actor, RevisionAction::Rollback).await
    }

    #[tracing::instrument(name = "apply", skip_all, fields(action, actor))]
    async fn apply_as(
        self: &Arc<Self>,
        proposed: Proposed,
        opts: ApplyOptions,
        actor: &str,
        action: RevisionAction,
    ) -> Result<ApplyOutcome> {
        let guard = self.write_lock.lock().await;
        // Across replicas: the plugin's advisory lock (a no-op on SQLite), released with `guard`.
        let guard = (guard, self.db.lock_plugin(proposed.plugin().name()).await?);
        let mut attempt = 0;
        let (draft, revision, write, report, impact) = loop {
            attempt += 1;
            // Merge and splice against the same bytes: the configuration as the store has it
            // now, read under the lock (not our cached copy, which may be a watch interval old).
            let config = self.store.load().await.map_err(|e| match e {
                LoadError::Invalid(_) => CatalogError::Internal(format!(
                    "the sources {} is invalid ({}), fix it before applying:\n{}",
                    if self.store.kind() == "file" { "file on disk" } else { "ConfigMap" },
                    self.store.describe(),
                    e.render()
                )),
                LoadError::Unavailable(msg) => CatalogError::Unavailable { message: msg, retry_after_secs: 5 },
            })?;
            // Only the applied plugin's document has to be good; the others keep their last
            // good one (a broken MCP ConfigMap does not stop model applies).
            let config = config.over(&self.config());
            if let Some(diags) = config.broken(proposed.plugin()) {
                // Where and what (the ConfigMap's own diagnostics), and what to do first.
                let plugin = proposed.plugin();
                let mut all = vec![
                    Diagnostic::error(
                        Layer::Syntax,
                        format!(
                            "the sources configuration of plugin {plugin} ({}) is invalid or missing",
                            self.store.describe()
                        ),
                    )
                    .hint(format!(
                        "fix or restore plugin {plugin}'s sources list first (see configErrors); nothing was changed"
                    )),
                ];
                all.extend(diags.iter().cloned());
                return Err(CatalogError::Validation(ValidationReport::from_diagnostics(all)));
            }
            match self.apply_once(&config, &proposed, &opts, actor, action).await? {
                Step::Done { draft, revision, report, impact } => {
                    let write = self.note_write();
                    break (draft, revision, write, report, impact);
                }
                Step::Unchanged(outcome) => {
                    drop(guard);
                    return self.unchanged(outcome, &opts, actor).await;
                }
                Step::Raced(msg) if attempt < COMMIT_ATTEMPTS => {
                    tracing::info!(attempt, "the configuration changed while applying ({msg}); re-reading");
                }
                Step::Raced(msg) => {
                    return Err(CatalogError::Unavailable {
                        message: format!("the configuration kept changing while applying ({msg}); nothing was changed"),
                        retry_after_secs: 1,
                    });
                }
            }
        };
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        // A load of the old content in progress (a url host that stalls) is given up: its
        // result is stale, and the refresh asked for below would wait for it.
        self.supersede(&(plugin, id.clone()));
        self.bump_plugin(plugin);
        drop(guard);
        tracing::info!(plugin = plugin.name(), source = %id, revision, actor, action = action.as_str(), "source applied");
        let kind = if action == RevisionAction::Rollback { EventKind::RolledBack } else { EventKind::Applied };
        self.events.publish(kind, plugin.name(), Some(&id), Some(revision), None);

        let refresh = if opts.refresh_after_apply {
            // The removal guard already ran against this exact content above. The refresh must
            // read this write: it may join only a job registered after it.
            let req = RefreshRequest {
                confirm_removals: true,
                after_write: Some(write),
                unqueued: true,
                ..RefreshRequest::new(plugin, Some(&id), actor)
            };
            Some(self.refresh(req).await?)
        } else {
            None
        };
        let source = self
            .source(plugin, &id)
            .await?
            .ok_or_else(|| CatalogError::Internal("the applied source vanished".into()))?;
        Ok(ApplyOutcome { source, revision, changed: true, dry_run: false, validation: report, impact, refresh })
    }

    /// A dry run or an apply that changes nothing: no write; an optional refresh.
    async fn unchanged(self: &Arc<Self>, outcome: Unchanged, opts: &ApplyOptions, actor: &str) -> Result<ApplyOutcome> {
        let Unchanged { draft, current, report, impact } = outcome;
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let refresh = if !opts.dry_run && opts.refresh_after_apply {
            // Nothing was written: any running job sees the current content.
            let req = RefreshRequest { confirm_removals: true, ..RefreshRequest::new(plugin, Some(&id), actor) };
            Some(self.refresh(req).await?)
        } else {
            None
        };
        // A dry run of a new source has nothing stored yet: show the draft.
        let source = match self.source(plugin, &id).await? {
            Some(s) => s,
            None => self.view(plugin, &draft.entry, None, None),
        };
        Ok(ApplyOutcome {
            source,
            revision: current,
            changed: false,
            dry_run: opts.dry_run,
            validation: report,
            impact,
            refresh,
        })
    }

    /// One attempt of an apply against `config` (read under the write lock): every check, then
    /// the commit and the revision. `Raced`: the store refused the commit because someone else
    /// wrote the plugin's configuration and the applied source did not move; the caller
    /// re-reads and tries again.
    async fn apply_once(
        &self,
        config: &Config,
        proposed: &Proposed,
        opts: &ApplyOptions,
        actor: &str,
        action: RevisionAction,
    ) -> Result<Step> {
        let draft = proposed.draft(config);
        let (plugin, id) = (draft.plugin, draft.entry.id.clone());
        let doc = config
            .doc(plugin)
            .cloned()
            .ok_or_else(|| CatalogError::Internal(format!("no configuration for plugin {plugin}")))?;
        // 1. Valid, at the expected revision, and not removing most entities unasked.
        let draft = self.prepare(config, draft)?;
        let checked = self.check_draft(&draft, config.find(plugin, &id));
        if !checked.report.valid() {
            return Err(CatalogError::Validation(checked.report));
        }
        let latest = self.db.latest_revision(plugin.name(), &id).await?;
        let current = latest.as_ref().map(|r| r.revision).unwrap_or(0);
        if let Some(expected) = opts.expected_revision
            && expected != current
        {
            return Err(CatalogError::Conflict { expected, current });
        }
        let key = (plugin, id.clone());
        let impact = self.removal_guard(&key, &draft, &checked, opts)?;
        // 2. What to write, proven before anything is written.
        let (write, content_changed, entry_changed) = self.plan_write(config, &doc, &id, &draft)?;
        let changed = content_changed || entry_changed || latest.is_none();
        // What the store cannot hold (a ConfigMap over 1 MiB) is refused before anything is
        // written, dry runs included.
        self.store.check_write(&write).map_err(invalid)?;
        if opts.dry_run || !changed {
            return Ok(Step::Unchanged(Unchanged { draft, current, report: checked.report, impact }));
        }
        // 3. Commit to the store, then record the revision (or revert the commit).
        let committed = match self.store.commit(write).await {
            Ok(c) => c,
            Err(StoreError::Conflict(msg)) => return self.raced(plugin, &id, &doc, msg, opts, current).await,
            Err(StoreError::Invalid(d)) => return Err(invalid(*d)),
            Err(StoreError::Unavailable(message)) => {
                return Err(CatalogError::Unavailable {
                    message: format!("{message}; nothing was changed"),
                    retry_after_secs: 5,
                });
            }
            Err(StoreError::Failed(msg)) => return Err(CatalogError::Internal(msg)),
        };
        let content_hash = revision_hash(&draft.entry, draft.content.as_deref());
        let revision = match self.record_revision(&key, &draft, current, &content_hash, opts, actor, action).await {
            Ok(revision) => revision,
            Err(e) => {
                self.store.revert(committed).await;
                return Err(e);
            }
        };
        // 4. Serve what the store now has.
        self.reload_after_apply().await;
        self.remember_revision(&key, revision);
        self.set_known(key, content_hash);
        Ok(Step::Done { draft, revision, report: checked.report, impact })
    }

    /// What the change does to the entities served now; refused when it removes most of them
    /// unasked. Disabling a source removes its entities on purpose: the guard is for content
    /// that shrank (a truncated file), so it applies to enabled sources only.
    fn removal_guard(
        &self,
        key: &SourceKey,
        draft: &SourceDraft,
        checked: &crate::validate::Checked,
        opts: &ApplyOptions,
    ) -> Result<crate::refresh::Impact> {
        let old_snapshot = self.snapshot(key);
        let impact = if !draft.entry.enabled {
            diff(old_snapshot.as_deref(), &[])
        } else if checked.entities.is_none() && draft.entry.kind() != crate::sources::SourceKind::Yaml {
            // A url source's entry edit proposes no entities: what it serves next is decided by
            // its next fetch (under the refresh's own removal guard), not by this apply.
            let served = old_snapshot.as_ref().map_or(0, |s| s.entities.len());
            crate::refresh::Impact { unchanged: served, current_count: served, ..Default::default() }
        } else {
            let new_entities = filter_entities(&draft.entry, checked.entities.clone().unwrap_or_default());
            diff(old_snapshot.as_deref(), &new_entities)
        };
        if draft.entry.enabled && impact.needs_confirmation() && !opts.confirm_removals {
            return Err(CatalogError::RemovalsNeedConfirmation(impact));
        }
        Ok(impact)
    }

    /// The store write for `draft`, and whether its content and its entry change. The new
    /// location is re-checked here, under the lock, right before the write (symlinks resolved,
    /// ownership, reserved files), and the rewritten sources text must read back to exactly
    /// the entry; an entry-only edit writes no catalog, so a deployer's location outside the
    /// directory does not block a rename.
    fn plan_write<'a>(
        &self,
        config: &Config,
        doc: &'a Doc,
        id: &'a str,
        draft: &SourceDraft,
    ) -> Result<(Write<'a>, bool, bool)> {
        let plugin = draft.plugin;
        let existing = config.find(plugin, id).cloned();
        let rel = draft.entry.yaml_catalog_path().filter(|_| draft.content.is_some()).map(str::to_string);
        let old_content = rel.as_deref().and_then(|rel| self.read_catalog(config, plugin, id, rel));
        let content_changed = draft.content.is_some() && draft.content != old_content;
        if let Some(rel) = rel.as_deref().filter(|_| content_changed) {
            self.check_writable(doc, plugin, id, rel).map_err(invalid)?;
        }
        let entry_changed = existing.as_ref() != Some(&draft.entry);
        let new_sources_text = if entry_changed { Some(doc.file.with_entry(plugin, &draft.entry)) } else { None };
        if let Some(text) = &new_sources_text {
            let parsed = SourcesFile::parse(&doc.file.path, text.clone()).map_err(|d| {
                CatalogError::Internal(format!(
                    "refusing to write: the rewritten sources file does not parse: {}",
                    d[0].render()
                ))
            })?;
            if parsed.find(plugin, id) != Some(&draft.entry) {
                return Err(CatalogError::Internal(
                    "refusing to write: the rewritten sources file does not read back to the applied entry".into(),
                ));
            }
        }
        let write = Write {
            plugin,
            source_id: id,
            base: doc,
            sources_text: new_sources_text,
            catalog: match (&rel, &draft.content) {
                (Some(rel), Some(content)) if content_changed => Some((rel.clone(), content.clone())),
                _ => None,
            },
        };
        Ok((write, content_changed, entry_changed))
    }

    /// Records revision `current + 1` of the applied source.
    #[expect(clippy::too_many_arguments, reason = "the revision's parts, each used once")]
    async fn record_revision(
        &self,
        key: &SourceKey,
        draft: &SourceDraft,
        current: i32,
        content_hash: &str,
        opts: &ApplyOptions,
        actor: &str,
        action: RevisionAction,
    ) -> Result<i32> {
        self.db
            .insert_revision(NewRevision {
                plugin: key.0.name(),
                source_id: &key.1,
                revision: current + 1,
                content_hash,
                entry: &entry_json(&draft.entry),
                content: draft.content.as_deref(),
                action: action.as_str(),
                actor,
            })
            .await
            .map_err(|e| match e {
                DbError::RevisionTaken { .. } => {
                    CatalogError::Conflict { expected: opts.expected_revision.unwrap_or(current), current: current + 1 }
                }
                DbError::Unavailable(_) => CatalogError::Unavailable {
                    message: "the database is unavailable, so the revision could not be recorded; nothing was changed"
                        .into(),
                    retry_after_secs: 5,
                },
                other => CatalogError::Internal(format!("recording the revision failed: {other}; nothing was changed")),
            })
    }

    /// What was written is what the store now has: read it back (cheap; a ConfigMap GET or a
    /// file read) rather than assembling it by hand.
    async fn reload_after_apply(&self) {
        match self.store.load().await {
            Ok(new_config) => {
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                state.config = Arc::new(new_config.over(&state.config));
            }
            Err(e) => {
                tracing::warn!(error = %e.render(), "re-reading the configuration after an apply failed; the watcher will retry")
            }
        }
    }

    /// The store refused a commit because the plugin's configuration changed since it was read.
    /// If the applied source itself changed (entry or catalog), that is a CONFLICT: the other
    /// write is recorded as a revision first, so the caller can see what it is. Otherwise the
    /// caller re-reads and tries again.
    async fn raced(
        &self,
        plugin: PluginKind,
        id: &str,
        base: &Doc,
        msg: String,
        opts: &ApplyOptions,
        current: i32,
    ) -> Result<Step> {
        let now = self
            .store
            .load()
            .await
            .map_err(|e| CatalogError::Unavailable { message: e.render(), retry_after_secs: 5 })?;
        let before = base.file.find(plugin, id);
        let after = now.find(plugin, id);
        let content = |doc: &Doc, e: Option<&SourceEntry>| {
            e.and_then(|e| e.yaml_catalog_path().and_then(|rel| self.store.read_catalog(doc, plugin, id, rel)))
        };
        let moved = before != after || now.doc(plugin).is_none_or(|d| content(d, after) != content(base, before));
        if !moved {
            return Ok(Step::Raced(msg));
        }
        // Only this plugin's sources: another plugin's document may hold a write another
        // replica is recording right now under that plugin's lock, which we do not hold.
        let recorded = self.record_disk_revisions_of(&now, Some(plugin), RevisionAction::External).await?;
        let latest = recorded.iter().find(|(k, _)| k.0 == plugin && k.1 == id).map(|(_, r)| *r).unwrap_or(current);
        Err(CatalogError::Conflict { expected: opts.expected_revision.unwrap_or(current), current: latest })
    }
}

/// The result of one apply attempt.
enum Step {
    Done { draft: SourceDraft, revision: i32, report: ValidationReport, impact: Impact },
    Unchanged(Unchanged),
    Raced(String),
}

/// A dry run, or an apply whose input equals what is stored.
struct Unchanged {
    draft: SourceDraft,
    current: i32,
    report: ValidationReport,
    impact: Impact,
}

/// What an apply proposes: a partial edit (merged under the write lock) or a whole source (a
/// rollback's recorded revision).
pub(super) enum Proposed {
    Patch(PluginKind, SourcePatch),
    Draft(SourceDraft),
}

impl Proposed {
    /// The whole draft: a patch is completed from the source's current entry in `config`.
    fn draft(&self, config: &Config) -> SourceDraft {
        match self {
            Proposed::Draft(d) => d.clone(),
            Proposed::Patch(plugin, patch) => {
                let existing = config.find(*plugin, &patch.id).cloned();
                patch.clone().into_draft(*plugin, existing.as_ref())
            }
        }
    }
}

/// A single diagnostic as a validation failure.
fn invalid(d: Diagnostic) -> CatalogError {
    CatalogError::Validation(ValidationReport::from_diagnostics(vec![d]))
}

/// Applies `includedModels` / `excludedModels` (exclusions win).
pub(super) fn filter_entities(entry: &SourceEntry, entities: Vec<Entity>) -> Vec<Entity> {
    if entry.included_models.is_none() && entry.excluded_models.is_none() {
        return entities;
    }
    // Compiled once per load, each name lower-cased once: entities x patterns string work
    // (and two allocations per pair) was the cost before.
    let included = entry.included_models.as_deref().map(Patterns::new);
    let excluded = entry.excluded_models.as_deref().map(Patterns::new);
    entities
        .into_iter()
        .filter(|e| {
            let name = e.name().to_lowercase();
            included.as_ref().is_none_or(|p| p.matches(&name)) && !excluded.as_ref().is_some_and(|p| p.matches(&name))
        })
        .collect()
}
