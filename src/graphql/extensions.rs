//! Request guardrails that apply to every transport (POST, GET, WebSocket, SSE) because they
//! run inside async-graphql: document size and token limits, the alias limit (async-graphql has
//! none), depth and complexity (checked here rather than by the schema so the error names the
//! limit and its flag), automatic persisted queries, trusted documents, the per-request
//! response byte budget, and the error taxonomy for errors async-graphql raises itself
//! (they get `extensions.code` and the request id here, in the one place every transport passes
//! through).

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest, NextResolve,
    NextSubscribe, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Request, Response, ServerError, ServerResult, ValidationResult, Variables};
use catalog_api::ErrorCode;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use moka::sync::Cache;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::{Caller, Role, sha256_hex};
use crate::cache::normalize;

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_document_bytes: usize,
    pub max_tokens: usize,
    pub max_aliases: usize,
    /// Deepest selection nesting (`--max-depth`).
    pub max_depth: usize,
    /// Highest complexity (`--max-complexity`); list fields cost their size times their
    /// children, `content` fields cost [`CONTENT_COMPLEXITY`].
    pub max_complexity: usize,
    /// Largest response body (`--max-response-bytes`).
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_bytes: 32 * 1024,
            max_tokens: 4000,
            max_aliases: 30,
            max_depth: 16,
            max_complexity: DEFAULT_MAX_COMPLEXITY,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The default `--max-complexity`. 5000 rather than 1000 since list fields now cost
/// `limit * children`: the largest page of entities (`first: 500`) with a handful of fields must
/// still fit, while `revisions(limit: 500) { content }` (25,500) is refused.
pub const DEFAULT_MAX_COMPLEXITY: usize = 5000;
/// The default `--max-response-bytes` (8 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// What a `content` field (a whole catalog file) costs in complexity: it is typically kilobytes,
/// not the few bytes of a scalar.
pub const CONTENT_COMPLEXITY: usize = 50;

/// The request's id (from `X-Request-Id`), put in the request data by the transports; it is
/// copied into `extensions.requestId` of every error.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Marks a request whose document the HTTP layer already checked against the size and token
/// limits (before its cache lookup), so the check is not repeated. Holds the checked length.
#[derive(Clone, Copy, Debug)]
pub struct DocumentChecked(pub usize);

/// Bytes a response may still use. Put in every request's data by the guardrails; large fields
/// ([`ResponseBudget::charge`]) take from it as they resolve, so a response that would exceed
/// `--max-response-bytes` fails before it is built in full. Clones share one budget: the
/// operations of a batch draw on the same one (`http::graphql`).
#[derive(Clone, Debug)]
pub struct ResponseBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

impl ResponseBudget {
    pub fn new(limit: usize) -> ResponseBudget {
        ResponseBudget { limit, used: Arc::new(AtomicUsize::new(0)) }
    }

    /// Counts a finished response of `bytes` (its JSON) against the budget, beyond what its
    /// fields charged while resolving (`charged_before`: the budget's use before it ran).
    /// Whether the budget still holds.
    pub fn settle(&self, charged_before: usize, bytes: usize) -> bool {
        let target = charged_before.saturating_add(bytes);
        self.used.fetch_max(target, Ordering::Relaxed);
        self.used() <= self.limit
    }

    /// Bytes used so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether nothing more may be answered.
    pub fn is_spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// Takes `bytes` from the budget, or fails (and keeps failing) once it is exhausted.
    pub fn charge(&self, bytes: usize) -> async_graphql::Result<()> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            // Built field by field: `ServerError` into `Error` would keep only the message.
            let e = response_too_large(self.limit);
            let mut err = async_graphql::Error::new(e.message);
            err.extensions = e.extensions;
            return Err(err);
        }
        Ok(())
    }
}

/// Charges `bytes` to the request's response budget, if it has one (every request executed
/// through the schema does).
pub fn charge_response(ctx: &async_graphql::Context<'_>, bytes: usize) -> async_graphql::Result<()> {
    match ctx.data_opt::<ResponseBudget>() {
        Some(b) => b.charge(bytes),
        None => Ok(()),
    }
}

