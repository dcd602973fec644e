//! The source definition file read by `apply`, `diff` and `validate`:
//!
//! ```yaml
//! plugin: models                 # models | mcp
//! id: team_models
//! name: Team Models              # optional fields keep the server's current value
//! type: yaml
//! enabled: true
//! labels: [Team]
//! properties:
//!   yamlCatalogPath: team-models.yaml
//! contentFile: team-models.yaml  # the catalog YAML, relative to this file; or inline `content: |`
//! ```

use catalog_api::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use super::{CliError, Exit};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    plugin: String,
    id: String,
    name: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    enabled: Option<bool>,
    labels: Option<Vec<String>>,
    properties: Option<serde_yaml_ng::Mapping>,
    content: Option<String>,
    content_file: Option<PathBuf>,
    included_models: Option<Vec<String>>,
    excluded_models: Option<Vec<String>>,
}

pub struct SourceFile {
    pub plugin: String,
    /// The `SourceInput` to send.
    pub input: Value,
    /// Where server diagnostics about the content point: the content file, or this file plus
    /// the line offset of an inline `content: |` block.
    pub content_path: PathBuf,
    pub content_line_offset: u32,
    pub content_column_offset: u32,
}

pub fn load(path: &Path) -> Result<SourceFile, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            Exit::Validation,
            ErrorCode::ValidationFailed.as_str(),
            format!("{}: cannot read: {e}", path.display()),
        )
    })?;
    let raw: Raw = catalog_yaml::strict_parse(&text, &path.display().to_string(), catalog_yaml::Limits::default())
        .map_err(|d| CliError::new(Exit::Validation, ErrorCode::ValidationFailed.as_str(), d.render()))?;
    if raw.content.is_some() && raw.content_file.is_some() {
        return Err(CliError::new(
            Exit::Validation,
            ErrorCode::ValidationFailed.as_str(),
            format!("{}: give either `content` or `contentFile`, not both", path.display()),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let (content, content_path, line_offset, col_offset) = match (&raw.content, &raw.content_file) {
        (_, Some(f)) => {
            let p = base.join(f);
            let c = std::fs::read_to_string(&p).map_err(|e| {
                CliError::new(
                    Exit::Validation,
                    ErrorCode::ValidationFailed.as_str(),
                    format!("{}: contentFile {}: {e}", path.display(), p.display()),
                )
            })?;
            (Some(c), p, 0, 0)
        }
        (Some(c), None) => {
            let (line, col) = inline_offset(&text);
            (Some(c.clone()), path.to_path_buf(), line, col)
        }
        (None, None) => (None, path.to_path_buf(), 0, 0),
    };
    let properties = raw.properties.map(|m| serde_json::to_value(m).unwrap_or(Value::Null));
    let mut input = json!({"id": raw.id});
    let obj =
        input.as_object_mut().ok_or_else(|| CliError::new(Exit::Failed, ErrorCode::Internal.as_str(), "input"))?;
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            obj.insert(k.to_string(), v);
        }
    };
    put("name", raw.name.map(Value::from));
    put("type", raw.type_.map(Value::from));
    put("enabled", raw.enabled.map(Value::from));
    put("labels", raw.labels.map(|l| json!(l)));
    put("properties", properties);
    put("content", content.map(Value::from));
    put("includedModels", raw.included_models.map(|l| json!(l)));
    put("excludedModels", raw.excluded_models.map(|l| json!(l)));
    Ok(SourceFile {
        plugin: raw.plugin,
        input,
        content_path,
        content_line_offset: line_offset,
        content_column_offset: col_offset,
    })
}

/// For `content: |` (or `|-`), the line before the block and the block's indentation, so that
/// a diagnostic at content line L column C is at file line L + offset, column C + indent.
fn inline_offset(text: &str) -> (u32, u32) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_end();
        if let Some(rest) = t.strip_prefix("content:")
            && rest.trim().starts_with('|')
        {
            let indent = lines.get(i + 1).map(|n| n.len() - n.trim_start().len()).unwrap_or(0);
            return (u32::try_from(i + 1).unwrap_or(0), u32::try_from(indent).unwrap_or(0));
        }
    }
    (0, 0)
}
