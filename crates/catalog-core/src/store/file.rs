//! The file config store: one sources file and catalog files beside it (`--store file`).
//!
//! Writes are atomic per file (see [`super::atomic`]); a commit writes the catalog first, then
//! the sources file, and restores what it wrote if a later step fails. Where bytes may go is
//! decided by [`crate::paths`] on the real filesystem, right before each write.

use futures_util::future::BoxFuture;
use std::path::{Path, PathBuf};

use super::atomic::write_atomic;
use super::{Committed, Config, ConfigStore, Doc, LoadError, StoreError, Write};
use crate::diagnostics::Diagnostic;
use crate::paths;
use crate::plugins::PluginKind;
use crate::sources::SourcesFile;

pub struct FileStore {
    sources_path: PathBuf,
    /// What no source may write or read back (the SQLite database).
    reserved: paths::Reserved,
}

impl FileStore {
    pub fn new(sources_path: PathBuf, reserved: paths::Reserved) -> FileStore {
        FileStore { sources_path, reserved }
    }

    fn catalog_path(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Result<PathBuf, Diagnostic> {
        if let Some(d) = doc.file.path_conflict(plugin, id) {
            return Err(d.clone().field(paths::FIELD));
        }
        paths::writable_catalog_path(&doc.file, plugin, id, rel, &self.reserved)
    }
}

/// Reads a file that may legitimately be missing.
fn read_optional(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn restore(undo: &[(PathBuf, Option<String>)]) {
    for (path, old) in undo.iter().rev() {
        let restored = match old {
            Some(bytes) => write_atomic(path, bytes.as_bytes()),
            None => std::fs::remove_file(path),
        };
        if let Err(e) = restored {
            tracing::error!(path = %path.display(), error = %e, "could not restore a file after a failed apply");
        }
    }
}

impl ConfigStore for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn describe(&self) -> String {
        self.sources_path.display().to_string()
    }

    fn load(&self) -> BoxFuture<'_, Result<Config, LoadError>> {
        Box::pin(async move {
            let file = SourcesFile::read(&self.sources_path).map_err(LoadError::Invalid)?;
            Ok(Config::shared(Doc { file, version: None, catalogs: None, overhead: 0 }))
        })
    }

    fn read_catalog(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Option<String> {
        if doc.file.path_conflict(plugin, id).is_some() {
            return None;
        }
        let path = paths::readable_catalog_path(&doc.file, plugin, id, rel, &self.reserved).ok()?;
        read_optional(&path).ok().flatten()
    }

    fn load_catalog<'a>(&'a self, doc: &'a Doc, rel: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let path = doc.file.resolve(rel);
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| format!("cannot read catalog file {}: {e}", path.display()))
        })
    }

    fn check_writable(&self, doc: &Doc, plugin: PluginKind, id: &str, rel: &str) -> Result<(), Diagnostic> {
        self.catalog_path(doc, plugin, id, rel).map(|_| ())
    }

    fn check_write(&self, _write: &Write<'_>) -> Result<(), Diagnostic> {
        Ok(())
    }

    fn commit<'a>(&'a self, write: Write<'a>) -> BoxFuture<'a, Result<Committed, StoreError>> {
        Box::pin(async move {
            let mut undo: Vec<(PathBuf, Option<String>)> = Vec::new();
            let fail = |undo: &[(PathBuf, Option<String>)], path: &Path, e: std::io::Error| {
                restore(undo);
                StoreError::Failed(format!("writing {} failed: {e}; nothing was changed", path.display()))
            };
            if let Some((rel, content)) = &write.catalog {
                // Re-checked here, right before the write (symlinks resolved, ownership,
                // reserved files), not only when the input was checked.
                let path = self
                    .catalog_path(write.base, write.plugin, write.source_id, rel)
                    .map_err(|d| StoreError::Invalid(Box::new(d)))?;
                let old = read_optional(&path).map_err(|e| {
                    StoreError::Failed(format!("cannot read the current catalog ({rel}): {e}; nothing was changed"))
                })?;
                write_atomic(&path, content.as_bytes()).map_err(|e| fail(&undo, &path, e))?;
                undo.push((path, old));
            }
            if let Some(text) = &write.sources_text {
                write_atomic(&self.sources_path, text.as_bytes()).map_err(|e| fail(&undo, &self.sources_path, e))?;
                undo.push((self.sources_path.clone(), Some(write.base.file.text.clone())));
            }
            Ok(Committed::Files(undo))
        })
    }

    fn revert(&self, committed: Committed) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Committed::Files(undo) = committed {
                restore(&undo);
            }
        })
    }

    fn reachable(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match std::fs::File::open(&self.sources_path) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{} is not readable: {e}", self.sources_path.display())),
            }
        })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}
