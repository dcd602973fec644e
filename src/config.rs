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
    /// Log format.
    #[arg(long, env = "CATALOG_BFF_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("catalog-bff.db").display()),
        }
    }
}
