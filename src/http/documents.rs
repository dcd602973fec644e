//! What the HTTP layer needs to know about a GraphQL document, worked out once per distinct
//! document text and then shared: whether it passes the document limits, its normalised text
//! (the response cache's key), and the type and name of its operations.
//!
//! Before this, every request parsed its document up to three times (the operation type twice,
//! the metrics label once) and normalised it twice, cache hit or not. Now a repeated document
//! costs one hash lookup; the limits verdict is the same function of the same text, so the
//! document limits still hold on every request, cache hits included.

use async_graphql::Positioned;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
};
use async_graphql_value::Value;
use moka::sync::Cache;
use std::sync::Arc;

use crate::auth::sha256_hex;
use crate::cache::normalize;
use crate::graphql::extensions::Guardrails;
use catalog_core::PluginKind;

/// The facts about one document text that passed the document limits.
#[derive(Debug)]
pub struct DocumentFacts {
    /// The text with insignificant whitespace and comments removed.
    pub normalized: Arc<str>,
    /// [`crate::cache::document_hash`] of `normalized`: the response cache hashes this, not the
    /// text, on every lookup.
    pub document_hash: u64,
    /// sha256 (hex) of the text as sent (what APQ registers it under) and of `normalized` (what
    /// the metrics remember it by): worked out once, not per request.
    pub digest: Box<str>,
    pub normalized_digest: Box<str>,
    /// Each operation's name (`None` for an anonymous single operation), type and what it
    /// reads or changes; empty when the document does not parse (execution reports why).
    operations: Vec<(Option<Box<str>>, OperationType, Touches)>,
}

