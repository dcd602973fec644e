//! The sources file: which catalog sources exist, in either real dialect, and how to write an
//! entry back without disturbing anything else in the file.
//!
//! Dialects:
//! - **Kubeflow**: top-level `model_catalogs:` (or the deprecated `catalogs:` list),
//!   `mcp_catalogs:`, `labels`, `namedQueries`.
//! - **Plugin-sectioned**: `apiVersion: catalog/v1alpha1`, `kind: CatalogSources`,
//!   `catalogs: {models: {sources: [...]}, mcp: {sources: [...]}}`.
//!
//! Writing is a text splice: only the lines of the one entry that changed are replaced (or a new
//! entry appended to its section). Sections for plugins we don't have, comments and every other
//! byte stay as they were. That is how "unknown sections are preserved byte-for-byte" holds.

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use super::diagnostics::{Diagnostic, Layer};
use super::plugins::PluginKind;
use super::yaml::{find_key_value, strict_parse, syntax_check};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Dialect {
    Kubeflow,
    PluginSectioned,
}

/// One source entry, as written in the sources file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceEntry {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub properties: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_type: Option<String>,
    /// How often the source refreshes on its own (a Go-style duration, at least `10s`); a url
    /// source without one uses `--default-refresh-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// Suspended (Flux's `suspend`): keeps serving its last entities; the scheduler, the
    /// watcher and plugin-wide refreshes skip it; an explicit refresh of it still runs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspended: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// What a source's `type` says about where its catalog comes from. The entry keeps the text
/// as written (a deployer's `hf` or `git` source round-trips unchanged); code decides on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A catalog stored with the configuration (a file, or a ConfigMap key).
    Yaml,
    /// A catalog fetched over HTTP.
    Url,
    /// A type this server does not load (kept as it is, state ERROR on refresh).
    Unsupported,
}

impl SourceEntry {
    pub fn kind(&self) -> SourceKind {
        match self.type_.as_str() {
            "yaml" => SourceKind::Yaml,
            "url" => SourceKind::Url,
            _ => SourceKind::Unsupported,
        }
    }

    /// The catalog location of a yaml source (`None` for other kinds).
    pub fn yaml_catalog(&self) -> Option<&str> {
        self.yaml_catalog_path().filter(|_| self.kind() == SourceKind::Yaml)
    }

    pub fn yaml_catalog_path(&self) -> Option<&str> {
        self.properties.get("yamlCatalogPath").and_then(Value::as_str)
    }

    pub fn url(&self) -> Option<&str> {
        self.properties.get("url").and_then(Value::as_str)
    }

    /// The entry as an ordered YAML mapping, in the field order of the file's dialect.
    fn to_mapping(&self, dialect: Dialect) -> Mapping {
        let mut m = Mapping::new();
        let s = |v: &str| Value::String(v.to_string());
        let labels = || Value::Sequence(self.labels.iter().map(|l| s(l)).collect());
        match dialect {
            Dialect::Kubeflow => {
                m.insert(s("name"), s(&self.name));
                m.insert(s("id"), s(&self.id));
            }
            Dialect::PluginSectioned => {
                m.insert(s("id"), s(&self.id));
                m.insert(s("name"), s(&self.name));
            }
        }
        m.insert(s("type"), s(&self.type_));
        m.insert(s("enabled"), Value::Bool(self.enabled));
        if self.suspended {
            m.insert(s("suspended"), Value::Bool(true));
        }
        if let Some(interval) = &self.refresh_interval {
            m.insert(s("refreshInterval"), s(interval));
        }
        if dialect == Dialect::PluginSectioned && !self.labels.is_empty() {
            m.insert(s("labels"), labels());
        }
        if !self.properties.is_empty() {
            m.insert(s("properties"), Value::Mapping(self.properties.clone()));
        }
        if dialect == Dialect::Kubeflow && !self.labels.is_empty() {
            m.insert(s("labels"), labels());
        }
        for (key, list) in [("includedModels", &self.included_models), ("excludedModels", &self.excluded_models)] {
            if let Some(list) = list {
                m.insert(s(key), Value::Sequence(list.iter().map(|p| s(p)).collect()));
            }
        }
        if let Some(a) = &self.asset_type {
            m.insert(s("assetType"), s(a));
        }
        m
    }
}

