//! The query response cache.
//!
//! Keyed by the catalog's generation, the normalised document, the operation name, the
//! variables and the caller's role. The generation is read *before* a query executes and is
//! bumped by the core after every visible change, and by the HTTP layer after every mutation
//! before its response is sent. So:
//! - a read that starts after a mutation's response has arrived uses a newer generation and can
//!   never hit an entry computed before that mutation;
//! - a result computed before an invalidation is stored under the old generation, where no
//!   later read looks: it can never be served after the invalidation.
//!
//! `invalidate_all` on a bump only frees memory; correctness comes from the key.
//!
//! Bodies are kept as [`Bytes`], so a hit hands the stored body to the response without a copy.

use bytes::Bytes;
use moka::Equivalent;
use moka::future::Cache;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::auth::Role;

/// Two keys are equal only when the requests are the same query for the same caller at the same
/// generation. `variables` is JSON text: the client's own text when the request was read
/// without being parsed into GraphQL values (equal text is an equal value, so sharing an entry
/// is right; differently spaced copies of one value only miss).
///
/// Hashing feeds the cache's (keyed) hasher the document's precomputed hash
/// ([`document_hash`], worked out once per distinct document) instead of the document text;
/// equality still compares the whole text. A hit is looked up by a borrowed [`KeyRef`] of the
/// same hash and equality, so it builds nothing; the owned key is made only on a miss.
#[derive(Clone, Debug)]
pub struct CacheKey {
    pub generation: u64,
    /// The normalised document, shared with the document facts (no copy per request).
    pub document: Arc<str>,
    /// [`document_hash`] of `document`.
    pub document_hash: u64,
    pub operation: Option<Box<str>>,
    pub variables: Box<str>,
    /// The caller's role and name: answers depend on the role, and an exempt caller's answer to
    /// a document outside the trusted set must not reach anyone else.
    pub role: Role,
    pub caller: Box<str>,
}

/// A [`CacheKey`] made of borrowed parts: what a lookup needs, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    pub generation: u64,
    pub document: &'a str,
    /// [`document_hash`] of `document`.
    pub document_hash: u64,
    pub operation: Option<&'a str>,
    pub variables: &'a str,
    pub role: Role,
    pub caller: &'a str,
}

impl KeyRef<'_> {
    /// The owned key, sharing `document` (the same text as `self.document`).
    pub fn to_key(&self, document: &Arc<str>) -> CacheKey {
        debug_assert_eq!(&**document, self.document);
        CacheKey {
            generation: self.generation,
            document: document.clone(),
            document_hash: self.document_hash,
            operation: self.operation.map(Into::into),
            variables: self.variables.into(),
            role: self.role,
            caller: self.caller.into(),
        }
    }
}

impl CacheKey {
    pub fn view(&self) -> KeyRef<'_> {
        KeyRef {
            generation: self.generation,
            document: &self.document,
            document_hash: self.document_hash,
            operation: self.operation.as_deref(),
            variables: &self.variables,
            role: self.role,
            caller: &self.caller,
        }
    }
}

/// One hash for both forms: equal keys (equal documents, so equal document hashes) hash alike.
impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.generation);
        state.write_u64(self.document_hash);
        self.operation.hash(state);
        self.variables.hash(state);
        self.role.hash(state);
        self.caller.hash(state);
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.view().hash(state);
    }
}

/// Exact: every part compared, the document by its whole text (the hash only picks the bucket).
impl PartialEq<KeyRef<'_>> for KeyRef<'_> {
    fn eq(&self, other: &KeyRef<'_>) -> bool {
        self.generation == other.generation
            && self.document_hash == other.document_hash
            && self.role == other.role
            && self.document == other.document
            && self.operation == other.operation
            && self.variables == other.variables
            && self.caller == other.caller
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &CacheKey) -> bool {
        self.view() == other.view()
    }
}

impl Eq for CacheKey {}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *self == key.view()
    }
}

/// The hash of a normalised document that [`CacheKey`] carries: SipHash with this process's
/// random key, so clients cannot choose documents that collide (and a collision would only
/// share a bucket: equality compares the text).
pub fn document_hash(document: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(document)
}

/// A stored answer: the body, and the metrics label of the operation that made it.
#[derive(Clone, Debug)]
pub struct CachedAnswer {
    pub body: Bytes,
    pub label: Arc<str>,
}

