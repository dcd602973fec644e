//! The module map, kept by a test: no import circles between modules, and no module importing
//! from a layer above its own (ARCHITECTURE.md, "Layers"). It reads the `use` graph from the
//! sources: every `crate::…` and `super::…` path outside `#[cfg(test)] mod tests`, resolved to
//! the deepest module file it names. A module using its own parent or child is structure, not
//! an edge. A new top-level module must be given a layer here, which is the point: where it sits
//! is decided, not drifted into.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The layers of one crate, top first: a module may import only from layers below its own
/// (modules of one layer do not import each other).
struct Crate {
    dir: &'static str,
    layers: &'static [&'static [&'static str]],
}

const CRATES: &[Crate] = &[
    Crate {
        dir: "src",
        layers: &[
            // The composition root: start-up and shutdown.
            &["server"],
            // Flags and environment, turned into every layer's options.
            &["config"],
            &["http"],
            &["graphql"],
            &["cache"],
            &["auth"],
            &["logging", "k8s", "example"],
        ],
    },
    Crate {
        dir: "crates/catalog-core/src",
        layers: &[
            &["service"],
            // Outgoing webhooks: the delivery queue and loop, driven by the service.
            &["webhooks"],
            &["fetch", "jobs", "validate"],
            &["store"],
            &["paths"],
            &["sources", "refresh", "redact", "outbound"],
            &["plugins"],
            &["yaml"],
            &["diagnostics", "events", "allocator", "db", "tls", "schedule", "hooks"],
        ],
    },
    Crate { dir: "crates/catalog-yaml/src", layers: &[&["parse"], &["split"], &["subset", "depth"], &["error"]] },
    Crate { dir: "crates/catalogctl/src", layers: &[&["client"], &["output"], &["source_file"]] },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every module file of a crate: `a/b.rs` and `a/b/mod.rs` are module `a::b`, `lib.rs` and
/// `main.rs` the crate root.
fn modules(dir: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(base).unwrap().with_extension("");
                let mut m: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
                if m.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
                    m.pop();
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths written after `start` in `s`: `a::b::C`, and each item of a `{…}` group.
fn paths_after(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut segs = prefix.to_vec();
    let mut rest = s;
    loop {
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if !name.is_empty() {
            rest = &rest[name.len()..];
            segs.push(name);
            if let Some(r) = rest.strip_prefix("::") {
                rest = r;
                continue;
            }
            out.push(segs);
            return;
        }
        if let Some(r) = rest.strip_prefix('{') {
            // A group: split at top-level commas up to the matching brace.
            let mut depth = 1;
            let mut item_start = 0;
            for (i, c) in r.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        paths_after(r[item_start..i].trim(), &segs, out);
                        item_start = i + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        }
        out.push(segs);
        return;
    }
}

/// Every module a file's code names, resolved to the deepest module file.
fn targets(module: &Module, text: &str, known: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let code = code(text);
    let mut out = BTreeSet::new();
    for kw in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(kw) {
            let at = from + i;
            from = at + kw.len();
            if code[..at].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let mut base: Module =
                if kw == "crate::" { Vec::new() } else { module[..module.len().saturating_sub(1)].to_vec() };
            let mut rest = &code[from..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let mut paths = Vec::new();
            paths_after(rest, &[], &mut paths);
            for p in paths {
                let mut m = base.clone();
                for seg in p {
                    m.push(seg);
                    if !known.contains_key(&m) {
                        m.pop();
                        break;
                    }
                }
                out.insert(m);
            }
        }
    }
    out
}

/// The import graph of a crate: module → the modules it uses (not itself, its ancestors or its
/// descendants).
fn graph(dir: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules(dir);
    let mut g = BTreeMap::new();
    for (m, path) in &known {
        let text = std::fs::read_to_string(path).unwrap();
        let edges: BTreeSet<Module> = targets(m, &text, &known)
            .into_iter()
            .filter(|t| !t.is_empty() && !t.starts_with(m) && !m.starts_with(t))
            .collect();
        g.insert(m.clone(), edges);
    }
    g
}

fn reaches(g: &BTreeMap<Module, BTreeSet<Module>>, from: &Module, to: &Module) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.clone()];
    while let Some(m) = stack.pop() {
        if &m == to {
            return true;
        }
        if seen.insert(m.clone()) {
            stack.extend(g.get(&m).into_iter().flatten().cloned());
        }
    }
    false
}

fn name(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_module_imports_in_a_circle_or_from_a_layer_above_its_own() {
    let mut problems = Vec::new();
    let mut edges_total = 0;
    for krate in CRATES {
        let g = graph(&root().join(krate.dir));
        assert!(g.len() > 3, "{}: no modules found", krate.dir);
        let layer_of = |top: &str| krate.layers.iter().position(|l| l.contains(&top));
        for (m, edges) in &g {
            if let Some(top) = m.first()
                && layer_of(top).is_none()
            {
                problems.push(format!("{}: module `{top}` has no layer: add it to tests/architecture.rs", krate.dir));
            }
            for t in edges {
                edges_total += 1;
                if reaches(&g, t, m) {
                    problems.push(format!(
                        "{}: `{}` and `{}` import each other (a circle)",
                        krate.dir,
                        name(m),
                        name(t)
                    ));
                }
                let (Some(a), Some(b)) = (m.first(), t.first()) else { continue };
                if a != b
                    && let (Some(la), Some(lb)) = (layer_of(a), layer_of(b))
                    && la >= lb
                {
                    problems.push(format!(
                        "{}: `{}` imports `{}`, which is not in a layer below its own",
                        krate.dir,
                        name(m),
                        name(t)
                    ));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The reader must see the edges at all (a parser that found none would pass vacuously).
    assert!(edges_total > 100, "only {edges_total} import edges found");
}

/// The reader itself: a circle and an upward import, planted in a scratch crate, are found.
#[test]
fn the_module_graph_reader_finds_a_planted_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("low")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod high;\nmod low;\n").unwrap();
    std::fs::write(src.join("high.rs"), "use crate::low::{deep::Thing, Other};\n").unwrap();
    std::fs::write(src.join("low/mod.rs"), "pub mod deep;\nuse super::high::X; // a comment naming crate::nothing\n")
        .unwrap();
    std::fs::write(src.join("low/deep.rs"), "pub struct Thing;\nfn f() { let _ = super::super::high::Y; }\n").unwrap();
    let g = graph(src);
    let high = vec!["high".to_string()];
    let low = vec!["low".to_string()];
    let deep = vec!["low".to_string(), "deep".to_string()];
    assert_eq!(g[&high], BTreeSet::from([low.clone(), deep.clone()]));
    assert_eq!(g[&low], BTreeSet::from([high.clone()]));
    assert_eq!(g[&deep], BTreeSet::from([high.clone()]));
    assert!(reaches(&g, &high, &low) && reaches(&g, &low, &high));
}
