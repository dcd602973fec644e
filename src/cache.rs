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
use moka::future::Cache;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Two keys are equal only when the requests are the same query for the same caller at the same
/// generation. `variables` is JSON text: the client's own text when the request was read
/// without being parsed into GraphQL values (equal text is an equal value, so sharing an entry
/// is right; differently spaced copies of one value only miss).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct CacheKey {
    pub generation: u64,
    /// The normalised document, shared with the document facts (no copy per request).
    pub document: Arc<str>,
    pub operation: Option<Box<str>>,
    pub variables: Box<str>,
    /// The caller's role and name: answers depend on the role, and an exempt caller's answer to
    /// a document outside the trusted set must not reach anyone else.
    pub caller: Box<str>,
}

/// A stored answer: the body, and the metrics label of the operation that made it.
#[derive(Clone, Debug)]
pub struct CachedAnswer {
    pub body: Bytes,
    pub label: Arc<str>,
}

pub struct ResponseCache {
    cache: Option<Cache<CacheKey, CachedAnswer>>,
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
                .build()
        });
        ResponseCache { cache, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub async fn get(&self, key: &CacheKey) -> Option<CachedAnswer> {
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
    use super::{Bytes, CacheKey, CachedAnswer, Duration, ResponseCache, normalize};

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
        CacheKey {
            generation: 1,
            document: format!("{{q{i}}}").into(),
            operation: None,
            variables: "".into(),
            caller: "".into(),
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
