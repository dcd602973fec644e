//! The Kubernetes config store (`--store kubernetes`): one ConfigMap per plugin, written through
//! the Kubernetes API, never through a volume mount.
//!
//! ConfigMap `<prefix>-<plugin>` (e.g. `catalog-bff-models`) in `--namespace` holds key
//! `sources.yaml` (that plugin's sources, Kubeflow dialect) and one key per yaml catalog (the
//! source's `yamlCatalogPath` is the key, `<id>-<plugin>.yaml` for sources made through the API).
//! - Writes are merge patches of the changed keys, conditional on the `resourceVersion` they were
//!   computed against: a 409 means someone else wrote ([`StoreError::Conflict`]); the service
//!   re-reads and decides. Labels, annotations and keys the write does not change are kept.
//! - Kubernetes refuses a ConfigMap over 1 MiB: a write that would pass it is refused before
//!   anything is sent ([`ConfigStore::check_write`]), naming the size, the limit and what to do.
//! - kube-runtime's watcher on each ConfigMap wakes the catalog's watcher ([`ConfigStore::changed`]),
//!   so a `kubectl edit` takes the same path as an external file edit.
//! - First start with no ConfigMap: [`KubeStore::seed`] creates it from a sources file, or empty.

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Committed, Config, ConfigStore, Doc, LoadError, StoreError, Write};
use crate::diagnostics::{Diagnostic, Layer};
use crate::paths;
use crate::plugins::PluginKind;
use crate::sources::{SourceEntry, SourcesFile};

/// The key of a plugin's sources list.
pub const SOURCES_KEY: &str = "sources.yaml";
/// Kubernetes refuses ConfigMaps whose data (keys and values) is larger than this.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

pub struct KubeStore {
    api: Api<ConfigMap>,
    namespace: String,
    prefix: String,
    changes: Arc<tokio::sync::Notify>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        for w in &self.watchers {
            w.abort();
        }
    }
}

/// How long one call to the Kubernetes API may take (the watcher's long polls excepted).
pub const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every call to the API server is bounded: a half-open connection must never hold the write
/// lock (or a cluster lock) for long. A timeout reads as an unreachable API server.
pub async fn bounded<T>(call: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the Kubernetes API within {} s", API_TIMEOUT.as_secs()),
        )))),
    }
}

/// Whether `key` may name a catalog in a ConfigMap: the Kubernetes key syntax, not the sources
/// list's key.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key != SOURCES_KEY
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The size Kubernetes counts against the limit: every key and value.
pub fn data_size(data: &BTreeMap<String, String>) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// What a ConfigMap holds besides `data`, counted against the 1 MiB limit as well: Kubernetes
/// counts `binaryData` with `data`, and labels and annotations travel in the same object (a
/// `kubectl apply`'s last-applied-configuration annotation repeats the whole data), so they
/// count too: keys plus values, binaryData decoded.
fn overhead(cm: &ConfigMap) -> usize {
    let strings =
        |m: &Option<BTreeMap<String, String>>| m.iter().flatten().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let binary: usize = cm.binary_data.iter().flatten().map(|(k, v)| k.len() + v.0.len()).sum();
    binary + strings(&cm.metadata.labels) + strings(&cm.metadata.annotations)
}

fn too_large(name: &str, size: usize, overhead: usize) -> Diagnostic {
    let besides = if overhead > 0 {
        format!(", {overhead} of them in its binaryData, labels and annotations")
    } else {
        String::new()
    };
    Diagnostic::error(
        Layer::Semantics,
        format!(
            "ConfigMap {name} would hold {size} bytes ({:.2} MiB{besides}); Kubernetes allows at most {MAX_CONFIGMAP_BYTES} bytes (1 MiB) per ConfigMap",
            size as f64 / (1024.0 * 1024.0)
        ),
    )
    .field("input.content")
    .hint("serve a catalog this large over HTTP (a `url` source), or split it into several sources; nothing was written")
}

