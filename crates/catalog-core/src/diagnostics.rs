//! Validation diagnostics: what is wrong, where (file, line, column, field path) and how to fix it.
//!
//! Every layer of validation produces [`Diagnostic`]s; a [`ValidationReport`] groups them per
//! layer so a UI can show "syntax ok, fields ok, semantics: 2 errors".

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Error,
    Warning,
}

/// The validation layers, in the order they run. A layer only runs when the ones before it
/// produced no error: strict field checks on text that is not YAML would only add noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Layer {
    Syntax,
    Fields,
    Semantics,
    Plugin,
    Security,
}

impl Layer {
    pub const ALL: [Layer; 5] = [Layer::Syntax, Layer::Fields, Layer::Semantics, Layer::Plugin, Layer::Security];
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub layer: Layer,
    pub severity: Severity,
    pub message: String,
    /// The file (or logical document, e.g. `input.content`) the problem is in.
    pub file: Option<String>,
    /// 1-based line and column, when the problem has a position in a document.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// Field path such as `models[2].artifacts[0].uri` or `input.id`.
    pub field: Option<String>,
    /// Nearest known field name, for unknown-field errors.
    pub suggestion: Option<String>,
    /// How to fix it, in one sentence.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(layer: Layer, message: impl Into<String>) -> Self {
        Diagnostic {
            layer,
            severity: Severity::Error,
            message: message.into(),
            file: None,
            line: None,
            column: None,
            field: None,
            suggestion: None,
            hint: None,
        }
    }

    pub fn warning(layer: Layer, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(layer, message) }
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn at(mut self, line: Option<u32>, column: Option<u32>) -> Self {
        self.line = line;
        self.column = column;
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col: error: message` — the compiler-style rendering used in logs and errors.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(file) = &self.file {
            out.push_str(file);
            if let Some(line) = self.line {
                out.push_str(&format!(":{line}"));
                if let Some(col) = self.column {
                    out.push_str(&format!(":{col}"));
                }
            }
            out.push_str(": ");
        }
        out.push_str(match self.severity {
            Severity::Error => "error: ",
            Severity::Warning => "warning: ",
        });
        out.push_str(&self.message);
        if let Some(field) = &self.field {
            out.push_str(&format!(" (at {field})"));
        }
        if let Some(s) = &self.suggestion {
            out.push_str(&format!("; did you mean `{s}`?"));
        }
        if let Some(h) = &self.hint {
            out.push_str(&format!("; {h}"));
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    pub layer: Layer,
    /// False when the layer found an error; layers after a failed one are `skipped`.
    pub passed: bool,
    pub skipped: bool,
    pub diagnostics: Vec<Diagnostic>,
}

/// The most diagnostics a report lists per layer; the rest are counted in one more.
pub const MAX_DIAGNOSTICS_PER_LAYER: usize = 200;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub layers: Vec<LayerReport>,
}

impl ValidationReport {
    /// Builds a report from a flat list, running layers in order: once a layer has an error the
    /// later layers are reported as skipped.
    /// At most [`MAX_DIAGNOSTICS_PER_LAYER`] diagnostics are kept per layer, plus one that says
    /// how many more there were: a hostile file must not turn into a huge report.
    pub fn from_diagnostics(diags: Vec<Diagnostic>) -> Self {
        let mut layers = Vec::new();
        let mut failed = false;
        for layer in Layer::ALL {
            let all: Vec<&Diagnostic> = diags.iter().filter(|d| d.layer == layer).collect();
            let mut mine: Vec<Diagnostic> = all.iter().take(MAX_DIAGNOSTICS_PER_LAYER).map(|d| (*d).clone()).collect();
            if all.len() > MAX_DIAGNOSTICS_PER_LAYER {
                let more = all.len() - MAX_DIAGNOSTICS_PER_LAYER;
                let errors = all.iter().skip(MAX_DIAGNOSTICS_PER_LAYER).any(|d| d.is_error());
                let message = format!("{more} more diagnostics of this layer are not shown");
                mine.push(if errors { Diagnostic::error(layer, message) } else { Diagnostic::warning(layer, message) });
            }
            let has_error = mine.iter().any(Diagnostic::is_error);
            layers.push(LayerReport { layer, passed: !failed && !has_error, skipped: failed, diagnostics: mine });
            failed |= has_error;
        }
        ValidationReport { layers }
    }

    pub fn valid(&self) -> bool {
        self.errors().next().is_none()
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.layers.iter().flat_map(|l| l.diagnostics.iter())
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics().filter(|d| !d.is_error())
    }

    /// One line per error, compiler style; used as the GraphQL error message.
    pub fn summary(&self) -> String {
        let errs: Vec<String> = self.errors().map(Diagnostic::render).collect();
        if errs.is_empty() { "valid".to_string() } else { errs.join("\n") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_are_skipped_after_an_error() {
        let report = ValidationReport::from_diagnostics(vec![
            Diagnostic::error(Layer::Fields, "unknown field"),
            Diagnostic::warning(Layer::Security, "inline secret"),
        ]);
        assert!(!report.valid());
        assert!(report.layers[0].passed);
        assert!(!report.layers[1].passed);
        assert!(report.layers[2].skipped);
    }
}
