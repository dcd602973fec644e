//! Property tests (proptest) over the YAML parsers, the validator and the sources-file splice.
//!
//! Why: the parsers face text written by people and by attackers (issue 8, "Trust at the edge"),
//! and the splice is what lets us promise that unknown sections and comments survive a write.
//! Example-based tests cover the shapes we thought of; these generate the shapes we did not:
//! - nothing panics on arbitrary text, or on valid documents of every format (both sources
//!   dialects, model catalogs, both MCP formats) mutated line by line (lines deleted, duplicated,
//!   re-indented, unknown keys inserted, random unicode spliced in);
//! - `with_entry` changes only the target entry's bytes: every line outside that entry's range
//!   is byte-identical, the result parses back with the entry equal to the one written, and every
//!   other entry is unchanged.
//!
//! The case count is modest by default (64 per property) so the suite stays fast; set
//! `PROPTEST_CASES` to run more (proptest reads it for every property here).

use std::path::Path;

use catalog_core::PluginKind;
use catalog_core::models::Model;
use catalog_core::{Dialect, SourceEntry, SourcesFile};
use catalog_core::{SourceDraft, validate_source as check};
use catalog_yaml::split::parse_in_pieces;
use catalog_yaml::subset as yaml_subset;
use catalog_yaml::{Limits, syntax_check};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_yaml_ng::{Mapping, Value};

/// 64 cases per property unless `PROPTEST_CASES` says otherwise.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    // No regression files: a failure prints its minimal input, which goes into a unit test.
    Config { cases, failure_persistence: None, ..Config::default() }
}

const SOURCES_PATH: &str = "/catalog/sources.yaml";

// ---- generators ----------------------------------------------------------------------------

/// A YAML double-quoted scalar for `s` (JSON string syntax is valid YAML here).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"x\"".to_string())
}

fn id_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,10}"
}

/// Display names: any printable unicode, but not blank (a blank name is a validation error).
fn name_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][\\PC]{0,16}"
}

fn label_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9 _-]{0,8}"
}

fn glob_strategy() -> impl Strategy<Value = String> {
    "[a-z*][a-z0-9/*-]{0,8}"
}

/// A valid source entry (the splice is only ever asked to write valid entries).
fn entry_strategy() -> impl Strategy<Value = SourceEntry> {
    (
        id_strategy(),
        name_strategy(),
        any::<bool>(),
        prop::collection::vec(label_strategy(), 0..3),
        "[a-z][a-z0-9-]{0,10}\\.yaml",
        prop::option::of(prop::collection::vec(glob_strategy(), 1..3)),
        prop::option::of(prop::collection::vec(glob_strategy(), 1..3)),
        prop::option::of(("[a-zA-Z]{1,8}", "[a-zA-Z0-9 ]{0,10}")),
    )
        .prop_map(|(id, name, enabled, labels, path, inc, exc, extra)| {
            let mut properties = Mapping::new();
            properties.insert("yamlCatalogPath".into(), path.into());
            if let Some((k, v)) = extra
                && k != "yamlCatalogPath"
            {
                properties.insert(Value::String(k), Value::String(v));
            }
            // A pattern in both lists is a validation error; keep the lists disjoint.
            let exc = match (&inc, exc) {
                (Some(i), Some(e)) => {
                    let e: Vec<String> = e.into_iter().filter(|p| !i.contains(p)).collect();
                    (!e.is_empty()).then_some(e)
                }
                (_, e) => e,
            };
            SourceEntry {
                id,
                name,
                type_: "yaml".into(),
                enabled,
                labels,
                properties,
                included_models: inc,
                excluded_models: exc,
                asset_type: None,
                refresh_interval: None,
                suspended: false,
            }
        })
}

/// How one entry is written by hand: field order, flow or block labels, a comment inside.
#[derive(Clone, Debug)]
struct Style {
    id_first: bool,
    flow_labels: bool,
    inner_comment: bool,
    write_enabled: bool,
}

fn style_strategy() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(id_first, flow_labels, inner_comment, write_enabled)| Style {
            id_first,
            flow_labels,
            inner_comment,
            write_enabled,
        },
    )
}

/// Renders `e` as a block sequence item at `indent`, the way a person might write it.
fn render_entry(e: &SourceEntry, s: &Style, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    let inner = " ".repeat(indent + 2);
    let mut fields = Vec::new();
    let id = format!("id: {}", e.id);
    let name = format!("name: {}", quoted(&e.name));
    if s.id_first {
        fields.push(id);
        fields.push(name);
    } else {
        fields.push(name);
        fields.push(id);
    }
    fields.push("type: yaml".into());
    if s.write_enabled || !e.enabled {
        fields.push(format!("enabled: {}", e.enabled));
    }
    if s.inner_comment {
        fields.push("# a comment inside the entry".into());
    }
    if !e.labels.is_empty() {
        if s.flow_labels {
            let ls: Vec<String> = e.labels.iter().map(|l| quoted(l)).collect();
            fields.push(format!("labels: [{}]", ls.join(", ")));
        } else {
            fields.push("labels:".into());
            for l in &e.labels {
                fields.push(format!("  - {}", quoted(l)));
            }
        }
    }
    fields.push("properties:".into());
    for (k, v) in &e.properties {
        let k = k.as_str().unwrap_or("k");
        let v = v.as_str().unwrap_or("");
        fields.push(format!("  {k}: {}", quoted(v)));
    }
    for (key, list) in [("includedModels", &e.included_models), ("excludedModels", &e.excluded_models)] {
        if let Some(list) = list {
            fields.push(format!("{key}:"));
            for p in list {
                fields.push(format!("  - {}", quoted(p)));
            }
        }
    }
    let mut out = Vec::new();
    for (i, f) in fields.into_iter().enumerate() {
        if i == 0 {
            out.push(format!("{pad}- {f}\n"));
        } else {
            out.push(format!("{inner}{f}\n"));
        }
    }
    out
}

