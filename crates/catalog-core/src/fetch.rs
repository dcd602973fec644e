//! Fetching `url` sources over HTTP: deadlines, a size limit, retries with exponential backoff
//! within a total budget, compressed bodies, an auth header from a SecretRef, and
//! `ETag`/`If-None-Match` so an unchanged catalog costs one 304.
//!
//! Bounded in time and memory whatever the host does:
//! - one attempt (connect, headers and the whole body) ends within `--fetch-timeout`;
//! - a body that arrives slower than `--fetch-min-rate` bytes/s over a window (the shorter of
//!   [`RATE_WINDOW`] and half of `--fetch-timeout`) ends the attempt then: a stall after the
//!   headers costs that window, not the whole timeout;
//! - every attempt and every retry delay of one fetch fit in `--fetch-budget`: no attempt
//!   starts that could not finish within it, and an attempt's deadline is cut to what is left;
//! - `Accept-Encoding: gzip, br, zstd, deflate` is sent and the body decoded as it streams; the
//!   *decoded* size is what `--fetch-max-bytes` bounds, so a compression bomb stops at the limit
//!   having used about that much memory.
//!
//! Source properties:
//! - `url` (required): `http://` or `https://`
//! - `authSecretRef: {name, key, namespace?}`: `name` must be a Kubernetes Secret name and `key`
//!   a Secret data key (checked again here for a deployer's file). The header value comes from
//!   the env var `CATALOG_BFF_SECRET_<NAME>_<KEY>` (upper-cased, non-alphanumerics as `_`), else
//!   from the file `<secrets-dir>/<name>/<key>` (the layout of a mounted Kubernetes Secret),
//!   which must resolve (symlinks followed) inside the secrets directory. With `--store
//!   kubernetes` it is read from the Kubernetes Secret through the API instead (never a file);
//!   `namespace` defaults to the server's and must be one of `--secret-namespaces`, and the
//!   Secret must carry the label `catalog-bff.io/source-credential: "true"` (an opt-in by its
//!   owner, so an operator cannot send the server's other Secrets to a URL).
//!
//! Where the client may connect is decided by [`super::outbound`]: refused address classes
//! unless `--url-allow` lists them, after DNS resolution and on every redirect.
//! - `authHeader` (default `Authorization`), `authScheme` (default `Bearer`; `""` sends the raw
//!   value).

use futures_util::StreamExt;
use serde_yaml_ng::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::diagnostics::{Diagnostic, Layer};
use super::outbound::{GuardedResolver, UrlAllow, check_url, find_refusal, redirect_policy};
use super::sources::{SourceEntry, secret_ref_problems};

/// The window over which `--fetch-min-rate` is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Whole-request timeout per attempt.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Every attempt and retry delay of one fetch together (`--fetch-budget`).
    pub budget: Duration,
    /// Slowest accepted body, in bytes per second over [`RATE_WINDOW`] (0: no minimum).
    pub min_rate: u64,
    /// Bodies larger than this (decoded) are refused (the download stops there).
    pub max_bytes: usize,
    /// Attempts after the first one, for connection errors, timeouts and 5xx.
    pub retries: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
    pub secrets_dir: PathBuf,
    /// `--url-allow`: hosts and CIDRs exempt from the outbound address guard.
    pub url_allow: Arc<UrlAllow>,
    /// `--store kubernetes`: secrets come from the Kubernetes API, not from files.
    pub kube_secrets: Option<Arc<KubeSecrets>>,
}

/// The label a Secret must carry before a source may send its value anywhere: the server's
/// service account can read Secrets of its namespace, but an operator (who may only update the
/// catalog ConfigMaps) must not be able to point a url source at, say, the database password.
pub const CREDENTIAL_LABEL: &str = "catalog-bff.io/source-credential";

/// `authSecretRef` through the Kubernetes Secret API.
pub struct KubeSecrets {
    client: kube::Client,
    namespace: String,
    allowed: Vec<String>,
}

impl std::fmt::Debug for KubeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSecrets").field("namespace", &self.namespace).field("allowed", &self.allowed).finish()
    }
}

impl KubeSecrets {
    pub fn new(client: kube::Client, namespace: &str, allowed: Vec<String>) -> KubeSecrets {
        KubeSecrets { client, namespace: namespace.to_string(), allowed }
    }

