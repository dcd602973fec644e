//! Where catalog bytes may go: the server owns every catalog location.
//!
//! Why: a `yamlCatalogPath` chosen by an API caller used to reach the filesystem as is, so one
//! apply could write catalog YAML over the sources file (wiping every source), over another
//! source's catalog, or over the database, and `content` could read any file back. Now:
//! - a source created through the API gets `{id}-{plugin}.yaml` beside the sources file;
//! - a location already in the sources file is kept, and an input may only repeat it;
//! - right before any write (and any API read-back) the path is checked again on the real
//!   filesystem: symlinks resolved, the parent canonicalised, the result inside the sources
//!   file's directory and not the sources file, a reserved file (the SQLite database and its
//!   `-wal`/`-shm`/`-journal`), another source's catalog, or a directory.
//!
//! A key belongs to exactly one source: when two sources of a deployer's file name the same
//! location, the first one owns it and the later one is reported (see
//! `SourcesFile::path_conflict`). Messages name paths as the user wrote them, never the
//! server's absolute directories.

use std::path::{Component, Path, PathBuf};

use super::diagnostics::{Diagnostic, Layer};
use super::plugins::PluginKind;
use super::sources::{SourceEntry, SourcesFile, normalized};

pub const FIELD: &str = "input.properties.yamlCatalogPath";

/// What no source's catalog may be: the server's own files.
#[derive(Clone, Debug, Default)]
pub struct Reserved {
    /// Files (the SQLite database; its `-wal`, `-shm` and `-journal` files are implied).
    pub files: Vec<PathBuf>,
}

/// The location the server gives a source created through the API (today's naming, kept so
/// existing files keep their names).
pub fn assigned_name(plugin: PluginKind, id: &str) -> String {
    format!("{id}-{}.yaml", plugin.name())
}

/// Decides the catalog location of a yaml source from what the input asked for.
/// `existing` is the source as it is in the sources file now.
pub fn assign(
    plugin: PluginKind,
    id: &str,
    requested: Option<&str>,
    existing: Option<&SourceEntry>,
) -> Result<String, Diagnostic> {
    let owned = existing.and_then(SourceEntry::yaml_catalog_path).map(str::to_string);
    let assigned = owned.clone().unwrap_or_else(|| assigned_name(plugin, id));
    match requested {
        None => Ok(assigned),
        Some(r) if r == assigned => Ok(assigned),
        Some(r) => Err(Diagnostic::error(
            Layer::Semantics,
            format!("yamlCatalogPath `{}` is not this source's catalog location", printable(r)),
        )
        .field(FIELD)
        .hint(format!("leave yamlCatalogPath out; the server stores this source's catalog at {assigned}"))),
    }
}

/// Checks `rel` (a source's `yamlCatalogPath`) on the real filesystem right before a write and
/// returns the path to write to: the canonical parent directory joined with the file name.
/// `plugin`/`id` name the source that wants to write; `reserved` are what no source may touch.
pub fn writable_catalog_path(
    file: &SourcesFile,
    plugin: PluginKind,
    id: &str,
    rel: &str,
    reserved: &Reserved,
) -> Result<PathBuf, Diagnostic> {
    checked(file, plugin, id, rel, reserved, "write")
}

/// The same checks for reading a catalog back through the API (`content`, revisions).
pub fn readable_catalog_path(
    file: &SourcesFile,
    plugin: PluginKind,
    id: &str,
    rel: &str,
    reserved: &Reserved,
) -> Result<PathBuf, Diagnostic> {
    checked(file, plugin, id, rel, reserved, "read")
}

/// Why `rel` is not a plain relative file path inside the base directory, if it is not.
/// Purely lexical; used by the sources-file reader and before touching the filesystem.
pub fn lexical_problem(rel: &str) -> Option<&'static str> {
    if rel.trim().is_empty() {
        return Some("is empty");
    }
    if rel.contains('\0') {
        return Some("contains a NUL byte");
    }
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_)))
    {
        return Some("points outside the sources file's directory");
    }
    if !p.components().any(|c| matches!(c, Component::Normal(_))) {
        return Some("does not name a file");
    }
    if rel.ends_with('/') || rel.ends_with("/.") {
        return Some("names a directory");
    }
    None
}

fn printable(rel: &str) -> String {
    rel.replace('\0', "\\0")
}

fn refuse(rel: &str, why: &str, verb: &str) -> Diagnostic {
    let hint = if why.contains("outside") {
        format!(
            "the server only {verb}s catalog files inside the sources file's directory; a deployer's location \
             outside it still loads on refresh: edit that file where it lives, or leave yamlCatalogPath out on a new source"
        )
    } else {
        "leave yamlCatalogPath out: the server assigns each new source its own file beside the sources file".to_string()
    };
    Diagnostic::error(Layer::Semantics, format!("yamlCatalogPath `{}` {why}; refusing to {verb} it", printable(rel)))
        .field(FIELD)
        .hint(hint)
}

