//! What a refresh does with what it loaded: a pure function of the snapshot served now, the
//! load, the mode and the caller's confirmation. No I/O and no locks: `refresh_source` does the
//! loading before and the recording and serving after, and the table test below
//! pins every branch.

use super::SourceState;
use crate::diagnostics::{Diagnostic, Layer};
use crate::plugins::Entity;
use crate::refresh::{Impact, RefreshMode, RefreshResult, RefreshStatus, Snapshot, diff, summary};

/// What loading a source gave (the input of [`decide`]).
pub(super) enum Loaded {
    Disabled,
    Failed(Vec<Diagnostic>),
    /// The text could not be read (a fetch failed, the file is unreadable): as `Failed`, and a
    /// retry may fix it.
    Unreachable(Vec<Diagnostic>),
    NotModified,
    Ok {
        entities: Vec<Entity>,
        diagnostics: Vec<Diagnostic>,
        content_hash: String,
        etag: Option<String>,
        /// The text, when it is to be kept in the database (`Catalog::keeps_content`).
        text: Option<String>,
    },
}

#[derive(Clone, Copy)]
enum LoadedKind {
    Unreachable,
    Other,
}

/// The outcome of a load, decided. The counts, summary, status and diagnostics are written
/// into the refresh's result.
pub(super) struct Decision {
    /// The state to record.
    pub state: SourceState,
    /// The snapshot to serve from now on; `None` keeps serving the current one.
    pub snapshot: Option<Snapshot>,
    /// The catalog text to keep in the database before the snapshot is served.
    pub text: Option<String>,
    /// The load failed in a way a later attempt may fix (`Loaded::Unreachable`): retried with
    /// backoff. A failure of the content itself is not retried until it changes.
    pub retry: bool,
}

