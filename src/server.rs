//! Server start-up and shutdown: data directory, database, catalog, HTTP listener, signals.

use anyhow::Context;
use std::sync::Arc;

use crate::config::redact_url;
use crate::config::{ServeArgs, StoreMode};
use catalog_core::Catalog;
use catalog_core::ConfigStore;
use catalog_core::Db;
use catalog_core::FileStore;
use catalog_core::KubeSecrets;
use catalog_core::KubeStore;
use std::path::{Path, PathBuf};

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Settings errors (auth mode, tokens file, trusted documents) stop start-up before anything
    // is written.
    args.check()?;
    let mut http_options = args.http_options()?;
    let fds = crate::http::connections::raise_fd_limit();
    let limits = args.connection_limits(fds.soft);
    tracing::info!(
        soft_before = fds.soft_before,
        soft = fds.soft,
        hard = fds.hard,
        connections = limits.max_open,
        per_address = limits.max_per_ip,
        "file descriptors: soft limit {} (was {}, hard {}); up to {} connections at once, {} per client address",
        fds.soft,
        fds.soft_before,
        fds.hard,
        limits.max_open,
        limits.max_per_ip
    );
    let admission = Arc::new(crate::http::connections::Admission::new(limits));
    http_options.admission = Some(admission.clone());
    let sources = match &args.sources {
        _ if args.store == StoreMode::Kubernetes => PathBuf::new(),
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
    remove_old_snapshot_cache(&args.data_dir);
    let url = args.database_url();
    let db = Db::connect(&url, args.db_timeout())
        .await
        .with_context(|| format!("connecting to the database ({})", redact_url(&url)))?;
    catalog_core::install_crypto_provider();
    let mut options = args.catalog_options();
    let store: Arc<dyn ConfigStore> = match args.store {
        StoreMode::File => Arc::new(FileStore::new(
            sources.clone(),
            catalog_core::Reserved { files: args.sqlite_path().into_iter().collect() },
        )),
        StoreMode::Kubernetes => {
            let (client, namespace) = crate::k8s::connect(args.namespace.as_deref()).await?;
            let store = KubeStore::new(client.clone(), &namespace, &args.configmap_prefix).watching();
            let seed = match &args.seed {
                Some(path) => Some(catalog_core::SourcesFile::read(path).map_err(|d| {
                    anyhow::anyhow!(
                        "the --seed file is invalid:\n{}",
                        d.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
                    )
                })?),
                None => None,
            };
            for name in store.seed(seed.as_ref()).await? {
                tracing::info!(configmap = %name, namespace = %namespace, seeded = seed.is_some(), "created the ConfigMap");
            }
            let mut allowed = args.secret_namespaces.clone();
            if allowed.is_empty() {
                allowed.push(namespace.clone());
            }
            options.fetch.kube_secrets = Some(Arc::new(KubeSecrets::new(client, &namespace, allowed)));
            Arc::new(store)
        }
    };
    let described = store.describe();
    // Bound before the catalog opens, which starts the initial refresh: a port in use stops
    // the process before it claims a refresh job. Connections wait until the server accepts.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let catalog = Catalog::open(store, db, options).await?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when listening on :0.
    tracing::info!(%addr, sources = %described, database = %redact_url(&url), "listening; GraphiQL at http://{addr}/graphql");

    let app = crate::http::router(catalog.clone(), http_options);
    let stopping = catalog.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Ends subscription streams (clients get `complete`) and background loops; then the
        // server stops accepting and drains in-flight requests. Long-lived connections that stay open
        // are cut after a grace period.
        stopping.shutdown();
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            tracing::warn!("connections still open 10 s after shutdown began; exiting");
            std::process::exit(0);
        });
    };
    crate::http::connections::serve(listener, app, admission, shutdown).await;
    // What the write-ahead log still holds goes into the SQLite file (no automatic checkpoints,
    // see `Db::connect`); a later start would replay it anyway.
    if let Err(e) = catalog.checkpoint().await {
        tracing::warn!(error = %e, "could not checkpoint the SQLite write-ahead log at shutdown");
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// `catalog-bff import`: a sources file and its catalogs into the ConfigMaps. Everything is
/// checked (the file, every catalog readable, every ConfigMap under 1 MiB, none in the way)
/// before the first ConfigMap is written.
pub async fn import(args: crate::config::ImportArgs) -> anyhow::Result<Vec<String>> {
    let file = catalog_core::SourcesFile::read(&args.sources).map_err(|d| {
        anyhow::anyhow!(
            "{} is invalid:\n{}",
            args.sources.display(),
            d.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
        )
    })?;
    let (client, namespace) = crate::k8s::connect(args.namespace.as_deref()).await?;
    KubeStore::new(client, &namespace, &args.configmap_prefix).import(&file, args.overwrite).await
}

/// Where versions before the removal of the startup snapshot cache kept it, under DATA_DIR.
const OLD_SNAPSHOT_CACHE: &str = "snapshot-cache";

/// Removes the startup snapshot cache an earlier version left in `DATA_DIR/snapshot-cache/`
/// (it was removed: a restart parses as fast as it read the cache, and url sources start from
/// their stored content). Only that version's own files go (`<plugin>.<hash>.snap` and the
/// `.<name>.snap.tmp-*` temp files of its writes), then the directory if that left it empty: it is
/// no longer reserved, so anything else in it is somebody's and stays. One info line when
/// anything was removed; nothing at all when there is no such directory.
fn remove_old_snapshot_cache(data_dir: &Path) {
    let dir = data_dir.join(OLD_SNAPSHOT_CACHE);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let mut files = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.ends_with(".snap") || (name.starts_with('.') && name.contains(".snap.tmp-"));
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(entry.path()).is_ok() {
            files += 1;
        }
    }
    let dir_removed = std::fs::remove_dir(&dir).is_ok();
    if files > 0 || dir_removed {
        tracing::info!(
            dir = %dir.display(),
            files,
            dir_removed,
            "removed the snapshot cache an earlier version left (this version has none)"
        );
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