pub struct ResponseCache {
    cache: Option<Cache<CacheKey, CachedAnswer, foldhash::quality::RandomState>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl ResponseCache {
    /// `ttl` zero turns the cache off. The cache holds at most `max_entries` entries and at most
    /// `max_bytes` bytes of keys and bodies: moka has one capacity, in weight, so every entry
    /// weighs its bytes but at least `max_bytes / max_entries` (a few big answers cannot grow
    /// memory past the byte budget, and many small ones cannot pass the entry count).
    pub fn new(ttl: Duration, max_entries: u64, max_bytes: u64) -> ResponseCache {
        let floor = u32::try_from(max_bytes / max_entries.max(1)).unwrap_or(u32::MAX).max(1);
        let cache = (!ttl.is_zero() && max_entries > 0 && max_bytes > 0).then(|| {
            Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_bytes)
                .weigher(move |k: &CacheKey, v: &CachedAnswer| {
                    let bytes = k.document.len() + k.variables.len() + v.body.len();
                    u32::try_from(bytes).unwrap_or(u32::MAX).max(floor)
                })
                .build_with_hasher(foldhash::quality::RandomState::default())
        });
        ResponseCache { cache, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub async fn get(&self, key: &KeyRef<'_>) -> Option<CachedAnswer> {
        let cache = self.cache.as_ref()?;
        let hit = cache.get(key).await;
        let counter = if hit.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    pub async fn insert(&self, key: CacheKey, answer: CachedAnswer) {
        if let Some(cache) = &self.cache {
            cache.insert(key, answer).await;
        }
    }

    pub fn invalidate_all(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
}

/// Collapses insignificant whitespace and drops comments outside string literals, so that
/// `{ a }` and `{a}` share an entry while `"a  b"` and `"a b"` do not.
pub fn normalize(document: &str) -> String {
    let mut out = String::with_capacity(document.len());
    let mut chars = document.chars().peekable();
    let mut pending_space = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if pending_space && !out.is_empty() && !out.ends_with(|x: char| "{}()[]:=!$@|&.".contains(x)) {
                    out.push(' ');
                }
                pending_space = false;
                out.push('"');
                // Block string """...""" or a plain string with escapes.
                if chars.peek() == Some(&'"') {
                    chars.next();
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        out.push_str("\"\"");
                        let mut quotes = 0;
                        for d in chars.by_ref() {
                            out.push(d);
                            quotes = if d == '"' { quotes + 1 } else { 0 };
                            if quotes == 3 {
                                break;
                            }
                        }
                    } else {
                        out.push('"');
                    }
                } else {
                    let mut escaped = false;
                    for d in chars.by_ref() {
                        out.push(d);
                        if escaped {
                            escaped = false;
                        } else if d == '\\' {
                            escaped = true;
                        } else if d == '"' {
                            break;
                        }
                    }
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                pending_space = true;
            }
            c if c.is_whitespace() || c == ',' => pending_space = true,
            c => {
                let punct = |x: char| "{}()[]:=!$@|&.".contains(x);
                if pending_space && !out.is_empty() && !punct(c) && !out.ends_with(punct) {
                    out.push(' ');
                }
                pending_space = false;
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Bytes, CacheKey, CachedAnswer, Duration, KeyRef, ResponseCache, Role, document_hash, normalize};
    use std::sync::Arc;

    #[test]
    fn whitespace_and_comments_do_not_matter_but_strings_do() {
        assert_eq!(normalize("{ sources { id } }"), normalize("{sources{id}}"));
        assert_eq!(
            normalize("query A {\n  # comment\n  plugins { name, sourceCount }\n}"),
            "query A{plugins{name sourceCount}}"
        );
        assert_ne!(
            normalize(r#"{ entities(search: "a  b") { totalCount } }"#),
            normalize(r#"{ entities(search: "a b") { totalCount } }"#)
        );
        assert_eq!(normalize(r#"{ e(s: "x \" y") }"#), r#"{e(s:"x \" y")}"#);
    }

    fn key(i: usize) -> CacheKey {
        let document: Arc<str> = format!("{{q{i}}}").into();
        CacheKey {
            generation: 1,
            document_hash: document_hash(&document),
            document,
            operation: None,
            variables: "".into(),
            role: Role::Viewer,
            caller: "".into(),
        }
    }

    fn view<'a>(document: &'a str, generation: u64, variables: &'a str, role: Role, caller: &'a str) -> KeyRef<'a> {
        KeyRef {
            generation,
            document,
            document_hash: document_hash(document),
            operation: None,
            variables,
            role,
            caller,
        }
    }

    /// A hit needs every part equal: the document's hash only picks the bucket.
    #[tokio::test]
    async fn a_borrowed_key_hits_only_its_own_entry() {
        let cache = ResponseCache::new(Duration::from_secs(60), 100, 1_000_000);
        let doc: Arc<str> = "{sources{id}}".into();
        let stored = view(&doc, 3, "{\"a\":1}", Role::Viewer, "ci");
        cache.insert(stored.to_key(&doc), answer("yes")).await;
        assert_eq!(cache.get(&stored).await.map(|a| a.body), Some(Bytes::from("yes")));
        for other in [
            view(&doc, 4, "{\"a\":1}", Role::Viewer, "ci"),
            view(&doc, 3, "{\"a\":2}", Role::Viewer, "ci"),
            view(&doc, 3, "{\"a\":1}", Role::Operator, "ci"),
            view(&doc, 3, "{\"a\":1}", Role::Viewer, "cj"),
            view("{sources{name}}", 3, "{\"a\":1}", Role::Viewer, "ci"),
            KeyRef { operation: Some("A"), ..stored },
            // Same bucket, other text: equality still tells them apart.
            KeyRef { document: "{sources{name}}", ..stored },
        ] {
            assert!(cache.get(&other).await.is_none(), "{other:?}");
        }
    }

    fn answer(body: &str) -> CachedAnswer {
        CachedAnswer { body: Bytes::from(body.to_string()), label: "anonymous".into() }
    }

    /// Review finding: the cache was bounded by entry count only, so a few near-limit answers
    /// could hold gigabytes. Both bounds hold now.
    #[tokio::test]
    async fn holds_at_most_its_byte_budget_and_its_entry_count() {
        let by_bytes = ResponseCache::new(Duration::from_secs(60), 1000, 10_000);
        for i in 0..20 {
            by_bytes.insert(key(i), answer(&"x".repeat(1000))).await;
        }
        let c = by_bytes.cache.as_ref().unwrap();
        c.run_pending_tasks().await;
        assert!(c.weighted_size() <= 10_000, "{} bytes held", c.weighted_size());
        assert!(c.entry_count() < 20);

        let by_count = ResponseCache::new(Duration::from_secs(60), 5, 1_000_000);
        for i in 0..20 {
            by_count.insert(key(i), answer("small")).await;
        }
        let c = by_count.cache.as_ref().unwrap();
        c.run_pending_tasks().await;
        assert!(c.entry_count() <= 5, "{} entries held", c.entry_count());
    }
}