/// A generated sources file, with the line range of every entry it holds.
#[derive(Clone, Debug)]
struct GenFile {
    dialect: Dialect,
    lines: Vec<String>,
    /// (plugin, id, line range of the entry) in file order.
    ranges: Vec<(PluginKind, String, std::ops::Range<usize>)>,
    /// Plugins whose empty section is a flow list: adding to it rewrites that one key line.
    flow_sections: Vec<PluginKind>,
}

impl GenFile {
    fn text(&self) -> String {
        self.lines.concat()
    }
}

#[derive(Clone, Debug)]
struct FileSpec {
    sectioned: bool,
    models: Vec<(SourceEntry, Style)>,
    mcp: Vec<(SourceEntry, Style)>,
    head_comment: bool,
    comments_between: bool,
    unknown_first: bool,
    deprecated_key: bool,
    unknown_text: String,
    /// Windows line endings throughout.
    crlf: bool,
    /// The last line has no line terminator.
    no_final_newline: bool,
    /// An empty plugin section is written as a flow list (`mcp_catalogs: []`).
    empty_flow: bool,
    /// Sequence items at their key's own indentation (`model_catalogs:\n- name: x`).
    zero_indent: bool,
    /// The file starts with a `---` document marker.
    doc_marker: bool,
    /// The models section key is written quoted (`"model_catalogs":`), which YAML reads as the
    /// same key (regression: the splice used to add a second section).
    quoted_key: bool,
}

