//! Parsing a large catalog's entity list in pieces, on several threads.
//!
//! Why: serde_yaml_ng loads every event of a document (a `Vec` of events with their marks)
//! before it deserializes anything, so a 100k-model catalog peaked at ~1 GB of parser memory,
//! and one file parsed on one core. The list under a top-level key (`models:`) is the whole of
//! such a file; its items are independent YAML nodes, so they can be parsed apart: each piece's
//! events live only while that piece is parsed, and the pieces are parsed in parallel.
//!
//! When it is the same as parsing the whole file: a piece is a run of whole items, the exact
//! bytes of the file, starting at an item's `- ` line. Item boundaries are only taken from lines
//! that the YAML grammar cannot read any other way: a line indented exactly as the list's first
//! `- ` and starting with `- `, while every line of an item other than its first is blank, a
//! comment, or indented deeper. A quoted, flow or block scalar cut in two by such a boundary
//! would be an error in its piece (an unterminated quote or bracket), so it cannot parse into
//! something else. Aliases to anchors in another piece are unknown in the piece: an error too.
//! So [`parse_list`] either returns the same items as the whole parse or `None`, and on `None`
//! (any error, any shape it does not handle: documents markers, directives, tabs in
//! indentation, a flow list) the caller parses the whole file as before, which gives the same
//! diagnostics as it always did. The cost of that fallback is one more parse of a file that
//! has an error. Each piece is read by `subset` (the same value, ~3x faster) and by
//! serde_yaml_ng only where that declines.

use serde::de::DeserializeOwned;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Files smaller than this are parsed whole: splitting them gains nothing.
pub const MIN_SPLIT_BYTES: usize = 256 * 1024;
/// Roughly how many bytes of items go into one piece: small enough that a piece's parser
/// events stay a few MB, large enough that the per-piece overhead does not show.
const PIECE_BYTES: usize = 256 * 1024;
/// At most this many threads parse pieces of one file.
const MAX_THREADS: usize = 4;

/// A file cut around its top-level list: `rest` is the file without the list's items (the key
/// line stays, with an empty value), `pieces` are runs of whole items in file order.
#[derive(Debug, PartialEq)]
pub struct Split<'t> {
    pub rest: String,
    pub pieces: Vec<&'t str>,
}

/// Finds the block list under the top-level `key:` and cuts it into pieces of whole items, or
/// `None` when the file does not have the plain shape this handles (see the module docs).
pub fn split<'t>(text: &'t str, key: &str, piece_bytes: usize) -> Option<Split<'t>> {
    let bytes = text.as_bytes();
    let mut lines = Lines { bytes, at: 0 };
    // The key line: `key:` at column 0, nothing but spaces or a comment after it. Exactly once.
    let mut key_end = None;
    let mut region = None;
    while let Some((start, end)) = lines.next() {
        let line = &bytes[start..end];
        refuse_line(line)?;
        let is_key = is_key_line(line, key.as_bytes());
        if key_end.is_none() && !is_key {
            // Before the list, only lines that cannot leave a quote, a bracket or a block
            // scalar open: then the key line is a key of the top-level mapping.
            plain_top_level_line(line)?;
            continue;
        }
        if is_key {
            if key_end.is_some() {
                return None;
            }
            key_end = Some(lines.at);
            region = Some(list_region(bytes, lines.at, piece_bytes)?);
            lines.at = region.as_ref().map_or(lines.at, |r: &Region| r.end);
        }
    }
    let (key_end, region) = (key_end?, region?);
    debug_assert!(key_end <= region.starts[0]);
    let mut rest = String::with_capacity(region.starts[0] + (text.len() - region.end));
    rest.push_str(text.get(..region.starts[0])?);
    rest.push_str(text.get(region.end..)?);
    let mut pieces = Vec::with_capacity(region.starts.len());
    for (i, &s) in region.starts.iter().enumerate() {
        let e = region.starts.get(i + 1).copied().unwrap_or(region.end);
        pieces.push(text.get(s..e)?);
    }
    Some(Split { rest, pieces })
}

struct Region {
    /// Byte offsets where pieces start (each at an item's `- ` line).
    starts: Vec<usize>,
    /// Where the list ends: the first line after it that is not part of it, or the file's end.
    end: usize,
}

/// Reads the list that follows the key line (`from` is the offset after it).
fn list_region(bytes: &[u8], from: usize, piece_bytes: usize) -> Option<Region> {
    let lines = Lines { bytes, at: from };
    let mut indent = None;
    let mut starts = Vec::new();
    let mut piece_start = 0usize;
    for (start, end) in lines {
        let line = &bytes[start..end];
        refuse_line(line)?;
        let n = line.iter().take_while(|&&b| b == b' ').count();
        let body = &line[n..];
        if body.is_empty() || body[0] == b'#' {
            continue;
        }
        let item = body == b"-" || body.starts_with(b"- ");
        match indent {
            None if item => {
                indent = Some(n);
                starts.push(start);
                piece_start = start;
            }
            // The key has a value on a later line that is not a block list: not handled.
            None => return None,
            Some(i) if n > i => {}
            Some(i) if n == i && item => {
                if start - piece_start >= piece_bytes {
                    starts.push(start);
                    piece_start = start;
                }
            }
            // The list ended: only a next top-level key may follow it.
            Some(_) if n == 0 => return Some(Region { starts, end: start }),
            Some(_) => return None,
        }
    }
    indent.map(|_| Region { starts, end: bytes.len() })
}

