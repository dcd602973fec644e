//! What the HTTP layer needs to know about a GraphQL document, worked out once per distinct
//! document text and then shared: whether it passes the document limits, its normalised text
//! (the response cache's key), and the type and name of its operations.
//!
//! Before this, every request parsed its document up to three times (the operation type twice,
//! the metrics label once) and normalised it twice, cache hit or not. Now a repeated document
//! costs one hash lookup; the limits verdict is the same function of the same text, so the
//! document limits still hold on every request, cache hits included.

use async_graphql::parser::types::{DocumentOperations, OperationType};
use moka::sync::Cache;
use std::sync::Arc;

use crate::cache::normalize;
use crate::graphql::extensions::Guardrails;

/// The facts about one document text that passed the document limits.
#[derive(Debug)]
pub struct DocumentFacts {
    /// The text with insignificant whitespace and comments removed.
    pub normalized: Arc<str>,
    /// [`crate::cache::document_hash`] of `normalized`: the response cache hashes this, not the
    /// text, on every lookup.
    pub document_hash: u64,
    /// Each operation's name (`None` for an anonymous single operation) and type; empty when
    /// the document does not parse (execution reports why).
    operations: Vec<(Option<Box<str>>, OperationType)>,
}

impl DocumentFacts {
    fn new(query: &str) -> DocumentFacts {
        let operations = match async_graphql::parser::parse_query(query) {
            Ok(doc) => match doc.operations {
                DocumentOperations::Single(op) => vec![(None, op.node.ty)],
                DocumentOperations::Multiple(map) => {
                    map.into_iter().map(|(name, op)| (Some(name.as_str().into()), op.node.ty)).collect()
                }
            },
            Err(_) => Vec::new(),
        };
        let normalized: Arc<str> = normalize(query).into();
        DocumentFacts { document_hash: crate::cache::document_hash(&normalized), normalized, operations }
    }

    /// The type of the operation a request naming `operation` would run; `None` when the
    /// document does not parse or the operation cannot be chosen (execution will say why).
    pub fn operation_type(&self, operation: Option<&str>) -> Option<OperationType> {
        match (operation, self.operations.as_slice()) {
            (_, [(None, ty)]) => Some(*ty),
            (Some(name), ops) => ops.iter().find(|(n, _)| n.as_deref() == Some(name)).map(|(_, ty)| *ty),
            (None, [(_, ty)]) => Some(*ty),
            (None, _) => None,
        }
    }

    /// The name of the document's only operation, when it has exactly one named operation.
    pub fn single_name(&self) -> Option<&str> {
        match self.operations.as_slice() {
            [(Some(name), _)] => Some(name),
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
        let facts = Arc::new(DocumentFacts::new(query));
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