fn file_spec_strategy() -> impl Strategy<Value = FileSpec> {
    (
        any::<bool>(),
        prop::collection::vec((entry_strategy(), style_strategy()), 0..4),
        prop::collection::vec((entry_strategy(), style_strategy()), 0..4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        "[\\PC]{0,12}",
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |(
                sectioned,
                models,
                mcp,
                head_comment,
                comments_between,
                unknown_first,
                deprecated_key,
                t,
                shape,
                quoted_key,
            )| {
                // Ids are unique within a plugin (a duplicate is a validation error).
                let dedup = |list: Vec<(SourceEntry, Style)>| {
                    let mut seen = std::collections::HashSet::new();
                    list.into_iter().filter(|(e, _)| seen.insert(e.id.clone())).collect::<Vec<_>>()
                };
                FileSpec {
                    sectioned,
                    models: dedup(models),
                    mcp: dedup(mcp),
                    head_comment,
                    comments_between,
                    unknown_first,
                    deprecated_key,
                    unknown_text: t,
                    crlf: shape.0,
                    no_final_newline: shape.1,
                    empty_flow: shape.2,
                    zero_indent: shape.3,
                    doc_marker: shape.4,
                    quoted_key,
                }
            },
        )
}

fn build_file(spec: &FileSpec) -> GenFile {
    let mut lines: Vec<String> = Vec::new();
    let mut ranges = Vec::new();
    if spec.doc_marker {
        lines.push("---\n".into());
    }
    if spec.head_comment {
        lines.push("# sources file written by hand — ünïcödé comment\n".into());
    }
    let unknown_kubeflow = |lines: &mut Vec<String>| {
        lines.push("agent_catalogs:\n".into());
        lines.push("  - name: Agents   # keep me\n".into());
        lines.push("    id: agents\n".into());
        lines.push(format!("    note: {}\n", quoted(&spec.unknown_text)));
        lines.push("namedQueries:\n".into());
        lines.push("  recent: {assetType: models, orderBy: name}\n".into());
        lines.push("\n".into());
    };
    let section = |lines: &mut Vec<String>,
                   ranges: &mut Vec<(PluginKind, String, std::ops::Range<usize>)>,
                   plugin: PluginKind,
                   list: &[(SourceEntry, Style)],
                   key_line: String,
                   indent: usize| {
        if list.is_empty() {
            if spec.empty_flow {
                lines.push(key_line.replace(":\n", ": []\n"));
            }
            return;
        }
        lines.push(key_line);
        for (i, (e, s)) in list.iter().enumerate() {
            if spec.comments_between && i > 0 {
                lines.push(format!("{}# about {}\n", " ".repeat(indent), e.id));
            }
            let start = lines.len();
            lines.extend(render_entry(e, s, indent));
            ranges.push((plugin, e.id.clone(), start..lines.len()));
        }
        lines.push("\n".into());
    };
    if spec.sectioned {
        lines.push("apiVersion: catalog/v1alpha1\n".into());
        lines.push("kind: CatalogSources\n".into());
        lines.push("catalogs:\n".into());
        let knowledge = |lines: &mut Vec<String>| {
            lines.push("  knowledge:\n".into());
            lines.push("    sources:\n".into());
            lines.push("      - id: kb   # a plugin this server does not have\n".into());
            lines.push(format!("        note: {}\n", quoted(&spec.unknown_text)));
        };
        if spec.unknown_first {
            knowledge(&mut lines);
        }
        for (plugin, list) in [(PluginKind::Models, &spec.models), (PluginKind::Mcp, &spec.mcp)] {
            if list.is_empty() && !spec.empty_flow {
                continue;
            }
            lines.push(format!("  {}:\n", plugin.name()));
            let indent = if spec.zero_indent { 4 } else { 6 };
            section(&mut lines, &mut ranges, plugin, list, "    sources:\n".into(), indent);
        }
        if !spec.unknown_first {
            knowledge(&mut lines);
        }
    } else {
        if spec.unknown_first {
            unknown_kubeflow(&mut lines);
        }
        let model_key = if spec.deprecated_key { "catalogs" } else { "model_catalogs" };
        let indent = if spec.zero_indent { 0 } else { 2 };
        let model_key = if spec.quoted_key { format!("\"{model_key}\"") } else { model_key.to_string() };
        section(&mut lines, &mut ranges, PluginKind::Models, &spec.models, format!("{model_key}:\n"), indent);
        section(&mut lines, &mut ranges, PluginKind::Mcp, &spec.mcp, "mcp_catalogs:\n".into(), indent);
        if !spec.unknown_first {
            unknown_kubeflow(&mut lines);
        }
    }
    lines.push("# trailing comment\n".into());
    if spec.crlf {
        lines = lines.into_iter().map(|l| l.replace('\n', "\r\n")).collect();
    }
    if spec.no_final_newline
        && let Some(last) = lines.last_mut()
    {
        *last = last.trim_end_matches(['\r', '\n']).to_string();
    }
    let flow_sections = if spec.empty_flow {
        [(PluginKind::Models, &spec.models), (PluginKind::Mcp, &spec.mcp)]
            .into_iter()
            .filter(|(_, l)| l.is_empty())
            .map(|(p, _)| p)
            .collect()
    } else {
        Vec::new()
    };
    GenFile {
        dialect: if spec.sectioned { Dialect::PluginSectioned } else { Dialect::Kubeflow },
        lines,
        ranges,
        flow_sections,
    }
}

fn parse(text: &str) -> Result<SourcesFile, String> {
    SourcesFile::parse(Path::new(SOURCES_PATH), text.to_string())
        .map_err(|d| d.iter().map(|x| x.render()).collect::<Vec<_>>().join("\n"))
}

/// A model catalog as a person writes it.
fn models_doc_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z][a-z0-9/-]{0,12}", "[\\PC]{0,20}", any::<bool>(), any::<u32>()), 0..5).prop_map(
        |models| {
            let mut s = String::from("source: Generated\nmodels:\n");
            for (i, (name, desc, metrics, epoch)) in models.iter().enumerate() {
                s.push_str(&format!("  - name: {name}{i}\n"));
                s.push_str(&format!("    description: {}\n", quoted(desc)));
                s.push_str("    provider: Gen\n    license: apache-2.0\n    tasks: [text-generation]\n");
                s.push_str(&format!("    createTimeSinceEpoch: \"{epoch}\"\n"));
                s.push_str("    customProperties:\n      size:\n        metadataType: MetadataStringValue\n        string_value: \"7b\"\n");
                s.push_str(&format!("    artifacts:\n      - uri: oci://registry.example.com/{name}:{i}\n"));
                if *metrics {
                    s.push_str("      - artifactType: metrics-artifact\n        metricsType: accuracy-metrics\n");
                }
            }
            s
        },
    )
}

/// An MCP catalog in the Kubeflow `mcp_servers:` format.
fn mcp_kubeflow_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z][a-z0-9-]{0,12}", "[\\PC]{0,20}", 0usize..3), 0..4).prop_map(|servers| {
        let mut s = String::from("source: Generated\nmcp_servers:\n");
        for (i, (name, desc, tools)) in servers.iter().enumerate() {
            s.push_str(&format!("  - name: {name}{i}\n    description: {}\n", quoted(desc)));
            s.push_str("    deploymentMode: local\n    transports:\n      - stdio\n");
            if *tools > 0 {
                s.push_str("    tools:\n");
                for t in 0..*tools {
                    s.push_str(&format!(
                        "      - name: tool{t}\n        accessType: read_only\n        parameters:\n          - name: p\n            type: string\n            required: true\n"
                    ));
                }
            }
            s.push_str("    securityIndicators:\n      verifiedSource: true\n      sast: false\n");
            s.push_str(&format!("    artifacts:\n      - uri: oci://registry.example.com/{name}:{i}\n"));
        }
        s
    })
}

