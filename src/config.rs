//! Command line and environment settings.

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
    Serve(ServeArgs),
    /// Print the GraphQL schema (SDL); `schema/schema.graphql` is this output.
    Schema,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Refresh jobs running at the same time; more wait in phase QUEUED.
    #[arg(long, env = "CATALOG_BFF_MAX_RUNNING_JOBS", default_value_t = 4)]
    pub max_running_jobs: usize,
    /// Seconds between checks for edits made outside the API (0 turns the watcher off).
    #[arg(long, env = "CATALOG_BFF_WATCH_INTERVAL", default_value_t = 2.0)]
    pub watch_interval: f64,
    /// url sources: timeout per attempt, in seconds.
    #[arg(long, env = "CATALOG_BFF_FETCH_TIMEOUT", default_value_t = 30.0)]
    pub fetch_timeout: f64,
    /// url sources: largest accepted body, in bytes.
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
    /// Query response cache: seconds an entry lives (0 turns the cache off).
    #[arg(long, env = "CATALOG_BFF_CACHE_TTL", default_value_t = 30.0)]
    pub cache_ttl: f64,
    /// Query response cache: maximum number of entries.
    #[arg(long, env = "CATALOG_BFF_CACHE_SIZE", default_value_t = 10_000)]
    pub cache_size: u64,
    /// Seconds between keep-alive pings on WebSocket and SSE subscriptions.
    #[arg(long, env = "CATALOG_BFF_KEEPALIVE_INTERVAL", default_value_t = 15.0)]
    pub keepalive_interval: f64,
    /// Log format.
    #[arg(long, env = "CATALOG_BFF_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    pub fn http_options(&self) -> crate::http::HttpOptions {
        crate::http::HttpOptions {
            cache_ttl: std::time::Duration::from_secs_f64(self.cache_ttl.max(0.0)),
            cache_size: self.cache_size,
            keepalive: std::time::Duration::from_secs_f64(self.keepalive_interval.max(0.05)),
        }
    }

    pub fn catalog_options(&self) -> crate::catalog::service::CatalogOptions {
        use std::time::Duration;
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        crate::catalog::service::CatalogOptions {
            refresh_concurrency: self.refresh_concurrency.max(1),
            max_running_jobs: self.max_running_jobs.max(1),
            watch_interval: if self.watch_interval > 0.0 { Some(secs(self.watch_interval)) } else { None },
            fetch: crate::catalog::fetch::FetchConfig {
                timeout: secs(self.fetch_timeout),
                connect_timeout: secs(self.fetch_timeout.min(5.0)),
                max_bytes: self.fetch_max_bytes,
                retries: self.fetch_retries,
                backoff: Duration::from_millis(self.fetch_backoff_ms),
                secrets_dir: self.secrets_dir.clone(),
            },
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("catalog-bff.db").display()),
        }
    }
}