/// Lines that this splitter does not reason about: document markers, directives and tabs in
/// the indentation. Any of them anywhere sends the file to the whole parse.
fn refuse_line(line: &[u8]) -> Option<()> {
    if line.starts_with(b"---") || line.starts_with(b"...") || line.first() == Some(&b'%') {
        return None;
    }
    let n = line.iter().take_while(|&&b| b == b' ').count();
    if line.get(n) == Some(&b'\t') {
        return None;
    }
    Some(())
}

/// A blank line, a comment, or `key: value` at column 0 with a plain key and a value that ends
/// on this line (plain, or quoted and closed; no flow collection or block scalar).
fn plain_top_level_line(line: &[u8]) -> Option<()> {
    let first = *line.iter().find(|&&b| b != b' ')?;
    if first == b'#' {
        return Some(());
    }
    if !(line[0].is_ascii_alphanumeric() || line[0] == b'_') {
        return None;
    }
    let colon = line
        .windows(2)
        .position(|w| w == b": ")
        .map(|p| p + 1)
        .or_else(|| line.ends_with(b":").then_some(line.len()))?;
    let key = &line[..colon - 1];
    if !key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return None;
    }
    let value = line.get(colon..).unwrap_or_default();
    let value = &value[value.iter().take_while(|&&b| b == b' ').count()..];
    match value.first() {
        None | Some(b'#') => Some(()),
        Some(b'[' | b'{' | b'|' | b'>' | b'&' | b'*' | b'!' | b'?' | b'-' | b'@' | b'`') => None,
        Some(&q @ (b'"' | b'\'')) => {
            let mut i = 1;
            while i < value.len() {
                match value[i] {
                    b'\\' if q == b'"' => i += 2,
                    b'\'' if q == b'\'' && value.get(i + 1) == Some(&b'\'') => i += 2,
                    b if b == q => {
                        let tail = &value[i + 1..];
                        let tail = &tail[tail.iter().take_while(|&&b| b == b' ').count()..];
                        return (tail.is_empty() || tail[0] == b'#').then_some(());
                    }
                    _ => i += 1,
                }
            }
            None
        }
        Some(_) => Some(()),
    }
}

fn is_key_line(line: &[u8], key: &[u8]) -> bool {
    let Some(after) = line.strip_prefix(key).and_then(|l| l.strip_prefix(b":")) else {
        return false;
    };
    let after = after.strip_suffix(b"\r").unwrap_or(after);
    let trimmed = after.iter().position(|&b| b != b' ').map_or(&[][..], |p| &after[p..]);
    trimmed.is_empty() || (trimmed[0] == b'#' && after.first() == Some(&b' '))
}

/// The lines of a text as `(start, end)` offsets, without the `\n` and a trailing `\r`.
struct Lines<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Iterator for Lines<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let start = self.at;
        let nl = self.bytes[start..].iter().position(|&b| b == b'\n');
        let end = nl.map_or(self.bytes.len(), |p| start + p);
        self.at = nl.map_or(self.bytes.len(), |_| end + 1);
        let end = if end > start && self.bytes[end - 1] == b'\r' { end - 1 } else { end };
        Some((start, end))
    }
}

/// Parses the list under the top-level `key:` of `text` piece by piece on up to 4 threads, and
/// the rest of the file as `F` (whose `key` field then reads as empty). Returns the rest and the
/// items in file order, or `None` when the file is too small, has a shape [`split`] does not
/// handle, or any piece fails to parse: then the caller parses the whole file.
pub fn parse_list<F, T>(text: &str, key: &str) -> Option<(F, Vec<T>)>
where
    F: DeserializeOwned,
    T: DeserializeOwned + Send,
{
    if text.len() < MIN_SPLIT_BYTES {
        return None;
    }
    parse_in_pieces(text, key, PIECE_BYTES)
}

/// [`parse_list`] with a given piece size and no minimum file size (the property tests cut
/// small files into one-item pieces with it).
pub fn parse_in_pieces<F, T>(text: &str, key: &str, piece_bytes: usize) -> Option<(F, Vec<T>)>
where
    F: DeserializeOwned,
    T: DeserializeOwned + Send,
{
    let split = split(text, key, piece_bytes)?;
    let rest: F = serde_yaml_ng::from_str(&split.rest).ok()?;
    let items = parse_pieces::<T>(&split.pieces)?;
    Some((rest, items))
}

