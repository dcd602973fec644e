//! Layered validation of a proposed source (entry + catalog content): YAML syntax → strict
//! fields → semantics → plugin → security warnings. Validation never changes anything.

use serde_json::Value as Json;

use super::diagnostics::{Diagnostic, Layer, ValidationReport};
use super::plugins::{Entity, PluginKind};
use super::redact::{REDACTED, find_inline_secrets, is_secret_key};
use super::sources::{SourceEntry, SourceKind, validate_entry};
use super::yaml::syntax_check;

/// A source as proposed by a caller: the entry for the sources file and, for `yaml` sources,
/// the catalog content to write to its `yamlCatalogPath`.
#[derive(Clone, Debug)]
pub struct SourceDraft {
    pub plugin: PluginKind,
    pub entry: SourceEntry,
    pub content: Option<String>,
}

/// The result of validating a draft: the report and, when the content parsed, its entities.
pub struct Checked {
    pub report: ValidationReport,
    pub entities: Option<Vec<Entity>>,
}

/// A partial edit from a caller: what is `None` is kept from the existing source (or defaulted
/// for a new one: `name` = id, `type` = yaml, enabled).
#[derive(Clone, Debug, Default)]
pub struct SourcePatch {
    pub id: String,
    pub name: Option<String>,
    pub type_: Option<String>,
    pub enabled: Option<bool>,
    pub labels: Option<Vec<String>>,
    pub properties: Option<serde_yaml_ng::Mapping>,
    pub content: Option<String>,
    pub included_models: Option<Vec<String>>,
    pub excluded_models: Option<Vec<String>>,
    /// `Some("")` removes the key (the source goes back to the default).
    pub refresh_interval: Option<String>,
    pub suspended: Option<bool>,
}

impl SourcePatch {
    pub fn into_draft(self, plugin: PluginKind, existing: Option<&SourceEntry>) -> SourceDraft {
        let base = existing.cloned();
        let entry = SourceEntry {
            name: self.name.or_else(|| base.as_ref().map(|b| b.name.clone())).unwrap_or_else(|| self.id.clone()),
            type_: self.type_.or_else(|| base.as_ref().map(|b| b.type_.clone())).unwrap_or_else(|| "yaml".into()),
            enabled: self.enabled.or(base.as_ref().map(|b| b.enabled)).unwrap_or(true),
            labels: self.labels.or_else(|| base.as_ref().map(|b| b.labels.clone())).unwrap_or_default(),
            properties: self.properties.or_else(|| base.as_ref().map(|b| b.properties.clone())).unwrap_or_default(),
            included_models: self.included_models.or_else(|| base.as_ref().and_then(|b| b.included_models.clone())),
            excluded_models: self.excluded_models.or_else(|| base.as_ref().and_then(|b| b.excluded_models.clone())),
            asset_type: base.as_ref().and_then(|b| b.asset_type.clone()),
            refresh_interval: match self.refresh_interval {
                Some(text) if text.is_empty() => None,
                Some(text) => Some(text),
                None => base.as_ref().and_then(|b| b.refresh_interval.clone()),
            },
            suspended: self.suspended.or(base.as_ref().map(|b| b.suspended)).unwrap_or(false),
            id: self.id,
        };
        SourceDraft { plugin, entry, content: self.content }
    }
}

pub fn content_label(entry: &SourceEntry) -> String {
    entry.yaml_catalog_path().map(str::to_string).unwrap_or_else(|| "input.content".to_string())
}

