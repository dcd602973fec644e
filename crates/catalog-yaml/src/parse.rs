//! The entry points every YAML text goes through: the depth guard first, then serde_yaml_ng (or,
//! for a large list, the splitter), with serde_yaml_ng's errors turned into [`YamlError`]s that
//! carry line, column, field path and the nearest known field name.

use crate::error::{YamlError, YamlErrorKind, nearest};
use crate::{Limits, depth, split};

/// Parses `text` as YAML without any schema: the syntax layer. The nesting guard runs first so a
/// deeply nested document never reaches the (superlinear) parser.
pub fn syntax_check(text: &str, file: &str, limits: Limits) -> Result<serde_yaml_ng::Value, YamlError> {
    depth::check(text, file, limits)?;
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).map_err(|e| {
        let (line, col) = location(&e);
        YamlError::new(YamlErrorKind::Syntax, format!("invalid YAML: {}", strip_location(&e.to_string())), file)
            .at(line, col)
            .hint("fix the YAML syntax (indentation, quoting, a missing ':' or '-')")
    })
}

/// Deserializes `text` into a strict (deny_unknown_fields) type: the fields layer.
/// Every YAML entry point (catalog files, URL bodies, the sources file, API content) ends up
/// here or in [`syntax_check`], which is why the depth guard sits in both.
pub fn strict_parse<T: serde::de::DeserializeOwned>(text: &str, file: &str, limits: Limits) -> Result<T, YamlError> {
    depth::check(text, file, limits)?;
    serde_yaml_ng::from_str::<T>(text).map_err(|e| from_serde_error(&e, file))
}

/// [`strict_parse`] for a file whose bulk is the block list under the top-level `key`: when
/// [`split`](crate::split) can, that list is parsed in pieces on several threads and handed to
/// `join` (the same value as the whole parse); otherwise, and whenever a piece fails, the whole
/// file is parsed as by `strict_parse`, so errors read exactly as they always did.
pub fn strict_parse_list<F, T>(
    text: &str,
    file: &str,
    key: &str,
    limits: Limits,
    join: impl FnOnce(&mut F, Vec<T>),
) -> Result<F, YamlError>
where
    F: serde::de::DeserializeOwned,
    T: serde::de::DeserializeOwned + Send,
{
    // Pieces nest two levels less than the whole file: past serde_yaml_ng's own recursion
    // limit (128) the two would disagree, so a deployer's very high depth limit parses whole.
    if limits.max_depth > 100 || text.len() < split::MIN_SPLIT_BYTES {
        depth::check(text, file, limits)?;
        return serde_yaml_ng::from_str::<F>(text).map_err(|e| from_serde_error(&e, file));
    }
    // A large file: the depth scan (one sequential pass) runs beside the split parse, whose
    // pieces are bounded on their own (the subset reader's depth cap, serde_yaml_ng's recursion
    // limit); a file over the limit is refused all the same and its pieces' values dropped.
    // The whole-file parse, the one the limit protects, still runs only after the scan passed.
    let (depth, split) = std::thread::scope(|s| {
        let depth = s.spawn(|| depth::check(text, file, limits));
        let split = split::parse_list::<F, T>(text, key);
        (depth.join().unwrap_or_else(|_| depth::check(text, file, limits)), split)
    });
    depth?;
    if let Some((mut rest, items)) = split {
        join(&mut rest, items);
        return Ok(rest);
    }
    serde_yaml_ng::from_str::<F>(text).map_err(|e| from_serde_error(&e, file))
}

fn location(e: &serde_yaml_ng::Error) -> (Option<u32>, Option<u32>) {
    match e.location() {
        Some(loc) => (u32::try_from(loc.line()).ok(), u32::try_from(loc.column()).ok()),
        None => (None, None),
    }
}