/// How a Kubernetes API failure reads to an operator.
fn api_error(e: &kube::Error, what: &str) -> StoreError {
    match e {
        // 404: deleted since it was read; like a conflict, the caller re-reads and decides.
        kube::Error::Api(s) if s.code == 409 || s.code == 404 => StoreError::Conflict(format!("{what}: {}", s.message)),
        kube::Error::Api(s) if s.code == 422 => StoreError::Invalid(Box::new(
            Diagnostic::error(Layer::Semantics, format!("{what}: the Kubernetes API refused it: {}", s.message))
                .hint("make the change smaller (a `url` source for a large catalog)"),
        )),
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => StoreError::Failed(format!(
            "{what}: the Kubernetes API said {} ({}); check the service account's RBAC (configmaps get/list/watch/create/update)",
            s.code, s.message
        )),
        kube::Error::Api(s) => StoreError::Failed(format!("{what}: the Kubernetes API said {}: {}", s.code, s.message)),
        other => StoreError::Unavailable(format!("{what}: the Kubernetes API is unreachable: {other}")),
    }
}

#[derive(Serialize)]
struct KubeflowModels<'a> {
    model_catalogs: &'a [SourceEntry],
}

#[derive(Serialize)]
struct KubeflowMcp<'a> {
    mcp_catalogs: &'a [SourceEntry],
}

/// A plugin's sources list in the Kubeflow dialect.
pub fn render_sources(plugin: PluginKind, entries: &[SourceEntry]) -> String {
    let body = match plugin {
        PluginKind::Models => serde_yaml_ng::to_string(&KubeflowModels { model_catalogs: entries }),
        PluginKind::Mcp => serde_yaml_ng::to_string(&KubeflowMcp { mcp_catalogs: entries }),
    };
    let key = match plugin {
        PluginKind::Models => "model_catalogs",
        PluginKind::Mcp => "mcp_catalogs",
    };
    body.unwrap_or_else(|_| format!("{key}: []\n"))
}

/// The ConfigMap data of every plugin for a sources file and its yaml catalogs: each yaml
/// source's catalog goes to key `<id>-<plugin>.yaml` (its `yamlCatalogPath` is rewritten to
/// it). Refuses (naming the ConfigMap) a plugin whose data would pass 1 MiB, or a catalog file
/// that cannot be read.
pub fn data_from_file(
    prefix: &str,
    file: &SourcesFile,
) -> Result<BTreeMap<PluginKind, BTreeMap<String, String>>, String> {
    let mut out = BTreeMap::new();
    for plugin in PluginKind::ALL {
        let name = configmap_name(prefix, plugin);
        let mut data = BTreeMap::new();
        let mut entries = Vec::new();
        for (p, e) in &file.sources {
            if *p != plugin {
                continue;
            }
            let mut e = e.clone();
            if let Some(rel) = e.yaml_catalog().map(str::to_string) {
                let path = file.resolve(&rel);
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    format!("source {plugin}/{}: cannot read its catalog {}: {err}", e.id, path.display())
                })?;
                let key = paths::assigned_name(plugin, &e.id);
                e.properties.insert("yamlCatalogPath".into(), key.clone().into());
                data.insert(key, text);
            }
            entries.push(e);
        }
        data.insert(SOURCES_KEY.to_string(), render_sources(plugin, &entries));
        let size = data_size(&data);
        if size > MAX_CONFIGMAP_BYTES {
            return Err(format!(
                "ConfigMap {name} would hold {size} bytes; Kubernetes allows at most {MAX_CONFIGMAP_BYTES} (1 MiB): \
                 serve the largest catalogs over HTTP (`url` sources) or split them; nothing was written"
            ));
        }
        out.insert(plugin, data);
    }
    Ok(out)
}

pub fn configmap_name(prefix: &str, plugin: PluginKind) -> String {
    format!("{prefix}-{}", plugin.name())
}

fn configmap(name: &str, namespace: &str, version: Option<String>, data: BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version: version,
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "catalog-bff".to_string())])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