/// `existing` is the source as it is in the sources file now, if it exists.
pub fn check(draft: &SourceDraft, existing: Option<&SourceEntry>) -> Checked {
    let mut diags: Vec<Diagnostic> = validate_entry(&draft.entry)
        .into_iter()
        .map(|mut d| {
            d.field = d.field.map(|f| format!("input.{f}"));
            d
        })
        .collect();
    diags.extend(path_policy(draft, existing));
    let mut entities = None;
    if let Some(content) = &draft.content {
        let file = content_label(&draft.entry);
        if draft.entry.kind() != SourceKind::Yaml {
            diags.push(
                Diagnostic::error(
                    Layer::Semantics,
                    format!("`content` is only accepted for yaml sources, not `{}`", draft.entry.type_),
                )
                .field("input.content")
                .hint("drop `content`; a url source's catalog is fetched from properties.url"),
            );
        }
        match syntax_check(content, &file) {
            Err(d) => diags.push(d),
            Ok(_) => match draft.plugin.load(content, &file) {
                Err(ds) => diags.extend(ds),
                Ok(loaded) => {
                    diags.extend(loaded.diagnostics);
                    entities = Some(loaded.entities);
                }
            },
        }
        for (i, line) in content.lines().enumerate() {
            if line.contains(REDACTED) {
                diags.push(
                    Diagnostic::error(Layer::Semantics, "content contains a redacted value")
                        .in_file(&file)
                        .at(u32::try_from(i + 1).ok(), line.find(REDACTED).and_then(|c| u32::try_from(c + 1).ok()))
                        .hint("the API never returns secrets: put the real value in a Secret and reference it with SecretRef {name, namespace, key}"),
                );
            }
        }
        for s in find_inline_secrets(content) {
            diags.push(secret_warning(&s.key).in_file(&file).at(Some(s.line), Some(s.column)));
        }
    } else if draft.entry.kind() == SourceKind::Yaml && !keeps_outside_location(draft, existing) {
        diags.push(
            Diagnostic::error(
                Layer::Semantics,
                "a yaml source needs `content` (none given and no current catalog file to keep)",
            )
            .field("input.content")
            .hint("send the catalog YAML in `content`"),
        );
    }
    let props = yaml_to_json(&serde_yaml_ng::Value::Mapping(draft.entry.properties.clone()));
    secret_paths(&props, "input.properties", &mut |path, key| diags.push(secret_warning(key).field(path)));
    Checked { report: ValidationReport::from_diagnostics(diags), entities }
}

/// Through the API a catalog path may only point inside the sources file's directory: otherwise
/// an operator could make the server write (apply) or read back (`content`) any file it can
/// reach. Paths already in the sources file (set by whoever deployed it, e.g. upstream's
/// `/shared-data/...` or `../plugins/...`) stay allowed.
fn path_policy(draft: &SourceDraft, existing: Option<&SourceEntry>) -> Option<Diagnostic> {
    let path = draft.entry.yaml_catalog_path()?;
    if existing.and_then(SourceEntry::yaml_catalog_path) == Some(path) {
        return None;
    }
    let p = std::path::Path::new(path);
    let escapes = p.is_absolute()
        || p.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    escapes.then(|| {
        Diagnostic::error(
            Layer::Semantics,
            format!("yamlCatalogPath `{path}` points outside the sources file's directory"),
        )
        .field("input.properties.yamlCatalogPath")
        .hint("use a relative path without `..`, such as `team-models.yaml` or `catalogs/team-models.yaml`")
    })
}

/// A deployer's catalog outside the sources file's directory is never written through the API;
/// an entry-only edit of such a source (rename, disable) stays possible even when its file
/// cannot be read here (it may exist only where refresh runs, e.g. a mounted volume).
fn keeps_outside_location(draft: &SourceDraft, existing: Option<&SourceEntry>) -> bool {
    let path = draft.entry.yaml_catalog_path();
    path.is_some()
        && existing.and_then(SourceEntry::yaml_catalog_path) == path
        && path.and_then(super::paths::lexical_problem).is_some_and(|w| w.contains("outside"))
}

fn secret_warning(key: &str) -> Diagnostic {
    Diagnostic::warning(Layer::Security, format!("`{key}` looks like an inline secret")).hint(
        "store it in a Kubernetes Secret and reference it as SecretRef {name, namespace, key}; API responses redact it",
    )
}

fn secret_paths(v: &Json, path: &str, f: &mut dyn FnMut(String, &str)) {
    if let Json::Object(map) = v {
        for (k, v) in map {
            let p = format!("{path}.{k}");
            if is_secret_key(k) && (v.is_string() || v.is_number()) {
                f(p, k);
            } else {
                secret_paths(v, &p, f);
            }
        }
    }
}

pub fn yaml_to_json(v: &serde_yaml_ng::Value) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

pub fn json_to_yaml(v: &Json) -> serde_yaml_ng::Value {
    serde_yaml_ng::to_value(v).unwrap_or(serde_yaml_ng::Value::Null)
}