    async fn read(&self, name: &str, key: &str, namespace: Option<&str>) -> Result<String, Diagnostic> {
        use k8s_openapi::api::core::v1::Secret;
        let ns = namespace.unwrap_or(&self.namespace);
        let refuse = |msg: String, hint: String| {
            Diagnostic::error(Layer::Semantics, msg).field("properties.authSecretRef").hint(hint)
        };
        if !self.allowed.iter().any(|a| a == ns) {
            return Err(refuse(
                format!("secret {name}/{key}: namespace {ns} is not one this server may read secrets from"),
                format!("use a namespace listed in --secret-namespaces ({})", self.allowed.join(", ")),
            ));
        }
        let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), ns);
        let secret = match super::store::kubernetes::bounded(api.get_opt(name)).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(refuse(
                    format!("secret {name} not found in namespace {ns}"),
                    format!("create it: kubectl -n {ns} create secret generic {name} --from-literal={key}=..."),
                ));
            }
            Err(kube::Error::Api(s)) => {
                return Err(refuse(
                    format!("secret {name} in namespace {ns}: the Kubernetes API said {} ({})", s.code, s.message),
                    "the server's service account needs `get` on secrets in that namespace".into(),
                ));
            }
            Err(e) => {
                return Err(refuse(
                    format!("secret {name} in namespace {ns}: the Kubernetes API is unreachable: {e}"),
                    "retry the refresh when the API server is reachable".into(),
                ));
            }
        };
        let opted_in =
            secret.metadata.labels.as_ref().and_then(|l| l.get(CREDENTIAL_LABEL)).is_some_and(|v| v == "true");
        if !opted_in {
            return Err(refuse(
                format!(
                    "secret {name} in namespace {ns} is not labelled {CREDENTIAL_LABEL}=true, so no source may send it"
                ),
                format!(
                    "label the Secret meant for catalog sources: kubectl -n {ns} label secret {name} {CREDENTIAL_LABEL}=true"
                ),
            ));
        }
        let bytes = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).ok_or_else(|| {
            refuse(
                format!("secret {name} in namespace {ns} has no key {key}"),
                "name one of the Secret's data keys".into(),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            refuse(format!("secret {name}/{key} in namespace {ns} is not UTF-8 text"), "store the token as text".into())
        })?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            budget: Duration::from_secs(60),
            min_rate: 1024,
            max_bytes: 16 * 1024 * 1024,
            retries: 3,
            backoff: Duration::from_millis(200),
            secrets_dir: PathBuf::from("/var/run/secrets/catalog-bff"),
            url_allow: Arc::new(UrlAllow::default()),
            kube_secrets: None,
        }
    }
}

pub enum Fetched {
    Body { text: String, etag: Option<String> },
    NotModified,
}

pub fn client(cfg: &FetchConfig) -> reqwest::Client {
    build_client(cfg, false)
}

/// The client for url sources. With `same_origin_redirects` (used when the request carries a
/// secret header) a redirect to another scheme, host or port is refused: reqwest strips only
/// `Authorization` and cookies across origins, so a custom `authHeader` would follow it.
fn build_client(cfg: &FetchConfig, same_origin_redirects: bool) -> reqwest::Client {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.timeout)
        .user_agent(concat!("catalog-bff/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { allow: cfg.url_allow.clone() }))
        .redirect(redirect_policy(cfg.url_allow.clone(), same_origin_redirects))
        // An HTTP(S)_PROXY from the environment would resolve host names itself, past the
        // address guard: url sources connect directly.
        .no_proxy()
        .build()
        .unwrap_or_else(|e| {
            // Never fall back to a client without the address guard: one that cannot
            // connect anywhere is the safe default.
            tracing::error!(error = %e, "cannot build the HTTP client for url sources; url sources will fail");
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(GuardedResolver { allow: Arc::new(UrlAllow::default()) }))
                .build()
                .unwrap_or_default()
        })
}

fn prop<'a>(entry: &'a SourceEntry, key: &str) -> Option<&'a Value> {
    entry.properties.get(key)
}

fn env_name(name: &str, key: &str) -> String {
    let clean = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect::<String>()
    };
    format!("CATALOG_BFF_SECRET_{}_{}", clean(name), clean(key))
}

/// The value of the Secret a source's SecretRef property (`authSecretRef`,
/// `webhookSecretRef`) names, read as the module docs say; `None` when the entry has no such
/// property.
pub async fn secret_value(
    entry: &SourceEntry,
    property: &str,
    cfg: &FetchConfig,
) -> Result<Option<String>, Diagnostic> {
    let Some(r) = prop(entry, property) else {
        return Ok(None);
    };
    // A deployer's file is not validated on load (it would make the whole file unreadable),
    // so the name and key are checked again before they become a path.
    if let Some(d) = secret_ref_problems(entry).into_iter().next() {
        return Err(d);
    }
    let field = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(name), Some(key)) = (field("name"), field("key")) else {
        return Err(Diagnostic::error(Layer::Semantics, format!("{property} needs `name` and `key`"))
            .field(format!("properties.{property}"))
            .hint(format!("write {property}: {{name: my-secret, key: token}}")));
    };
    let value = read_secret(cfg, &name, &key, field("namespace").as_deref()).await?;
    Ok(Some(value))
}

