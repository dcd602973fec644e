//! Request guardrails that apply to every transport (POST, GET, WebSocket, SSE) because they
//! run inside async-graphql: document size and token limits, the alias limit (async-graphql has
//! none), automatic persisted queries, and trusted documents.

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, ServerError, ServerResult, Variables};
use moka::sync::Cache;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::{Caller, Role, sha256_hex};
use crate::cache::normalize;

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_document_bytes: usize,
    pub max_tokens: usize,
    pub max_aliases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_document_bytes: 32 * 1024, max_tokens: 4000, max_aliases: 30 }
    }
}

/// sha256 (hex) → document, built from `ui-contract/` (one document per `.graphql` file).
#[derive(Clone, Debug, Default)]
pub struct TrustedDocuments {
    pub by_hash: HashMap<String, String>,
    normalized: HashMap<String, String>,
}

impl TrustedDocuments {
    pub fn from_documents(docs: impl IntoIterator<Item = String>) -> TrustedDocuments {
        let mut t = TrustedDocuments::default();
        for d in docs {
            let hash = sha256_hex(&d);
            t.normalized.insert(normalize(&d), hash.clone());
            t.by_hash.insert(hash, d);
        }
        t
    }

    /// A directory of `.graphql` files, or a JSON manifest `{ "<sha256>": "<document>" }`.
    pub fn load(path: &Path) -> anyhow::Result<TrustedDocuments> {
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "graphql"))
                .collect();
            files.sort();
            let docs: Vec<String> = files.iter().map(std::fs::read_to_string).collect::<Result<_, _>>()?;
            anyhow::ensure!(!docs.is_empty(), "no .graphql files in {}", path.display());
            return Ok(TrustedDocuments::from_documents(docs));
        }
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let map: HashMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a manifest {{\"sha256\": \"document\"}}: {e}", path.display()))?;
        for (h, d) in &map {
            anyhow::ensure!(sha256_hex(d) == *h, "{}: the hash {h} does not match its document", path.display());
        }
        Ok(TrustedDocuments::from_documents(map.into_values()))
    }

    pub fn manifest_json(&self) -> String {
        let sorted: std::collections::BTreeMap<_, _> = self.by_hash.iter().collect();
        serde_json::to_string_pretty(&sorted).unwrap_or_default()
    }

    fn contains_text(&self, query: &str) -> bool {
        self.normalized.contains_key(&normalize(query))
    }
}

pub struct Guardrails {
    pub limits: Limits,
    pub trusted: Option<TrustedDocuments>,
    /// Callers with this role or higher may send any document when trusted documents are on.
    pub trusted_exempt: Option<Role>,
    apq: Cache<String, String>,
}

impl Guardrails {
    pub fn new(limits: Limits, trusted: Option<TrustedDocuments>, trusted_exempt: Option<Role>) -> Guardrails {
        Guardrails { limits, trusted, trusted_exempt, apq: Cache::new(10_000) }
    }
}

pub struct GuardrailsFactory(pub Arc<Guardrails>);

impl ExtensionFactory for GuardrailsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardrailsExt(self.0.clone()))
    }
}

struct GuardrailsExt(Arc<Guardrails>);

fn error(message: impl Into<String>, code: &str, reason: &str) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code);
    ext.set("reason", reason);
    e.extensions = Some(ext);
    e
}

/// GraphQL tokens, roughly as the lexer counts them (punctuators, names, numbers, strings).
fn count_tokens(query: &str) -> usize {
    let n = normalize(query);
    let mut count = 0;
    let mut in_word = false;
    let mut in_string = false;
    let mut prev = ' ';
    for c in n.chars() {
        if in_string {
            if c == '"' && prev != '\\' {
                in_string = false;
            }
            prev = c;
            continue;
        }
        if c == '"' {
            in_string = true;
            count += 1;
            in_word = false;
        } else if c.is_alphanumeric() || c == '_' || c == '-' {
            if !in_word {
                count += 1;
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                count += 1;
            }
        }
        prev = c;
    }
    count
}