/// A parsed sources file.
#[derive(Clone, Debug)]
pub struct SourcesFile {
    pub path: PathBuf,
    pub text: String,
    pub dialect: Dialect,
    /// Sources of the plugins we have, in file order.
    pub sources: Vec<(PluginKind, SourceEntry)>,
    /// Sections we don't have a plugin for: kept as they are, reported as warnings.
    pub unknown_sections: Vec<String>,
    /// Warnings found while reading (unknown sections, deprecated keys).
    pub warnings: Vec<Diagnostic>,
    /// Kubeflow only: the key holding model sources (`model_catalogs` or deprecated `catalogs`).
    model_key: &'static str,
    /// Sources whose catalog location is the sources file or already belongs to an earlier
    /// source: they are not loaded (state ERROR) and never written, so no write through one
    /// source can clobber another's file (a location belongs to exactly one source).
    path_conflicts: Vec<(PluginKind, String, Diagnostic)>,
}

#[derive(Deserialize)]
struct KubeflowDoc {
    model_catalogs: Option<Vec<SourceEntry>>,
    catalogs: Option<Vec<SourceEntry>>,
    mcp_catalogs: Option<Vec<SourceEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SectionedDoc {
    #[expect(dead_code, reason = "accepted so a Kubernetes-style header parses; not used")]
    api_version: Option<String>,
    #[expect(dead_code, reason = "accepted so a Kubernetes-style header parses; not used")]
    kind: Option<String>,
    catalogs: SectionedCatalogs,
}

#[derive(Deserialize)]
struct SectionedCatalogs {
    models: Option<Section>,
    mcp: Option<Section>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    sources: Option<Vec<SourceEntry>>,
}

const KUBEFLOW_KNOWN: [&str; 5] = ["model_catalogs", "catalogs", "mcp_catalogs", "labels", "namedQueries"];

impl SourcesFile {
    pub fn read(path: &Path) -> Result<SourcesFile, Vec<Diagnostic>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![
                Diagnostic::error(Layer::Syntax, format!("cannot read sources file: {e}"))
                    .in_file(path.display().to_string())
                    .hint("check the --sources path and its permissions"),
            ]
        })?;
        SourcesFile::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<SourcesFile, Vec<Diagnostic>> {
        let file = path.display().to_string();
        let value = syntax_check(&text, &file).map_err(|d| vec![d])?;
        let top = match value {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => {
                return Err(vec![
                    Diagnostic::error(Layer::Fields, "the sources file must be a mapping")
                        .in_file(&file)
                        .at(Some(1), Some(1))
                        .hint("start with `model_catalogs:` / `mcp_catalogs:` or `apiVersion: catalog/v1alpha1`"),
                ]);
            }
        };
        let sectioned = top.get("apiVersion").is_some()
            || top.get("kind").is_some()
            || matches!(top.get("catalogs"), Some(Value::Mapping(_)));
        let mut warnings = Vec::new();
        let mut unknown_sections = Vec::new();
        let (dialect, sources, model_key) = if sectioned {
            let doc: SectionedDoc = strict_parse(&text, &file).map_err(|d| vec![d])?;
            if let Some(Value::Mapping(cats)) = top.get("catalogs") {
                for k in cats.keys().filter_map(Value::as_str) {
                    if PluginKind::parse(k).is_none() {
                        unknown_sections.push(format!("catalogs.{k}"));
                    }
                }
            }
            let mut sources = Vec::new();
            for (plugin, section) in [(PluginKind::Models, doc.catalogs.models), (PluginKind::Mcp, doc.catalogs.mcp)] {
                for e in section.and_then(|s| s.sources).unwrap_or_default() {
                    sources.push((plugin, e));
                }
            }
            (Dialect::PluginSectioned, sources, "catalogs")
        } else {
            let doc: KubeflowDoc = strict_parse(&text, &file).map_err(|d| vec![d])?;
            for k in top.keys().filter_map(Value::as_str) {
                if !KUBEFLOW_KNOWN.contains(&k) {
                    unknown_sections.push(k.to_string());
                }
            }
            let model_key = if doc.model_catalogs.is_none() && doc.catalogs.is_some() {
                warnings.push(
                    Diagnostic::warning(Layer::Semantics, "`catalogs:` is the deprecated name of `model_catalogs:`")
                        .in_file(&file)
                        .field("catalogs")
                        .hint("rename the key to `model_catalogs:` when convenient; it is read and written as is"),
                );
                "catalogs"
            } else {
                "model_catalogs"
            };
            let mut sources = Vec::new();
            for e in doc.model_catalogs.into_iter().chain(doc.catalogs).flatten() {
                sources.push((PluginKind::Models, e));
            }
            for e in doc.mcp_catalogs.into_iter().flatten() {
                sources.push((PluginKind::Mcp, e));
            }
            (Dialect::Kubeflow, sources, model_key)
        };
        for s in &unknown_sections {
            warnings.push(
                Diagnostic::warning(
                    Layer::Plugin,
                    format!("section `{s}` is for a plugin this server does not have; it is kept unchanged"),
                )
                .in_file(&file)
                .field(s.clone()),
            );
        }
        let mut sf = SourcesFile {
            path: path.to_path_buf(),
            text,
            dialect,
            sources,
            unknown_sections,
            warnings,
            model_key,
            path_conflicts: Vec::new(),
        };
        sf.path_conflicts = sf.find_path_conflicts();
        for (_, _, d) in &sf.path_conflicts {
            sf.warnings.push(d.clone());
        }
        let errors = sf.semantic_errors();
        if errors.is_empty() { Ok(sf) } else { Err(errors) }
    }

    fn semantic_errors(&self) -> Vec<Diagnostic> {
        let file = self.path.display().to_string();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (plugin, e) in &self.sources {
            // A source of a type we cannot load (upstream's `hf`, `git`) is kept and shows as
            // ERROR on refresh; it does not make the whole file unreadable.
            // Likewise a bad authSecretRef fails that source's fetch, not the whole file.
            let per_source = |d: &Diagnostic| {
                d.field.as_deref() == Some("type")
                    || d.field.as_deref().is_some_and(|f| f.starts_with("properties.authSecretRef"))
            };
            for d in validate_entry(e).into_iter().filter(|d| !per_source(d)) {
                let (line, col) = find_key_value(&self.text, "id", &e.id, 0);
                out.push(d.in_file(&file).at(line, col));
            }
            if !seen.insert((*plugin, e.id.clone())) {
                let (line, col) = find_key_value(&self.text, "id", &e.id, 1);
                out.push(
                    Diagnostic::error(Layer::Semantics, format!("duplicate source id `{}` in plugin `{plugin}`", e.id))
                        .in_file(&file)
                        .at(line, col)
                        .field("id")
                        .hint("source ids must be unique within a plugin"),
                );
            }
        }
        out
    }

    /// Lexical comparison of catalog locations (symlink aliases are caught at write time by
    /// `writable_catalog_path` in `paths`): the first source naming a location owns it.
    fn find_path_conflicts(&self) -> Vec<(PluginKind, String, Diagnostic)> {
        let file = self.path.display().to_string();
        let own = normalized(&self.path.to_string_lossy());
        let mut owners: std::collections::HashMap<PathBuf, (PluginKind, String)> = std::collections::HashMap::new();
        let mut out = Vec::new();
        for (plugin, e) in &self.sources {
            let Some(rel) = e.yaml_catalog() else { continue };
            let key = normalized(&self.resolve(rel).to_string_lossy());
            let (line, col) = find_key_value(&self.text, "id", &e.id, 0);
            let problem = if key == own {
                Some(format!("yamlCatalogPath `{rel}` of source {plugin}/{} is the sources file itself", e.id))
            } else {
                owners.get(&key).map(|(p, id)| {
                    format!(
                        "yamlCatalogPath `{rel}` of source {plugin}/{} is already the catalog of source {p}/{id}",
                        e.id
                    )
                })
            };
            match problem {
                Some(msg) => out.push((
                    *plugin,
                    e.id.clone(),
                    Diagnostic::error(Layer::Semantics, msg)
                        .in_file(&file)
                        .at(line, col)
                        .field("properties.yamlCatalogPath")
                        .hint("give every source its own catalog file; this source is not loaded until then"),
                )),
                None => {
                    owners.insert(key, (*plugin, e.id.clone()));
                }
            }
        }
        out
    }

    /// Why this source's catalog location cannot be used, if it cannot (see `path_conflicts`).
    pub fn path_conflict(&self, plugin: PluginKind, id: &str) -> Option<&Diagnostic> {
        self.path_conflicts.iter().find(|(p, i, _)| *p == plugin && i == id).map(|(_, _, d)| d)
    }

    pub fn find(&self, plugin: PluginKind, id: &str) -> Option<&SourceEntry> {
        self.sources.iter().find(|(p, e)| *p == plugin && e.id == id).map(|(_, e)| e)
    }

    /// Directory that relative `yamlCatalogPath`s are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    pub fn resolve(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir().join(p) }
    }

    /// The full new text of the file with `entry` inserted or replaced in `plugin`'s section.
    pub fn with_entry(&self, plugin: PluginKind, entry: &SourceEntry) -> String {
        let lines = split_lines(&self.text);
        let section_path: Vec<&str> = match (self.dialect, plugin) {
            (Dialect::Kubeflow, PluginKind::Models) => vec![self.model_key],
            (Dialect::Kubeflow, PluginKind::Mcp) => vec!["mcp_catalogs"],
            (Dialect::PluginSectioned, p) => vec!["catalogs", p.name(), "sources"],
        };
        let index = self.sources.iter().filter(|(p, _)| *p == plugin).position(|(_, e)| e.id == entry.id);
        let count = self.sources.iter().filter(|(p, _)| *p == plugin).count();

        if let Some(block) = find_path(&lines, &section_path) {
            let items = sequence_items(&lines, block.body.clone());
            let inline_value = has_inline_value(lines[block.key_line]);
            if items.len() == count && !inline_value {
                let indent = items.first().map(|r| indent_of(lines[r.start])).unwrap_or(block.key_indent + 2);
                let rendered = render_item(&entry.to_mapping(self.dialect), indent);
                return match index {
                    Some(i) => splice(&lines, items[i].clone(), &rendered),
                    None => {
                        let at = items.last().map(|r| r.end).unwrap_or(block.body.start);
                        splice(&lines, at..at, &rendered)
                    }
                };
            }
            // Flow-style or otherwise irregular list (`catalogs: []`): re-render this section.
            let mut entries: Vec<SourceEntry> =
                self.sources.iter().filter(|(p, _)| *p == plugin).map(|(_, e)| e.clone()).collect();
            match index {
                Some(i) => entries[i] = entry.clone(),
                None => entries.push(entry.clone()),
            }
            let key = section_path.last().copied().unwrap_or_default();
            let mut rendered = format!("{}{key}:\n", " ".repeat(block.key_indent));
            for e in &entries {
                rendered.push_str(&render_item(&e.to_mapping(self.dialect), block.key_indent + 2));
            }
            return splice(&lines, block.key_line..block.body.end, &rendered);
        }

        // The section does not exist yet: add it (and its parents) at the right place.
        let mut text = self.text.clone();
        let item = |indent| render_item(&entry.to_mapping(self.dialect), indent);
        match self.dialect {
            Dialect::Kubeflow => {
                ensure_trailing_newline(&mut text);
                if !text.trim().is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("{}:\n{}", section_path[0], item(2)));
                text
            }
            Dialect::PluginSectioned => {
                if let Some(plugin_block) = find_path(&lines, &section_path[..2]) {
                    let ind = plugin_block.key_indent + 2;
                    let add = format!("{}sources:\n{}", " ".repeat(ind), item(ind + 2));
                    splice(&lines, plugin_block.body.end..plugin_block.body.end, &add)
                } else if let Some(cats) = find_path(&lines, &section_path[..1]) {
                    let ind = sequence_or_child_indent(&lines, &cats);
                    let add = format!(
                        "{}{}:\n{}sources:\n{}",
                        " ".repeat(ind),
                        plugin.name(),
                        " ".repeat(ind + 2),
                        item(ind + 4)
                    );
                    splice(&lines, cats.body.end..cats.body.end, &add)
                } else {
                    ensure_trailing_newline(&mut text);
                    text.push_str(&format!("catalogs:\n  {}:\n    sources:\n{}", plugin.name(), item(6)));
                    text
                }
            }
        }
    }
}