/// An MCP catalog in the flat `mcpservers:` format.
fn mcp_flat_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z][a-z0-9-]{0,12}", any::<u8>(), any::<bool>()), 0..4).prop_map(|servers| {
        let mut s = String::from("mcpservers:\n");
        for (i, (name, count, remote)) in servers.iter().enumerate() {
            s.push_str(&format!("  - name: \"{name}{i}\"\n    serverUrl: \"https://mcp.example.com/{name}\"\n"));
            s.push_str(if *remote {
                "    transportType: \"http\"\n    deploymentMode: \"remote\"\n    supportedTransports: \"http,sse\"\n"
            } else {
                "    transportType: \"stdio\"\n    deploymentMode: \"local\"\n"
            });
            s.push_str(&format!("    toolCount: {count}\n    verified: true\n    category: \"Tools\"\n"));
        }
        s
    })
}

/// Any valid document of any of the formats, for mutation.
fn any_valid_doc() -> impl Strategy<Value = String> {
    prop_oneof![
        file_spec_strategy().prop_map(|s| build_file(&s).text()),
        models_doc_strategy(),
        mcp_kubeflow_strategy(),
        mcp_flat_strategy(),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Indent(usize, usize),
    Dedent(usize),
    UnknownKey(usize, String),
    Unicode(usize, String),
    Truncate(usize),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), 1usize..5).prop_map(|(i, n)| Mutation::Indent(i, n)),
        any::<usize>().prop_map(Mutation::Dedent),
        (any::<usize>(), "[a-zA-Z_]{1,12}").prop_map(|(i, k)| Mutation::UnknownKey(i, k)),
        (any::<usize>(), "\\PC{1,6}|[\\t\\r\\u{0}\\u{85}\\u{2028}\\u{feff}:#&*!|>'\"%@`{}\\[\\],-]{1,4}")
            .prop_map(|(i, u)| Mutation::Unicode(i, u)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply_mutation(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let n = lines.len();
    match m {
        Mutation::Delete(i) => {
            lines.remove(i % n);
        }
        Mutation::Duplicate(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::Indent(i, k) => lines[i % n] = format!("{}{}", " ".repeat(*k), lines[i % n]),
        Mutation::Dedent(i) => {
            let l = &lines[i % n];
            lines[i % n] = l.strip_prefix("  ").unwrap_or(l.trim_start()).to_string();
        }
        Mutation::UnknownKey(i, k) => {
            let indent = lines[i % n].len() - lines[i % n].trim_start().len();
            lines.insert(i % n, format!("{}{k}: surprise\n", " ".repeat(indent)));
        }
        Mutation::Unicode(i, u) => {
            let l = &lines[i % n];
            let mut at = i % (l.len() + 1);
            while !l.is_char_boundary(at) {
                at -= 1;
            }
            lines[i % n] = format!("{}{u}{}", &l[..at], &l[at..]);
        }
        Mutation::Truncate(i) => {
            let text = lines.concat();
            let mut at = i % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return text[..at].to_string();
        }
    }
    lines.concat()
}

/// Everything that reads user text, run on `text`; only a panic fails (proptest reports it).
fn run_every_parser(text: &str) {
    let _ = syntax_check(text, "any.yaml", Limits::default());
    let _ = parse(text);
    for plugin in PluginKind::ALL {
        let _ = plugin.load(text, "any.yaml");
        let mut properties = Mapping::new();
        properties.insert("yamlCatalogPath".into(), "any.yaml".into());
        let draft = SourceDraft {
            plugin,
            entry: SourceEntry {
                id: "any".into(),
                name: "Any".into(),
                type_: "yaml".into(),
                enabled: true,
                labels: Vec::new(),
                properties,
                included_models: None,
                excluded_models: None,
                asset_type: None,
                refresh_interval: None,
                suspended: false,
            },
            content: Some(text.to_string()),
        };
        let checked = check(&draft, None);
        // The report is consistent: invalid exactly when an error was reported.
        assert_eq!(checked.report.valid(), checked.report.errors().next().is_none());
    }
}

/// Item fragments for the split parse: the shapes that could fool a line-based cut (quoted,
/// flow and block scalars whose lines look like items, comments at every indent, anchors and
/// aliases, nested and empty items), at the list's indent of 2.
/// The fragments that take no number.
const FIXED_FRAGMENTS: &[&str] = &[
    "  - name: \"open\n  - name: closed\"\n",
    "  - name: 'open\n  - name: ''closed'''\n",
    "  - readme: |\n      - not an item\n\n      # not a comment\n    k: v\n",
    "  - tags: [a,\n  - b]\n",
    "  - {name: x,\n  - y: z}\n",
    "  # a comment\n",
    "# at column 0\n",
    "\n",
    "  - - nested\n    - list\n",
    "  -\n    name: empty-first\n",
    "  - name: plain\n    desc: first\n      continued\n",
    "  - name: plain\n  continued at the item indent\n",
    "  - >\n    folded\n  - x\n",
    "  - \"esc \\\" q\"\n",
    "other: 1\n",
    "  -x\n",
];

fn list_fragment() -> impl Strategy<Value = String> {
    let n = 0usize..4;
    prop_oneof![
        n.clone().prop_map(|i| format!("  - name: m{i}\n    tags: [a, b]\n")),
        n.clone().prop_map(|i| format!("  - name: &a{i} anchored\n")),
        n.prop_map(|i| format!("  - name: *a{i}\n")),
        prop::sample::select(FIXED_FRAGMENTS).prop_map(str::to_string),
    ]
}

/// A document with a `models:` list built from the fragments, with an optional header and
/// tail, sometimes mutated line by line.
fn split_doc_strategy() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just(String::new()),
        Just("source: Generated\n".to_string()),
        Just("source: \"quoted: yes\" # c\n".to_string()),
        Just("source: \"open\nmodels:\n\"\n".to_string()),
        Just("source: \"open\n".to_string()),
        Just("source: [open,\n".to_string()),
        Just("source: |\n".to_string()),
        Just("source:\n  nested: 1\n".to_string()),
    ];
    // A tail that closes a quote or bracket the header opened: the list was inside it.
    let tail = prop_oneof![
        Just(String::new()),
        Just("after: 1\n".to_string()),
        Just("models:\n  - again\n".to_string()),
        Just("\"\n".to_string()),
        Just("]\n".to_string()),
    ];
    (header, prop::collection::vec(list_fragment(), 1..12), tail, prop::collection::vec(mutation_strategy(), 0..2))
        .prop_map(|(h, items, t, muts)| {
            let mut text = format!("{h}models:\n{}{t}", items.concat());
            for m in &muts {
                text = apply_mutation(&text, m);
            }
            text
        })
}