/// Resolves the auth header for a source, if it has an `authSecretRef`.
pub async fn auth_header(entry: &SourceEntry, cfg: &FetchConfig) -> Result<Option<(String, String)>, Diagnostic> {
    let Some(value) = secret_value(entry, "authSecretRef", cfg).await? else {
        return Ok(None);
    };
    let header = prop(entry, "authHeader").and_then(Value::as_str).unwrap_or("Authorization").to_string();
    let scheme = prop(entry, "authScheme").and_then(Value::as_str).unwrap_or("Bearer");
    let value = if scheme.is_empty() { value } else { format!("{scheme} {value}") };
    Ok(Some((header, value)))
}

/// A secret's value, read the way `authSecretRef` is (also for webhook signing secrets): with
/// `--store kubernetes` from the Kubernetes Secret (allowed namespace, credential label
/// required), else from the env var `CATALOG_BFF_SECRET_<NAME>_<KEY>` or the file
/// `<secrets-dir>/<name>/<key>`. Errors name the secret, never its value.
pub(crate) async fn read_secret(
    cfg: &FetchConfig,
    name: &str,
    key: &str,
    namespace: Option<&str>,
) -> Result<String, Diagnostic> {
    match &cfg.kube_secrets {
        Some(kube) => kube.read(name, key, namespace).await,
        None => {
            let var = env_name(name, key);
            match std::env::var(&var) {
                Ok(v) => Ok(v),
                Err(_) => read_secret_file(&cfg.secrets_dir, name, key, &var),
            }
        }
    }
}

/// Reads `<secrets-dir>/<name>/<key>` only if it resolves inside the secrets directory: a
/// symlink in a mounted Secret volume pointing elsewhere (or a crafted one) is refused. The
/// messages name the secret and the flag, not the server's paths.
fn read_secret_file(dir: &std::path::Path, name: &str, key: &str, var: &str) -> Result<String, Diagnostic> {
    let missing = || {
        Diagnostic::error(Layer::Semantics, format!("secret {name}/{key} not found"))
            .field("properties.authSecretRef")
            .hint(format!("set the env var {var} or mount the secret so that {name}/{key} exists under --secrets-dir"))
    };
    let root = dir.canonicalize().map_err(|_| missing())?;
    let real = root.join(name).join(key).canonicalize().map_err(|_| missing())?;
    if !real.starts_with(&root) {
        return Err(Diagnostic::error(
            Layer::Semantics,
            format!("secret {name}/{key} resolves outside --secrets-dir; refusing to read it"),
        )
        .field("properties.authSecretRef")
        .hint("mount the Secret itself under --secrets-dir (no symlinks to other places), or use the env var route"));
    }
    if !real.is_file() {
        return Err(missing());
    }
    std::fs::read_to_string(&real).map(|v| v.trim_end_matches(['\n', '\r']).to_string()).map_err(|_| missing())
}

/// reqwest's top-level message ("error sending request") hides the cause; show the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

enum Attempt {
    Done(Fetched),
    Retry(String),
    Fail(String),
}

