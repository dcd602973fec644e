//! The audit trail: every mutation (and every denied one) is written to `catalog_audit` and
//! logged as a structured event.

use async_graphql::{Context, Enum, Error};
use catalog_api::ErrorCode;

use super::caller;
use catalog_core::Catalog;
use catalog_core::NewAudit;

/// Which mutation an audit record is about. The database keeps the mutation's name
/// (`applySource`, `applySource(dryRun)`, ...): these are the only words this code writes.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum AuditAction {
    /// `applySource` (not a dry run).
    ApplySource,
    /// `applySource` with `dryRun: true` (nothing was changed).
    ApplySourceDryRun,
    /// `refreshSource`.
    RefreshSource,
    /// `refreshPlugin`.
    RefreshPlugin,
    /// `rollbackSource`.
    RollbackSource,
    /// A word this server version does not know (written by a newer version, or edited by hand).
    Unknown,
}

const ACTIONS: [(AuditAction, &str); 5] = [
    (AuditAction::ApplySource, "applySource"),
    (AuditAction::ApplySourceDryRun, "applySource(dryRun)"),
    (AuditAction::RefreshSource, "refreshSource"),
    (AuditAction::RefreshPlugin, "refreshPlugin"),
    (AuditAction::RollbackSource, "rollbackSource"),
];

impl AuditAction {
    /// The word stored in `catalog_audit.action` (and logged).
    pub fn as_str(self) -> &'static str {
        ACTIONS.iter().find(|(a, _)| *a == self).map_or("unknown", |(_, w)| w)
    }

    /// The action stored as `word`; `Unknown` for a word this version never writes.
    pub fn parse(word: &str) -> AuditAction {
        ACTIONS.iter().find(|(_, w)| *w == word).map_or(AuditAction::Unknown, |(a, _)| *a)
    }
}

/// How an audited call ended: `OK` or the error code it failed with.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum AuditOutcome {
    /// The call succeeded.
    #[graphql(name = "OK")]
    Ok,
    /// Invalid input; nothing was changed.
    ValidationFailed,
    /// The plugin, source or revision does not exist.
    NotFound,
    /// `expectedRevision` was not the current revision.
    Conflict,
    /// The change would remove more than half the entities and `confirmRemovals` was not set.
    RemovalsNeedConfirmation,
    /// The caller's role may not change sources.
    Forbidden,
    /// No valid token.
    Unauthenticated,
    /// Over `--changes-per-minute`.
    RateLimited,
    /// A dependency (the database, the config store) was down.
    Unavailable,
    /// A server fault (the server log has the details), or an outcome word this version does
    /// not know.
    Internal,
}

impl AuditOutcome {
    /// The outcome stored as `word` (`OK` or an error code).
    pub fn parse(word: &str) -> AuditOutcome {
        if word == "OK" {
            return AuditOutcome::Ok;
        }
        match ErrorCode::parse(word) {
            Some(ErrorCode::ValidationFailed) => AuditOutcome::ValidationFailed,
            Some(ErrorCode::NotFound) => AuditOutcome::NotFound,
            Some(ErrorCode::Conflict) => AuditOutcome::Conflict,
            Some(ErrorCode::RemovalsNeedConfirmation) => AuditOutcome::RemovalsNeedConfirmation,
            Some(ErrorCode::Forbidden) => AuditOutcome::Forbidden,
            Some(ErrorCode::Unauthenticated) => AuditOutcome::Unauthenticated,
            Some(ErrorCode::RateLimited) => AuditOutcome::RateLimited,
            Some(ErrorCode::Unavailable) => AuditOutcome::Unavailable,
            Some(ErrorCode::Internal) => AuditOutcome::Internal,
            Some(ErrorCode::RequestTimeout) | None => {
                tracing::warn!(outcome = word, "unknown audit outcome in the database; showing INTERNAL");
                AuditOutcome::Internal
            }
        }
    }
}

pub struct Target<'a> {
    pub action: AuditAction,
    pub plugin: &'a str,
    pub source_id: Option<&'a str>,
}

fn code(e: &Error) -> String {
    e.extensions
        .as_ref()
        .and_then(|x| x.get("code"))
        .map(|v| v.to_string().trim_matches('"').to_string())
        .unwrap_or_else(|| ErrorCode::Internal.as_str().into())
}

pub async fn record(ctx: &Context<'_>, t: Target<'_>, revision: Option<i32>, outcome: Result<(), &Error>) {
    let Ok(catalog) = ctx.data::<std::sync::Arc<Catalog>>() else { return };
    let actor = caller(ctx).map(|c| c.name.clone()).unwrap_or_else(|_| "unauthenticated".into());
    let outcome = match outcome {
        Ok(()) => "OK".to_string(),
        Err(e) => code(e),
    };
    tracing::info!(target: "audit", actor = %actor, action = t.action.as_str(), plugin = t.plugin, source = ?t.source_id, revision = ?revision, outcome = %outcome, "audit");
    let rec = NewAudit {
        actor: &actor,
        action: t.action.as_str(),
        plugin: t.plugin,
        source_id: t.source_id,
        revision,
        outcome: &outcome,
    };
    if let Err(e) = catalog.record_audit(rec).await {
        tracing::error!(error = %e, "could not write the audit record");
    }
}

/// Called by the guard when a mutation is refused before it runs.
pub async fn record_denied(ctx: &Context<'_>, e: &Error) {
    let field = ctx.field();
    let action = AuditAction::parse(field.name());
    let plugin = field
        .arguments()
        .ok()
        .and_then(|args| args.into_iter().find(|(n, _)| n.as_str() == "plugin").map(|(_, v)| v.to_string()))
        .unwrap_or_default();
    let plugin = plugin.trim_matches('"').to_string();
    record(ctx, Target { action, plugin: &plugin, source_id: None }, None, Err(e)).await;
}