fn count_aliases(doc: &ExecutableDocument) -> usize {
    fn walk(set: &SelectionSet, depth: usize) -> usize {
        if depth > 64 {
            return 0;
        }
        set.items
            .iter()
            .map(|s| match &s.node {
                Selection::Field(f) => {
                    usize::from(f.node.alias.is_some()) + walk(&f.node.selection_set.node, depth + 1)
                }
                Selection::InlineFragment(f) => walk(&f.node.selection_set.node, depth + 1),
                // Fragment definitions are counted once below, not per spread.
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let ops: usize = doc.operations.iter().map(|(_, op)| walk(&op.node.selection_set.node, 0)).sum();
    let frags: usize = doc.fragments.values().map(|f| walk(&f.node.selection_set.node, 0)).sum();
    ops + frags
}

fn persisted_hash(req: &Request) -> Option<String> {
    let pq = req.extensions.get("persistedQuery")?;
    let v = serde_json::to_value(pq).ok()?;
    v.get("sha256Hash").and_then(|h| h.as_str()).map(str::to_string)
}

#[async_graphql::async_trait::async_trait]
impl Extension for GuardrailsExt {
    /// Automatic persisted queries: a request may carry only the sha256 of a document the server
    /// has seen (or that is trusted); a request with both registers the document.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let id = persisted_hash(&request)
            .or_else(|| request.extensions.get("documentId").map(|v| v.to_string().trim_matches('"').to_string()));
        if let Some(hash) = id {
            if request.query.is_empty() {
                let known = self
                    .0
                    .trusted
                    .as_ref()
                    .and_then(|t| t.by_hash.get(&hash).cloned())
                    .or_else(|| self.0.apq.get(&hash));
                match known {
                    Some(q) => request.query = q,
                    None => return Err(error("PersistedQueryNotFound", "NOT_FOUND", "PERSISTED_QUERY_NOT_FOUND")),
                }
            } else if sha256_hex(&request.query) != hash {
                return Err(error(
                    "provided sha does not match query",
                    "VALIDATION_FAILED",
                    "PERSISTED_QUERY_HASH_MISMATCH",
                ));
            } else if request.query.len() <= self.0.limits.max_document_bytes {
                self.0.apq.insert(hash, request.query.clone());
            }
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let l = &self.0.limits;
        if query.len() > l.max_document_bytes {
            return Err(error(
                format!("the document is {} bytes; the limit is {}", query.len(), l.max_document_bytes),
                "VALIDATION_FAILED",
                "DOCUMENT_TOO_LARGE",
            ));
        }
        let tokens = count_tokens(query);
        if tokens > l.max_tokens {
            return Err(error(
                format!("the document has {tokens} tokens; the limit is {}", l.max_tokens),
                "VALIDATION_FAILED",
                "TOO_MANY_TOKENS",
            ));
        }
        if let Some(trusted) = &self.0.trusted {
            let caller = ctx.data_opt::<Caller>();
            let exempt = match (caller, self.0.trusted_exempt) {
                (Some(c), Some(min)) => c.role >= min,
                _ => false,
            };
            if !exempt && !trusted.contains_text(query) {
                return Err(error(
                    "this operation is not in the trusted documents; send one of the operations in ui-contract/ (by text or by its sha256 in extensions.persistedQuery)",
                    "FORBIDDEN",
                    "UNTRUSTED_DOCUMENT",
                ));
            }
        }
        let doc = next.run(ctx, query, variables).await?;
        let aliases = count_aliases(&doc);
        if aliases > l.max_aliases {
            return Err(error(
                format!("the document uses {aliases} aliases; the limit is {}", l.max_aliases),
                "VALIDATION_FAILED",
                "TOO_MANY_ALIASES",
            ));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tokens_and_aliases() {
        assert_eq!(count_tokens("{ a b(x: \"y z\") }"), 9);
        let doc = async_graphql::parser::parse_query(
            "query { x: plugins { n: name } ...F } fragment F on Query { y: plugins { name } }",
        )
        .unwrap();
        assert_eq!(count_aliases(&doc), 3);
    }

    #[test]
    fn trusted_documents_match_by_text_ignoring_formatting() {
        let t = TrustedDocuments::from_documents(["query A { plugins { name } }".to_string()]);
        assert!(t.contains_text("query A {\n  plugins {\n    name\n  }\n}"));
        assert!(!t.contains_text("query A { plugins { name sourceCount } }"));
    }
}
