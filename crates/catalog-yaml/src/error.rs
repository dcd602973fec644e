//! [`YamlError`]: what went wrong in a YAML text, where, and how to fix it. The catalog core
//! turns it into its own `Diagnostic` (the `Syntax` or `Fields` layer, by [`YamlErrorKind`]).

use std::fmt;

/// Which check refused the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlErrorKind {
    /// Not YAML at all, or nested deeper than the limit.
    Syntax,
    /// YAML, but not the expected shape: an unknown or missing field, a value of the wrong type.
    Fields,
}

/// A located YAML error. Every position is 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub kind: YamlErrorKind,
    pub message: String,
    /// The file (or logical document, e.g. `input.content`) the problem is in.
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// Field path such as `models[2].artifacts[0].uri`.
    pub field: Option<String>,
    /// The nearest known field name, for an unknown field.
    pub suggestion: Option<String>,
    /// How to fix it, in one sentence.
    pub hint: Option<String>,
}

impl YamlError {
    pub(crate) fn new(kind: YamlErrorKind, message: impl Into<String>, file: &str) -> Self {
        YamlError {
            kind,
            message: message.into(),
            file: file.to_string(),
            line: None,
            column: None,
            field: None,
            suggestion: None,
            hint: None,
        }
    }

    pub(crate) fn at(mut self, line: Option<u32>, column: Option<u32>) -> Self {
        self.line = line;
        self.column = column;
        self
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col: error: message (at field); did you mean `x`?; hint`: the compiler-style
    /// rendering, the same as the core's `Diagnostic::render`.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": error: {}", self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (at {field})")?;
        }
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean `{s}`?")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for YamlError {}

/// The Levenshtein distance between `a` and `b`, ignoring case.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `unknown`, if any is reasonably close.
pub fn nearest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, k)| *d <= (k.len().max(unknown.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}
