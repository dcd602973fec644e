//! Command line and environment settings.

pub use crate::logging::LogFormat;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "catalog-bff", version, about = "GraphQL backend-for-frontend for catalog source management")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Copy a sources file and its yaml catalogs into the ConfigMaps `<prefix>-<plugin>` (the
    /// `kubernetes` store), e.g. `catalog-bff import --sources sources.yaml --namespace kubeflow`.
    Import(ImportArgs),
    /// Print the GraphQL schema (SDL); `schema/schema.graphql` is this output.
    Schema,
    /// Print the trusted-documents manifest ({sha256: document}) for a directory of .graphql
    /// files, e.g. `catalog-bff trusted-documents ui-contract`.
    TrustedDocuments {
        /// Directory of .graphql files.
        dir: PathBuf,
    },
    /// Exit 0 if the server on this machine answers `GET /healthz` with 200, else 1. The
    /// container image's HEALTHCHECK runs it: the image has no curl or wget.
    Healthcheck {
        /// The server's listen address (the same env var as `serve --listen`); an unspecified
        /// address (0.0.0.0, [::]) is reached on loopback.
        #[arg(long, env = "CATALOG_BFF_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Path to ask for.
        #[arg(long, default_value = "/healthz")]
        path: String,
        /// Seconds before giving up.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The sources file to import (either dialect); its yaml catalogs are read beside it.
    #[arg(long)]
    pub sources: PathBuf,
    /// Namespace of the ConfigMaps. Default: the pod's, else the kubeconfig context's.
    #[arg(long, env = "CATALOG_BFF_NAMESPACE")]
    pub namespace: Option<String>,
    /// ConfigMap names are `<prefix>-<plugin>`.
    #[arg(long, env = "CATALOG_BFF_CONFIGMAP_PREFIX", default_value = "catalog-bff")]
    pub configmap_prefix: String,
    /// Replace the sources of ConfigMaps that exist already (default: refuse).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    None,
    Static,
    /// A bearer token is checked with a Kubernetes TokenReview and authorised with a
    /// SubjectAccessReview (see `--auth-resource`, `--auth-viewer-verb`, `--auth-operator-verb`).
    Kubernetes,
}

/// Where source configuration lives.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreMode {
    /// The sources file and catalog files beside it (`--sources`).
    File,
    /// One ConfigMap per plugin, `<--configmap-prefix>-<plugin>`, written through the
    /// Kubernetes API.
    Kubernetes,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExemptRole {
    None,
    Viewer,
    Operator,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CATALOG_BFF_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The sources file. Default: DATA_DIR/sources.yaml, seeded with the bundled example
    /// catalog on first start.
    #[arg(long, env = "CATALOG_BFF_SOURCES")]
    pub sources: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB.
    /// Default: sqlite://DATA_DIR/catalog-bff.db
    #[arg(long, env = "CATALOG_BFF_DATABASE_URL")]
    pub database: Option<String>,
    /// Directory for the default SQLite database and the example catalog.
    #[arg(long, env = "CATALOG_BFF_DATA_DIR", default_value = "./catalog-data")]
    pub data_dir: PathBuf,
    /// Sources of one plugin refreshed at the same time.
    #[arg(long, env = "CATALOG_BFF_REFRESH_CONCURRENCY", default_value_t = 4)]
    pub refresh_concurrency: usize,
    /// Refresh jobs loading yaml sources at the same time; more wait in phase QUEUED.
    #[arg(long, env = "CATALOG_BFF_MAX_RUNNING_JOBS", default_value_t = 4)]
    pub max_running_jobs: usize,
    /// Refresh jobs fetching url sources at the same time (a budget of its own: a stalled host
    /// never holds up a yaml refresh); more wait with a `queuedReason`.
    #[arg(long, env = "CATALOG_BFF_MAX_RUNNING_FETCHES", default_value_t = 4)]
    pub max_running_fetches: usize,
    /// Seconds readiness waits at start for url sources; those still loading then read LOADING
    /// and are listed in /readyz without failing it (yaml sources are always waited for).
    #[arg(long, env = "CATALOG_BFF_READY_WAIT", default_value_t = 10.0)]
    pub ready_wait: f64,
    /// Seconds between checks for edits made outside the API (0 turns the watcher off).
    #[arg(long, env = "CATALOG_BFF_WATCH_INTERVAL", default_value_t = 2.0)]
    pub watch_interval: f64,
    /// How often url sources without `refreshInterval` refresh on their own (a Go-style
    /// duration: `30s`, `10m`, `1h`; `0` turns it off). yaml sources refresh on their own only
    /// with a `refreshInterval` of their own (the watcher sees their edits).
    #[arg(long, env = "CATALOG_BFF_DEFAULT_REFRESH_INTERVAL", default_value = "10m", value_parser = interval_or_off)]
    pub default_refresh_interval: IntervalOrOff,
    /// The first automatic retry after a refresh that failed to read its source (a fetch or a
    /// file read); the delay doubles on every retry (Go-style duration).
    #[arg(long, env = "CATALOG_BFF_RETRY_INITIAL_INTERVAL", default_value = "30s", value_parser = go_duration)]
    pub retry_initial_interval: std::time::Duration,
    /// The longest delay between two automatic retries of a failed refresh (Go-style duration).
    #[arg(long, env = "CATALOG_BFF_RETRY_MAX_INTERVAL", default_value = "15m", value_parser = go_duration)]
    pub retry_max_interval: std::time::Duration,
    /// url sources: timeout per attempt, in seconds.
    #[arg(long, env = "CATALOG_BFF_FETCH_TIMEOUT", default_value_t = 30.0)]
    pub fetch_timeout: f64,
    /// url sources: every attempt and retry delay of one fetch together, in seconds.
    #[arg(long, env = "CATALOG_BFF_FETCH_BUDGET", default_value_t = 60.0)]
    pub fetch_budget: f64,
    /// url sources: slowest accepted body, in bytes per second over 10 s (0: no minimum); a
    /// slower one ends the attempt.
    #[arg(long, env = "CATALOG_BFF_FETCH_MIN_RATE", default_value_t = 1024)]
    pub fetch_min_rate: u64,
    /// url sources: largest accepted body, in bytes, after decompression.
    #[arg(long, env = "CATALOG_BFF_FETCH_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub fetch_max_bytes: usize,
    /// url sources: retries after a failed attempt (connection error, timeout, 5xx, 429).
    #[arg(long, env = "CATALOG_BFF_FETCH_RETRIES", default_value_t = 3)]
    pub fetch_retries: u32,
    /// url sources: first retry delay in milliseconds; doubles on each retry.
    #[arg(long, env = "CATALOG_BFF_FETCH_BACKOFF_MS", default_value_t = 200)]
    pub fetch_backoff_ms: u64,
    /// Where mounted secrets live: authSecretRef {name, key} reads SECRETS_DIR/name/key.
    #[arg(long, env = "CATALOG_BFF_SECRETS_DIR", default_value = "/var/run/secrets/catalog-bff")]
    pub secrets_dir: PathBuf,
    /// url sources may not reach loopback, link-local, private, unspecified, CGNAT, multicast
    /// or broadcast addresses (checked after DNS and on every redirect) except these hosts,
    /// IPs or CIDRs. Comma-separated, e.g. `127.0.0.1,10.0.0.0/8,catalog.internal`.
    #[arg(long, env = "CATALOG_BFF_URL_ALLOW", value_delimiter = ',')]
    pub url_allow: Vec<String>,
    /// Deepest YAML nesting accepted in catalogs, URL bodies, API content and the sources file;
    /// deeper documents are refused before parsing (parse cost grows with depth).
    #[arg(long, env = "CATALOG_BFF_MAX_YAML_DEPTH", default_value_t = catalog_yaml::depth::DEFAULT_MAX_DEPTH)]
    pub max_yaml_depth: usize,
    /// Query response cache: seconds an entry lives (0 turns the cache off).
    #[arg(long, env = "CATALOG_BFF_CACHE_TTL", default_value_t = 30.0)]
    pub cache_ttl: f64,
    /// Query response cache: maximum number of entries.
    #[arg(long, env = "CATALOG_BFF_CACHE_SIZE", default_value_t = 10_000)]
    pub cache_size: u64,
    /// Query response cache: most bytes of cached responses (keys included).
    #[arg(long, env = "CATALOG_BFF_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Seconds between keep-alive pings on WebSocket and SSE subscriptions.
    #[arg(long, env = "CATALOG_BFF_KEEPALIVE_INTERVAL", default_value_t = 15.0)]
    pub keepalive_interval: f64,
    /// Where source configuration lives: `file` (the sources file) or `kubernetes` (one ConfigMap
    /// per plugin in --namespace, through the Kubernetes API; in-cluster service account, else
    /// KUBECONFIG).
    #[arg(long, env = "CATALOG_BFF_STORE", value_enum, default_value = "file")]
    pub store: StoreMode,
    /// Kubernetes namespace of the ConfigMaps (and of SubjectAccessReviews). Default: the pod's
    /// namespace, else the kubeconfig context's, else `default`.
    #[arg(long, env = "CATALOG_BFF_NAMESPACE")]
    pub namespace: Option<String>,
    /// ConfigMap names are `<prefix>-<plugin>`, e.g. `catalog-bff-models`.
    #[arg(long, env = "CATALOG_BFF_CONFIGMAP_PREFIX", default_value = "catalog-bff")]
    pub configmap_prefix: String,
    /// With --store kubernetes: namespaces an `authSecretRef.namespace` may name (comma-separated).
    /// Default: only --namespace.
    #[arg(long, env = "CATALOG_BFF_SECRET_NAMESPACES", value_delimiter = ',')]
    pub secret_namespaces: Vec<String>,
    /// With --store kubernetes and an empty cluster: the sources file whose sources (and yaml
    /// catalogs) seed the ConfigMaps on first start. Without it, the ConfigMaps start empty.
    #[arg(long, env = "CATALOG_BFF_SEED")]
    pub seed: Option<PathBuf>,
    /// Seconds a request with `X-Catalog-Min-Generation` waits for this replica to catch up
    /// before it fails with UNAVAILABLE.
    #[arg(long, env = "CATALOG_BFF_CONSISTENCY_WAIT", default_value_t = 5.0)]
    pub consistency_wait: f64,
    /// Seconds a refresh job's lease lasts (renewed every third of it); a job whose replica
    /// stopped renewing is marked FAILED by another replica after this.
    #[arg(long, env = "CATALOG_BFF_JOB_LEASE", default_value_t = 15.0)]
    pub job_lease: f64,
    /// This replica's name in job leases and logs. Default: the host name (the pod name).
    #[arg(long, env = "CATALOG_BFF_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Webhooks: how long a delivery is retried (with backoff: 1 s doubling, at most 5 min
    /// apart) before it is given up as FAILED. A duration: `90s`, `30m`, `24h`, or seconds.
    #[arg(long, env = "CATALOG_BFF_WEBHOOK_RETRY_FOR", default_value = "24h", value_parser = parse_duration)]
    pub webhook_retry_for: std::time::Duration,
    /// Webhooks: the longest one attempt may take (connect, send, the receiver's answer); a
    /// receiver that hangs costs one delivery slot this long, then the attempt is retried.
    #[arg(long, env = "CATALOG_BFF_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: std::time::Duration,
    /// Webhooks: deliveries in flight at once on this replica (slow receivers hold these
    /// slots, never an apply or a refresh).
    #[arg(long, env = "CATALOG_BFF_WEBHOOK_CONCURRENCY", default_value_t = 8)]
    pub webhook_concurrency: usize,
    /// Authentication: `none` (only on a loopback address unless --allow-unauthenticated),
    /// `static` (a tokens file, see --tokens-file) or `kubernetes` (TokenReview +
    /// SubjectAccessReview).
    #[arg(long, env = "CATALOG_BFF_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,
    /// With --auth static: YAML file `tokens: [{name, role: viewer|operator, sha256}]`.
    #[arg(long, env = "CATALOG_BFF_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// With --auth kubernetes: the resource a SubjectAccessReview asks about, `[GROUP/]RESOURCE`
    /// (in --namespace, named for the plugin's ConfigMap when one is known).
    #[arg(long, env = "CATALOG_BFF_AUTH_RESOURCE", default_value = "configmaps")]
    pub auth_resource: String,
    /// With --auth kubernetes: the verb that makes a caller a viewer.
    #[arg(long, env = "CATALOG_BFF_AUTH_VIEWER_VERB", default_value = "get")]
    pub auth_viewer_verb: String,
    /// With --auth kubernetes: the verb that makes a caller an operator.
    #[arg(long, env = "CATALOG_BFF_AUTH_OPERATOR_VERB", default_value = "update")]
    pub auth_operator_verb: String,
    /// With --auth kubernetes: seconds a TokenReview/SubjectAccessReview decision is reused.
    #[arg(long, env = "CATALOG_BFF_AUTH_CACHE_TTL", default_value_t = 10.0)]
    pub auth_cache_ttl: f64,
    /// Allow --auth none on a non-loopback address (everyone becomes an operator).
    #[arg(long, env = "CATALOG_BFF_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Origins (e.g. https://console.example.com) allowed to open WebSocket/SSE connections,
    /// besides the server's own. Comma-separated; `*` allows all.
    #[arg(long, env = "CATALOG_BFF_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Origins that get CORS headers. Comma-separated; empty (the default) = CORS off.
    #[arg(long, env = "CATALOG_BFF_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes.
    #[arg(long, env = "CATALOG_BFF_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a connection's first request, and any request head from its first byte, may
    /// take to arrive; then 408 and the connection is closed.
    #[arg(long, env = "CATALOG_BFF_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a request body may take to arrive in full; then 408 and the connection is closed.
    #[arg(long, env = "CATALOG_BFF_BODY_TIMEOUT", default_value_t = 30.0)]
    pub body_timeout: f64,
    /// Seconds a keep-alive connection with no request in progress may stay silent (nothing
    /// read or written) before it is closed.
    #[arg(long, env = "CATALOG_BFF_IDLE_TIMEOUT", default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Most connections open at once from one client address; more are answered 503 with
    /// Retry-After (probes excepted). The total is bounded by the file-descriptor limit.
    #[arg(long, env = "CATALOG_BFF_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Largest GraphQL document, in bytes.
    #[arg(long, env = "CATALOG_BFF_MAX_DOCUMENT_BYTES", default_value_t = 32 * 1024)]
    pub max_document_bytes: usize,
    /// Most tokens in a GraphQL document.
    #[arg(long, env = "CATALOG_BFF_MAX_TOKENS", default_value_t = 4000)]
    pub max_tokens: usize,
    /// Seconds one database call may take (getting a pool connection included) before the
    /// request fails with UNAVAILABLE; probes use at most 0.8 s.
    #[arg(long, env = "CATALOG_BFF_DB_TIMEOUT", default_value_t = 2.0)]
    pub db_timeout: f64,
    /// Deepest selection nesting.
    #[arg(long, env = "CATALOG_BFF_MAX_DEPTH", default_value_t = 16)]
    pub max_depth: usize,
    /// Highest query complexity: a field counts 1, a list field (`revisions(limit)`,
    /// `entities(first)`, `auditLog(limit)`, `refreshJobs(limit)`) its size times its fields,
    /// and a `content` field 50.
    #[arg(long, env = "CATALOG_BFF_MAX_COMPLEXITY", default_value_t = crate::graphql::extensions::DEFAULT_MAX_COMPLEXITY)]
    pub max_complexity: usize,
    /// Largest response body, in bytes; large fields stop resolving once it is used up.
    #[arg(long, env = "CATALOG_BFF_MAX_RESPONSE_BYTES", default_value_t = crate::graphql::extensions::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// Most aliases in a document.
    #[arg(long, env = "CATALOG_BFF_MAX_ALIASES", default_value_t = 30)]
    pub max_aliases: usize,
    /// Most requests in a batch; 0 turns batching off.
    #[arg(long, env = "CATALOG_BFF_MAX_BATCH", default_value_t = 10)]
    pub max_batch: usize,
    /// Most subscriptions on one WebSocket connection.
    #[arg(long, env = "CATALOG_BFF_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 20)]
    pub max_subscriptions_per_connection: usize,
    /// Largest WebSocket message (and frame), in bytes; a bigger one closes the connection
    /// with 1009. GraphQL subscribe messages are small: the default leaves ample room.
    #[arg(long, env = "CATALOG_BFF_MAX_WS_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_ws_message_bytes: usize,
    /// Seconds a WebSocket may stay open without an accepted `connection_init` before it is
    /// closed with 4408; until then it holds no connection slot.
    #[arg(long, env = "CATALOG_BFF_WS_INIT_TIMEOUT", default_value_t = 10.0)]
    pub ws_init_timeout: f64,
    /// Most open WebSocket + SSE connections (a WebSocket counts once authenticated).
    #[arg(long, env = "CATALOG_BFF_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
    /// Changes (applySource, refresh*, rollbackSource) per caller per minute; 0 = unlimited.
    #[arg(long, env = "CATALOG_BFF_RATE_LIMIT", default_value_t = 60)]
    pub rate_limit: u32,
    /// Trusted documents: a directory of .graphql files (ui-contract/) or a JSON manifest
    /// {sha256: document}. Callers below --trusted-documents-exempt may run only these.
    #[arg(long, env = "CATALOG_BFF_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<PathBuf>,
    /// The role (and above) that may send any document when trusted documents are on;
    /// `none` restricts everyone.
    #[arg(long, env = "CATALOG_BFF_TRUSTED_DOCUMENTS_EXEMPT", default_value = "none")]
    pub trusted_documents_exempt: ExemptRole,
    /// Log format.
    #[arg(long, env = "CATALOG_BFF_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Check the settings, print them as JSON and exit without starting (nothing is read,
    /// written or connected to). Deploy checks use it to prove a manifest's args parse.
    #[arg(long)]
    pub check_config: bool,
}

impl ServeArgs {
    /// Settings that cannot work together, found without reading or connecting to anything.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.auth == AuthMode::None {
            anyhow::ensure!(
                self.listen.ip().is_loopback() || self.allow_unauthenticated,
                "--auth none on {} would let anyone on the network change the catalog; \
                 use --auth static --tokens-file FILE or --auth kubernetes, listen on 127.0.0.1, or pass --allow-unauthenticated",
                self.listen
            );
        }
        if self.auth == AuthMode::Static {
            anyhow::ensure!(self.tokens_file.is_some(), "--auth static needs --tokens-file FILE");
        }
        anyhow::ensure!(
            self.job_lease >= MIN_JOB_LEASE_SECS,
            "--job-lease {} is below the floor of {MIN_JOB_LEASE_SECS} s: a lease is renewed every third of it, and a \
             renewal round must fit in that with a database call to spare, or live jobs would be failed as abandoned; \
             use {MIN_JOB_LEASE_SECS} or more (default 15)",
            self.job_lease
        );
        if self.store == StoreMode::File {
            anyhow::ensure!(
                self.seed.is_none(),
                "--seed is for --store kubernetes; with --store file the sources file is --sources"
            );
        } else {
            anyhow::ensure!(
                self.sources.is_none(),
                "--sources is for --store file; with --store kubernetes the ConfigMaps are the truth: \
                 seed them on first start with --seed FILE, or copy a file in with `catalog-bff import`"
            );
        }
        Ok(())
    }

    /// What `--check-config` prints: the settings that decide how the server runs.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "listen": self.listen.to_string(),
            "store": format!("{:?}", self.store).to_lowercase(),
            "namespace": self.namespace,
            "configmapPrefix": self.configmap_prefix,
            "sources": self.sources.as_ref().map(|p| p.display().to_string()),
            "seed": self.seed.as_ref().map(|p| p.display().to_string()),
            "database": redact_url(&self.database_url()),
            "auth": format!("{:?}", self.auth).to_lowercase(),
            "tokensFile": self.tokens_file.as_ref().map(|p| p.display().to_string()),
            "secretsDir": self.secrets_dir.display().to_string(),
            "secretNamespaces": self.secret_namespaces,
            "trustedDocuments": self.trusted_documents.as_ref().map(|p| p.display().to_string()),
            "logFormat": format!("{:?}", self.log_format).to_lowercase(),
        })
    }

    pub fn http_options(&self) -> anyhow::Result<crate::http::HttpOptions> {
        use crate::auth::{Authenticator, NoAuth, Role, StaticTokens};
        use std::sync::Arc;
        let auth: Arc<dyn Authenticator> = match self.auth {
            AuthMode::None => Arc::new(NoAuth),
            AuthMode::Static => {
                let Some(path) = &self.tokens_file else {
                    anyhow::bail!("--auth static needs --tokens-file FILE");
                };
                Arc::new(StaticTokens::load(path)?)
            }
            AuthMode::Kubernetes => crate::auth::kubernetes::shared(crate::auth::kubernetes::Settings {
                namespace: self.namespace.clone(),
                configmap_prefix: self.configmap_prefix.clone(),
                resource: self.auth_resource.clone(),
                viewer_verb: self.auth_viewer_verb.clone(),
                operator_verb: self.auth_operator_verb.clone(),
                cache_ttl: seconds(self.auth_cache_ttl.max(0.0)),
            })?,
        };
        let trusted = match &self.trusted_documents {
            Some(p) => Some(crate::graphql::extensions::TrustedDocuments::load(p)?),
            None => None,
        };
        Ok(crate::http::HttpOptions {
            cache_ttl: seconds(self.cache_ttl),
            cache_size: self.cache_size,
            cache_max_bytes: self.cache_max_bytes,
            keepalive: seconds(self.keepalive_interval.max(0.05)),
            auth,
            allowed_origins: self.allowed_origins.clone(),
            cors_origins: self.cors_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            body_timeout: seconds(self.body_timeout.max(0.05)),
            max_batch: self.max_batch,
            max_connections: self.max_connections,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            ws: crate::http::ws::WsOptions {
                max_message_bytes: self.max_ws_message_bytes.max(1024),
                init_timeout: seconds(self.ws_init_timeout.max(0.05)),
            },
            schema: crate::graphql::SchemaOptions {
                limits: crate::graphql::extensions::Limits {
                    max_document_bytes: self.max_document_bytes,
                    max_tokens: self.max_tokens,
                    max_aliases: self.max_aliases,
                    max_depth: self.max_depth,
                    max_complexity: self.max_complexity,
                    max_response_bytes: self.max_response_bytes,
                },
                trusted,
                trusted_exempt: match self.trusted_documents_exempt {
                    ExemptRole::None => None,
                    ExemptRole::Viewer => Some(Role::Viewer),
                    ExemptRole::Operator => Some(Role::Operator),
                },
                changes_per_minute: self.rate_limit,
            },
            admission: None,
        })
    }

    /// The connection limits for a soft file-descriptor limit of `fds`.
    pub fn connection_limits(&self, fds: u64) -> crate::http::connections::ConnectionLimits {
        crate::http::connections::ConnectionLimits {
            // Failed authentications are limited per client address where they cost calls.
            tag_peer: self.auth == AuthMode::Kubernetes,
            ..crate::http::connections::ConnectionLimits::from_fd_limit(
                fds,
                seconds(self.header_timeout.max(0.05)),
                seconds(self.idle_timeout.max(0.05)),
                self.max_connections_per_ip,
            )
        }
    }

    /// The database call timeout.
    pub fn db_timeout(&self) -> std::time::Duration {
        seconds(self.db_timeout.max(0.05))
    }

    pub fn catalog_options(&self) -> catalog_core::CatalogOptions {
        use std::time::Duration;
        let secs = seconds;
        // The YAML parsers are free functions shared by every entry point (and catalogctl), so
        // the limit is process-wide; the server sets it once, here, before opening the catalog.
        catalog_core::set_yaml_limits(catalog_yaml::Limits::new(self.max_yaml_depth));
        let (url_allow, bad) = catalog_core::UrlAllow::parse(&self.url_allow);
        for entry in bad {
            tracing::warn!(entry = %entry, "ignoring a --url-allow entry that is neither a host name, an IP nor a CIDR");
        }
        catalog_core::CatalogOptions {
            refresh_concurrency: self.refresh_concurrency.max(1),
            max_running_jobs: self.max_running_jobs.max(1),
            max_running_fetches: self.max_running_fetches.max(1),
            ready_wait: secs(self.ready_wait),
            watch_interval: if self.watch_interval > 0.0 { Some(secs(self.watch_interval)) } else { None },
            fetch: catalog_core::FetchConfig {
                timeout: secs(self.fetch_timeout),
                connect_timeout: secs(self.fetch_timeout.min(5.0)),
                budget: secs(self.fetch_budget.max(0.5)),
                min_rate: self.fetch_min_rate,
                max_bytes: self.fetch_max_bytes,
                retries: self.fetch_retries,
                backoff: Duration::from_millis(self.fetch_backoff_ms),
                secrets_dir: self.secrets_dir.clone(),
                url_allow: std::sync::Arc::new(url_allow),
                kube_secrets: None,
            },
            cluster: catalog_core::ClusterOptions {
                replica_id: self.replica_id.clone().unwrap_or_else(catalog_core::default_replica_id),
                job_lease: secs(self.job_lease),
                consistency_wait: secs(self.consistency_wait),
            },
            schedule: catalog_core::SchedulePolicy {
                default_url_interval: self.default_refresh_interval.0,
                retry_initial: self.retry_initial_interval.max(Duration::from_secs(1)),
                retry_max: self.retry_max_interval.max(self.retry_initial_interval),
            },
            webhooks: catalog_core::WebhookOptions {
                retry_for: self.webhook_retry_for,
                timeout: self.webhook_timeout.max(Duration::from_millis(100)),
                concurrency: self.webhook_concurrency.clamp(1, 256),
                ..Default::default()
            },
        }
    }

    /// The SQLite database file, when the database is SQLite: no source may write over it.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("catalog-bff.db").display()),
        }
    }
}