/// What an operation's answer can depend on (a query) or what it can change (a mutation): the
/// response cache keys a query by the generation of what it reads, and a mutation bumps what it
/// changes, so a change to one plugin leaves the other plugin's answers cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touches {
    /// Anything (the safe answer for every field not listed in [`Touches::of`]).
    Everything,
    /// Only these plugins' sources and entities, each named by a literal or a variable.
    Plugins(Vec<PluginArg>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginArg {
    Named(Box<str>),
    Variable(Box<str>),
}

/// Query fields whose answer depends on one plugin's sources and entities only, named by their
/// `plugin` argument (`sources` only when it is given).
const PLUGIN_QUERIES: &[&str] = &["sources", "source", "entities"];

impl Touches {
    /// From the operation's top-level fields: a query field in [`PLUGIN_QUERIES`], or a mutation
    /// field, with a `plugin` argument touches that plugin; `__typename` touches nothing; any
    /// other field, or a fragment at the top level, may touch anything.
    fn of(op: &Positioned<OperationDefinition>) -> Touches {
        let mut plugins = Vec::new();
        for item in &op.node.selection_set.node.items {
            let Selection::Field(field) = &item.node else { return Touches::Everything };
            let name = field.node.name.node.as_str();
            if name == "__typename" {
                continue;
            }
            let scoped = match op.node.ty {
                OperationType::Query => PLUGIN_QUERIES.contains(&name),
                OperationType::Mutation => true,
                OperationType::Subscription => false,
            };
            let arg = field.node.get_argument("plugin").map(|v| &v.node);
            match (scoped, arg) {
                (true, Some(Value::String(p))) => plugins.push(PluginArg::Named(p.as_str().into())),
                (true, Some(Value::Variable(v))) => plugins.push(PluginArg::Variable(v.as_str().into())),
                _ => return Touches::Everything,
            }
        }
        Touches::Plugins(plugins)
    }

    /// The plugins touched, given a way to read a variable's value; `None` for everything (also
    /// when a plugin is not one, or a variable is missing or not a string).
    pub fn plugins(&self, variable: impl Fn(&str) -> Option<String>) -> Option<Vec<PluginKind>> {
        let Touches::Plugins(args) = self else { return None };
        let mut out = Vec::with_capacity(args.len());
        for a in args {
            let name = match a {
                PluginArg::Named(n) => PluginKind::parse(n),
                PluginArg::Variable(v) => variable(v).as_deref().and_then(PluginKind::parse),
            };
            let p = name?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Some(out)
    }

    pub fn uses_variables(&self) -> bool {
        matches!(self, Touches::Plugins(args) if args.iter().any(|a| matches!(a, PluginArg::Variable(_))))
    }
}

impl DocumentFacts {
    #[cfg(test)]
    fn new(query: &str) -> DocumentFacts {
        DocumentFacts::of(query, async_graphql::parser::parse_query(query).ok())
    }

    /// The facts of `query`, parsed as `doc` (`None`: it does not parse).
    fn of(query: &str, doc: Option<ExecutableDocument>) -> DocumentFacts {
        let operations = match doc {
            Some(doc) => match doc.operations {
                DocumentOperations::Single(op) => vec![(None, op.node.ty, Touches::of(&op))],
                DocumentOperations::Multiple(map) => map
                    .into_iter()
                    .map(|(name, op)| (Some(name.as_str().into()), op.node.ty, Touches::of(&op)))
                    .collect(),
            },
            None => Vec::new(),
        };
        let normalized: Arc<str> = normalize(query).into();
        DocumentFacts {
            document_hash: crate::cache::document_hash(&normalized),
            digest: sha256_hex(query).into(),
            normalized_digest: sha256_hex(&normalized).into(),
            normalized,
            operations,
        }
    }

    /// The type of the operation a request naming `operation` would run; `None` when the
    /// document does not parse or the operation cannot be chosen (execution will say why).
    pub fn operation_type(&self, operation: Option<&str>) -> Option<OperationType> {
        self.operation(operation).map(|(ty, _)| ty)
    }

    /// What the operation a request naming `operation` would run reads or changes
    /// ([`Touches::Everything`] when it cannot be chosen).
    pub fn touches(&self, operation: Option<&str>) -> &Touches {
        const EVERYTHING: &Touches = &Touches::Everything;
        self.operation(operation).map_or(EVERYTHING, |(_, t)| t)
    }

    fn operation(&self, operation: Option<&str>) -> Option<(OperationType, &Touches)> {
        let found = match (operation, self.operations.as_slice()) {
            (_, [(None, ty, t)]) => Some((ty, t)),
            (Some(name), ops) => ops.iter().find(|(n, _, _)| n.as_deref() == Some(name)).map(|(_, ty, t)| (ty, t)),
            (None, [(_, ty, t)]) => Some((ty, t)),
            (None, _) => None,
        };
        found.map(|(ty, t)| (*ty, t))
    }

    /// The name of the document's only operation, when it has exactly one named operation.
    pub fn single_name(&self) -> Option<&str> {
        match self.operations.as_slice() {
            [(Some(name), _, _)] => Some(name),
            _ => None,
        }
    }
}

/// Bounded by the bytes of the documents it holds.
pub struct DocumentCache {
    cache: Cache<String, Arc<DocumentFacts>, foldhash::quality::RandomState>,
}

/// Most bytes of document text (twice: as sent and normalised) the cache holds.
const DOCUMENT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Default for DocumentCache {
    fn default() -> Self {
        DocumentCache {
            cache: Cache::builder()
                .max_capacity(DOCUMENT_CACHE_BYTES)
                .weigher(|k: &String, v: &Arc<DocumentFacts>| {
                    u32::try_from(k.len() + v.normalized.len() + 64).unwrap_or(u32::MAX)
                })
                .build_with_hasher(foldhash::quality::RandomState::default()),
        }
    }
}

impl DocumentCache {
    /// The facts about `query`, or the limits error for it. Only documents within the limits
    /// are parsed and kept, so an attacker's one-off documents cost what the limits allow once.
    pub fn facts(&self, guardrails: &Guardrails, query: &str) -> async_graphql::ServerResult<Arc<DocumentFacts>> {
        if let Some(f) = self.cache.get(query) {
            return Ok(f);
        }
        guardrails.check_document(query)?;
        // The schema's own parse (kept for the extension, so a document that passes is parsed
        // once in all); one over the cost limits is parsed here without them, so that its
        // operation type is still known (a refused query must not count as a mutation).
        let doc = guardrails.parse(query).ok().or_else(|| async_graphql::parser::parse_query(query).ok());
        let facts = Arc::new(DocumentFacts::of(query, doc));
        self.cache.insert(query.to_string(), facts.clone());
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::{DocumentFacts, OperationType};

    #[test]
    fn operation_types_follow_the_operation_name() {
        let single = DocumentFacts::new("{ sources { id } }");
        assert_eq!(single.operation_type(None), Some(OperationType::Query));
        assert_eq!(single.operation_type(Some("Any")), Some(OperationType::Query));
        assert_eq!(single.single_name(), None);
        let named = DocumentFacts::new("query A { plugins { name } } mutation B { refreshAll { id } }");
        assert_eq!(named.operation_type(Some("A")), Some(OperationType::Query));
        assert_eq!(named.operation_type(Some("B")), Some(OperationType::Mutation));
        assert_eq!(named.operation_type(Some("C")), None);
        assert_eq!(named.operation_type(None), None);
        let one = DocumentFacts::new("mutation Only { refreshAll { id } }");
        assert_eq!(one.operation_type(None), Some(OperationType::Mutation));
        assert_eq!(one.single_name(), Some("Only"));
        assert_eq!(DocumentFacts::new("{ broken").operation_type(None), None);
    }
}
