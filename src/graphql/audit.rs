//! The audit trail: every mutation (and every denied one) is written to `catalog_audit` and
//! logged as a structured event.

use async_graphql::{Context, Error};

use super::guards::caller;
use crate::catalog::service::Catalog;
use crate::db::NewAudit;

pub struct Target<'a> {
    pub action: &'a str,
    pub plugin: &'a str,
    pub source_id: Option<&'a str>,
}

fn code(e: &Error) -> String {
    e.extensions
        .as_ref()
        .and_then(|x| x.get("code"))
        .map(|v| v.to_string().trim_matches('"').to_string())
        .unwrap_or_else(|| "INTERNAL".into())
}

pub async fn record(ctx: &Context<'_>, t: Target<'_>, revision: Option<i32>, outcome: Result<(), &Error>) {
    let Ok(catalog) = ctx.data::<std::sync::Arc<Catalog>>() else { return };
    let actor = caller(ctx).map(|c| c.name.clone()).unwrap_or_else(|_| "unauthenticated".into());
    let outcome = match outcome {
        Ok(()) => "OK".to_string(),
        Err(e) => code(e),
    };
    tracing::info!(target: "audit", actor = %actor, action = t.action, plugin = t.plugin, source = ?t.source_id, revision = ?revision, outcome = %outcome, "audit");
    let rec = NewAudit {
        actor: &actor,
        action: t.action,
        plugin: t.plugin,
        source_id: t.source_id,
        revision,
        outcome: &outcome,
    };
    if let Err(e) = catalog.db().insert_audit(rec).await {
        tracing::error!(error = %e, "could not write the audit record");
    }
}

/// Called by the guard when a mutation is refused before it runs.
pub async fn record_denied(ctx: &Context<'_>, e: &Error) {
    let field = ctx.field();
    let action = field.name().to_string();
    let plugin = field
        .arguments()
        .ok()
        .and_then(|args| args.into_iter().find(|(n, _)| n.as_str() == "plugin").map(|(_, v)| v.to_string()))
        .unwrap_or_default();
    let plugin = plugin.trim_matches('"').to_string();
    record(ctx, Target { action: &action, plugin: &plugin, source_id: None }, None, Err(e)).await;
}
