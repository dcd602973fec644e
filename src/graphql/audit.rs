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
    /// `refreshAll`.
    RefreshAll,
    /// `rollbackSource`.
    RollbackSource,
    /// `suspendSource`.
    SuspendSource,
    /// `resumeSource`.
    ResumeSource,
    /// `cancelRefreshJob`.
    CancelRefreshJob,
    /// `POST /hooks/refresh/...` (a signed notification; actor `webhook`).
    HookRefresh,
    /// A word this server version does not know (written by a newer version, or edited by hand).
    Unknown,
    /// `createWebhook`.
    CreateWebhook,
    /// `updateWebhook`.
    UpdateWebhook,
    /// `deleteWebhook`.
    DeleteWebhook,
    /// `redeliverWebhook`.
    RedeliverWebhook,
}

const ACTIONS: &[(AuditAction, &str)] = &[
    (AuditAction::ApplySource, "applySource"),
    (AuditAction::ApplySourceDryRun, "applySource(dryRun)"),
    (AuditAction::RefreshSource, "refreshSource"),
    (AuditAction::RefreshPlugin, "refreshPlugin"),
    (AuditAction::RefreshAll, "refreshAll"),
    (AuditAction::RollbackSource, "rollbackSource"),
    (AuditAction::SuspendSource, "suspendSource"),
    (AuditAction::ResumeSource, "resumeSource"),
    (AuditAction::CancelRefreshJob, "cancelRefreshJob"),
    (AuditAction::HookRefresh, "hookRefresh"),
    (AuditAction::CreateWebhook, "createWebhook"),
    (AuditAction::UpdateWebhook, "updateWebhook"),
    (AuditAction::DeleteWebhook, "deleteWebhook"),
    (AuditAction::RedeliverWebhook, "redeliverWebhook"),
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

impl From<ErrorCode> for AuditOutcome {
    /// A mutation that failed with `code`. (A request timeout never reaches a resolver: it
    /// reads as INTERNAL, as an unknown word does.)
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::ValidationFailed => AuditOutcome::ValidationFailed,
            ErrorCode::NotFound => AuditOutcome::NotFound,
            ErrorCode::Conflict => AuditOutcome::Conflict,
            ErrorCode::RemovalsNeedConfirmation => AuditOutcome::RemovalsNeedConfirmation,
            ErrorCode::Forbidden => AuditOutcome::Forbidden,
            ErrorCode::Unauthenticated => AuditOutcome::Unauthenticated,
            ErrorCode::RateLimited => AuditOutcome::RateLimited,
            ErrorCode::Unavailable => AuditOutcome::Unavailable,
            ErrorCode::Internal | ErrorCode::RequestTimeout => AuditOutcome::Internal,
        }
    }
}

impl AuditOutcome {
    /// The word stored in `catalog_audit.outcome` (and logged): `OK` or the error code.
    pub fn as_str(self) -> &'static str {
        let code = match self {
            AuditOutcome::Ok => return "OK",
            AuditOutcome::ValidationFailed => ErrorCode::ValidationFailed,
            AuditOutcome::NotFound => ErrorCode::NotFound,
            AuditOutcome::Conflict => ErrorCode::Conflict,
            AuditOutcome::RemovalsNeedConfirmation => ErrorCode::RemovalsNeedConfirmation,
            AuditOutcome::Forbidden => ErrorCode::Forbidden,
            AuditOutcome::Unauthenticated => ErrorCode::Unauthenticated,
            AuditOutcome::RateLimited => ErrorCode::RateLimited,
            AuditOutcome::Unavailable => ErrorCode::Unavailable,
            AuditOutcome::Internal => ErrorCode::Internal,
        };
        code.as_str()
    }

    /// The outcome stored as `word` (`OK` or an error code).
    pub fn parse(word: &str) -> AuditOutcome {
        if word == "OK" {
            return AuditOutcome::Ok;
        }
        match ErrorCode::parse(word) {
            Some(code) => AuditOutcome::from(code),
            None => {
                tracing::warn!(outcome = word, "unknown audit outcome in the database; showing INTERNAL");
                AuditOutcome::Internal
            }
        }
    }

    /// How a resolver's error ends an audited call: its `extensions.code`, typed.
    fn of(e: &Error) -> AuditOutcome {
        super::errors::code_of(e.extensions.as_ref()).map_or(AuditOutcome::Internal, AuditOutcome::from)
    }
}

pub struct Target<'a> {
    pub action: AuditAction,
    pub plugin: &'a str,
    pub source_id: Option<&'a str>,
}

pub async fn record(ctx: &Context<'_>, t: Target<'_>, revision: Option<i32>, outcome: Result<(), &Error>) {
    let Ok(catalog) = ctx.data::<std::sync::Arc<Catalog>>() else { return };
    let actor = caller(ctx).map(|c| c.name.clone()).unwrap_or_else(|_| "unauthenticated".into());
    let outcome = match outcome {
        Ok(()) => AuditOutcome::Ok,
        Err(e) => AuditOutcome::of(e),
    };
    tracing::info!(target: "audit", actor = %actor, action = t.action.as_str(), plugin = t.plugin, source = ?t.source_id, revision = ?revision, outcome = outcome.as_str(), "audit");
    let rec = NewAudit {
        actor: &actor,
        action: t.action.as_str(),
        plugin: t.plugin,
        source_id: t.source_id,
        revision,
        outcome: outcome.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::ErrorExtensions;

    /// Every code a mutation can fail with is stored and read back as itself (the outcome is
    /// the code, typed, not its text copied out of the error's JSON).
    #[test]
    fn every_error_code_round_trips_through_the_audit_outcome() {
        for code in ErrorCode::ALL {
            let outcome = AuditOutcome::from(code);
            assert_eq!(AuditOutcome::parse(outcome.as_str()), outcome, "{code}");
            if code != ErrorCode::RequestTimeout {
                assert_eq!(outcome.as_str(), code.as_str());
            }
            let err = Error::new("x").extend_with(|_, e| e.set("code", code.as_str()));
            assert_eq!(AuditOutcome::of(&err), outcome, "{code}");
        }
        assert_eq!(AuditOutcome::parse("OK"), AuditOutcome::Ok);
        assert_eq!(AuditOutcome::parse("SOMETHING_NEW"), AuditOutcome::Internal);
        assert_eq!(AuditOutcome::of(&Error::new("no code")), AuditOutcome::Internal);
    }
}
