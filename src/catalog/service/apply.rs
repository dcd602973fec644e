//! Validate, apply and rollback: the write path (invariants 2, 3, 4b and 6).

use super::*;

impl Catalog {
    // ---- validate / apply / rollback ----------------------------------------------------------

    /// Fills in what an edit may leave out (a yaml source keeps its catalog path and content)
    /// and decides where its bytes go: the server assigns the location of a new source
    /// (`{id}-{plugin}.yaml` beside the sources file), an existing one keeps its own, and new
    /// content must be writable there (see `paths`). Refuses before anything is written.
    fn prepare(&self, file: &SourcesFile, mut draft: SourceDraft) -> Result<SourceDraft> {
        if draft.entry.type_ != "yaml" {
            return Ok(draft);
        }
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let existing = file.find(plugin, &id);
        let requested = draft
            .entry
            .properties
            .get("yamlCatalogPath")
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| format!("{v:?}")));
        let invalid = |d: Diagnostic| CatalogError::Validation(ValidationReport::from_diagnostics(vec![d]));
        let rel = paths::assign(plugin, &id, requested.as_deref(), existing).map_err(invalid)?;
        draft.entry.properties.insert("yamlCatalogPath".into(), rel.clone().into());
        if draft.content.is_some() {
            self.writable_catalog_path(file, plugin, &id, &rel).map_err(invalid)?;
        } else if existing.is_some() {
            draft.content = self.read_catalog(file, plugin, &id, &rel).ok().flatten();
        }
        Ok(draft)
    }

    /// The layered validation of a prepared draft plus what needs the server's settings: the
    /// outbound URL policy of `url` sources (`--url-allow`).
    fn check_draft(&self, draft: &SourceDraft, existing: Option<&SourceEntry>) -> crate::catalog::validate::Checked {
        let mut checked = check(draft, existing);
        if draft.entry.type_ == "url"
            && let Some(url) = draft.entry.url()
            && let Err(msg) = crate::catalog::outbound::check_source_url(&self.options.fetch.url_allow, url)
        {
            let mut diags: Vec<Diagnostic> = checked.report.diagnostics().cloned().collect();
            diags.push(
                Diagnostic::error(crate::catalog::diagnostics::Layer::Security, msg)
                    .field("input.properties.url")
                    .hint("point the source at a catalog host outside the cluster's private ranges, or list the host with --url-allow"),
            );
            checked.report = ValidationReport::from_diagnostics(diags);
        }
        checked
    }

    /// Turns a partial edit into a full draft against the current sources file.
    pub fn draft(&self, plugin: PluginKind, patch: SourcePatch) -> SourceDraft {
        let file = self.file();
        let existing = file.find(plugin, &patch.id).cloned();
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
                crate::catalog::diagnostics::Layer::Semantics,
                format!("validation did not finish: {e}"),
            )]),
        }
    }

    pub fn validate(&self, draft: SourceDraft) -> ValidationReport {
        let file = self.file();
        let existing = file.find(draft.plugin, &draft.entry.id).cloned();
        match self.prepare(&file, draft) {
            Ok(draft) => self.check_draft(&draft, existing.as_ref()).report,
            Err(CatalogError::Validation(report)) => report,
            Err(e) => ValidationReport::from_diagnostics(vec![Diagnostic::error(
                crate::catalog::diagnostics::Layer::Semantics,
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
        self.apply_as(Proposed::Patch(plugin, patch), opts, actor, "apply").await
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
        self.apply_as(Proposed::Draft(draft), opts, actor, "rollback").await
    }

    #[tracing::instrument(name = "apply", skip_all, fields(action, actor))]
    async fn apply_as(
        self: &Arc<Self>,
        proposed: Proposed,
        opts: ApplyOptions,
        actor: &str,
        action: &str,
    ) -> Result<ApplyOutcome> {
        let guard = self.write_lock.lock().await;
        let guard = (guard, self.db.lock_plugin(proposed.plugin().name()).await?);

        // Merge and splice against the same bytes: the file as it is on disk now, read under
        // the lock (not our cached copy, which may be a watch interval old).
        let file = SourcesFile::read(&self.sources_path).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(Diagnostic::render).collect();
            CatalogError::Internal(format!(
                "the sources file on disk is invalid, fix it before applying:\n{}",
                lines.join("\n")
            ))
        })?;
        let draft = match proposed {
            Proposed::Draft(d) => d,
            Proposed::Patch(plugin, patch) => {
                let existing = file.find(plugin, &patch.id).cloned();
                patch.into_draft(plugin, existing.as_ref())
            }
        };
        let plugin = draft.plugin;
        let id = draft.entry.id.clone();
        let draft = self.prepare(&file, draft)?;
        let checked = self.check_draft(&draft, file.find(plugin, &id));
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
        let old_snapshot = self.snapshot(&key);
        let new_entities = filter_entities(&draft.entry, checked.entities.clone().unwrap_or_default());
        let impact = if draft.entry.enabled {
            diff(old_snapshot.as_deref(), &new_entities)
        } else {
            diff(old_snapshot.as_deref(), &[])
        };
        // Disabling a source removes its entities on purpose; the guard is for content that
        // shrank (a truncated file), so it applies to enabled sources only.
        if draft.entry.enabled && impact.needs_confirmation() && !opts.confirm_removals {
            return Err(CatalogError::RemovalsNeedConfirmation(impact));
        }

        let existing = file.find(plugin, &id).cloned();
        let rel = draft.entry.yaml_catalog_path().filter(|_| draft.content.is_some());
        let old_content = match rel {
            Some(rel) => self.read_catalog(&file, plugin, &id, rel).map_err(|e| {
                CatalogError::Internal(format!("cannot read the current catalog of {plugin}/{id} ({rel}): {e}"))
            })?,
            None => None,
        };
        let content_changed = draft.content.is_some() && draft.content != old_content;
        // Where new content goes: re-checked here, under the lock, right before the write
        // (symlinks resolved, ownership, reserved files), not only when the input was checked.
        // An entry-only edit writes no catalog, so a deployer's location outside the directory
        // does not block a rename.
        let catalog_path = match rel {
            Some(rel) if content_changed => Some(
                self.writable_catalog_path(&file, plugin, &id, rel)
                    .map_err(|d| CatalogError::Validation(ValidationReport::from_diagnostics(vec![d])))?,
            ),
            _ => None,
        };
        let entry_changed = existing.as_ref() != Some(&draft.entry);
        let changed = content_changed || entry_changed || latest.is_none();

        if opts.dry_run || !changed {
            drop(guard);
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
            return Ok(ApplyOutcome {
                source,
                revision: current,
                changed: false,
                dry_run: opts.dry_run,
                validation: checked.report,
                impact,
                refresh,
            });
        }

        // Compute the new sources text and prove it reads back to exactly our entry before
        // touching the disk.
        let new_sources_text = if entry_changed { Some(file.with_entry(plugin, &draft.entry)) } else { None };
        let new_file = match &new_sources_text {
            Some(text) => {
                let parsed = SourcesFile::parse(&self.sources_path, text.clone()).map_err(|d| {
                    CatalogError::Internal(format!(
                        "refusing to write: the rewritten sources file does not parse: {}",
                        d[0].render()
                    ))
                })?;
                if parsed.find(plugin, &id) != Some(&draft.entry) {
                    return Err(CatalogError::Internal(
                        "refusing to write: the rewritten sources file does not read back to the applied entry".into(),
                    ));
                }
                parsed
            }
            None => file.clone(),
        };

        let mut undo: Vec<(PathBuf, Option<String>)> = Vec::new();
        let result: Result<RevisionRow> = async {
            if content_changed && let (Some(path), Some(content)) = (&catalog_path, &draft.content) {
                undo.push((path.clone(), old_content.clone()));
                write_atomic(path, content.as_bytes()).map_err(|e| {
                    CatalogError::Internal(format!("writing {} failed: {e}; nothing was changed", path.display()))
                })?;
            }
            if let Some(text) = &new_sources_text {
                undo.push((self.sources_path.clone(), Some(file.text.clone())));
                write_atomic(&self.sources_path, text.as_bytes()).map_err(|e| {
                    CatalogError::Internal(format!(
                        "writing {} failed: {e}; nothing was changed",
                        self.sources_path.display()
                    ))
                })?;
            }
            let row = self
                .db
                .insert_revision(NewRevision {
                    plugin: plugin.name(),
                    source_id: &id,
                    revision: current + 1,
                    content_hash: &revision_hash(&draft.entry, draft.content.as_deref()),
                    entry: &entry_json(&draft.entry),
                    content: draft.content.as_deref(),
                    action,
                    actor,
                })
                .await
                .map_err(|e| match e {
                    DbError::RevisionTaken { .. } => CatalogError::Conflict {
                        expected: opts.expected_revision.unwrap_or(current),
                        current: current + 1,
                    },
                    DbError::Unavailable(_) => CatalogError::Unavailable {
                        message:
                            "the database is unavailable, so the revision could not be recorded; nothing was changed"
                                .into(),
                        retry_after_secs: 5,
                    },
                    other => {
                        CatalogError::Internal(format!("recording the revision failed: {other}; nothing was changed"))
                    }
                })?;
            Ok(row)
        }
        .await;
        let row = match result {
            Ok(row) => row,
            Err(e) => {
                for (path, old) in undo.iter().rev() {
                    let restored = match old {
                        Some(bytes) => write_atomic(path, bytes.as_bytes()),
                        None => std::fs::remove_file(path),
                    };
                    if let Err(re) = restored {
                        tracing::error!(path = %path.display(), error = %re, "could not restore a file after a failed apply");
                    }
                }
                return Err(e);
            }
        };
        self.state.write().unwrap_or_else(|p| p.into_inner()).file = Arc::new(new_file);
        self.set_known(key.clone(), row.content_hash.clone());
        let write = self.note_write();
        self.bump();
        drop(guard);
        tracing::info!(plugin = plugin.name(), source = %id, revision = row.revision, actor, action, "source applied");
        let kind = if action == "rollback" { EventKind::RolledBack } else { EventKind::Applied };
        self.events.publish(kind, plugin.name(), Some(&id), Some(row.revision), None);

        let refresh = if opts.refresh_after_apply {
            // The removal guard already ran against this exact content above. The refresh must
            // read this write: it may join only a job registered after it.
            let req = RefreshRequest {
                confirm_removals: true,
                after_write: Some(write),
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
        Ok(ApplyOutcome {
            source,
            revision: row.revision,
            changed: true,
            dry_run: false,
            validation: checked.report,
            impact,
            refresh,
        })
    }
}

/// What an apply proposes: a partial edit (merged under the write lock) or a whole source (a
/// rollback's recorded revision).
pub(super) enum Proposed {
    Patch(PluginKind, SourcePatch),
    Draft(SourceDraft),
}

/// Applies `includedModels` / `excludedModels` (exclusions win).
pub(super) fn filter_entities(entry: &SourceEntry, entities: Vec<Entity>) -> Vec<Entity> {
    if entry.included_models.is_none() && entry.excluded_models.is_none() {
        return entities;
    }
    entities
        .into_iter()
        .filter(|e| {
            let name = e.name();
            let included = entry.included_models.as_ref().is_none_or(|inc| inc.iter().any(|p| glob_match(p, name)));
            let excluded = entry.excluded_models.as_ref().is_some_and(|exc| exc.iter().any(|p| glob_match(p, name)));
            included && !excluded
        })
        .collect()
}