/// serde_yaml_ng appends " at line X column Y" to messages; we carry those separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A serde_yaml_ng error as a located [`YamlError`] of kind `Fields`.
pub fn from_serde_error(e: &serde_yaml_ng::Error, file: &str) -> YamlError {
    let (line, col) = location(e);
    let full = strip_location(&e.to_string());
    // Messages look like "models[0].artifacts[1]: unknown field `urii`, expected one of `uri`, ..."
    let (path, msg) = match full.find(": ") {
        Some(i) if !full[..i].contains(' ') => (Some(full[..i].to_string()), full[i + 2..].to_string()),
        _ => (None, full.clone()),
    };
    let mut d = YamlError::new(YamlErrorKind::Fields, msg.clone(), file).at(line, col);
    if let Some(unknown) = between_backticks(&msg, "unknown field `") {
        let known = expected_names(&msg);
        d.suggestion = nearest(&unknown, known.iter().map(String::as_str));
        let field = match &path {
            Some(p) => format!("{p}.{unknown}"),
            None => unknown.clone(),
        };
        d.field = Some(field);
        d.hint = Some(match &d.suggestion {
            Some(s) => format!("rename `{unknown}` to `{s}`, or remove it"),
            None => format!("remove `{unknown}`; known fields: {}", known.join(", ")),
        });
        d.message = format!("unknown field `{unknown}`");
    } else {
        d.field = path;
        if msg.starts_with("missing field") {
            d.hint = Some("add the missing field".to_string());
        } else if msg.starts_with("invalid type") {
            d.hint = Some("change the value to the expected type".to_string());
        }
    }
    d
}

fn between_backticks(msg: &str, prefix: &str) -> Option<String> {
    let start = msg.find(prefix)? + prefix.len();
    let end = msg[start..].find('`')? + start;
    Some(msg[start..end].to_string())
}

fn expected_names(msg: &str) -> Vec<String> {
    let Some(i) = msg.find("expected ") else {
        return Vec::new();
    };
    msg[i..].split('`').enumerate().filter(|(n, _)| n % 2 == 1).map(|(_, s)| s.to_string()).collect()
}

/// A 1-based (line, column), when known.
pub type Position = (Option<u32>, Option<u32>);

/// Every `key: value` line of `text`, by value, with its (line, column), in one pass: for
/// locating many values (e.g. every duplicate name) without rescanning the text per value.
/// Best effort, for semantic errors found after parsing (duplicate names, bad values).
pub fn key_value_positions<'t>(text: &'t str, key: &str) -> std::collections::HashMap<&'t str, Vec<Position>> {
    let mut out: std::collections::HashMap<&str, Vec<Position>> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(rest) = trimmed.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
            continue;
        };
        let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        let col = line.len() - trimmed.len() + 1;
        out.entry(v).or_default().push((u32::try_from(i + 1).ok(), u32::try_from(col).ok()));
    }
    out
}

/// The position of the `nth` (0-based) `key: value` line of `text`, best effort.
pub fn find_key_value(text: &str, key: &str, value: &str, nth: usize) -> Position {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(rest) = trimmed.strip_prefix(key) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let v = rest.trim().trim_matches(|c| c == '"' || c == '\'');
        if v == value {
            if seen == nth {
                let col = line.len() - trimmed.len() + 1;
                return (u32::try_from(i + 1).ok(), u32::try_from(col).ok());
            }
            seen += 1;
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[expect(dead_code, reason = "only the shape matters: parsed to provoke errors")]
        models: Vec<M>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only the shape matters: parsed to provoke errors")]
    struct M {
        name: String,
        license: Option<String>,
    }

    #[test]
    fn unknown_field_has_position_path_and_suggestion() {
        let text = "models:\n  - name: a\n    licence: x\n";
        let d = strict_parse::<Doc>(text, "cat.yaml", Limits::default()).unwrap_err();
        assert_eq!(d.line, Some(3));
        assert_eq!(d.column, Some(5));
        assert_eq!(d.field.as_deref(), Some("models[0].licence"));
        assert_eq!(d.suggestion.as_deref(), Some("license"));
        assert!(d.render().starts_with("cat.yaml:3:5: error: unknown field `licence`"), "{}", d.render());
    }

    #[test]
    fn syntax_error_has_position() {
        let d = syntax_check("models:\n  - name: [a\n", "x.yaml", Limits::default()).unwrap_err();
        assert_eq!(d.kind, YamlErrorKind::Syntax);
        assert!(d.line.is_some());
    }

    #[test]
    fn suggests_the_closest_known_field() {
        let known = ["name", "description", "provider", "license", "licenseLink"];
        assert_eq!(nearest("licenceLink", known).as_deref(), Some("licenseLink"));
        assert_eq!(nearest("descripton", known).as_deref(), Some("description"));
        assert_eq!(nearest("zzzzzzzzzzzz", known), None);
    }
}