impl KubeStore {
    /// One plugin's document: `Err(LoadError)` when the API server could not be asked,
    /// `Ok(Err(diagnostics))` when its ConfigMap is invalid or gone.
    async fn load_doc(&self, plugin: PluginKind) -> Result<Result<Doc, Vec<Diagnostic>>, LoadError> {
        let name = self.name(plugin);
        let cm = bounded(self.api.get_opt(&name))
            .await
            .map_err(|e| LoadError::Unavailable(api_error(&e, &format!("reading ConfigMap {name}")).to_string()))?;
        // The ConfigMaps exist from the first start on (seed); one that vanished (a GitOps
        // prune, a stray `kubectl delete`) or lost its sources list is an invalid
        // configuration, not "every source removed": the last good one stays in use.
        let missing = |what: String| {
            vec![
                Diagnostic::error(Layer::Syntax, what).in_file(self.sources_path(plugin).display().to_string()).hint(
                    "restore it (kubectl apply, or `catalog-bff import`), or restart the server to create it empty",
                ),
            ]
        };
        let Some(cm) = cm else {
            return Ok(Err(missing(format!("ConfigMap {name} does not exist in namespace {}", self.namespace))));
        };
        let overhead = overhead(&cm);
        let (mut data, version) = (cm.data.unwrap_or_default(), cm.metadata.resource_version);
        let Some(text) = data.remove(SOURCES_KEY) else {
            return Ok(Err(missing(format!("ConfigMap {name} has no key {SOURCES_KEY}"))));
        };
        Ok(SourcesFile::parse(&self.sources_path(plugin), text).map(|file| Doc {
            file,
            version,
            catalogs: Some(data),
            overhead,
        }))
    }

