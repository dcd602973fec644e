//! What a document costs once its fragment spreads are expanded, computed without expanding
//! them.
//!
//! async-graphql walks a fragment's selections again at every spread of it: its recursion-depth
//! check, every validation rule and the depth and complexity visitors. A 1 KB document of 25
//! fragments that each spread the one before twice is 2^25 selections to them: seconds of CPU
//! on an async worker, long enough to stop the probes. Here each fragment's figures are
//! computed once and reused at each of its spreads, so the walk is linear in the document, and
//! the guardrails (`extensions.rs`) refuse a document whose expanded figures are over the
//! limits before async-graphql sees it. What async-graphql then does is bounded by those
//! figures: at most `--max-complexity` selections, nested at most [`MAX_NESTING`] deep.

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql_value::{Name, Value};
use std::collections::HashMap;

/// The parser's own recursion limit (async-graphql's `limit_recursive_depth`, default 32): how
/// deep selection sets may nest, counting fields, inline fragments and spreads.
pub const MAX_NESTING: usize = 32;

/// A document's figures after expansion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Fields, inline fragments, fragment spreads, directives, arguments and the values in
    /// them, as if every spread were replaced by its fragment (saturating): what validation
    /// walks.
    pub selections: u64,
    /// The deepest nesting of fields (async-graphql's `depth`, which `--max-depth` limits).
    pub depth: usize,
    /// The deepest nesting of selection sets of any kind below this one (what the parser's
    /// recursion limit counts).
    pub nesting: usize,
}

/// Why a document cannot be costed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A fragment spreads itself, directly or through others.
    Cycle(String),
    /// Selection sets nest deeper than [`MAX_NESTING`].
    TooNested,
}

/// The expanded figures of every operation and fragment definition of `doc` (async-graphql's
/// visitors walk both), in one pass over the document.
pub fn expanded(doc: &ExecutableDocument) -> Result<Cost, Refusal> {
    let mut walk = Walk { doc, fragments: HashMap::new() };
    let mut total = Cost::default();
    for (_, op) in doc.operations.iter() {
        let c = walk.set(&op.node.selection_set.node, 0)?;
        total.selections = total.selections.saturating_add(c.selections);
        total.depth = total.depth.max(c.depth);
        total.nesting = total.nesting.max(c.nesting);
    }
    for name in doc.fragments.keys() {
        if let Some(c) = walk.fragment(name.as_str(), 0)? {
            total.selections = total.selections.saturating_add(c.selections);
        }
    }
    Ok(total)
}

enum Memo {
    /// Being walked: meeting it again is a cycle.
    Open,
    Done(Cost),
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    fragments: HashMap<&'a str, Memo>,
}

impl<'a> Walk<'a> {
    /// A selection set at `level` (its nesting below the operation or fragment the walk started
    /// from: the recursion guard). Nesting is a property of the set, so a fragment's figures do
    /// not depend on where it is spread.
    fn set(&mut self, set: &'a SelectionSet, level: usize) -> Result<Cost, Refusal> {
        if level > MAX_NESTING {
            return Err(Refusal::TooNested);
        }
        let mut cost = Cost::default();
        for item in &set.items {
            let (child, own, field) = match &item.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let child = if f.selection_set.node.items.is_empty() {
                        Cost::default()
                    } else {
                        self.set(&f.selection_set.node, level + 1)?
                    };
                    (child, 1 + arguments(&f.arguments) + directives(&f.directives), true)
                }
                Selection::InlineFragment(i) => {
                    (self.set(&i.node.selection_set.node, level + 1)?, 1 + directives(&i.node.directives), false)
                }
                Selection::FragmentSpread(s) => {
                    // An unknown fragment is async-graphql's to report (KnownFragmentNames).
                    let child = self.fragment(s.node.fragment_name.node.as_str(), level + 1)?.unwrap_or_default();
                    (child, 1 + directives(&s.node.directives), false)
                }
            };
            cost.selections = cost.selections.saturating_add(own).saturating_add(child.selections);
            cost.depth = cost.depth.max(child.depth + usize::from(field));
            let nested = !matches!(&item.node, Selection::Field(f) if f.node.selection_set.node.items.is_empty());
            if nested {
                cost.nesting = cost.nesting.max(child.nesting + 1);
            }
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &'a str, level: usize) -> Result<Option<Cost>, Refusal> {
        match self.fragments.get(name) {
            // Its figures do not depend on where it is spread, but how deep it sits does.
            Some(Memo::Done(c)) if level + c.nesting > MAX_NESTING => return Err(Refusal::TooNested),
            Some(Memo::Done(c)) => return Ok(Some(*c)),
            Some(Memo::Open) => return Err(Refusal::Cycle(name.to_string())),
            None => {}
        }
        let Some((key, def)) = self.doc.fragments.get_key_value(name) else {
            return Ok(None);
        };
        self.fragments.insert(key.as_str(), Memo::Open);
        let cost = self.set(&def.node.selection_set.node, level)?;
        self.fragments.insert(key.as_str(), Memo::Done(cost));
        Ok(Some(cost))
    }
}

