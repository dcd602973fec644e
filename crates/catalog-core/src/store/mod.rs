//! The config store boundary: where source configuration lives and how it is written.
//!
//! Two implementations, chosen by `--store`:
//! - [`file::FileStore`]: one sources file (both dialects, every plugin) and catalog files beside
//!   it; atomic writes, byte-preserving splice (the single-node default).
//! - [`kubernetes::KubeStore`]: one ConfigMap per plugin, `<prefix>-<plugin>`, key `sources.yaml`
//!   (that plugin's sources, Kubeflow dialect) plus one key per yaml catalog; written through the
//!   Kubernetes API with `resourceVersion` (never a volume mount).
//!
//! The catalog service sees only [`Config`] (what was read, per plugin a [`Doc`]) and
//! [`ConfigStore`]: it merges and splices against a `Doc`, then commits the new sources text
//! and/or catalog text of one plugin with [`ConfigStore::commit`]. A store refuses a commit whose
//! base is no longer current ([`StoreError::Conflict`]); the service re-reads and decides.
//!
//! Invariant 6 holds in both: a catalog location (file or key) belongs to exactly one source;
//! the sources document itself belongs to none.

pub mod atomic;
pub mod file;
pub mod kubernetes;

use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::diagnostics::Diagnostic;
use super::plugins::PluginKind;
use super::sources::{SourceEntry, SourcesFile};

/// One sources document and what belongs to it.
#[derive(Debug)]
pub struct Doc {
    pub file: SourcesFile,
    /// The store's version of the document (a ConfigMap's resourceVersion); `None` for files,
    /// or for a ConfigMap that does not exist yet.
    pub version: Option<String>,
    /// Catalog texts kept with the document (a ConfigMap's other keys); `None` for files,
    /// whose catalogs are read from disk.
    pub catalogs: Option<BTreeMap<String, String>>,
    /// Bytes the store counts against its size limit besides the sources list and catalogs (a
    /// ConfigMap's binaryData, labels and annotations, which a write keeps); 0 for files.
    pub overhead: usize,
}

/// The whole configuration as read from the store: a document per plugin (the file store
/// shares one document between all plugins).
#[derive(Clone, Debug)]
pub struct Config {
    docs: BTreeMap<PluginKind, Arc<Doc>>,
    /// Plugins whose document could not be used in this read (the kubernetes store: that
    /// plugin's ConfigMap is invalid or gone), with why. Faults stay per plugin: the others'
    /// documents are read and used; [`Config::over`] keeps the last good one for these.
    broken: BTreeMap<PluginKind, Vec<Diagnostic>>,
}

impl Config {
    pub fn new(docs: BTreeMap<PluginKind, Arc<Doc>>) -> Config {
        Config { docs, broken: BTreeMap::new() }
    }

    /// The plugins' documents that were read, and why the others could not be used.
    pub fn partial(docs: BTreeMap<PluginKind, Arc<Doc>>, broken: BTreeMap<PluginKind, Vec<Diagnostic>>) -> Config {
        Config { docs, broken }
    }

    /// One document for every plugin (the file store).
    pub fn shared(doc: Doc) -> Config {
        let doc = Arc::new(doc);
        Config::new(PluginKind::ALL.into_iter().map(|p| (p, doc.clone())).collect())
    }

    /// Why `plugin`'s document could not be used in this read, if it could not.
    pub fn broken(&self, plugin: PluginKind) -> Option<&[Diagnostic]> {
        self.broken.get(&plugin).map(Vec::as_slice)
    }

    /// Every broken plugin's diagnostics, in plugin order.
    pub fn errors(&self) -> Vec<Diagnostic> {
        self.broken.values().flatten().cloned().collect()
    }

    /// This read, with `last`'s document kept for every plugin whose document is broken now
    /// (the last good configuration stays in use for that plugin only).
    pub fn over(mut self, last: &Config) -> Config {
        for plugin in self.broken.keys() {
            match last.docs.get(plugin) {
                Some(doc) => self.docs.insert(*plugin, doc.clone()),
                None => self.docs.remove(plugin),
            };
        }
        self
    }

    pub fn doc(&self, plugin: PluginKind) -> Option<&Arc<Doc>> {
        self.docs.get(&plugin)
    }

    /// The documents, each once.
    pub fn docs(&self) -> Vec<&Arc<Doc>> {
        let mut out: Vec<&Arc<Doc>> = Vec::new();
        for d in self.docs.values() {
            if !out.iter().any(|o| Arc::ptr_eq(o, d)) {
                out.push(d);
            }
        }
        out
    }

    pub fn find(&self, plugin: PluginKind, id: &str) -> Option<&SourceEntry> {
        self.docs.get(&plugin)?.file.find(plugin, id)
    }