/// Field-level checks on one entry, shared by the file reader and the API input.
pub fn validate_entry(e: &SourceEntry) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !valid_id(&e.id) {
        out.push(Diagnostic::error(Layer::Semantics, format!("invalid source id `{}`", e.id)).field("id").hint(
            "ids match ^[a-z0-9][a-z0-9_-]*$: lowercase letters, digits, '_' and '-', starting with a letter or digit",
        ));
    }
    if e.name.trim().is_empty() {
        out.push(
            Diagnostic::error(Layer::Semantics, "source name is empty")
                .field("name")
                .hint("give the source a display name"),
        );
    }
    match e.type_.as_str() {
        "yaml" => {
            if e.yaml_catalog_path().is_none_or(|p| p.trim().is_empty()) {
                out.push(
                    Diagnostic::error(Layer::Semantics, "a yaml source needs properties.yamlCatalogPath")
                        .field("properties.yamlCatalogPath")
                        .hint("set yamlCatalogPath to the catalog file, relative to the sources file"),
                );
            }
        }
        "url" => {
            if e.url().is_none_or(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                out.push(
                    Diagnostic::error(Layer::Semantics, "a url source needs properties.url (http:// or https://)")
                        .field("properties.url")
                        .hint("set properties.url to the catalog's HTTP address"),
                );
            }
        }
        other => out.push(
            Diagnostic::error(Layer::Semantics, format!("unsupported source type `{other}`"))
                .field("type")
                .hint("use `yaml` (a catalog file) or `url` (a catalog fetched over HTTP)"),
        ),
    }
    out.extend(secret_ref_problems(e));
    if let Some(Err(why)) = e.refresh_interval.as_deref().map(crate::schedule::parse_interval) {
        out.push(
            Diagnostic::error(Layer::Semantics, why)
                .field("refreshInterval")
                .hint("use a Go-style duration of at least 10s, such as `30s`, `10m` or `1h`"),
        );
    }
    for (key, list) in [("includedModels", &e.included_models), ("excludedModels", &e.excluded_models)] {
        let n = list.as_ref().map_or(0, Vec::len);
        if n > MAX_PATTERNS {
            out.push(
                Diagnostic::error(Layer::Semantics, format!("{key} has {n} patterns; the limit is {MAX_PATTERNS}"))
                    .field(key)
                    .hint("use wildcards (`granite/*`) instead of listing every name"),
            );
            continue;
        }
        for (i, p) in list.iter().flatten().enumerate() {
            if p.trim().is_empty() {
                out.push(
                    Diagnostic::error(Layer::Semantics, format!("empty pattern in {key}"))
                        .field(format!("{key}[{i}]"))
                        .hint("remove the empty pattern"),
                );
            }
        }
    }
    if let (Some(inc), Some(exc)) = (&e.included_models, &e.excluded_models) {
        // A set, not `exc.contains` per pattern: two long lists made this quadratic.
        let excluded: std::collections::HashSet<&String> = exc.iter().collect();
        for p in inc.iter().filter(|p| excluded.contains(p)).take(20) {
            out.push(
                Diagnostic::error(Layer::Semantics, format!("pattern `{p}` is both included and excluded"))
                    .field("excludedModels")
                    .hint("a pattern cannot appear in both includedModels and excludedModels"),
            );
        }
    }
    out
}