/// The shortest `--job-lease`, in seconds.
pub const MIN_JOB_LEASE_SECS: f64 = 3.0;

/// Seconds from a flag, clamped to [0, one year] so that no value (inf, NaN, negative) can
/// panic a `Duration` or a timer.
fn seconds(s: f64) -> std::time::Duration {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    std::time::Duration::try_from_secs_f64(if s.is_nan() { 0.0 } else { s.clamp(0.0, YEAR) }).unwrap_or_default()
}

/// A duration flag: a number with a unit (`500ms`, `90s`, `30m`, `24h`, `7d`) or plain seconds;
/// at most a year.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{text}` is not a duration; write e.g. 90s, 30m or 24h"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, m, h or d")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(seconds(secs))
}

/// A database URL with its password replaced by `***`, for logs and `describe`.
pub fn redact_url(url: &str) -> String {
    // postgres://user:password@host/db → postgres://user:***@host/db
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A Go-style duration flag (`30s`, `10m`, `1h30m`).
fn go_duration(text: &str) -> Result<std::time::Duration, String> {
    catalog_core::parse_duration(text).map_err(|e| format!("{e}; use a Go-style duration such as 30s, 10m or 1h"))
}

/// `--default-refresh-interval`: an interval, or off (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalOrOff(pub Option<std::time::Duration>);

/// `--default-refresh-interval`: `0` is off, else an interval of at least 10s.
fn interval_or_off(text: &str) -> Result<IntervalOrOff, String> {
    if text == "0" || text == "off" {
        return Ok(IntervalOrOff(None));
    }
    catalog_core::parse_refresh_interval(text)
        .map(|d| IntervalOrOff(Some(d)))
        .map_err(|e| format!("{e}; or 0 to turn it off"))
}