/// A tree of YAML values for the subset reader, rendered by [`render_tree`] in every style
/// the reader handles and several it must decline.
#[derive(Clone, Debug)]
enum Tree {
    Leaf(String),
    List(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

/// Scalar text with the characters that change how YAML reads a line.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}",
        "[a-z0-9 :#'\"\\\\|>\\-\\[\\]{},.~&*!?%@`\u{e9}\n]{0,10}",
        prop::sample::select(
            &[
                "", "~", "null", "Null", "true", "FALSE", "-1", "1.5", ".inf", "0x1f", "007", "a: b", "- x", "#c",
                "'q'", "\"q\""
            ][..]
        )
        .prop_map(str::to_string),
    ]
}

fn tree_strategy() -> impl Strategy<Value = Tree> {
    tricky_text().prop_map(Tree::Leaf).prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::List),
            prop::collection::vec((tricky_text(), inner), 1..4).prop_map(Tree::Map),
        ]
    })
}

/// Style choices drawn from a byte string, cycled.
struct Styles<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Styles<'_> {
    fn pick(&mut self, n: u8) -> u8 {
        let b = self.bytes.get(self.at % self.bytes.len().max(1)).copied().unwrap_or(0);
        self.at += 1;
        b % n
    }
}

fn render_scalar(text: &str, st: &mut Styles, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match st.pick(6) {
        0 | 1 => out.push_str(&text.replace('\n', &format!("\n{pad}"))),
        2 => out.push_str(&format!("'{}'", text.replace('\'', "''").replace('\n', &format!("\n{pad}")))),
        3 => out.push_str(&quoted(text)),
        k => {
            out.push(if k == 4 { '|' } else { '>' });
            out.push_str(["", "-", "+"][usize::from(st.pick(3))]);
            for line in text.split('\n') {
                out.push('\n');
                if !line.is_empty() || st.pick(2) == 0 {
                    out.push_str(&pad);
                }
                out.push_str(line);
            }
        }
    }
    if st.pick(5) == 0 {
        out.push_str(" # c");
    }
    out.push('\n');
}

fn render_key(key: &str, st: &mut Styles, out: &mut String) {
    match st.pick(4) {
        0 => out.push_str(&quoted(key)),
        1 => out.push_str(&format!("'{}'", key.replace('\'', "''"))),
        _ => out.push_str(key),
    }
    out.push(':');
}

/// Renders `tree` after a `key:` or `-` already written; `col` is that key's or dash's column.
fn render_value(tree: &Tree, st: &mut Styles, col: usize, under_key: bool, out: &mut String) {
    match tree {
        Tree::Leaf(s) => {
            out.push(' ');
            render_scalar(s, st, col + 2, out);
        }
        Tree::List(items) if items.is_empty() => out.push_str(" []\n"),
        Tree::List(items) if items.iter().all(|t| matches!(t, Tree::Leaf(_))) && st.pick(3) == 0 => {
            let parts: Vec<String> = items
                .iter()
                .map(|t| match t {
                    Tree::Leaf(s) if st.pick(2) == 0 => quoted(s),
                    Tree::Leaf(s) => s.clone(),
                    _ => String::new(),
                })
                .collect();
            out.push_str(&format!(" [{}]\n", parts.join(", ")));
        }
        Tree::List(items) => {
            out.push('\n');
            let c = if under_key && st.pick(3) == 0 { col } else { col + 2 };
            render_list(items, st, c, out);
        }
        Tree::Map(entries) => {
            if !under_key && st.pick(2) == 0 {
                // A compact mapping: the first key on the dash's line.
                out.push(' ');
                render_entries(entries, st, col + 2, true, out);
            } else {
                out.push('\n');
                render_entries(entries, st, col + 2, false, out);
            }
        }
    }
}