/// `authSecretRef` must name a Kubernetes Secret and one of its data keys. Why: the name and
/// key become a path under `--secrets-dir`; `{name: "/etc", key: "hostname"}` used to read
/// `/etc/hostname` and send it as a header to the source's URL.
pub fn secret_ref_problems(e: &SourceEntry) -> Vec<Diagnostic> {
    let mut out = ref_problems(e, "authSecretRef");
    out.extend(ref_problems(e, "webhookSecretRef"));
    out
}

/// The problems of one SecretRef property (`authSecretRef`, `webhookSecretRef`).
fn ref_problems(e: &SourceEntry, prop: &str) -> Vec<Diagnostic> {
    let Some(r) = e.properties.get(prop) else {
        return Vec::new();
    };
    let field = |k: &str| r.get(k).and_then(Value::as_str);
    let (Some(name), Some(key)) = (field("name"), field("key")) else {
        return vec![
            Diagnostic::error(Layer::Semantics, format!("{prop} needs `name` and `key` (strings)"))
                .field(format!("properties.{prop}"))
                .hint(format!("write {prop}: {{name: my-secret, key: token}}")),
        ];
    };
    let mut out = Vec::new();
    if !valid_secret_name(name) {
        out.push(
            Diagnostic::error(
                Layer::Semantics,
                format!("{prop} name `{}` is not a Kubernetes Secret name", name.escape_debug()),
            )
            .field(format!("properties.{prop}.name"))
            .hint("use the Secret's name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"),
        );
    }
    if !valid_secret_key(key) {
        out.push(
            Diagnostic::error(
                Layer::Semantics,
                format!("{prop} key `{}` is not a Kubernetes Secret data key", key.escape_debug()),
            )
            .field(format!("properties.{prop}.key"))
            .hint("use one of the Secret's data keys: letters, digits, '-', '_' and '.', at most 253 characters, not `.` or `..`"),
        );
    }
    if let Some(ns) = r.get("namespace") {
        let ok = ns.as_str().is_some_and(|ns| {
            !ns.is_empty()
                && ns.len() <= 63
                && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-')
        });
        if !ok {
            out.push(
                Diagnostic::error(Layer::Semantics, format!("{prop} namespace is not a Kubernetes namespace name"))
                    .field(format!("properties.{prop}.namespace"))
                    .hint("use a namespace name (lowercase letters, digits and '-', at most 63 characters), or leave it out for the server's own namespace"),
            );
        }
    }
    out
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a Secret name.
pub fn valid_secret_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 253
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'.')
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Case-insensitive glob with `*` only, anchored at both ends (upstream's includedModels rule).
/// Most patterns in `includedModels` or in `excludedModels`.
pub const MAX_PATTERNS: usize = 1000;

/// `includedModels` / `excludedModels` patterns, lower-cased once: names without `*` in a set
/// (one lookup per entity), the others as their parts.
pub struct Patterns {
    exact: std::collections::HashSet<String>,
    wild: Vec<Vec<String>>,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Patterns {
        let mut p = Patterns { exact: std::collections::HashSet::new(), wild: Vec::new() };
        for pattern in patterns {
            let lower = pattern.to_lowercase();
            if lower.contains('*') {
                p.wild.push(lower.split('*').map(str::to_string).collect());
            } else {
                p.exact.insert(lower);
            }
        }
        p
    }

    /// Whether a lower-cased name matches one of the patterns.
    pub fn matches(&self, lower_name: &str) -> bool {
        self.exact.contains(lower_name) || self.wild.iter().any(|parts| parts_match(parts, lower_name))
    }
}

fn parts_match<S: AsRef<str>>(parts: &[S], name: &str) -> bool {
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        let part = part.as_ref();
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else { return false };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}

/// The plain glob the patterns compile to, for the tests to compare with.
#[cfg(test)]
fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.to_lowercase();
    let n = name.to_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == n;
    }
    parts_match(&parts, &n)
}

