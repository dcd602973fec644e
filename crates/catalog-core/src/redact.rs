//! Secret handling: finding inline secrets and redacting them from everything the API returns.
//!
//! A key "looks secret" when it contains password, token, secret, apikey, api_key or credential
//! (case-insensitive) and is not itself a reference (`...EnvVar`, `...Ref`, `...File`, `...Path`).

use serde_json::Value as Json;

pub const REDACTED: &str = "<redacted>";
const PATTERNS: [&str; 6] = ["password", "token", "secret", "apikey", "api_key", "credential"];
const REFERENCE_SUFFIXES: [&str; 5] = ["envvar", "ref", "file", "path", "name"];

pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_lowercase();
    PATTERNS.iter().any(|p| k.contains(p)) && !REFERENCE_SUFFIXES.iter().any(|s| k.ends_with(s))
}

/// Redacts secret-looking keys in a JSON value (source `properties`). Objects under a secret key
/// are kept: they are references such as `{secretRef: {name, namespace, key}}`, not secrets.
pub fn redact_json(v: &Json) -> Json {
    match v {
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match v {
                        _ if !is_secret_key(k) => redact_json(v),
                        Json::Null => Json::Null,
                        Json::Object(_) if is_reference(v) => v.clone(),
                        // A typed value such as {metadataType, string_value}: hide every value.
                        Json::Object(_) | Json::Array(_) => redact_all(v),
                        _ => Json::String(REDACTED.to_string()),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(redact_json).collect()),
        other => other.clone(),
    }
}

/// `{secretRef: {...}}`, `{name, key}` / `{name, namespace, key}`, `{valueFrom: ...}`, `{envVar}`:
/// pointers to a secret, safe to show.
fn is_reference(v: &Json) -> bool {
    let Json::Object(m) = v else { return false };
    m.contains_key("secretRef")
        || m.contains_key("valueFrom")
        || m.contains_key("envVar")
        || (m.contains_key("name")
            && m.contains_key("key")
            && m.keys().all(|k| ["name", "namespace", "key"].contains(&k.as_str())))
}

fn redact_all(v: &Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if k == "metadataType" { v.clone() } else { redact_all(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(redact_all).collect()),
        Json::Null => Json::Null,
        _ => Json::String(REDACTED.to_string()),
    }
}

/// A secret-looking key with an inline value in a YAML text.
#[derive(Debug, PartialEq)]
pub struct InlineSecret {
    pub key: String,
    pub line: u32,
    pub column: u32,
}

/// Line-oriented scan of YAML text. For `key: value` the value is the secret; for `key:` followed
/// by a nested block (e.g. a typed `customProperties` value), every scalar in the block is.
fn scan(text: &str, mut on_secret: impl FnMut(usize, usize, &str)) {
    let mut nested_under: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(ind) = nested_under {
            if indent > ind {
                if let Some((k, v)) = key_value(body)
                    && !v.is_empty()
                    && k != "metadataType"
                {
                    on_secret(i, indent, body);
                }
                continue;
            }
            nested_under = None;
        }
        let item = body.strip_prefix("- ").unwrap_or(body);
        let Some((key, value)) = key_value(item) else {
            continue;
        };
        if !is_secret_key(key) {
            continue;
        }
        if value.is_empty() {
            nested_under = Some(indent);
        } else if !value.starts_with('{') && !value.starts_with('|') && !value.starts_with('>') {
            on_secret(i, indent + (body.len() - item.len()), item);
        }
    }
}

/// `key: value` with a plain identifier key.
fn key_value(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let key = &s[..colon];
    let rest = &s[colon + 1..];
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return None;
    }
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let value = rest.trim();
    let value = match value.find(" #") {
        Some(i) => value[..i].trim(),
        None => value,
    };
    Some((key, value))
}

pub fn find_inline_secrets(text: &str) -> Vec<InlineSecret> {
    let mut out = Vec::new();
    scan(text, |i, col, item| {
        let key = item.split(':').next().unwrap_or_default().to_string();
        out.push(InlineSecret {
            key,
            line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            column: u32::try_from(col + 1).unwrap_or(u32::MAX),
        });
    });
    out
}

/// The text with each inline secret value replaced by [`REDACTED`].
pub fn redact_yaml_text(text: &str) -> String {
    let mut hits = std::collections::HashSet::new();
    scan(text, |i, _, _| {
        hits.insert(i);
    });
    if hits.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if hits.contains(&i) {
            let colon = line.find(':').unwrap_or(line.len().saturating_sub(1));
            let nl = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&line[..colon]);
            out.push_str(": ");
            out.push_str(REDACTED);
            out.push_str(nl);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(is_secret_key("password"));
        assert!(is_secret_key("hfApiKey"));
        assert!(is_secret_key("api_key"));
        assert!(is_secret_key("AUTH_TOKEN"));
        assert!(!is_secret_key("apiKeyEnvVar"));
        assert!(!is_secret_key("tokenSecretRef"));
        assert!(!is_secret_key("yamlCatalogPath"));
    }

    #[test]
    fn redacts_json_but_keeps_references() {
        let v = serde_json::json!({"yamlCatalogPath": "a.yaml", "apiToken": "abc", "password": {"secretRef": {"name": "s", "key": "k"}}});
        let r = redact_json(&v);
        assert_eq!(r["apiToken"], REDACTED);
        assert_eq!(r["yamlCatalogPath"], "a.yaml");
        assert_eq!(r["password"]["secretRef"]["name"], "s");
        let typed = serde_json::json!({"api_token": {"metadataType": "MetadataStringValue", "string_value": "x"}});
        assert_eq!(redact_json(&typed)["api_token"]["string_value"], REDACTED);
        assert_eq!(redact_json(&typed)["api_token"]["metadataType"], "MetadataStringValue");
    }

    #[test]
    fn finds_and_redacts_inline_secrets_in_yaml() {
        let text = "models:\n  - name: m\n    customProperties:\n      api_token:\n        string_value: hunter2\n        metadataType: MetadataStringValue\n      password: s3cret # inline\n      other: fine\n";
        let found = find_inline_secrets(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[1], InlineSecret { key: "password".into(), line: 7, column: 7 });
        let red = redact_yaml_text(text);
        assert!(!red.contains("hunter2") && !red.contains("s3cret"), "{red}");
        assert!(red.contains("other: fine"));
        assert!(red.contains("metadataType: MetadataStringValue"));
        assert!(red.contains("      password: <redacted>\n"));
    }
}