/// The error for a response over `--max-response-bytes`.
pub fn response_too_large(limit: usize) -> ServerError {
    error(
        format!(
            "the response is larger than {limit} bytes, the limit (--max-response-bytes); ask for fewer items \
             (a smaller `limit` or `first`) or leave out large fields such as `content`"
        ),
        ErrorCode::ValidationFailed,
        "RESPONSE_TOO_LARGE",
    )
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

    pub(crate) fn contains_text(&self, query: &str) -> bool {
        self.normalized.contains_key(&normalize(query))
    }
}

pub struct Guardrails {
    pub limits: Limits,
    pub trusted: Option<TrustedDocuments>,
    /// Callers with this role or higher may send any document when trusted documents are on.
    pub trusted_exempt: Option<Role>,
    apq: Cache<String, String>,
    /// Documents that passed every document check ([`Guardrails::parse`]), by their text.
    parsed: Cache<String, ParsedDocument, foldhash::quality::RandomState>,
    /// async-graphql's validation of a document for an operation name and variables, once it
    /// passed: a function of those and the (fixed) schema only.
    validated: Cache<ValidationKey, ValidationResult, foldhash::quality::RandomState>,
}

#[derive(Clone)]
struct ParsedDocument {
    doc: ExecutableDocument,
    weight: u32,
}

/// What a validation result depends on besides the schema.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ValidationKey {
    document: Arc<str>,
    operation: Option<Box<str>>,
    /// The variables as JSON text (`{}` when there are none).
    variables: Box<str>,
}

/// Bytes the parsed-document cache holds. A parsed document is weighed at the larger of
/// [`PARSED_WEIGHT`] times its text and [`TOKEN_WEIGHT`] per token (each name or field is a
/// node of a few hundred bytes however short its text: `{a a a ...}` is 2 bytes per field), plus
/// [`ENTRY_WEIGHT`].
const PARSED_CACHE_BYTES: u64 = 32 * 1024 * 1024;
const PARSED_WEIGHT: usize = 8;
const TOKEN_WEIGHT: usize = 256;
/// Validation results kept (keys are a document, an operation name and variables text).
const VALIDATED_CACHE_BYTES: u64 = 16 * 1024 * 1024;
const ENTRY_WEIGHT: usize = 256;

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes.saturating_add(ENTRY_WEIGHT)).unwrap_or(u32::MAX)
}

impl Guardrails {
    pub fn new(limits: Limits, trusted: Option<TrustedDocuments>, trusted_exempt: Option<Role>) -> Guardrails {
        // Parsing (pest) and validation were a quarter of an uncached `sources` query's CPU
        // (perf, release build): a client sends the same few documents again and again, so both
        // are done once per distinct document and reused.
        let parsed = Cache::builder()
            .max_capacity(PARSED_CACHE_BYTES)
            .weigher(|_: &String, v: &ParsedDocument| v.weight)
            .build_with_hasher(foldhash::quality::RandomState::default());
        let validated = Cache::builder()
            .max_capacity(VALIDATED_CACHE_BYTES)
            .weigher(|k: &ValidationKey, _: &ValidationResult| {
                weight(k.document.len() + k.operation.as_deref().map_or(0, str::len) + k.variables.len())
            })
            .build_with_hasher(foldhash::quality::RandomState::default());
        Guardrails { limits, trusted, trusted_exempt, apq: Cache::new(10_000), parsed, validated }
    }