/// The decision for `loaded`, given the snapshot served now (`old`) and the state recorded now
/// (`current`, kept when nothing changes).
pub(super) fn decide(
    old: Option<&Snapshot>,
    current: SourceState,
    loaded: Loaded,
    mode: RefreshMode,
    confirm_removals: bool,
    result: &mut RefreshResult,
) -> Decision {
    let old_count = old.map_or(0, |s| s.entities.len());
    let loaded_kind =
        if matches!(loaded, Loaded::Unreachable(_)) { LoadedKind::Unreachable } else { LoadedKind::Other };
    let keep = |state: SourceState| Decision { state, snapshot: None, text: None, retry: false };
    let keep_old_unchanged = |result: &mut RefreshResult| {
        result.entities_loaded = old_count;
        result.entities_unchanged = old_count;
        result.impact = Impact { unchanged: old_count, current_count: old_count, ..Impact::default() };
        result.artifacts_loaded = old.map_or(0, Snapshot::artifact_count);
        result.summary = summary(old_count, &Impact::default(), true);
    };
    match loaded {
        Loaded::Disabled => {
            result.entities_removed = old_count;
            result.impact = diff(old, &[]);
            result.summary = "Source is disabled".into();
            Decision { snapshot: Some(Snapshot::default()), ..keep(SourceState::Disabled) }
        }
        Loaded::Failed(diags) | Loaded::Unreachable(diags) => {
            let retry = matches!(loaded_kind, LoadedKind::Unreachable);
            result.status = RefreshStatus::Failure;
            result.entities_loaded = old_count;
            result.summary = format!("Refresh failed; kept {old_count} previously loaded entities");
            result.diagnostics = diags;
            Decision { retry, ..keep(SourceState::Error) }
        }
        Loaded::NotModified => {
            keep_old_unchanged(result);
            keep(current)
        }
        Loaded::Ok { entities, diagnostics, content_hash, etag, text } => {
            let unchanged_content = old.is_some_and(|s| s.content_hash == content_hash);
            if mode == RefreshMode::Incremental && unchanged_content {
                keep_old_unchanged(result);
                result.diagnostics = diagnostics;
                return keep(current);
            }
            let impact = diff(old, &entities);
            result.impact = impact.clone();
            if impact.needs_confirmation() && !confirm_removals {
                result.status = RefreshStatus::Failure;
                result.entities_loaded = old_count;
                result.summary = format!(
                    "Refusing to remove {} of {} entities without confirmRemovals; kept the previous entities",
                    impact.to_remove, impact.current_count
                );
                result.diagnostics.push(
                    Diagnostic::error(Layer::Semantics, result.summary.clone())
                        .hint("if the removal is intended, refresh again with confirmRemovals: true"),
                );
                return keep(SourceState::Error);
            }
            let partial = diagnostics.iter().any(Diagnostic::is_error);
            if partial {
                result.status = RefreshStatus::Partial;
            }
            result.entities_loaded = entities.len();
            result.entities_added = impact.to_add;
            result.entities_removed = impact.to_remove;
            result.entities_updated = impact.to_update;
            result.entities_unchanged = impact.unchanged;
            result.artifacts_loaded = entities.iter().map(Entity::artifact_count).sum();
            result.summary = summary(entities.len(), &impact, false);
            result.diagnostics = diagnostics;
            let state = if partial { SourceState::PartiallyAvailable } else { SourceState::Available };
            // Unchanged entities keep the old snapshot's `Arc`s: one copy each.
            let mut snapshot = Snapshot::reusing(old, entities, content_hash);
            snapshot.etag = etag;
            Decision { state, snapshot: Some(snapshot), text, retry: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::PluginKind;

    fn models(names: &[&str]) -> Vec<Entity> {
        let yaml = format!(
            "models:\n{}",
            names.iter().map(|n| format!("  - name: {n}\n    description: d\n")).collect::<String>()
        );
        PluginKind::Models.load(&yaml, "t.yaml").map(|l| l.entities).unwrap_or_default()
    }

    fn snapshot(names: &[&str], hash: &str) -> Snapshot {
        Snapshot::reusing(None, models(names), hash.to_string())
    }

    fn ok(names: &[&str], hash: &str, diagnostics: Vec<Diagnostic>) -> Loaded {
        Loaded::Ok {
            entities: models(names),
            diagnostics,
            content_hash: hash.to_string(),
            etag: None,
            text: Some("text".into()),
        }
    }

    /// Every branch: (case, old snapshot, load, mode, confirm) → (status, state, served
    /// entities after, entities loaded, summary starts with, content kept).
    #[test]
    #[expect(clippy::type_complexity, reason = "a table test's row type, spelled once")]
    fn a_load_is_decided_by_the_table() {
        let abc = || Some(snapshot(&["a", "b", "c"], "h1"));
        let warning = || vec![Diagnostic::error(Layer::Plugin, "one bad entry")];
        use RefreshMode::{Full, Incremental};
        use RefreshStatus::{Failure, Partial, Success};
        #[rustfmt::skip]
        let table: Vec<(&str, Option<Snapshot>, Loaded, RefreshMode, bool, RefreshStatus, SourceState, Option<usize>, usize, &str, bool)> = vec![
            ("disabled",                 abc(), Loaded::Disabled,                  Full,        false, Success, SourceState::Disabled,           Some(0), 0, "Source is disabled", false),
            ("failed keeps the old",     abc(), Loaded::Failed(vec![]),            Full,        false, Failure, SourceState::Error,              None,    3, "Refresh failed; kept 3", false),
            ("not modified",             abc(), Loaded::NotModified,               Incremental, false, Success, SourceState::PartiallyAvailable, None,    3, "Unchanged (3", false),
            ("incremental, same hash",   abc(), ok(&["a", "b", "c"], "h1", vec![]), Incremental, false, Success, SourceState::PartiallyAvailable, None,    3, "Unchanged (3", false),
            ("full, same hash, reloads", abc(), ok(&["a", "b", "c"], "h1", vec![]), Full,        false, Success, SourceState::Available,          Some(3), 3, "Loaded 3", true),
            ("new content",              abc(), ok(&["a", "b", "d"], "h2", vec![]), Incremental, false, Success, SourceState::Available,          Some(3), 3, "Loaded 3", true),
            ("removes most, refused",    abc(), ok(&["a"], "h2", vec![]),           Full,        false, Failure, SourceState::Error,              None,    3, "Refusing to remove 2 of 3", false),
            ("removes most, confirmed",  abc(), ok(&["a"], "h2", vec![]),           Full,        true,  Success, SourceState::Available,          Some(1), 1, "Loaded 1", true),
            ("first load",               None,  ok(&["a"], "h1", vec![]),           Incremental, false, Success, SourceState::Available,          Some(1), 1, "Loaded 1", true),
            ("partial",                  abc(), ok(&["a", "b", "c"], "h2", warning()), Full,     false, Partial, SourceState::PartiallyAvailable, Some(3), 3, "Loaded 3", true),
        ];
        for (case, old, loaded, mode, confirm, status, state, served, loaded_count, summary, kept) in table {
            let mut r = RefreshResult::started("models", "s", false);
            // A state that no branch would pick by itself shows when the current one is kept.
            let d = decide(old.as_ref(), SourceState::PartiallyAvailable, loaded, mode, confirm, &mut r);
            assert_eq!(r.status, status, "{case}");
            assert_eq!(d.state, state, "{case}");
            assert_eq!(d.snapshot.as_ref().map(|s| s.entities.len()), served, "{case}");
            assert_eq!(r.entities_loaded, loaded_count, "{case}");
            assert!(r.summary.starts_with(summary), "{case}: {}", r.summary);
            assert_eq!(d.text.is_some(), kept, "{case}");
        }
    }

    #[test]
    fn only_a_load_that_could_not_read_is_retried() {
        let abc = || Some(snapshot(&["a", "b", "c"], "h1"));
        let cases = [
            ("unreachable", Loaded::Unreachable(vec![]), true),
            ("content failed", Loaded::Failed(vec![]), false),
            ("removal refused", ok(&["a"], "h2", vec![]), false),
            ("loaded", ok(&["a", "b", "c"], "h2", vec![]), false),
        ];
        for (case, loaded, retry) in cases {
            let mut r = RefreshResult::started("models", "s", false);
            let d = decide(abc().as_ref(), SourceState::Available, loaded, RefreshMode::Full, false, &mut r);
            assert_eq!(d.retry, retry, "{case}");
        }
        let mut r = RefreshResult::started("models", "s", false);
        let d = decide(
            abc().as_ref(),
            SourceState::Available,
            Loaded::Unreachable(vec![]),
            RefreshMode::Full,
            false,
            &mut r,
        );
        assert_eq!((d.state, d.snapshot.is_none(), r.entities_loaded), (SourceState::Error, true, 3));
    }
}