pub async fn fetch(
    client: &reqwest::Client,
    entry: &SourceEntry,
    if_none_match: Option<&str>,
    cfg: &FetchConfig,
) -> Result<Fetched, Diagnostic> {
    let url = entry.url().unwrap_or_default().to_string();
    // IP-literal hosts never reach the resolver: check them here, before any secret is read.
    if let Ok(parsed) = reqwest::Url::parse(&url)
        && let Err(msg) = check_url(&cfg.url_allow, &parsed)
    {
        return Err(fail(&url, msg));
    }
    let auth = auth_header(entry, cfg).await?;
    // A request with a secret never follows a redirect to another origin.
    let credentialed;
    let client = if auth.is_some() {
        credentialed = build_client(cfg, true);
        &credentialed
    } else {
        client
    };
    let deadline = tokio::time::Instant::now() + cfg.budget;
    let mut delay = cfg.backoff;
    let mut last = String::new();
    let mut attempts = 0;
    for attempt in 1..=cfg.retries + 1 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left < MIN_ATTEMPT {
            break;
        }
        attempts = attempt;
        match once(client, &url, auth.as_ref(), if_none_match, cfg, left.min(cfg.timeout)).await {
            Attempt::Done(f) => return Ok(f),
            Attempt::Fail(msg) => return Err(fail(&url, msg)),
            Attempt::Retry(msg) => {
                last = msg;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if attempt > cfg.retries || left < delay + MIN_ATTEMPT {
                    break;
                }
                tracing::warn!(url = %url, attempt, error = %last, "catalog fetch failed; will retry");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
    }
    let took = cfg.budget.saturating_sub(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let why = if attempts <= cfg.retries {
        format!(", stopped by --fetch-budget ({} s)", cfg.budget.as_secs_f64())
    } else {
        String::new()
    };
    Err(fail(&url, format!("{last} (after {attempts} attempts in {:.1} s{why})", took.as_secs_f64())))
}

/// No attempt starts with less time than this left in the budget.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

fn fail(url: &str, msg: String) -> Diagnostic {
    Diagnostic::error(Layer::Syntax, format!("fetching {url} failed: {msg}"))
        .field("properties.url")
        .hint("check that the URL answers with the catalog YAML and that any auth secret is set")
}

async fn once(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&(String, String)>,
    if_none_match: Option<&str>,
    cfg: &FetchConfig,
    limit: Duration,
) -> Attempt {
    // Headers and the whole body within `limit` (the client's timeout is the same bound, cut
    // to what is left of the budget).
    match tokio::time::timeout(limit, once_within(client, url, auth, if_none_match, cfg)).await {
        Ok(a) => a,
        Err(_) => Attempt::Retry(format!("no complete answer within {:.1} s (--fetch-timeout)", limit.as_secs_f64())),
    }
}

async fn once_within(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&(String, String)>,
    if_none_match: Option<&str>,
    cfg: &FetchConfig,
) -> Attempt {
    let mut req = client.get(url);
    if let Some((h, v)) = auth {
        req = req.header(h.as_str(), v.as_str());
    }
    if let Some(etag) = if_none_match {
        req = req.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Attempt::Fail(format!("invalid request: {e}")),
        Err(e) => {
            // A refused address is final: retrying cannot change the answer.
            if let Some(msg) = find_refusal(&e) {
                return Attempt::Fail(msg);
            }
            return Attempt::Retry(error_chain(&e));
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Attempt::Done(Fetched::NotModified);
    }
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry(format!("HTTP {status}"));
    }
    if !status.is_success() {
        return Attempt::Fail(format!("HTTP {status}"));
    }
    if let Some(len) = resp.content_length()
        && len > cfg.max_bytes as u64
    {
        return Attempt::Fail(format!("the body is {len} bytes; the limit is {} bytes", cfg.max_bytes));
    }
    let etag = resp.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Chunks as they come, joined once at the end: a growing Vec would copy itself at every
    // doubling and, for a bomb, briefly hold one and a half times the limit.
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut received = 0usize;
    let mut stream = resp.bytes_stream();
    // The minimum rate: at least `min_rate * window` bytes in every window.
    let window = RATE_WINDOW.min(cfg.timeout / 2).max(Duration::from_millis(100));
    let need = (cfg.min_rate as f64 * window.as_secs_f64()) as u64;
    let mut window_end = tokio::time::Instant::now() + window;
    let mut in_window = 0u64;
    loop {
        let next = if need == 0 {
            stream.next().await
        } else {
            match tokio::time::timeout_at(window_end, stream.next()).await {
                Ok(next) => next,
                Err(_) if in_window < need => {
                    return Attempt::Retry(format!(
                        "the body came at {:.0} bytes/s over {:.1} s, below the minimum of {} bytes/s (--fetch-min-rate)",
                        in_window as f64 / window.as_secs_f64(),
                        window.as_secs_f64(),
                        cfg.min_rate
                    ));
                }
                Err(_) => {
                    window_end += window;
                    in_window = 0;
                    continue;
                }
            }
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(c) => {
                // Decoded bytes: a compressed body is bounded by what it expands to.
                if received + c.len() > cfg.max_bytes {
                    return Attempt::Fail(format!(
                        "the body is larger than the limit of {} bytes (--fetch-max-bytes; counted after decompression)",
                        cfg.max_bytes
                    ));
                }
                in_window += c.len() as u64;
                received += c.len();
                chunks.push(c);
            }
            Err(e) => return Attempt::Retry(format!("reading the body: {}", error_chain(&e))),
        }
    }
    let mut body = Vec::with_capacity(received);
    for c in chunks.drain(..) {
        body.extend_from_slice(&c);
    }
    match String::from_utf8(body) {
        Ok(text) => Attempt::Done(Fetched::Body { text, etag }),
        Err(_) => Attempt::Fail("the body is not UTF-8 text".into()),
    }
}