    /// A store over ConfigMaps `<prefix>-<plugin>` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, prefix: &str) -> KubeStore {
        KubeStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            prefix: prefix.to_string(),
            changes: Arc::new(tokio::sync::Notify::new()),
            watchers: Vec::new(),
        }
    }

    /// Starts a kube-runtime watcher per ConfigMap; each event wakes [`ConfigStore::changed`].
    pub fn watching(mut self) -> KubeStore {
        let prefix = self.prefix.clone();
        let api = self.api.clone();
        let changes = self.changes.clone();
        self.watchers = PluginKind::ALL
            .into_iter()
            .map(|plugin| {
                let name = configmap_name(&prefix, plugin);
                let api = api.clone();
                let changes = changes.clone();
                tokio::spawn(async move {
                    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
                    let mut stream = kube::runtime::watcher(api, config).boxed();
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(kube::runtime::watcher::Event::Apply(_) | kube::runtime::watcher::Event::Delete(_))
                            | Ok(kube::runtime::watcher::Event::InitDone) => changes.notify_one(),
                            Ok(_) => {}
                            Err(e) => {
                                // The watcher re-lists by itself (410 Gone included); back off a little.
                                tracing::warn!(configmap = %name, error = %e, "watching the ConfigMap failed; retrying");
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        self
    }

    fn name(&self, plugin: PluginKind) -> String {
        configmap_name(&self.prefix, plugin)
    }

    /// The virtual path of a plugin's sources list, as diagnostics name it.
    fn sources_path(&self, plugin: PluginKind) -> PathBuf {
        Path::new(&self.name(plugin)).join(SOURCES_KEY)
    }

    /// Creates the ConfigMaps that do not exist yet: from `seed` (a sources file and its yaml
    /// catalogs), or empty. Existing ConfigMaps are left alone. Returns the names created.
    pub async fn seed(&self, seed: Option<&SourcesFile>) -> anyhow::Result<Vec<String>> {
        let data = match seed {
            Some(file) => Some(data_from_file(&self.prefix, file).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let mut created = Vec::new();
        for plugin in PluginKind::ALL {
            let name = self.name(plugin);
            let existing = bounded(self.api.get_opt(&name))
                .await
                .map_err(|e| anyhow::anyhow!("{}", api_error(&e, &format!("reading ConfigMap {name}"))))?;
            if existing.is_some() {
                continue;
            }
            let data = data
                .as_ref()
                .and_then(|d| d.get(&plugin).cloned())
                .unwrap_or_else(|| BTreeMap::from([(SOURCES_KEY.to_string(), render_sources(plugin, &[]))]));
            match bounded(self.api.create(&PostParams::default(), &configmap(&name, &self.namespace, None, data))).await
            {
                Ok(_) => created.push(name),
                // Another replica created it a moment ago: that is the one.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => anyhow::bail!("{}", api_error(&e, &format!("creating ConfigMap {name}"))),
            }
        }
        Ok(created)
    }

    /// `catalog-bff import`: writes a sources file and its catalogs into the ConfigMaps,
    /// creating them, or replacing existing ones when `overwrite`. Every ConfigMap is checked
    /// (size, catalogs readable) before the first is written.
    pub async fn import(&self, file: &SourcesFile, overwrite: bool) -> anyhow::Result<Vec<String>> {
        let data = data_from_file(&self.prefix, file).map_err(anyhow::Error::msg)?;
        let mut current = BTreeMap::new();
        for plugin in PluginKind::ALL {
            let name = self.name(plugin);
            let existing = bounded(self.api.get_opt(&name))
                .await
                .map_err(|e| anyhow::anyhow!("{}", api_error(&e, &format!("reading ConfigMap {name}"))))?;
            if existing.is_some() && !overwrite {
                anyhow::bail!(
                    "ConfigMap {name} already exists in namespace {}; pass --overwrite to replace its sources",
                    self.namespace
                );
            }
            current.insert(plugin, existing.and_then(|c| c.metadata.resource_version));
        }
        let mut written = Vec::new();
        for (plugin, data) in data {
            let name = self.name(plugin);
            let cm = configmap(&name, &self.namespace, current.get(&plugin).cloned().flatten(), data);
            let result = match cm.metadata.resource_version {
                Some(_) => bounded(self.api.replace(&name, &PostParams::default(), &cm)).await,
                None => bounded(self.api.create(&PostParams::default(), &cm)).await,
            };
            result.map_err(|e| anyhow::anyhow!("{}", api_error(&e, &format!("writing ConfigMap {name}"))))?;
            written.push(name);
        }
        Ok(written)
    }

    fn new_data(&self, write: &Write<'_>) -> BTreeMap<String, String> {
        let mut data = write.base.catalogs.clone().unwrap_or_default();
        data.insert(
            SOURCES_KEY.to_string(),
            write.sources_text.clone().unwrap_or_else(|| write.base.file.text.clone()),
        );
        if let Some((key, text)) = &write.catalog {
            data.insert(key.clone(), text.clone());
        }
        data
    }
}

impl ConfigStore for KubeStore {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn describe(&self) -> String {
        format!(
            "ConfigMaps {}-{{{}}} in namespace {}",
            self.prefix,
            PluginKind::ALL.map(|p| p.name()).join(","),
            self.namespace
        )
    }

    fn load(&self) -> BoxFuture<'_, Result<Config, LoadError>> {
        Box::pin(async move {
            // Each plugin's ConfigMap on its own: one that is invalid or gone leaves the other
            // plugin's read and used (`Config::broken`); an API server that cannot be asked is
            // the whole read's failure.
            let mut docs = BTreeMap::new();
            let mut broken = BTreeMap::new();
            for plugin in PluginKind::ALL {
                match self.load_doc(plugin).await? {
                    Ok(doc) => {
                        docs.insert(plugin, Arc::new(doc));
                    }
                    Err(diags) => {
                        broken.insert(plugin, diags);
                    }
                }
            }
            Ok(Config::partial(docs, broken))
        })
    }

    fn read_catalog(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Option<String> {
        if doc.file.path_conflict(plugin, id).is_some() || !valid_key(rel) {
            return None;
        }
        doc.catalogs.as_ref()?.get(rel).cloned()
    }

    fn load_catalog<'a>(&'a self, doc: &'a Doc, rel: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let name = doc.file.path.parent().map(|p| p.display().to_string()).unwrap_or_default();
            if !valid_key(rel) {
                return Err(format!("yamlCatalogPath `{rel}` is not a key of ConfigMap {name}"));
            }
            doc.catalogs
                .as_ref()
                .and_then(|c| c.get(rel).cloned())
                .ok_or_else(|| format!("ConfigMap {name} has no key `{rel}`"))
        })
    }

    fn check_writable(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Result<(), Diagnostic> {
        if let Some(d) = doc.file.path_conflict(plugin, id) {
            return Err(d.clone().field(paths::FIELD));
        }
        if !valid_key(rel) {
            return Err(Diagnostic::error(
                Layer::Semantics,
                format!("yamlCatalogPath `{rel}` cannot be a key of ConfigMap {}", self.name(plugin)),
            )
            .field(paths::FIELD)
            .hint("keys are letters, digits, `-`, `_` and `.` (not `sources.yaml`); leave yamlCatalogPath out and the server picks one"));
        }
        Ok(())
    }

    fn check_write(&self, write: &Write<'_>) -> Result<(), Diagnostic> {
        let size = data_size(&self.new_data(write)) + write.base.overhead;
        if size > MAX_CONFIGMAP_BYTES {
            return Err(too_large(&self.name(write.plugin), size, write.base.overhead));
        }
        Ok(())
    }

    fn commit<'a>(&'a self, write: Write<'a>) -> BoxFuture<'a, Result<Committed, StoreError>> {
        Box::pin(async move {
            self.check_write(&write).map_err(|d| StoreError::Invalid(Box::new(d)))?;
            if let Some((rel, _)) = &write.catalog {
                self.check_writable(write.base, write.plugin, write.source_id, rel)
                    .map_err(|d| StoreError::Invalid(Box::new(d)))?;
            }
            let name = self.name(write.plugin);
            let data = self.new_data(&write);
            let previous = write.base.version.as_ref().map(|_| {
                let mut d = write.base.catalogs.clone().unwrap_or_default();
                d.insert(SOURCES_KEY.to_string(), write.base.file.text.clone());
                d
            });
            let what = format!("writing ConfigMap {name}");
            let stored = match &write.base.version {
                // A merge patch of the keys this write changes, conditional on the
                // resourceVersion it was computed against (a mismatch is a 409): labels,
                // annotations (a GitOps tool's), binaryData and other keys stay as they are.
                Some(version) => {
                    let mut changed = serde_json::Map::new();
                    if let Some(text) = &write.sources_text {
                        changed.insert(SOURCES_KEY.into(), text.clone().into());
                    }
                    if let Some((key, text)) = &write.catalog {
                        changed.insert(key.clone(), text.clone().into());
                    }
                    let patch = serde_json::json!({"metadata": {"resourceVersion": version}, "data": changed});
                    bounded(self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await
                }
                None => {
                    bounded(self.api.create(&PostParams::default(), &configmap(&name, &self.namespace, None, data)))
                        .await
                }
            }
            .map_err(|e| api_error(&e, &what))?;
            self.changes.notify_one();
            let written = [
                Some(SOURCES_KEY.to_string()).filter(|_| write.sources_text.is_some()),
                write.catalog.as_ref().map(|(k, _)| k.clone()),
            ]
            .into_iter()
            .flatten()
            .collect();
            Ok(Committed::ConfigMap {
                name,
                previous,
                version: stored.metadata.resource_version.unwrap_or_default(),
                written,
            })
        })
    }

    fn revert(&self, committed: Committed) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Committed::ConfigMap { name, previous, version, written } = committed else { return };
            let result = match previous {
                Some(data) => {
                    // Put back the keys the commit wrote (removing those it added), if nobody
                    // wrote since.
                    let keys: serde_json::Map<String, serde_json::Value> = written
                        .iter()
                        .map(|k| (k.clone(), data.get(k).map_or(serde_json::Value::Null, |v| v.clone().into())))
                        .collect();
                    let patch = serde_json::json!({"metadata": {"resourceVersion": version}, "data": keys});
                    bounded(self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await.map(|_| ())
                }
                None => bounded(self.api.delete(&name, &Default::default())).await.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::error!(configmap = %name, error = %e, "could not restore a ConfigMap after a failed apply");
            }
        })
    }

    fn reachable(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let name = self.name(PluginKind::Models);
            match tokio::time::timeout(std::time::Duration::from_millis(800), self.api.get_opt(&name)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(api_error(&e, &format!("reading ConfigMap {name}")).to_string()),
                Err(_) => Err(format!("reading ConfigMap {name}: no answer from the Kubernetes API within 800 ms")),
            }
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.changes.notified())
    }
}