    /// `query` parsed, within the cost and alias limits: parsed once per distinct text, then a
    /// copy of the kept document (async-graphql takes it apart to execute it). Only documents
    /// that pass are kept; one that fails costs its parse every time, as before.
    pub(crate) fn parse(&self, query: &str) -> ServerResult<ExecutableDocument> {
        if let Some(p) = self.parsed.get(query) {
            return Ok(p.doc);
        }
        let l = &self.limits;
        // Parsed here rather than by async-graphql (`next` in the extension, which nothing
        // follows: this is the schema's only extension): its recursion-depth check walks a
        // fragment again at every spread of it, exponential in a 1 KB document. The same
        // parser; the limits come from `document_cost`, one linear pass, before any of
        // async-graphql's walks.
        let doc = async_graphql::parser::parse_query(query).map_err(ServerError::from)?;
        check_cost(&doc, l)?;
        let aliases = count_aliases(&doc);
        if aliases > l.max_aliases {
            return Err(error(
                format!("the document uses {aliases} aliases; the limit is {} (--max-aliases)", l.max_aliases),
                ErrorCode::ValidationFailed,
                "TOO_MANY_ALIASES",
            ));
        }
        let bytes = query.len().saturating_mul(PARSED_WEIGHT).max(count_tokens(query).saturating_mul(TOKEN_WEIGHT));
        self.parsed.insert(query.to_string(), ParsedDocument { doc: doc.clone(), weight: weight(bytes) });
        Ok(doc)
    }

    /// Swaps in the document a request names by APQ hash (`extensions.persistedQuery.sha256Hash`)
    /// or trusted-document id (`extensions.documentId`) when it has no text, and registers an APQ
    /// document sent with its hash. Shared by the extension and the HTTP layer, which must know
    /// the real document before it decides anything (GET runs queries only; the cache key).
    /// Idempotent: a second call on the resolved request changes nothing.
    pub fn resolve_document(&self, request: &mut Request) -> ServerResult<()> {
        let id = persisted_hash(request)
            .or_else(|| request.extensions.get("documentId").map(|v| v.to_string().trim_matches('"').to_string()));
        let Some(hash) = id else {
            return Ok(());
        };
        if request.query.is_empty() {
            let known =
                self.trusted.as_ref().and_then(|t| t.by_hash.get(&hash).cloned()).or_else(|| self.apq.get(&hash));
            match known {
                Some(q) => request.query = q,
                None => return Err(error("PersistedQueryNotFound", ErrorCode::NotFound, "PERSISTED_QUERY_NOT_FOUND")),
            }
        } else if sha256_hex(&request.query) != hash {
            return Err(error(
                "provided sha does not match query",
                ErrorCode::ValidationFailed,
                "PERSISTED_QUERY_HASH_MISMATCH",
            ));
        } else if request.query.len() <= self.limits.max_document_bytes {
            self.apq.insert(hash, request.query.clone());
        }
        Ok(())
    }

    /// Whether a document was registered by APQ (so it has been seen before).
    pub fn is_registered(&self, query: &str) -> bool {
        self.is_registered_digest(&sha256_hex(query))
    }

    /// [`Guardrails::is_registered`] for a document whose sha256 (hex) is known.
    pub fn is_registered_digest(&self, digest: &str) -> bool {
        self.apq.contains_key(digest)
    }

    /// Whether a document is one of the trusted documents.
    pub fn is_trusted(&self, query: &str) -> bool {
        self.trusted.as_ref().is_some_and(|t| t.contains_text(query))
    }

    /// [`Guardrails::is_trusted`] for a document already normalised.
    pub fn is_trusted_normalized(&self, normalized: &str) -> bool {
        self.trusted.as_ref().is_some_and(|t| t.normalized.contains_key(normalized))
    }

