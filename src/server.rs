//! Server start-up and shutdown: data directory, database, catalog, HTTP listener, signals.

use anyhow::Context;
use std::sync::Arc;

use crate::catalog::service::Catalog;
use crate::config::{LogFormat, ServeArgs};
use crate::db::Db;

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Settings errors (auth mode, tokens file, trusted documents) stop start-up before anything
    // is written.
    let http_options = args.http_options()?;
    let sources = match &args.sources {
        Some(p) => {
            anyhow::ensure!(
                p.is_file(),
                "sources file {} does not exist; pass an existing file with --sources",
                p.display()
            );
            p.clone()
        }
        None => {
            if crate::example::seed(&args.data_dir).with_context(|| format!("seeding {}", args.data_dir.display()))? {
                tracing::info!(dir = %args.data_dir.display(), "seeded the example catalog");
            }
            args.data_dir.join("sources.yaml")
        }
    };
    if args.database.is_none() {
        std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    }
    let url = args.database_url();
    let db = Db::connect(&url, args.db_timeout())
        .await
        .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?;
    crate::tls::install_crypto_provider();
    let catalog = Catalog::open(sources.clone(), db, args.catalog_options()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on :0.
    tracing::info!(%addr, sources = %sources.display(), database = %redact_url(&url), "listening; GraphiQL at http://{addr}/graphql");

    let initial: Arc<Catalog> = catalog.clone();
    tokio::spawn(async move {
        initial.refresh_all().await;
        initial.watch_loop().await;
    });

    let app = crate::http::router(catalog.clone(), http_options);
    let stopping = catalog.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Ends subscription streams (clients get `complete`) and background loops; then axum
        // stops accepting and drains in-flight requests. Long-lived connections that stay open
        // are cut after a grace period.
        stopping.shutdown();
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            tracing::warn!("connections still open 10 s after shutdown began; exiting");
            std::process::exit(0);
        });
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining connections");
}
