//! The `models` plugin: Kubeflow model catalogs (`source:` + `models:`).
//!
//! Field names follow upstream's `CatalogModel` exactly; anything else is an unknown-field error
//! (ODH-only fields such as `validatedTasks` included: this is the strict Kubeflow loader).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

use super::locate;
use super::{Entity, Loaded, unique_names};
use crate::diagnostics::{Diagnostic, Layer};
use crate::yaml::{find_key_value, strict_parse_list};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelCatalogFile {
    #[expect(dead_code, reason = "a catalog file's `source:` label is accepted, the entry names the source")]
    source: Option<String>,
    #[serde(default)]
    models: Option<Vec<Model>>,
}

/// A typed metadata value: `{metadataType: MetadataStringValue, string_value: "x"}` and friends.
/// `metadataType` may be missing (upstream infers it from the value key).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataValue {
    #[serde(rename = "metadataType", skip_serializing_if = "Option::is_none")]
    pub metadata_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub int_value: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub double_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bool_value: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub struct_value: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto_value: Option<Json>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// `customProperties`: read as a map of [`MetadataValue`]s (same errors, key order and
/// last-key-wins as a `BTreeMap`), kept as the map's JSON text. Why not the typed map: a
/// `MetadataValue` is ~190 bytes for what is usually one short string, and a `BTreeMap` node
/// reserves room for 11 entries, ~2.5 KB per model for its one or two properties; as text a
/// typical property is ~70 bytes, which matters with 100k models in memory. The text is
/// canonical (sorted keys, fields in declaration order, absent fields left out), so equal
/// properties have equal text and equality is a string comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomProperties(Box<str>);

impl CustomProperties {
    /// The properties as JSON (`{key: {metadataType, string_value, ...}}`).
    pub fn to_json(&self) -> Json {
        // The text was written by `serde_json` from the typed map: it always parses back.
        serde_json::from_str(&self.0).unwrap_or(Json::Null)
    }

    /// The JSON text (canonical, see the type's docs).
    pub fn as_json_text(&self) -> &str {
        &self.0
    }
}

impl Serialize for CustomProperties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for CustomProperties {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, MetadataValue>::deserialize(d)?;
        let text = serde_json::to_string(&map).map_err(serde::de::Error::custom)?;
        Ok(CustomProperties(text.into_boxed_str()))
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelArtifact {
    pub uri: Option<Box<str>>,
    pub artifact_type: Option<Box<str>>,
    pub metrics_type: Option<Box<str>>,
    pub name: Option<Box<str>>,
    pub description: Option<Box<str>>,
    pub external_id: Option<Box<str>>,
    #[serde(default)]
    pub custom_properties: Option<CustomProperties>,
    pub create_time_since_epoch: Option<Box<str>>,
    pub last_update_time_since_epoch: Option<Box<str>>,
}

/// A model as the snapshot keeps it. Text is `Box<str>` and lists are boxed slices, not
/// `String`/`Vec`: exact-size, 8 bytes less per field, and a model has 17 of them (most absent)
/// plus its artifacts' 8 each; with 100k models that is ~25 MB.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Model {
    pub name: Box<str>,
    pub id: Option<Box<str>>,
    pub external_id: Option<Box<str>>,
    pub description: Option<Box<str>>,
    pub readme: Option<Box<str>>,
    pub maturity: Option<Box<str>>,
    pub language: Option<Box<[Box<str>]>>,
    pub tasks: Option<Box<[Box<str>]>>,
    pub provider: Option<Box<str>>,
    pub logo: Option<Box<str>>,
    pub license: Option<Box<str>>,
    pub license_link: Option<Box<str>>,
    pub library_name: Option<Box<str>>,
    pub custom_properties: Option<CustomProperties>,
    pub create_time_since_epoch: Option<Box<str>>,
    pub last_update_time_since_epoch: Option<Box<str>>,
    #[serde(default)]
    pub artifacts: Box<[ModelArtifact]>,
}

const METRICS_TYPES: [&str; 2] = ["performance-metrics", "accuracy-metrics"];
const ARTIFACT_TYPES: [&str; 2] = ["model-artifact", "metrics-artifact"];