    /// The document size and token limits: the one check used by the extension and by the HTTP
    /// layer before its cache lookup (so a padded copy of a cached query is refused too).
    pub fn check_document(&self, query: &str) -> ServerResult<()> {
        let l = &self.limits;
        if query.len() > l.max_document_bytes {
            return Err(error(
                format!(
                    "the document is {} bytes; the limit is {} (--max-document-bytes)",
                    query.len(),
                    l.max_document_bytes
                ),
                ErrorCode::ValidationFailed,
                "DOCUMENT_TOO_LARGE",
            ));
        }
        let tokens = count_tokens(query);
        if tokens > l.max_tokens {
            return Err(error(
                format!("the document has {tokens} tokens; the limit is {} (--max-tokens)", l.max_tokens),
                ErrorCode::ValidationFailed,
                "TOO_MANY_TOKENS",
            ));
        }
        let nesting = bracket_nesting(query);
        if nesting > MAX_BRACKET_NESTING {
            return Err(error(
                format!(
                    "the document nests braces, brackets and parentheses {nesting} deep; the limit is {MAX_BRACKET_NESTING} \
                     (selections and argument values alike); nest fewer levels"
                ),
                ErrorCode::ValidationFailed,
                "TOO_DEEP",
            ));
        }
        Ok(())
    }
}

/// Validation errors answered for one document; the rest are counted in one more.
pub const MAX_VALIDATION_ERRORS: usize = 50;

/// The deepest nesting of `{`, `[` and `(` a document may have. The parser and what builds
/// and drops its values recurse once per level: a 3 KB list value nested 1,600 deep overflowed
/// a worker's stack and aborted the process. Selections may nest 32 deep (`document_cost`);
/// argument values a few more.
pub const MAX_BRACKET_NESTING: usize = 100;

/// The deepest nesting of brackets outside strings and comments: one linear pass, run before
/// any parser sees the text.
pub fn bracket_nesting(query: &str) -> usize {
    let b = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    // An escaped triple quote inside a block string.
                    i += if b[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Parses a document whose nesting is within [`MAX_BRACKET_NESTING`] (else `None`, as for one
/// that does not parse): for the places that look at a document before the schema does
/// (operation type, the fan-out's check), which must not recurse on a hostile one either.
pub fn parse_bounded(query: &str) -> Option<ExecutableDocument> {
    if bracket_nesting(query) > MAX_BRACKET_NESTING {
        return None;
    }
    async_graphql::parser::parse_query(query).ok()
}

pub struct GuardrailsFactory(pub Arc<Guardrails>);

impl ExtensionFactory for GuardrailsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardrailsExt {
            g: self.0.clone(),
            request_id: Arc::new(Mutex::new(None)),
            operation: Mutex::new(None),
            validation_key: Mutex::new(None),
        })
    }
}

/// One per request (the factory creates one for each): `request_id` is read from the request
/// data in `prepare_request` and stamped on the errors in `request` / `subscribe`, which run
/// before the request data is available to them.
struct GuardrailsExt {
    g: Arc<Guardrails>,
    request_id: Arc<Mutex<Option<String>>>,
    /// The request's operation name (from `prepare_request`), then the key its validation is
    /// kept under (from `parse_query`).
    operation: Mutex<Option<Box<str>>>,
    validation_key: Mutex<Option<ValidationKey>>,
}

/// Messages of errors async-graphql raises itself about the client's input (argument
/// validators, input coercion, operation selection): client mistakes, so VALIDATION_FAILED.
const CLIENT_ERROR_PREFIXES: &[&str] = &[
    "Invalid value for argument",
    "Failed to parse",
    "Unknown operation named",
    "Operation name required",
    "Invalid value",
    "Internal: Invalid value",
    "Variable ",
    "Expected input type",
];

/// Gives every error an `extensions.code` (and the request id): errors from our resolvers keep
/// theirs; errors async-graphql raised about the request (parse, validation, argument
/// validators, input types) are VALIDATION_FAILED; anything else is INTERNAL.
pub fn classify_errors(resp: &mut Response, request_id: Option<&str>) {
    let request_error = resp.data == async_graphql::Value::Null;
    for err in &mut resp.errors {
        let client =
            (request_error && err.path.is_empty()) || CLIENT_ERROR_PREFIXES.iter().any(|p| err.message.starts_with(p));
        let ext = err.extensions.get_or_insert_with(ErrorExtensionValues::default);
        if ext.get("code").is_none() {
            if client {
                ext.set("code", ErrorCode::ValidationFailed.as_str());
                ext.set("reason", "GRAPHQL_VALIDATION");
            } else {
                ext.set("code", ErrorCode::Internal.as_str());
            }
        }
        if let Some(id) = request_id
            && ext.get("requestId").is_none()
        {
            ext.set("requestId", id);
        }
    }
}