// ---- text splicing -------------------------------------------------------------------------

/// Lines including their terminators, so joining them gives back the exact text.
fn split_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A line that carries YAML content (not blank, not a comment).
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

fn is_item(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("- ") || t.trim_end() == "-"
}

struct Block {
    key_line: usize,
    key_indent: usize,
    /// Lines after the key line up to the last content line of the block.
    body: Range<usize>,
}

/// Finds `key:` at exactly `indent` within `range`, and the extent of its block.
/// What follows `key` at the start of `line`, the key written plain, `"quoted"` or `'quoted'`
/// (YAML reads all three as the same key, so the splice must find all three).
fn key_rest<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix(key) {
        return Some(rest);
    }
    ['"', '\''].into_iter().find_map(|q| line.strip_prefix(q)?.strip_prefix(key)?.strip_prefix(q))
}

fn find_key(lines: &[&str], range: Range<usize>, key: &str) -> Option<Block> {
    let indent = range.clone().filter(|&i| is_content(lines[i])).map(|i| indent_of(lines[i])).min()?;
    let end = range.end;
    let start = range.clone().find(|&i| {
        let l = lines[i];
        is_content(l) && indent_of(l) == indent && key_rest(l.trim_start(), key).is_some_and(|r| r.starts_with(':'))
    })?;
    let mut last = start;
    for (i, l) in lines.iter().enumerate().take(end).skip(start + 1) {
        if !is_content(l) {
            continue;
        }
        let ind = indent_of(l);
        // A block ends at the next key at the same or lower indentation; a sequence item at the
        // key's own indentation still belongs to it (`models:\n- name: x` is valid YAML).
        if ind < indent || (ind == indent && !is_item(l)) {
            break;
        }
        last = i;
    }
    Some(Block { key_line: start, key_indent: indent, body: start + 1..last + 1 })
}