/// Parses each piece as a YAML list of `T`, in parallel, and concatenates them in order.
fn parse_pieces<T: DeserializeOwned + Send>(pieces: &[&str]) -> Option<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS).min(pieces.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Vec<T>>>> = pieces.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= pieces.len() || failed.load(Ordering::Relaxed) {
                return;
            }
            // The subset reader first (the same items, ~3x faster); where it declines,
            // serde_yaml_ng reads the piece.
            let parsed = crate::subset::from_str::<Vec<T>>(pieces[i])
                .map_or_else(|| serde_yaml_ng::from_str::<Vec<T>>(pieces[i]).map_err(drop), Ok);
            match parsed {
                Ok(items) => *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(items),
                Err(()) => {
                    failed.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        work();
        for h in helpers {
            if h.join().is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        }
    });
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    let mut parts = Vec::with_capacity(results.len());
    for r in results {
        parts.push(r.into_inner().unwrap_or_else(|p| p.into_inner())?);
    }
    let mut items = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        items.extend(part);
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces_of(text: &str, bytes: usize) -> Option<Vec<String>> {
        split(text, "models", bytes).map(|s| s.pieces.into_iter().map(str::to_string).collect())
    }

    #[test]
    fn cuts_only_at_items_of_the_list() {
        let text = "source: a\nmodels:\n  - name: a\n    tasks:\n      - x\n  # c\n  - name: b\n    readme: |\n      - not an item\n  - name: c\nafter: 1\n";
        let s = split(text, "models", 1).expect("split");
        assert_eq!(
            s.pieces,
            vec![
                "  - name: a\n    tasks:\n      - x\n  # c\n",
                "  - name: b\n    readme: |\n      - not an item\n",
                "  - name: c\n"
            ]
        );
        assert_eq!(s.rest, "source: a\nmodels:\nafter: 1\n");
        // Large pieces keep several items together.
        assert_eq!(pieces_of(text, 1 << 20).map(|p| p.len()), Some(1));
    }

    #[test]
    fn an_indentless_list_works_too() {
        let text = "models:\n- name: a\n- name: b\nsource: x\n";
        let s = split(text, "models", 1).expect("split");
        assert_eq!(s.pieces, vec!["- name: a\n", "- name: b\n"]);
        let quoted = "source: \"a \\\" b\" # c\nother: 'it''s'\nmodels:\n- name: a\n";
        assert!(split(quoted, "models", 1).is_some(), "closed quotes before the list are fine");
        assert_eq!(s.rest, "models:\nsource: x\n");
    }

    #[test]
    fn shapes_it_does_not_handle_are_refused() {
        for text in [
            "models: []\n",
            "models:\n  name: a\n",
            "---\nmodels:\n  - name: a\n",
            "%YAML 1.2\n---\nmodels:\n  - name: a\n",
            "models:\n\t- name: a\n",
            "models:\n  - name: a\n models2: 1\n",
            "models:\n  - name: a\nmodels:\n  - name: b\n",
            "source: a\n",
            // The key line inside a quoted scalar that began before it.
            "source: \"abc\nmodels:\n  - name: x\n\"\n",
            "source: 'abc\nmodels:\n  - name: x\n'\n",
            "source: [a,\nmodels:\n  - name: x\n]\n",
            "source: |\nmodels:\n  - name: x\n",
            "source:\n  models:\n  - name: x\n",
            "\"source\nx\": 1\nmodels:\n  - name: x\n",
        ] {
            assert_eq!(split(text, "models", 1), None, "{text:?}");
        }
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct File {
        source: Option<String>,
        models: Option<Vec<Item>>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Item {
        name: String,
        tags: Option<Vec<String>>,
    }

    fn big(item: impl Fn(usize) -> String) -> String {
        let mut s = String::from("source: s\nmodels:\n");
        let mut i = 0;
        while s.len() < MIN_SPLIT_BYTES * 2 {
            s.push_str(&item(i));
            i += 1;
        }
        s
    }

    #[test]
    fn pieces_parse_to_the_whole_parse() {
        let text = big(|i| format!("  - name: m{i}\n    tags: [a, \"b{i}\"]\n"));
        let (rest, items) = parse_list::<File, Item>(&text, "models").expect("split parse");
        let whole: File = serde_yaml_ng::from_str(&text).expect("whole");
        assert_eq!(rest.source, whole.source);
        assert_eq!(rest.models, None);
        assert_eq!(Some(items), whole.models);
    }

    #[test]
    fn an_alias_across_pieces_or_a_broken_piece_falls_back() {
        let alias =
            big(
                |i| {
                    if i == 0 {
                        "  - name: &first m0\n".into()
                    } else {
                        format!("  - name: *first\n    tags: [t{i}]\n")
                    }
                },
            );
        assert!(serde_yaml_ng::from_str::<File>(&alias).is_ok(), "the whole file is valid");
        assert!(parse_list::<File, Item>(&alias, "models").is_none());
        let broken = big(|i| if i == 900 { "  - name: \"open\n".into() } else { format!("  - name: m{i}\n") });
        assert!(parse_list::<File, Item>(&broken, "models").is_none());
    }
}