fn error(message: impl Into<String>, code: ErrorCode, reason: &str) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code.as_str());
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

/// The document's figures with every fragment spread expanded (computed without expanding
/// them: `document_cost`), against the limits: the nesting the parser allows, `--max-depth`,
/// and `--max-complexity` as a bound on the selections async-graphql's validation will walk.
fn check_cost(doc: &ExecutableDocument, l: &Limits) -> ServerResult<()> {
    use super::document_cost::{MAX_NESTING, Refusal, expanded};
    let cost = match expanded(doc) {
        Ok(c) => c,
        Err(Refusal::Cycle(name)) => {
            return Err(error(
                format!("fragment `{name}` spreads itself (directly or through other fragments); remove the cycle"),
                ErrorCode::ValidationFailed,
                "FRAGMENT_CYCLE",
            ));
        }
        Err(Refusal::TooNested) => {
            return Err(error(
                format!(
                    "the query nests selections (fields, fragments and spreads) more than {MAX_NESTING} levels deep; \
                     nest fewer levels"
                ),
                ErrorCode::ValidationFailed,
                "TOO_DEEP",
            ));
        }
    };
    if cost.depth > l.max_depth {
        return Err(too_deep(cost.depth, l.max_depth));
    }
    if cost.selections > l.max_complexity as u64 {
        return Err(error(
            format!(
                "the query is too complex: with its fragments expanded it selects {} fields, fragments and directives; \
                 the limit is {} (--max-complexity). Spread fewer fragments, or spread them fewer times",
                cost.selections, l.max_complexity
            ),
            ErrorCode::ValidationFailed,
            "TOO_COMPLEX",
        ));
    }
    Ok(())
}

