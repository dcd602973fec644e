//! The core's YAML entry points: the `catalog-yaml` toolkit with this process's limits, its
//! errors as the core's [`Diagnostic`]s (`Syntax` or `Fields` layer).
//!
//! The limits are process-wide because every YAML reader in the core (the sources file,
//! catalog files, url bodies, API content, the tokens file) goes through here and none of them
//! has configuration of its own; they are set once at start (`--max-yaml-depth`). The toolkit
//! itself takes them as a parameter.

use std::sync::atomic::{AtomicUsize, Ordering};

pub use catalog_yaml::{Limits, find_key_value, key_value_positions};
use catalog_yaml::{YamlError, YamlErrorKind};

use super::diagnostics::{Diagnostic, Layer};

static MAX_DEPTH: AtomicUsize = AtomicUsize::new(catalog_yaml::depth::DEFAULT_MAX_DEPTH);

/// Sets the process-wide limits (at start, from `--max-yaml-depth`).
pub fn set_limits(limits: Limits) {
    MAX_DEPTH.store(limits.max_depth, Ordering::Relaxed);
}

/// The process-wide limits.
pub fn limits() -> Limits {
    Limits::new(MAX_DEPTH.load(Ordering::Relaxed))
}

impl From<YamlError> for Diagnostic {
    fn from(e: YamlError) -> Self {
        let layer = match e.kind {
            YamlErrorKind::Syntax => Layer::Syntax,
            YamlErrorKind::Fields => Layer::Fields,
        };
        let mut d = Diagnostic::error(layer, e.message).in_file(e.file).at(e.line, e.column);
        d.field = e.field;
        d.suggestion = e.suggestion;
        d.hint = e.hint;
        d
    }
}

/// [`catalog_yaml::syntax_check`] with the process-wide limits.
pub fn syntax_check(text: &str, file: &str) -> Result<serde_yaml_ng::Value, Diagnostic> {
    catalog_yaml::syntax_check(text, file, limits()).map_err(Diagnostic::from)
}

/// [`catalog_yaml::strict_parse`] with the process-wide limits.
pub fn strict_parse<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, Diagnostic> {
    catalog_yaml::strict_parse(text, file, limits()).map_err(Diagnostic::from)
}

/// [`catalog_yaml::strict_parse_list`] with the process-wide limits.
pub fn strict_parse_list<F, T>(
    text: &str,
    file: &str,
    key: &str,
    join: impl FnOnce(&mut F, Vec<T>),
) -> Result<F, Diagnostic>
where
    F: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned + Send,
{
    catalog_yaml::strict_parse_list(text, file, key, limits(), join).map_err(Diagnostic::from)
}
