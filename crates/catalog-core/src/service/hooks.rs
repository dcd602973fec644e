//! Notifications in: a signed `POST /hooks/refresh/{plugin}[/{id}]` starts an INCREMENTAL
//! refresh (actor `webhook`), so a Git push can refresh a catalog at once (Argo CD's Git
//! webhook, Flux's Receiver).
//!
//! The body's signature is checked (`crate::hooks`) against the secret each candidate source's
//! `properties.webhookSecretRef` names (read as `authSecretRef` is: a mounted file or env var,
//! or the Secret API with the credential label in kubernetes mode). For one source, that
//! source; for a plugin, every source of it with a `webhookSecretRef` whose secret verifies the
//! body (one secret may stand for several sources). Suspended sources are not refreshed.
//! Anything that does not verify is UNAUTHENTICATED with one message whatever the reason (a
//! caller must not learn which sources exist or have secrets); the reason is logged.

use std::sync::Arc;

use super::{Catalog, CatalogError, RefreshRequest, Result};
use crate::hooks::{HookSignature, verify};
use crate::jobs::RefreshJob;
use crate::plugins::PluginKind;
use crate::refresh::RefreshMode;

/// A signed request to refresh: its target, its body as received and its signature headers.
pub struct HookRequest<'a> {
    pub plugin: PluginKind,
    /// One source, or `None` for the plugin's sources that the signature verifies for.
    pub source_id: Option<&'a str>,
    pub body: &'a [u8],
    pub signature: HookSignature,
}

/// What a verified hook started.
#[derive(Debug)]
pub struct HookOutcome {
    pub jobs: Vec<RefreshJob>,
    /// Sources the signature verified for that are suspended or disabled: not refreshed.
    pub skipped: Vec<String>,
}

const REFUSED: &str = "the request's signature does not verify against a webhookSecretRef of this target";

impl Catalog {
    /// Checks `req`'s signature and starts a refresh of every source it verifies for; returns
    /// the jobs (as just registered) and the verified sources left alone (suspended, disabled).
    pub async fn hook_refresh(self: &Arc<Self>, req: HookRequest<'_>) -> Result<HookOutcome> {
        let refused = || CatalogError::Unauthenticated(REFUSED.into());
        if !req.signature.present() {
            return Err(CatalogError::Unauthenticated(
                "no signature: send X-Hub-Signature-256 (GitHub) or webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks)".into(),
            ));
        }
        let config = self.config();
        let candidates: Vec<crate::sources::SourceEntry> = config
            .sources()
            .filter(|(p, e)| *p == req.plugin && req.source_id.is_none_or(|id| e.id == id))
            .filter(|(_, e)| e.properties.contains_key("webhookSecretRef"))
            .map(|(_, e)| e.clone())
            .collect();
        drop(config);
        let now = chrono::Utc::now().timestamp();
        let mut verified = Vec::new();
        let mut unread = 0;
        for entry in candidates {
            let secret = match crate::fetch::secret_value(&entry, "webhookSecretRef", &self.options.fetch).await {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(d) => {
                    tracing::warn!(plugin = req.plugin.name(), source = %entry.id, problem = %d.render(), "a hook's webhookSecretRef could not be read");
                    unread += 1;
                    continue;
                }
            };
            match verify(&secret, req.body, &req.signature, now) {
                Ok(()) => verified.push(entry),
                Err(why) => {
                    tracing::info!(plugin = req.plugin.name(), source = %entry.id, why, "hook signature refused")
                }
            }
        }
        if verified.is_empty() && unread > 0 {
            // A secret that could not be read (the Kubernetes API blipped, a file is missing) is
            // not a bad signature: the sender may retry (GitHub does not retry a 401).
            return Err(CatalogError::Unavailable {
                message: "a webhookSecretRef of this target could not be read; retry later (the server log says why)"
                    .into(),
                retry_after_secs: 5,
            });
        }
        if verified.is_empty() {
            return Err(refused());
        }
        let mut jobs = Vec::new();
        for entry in verified.iter().filter(|e| e.enabled && !e.suspended) {
            let request = RefreshRequest {
                mode: RefreshMode::Incremental,
                wait: false,
                ..RefreshRequest::new(req.plugin, Some(&entry.id), "webhook")
            };
            jobs.push(self.refresh(request).await?);
        }
        let skipped = verified.iter().filter(|e| !e.enabled || e.suspended).map(|e| e.id.clone()).collect();
        Ok(HookOutcome { jobs, skipped })
    }
}
