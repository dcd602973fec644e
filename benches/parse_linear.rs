//! Parse cost against input size: models catalogs and sources files of 1k, 10k and 100k
//! entities, and YAML nested ever deeper up to the depth limit, each with time per KB.
//!
//! Why a bench and not a test: timing assertions are flaky on a shared 2-core CI machine, so the
//! linearity claim (issue 8: "parse time stays linear in input size") is shown here as figures a
//! person reads: the `us/KB` column should stay roughly flat as the input grows. Nothing is
//! asserted. Run with `cargo bench --bench parse_linear`; it is not run in CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark prints its figures and stops at the first thing that goes wrong"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use catalog_core::PluginKind;
use catalog_core::{SourceDraft, validate_source as check};
use catalog_core::{SourceEntry, SourcesFile};

/// The syntax layer as the server runs it (default limits): whether the text passed.
fn syntax_ok(text: &str, file: &str) -> bool {
    catalog_yaml::syntax_check(text, file, catalog_yaml::Limits::default()).is_ok()
}

/// The deepest nesting measured as an ordinary parse. Deeper YAML is refused by the server's
/// nesting limit before the expensive parse (issue 8); the "past limit" rows measure that
/// refusal through the whole validator, where the quadratic cost used to be.
const MAX_DEPTH: usize = 1024;

fn models_catalog(n: usize) -> String {
    let mut s = String::with_capacity(n * 220);
    s.push_str("source: Bench\nmodels:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - name: bench/m{i}\n    provider: Bench\n    description: model number {i}\n    license: apache-2.0\n    tasks: [text-generation]\n    createTimeSinceEpoch: \"1760000000000\"\n    artifacts:\n      - uri: oci://registry.example.com/bench/m{i}:1\n"
        ));
    }
    s
}

fn sources_file(n: usize) -> String {
    let mut s = String::with_capacity(n * 120);
    s.push_str("# bench sources\nmodel_catalogs:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - name: \"Source {i}\"\n    id: s{i}\n    type: yaml\n    properties:\n      yamlCatalogPath: s{i}.yaml\n    labels: [Bench]\n"
        ));
    }
    s
}

/// A block mapping nested `depth` levels deep (`a:\n  a:\n    ...`).
fn nested_block(depth: usize) -> String {
    let mut s = String::new();
    for d in 0..depth {
        s.push_str(&" ".repeat(d));
        s.push_str("a:\n");
    }
    s.push_str(&" ".repeat(depth));
    s.push_str("x: 1\n");
    s
}

/// Flow sequences nested `depth` levels deep (`[[[...]]]`): the cheapest bytes per level.
fn nested_flow(depth: usize) -> String {
    format!("models: {}{}\n", "[".repeat(depth), "]".repeat(depth))
}

/// `- - - ... x`: compact nested sequences, two bytes per level (the shape of issue 8's
/// 80k-level, 160 KB `validateSource` request).
fn nested_compact(depth: usize) -> String {
    format!("models:\n{}x\n", "- ".repeat(depth))
}

/// What `validateSource` runs on a models source with this content.
fn draft(content: String) -> SourceDraft {
    let mut properties = serde_yaml_ng::Mapping::new();
    properties.insert("yamlCatalogPath".into(), "bench.yaml".into());
    let entry = SourceEntry {
        id: "bench".into(),
        name: "Bench".into(),
        type_: "yaml".into(),
        enabled: true,
        labels: Vec::new(),
        properties,
        included_models: None,
        excluded_models: None,
        asset_type: None,
        refresh_interval: None,
        suspended: false,
    };
    SourceDraft { plugin: PluginKind::Models, entry, content: Some(content) }
}

/// Runs `f` until `budget` has passed (at least once); the best time per run.
fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs == 0 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn row(what: &str, size: usize, bytes: usize, t: Duration) {
    let kb = bytes as f64 / 1024.0;
    let us = t.as_secs_f64() * 1e6;
    println!("{what:<28} {size:>8} {kb:>12.1} {:>12.2} {:>10.2}", us / 1000.0, us / kb.max(1e-9));
}

fn main() {
    let budget = Duration::from_millis(500);
    println!("{:<28} {:>8} {:>12} {:>12} {:>10}", "input", "size", "KB", "ms", "us/KB");

    for n in [1_000, 10_000, 100_000] {
        let text = models_catalog(n);
        let t = best_of(budget, || {
            black_box(PluginKind::Models.load(black_box(&text), "bench.yaml").map(|l| l.entities.len()).ok());
        });
        row("models catalog (entities)", n, text.len(), t);
    }

    for n in [1_000, 10_000, 100_000] {
        let text = sources_file(n);
        let path = Path::new("/bench/sources.yaml");
        let t = best_of(budget, || {
            black_box(SourcesFile::parse(path, black_box(text.clone())).map(|f| f.sources.len()).ok());
        });
        row("sources file (entries)", n, text.len(), t);
    }

    for depth in [64, 128, 256, 512, MAX_DEPTH] {
        let text = nested_block(depth);
        let t = best_of(budget, || {
            black_box(syntax_ok(black_box(&text), "bench.yaml"));
        });
        row("nested block map (depth)", depth, text.len(), t);
    }

    for depth in [64, 128, 256, 512, MAX_DEPTH] {
        let text = nested_flow(depth);
        let t = best_of(budget, || {
            black_box(syntax_ok(black_box(&text), "bench.yaml"));
            black_box(PluginKind::Models.load(black_box(&text), "bench.yaml").is_ok());
        });
        row("nested flow seq (depth)", depth, text.len(), t);
    }

    // Past the limit: these must be refused in time linear in their size (the depth check runs
    // before the parse), so us/KB stays flat here too instead of growing with the depth.
    for depth in [10_000, 20_000, 40_000, 80_000] {
        let text = nested_compact(depth);
        let d = draft(text.clone());
        let t = best_of(budget, || {
            black_box(check(black_box(&d), None).report.valid());
        });
        row("compact seqs past limit", depth, text.len(), t);
    }
    for depth in [10_000, 20_000, 40_000, 80_000] {
        let text = nested_flow(depth);
        let d = draft(text.clone());
        let t = best_of(budget, || {
            black_box(check(black_box(&d), None).report.valid());
        });
        row("flow seqs past limit", depth, text.len(), t);
    }
}