    /// Every source, grouped by plugin, in document order.
    pub fn sources(&self) -> impl Iterator<Item = (PluginKind, &SourceEntry)> {
        self.docs
            .iter()
            .flat_map(|(plugin, doc)| doc.file.sources.iter().filter(move |(p, _)| p == plugin).map(|(p, e)| (*p, e)))
    }

    pub fn path_conflict(&self, plugin: PluginKind, id: &str) -> Option<&Diagnostic> {
        self.docs.get(&plugin)?.file.path_conflict(plugin, id)
    }

    /// Whether a document's text differs from `other`'s (what the watcher compares).
    /// The plugins whose document differs between the two (or is in one only).
    pub fn changed_plugins(&self, other: &Config) -> Vec<PluginKind> {
        PluginKind::ALL
            .into_iter()
            .filter(|p| match (self.docs.get(p), other.docs.get(p)) {
                (Some(a), Some(b)) => a.file.text != b.file.text || a.catalogs != b.catalogs,
                (a, b) => a.is_some() != b.is_some(),
            })
            .collect()
    }

    pub fn same_text(&self, other: &Config) -> bool {
        self.docs.len() == other.docs.len()
            && self
                .docs
                .iter()
                .all(|(p, d)| other.docs.get(p).is_some_and(|o| o.file.text == d.file.text && o.catalogs == d.catalogs))
    }
}

/// A change to one plugin's document, computed against `base`.
pub struct Write<'a> {
    pub plugin: PluginKind,
    pub source_id: &'a str,
    pub base: &'a Doc,
    /// The new text of the sources document, if the entry changed.
    pub sources_text: Option<String>,
    /// A catalog location and its new text, if the content changed.
    pub catalog: Option<(String, String)>,
}

/// What a commit did, so that it can be reverted when a later step (recording the revision)
/// fails.
pub enum Committed {
    /// Files written, each with its previous bytes (`None`: it did not exist).
    Files(Vec<(std::path::PathBuf, Option<String>)>),
    /// A ConfigMap written: its previous data (`None`: created), the resourceVersion the write
    /// produced and the keys it wrote.
    ConfigMap { name: String, previous: Option<BTreeMap<String, String>>, version: String, written: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the document since it was read; re-read and decide.
    #[error("{0}")]
    Conflict(String),
    /// The change cannot be stored as it is (too large for a ConfigMap, an unusable location).
    #[error("{}", .0.message)]
    Invalid(Box<Diagnostic>),
    /// The store cannot be reached (the Kubernetes API server).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; nothing was changed.
    #[error("{0}")]
    Failed(String),
}

/// Why a configuration could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The store answered, but a document is invalid.
    Invalid(Vec<Diagnostic>),
    /// The store could not be read.
    Unavailable(String),
}

impl LoadError {
    pub fn render(&self) -> String {
        match self {
            LoadError::Invalid(diags) => diags.iter().map(Diagnostic::render).collect::<Vec<_>>().join("\n"),
            LoadError::Unavailable(msg) => msg.clone(),
        }
    }
}

pub trait ConfigStore: Send + Sync {
    /// `file` or `kubernetes`.
    fn kind(&self) -> &'static str;
    /// Where the configuration lives, for logs and `/readyz`.
    fn describe(&self) -> String;
    /// Reads the whole configuration.
    fn load(&self) -> BoxFuture<'_, Result<Config, LoadError>>;
    /// The catalog text of a yaml source for the API (`content`, revisions), only from a
    /// location the source owns. `None`: no such catalog (or not shown).
    fn read_catalog(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Option<String>;
    /// The catalog text a refresh loads (a deployer's file may live outside the directory).
    fn load_catalog<'a>(&'a self, doc: &'a Doc, rel: &'a str) -> BoxFuture<'a, Result<String, String>>;
    /// Checks that new catalog text may be written at `rel` for this source, right now.
    fn check_writable(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Result<(), Diagnostic>;
    /// Checks a whole write before anything is written (e.g. the ConfigMap size limit).
    fn check_write(&self, write: &Write<'_>) -> Result<(), Diagnostic>;
    /// Writes one plugin's change; all or nothing.
    fn commit<'a>(&'a self, write: Write<'a>) -> BoxFuture<'a, Result<Committed, StoreError>>;
    /// Undoes a commit (best effort; logs what it could not restore).
    fn revert(&self, committed: Committed) -> BoxFuture<'_, ()>;
    /// Whether the store can be read right now (for `/readyz`; answers quickly).
    fn reachable(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Resolves when the configuration may have changed outside the API (a watch event); the
    /// watcher also polls, so a store without notifications never resolves.
    fn changed(&self) -> BoxFuture<'_, ()>;
}