fn checked(
    file: &SourcesFile,
    plugin: PluginKind,
    id: &str,
    rel: &str,
    reserved: &Reserved,
    verb: &str,
) -> Result<PathBuf, Diagnostic> {
    match lexical_problem(rel) {
        // Only a deployer can have put an outside location in the sources file (the API only
        // ever stores assigned names): it may be read back, like refresh reads it, but never
        // written through the API.
        Some(why) if why.contains("outside") && verb == "read" => {
            return deployer_outside(file, plugin, id, rel, reserved);
        }
        Some(why) => return Err(refuse(rel, why, verb)),
        None => {}
    }
    let base_dir = match file.base_dir() {
        d if d.as_os_str().is_empty() => PathBuf::from("."),
        d => d,
    };
    let base = base_dir
        .canonicalize()
        .map_err(|_| refuse(rel, "cannot be resolved (the sources file's directory is not readable)", verb))?;
    let rel_path = normalized(rel);
    let Some(name) = rel_path.file_name().map(|n| n.to_os_string()) else {
        return Err(refuse(rel, "does not name a file", verb));
    };
    let parent_rel = rel_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent = resolve_dir(&base, &parent_rel).ok_or_else(|| refuse(rel, "cannot be resolved", verb))?;
    if !parent.starts_with(&base) {
        return Err(refuse(rel, "points outside the sources file's directory (through a symlink)", verb));
    }
    let target = parent.join(&name);
    let real = match std::fs::symlink_metadata(&target) {
        Err(_) => target.clone(),
        Ok(meta) => {
            let real = if meta.file_type().is_symlink() {
                match target.canonicalize() {
                    Ok(r) => r,
                    Err(_) => return Err(refuse(rel, "is a symlink that points nowhere", verb)),
                }
            } else {
                target.clone()
            };
            if !real.starts_with(&base) {
                return Err(refuse(rel, "is a symlink that points outside the sources file's directory", verb));
            }
            match std::fs::metadata(&real) {
                Ok(m) if m.is_dir() => return Err(refuse(rel, "names a directory", verb)),
                Ok(m) if !m.is_file() => return Err(refuse(rel, "is not a regular file", verb)),
                _ => {}
            }
            real
        }
    };
    not_taken(file, plugin, id, rel, reserved, &target, &real, verb)?;
    Ok(target)
}

fn deployer_outside(
    file: &SourcesFile,
    plugin: PluginKind,
    id: &str,
    rel: &str,
    reserved: &Reserved,
) -> Result<PathBuf, Diagnostic> {
    let target = file.resolve(rel);
    let real = lenient(&target);
    if real.is_dir() {
        return Err(refuse(rel, "names a directory", "read"));
    }
    not_taken(file, plugin, id, rel, reserved, &target, &real, "read")?;
    Ok(target)
}

/// The location is not the sources file, a reserved file, or an earlier source's catalog.
#[expect(
    clippy::too_many_arguments,
    reason = "the checks' inputs, each used once; a struct would only name them twice"
)]
fn not_taken(
    file: &SourcesFile,
    plugin: PluginKind,
    id: &str,
    rel: &str,
    reserved: &Reserved,
    target: &Path,
    real: &Path,
    verb: &str,
) -> Result<(), Diagnostic> {
    let is = |p: &Path| p == target || p == real;
    if is(&lenient(&file.path)) {
        return Err(refuse(rel, "is the sources file", verb));
    }
    for r in &reserved.files {
        let r = lenient(r);
        let mut forbidden = vec![r.clone()];
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut s = r.clone().into_os_string();
            s.push(suffix);
            forbidden.push(PathBuf::from(s));
        }
        if forbidden.iter().any(|f| is(f)) {
            return Err(refuse(rel, "is a file the server keeps for itself (its database)", verb));
        }
    }
    // The owner of a location is the first source naming it; a new source owns nothing yet.
    for (p, e) in &file.sources {
        if *p == plugin && e.id == id {
            break;
        }
        let Some(other) = e.yaml_catalog_path() else { continue };
        if lexical_problem(other).is_some_and(|w| !w.contains("outside")) {
            continue;
        }
        let other_path = lenient(&file.resolve(other));
        if is(&other_path) {
            return Err(refuse(rel, &format!("is the catalog file of source {p}/{}", e.id), verb));
        }
    }
    Ok(())
}