pub fn load(text: &str, file: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let doc: ModelCatalogFile =
        strict_parse_list(text, file, "models", |doc: &mut ModelCatalogFile, models| doc.models = Some(models))
            .map_err(|d| vec![d])?;
    let models = doc.models.unwrap_or_default();
    let names: Vec<&str> = models.iter().map(|m| &*m.name).collect();
    let (keep, mut diagnostics) = unique_names(&names, text, file, "models");
    let mut entities = Vec::with_capacity(keep.len());
    // The parsed models are moved into the entities, not cloned: a 100k-model catalog would
    // otherwise be held twice at the peak of a refresh.
    let mut models: Vec<Option<Model>> = models.into_iter().map(Some).collect();
    for i in keep {
        let Some(m) = models[i].take() else { continue };
        let mut ok = true;
        for (j, a) in m.artifacts.iter().enumerate() {
            let field = format!("models[{i}].artifacts[{j}]");
            let kind = a.artifact_type.as_deref().unwrap_or("model-artifact");
            if !ARTIFACT_TYPES.contains(&kind) {
                let (line, col) = locate(&diagnostics, || find_key_value(text, "artifactType", kind, 0));
                diagnostics.push(
                    Diagnostic::error(Layer::Plugin, format!("unknown artifactType `{kind}` in model `{}`", m.name))
                        .in_file(file)
                        .at(line, col)
                        .field(format!("{field}.artifactType"))
                        .hint("use `model-artifact` or `metrics-artifact`"),
                );
                ok = false;
            }
            if kind == "model-artifact" && a.uri.as_deref().is_none_or(|u| u.trim().is_empty()) {
                diagnostics.push(
                    Diagnostic::error(Layer::Plugin, format!("model artifact without `uri` in model `{}`", m.name))
                        .in_file(file)
                        .field(format!("{field}.uri"))
                        .hint("a model-artifact needs the URI it can be pulled from"),
                );
                ok = false;
            }
            if kind == "metrics-artifact" {
                match a.metrics_type.as_deref() {
                    None => diagnostics.push(
                        Diagnostic::warning(
                            Layer::Plugin,
                            format!("metrics artifact without `metricsType` in model `{}`", m.name),
                        )
                        .in_file(file)
                        .field(format!("{field}.metricsType"))
                        .hint("set `performance-metrics` or `accuracy-metrics`"),
                    ),
                    Some(t) if !METRICS_TYPES.contains(&t) => {
                        let (line, col) = locate(&diagnostics, || find_key_value(text, "metricsType", t, 0));
                        diagnostics.push(
                            Diagnostic::error(
                                Layer::Plugin,
                                format!("unknown metricsType `{t}` in model `{}`", m.name),
                            )
                            .in_file(file)
                            .at(line, col)
                            .field(format!("{field}.metricsType"))
                            .hint("use `performance-metrics` or `accuracy-metrics`"),
                        );
                        ok = false;
                    }
                    Some(_) => {}
                }
            }
        }
        if ok {
            entities.push(Entity::Model(Box::new(m)));
        }
    }
    Ok(Loaded { entities, diagnostics })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> CustomProperties {
        let doc = format!("models:\n  - name: m\n    customProperties:\n{text}");
        let loaded = load(&doc, "t.yaml").expect("load");
        match loaded.entities.into_iter().next() {
            Some(Entity::Model(m)) => m.custom_properties.expect("properties"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn custom_properties_are_canonical_text_and_exact() {
        let a = props(
            "      b:\n        double_value: 0.30000000000000004\n      a:\n        metadataType: MetadataDoubleValue\n        double_value: 4.9e-324\n",
        );
        let b = props(
            "      a:\n        double_value: 4.9e-324\n        metadataType: MetadataDoubleValue\n      b:\n        double_value: 0.30000000000000004\n",
        );
        // Same properties in another key order: equal (a string comparison).
        assert_eq!(a, b);
        assert_eq!(
            a.as_json_text(),
            r#"{"a":{"metadataType":"MetadataDoubleValue","double_value":5e-324},"b":{"double_value":0.30000000000000004}}"#
        );
        let json = a.to_json();
        assert_eq!(json["b"]["double_value"].as_f64(), Some(0.1 + 0.2));
        assert_eq!(json["a"]["double_value"].as_f64(), Some(f64::from_bits(1)));
        assert_ne!(a, props("      b:\n        double_value: 0.3\n"));
    }

    #[test]
    fn custom_property_errors_are_still_field_errors() {
        let err = load("models:\n  - name: m\n    customProperties:\n      a:\n        strng_value: x\n", "t.yaml")
            .expect_err("unknown field");
        assert!(err[0].message.contains("strng_value"), "{:?}", err[0]);
    }

    /// A catalog past the split threshold, `n` models, the `bad`th with an unknown field.
    fn large(n: usize, bad: Option<usize>) -> String {
        let mut s = String::from("source: Large\nmodels:\n");
        for i in 0..n {
            s.push_str(&format!(
                "  - name: m{i}\n    description: \"model {i}: it's\\nquoted\"\n    tasks: [a, b]\n    readme: |\n      - a line like an item\n    customProperties:\n      size: {{metadataType: MetadataIntValue, int_value: \"{i}\"}}\n    artifacts:\n      - uri: oci://r.example.com/m{i}:1\n"
            ));
            if bad == Some(i) {
                s.push_str("    descriptin: typo\n");
            }
        }
        assert!(s.len() > catalog_yaml::split::MIN_SPLIT_BYTES * 2);
        s
    }

    #[test]
    fn a_large_catalog_loads_what_the_whole_parse_reads() {
        let text = large(3000, None);
        let whole: ModelCatalogFile = serde_yaml_ng::from_str(&text).expect("whole parse");
        // This file takes the split path (the test would prove nothing otherwise).
        assert!(catalog_yaml::split::parse_list::<ModelCatalogFile, Model>(&text, "models").is_some());
        let loaded = load(&text, "large.yaml").expect("load");
        let names: Vec<&str> = loaded.entities.iter().map(Entity::name).collect();
        assert_eq!(names.len(), 3000);
        let whole_models = whole.models.expect("models");
        assert_eq!(names, whole_models.iter().map(|m| &*m.name).collect::<Vec<_>>());
        for (e, w) in loaded.entities.iter().zip(&whole_models) {
            assert_eq!(e, &Entity::Model(Box::new(w.clone())));
        }
    }

    #[test]
    fn an_error_deep_in_a_large_catalog_reads_as_from_the_whole_parse() {
        let text = large(3000, Some(2500));
        let whole = match serde_yaml_ng::from_str::<ModelCatalogFile>(&text) {
            Err(e) => crate::diagnostics::Diagnostic::from(catalog_yaml::from_serde_error(&e, "large.yaml")),
            Ok(_) => panic!("the whole parse must fail"),
        };
        let err = load(&text, "large.yaml").expect_err("unknown field");
        assert_eq!(err, vec![whole]);
        assert_eq!(err[0].field.as_deref(), Some("models[2500].descriptin"), "{:?}", err[0]);
        assert!(err[0].line.is_some_and(|l| l > 20_000), "{:?}", err[0]);
    }
}