fn render_list(items: &[Tree], st: &mut Styles, col: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(col));
        out.push('-');
        render_value(item, st, col, false, out);
        if st.pick(8) == 0 {
            out.push_str(&format!("{}# between\n\n", " ".repeat(usize::from(st.pick(6)))));
        }
    }
}

fn render_entries(entries: &[(String, Tree)], st: &mut Styles, col: usize, first_inline: bool, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(col));
        }
        render_key(k, st, out);
        render_value(v, st, col, true, out);
    }
}

/// A list document (what a piece of a catalog's list is) rendered from trees.
fn render_tree(items: &[Tree], styles: &[u8], col: usize) -> String {
    let mut st = Styles { bytes: styles, at: 0 };
    let mut out = String::new();
    render_list(items, &mut st, col, &mut out);
    out
}

/// Trees of keys and text the subset reader must accept in any of its styles.
fn plain_tree_strategy() -> impl Strategy<Value = Tree> {
    "[a-z][a-z -]{0,6}[a-z]".prop_map(Tree::Leaf).prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Tree::List),
            prop::collection::vec(("[a-z][a-zA-Z_]{0,8}", inner), 1..4).prop_map(|mut e| {
                // Distinct keys: serde_yaml_ng's `Value` refuses duplicates, this is about syntax.
                let mut seen = std::collections::HashSet::new();
                e.retain(|(k, _)| seen.insert(k.clone()));
                Tree::Map(e)
            }),
        ]
    })
}