/// Canonicalises `base/rel` for a directory that may not exist yet: the deepest existing
/// ancestor is canonicalised (resolving symlinks) and the missing rest appended (it cannot hold
/// symlinks, since it does not exist).
fn resolve_dir(base: &Path, rel: &Path) -> Option<PathBuf> {
    let full = base.join(rel);
    let mut existing = full.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if std::fs::symlink_metadata(existing).is_ok() {
            break;
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
    let mut out = existing.canonicalize().ok()?;
    if !out.is_dir() {
        return None;
    }
    for part in rest.iter().rev() {
        out.push(part);
    }
    Some(out)
}

/// A comparable form of a path that may not exist: the file itself canonicalised when it
/// exists, else its canonical parent joined with the name.
fn lenient(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            dir.canonicalize().map(|d| d.join(name)).unwrap_or_else(|_| p.to_path_buf())
        }
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, text: &str) -> SourcesFile {
        let path = dir.join("sources.yaml");
        std::fs::write(&path, text).unwrap();
        SourcesFile::read(&path).unwrap()
    }

    const TWO: &str = "model_catalogs:\n  - name: A\n    id: a\n    type: yaml\n    properties:\n      yamlCatalogPath: a.yaml\nmcp_catalogs:\n  - name: M\n    id: m\n    type: yaml\n    properties:\n      yamlCatalogPath: m.yaml\n";

    #[test]
    fn refuses_what_is_not_the_sources_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), TWO);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let db = dir.path().join("catalog-bff.db");
        let reserved = Reserved { files: vec![db] };
        let cases: &[(&str, Option<&str>)] = &[
            ("b-models.yaml", None),
            ("a.yaml", Some("catalog file of source models/a")),
            ("m.yaml", Some("catalog file of source mcp/m")),
            ("./m.yaml", Some("catalog file of source mcp/m")),
            ("sources.yaml", Some("is the sources file")),
            ("catalog-bff.db", Some("database")),
            ("catalog-bff.db-wal", Some("database")),
            ("catalog-bff.db-shm", Some("database")),
            ("sub", Some("directory")),
            (".", Some("does not name a file")),
            ("", Some("is empty")),
            ("a\0b", Some("NUL")),
            ("../x.yaml", Some("outside")),
            ("/etc/passwd", Some("outside")),
            ("sub/new.yaml", None),
            ("new/deeper/x.yaml", None),
        ];
        for (rel, want) in cases {
            let got = writable_catalog_path(&f, PluginKind::Models, "b", rel, &reserved);
            match want {
                None => assert!(got.is_ok(), "{rel}: {got:?}"),
                Some(w) => {
                    let d = got.unwrap_err();
                    assert!(d.message.contains(w), "{rel}: {}", d.message);
                    assert!(!d.message.contains(dir.path().to_str().unwrap()), "absolute path leaked: {}", d.message);
                    assert_eq!(d.field.as_deref(), Some(FIELD));
                }
            }
        }
        // Reading back a reserved file is refused too.
        let d = readable_catalog_path(&f, PluginKind::Models, "b", "catalog-bff.db", &reserved).unwrap_err();
        assert!(d.message.contains("database") && d.message.contains("refusing to read"), "{}", d.message);
        // A source's own file is writable by it.
        assert!(writable_catalog_path(&f, PluginKind::Models, "a", "a.yaml", &reserved).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let f = file(dir.path(), TWO);
        std::os::unix::fs::symlink(outside.path().join("x.yaml"), dir.path().join("dangling.yaml")).unwrap();
        std::fs::write(outside.path().join("y.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("y.yaml"), dir.path().join("out.yaml")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("outdir")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("sources.yaml"), dir.path().join("alias.yaml")).unwrap();
        std::fs::write(dir.path().join("m.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("m.yaml"), dir.path().join("m-alias.yaml")).unwrap();
        for (rel, want) in [
            ("dangling.yaml", "points nowhere"),
            ("out.yaml", "outside"),
            ("outdir/z.yaml", "outside"),
            ("alias.yaml", "sources file"),
            ("m-alias.yaml", "mcp/m"),
        ] {
            let d = writable_catalog_path(&f, PluginKind::Models, "b", rel, &Reserved::default()).unwrap_err();
            assert!(d.message.contains(want), "{rel}: {}", d.message);
        }
    }

    #[test]
    fn assignment_keeps_existing_and_names_new_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(dir.path(), TWO);
        let a = f.find(PluginKind::Models, "a");
        assert_eq!(assign(PluginKind::Models, "a", None, a).unwrap(), "a.yaml");
        assert_eq!(assign(PluginKind::Models, "a", Some("a.yaml"), a).unwrap(), "a.yaml");
        let d = assign(PluginKind::Models, "a", Some("m.yaml"), a).unwrap_err();
        assert!(d.hint.unwrap().contains("the server stores this source's catalog at a.yaml"));
        assert_eq!(assign(PluginKind::Mcp, "new", None, None).unwrap(), "new-mcp.yaml");
        assert_eq!(assign(PluginKind::Mcp, "new", Some("new-mcp.yaml"), None).unwrap(), "new-mcp.yaml");
        assert!(assign(PluginKind::Mcp, "new", Some("sources.yaml"), None).is_err());
    }
}