fn find_path(lines: &[&str], path: &[&str]) -> Option<Block> {
    let mut range = 0..lines.len();
    let mut found = None;
    for key in path {
        let b = find_key(lines, range, key)?;
        range = b.body.clone();
        found = Some(b);
    }
    found
}

fn sequence_or_child_indent(lines: &[&str], b: &Block) -> usize {
    b.body.clone().filter(|&i| is_content(lines[i])).map(|i| indent_of(lines[i])).min().unwrap_or(b.key_indent + 2)
}

/// The line ranges of the items of a block-style sequence: each from its `-` line to its last
/// content line (comments just before the next item stay with that next item).
fn sequence_items(lines: &[&str], body: Range<usize>) -> Vec<Range<usize>> {
    let Some(indent) = body.clone().filter(|&i| is_content(lines[i])).map(|i| indent_of(lines[i])).min() else {
        return Vec::new();
    };
    let mut items: Vec<Range<usize>> = Vec::new();
    for i in body {
        let l = lines[i];
        if !is_content(l) {
            continue;
        }
        if indent_of(l) == indent && is_item(l) {
            items.push(i..i + 1);
        } else if let Some(last) = items.last_mut() {
            last.end = i + 1;
        } else {
            // Content before the first item: not a block sequence.
            return Vec::new();
        }
    }
    items
}