/// Arguments and the nodes of their values.
fn arguments(args: &[(Positioned<Name>, Positioned<Value>)]) -> u64 {
    args.iter().map(|(_, v)| 1 + value_nodes(&v.node)).sum()
}

fn directives(ds: &[Positioned<Directive>]) -> u64 {
    ds.iter().map(|d| 1 + arguments(&d.node.arguments)).sum()
}

/// The nodes of a value: 1 for a scalar, plus its items for a list or an object. (Nesting is
/// bounded before parsing: `extensions::MAX_BRACKET_NESTING`.)
fn value_nodes(v: &Value) -> u64 {
    match v {
        Value::List(items) => 1 + items.iter().map(value_nodes).sum::<u64>(),
        Value::Object(fields) => 1 + fields.values().map(value_nodes).sum::<u64>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(q: &str) -> Result<Cost, Refusal> {
        expanded(&async_graphql::parser::parse_query(q).unwrap())
    }

    /// `levels` fragments, each spreading the one before twice: 2^levels leaf fields.
    fn fragment_bomb(levels: usize) -> String {
        let mut q = String::from("query { ...F0 }\nfragment F0 on Query { plugins { name } }\n");
        for i in 1..=levels {
            q.push_str(&format!("fragment F{i} on Query {{ ...F{p} ...F{p} }}\n", p = i - 1));
        }
        q.replace("query { ...F0 }", &format!("query {{ ...F{levels} }}"))
    }

    #[test]
    fn counts_what_expansion_would_select() {
        assert_eq!(cost("{ plugins { name } }").unwrap(), Cost { selections: 2, depth: 2, nesting: 1 });
        // The spread, the fragment's field and its child; once in the query, once as a definition.
        let c = cost("{ ...F } fragment F on Query { plugins { name } }").unwrap();
        assert_eq!(c, Cost { selections: 3 + 2, depth: 2, nesting: 2 });
        let c = cost("{ a: plugins { ...P } b: plugins { ...P } } fragment P on Plugin { name @include(if: true) }")
            .unwrap();
        // a, b: 1 each + spread 1 + name 1 + directive 1 + its argument and value 2 = 6 each;
        // the definition: 4.
        assert_eq!(c, Cost { selections: 12 + 4, depth: 2, nesting: 2 });
        // Arguments and their values count, at every spread.
        let c = cost("{ ...F ...F } fragment F on Query { plugins(x: [1, 2], y: {a: 1}) { name } }").unwrap();
        // plugins 1 + x (1 + 3) + y (1 + 2) + name 1 = 9; per spread 10; twice, plus the definition.
        assert_eq!(c.selections, 20 + 9);
    }

    #[test]
    fn a_fragment_bomb_is_costed_without_expanding_it() {
        let q = fragment_bomb(30);
        let started = std::time::Instant::now();
        let c = cost(&q).unwrap();
        assert!(c.selections > 1 << 30, "{c:?}");
        assert_eq!(c.depth, 2);
        // Linear: 2^30 expansions would take many seconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn cycles_and_deep_chains_are_refused() {
        assert_eq!(
            cost("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"),
            Err(Refusal::Cycle("A".into()))
        );
        assert_eq!(cost("{ ...A } fragment A on Query { ...A }"), Err(Refusal::Cycle("A".into())));
        let mut chain = String::from("{ ...F40 } fragment F0 on Query { plugins { name } }\n");
        for i in 1..=40 {
            chain.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i - 1));
        }
        assert_eq!(cost(&chain), Err(Refusal::TooNested));
        // Costed first where it is spread shallow, then spread deep: still refused.
        let deep = format!(
            "fragment D on Query {{ plugins {{ name }} }} {{ ...D {}...D{} }}",
            "plugins { sources { ".repeat(16),
            " } }".repeat(16)
        );
        assert!(async_graphql::parser::parse_query(&deep).is_ok());
        assert_eq!(cost(&deep), Err(Refusal::TooNested));
    }
}