fn too_deep(depth: usize, max: usize) -> ServerError {
    error(
        format!("the query is nested too deep: {depth} levels; the limit is {max} (--max-depth)"),
        ErrorCode::ValidationFailed,
        "TOO_DEEP",
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn persisted_hash(req: &Request) -> Option<String> {
    let pq = req.extensions.get("persistedQuery")?;
    let v = serde_json::to_value(pq).ok()?;
    v.get("sha256Hash").and_then(|h| h.as_str()).map(str::to_string)
}

#[async_graphql::async_trait::async_trait]
impl Extension for GuardrailsExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        let id = self.request_id.lock().unwrap_or_else(|p| p.into_inner()).clone();
        classify_errors(&mut resp, id.as_deref());
        resp
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let id = self.request_id.clone();
        next.run(ctx, stream)
            .map(move |mut resp| {
                let id = id.lock().unwrap_or_else(|p| p.into_inner()).clone();
                classify_errors(&mut resp, id.as_deref());
                resp
            })
            .boxed()
    }

    /// Automatic persisted queries and trusted-document ids (see
    /// [`Guardrails::resolve_document`]); puts the response budget in the request data.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // From the request (HTTP, SSE), else from the session (a WebSocket connection's init data).
        let id = request
            .data
            .get(&std::any::TypeId::of::<RequestId>())
            .and_then(|d| d.downcast_ref::<RequestId>())
            .or_else(|| ctx.data_opt::<RequestId>());
        if let Some(id) = id {
            *self.request_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.0.clone());
        }
        self.g.resolve_document(&mut request)?;
        *lock(&self.operation) = request.operation_name.as_deref().map(Into::into);
        if request.data.get(&std::any::TypeId::of::<ResponseBudget>()).is_none() {
            request.data.insert(ResponseBudget::new(self.g.limits.max_response_bytes));
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
        let checked = ctx.data_opt::<DocumentChecked>().is_some_and(|c| c.0 == query.len());
        if !checked {
            self.g.check_document(query)?;
        }
        if let Some(trusted) = &self.g.trusted {
            let caller = ctx.data_opt::<Caller>();
            let exempt = match (caller, self.g.trusted_exempt) {
                (Some(c), Some(min)) => c.role >= min,
                _ => false,
            };
            if !exempt && !trusted.contains_text(query) {
                return Err(error(
                    "this operation is not in the trusted documents; send one of the operations in ui-contract/ (by text or by its sha256 in extensions.persistedQuery)",
                    ErrorCode::Forbidden,
                    "UNTRUSTED_DOCUMENT",
                ));
            }
        }
        let _ = next;
        let doc = self.g.parse(query)?;
        let variables = if variables.is_empty() {
            "{}".into()
        } else {
            serde_json::to_string(variables).unwrap_or_default().into_boxed_str()
        };
        *lock(&self.validation_key) =
            Some(ValidationKey { document: query.into(), operation: lock(&self.operation).clone(), variables });
        Ok(doc)
    }

    /// Argument values async-graphql refuses while resolving (validators such as `maximum`,
    /// input coercion) come without the argument's name: name the field and argument, keep the
    /// allowed range, and mark them VALIDATION_FAILED.
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<async_graphql::Value>> {
        // References into the document: they outlive `info`, and are read only on an error.
        let (name, field_node) = (info.name, info.field);
        let mut result = next.run(ctx, info).await;
        if let Err(e) = &mut result
            && e.extensions.as_ref().is_none_or(|x| x.get("code").is_none())
            && CLIENT_ERROR_PREFIXES.iter().any(|p| e.message.starts_with(p))
        {
            let field = name.to_string();
            let arg = e
                .locations
                .first()
                .and_then(|pos| field_node.arguments.iter().find(|(_, v)| v.pos == *pos))
                .map(|(n, _)| n.node.to_string());
            let detail = e.message.split_once(": ").map_or(e.message.as_str(), |(_, d)| d).to_string();
            let mut ext = e.extensions.take().unwrap_or_default();
            ext.set("code", ErrorCode::ValidationFailed.as_str());
            ext.set("reason", "INVALID_ARGUMENT");
            match arg {
                Some(a) => {
                    e.message = format!("argument `{a}` of `{field}`: {detail}");
                    ext.set("field", format!("{field}.{a}"));
                }
                None => {
                    e.message = format!("`{field}`: {}", e.message);
                    ext.set("field", field);
                }
            }
            e.extensions = Some(ext);
        }
        result
    }

    /// Depth and complexity, from async-graphql's own calculation (list fields cost their
    /// `limit`/`first` times their children; see the `complexity` attributes), with errors that
    /// name the limit and the flag that sets it.
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let key = lock(&self.validation_key).take();
        let known = key.as_ref().and_then(|k| self.g.validated.get(k));
        let result = match known {
            Some(r) => Ok(r),
            None => next.run(ctx).await,
        };
        let result = match result {
            Ok(r) => {
                if known.is_none()
                    && let Some(k) = key
                {
                    self.g.validated.insert(k, r);
                }
                r
            }
            Err(mut errors) => {
                // A document may repeat one mistake thousands of times (an unknown argument in
                // a fragment spread everywhere): the answer names the first ones.
                if errors.len() > MAX_VALIDATION_ERRORS {
                    let more = errors.len() - MAX_VALIDATION_ERRORS;
                    errors.truncate(MAX_VALIDATION_ERRORS);
                    errors.push(error(
                        format!("... and {more} more validation errors; fix the ones above first"),
                        ErrorCode::ValidationFailed,
                        "GRAPHQL_VALIDATION",
                    ));
                }
                return Err(errors);
            }
        };
        let l = &self.g.limits;
        if result.depth > l.max_depth {
            return Err(vec![too_deep(result.depth, l.max_depth)]);
        }
        if result.complexity > l.max_complexity {
            return Err(vec![error(
                format!(
                    "the query is too complex: its complexity is {}; the limit is {} (--max-complexity). \
                     Lists cost their `limit`/`first` times the fields selected in them and `content` costs {CONTENT_COMPLEXITY}: \
                     ask for fewer items, fewer aliases or fewer large fields",
                    result.complexity, l.max_complexity
                ),
                ErrorCode::ValidationFailed,
                "TOO_COMPLEX",
            )]);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The async-graphql messages `classify_errors` and the `resolve` hook recognise by their
    /// prefix (the library gives them no kind): each mistake below, run through the real
    /// library, must still produce a message with one of [`CLIENT_ERROR_PREFIXES`] and come
    /// out VALIDATION_FAILED, so an upgrade that rewords one fails here, not for users.
    #[tokio::test]
    async fn async_graphql_client_error_messages_still_have_the_prefixes_relied_on() {
        struct Q;
        #[async_graphql::Object]
        impl Q {
            async fn capped(&self, #[graphql(validator(maximum = 5))] n: i32) -> i32 {
                n
            }
            async fn when(&self, at: chrono::DateTime<chrono::Utc>) -> String {
                at.to_rfc3339()
            }
        }
        let schema = async_graphql::Schema::new(Q, async_graphql::EmptyMutation, async_graphql::EmptySubscription);
        let cases: [(&str, async_graphql::Request); 5] = [
            ("an argument validator", async_graphql::Request::new("{ capped(n: 9) }")),
            (
                "a scalar that does not parse",
                async_graphql::Request::new("query($a: DateTime!) { when(at: $a) }")
                    .variables(Variables::from_json(serde_json::json!({"a": "not a time"}))),
            ),
            (
                "a variable of the wrong type",
                async_graphql::Request::new("query($n: Int!) { capped(n: $n) }")
                    .variables(Variables::from_json(serde_json::json!({"n": "five"}))),
            ),
            (
                "no operation name among several",
                async_graphql::Request::new("query A { capped(n: 1) } query B { capped(n: 2) }"),
            ),
            ("an unknown operation name", async_graphql::Request::new("query A { capped(n: 1) }").operation_name("C")),
        ];
        for (what, request) in cases {
            let mut resp = schema.execute(request).await;
            let message = resp.errors.first().map(|e| e.message.clone()).unwrap_or_default();
            assert!(
                CLIENT_ERROR_PREFIXES.iter().any(|p| message.starts_with(p)),
                "{what}: async-graphql now says {message:?}, which no prefix in CLIENT_ERROR_PREFIXES matches"
            );
            classify_errors(&mut resp, None);
            let code = resp.errors[0].extensions.as_ref().and_then(|x| x.get("code")).map(|v| v.to_string());
            assert_eq!(code.as_deref(), Some("\"VALIDATION_FAILED\""), "{what}: {message}");
        }
    }

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
    fn bracket_nesting_skips_strings_and_comments() {
        assert_eq!(bracket_nesting("{ a { b(x: [[1]]) } }"), 5);
        assert_eq!(bracket_nesting("{ a(x: \"{{{[[[\") # {{{{\n }"), 2);
        assert_eq!(bracket_nesting("{ a(x: \"\"\" {{{ \\\"\"\" [[[ \"\"\") }"), 2);
        assert_eq!(bracket_nesting("{ a(x: \"\\\"{{\") }"), 2);
        let deep = format!("{{ plugins(x: {}1{}) {{ name }} }}", "[".repeat(1600), "]".repeat(1600));
        assert_eq!(bracket_nesting(&deep), 1602);
        assert!(parse_bounded(&deep).is_none());
    }

    #[test]
    fn trusted_documents_match_by_text_ignoring_formatting() {
        let t = TrustedDocuments::from_documents(["query A { plugins { name } }".to_string()]);
        assert!(t.contains_text("query A {\n  plugins {\n    name\n  }\n}"));
        assert!(!t.contains_text("query A { plugins { name sourceCount } }"));
    }
}