// ---- properties ----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Parsing the `models:` list in pieces (one item per piece and larger) either gives up or
    /// gives exactly what parsing the whole document gives: never a value the whole parse would
    /// not produce, never a success where the whole parse fails.
    #[test]
    fn a_list_parsed_in_pieces_equals_the_whole_parse(
        text in prop_oneof![split_doc_strategy(), models_doc_strategy()],
        piece in 1usize..200,
    ) {
        let whole = serde_yaml_ng::from_str::<Mapping>(&text);
        if let Some((rest, items)) = parse_in_pieces::<Mapping, Value>(&text, "models", piece) {
            let mut whole = whole.map_err(|e| TestCaseError::fail(format!("pieces parsed, the whole failed: {e}\n{text}")))?;
            let list = whole.remove("models");
            prop_assert_eq!(list, Some(Value::Sequence(items)), "{}", text);
            let mut rest = rest;
            prop_assert_eq!(rest.remove("models"), Some(Value::Null), "{}", text);
            prop_assert_eq!(rest, whole, "{}", text);
        }
    }

    /// The subset reader (the fast path of a split parse) either declines or gives exactly what
    /// serde_yaml_ng gives, on lists rendered in every style and then mutated line by line.
    #[test]
    fn the_yaml_subset_reader_declines_or_equals_serde_yaml_ng(
        items in prop::collection::vec(tree_strategy(), 1..5),
        styles in prop::collection::vec(any::<u8>(), 1..64),
        col in 0usize..3,
        muts in prop::collection::vec(mutation_strategy(), 0..3),
    ) {
        let mut text = render_tree(&items, &styles, col);
        for m in &muts {
            text = apply_mutation(&text, m);
        }
        if let Some(fast) = yaml_subset::from_str::<Value>(&text) {
            let slow = serde_yaml_ng::from_str::<Value>(&text)
                .map_err(|e| TestCaseError::fail(format!("the subset read it, serde_yaml_ng failed: {e}\n{text}")))?;
            prop_assert_eq!(fast, slow, "{}", text);
        }
    }

    /// ... and it does read the shapes catalogs are written in (plain, quoted and block scalars,
    /// block, compact, indentless and flow lists, comments): the fast path is taken.
    #[test]
    fn the_yaml_subset_reader_reads_plain_catalog_shapes(
        items in prop::collection::vec(plain_tree_strategy(), 1..5),
        styles in prop::collection::vec(any::<u8>(), 1..64),
        col in 0usize..3,
    ) {
        let text = render_tree(&items, &styles, col);
        let slow = serde_yaml_ng::from_str::<Value>(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(yaml_subset::from_str::<Value>(&text), Some(slow), "{}", text);
    }

    /// Typed: model items read through the subset equal serde_yaml_ng's, field by field.
    #[test]
    fn the_yaml_subset_reader_reads_models_as_serde_yaml_ng(doc in models_doc_strategy(), muts in prop::collection::vec(mutation_strategy(), 0..2)) {
        let mut list = doc.split_once("models:\n").map(|(_, l)| l.to_string()).unwrap_or_default();
        for m in &muts {
            list = apply_mutation(&list, m);
        }
        if let Some(fast) = yaml_subset::from_str::<Vec<Model>>(&list) {
            let slow = serde_yaml_ng::from_str::<Vec<Model>>(&list).map_err(|e| TestCaseError::fail(format!("{e}\n{list}")))?;
            prop_assert_eq!(fast, slow, "{}", list);
        } else {
            // Unicode line separators are line breaks to libyaml: the subset leaves them to it.
            let unusual = list.is_empty() || list.contains(['\u{2028}', '\u{2029}']);
            prop_assert!(!muts.is_empty() || unusual, "an unmutated catalog declined:\n{}", list);
        }
    }

    /// Arbitrary unicode text never panics any parser or the validator.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}|[\\s\\S]{0,200}") {
        run_every_parser(&text);
    }

    /// Arbitrary source fields (any id, name, type, path, globs, properties) never panic the
    /// validator, and the id rule holds exactly: an id outside `^[a-z0-9][a-z0-9_-]*$` is
    /// reported on `input.id`, a valid one never is.
    #[test]
    fn arbitrary_source_fields_never_panic_the_validator(
        id in "\\PC{0,12}|[a-z0-9][a-z0-9_-]{0,8}",
        name in "\\PC{0,12}",
        type_ in "yaml|url|hf|\\PC{0,6}",
        path in prop::option::of("\\PC{0,16}|\\.\\./[a-z]{1,4}|/[a-z]{1,6}"),
        url in prop::option::of("https?://\\PC{0,12}|\\PC{0,12}"),
        globs in prop::option::of(prop::collection::vec("\\PC{0,6}", 0..3)),
        extra in prop::collection::vec(("\\PC{1,10}", "\\PC{0,10}"), 0..3),
        content in prop::option::of(models_doc_strategy()),
        mcp in any::<bool>(),
    ) {
        let mut properties = Mapping::new();
        if let Some(p) = path {
            properties.insert("yamlCatalogPath".into(), p.into());
        }
        if let Some(u) = url {
            properties.insert("url".into(), u.into());
        }
        for (k, v) in extra {
            properties.insert(Value::String(k), Value::String(v));
        }
        let entry = SourceEntry {
            id: id.clone(),
            name,
            type_,
            enabled: true,
            labels: Vec::new(),
            properties,
            included_models: globs.clone(),
            excluded_models: globs,
            asset_type: None,
            refresh_interval: None,
            suspended: false,
        };
        let plugin = if mcp { PluginKind::Mcp } else { PluginKind::Models };
        let checked = check(&SourceDraft { plugin, entry, content }, None);
        let id_error = checked.report.errors().any(|d| d.field.as_deref() == Some("input.id"));
        prop_assert_eq!(id_error, !catalog_core::valid_id(&id), "id {:?}", id);
        let id_ok = id.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        prop_assert_eq!(id_error, !id_ok, "id {:?}", id);
    }

    /// Text built from YAML's own punctuation, where parser edge cases live.
    #[test]
    fn yaml_punctuation_never_panics(text in "[ \\n\\t:\\-?#&*!|>'\"%@`{}\\[\\],a-c0-9]{0,200}") {
        run_every_parser(&text);
    }

    /// A valid document of any format, mutated up to four times, never panics anything.
    #[test]
    fn mutated_documents_never_panic(
        doc in any_valid_doc(),
        mutations in prop::collection::vec(mutation_strategy(), 1..5),
    ) {
        let mut text = doc;
        for m in &mutations {
            text = apply_mutation(&text, m);
            run_every_parser(&text);
        }
    }

    /// The generators make valid documents (otherwise the mutation property tests less than
    /// it claims): each format loads with no error.
    #[test]
    fn generated_documents_are_valid(
        spec in file_spec_strategy(),
        models in models_doc_strategy(),
        kubeflow in mcp_kubeflow_strategy(),
        flat in mcp_flat_strategy(),
    ) {
        let file = build_file(&spec);
        let parsed = parse(&file.text());
        prop_assert!(parsed.is_ok(), "{}\n{}", file.text(), parsed.err().unwrap_or_default());
        let parsed = parsed.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(parsed.sources.len(), file.ranges.len());
        prop_assert_eq!(parsed.dialect, file.dialect);
        for (plugin, text) in [(PluginKind::Models, &models), (PluginKind::Mcp, &kubeflow), (PluginKind::Mcp, &flat)] {
            let loaded = plugin.load(text, "gen.yaml");
            prop_assert!(loaded.is_ok(), "{}\n{:?}", text, loaded.err());
            let loaded = loaded.unwrap_or_default();
            prop_assert!(loaded.diagnostics.iter().all(|d| !d.is_error()), "{}\n{:?}", text, loaded.diagnostics);
        }
    }

    /// `with_entry` replaces one existing entry: every line outside its range is byte-identical,
    /// the result parses back with that entry equal to the one written, and every other entry
    /// is unchanged.
    #[test]
    fn splice_replacing_changes_only_the_target_entry(
        spec in file_spec_strategy(),
        pick in any::<usize>(),
        replacement in entry_strategy(),
    ) {
        let file = build_file(&spec);
        prop_assume!(!file.ranges.is_empty());
        let (plugin, id, range) = file.ranges[pick % file.ranges.len()].clone();
        let old = parse(&file.text()).map_err(TestCaseError::fail)?;
        let mut entry = replacement;
        entry.id = id.clone();
        let new_text = old.with_entry(plugin, &entry);
        check_splice(&file, &old, &new_text, plugin, &entry, range.start, range.end)?;
    }

    /// `with_entry` with a new id adds it without touching any existing byte.
    #[test]
    fn splice_adding_keeps_every_existing_line(
        spec in file_spec_strategy(),
        mcp in any::<bool>(),
        entry in entry_strategy(),
    ) {
        let file = build_file(&spec);
        let plugin = if mcp { PluginKind::Mcp } else { PluginKind::Models };
        let old = parse(&file.text()).map_err(TestCaseError::fail)?;
        prop_assume!(old.find(plugin, &entry.id).is_none());
        let new_text = old.with_entry(plugin, &entry);
        // Appended after the section's last entry when the section exists; anywhere otherwise.
        let at = file.ranges.iter().filter(|(p, _, _)| *p == plugin).map(|(_, _, r)| r.end).max();
        match at {
            Some(at) => check_splice(&file, &old, &new_text, plugin, &entry, at, at)?,
            None => {
                check_entries(&old, &new_text, plugin, &entry)?;
                let old_lines: Vec<&str> = file.lines.iter().map(String::as_str).collect();
                let new_lines: Vec<&str> = new_text.split_inclusive('\n').collect();
                let (p, s) = common_prefix_suffix(&old_lines, &new_lines);
                // Only a flow-style empty section (`mcp_catalogs: []`) has a line to rewrite.
                let rewritten = usize::from(file.flow_sections.contains(&plugin));
                prop_assert!(p + s + rewritten >= old_lines.len(), "existing lines changed:\n--- old\n{}\n--- new\n{}", file.text(), new_text);
            }
        }
    }

    /// Applying the same entry twice gives the same text (the splice is idempotent), so a retried
    /// apply does not grow or reshape the file.
    #[test]
    fn splice_is_idempotent(spec in file_spec_strategy(), mcp in any::<bool>(), entry in entry_strategy()) {
        let file = build_file(&spec);
        let plugin = if mcp { PluginKind::Mcp } else { PluginKind::Models };
        let once = parse(&file.text()).map_err(TestCaseError::fail)?.with_entry(plugin, &entry);
        let twice = parse(&once).map_err(TestCaseError::fail)?.with_entry(plugin, &entry);
        prop_assert_eq!(once, twice);
    }
}

