//! Who is calling, and what they may do.
//!
//! Roles: `viewer` (queries, subscriptions) < `operator` (also mutations). An [`Authenticator`]
//! turns the request's bearer token into a [`Caller`]; resolvers never see tokens, only the
//! caller, and the role check lives in one guard ([`crate::graphql::guards`]). A Kubernetes
//! TokenReview/SubjectAccessReview mode is one more `Authenticator` implementation: nothing in
//! the resolvers changes.
//!
//! Modes:
//! - `none`: everyone is `anonymous` with the operator role. Allowed only on a loopback listen
//!   address unless `--allow-unauthenticated` says otherwise.
//! - `static`: a tokens file maps sha256(token) (hex) to a name and a role:
//!   ```yaml
//!   tokens:
//!     - name: ci-pipeline
//!       role: operator
//!       sha256: 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
//!   ```
//! - `kubernetes`: TokenReview + SubjectAccessReview against the cluster ([`kubernetes`]).

pub mod kubernetes;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// The authenticated caller; its name is recorded as the actor on revisions, jobs and audit.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, or one nobody knows: HTTP 401, code UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known caller without any role here: HTTP 403, code FORBIDDEN.
    #[error("{0}")]
    Forbidden(String),
    /// Whoever decides (the Kubernetes API server) could not be asked: HTTP 503, code
    /// UNAVAILABLE; never cached, the client retries.
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: u64 },
    /// Too many failed authentications from this client address: HTTP 429, code RATE_LIMITED.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
}

pub trait Authenticator: Send + Sync {
    /// `token` is the bearer token from `Authorization: Bearer ...` (or the WebSocket
    /// `connection_init` payload), if any.
    fn authenticate<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<Caller, AuthError>>;
    fn mode(&self) -> &'static str;
    /// Whether `authenticate` may log (it then runs inside the request's span, which a cached
    /// `POST /graphql` otherwise does without). Only a mode that never logs says no.
    fn logs(&self) -> bool {
        true
    }
    /// Whether an unknown token costs calls to someone else (the Kubernetes API server): such a
    /// mode's failed authentications are limited per client address (`http::security`).
    fn calls_out(&self) -> bool {
        false
    }
    /// Whether `token` is decided without calling out (an answer in the cache, good or bad): a
    /// client address over its failure limit is still served for such tokens, so a shared
    /// address (an ingress, a NAT) does not lock out callers whose tokens are known.
    fn known<'a>(&'a self, _token: Option<&'a str>) -> BoxFuture<'a, bool> {
        Box::pin(async { true })
    }
}

pub struct NoAuth;

impl Authenticator for NoAuth {
    fn authenticate<'a>(&'a self, _token: Option<&'a str>) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async { Ok(Caller { name: "anonymous".into(), role: Role::Operator }) })
    }
    fn mode(&self) -> &'static str {
        "none"
    }
    fn logs(&self) -> bool {
        false
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    sha256: String,
}

pub struct StaticTokens {
    by_hash: HashMap<String, Caller>,
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl StaticTokens {
    pub fn load(path: &Path) -> anyhow::Result<StaticTokens> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the tokens file {}: {e}", path.display()))?;
        let file: TokensFile =
            catalog_yaml::strict_parse(&text, &path.display().to_string(), catalog_core::yaml_limits())
                .map_err(|e| anyhow::anyhow!("{}", e.render()))?;
        let mut by_hash = HashMap::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let hash = t.sha256.trim().to_ascii_lowercase();
            anyhow::ensure!(
                hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: tokens[{i}].sha256 is not a sha256 hex digest (64 hex characters); \
                 compute it with `printf %s \"$TOKEN\" | sha256sum`",
                path.display()
            );
            by_hash.insert(hash, Caller { name: t.name, role: t.role });
        }
        anyhow::ensure!(!by_hash.is_empty(), "{}: no tokens defined", path.display());
        Ok(StaticTokens { by_hash })
    }
}

impl Authenticator for StaticTokens {
    fn authenticate<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return Err(AuthError::Unauthenticated(
                    "authentication required: send Authorization: Bearer <token>".into(),
                ));
            };
            self.by_hash
                .get(&sha256_hex(token))
                .cloned()
                .ok_or_else(|| AuthError::Unauthenticated("unknown token".into()))
        })
    }
    fn mode(&self) -> &'static str {
        "static"
    }
    fn logs(&self) -> bool {
        false
    }
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_tokens_map_hashes_to_callers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.yaml");
        std::fs::write(
            &p,
            format!("tokens:\n  - name: ci\n    role: operator\n    sha256: {}\n", sha256_hex("s3cret")),
        )
        .unwrap();
        let auth = StaticTokens::load(&p).unwrap();
        assert_eq!(
            auth.authenticate(Some("s3cret")).await.unwrap(),
            Caller { name: "ci".into(), role: Role::Operator }
        );
        assert!(auth.authenticate(Some("wrong")).await.is_err());
        assert!(auth.authenticate(None).await.is_err());
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
    }

    #[test]
    fn a_bad_tokens_file_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.yaml");
        std::fs::write(&p, "tokens:\n  - name: ci\n    rol: operator\n    sha256: x\n").unwrap();
        let err = StaticTokens::load(&p).err().unwrap().to_string();
        assert!(err.contains(":3:5") && err.contains("role"), "{err}");
    }
}
