//! Catalog plugins: each one knows one catalog file format and turns it into entities.
//!
//! `models` reads Kubeflow model catalogs (`source:` + `models:`); `mcp` reads both MCP server
//! formats (Kubeflow `mcp_servers:` and the flat `mcpservers:`) into one [`McpServer`] entity.

pub mod mcp;
pub mod models;

use serde::Serialize;

pub use mcp::McpServer;
pub use models::Model;

use super::diagnostics::Diagnostic;

/// The plugins this server has. The names are the GraphQL `plugin` argument values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    Models,
    Mcp,
}

impl PluginKind {
    pub const ALL: [PluginKind; 2] = [PluginKind::Models, PluginKind::Mcp];

    /// This plugin's position in [`PluginKind::ALL`].
    pub const fn index(self) -> usize {
        match self {
            PluginKind::Models => 0,
            PluginKind::Mcp => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Models => "models",
            PluginKind::Mcp => "mcp",
        }
    }

    pub fn parse(name: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Parses and checks one catalog file. Errors in the fields layer stop the load; entity-level
    /// problems (plugin layer) are returned as diagnostics next to the entities that did load.
    pub fn load(self, text: &str, file: &str) -> Result<Loaded, Vec<Diagnostic>> {
        match self {
            PluginKind::Models => models::load(text, file),
            PluginKind::Mcp => mcp::load(text, file),
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of loading one catalog file.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entities: Vec<Entity>,
    /// Entity-level problems: errors here mean entities were skipped (a partial load).
    pub diagnostics: Vec<Diagnostic>,
}

/// One catalog entity, as the API shows it (catalog files are read through the plugins' own
/// file types).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Entity {
    Model(Box<Model>),
    McpServer(Box<McpServer>),
}

impl Entity {
    pub fn name(&self) -> &str {
        match self {
            Entity::Model(m) => &m.name,
            Entity::McpServer(s) => &s.name,
        }
    }

    pub fn description(&self) -> Option<&str> {
        match self {
            Entity::Model(m) => m.description.as_deref(),
            Entity::McpServer(s) => s.description.as_deref(),
        }
    }

    pub fn provider(&self) -> Option<&str> {
        match self {
            Entity::Model(m) => m.provider.as_deref(),
            Entity::McpServer(s) => s.provider.as_deref(),
        }
    }

    pub fn artifact_count(&self) -> usize {
        match self {
            Entity::Model(m) => m.artifacts.len(),
            Entity::McpServer(s) => s.artifacts.len(),
        }
    }

    /// Case-insensitive substring match over name, description and provider. `needle_lower`
    /// is already lowercase. No allocation for an ASCII needle: a search scans every entity of
    /// a plugin, and lowercasing three strings per entity per request was most of its cost.
    pub fn matches(&self, needle_lower: &str) -> bool {
        [Some(self.name()), self.description(), self.provider()]
            .into_iter()
            .flatten()
            .any(|s| contains_lowercase(s, needle_lower))
    }
}

/// Whether `hay`, lowercased, contains `needle_lower`.
pub(crate) fn contains_lowercase(hay: &str, needle_lower: &str) -> bool {
    if !needle_lower.is_ascii() {
        return hay.to_lowercase().contains(needle_lower);
    }
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    if n.is_empty() {
        return true;
    }
    if h.is_ascii() {
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    // Non-ASCII text with an ASCII needle: lowercasing may change byte lengths (e.g. `İ`), so
    // take the exact path.
    hay.to_lowercase().contains(needle_lower)
}

/// Checks name presence and uniqueness, shared by both plugins. Returns the indexes to keep.
/// The position of a diagnostic, searched in the text only for the first 100 diagnostics of a
/// load: each search scans the text, so locating every one of many errors would be quadratic.
pub(crate) fn locate(
    so_far: &[Diagnostic],
    search: impl FnOnce() -> (Option<u32>, Option<u32>),
) -> (Option<u32>, Option<u32>) {
    if so_far.len() < 100 { search() } else { (None, None) }
}

pub(crate) fn unique_names(names: &[&str], text: &str, file: &str, list_key: &str) -> (Vec<usize>, Vec<Diagnostic>) {
    use super::diagnostics::Layer;
    use super::yaml::key_value_positions;
    /// Diagnostics past this many duplicates are summed up in one: a file of 100k copies of one
    /// name must not produce a response of 100k diagnostics.
    const MAX_REPORTED: usize = 100;
    let mut keep = Vec::new();
    let mut diags = Vec::new();
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    // Positions are computed once, on the first duplicate (one pass over the text, not one per
    // duplicate: that was quadratic in the number of duplicates).
    let mut positions = None;
    let mut unreported = 0usize;
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            if diags.len() >= MAX_REPORTED {
                unreported += 1;
                continue;
            }
            diags.push(
                Diagnostic::error(Layer::Plugin, "entity has an empty name; it was skipped")
                    .in_file(file)
                    .field(format!("{list_key}[{i}].name"))
                    .hint("give every entity a non-empty, unique name"),
            );
            continue;
        }
        let count = seen.entry(name).or_insert(0);
        *count += 1;
        if *count > 1 {
            if diags.len() >= MAX_REPORTED {
                unreported += 1;
                continue;
            }
            let nth = *count - 1;
            let at = positions.get_or_insert_with(|| key_value_positions(text, "name"));
            let (line, col) = at.get(name).and_then(|v| v.get(nth)).copied().unwrap_or((None, None));
            diags.push(
                Diagnostic::error(Layer::Plugin, format!("duplicate name `{name}`; the later entry was skipped"))
                    .in_file(file)
                    .at(line, col)
                    .field(format!("{list_key}[{i}].name"))
                    .hint("names must be unique within a source: rename or remove one of them"),
            );
            continue;
        }
        keep.push(i);
    }
    if unreported > 0 {
        diags.push(
            Diagnostic::error(
                Layer::Plugin,
                format!("{unreported} more entities with an empty or duplicate name were skipped"),
            )
            .in_file(file)
            .hint("names must be non-empty and unique within a source"),
        );
    }
    (keep, diags)
}