/// Line `new` is line `old` unchanged. The one allowed difference: the file's last line had no
/// terminator and the splice added one so that it could write after it.
fn same_line(old: &str, new: &str) -> bool {
    old == new
        || (!old.ends_with('\n') && new.strip_suffix('\n').map(|n| n.strip_suffix('\r').unwrap_or(n)) == Some(old))
}

fn common_prefix_suffix(a: &[&str], b: &[&str]) -> (usize, usize) {
    let p = a.iter().zip(b).take_while(|(x, y)| same_line(x, y)).count();
    let max_s = a.len().min(b.len()) - p;
    let s = a.iter().rev().zip(b.iter().rev()).take(max_s).take_while(|(x, y)| same_line(x, y)).count();
    (p, s)
}

/// The new text parses, holds `entry` exactly, and every other entry as it was.
fn check_entries(
    old: &SourcesFile,
    new_text: &str,
    plugin: PluginKind,
    entry: &SourceEntry,
) -> Result<(), TestCaseError> {
    let new = parse(new_text)
        .map_err(|e| TestCaseError::fail(format!("the spliced file does not parse: {e}\n{new_text}")))?;
    prop_assert_eq!(new.dialect, old.dialect);
    prop_assert_eq!(new.find(plugin, &entry.id), Some(entry), "target entry differs:\n{}", new_text);
    for (p, e) in &old.sources {
        if *p == plugin && e.id == entry.id {
            continue;
        }
        prop_assert_eq!(new.find(*p, &e.id), Some(e), "entry {}/{} changed:\n{}", p, e.id, new_text);
    }
    let expected = old.sources.len() + usize::from(old.find(plugin, &entry.id).is_none());
    prop_assert_eq!(new.sources.len(), expected);
    prop_assert_eq!(&new.unknown_sections, &old.unknown_sections);
    Ok(())
}

/// Lines `[..start]` and `[end..]` of the generated file are byte-identical in `new_text`.
fn check_splice(
    file: &GenFile,
    old: &SourcesFile,
    new_text: &str,
    plugin: PluginKind,
    entry: &SourceEntry,
    start: usize,
    end: usize,
) -> Result<(), TestCaseError> {
    check_entries(old, new_text, plugin, entry)?;
    let new_lines: Vec<&str> = new_text.split_inclusive('\n').collect();
    let before = &file.lines[..start];
    let after = &file.lines[end..];
    prop_assert!(new_lines.len() >= before.len() + after.len(), "lines lost:\n{}", new_text);
    for (i, l) in before.iter().enumerate() {
        prop_assert!(same_line(l, new_lines[i]), "line {} before the entry changed:\n{}", i + 1, new_text);
    }
    let offset = new_lines.len() - after.len();
    for (i, l) in after.iter().enumerate() {
        prop_assert_eq!(
            new_lines[offset + i],
            l.as_str(),
            "line {} after the entry changed:\n{}",
            end + i + 1,
            new_text
        );
    }
    Ok(())
}
