//! The `models` plugin: Kubeflow model catalogs (`source:` + `models:`).
//!
//! Field names follow upstream's `CatalogModel` exactly; anything else is an unknown-field error
//! (ODH-only fields such as `validatedTasks` included: this is the strict Kubeflow loader).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

use super::locate;
use super::{Entity, Loaded, unique_names};
use crate::catalog::diagnostics::{Diagnostic, Layer};
use crate::catalog::yamlerr::{find_key_value, strict_parse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelCatalogFile {
    #[allow(dead_code)]
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

/// `customProperties`: read as a map (same errors, key order and last-key-wins as a `BTreeMap`),
/// kept as an exact-size sorted slice. Why not the `BTreeMap` itself: a map node reserves room
/// for 11 entries of ~200 bytes, ~2.5 KB per model for its one or two properties, which was most
/// of a 100k-model snapshot's memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomProperties(Box<[(String, MetadataValue)]>);

impl CustomProperties {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &MetadataValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for CustomProperties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for CustomProperties {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, MetadataValue>::deserialize(d)?;
        Ok(CustomProperties(map.into_iter().collect()))
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelArtifact {
    pub uri: Option<String>,
    pub artifact_type: Option<String>,
    pub metrics_type: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub external_id: Option<String>,
    #[serde(default)]
    pub custom_properties: Option<CustomProperties>,
    pub create_time_since_epoch: Option<String>,
    pub last_update_time_since_epoch: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Model {
    pub name: String,
    pub id: Option<String>,
    pub external_id: Option<String>,
    pub description: Option<String>,
    pub readme: Option<String>,
    pub maturity: Option<String>,
    pub language: Option<Vec<String>>,
    pub tasks: Option<Vec<String>>,
    pub provider: Option<String>,
    pub logo: Option<String>,
    pub license: Option<String>,
    pub license_link: Option<String>,
    pub library_name: Option<String>,
    pub custom_properties: Option<CustomProperties>,
    pub create_time_since_epoch: Option<String>,
    pub last_update_time_since_epoch: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<ModelArtifact>,
}

const METRICS_TYPES: [&str; 2] = ["performance-metrics", "accuracy-metrics"];
const ARTIFACT_TYPES: [&str; 2] = ["model-artifact", "metrics-artifact"];

pub fn load(text: &str, file: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let doc: ModelCatalogFile = strict_parse(text, file).map_err(|d| vec![d])?;
    let models = doc.models.unwrap_or_default();
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
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
            // Lists grow by doubling while parsing: trim them, the snapshot keeps them for long.
            let mut m = m;
            m.artifacts.shrink_to_fit();
            for list in [&mut m.tasks, &mut m.language].into_iter().flatten() {
                list.shrink_to_fit();
            }
            entities.push(Entity::Model(Box::new(m)));
        }
    }
    Ok(Loaded { entities, diagnostics })
}