fn render_item(m: &Mapping, indent: usize) -> String {
    let seq = Value::Sequence(vec![Value::Mapping(m.clone())]);
    let yaml = serde_yaml_ng::to_string(&seq).unwrap_or_default();
    let pad = " ".repeat(indent);
    yaml.lines().map(|l| format!("{pad}{l}\n")).collect()
}

fn splice(lines: &[&str], range: Range<usize>, replacement: &str) -> String {
    let mut out = String::new();
    for l in &lines[..range.start] {
        out.push_str(l);
    }
    if range.start > 0 && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(replacement);
    for l in &lines[range.end..] {
        out.push_str(l);
    }
    out
}

/// `key: []` or `key: [a, b]`: the value is on the key's own line.
fn has_inline_value(line: &str) -> bool {
    let Some(colon) = line.find(':') else { return false };
    let rest = line[colon + 1..].trim();
    !(rest.is_empty() || rest.starts_with('#'))
}

fn ensure_trailing_newline(text: &mut String) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

/// `rel` with `.` components and repeated separators removed, for comparing catalog locations
/// (here, and by `paths` before a write).
pub fn normalized(rel: &str) -> PathBuf {
    Path::new(rel).components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SourcesFile {
        SourcesFile::parse(Path::new("/tmp/sources.yaml"), text.to_string()).unwrap()
    }

    fn entry(id: &str, path: &str) -> SourceEntry {
        let mut properties = Mapping::new();
        properties.insert("yamlCatalogPath".into(), path.into());
        SourceEntry {
            id: id.into(),
            name: format!("Name {id}"),
            type_: "yaml".into(),
            enabled: true,
            labels: vec!["L".into()],
            properties,
            included_models: None,
            excluded_models: None,
            asset_type: None,
            refresh_interval: None,
            suspended: false,
        }
    }

    const KF: &str = "# head comment\nmodel_catalogs:\n  - name: A\n    id: a\n    type: yaml\n    properties:\n      yamlCatalogPath: a.yaml\n  # about b\n  - name: B\n    id: b\n    type: yaml\n    properties:\n      yamlCatalogPath: b.yaml\n\nagent_catalogs:\n  - name: X   # keep me\n    id: x\n\nnamedQueries:\n  q: {assetType: models}\n";

    #[test]
    fn replacing_an_entry_keeps_every_other_byte() {
        let sf = parse(KF);
        assert_eq!(sf.unknown_sections, vec!["agent_catalogs"]);
        let new = sf.with_entry(PluginKind::Models, &entry("a", "a2.yaml"));
        let reparsed = parse(&new);
        assert_eq!(reparsed.find(PluginKind::Models, "a").unwrap().yaml_catalog_path(), Some("a2.yaml"));
        assert_eq!(reparsed.find(PluginKind::Models, "b").unwrap().yaml_catalog_path(), Some("b.yaml"));
        let tail_old = &KF[KF.find("  # about b").unwrap()..];
        assert!(new.ends_with(tail_old), "{new}");
        assert!(new.starts_with("# head comment\nmodel_catalogs:\n"));
    }

    #[test]
    fn adding_entries_to_missing_sections() {
        let sf = parse(KF);
        let new = sf.with_entry(PluginKind::Mcp, &entry("m", "m.yaml"));
        assert!(new.starts_with(KF), "{new}");
        let reparsed = parse(&new);
        assert_eq!(reparsed.sources.len(), 3);
        assert_eq!(reparsed.find(PluginKind::Mcp, "m").unwrap().labels, vec!["L"]);

        let ps = parse(
            "apiVersion: catalog/v1alpha1\nkind: CatalogSources\ncatalogs:\n  models:\n    sources:\n      - id: a\n        name: A\n        type: yaml\n        properties:\n          yamlCatalogPath: a.yaml\n  knowledge:\n    sources:\n      - id: k\n",
        );
        let new = ps.with_entry(PluginKind::Mcp, &entry("m", "m.yaml"));
        let reparsed = parse(&new);
        assert_eq!(reparsed.dialect, Dialect::PluginSectioned);
        assert!(reparsed.find(PluginKind::Mcp, "m").is_some());
        assert!(new.contains("  knowledge:\n    sources:\n      - id: k\n"));
        let new2 = reparsed.with_entry(PluginKind::Models, &entry("b", "b.yaml"));
        let again = parse(&new2);
        assert_eq!(again.sources.iter().filter(|(p, _)| *p == PluginKind::Models).count(), 2);
    }

    #[test]
    fn quoted_section_keys_are_found_not_duplicated() {
        // Regression (issue 8 property tests): `"model_catalogs":` got a second section.
        for key in ["\"model_catalogs\"", "'model_catalogs'"] {
            let f = parse(&format!(
                "{key}:\n  - name: A\n    id: a\n    type: yaml\n    properties:\n      yamlCatalogPath: a.yaml\n"
            ));
            let text = f.with_entry(PluginKind::Models, &entry("b", "b.yaml"));
            assert_eq!(text.matches("model_catalogs").count(), 1, "{text}");
            let reparsed = SourcesFile::parse(Path::new("/tmp/s.yaml"), text).unwrap();
            assert!(
                reparsed.find(PluginKind::Models, "a").is_some() && reparsed.find(PluginKind::Models, "b").is_some()
            );
        }
    }

    #[test]
    fn flow_style_empty_list_is_rerendered() {
        let sf = parse("catalogs: []\n");
        let new = sf.with_entry(PluginKind::Models, &entry("a", "a.yaml"));
        let reparsed = parse(&new);
        assert_eq!(reparsed.sources.len(), 1);
        assert!(new.starts_with("catalogs:\n"));
    }

    #[test]
    fn secret_names_and_keys() {
        for ok in ["catalog-host", "a", "a.b-c", "x1"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "/etc", "..", "a/b", "-a", "a-", "A", "a_b", &"a".repeat(254)] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
        for ok in ["token", "ca.crt", "_x", "A-b_c.d"] {
            assert!(valid_secret_key(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "a b"] {
            assert!(!valid_secret_key(bad), "{bad}");
        }
    }

    #[test]
    fn shared_catalog_paths_put_the_later_source_in_conflict() {
        let sf = parse(
            "model_catalogs:\n  - name: A\n    id: a\n    type: yaml\n    properties:\n      yamlCatalogPath: a.yaml\n  - name: B\n    id: b\n    type: yaml\n    properties:\n      yamlCatalogPath: ./a.yaml\n  - name: S\n    id: s\n    type: yaml\n    properties:\n      yamlCatalogPath: sources.yaml\nmcp_catalogs:\n  - name: M\n    id: m\n    type: yaml\n    properties:\n      yamlCatalogPath: a.yaml\n",
        );
        assert!(sf.path_conflict(PluginKind::Models, "a").is_none());
        assert!(sf.path_conflict(PluginKind::Models, "b").unwrap().message.contains("models/a"));
        assert!(sf.path_conflict(PluginKind::Models, "s").unwrap().message.contains("the sources file itself"));
        assert!(sf.path_conflict(PluginKind::Mcp, "m").unwrap().message.contains("models/a"));
    }

    #[test]
    fn ids_and_globs() {
        assert!(valid_id("organization_ai_models"));
        assert!(valid_id("mcp-default"));
        assert!(!valid_id("Bad Id"));
        assert!(!valid_id("-x"));
        assert!(glob_match("Granite/*", "granite/model"));
        assert!(glob_match("*-beta", "x-beta"));
        assert!(glob_match("*deprecated*", "a-deprecated-b"));
        assert!(!glob_match("*-beta", "x-beta2"));
        // The compiled set answers as the pattern does, one name lower-cased once.
        for (p, n) in [
            ("Granite/*", "granite/model"),
            ("*-beta", "x-beta"),
            ("*-beta", "x-beta2"),
            ("Exact", "EXACT"),
            ("a*b*c", "aXbYc"),
            ("a*b*c", "acb"),
        ] {
            assert_eq!(Patterns::new(&[p.to_string()]).matches(&n.to_lowercase()), glob_match(p, n), "{p} {n}");
        }
    }
}
