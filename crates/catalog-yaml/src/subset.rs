//! A fast reader for the plain subset of YAML that catalog list items are written in, as a
//! serde `Deserializer`; it declines (returns `None`) on everything else.
//!
//! Why: serde_yaml_ng (libyaml underneath) reads ~15 MB/s, so the items of a 100k-model catalog
//! (40 MB) cost ~2.5 s of CPU however they are cut (see `split`). Catalog items use a
//! small part of YAML: block mappings and lists, one-line plain and quoted scalars, literal and
//! folded block scalars, and one-line flow lists. This module reads exactly that part and
//! nothing else.
//!
//! When it is the same as serde_yaml_ng: [`from_str`] returns `Some` only when the text is in the
//! subset (every construct outside it, and every construct whose reading in full YAML it is not
//! sure of, declines: anchors, aliases, tags, `?` keys, directives, document markers, tabs,
//! carriage returns, scalars over several lines, plain scalars that could be numbers where the
//! target type would take a number, nested flow collections, ...) and the target type accepts
//! the value. For that text it hands the target's `Deserialize` the same calls serde_yaml_ng
//! would (the same scalar resolution: an empty or `null` plain scalar is a none, any scalar
//! reads as a string, only a plain one as a bool or number). Any error, of the reader or of
//! the target type, is a `None`: the caller then parses with serde_yaml_ng, which gives the
//! diagnostics. `tests/it/properties.rs` checks that `Some` always equals serde_yaml_ng's value.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use std::borrow::Cow;

/// Deeper than this, the reader declines (catalog items nest a handful of levels).
const MAX_DEPTH: usize = 48;
/// libyaml refuses an implicit key whose `:` is over 1024 bytes from its start; this reader
/// stays well below.
const MAX_KEY_BYTES: usize = 1000;

/// Reads `text` as `T`, or `None` when the text is outside the subset or `T` refuses it.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Option<T> {
    let root = parse(text)?;
    T::deserialize(NodeDe(&root)).ok()
}

/// A parsed node. Scalars keep whether they were plain: only plain scalars resolve to null,
/// bool or number.
#[derive(Debug)]
enum Node<'t> {
    Scalar { text: Cow<'t, str>, plain: bool },
    Seq(Vec<Node<'t>>),
    Map(Vec<(Node<'t>, Node<'t>)>),
}

impl Node<'_> {
    fn empty() -> Self {
        Node::Scalar { text: Cow::Borrowed(""), plain: true }
    }
}

/// One line of the text: byte offsets without the `\n`, and its indentation in spaces.
#[derive(Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    indent: usize,
}

struct Parser<'t> {
    text: &'t str,
    lines: Vec<Line>,
    /// The next line not yet read.
    at: usize,
}

fn parse(text: &str) -> Option<Node<'_>> {
    if !prescan(text) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut lines = Vec::with_capacity(text.len() / 24 + 1);
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr_nl(bytes, start);
        let indent = bytes[start..end].iter().take_while(|&&b| b == b' ').count();
        lines.push(Line { start, end, indent });
        start = end + 1;
    }
    let mut p = Parser { text, lines, at: 0 };
    p.skip_insignificant();
    let first = *p.lines.get(p.at)?;
    // The root of a piece is its list; anything else goes to serde_yaml_ng.
    if !is_seq_entry(p.rest(first, first.indent)) {
        return None;
    }
    let root = p.node(p.at, first.indent, -1, 0)?;
    p.skip_insignificant();
    (p.at == p.lines.len()).then_some(root)
}

fn memchr_nl(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| from + p)
}

/// Characters and lines the reader does not reason about: tabs, carriage returns, control
/// characters and the ones libyaml treats as non-printable or as line breaks, a byte order
/// mark, directives and document markers, and a last line without its `\n`.
fn prescan(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !bytes.ends_with(b"\n") {
        return false;
    }
    if bytes.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f) {
        return false;
    }
    if !text.is_ascii()
        && text
            .chars()
            .any(|c| matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'))
    {
        return false;
    }
    let mut start = 0;
    while start < bytes.len() {
        let line = &bytes[start..];
        if line.starts_with(b"---") || line.starts_with(b"...") || line.starts_with(b"%") {
            return false;
        }
        start = memchr_nl(bytes, start) + 1;
    }
    true
}

/// `- item` or a lone `-`.
fn is_seq_entry(rest: &str) -> bool {
    rest == "-" || rest.starts_with("- ")
}

/// Whether a line's text from some column on is nothing or only a comment.
fn is_blank_or_comment(rest: &str) -> bool {
    let t = rest.trim_start_matches(' ');
    t.is_empty() || t.starts_with('#')
}

/// Characters that may not start a plain scalar (YAML's indicators), except `-` before a digit
/// or `.` (negative numbers), which is read as the plain scalar it is.
fn plain_may_start(rest: &str) -> bool {
    let b = rest.as_bytes();
    match b.first() {
        None => false,
        Some(b'-') => matches!(b.get(1), Some(b'0'..=b'9' | b'.')),
        Some(
            b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\'' | b'"'
            | b'%' | b'@' | b'`' | b' ',
        ) => false,
        Some(_) => true,
    }
}

/// Where a plain scalar on one line ends: before ` #` (a comment) or at the end, trailing
/// spaces left out.
fn plain_end(rest: &str) -> usize {
    let b = rest.as_bytes();
    let mut end = b.len();
    for i in 1..b.len() {
        if b[i] == b'#' && b[i - 1] == b' ' {
            end = i;
            break;
        }
    }
    rest[..end].trim_end_matches(' ').len()
}

/// The offset of a block mapping's `:` in `rest` (a `:` followed by a space or the end of
/// the line, before any comment), for a plain key.
fn plain_key_colon(rest: &str) -> Option<usize> {
    let b = rest.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b':' if matches!(b.get(i + 1), None | Some(b' ')) => return Some(i),
            b'#' if i > 0 && b[i - 1] == b' ' => return None,
            _ => {}
        }
    }
    None
}

/// A quoted scalar at the start of `rest` that closes on this line: its value and the offset
/// after the closing quote. `None` when it does not close here or has an escape this reader
/// does not handle.
fn quoted(rest: &str) -> Option<(Cow<'_, str>, usize)> {
    let b = rest.as_bytes();
    let q = *b.first()?;
    let mut out: Option<String> = None;
    let mut i = 1;
    let mut run = 1;
    while i < b.len() {
        let c = b[i];
        if q == b'\'' && c == b'\'' {
            if b.get(i + 1) == Some(&b'\'') {
                let o = out.get_or_insert_with(String::new);
                o.push_str(&rest[run..i + 1]);
                i += 2;
                run = i;
                continue;
            }
            return Some(finish(rest, out, run, i));
        }
        if q == b'"' && c == b'"' {
            return Some(finish(rest, out, run, i));
        }
        if q == b'"' && c == b'\\' {
            let o = out.get_or_insert_with(String::new);
            o.push_str(&rest[run..i]);
            let (ch, len) = escape(&rest[i + 1..])?;
            o.push(ch);
            i += 1 + len;
            run = i;
            continue;
        }
        i += 1;
    }
    None
}

fn finish<'r>(rest: &'r str, out: Option<String>, run: usize, close: usize) -> (Cow<'r, str>, usize) {
    match out {
        None => (Cow::Borrowed(&rest[1..close]), close + 1),
        Some(mut o) => {
            o.push_str(&rest[run..close]);
            (Cow::Owned(o), close + 1)
        }
    }
}

/// A double-quoted escape (after the `\`): the character and how many bytes it took.
fn escape(after: &str) -> Option<(char, usize)> {
    let b = after.as_bytes();
    let simple = match b.first()? {
        b'\\' => '\\',
        b'"' => '"',
        b'/' => '/',
        b'n' => '\n',
        b't' => '\t',
        b'r' => '\r',
        b'0' => '\0',
        b'a' => '\u{7}',
        b'b' => '\u{8}',
        b'e' => '\u{1b}',
        b'f' => '\u{c}',
        b'v' => '\u{b}',
        b'x' => return hex(after, 2),
        b'u' => return hex(after, 4),
        b'U' => return hex(after, 8),
        _ => return None,
    };
    Some((simple, 1))
}

fn hex(after: &str, digits: usize) -> Option<(char, usize)> {
    let h = after.get(1..1 + digits)?;
    if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u32::from_str_radix(h, 16).ok()?;
    // Control characters from an escape are fine in YAML, but keep to printable ones here.
    let c = char::from_u32(v)?;
    if c.is_control() {
        return None;
    }
    Some((c, 1 + digits))
}

/// What may follow a scalar on its line: spaces, then nothing or a comment after a space.
fn trailing_ok(after: &str) -> bool {
    let t = after.trim_start_matches(' ');
    t.is_empty() || (t.starts_with('#') && t.len() < after.len())
}

impl<'t> Parser<'t> {
    fn rest(&self, line: Line, col: usize) -> &'t str {
        &self.text[line.start + col..line.end]
    }

    fn skip_insignificant(&mut self) {
        while let Some(&l) = self.lines.get(self.at) {
            if is_blank_or_comment(self.rest(l, 0)) {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    /// The next significant line, without consuming it.
    fn peek(&mut self) -> Option<Line> {
        self.skip_insignificant();
        self.lines.get(self.at).copied()
    }

    /// A node whose first character is at column `col` of line `li`, inside a collection at
    /// column `parent` (-1 at the root). Block collections at `col` read on from there.
    fn node(&mut self, li: usize, col: usize, parent: isize, depth: usize) -> Option<Node<'t>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let line = self.lines[li];
        let rest = self.rest(line, col);
        if is_seq_entry(rest) {
            return self.seq(li, col, depth);
        }
        if self.key(rest).is_some() {
            return self.map(li, col, depth);
        }
        // A scalar alone on its line (under a key or a `-` on an earlier line).
        self.scalar(li, col, parent)
    }

    /// A block sequence whose `-` are at column `col`, starting at line `li`.
    fn seq(&mut self, li: usize, col: usize, depth: usize) -> Option<Node<'t>> {
        let mut items = Vec::new();
        let mut li = li;
        loop {
            let line = self.lines[li];
            let after = self.rest(line, col + 1);
            self.at = li + 1;
            let item = if is_blank_or_comment(after) {
                self.value_below(col, false, depth)?
            } else {
                let spaces = after.len() - after.trim_start_matches(' ').len();
                let c = col + 1 + spaces;
                let rest = self.rest(line, c);
                if is_seq_entry(rest) || self.key(rest).is_some() {
                    // A compact nested list or mapping: its own column is `c`.
                    self.node(li, c, col as isize, depth + 1)?
                } else {
                    self.scalar(li, c, col as isize)?
                }
            };
            items.push(item);
            match self.peek() {
                Some(next) if next.indent == col && is_seq_entry(self.rest(next, col)) => li = self.at,
                Some(next) if next.indent > col => return None,
                _ => return Some(Node::Seq(items)),
            }
        }
    }

    /// A block mapping whose keys are at column `col`, starting at line `li`.
    fn map(&mut self, li: usize, col: usize, depth: usize) -> Option<Node<'t>> {
        let mut entries = Vec::new();
        let mut li = li;
        loop {
            let line = self.lines[li];
            let rest = self.rest(line, col);
            let (key, after_colon) = self.key(rest)?;
            self.at = li + 1;
            let after = &rest[after_colon..];
            let value = if is_blank_or_comment(after) {
                self.value_below(col, true, depth)?
            } else {
                let spaces = after.len() - after.trim_start_matches(' ').len();
                // On the key's line only a scalar may follow (`a: b: c` and `a: - b` are errors).
                self.scalar(li, col + after_colon + spaces, col as isize)?
            };
            entries.push((key, value));
            match self.peek() {
                Some(next) if next.indent == col && !is_seq_entry(self.rest(next, col)) => li = self.at,
                Some(next) if next.indent >= col => return None,
                _ => return Some(Node::Map(entries)),
            }
        }
    }

    /// The value of a key or `-` with nothing after it on its line: a node on the next lines,
    /// indented deeper than `col` (or, under a key, a list at the key's own column), else empty.
    fn value_below(&mut self, col: usize, under_key: bool, depth: usize) -> Option<Node<'t>> {
        let Some(next) = self.peek() else { return Some(Node::empty()) };
        let li = self.at;
        if next.indent > col {
            return self.node(li, next.indent, col as isize, depth + 1);
        }
        if under_key && next.indent == col && is_seq_entry(self.rest(next, col)) {
            return self.seq(li, col, depth + 1);
        }
        Some(Node::empty())
    }

    /// A mapping key at the start of `rest`: the key and the offset after its `:`.
    fn key(&self, rest: &'t str) -> Option<(Node<'t>, usize)> {
        if rest.starts_with('"') || rest.starts_with('\'') {
            let (text, after) = quoted(rest)?;
            let tail = &rest[after..];
            let colon = tail.len() - tail.trim_start_matches(' ').len();
            let b = tail.as_bytes();
            // libyaml's limit counts from the key's start to its `:`, spaces before it included.
            if b.get(colon) != Some(&b':')
                || !matches!(b.get(colon + 1), None | Some(b' '))
                || after + colon > MAX_KEY_BYTES
            {
                return None;
            }
            return Some((Node::Scalar { text, plain: false }, after + colon + 1));
        }
        if !plain_may_start(rest) {
            return None;
        }
        let colon = plain_key_colon(rest)?;
        let key = rest[..colon].trim_end_matches(' ');
        if key.is_empty() || colon > MAX_KEY_BYTES {
            return None;
        }
        Some((Node::Scalar { text: Cow::Borrowed(key), plain: true }, colon + 1))
    }

    /// A scalar starting at column `c` of line `li` (a plain, quoted, block or one-line flow
    /// scalar), inside a collection at column `parent`. Reads the lines of a block scalar.
    fn scalar(&mut self, li: usize, c: usize, parent: isize) -> Option<Node<'t>> {
        let line = self.lines[li];
        let rest = self.rest(line, c);
        // One line (a block scalar moves on past its own lines).
        self.at = li + 1;
        match rest.as_bytes().first()? {
            b'"' | b'\'' => {
                let (text, after) = quoted(rest)?;
                trailing_ok(&rest[after..]).then_some(Node::Scalar { text, plain: false })
            }
            b'|' | b'>' => {
                if parent < 0 {
                    return None;
                }
                let text = self.block_scalar(li, rest, parent as usize)?;
                Some(Node::Scalar { text: Cow::Owned(text), plain: false })
            }
            b'[' => flow_seq(rest),
            b'{' => {
                let after = rest.strip_prefix("{}")?;
                trailing_ok(after).then(|| Node::Map(Vec::new()))
            }
            _ => {
                if !plain_may_start(rest) {
                    return None;
                }
                let end = plain_end(rest);
                let text = &rest[..end];
                // `: ` or a final `:` inside would make it a key where none may be.
                if text.contains(": ") || text.ends_with(':') {
                    return None;
                }
                // A more indented line after it would continue it over several lines: the
                // collection loops (`seq`, `map`) decline on any line deeper than their column.
                Some(Node::Scalar { text: Cow::Borrowed(text), plain: true })
            }
        }
    }

    /// A literal (`|`) or folded (`>`) block scalar whose header is `header` on line `li`,
    /// inside a collection at column `parent`. Consumes its lines.
    fn block_scalar(&mut self, li: usize, header: &str, parent: usize) -> Option<String> {
        let hb = header.as_bytes();
        let folded = hb[0] == b'>';
        let mut i = 1;
        let mut chomp = b' ';
        if matches!(hb.get(1), Some(b'-' | b'+')) {
            chomp = hb[1];
            i = 2;
        }
        if !trailing_ok(&header[i..]) || header[i..].starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        // The content's indentation: that of the first line with something on it.
        let mut k = li + 1;
        let mut leading_blank = 0usize;
        while let Some(&l) = self.lines.get(k) {
            if self.rest(l, 0).bytes().all(|b| b == b' ') {
                leading_blank = leading_blank.max(l.end - l.start);
                k += 1;
            } else {
                break;
            }
        }
        let first = *self.lines.get(k)?;
        let m = first.indent;
        // Empty content, or leading blank lines longer than the content's indent (an error in
        // libyaml): not handled here.
        if m <= parent || leading_blank > m || k > li + 1 {
            return None;
        }
        let mut parts: Vec<&'t str> = Vec::new();
        let mut j = k;
        while let Some(&l) = self.lines.get(j) {
            let len = l.end - l.start;
            let all_spaces = self.rest(l, 0).bytes().all(|b| b == b' ');
            if all_spaces && len <= m {
                parts.push("");
            } else if l.indent >= m {
                parts.push(self.rest(l, m));
            } else {
                break;
            }
            j += 1;
        }
        self.at = j;
        let last = parts.iter().rposition(|p| !p.is_empty())?;
        let trailing = parts.len() - 1 - last;
        let body = &parts[..=last];
        let mut out = String::new();
        if folded {
            // libyaml's folding: a line break between two lines that do not start with a
            // space becomes a space (or, with empty lines between, just those lines' breaks);
            // next to a more indented line it stays.
            let mut empties = 0usize;
            let mut prev_indented = false;
            for (n, p) in body.iter().enumerate() {
                if p.is_empty() {
                    empties += 1;
                    continue;
                }
                let indented = p.starts_with(' ');
                if n > 0 {
                    if !prev_indented && !indented {
                        if empties == 0 {
                            out.push(' ');
                        }
                    } else {
                        out.push('\n');
                    }
                    out.extend(std::iter::repeat_n('\n', empties));
                }
                empties = 0;
                prev_indented = indented;
                out.push_str(p);
            }
        } else {
            for (n, p) in body.iter().enumerate() {
                if n > 0 {
                    out.push('\n');
                }
                out.push_str(p);
            }
        }
        match chomp {
            b'-' => {}
            b'+' => out.extend(std::iter::repeat_n('\n', 1 + trailing)),
            _ => out.push('\n'),
        }
        Some(out)
    }
}

/// A one-line flow list of plain or quoted scalars: `[]`, `[a, "b", 'c']`.
fn flow_seq(rest: &str) -> Option<Node<'_>> {
    let mut items = Vec::new();
    let mut s = &rest[1..];
    s = s.trim_start_matches(' ');
    if let Some(after) = s.strip_prefix(']') {
        return trailing_ok(after).then_some(Node::Seq(items));
    }
    loop {
        s = s.trim_start_matches(' ');
        let (item, after) = if s.starts_with('"') || s.starts_with('\'') {
            let (text, after) = quoted(s)?;
            (Node::Scalar { text, plain: false }, &s[after..])
        } else {
            if !plain_may_start(s) {
                return None;
            }
            let end = s.find([',', ']'])?;
            let text = s[..end].trim_end_matches(' ');
            if text.is_empty() || text.contains([':', '#', '[', '{', '}', '"', '\'']) {
                return None;
            }
            (Node::Scalar { text: Cow::Borrowed(text), plain: true }, &s[end..])
        };
        items.push(item);
        let after = after.trim_start_matches(' ');
        if let Some(a) = after.strip_prefix(']') {
            return trailing_ok(a).then_some(Node::Seq(items));
        }
        s = after.strip_prefix(", ")?;
        if s.trim_start_matches(' ').starts_with(']') {
            return None;
        }
    }
}

// ---- the Deserializer ----------------------------------------------------------------------

/// Errors are only ever turned into "use serde_yaml_ng": no message is kept.
#[derive(Debug)]
pub struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outside the YAML subset")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Declined
    }
}

struct NodeDe<'a, 't>(&'a Node<'t>);

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A plain decimal integer without sign or leading zeros beyond `-`: the only integers read
/// here (serde_yaml_ng also reads `+1`, `0x1f`, `0o7`, `0b1`; those decline).
fn parse_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// serde_yaml_ng's float reading of a plain scalar (`de::parse_f64`).
fn parse_f64(scalar: &str) -> Option<f64> {
    let unpositive = if let Some(unpositive) = scalar.strip_prefix('+') {
        if unpositive.starts_with(['+', '-']) {
            return None;
        }
        unpositive
    } else {
        scalar
    };
    if let ".inf" | ".Inf" | ".INF" = unpositive {
        return Some(f64::INFINITY);
    }
    if let "-.inf" | "-.Inf" | "-.INF" = scalar {
        return Some(f64::NEG_INFINITY);
    }
    if let ".nan" | ".NaN" | ".NAN" = scalar {
        return Some(f64::NAN.copysign(1.0));
    }
    match unpositive.parse::<f64>() {
        Ok(float) if float.is_finite() => Some(float),
        _ => None,
    }
}

impl<'a, 't> NodeDe<'a, 't> {
    fn plain(&self) -> Option<&'a str> {
        match self.0 {
            Node::Scalar { text, plain: true } => Some(text),
            _ => None,
        }
    }

    fn is_empty_plain(&self) -> bool {
        self.plain() == Some("")
    }

    fn int<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.plain().and_then(parse_int) {
            Some(i) => visitor.visit_i64(i),
            None => Err(Declined),
        }
    }

    /// serde_yaml_ng reads an unsigned integer without any sign (`-0` is refused).
    fn uint<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.plain().filter(|t| !t.starts_with('-')).and_then(parse_int).and_then(|i| u64::try_from(i).ok()) {
            Some(u) => visitor.visit_u64(u),
            None => Err(Declined),
        }
    }
}

macro_rules! ints {
    ($read:ident: $($name:ident)*) => {$(
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
            self.$read(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_, '_> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.0 {
            Node::Scalar { text, plain: false } => visitor.visit_str(text),
            Node::Scalar { text, plain: true } => {
                if is_null(text) {
                    return visitor.visit_unit();
                }
                if let Some(b) = parse_bool(text) {
                    return visitor.visit_bool(b);
                }
                // What could read as a number (or `.inf`, `.nan`) is left to serde_yaml_ng.
                if text.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
                    return Err(Declined);
                }
                visitor.visit_str(text)
            }
            Node::Seq(items) => visitor.visit_seq(SeqAccess(items.iter())),
            Node::Map(entries) => visitor.visit_map(MapAccess { entries: entries.iter(), value: None }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.plain().and_then(parse_bool) {
            Some(b) => visitor.visit_bool(b),
            None => Err(Declined),
        }
    }

    ints!(int: deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128);
    ints!(uint: deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.plain().and_then(parse_f64) {
            Some(f) => visitor.visit_f64(f),
            None => Err(Declined),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.0 {
            Node::Scalar { text, .. } => visitor.visit_str(text),
            _ => Err(Declined),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Declined> {
        Err(Declined)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Declined> {
        Err(Declined)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.plain() {
            Some(text) if is_null(text) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.plain() {
            Some(text) if is_null(text) => visitor.visit_unit(),
            _ => Err(Declined),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Declined> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.0 {
            Node::Seq(items) => visitor.visit_seq(SeqAccess(items.iter())),
            _ if self.is_empty_plain() => visitor.visit_seq(SeqAccess([].iter())),
            _ => Err(Declined),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Declined> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.0 {
            Node::Map(entries) => visitor.visit_map(MapAccess { entries: entries.iter(), value: None }),
            _ if self.is_empty_plain() => visitor.visit_map(MapAccess { entries: [].iter(), value: None }),
            _ => Err(Declined),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Declined> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Declined> {
        Err(Declined)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'a, 't>(std::slice::Iter<'a, Node<'t>>);

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = Declined;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Declined> {
        match self.0.next() {
            Some(node) => seed.deserialize(NodeDe(node)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct MapAccess<'a, 't> {
    entries: std::slice::Iter<'a, (Node<'t>, Node<'t>)>,
    value: Option<&'a Node<'t>>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = Declined;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Declined> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(NodeDe(k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Declined> {
        match self.value.take() {
            Some(v) => seed.deserialize(NodeDe(v)),
            None => Err(Declined),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::Value;

    fn both(text: &str) -> (Option<Value>, Result<Value, serde_yaml_ng::Error>) {
        (from_str::<Value>(text), serde_yaml_ng::from_str::<Value>(text))
    }

    #[test]
    fn reads_the_subset_as_serde_yaml_ng_does() {
        for text in [
            "- name: a\n  provider: P\n",
            "  - name: a/b-1\n    tasks:\n      - x\n      - y z\n    customProperties:\n      size:\n        metadataType: MetadataStringValue\n        string_value: \"7b\"\n",
            "- name: a\n  tags: [x, 'y z', \"w\\\"\\u00e9\"]\n  empty: []\n  none: {}\n",
            "- name: 'it''s' # comment\n  # between\n\n  description: a #not a comment but a#b\n",
            "- readme: |\n    line one\n\n      indented\n    # kept\n  after: x\n",
            "- readme: |-\n    stripped\n\n  keep: |+\n    kept\n\n\n- folded: >\n    one\n    two\n\n    three\n",
            "- key:\n  - indentless\n  - list\n  next: v\n",
            "-\n  name: below\n- - nested\n  - list\n-\n- ~\n- null\n- true\n- False\n",
            "- url: http://x.example/a:b\n  \"quoted key\": v\n  'single': w\n  k :  spaced\n",
            "- name: caf\u{e9} \u{1f600}\n",
            "- |\n  a block item\n- >-\n  folded\n  item\n- >\n  a\n    more\n  b\n\n  c\n",
            "-\n  below a dash\n- k:\n    below a key\n  j:\n    'quoted below'\n",
        ] {
            let (fast, slow) = both(text);
            let slow = slow.unwrap_or_else(|e| panic!("serde_yaml_ng refused {text:?}: {e}"));
            assert_eq!(fast.as_ref(), Some(&slow), "{text:?}");
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        for text in [
            "- name: &a x\n- name: *a\n",
            "- !tag x\n",
            "- ? complex\n  : key\n",
            "- name: a\n    continued\n",
            "- name: \"open\n  quote\"\n",
            "- name: a\tb\n",
            "- name: a\r\n",
            "- name: a",
            "- a: b: c\n",
            "- a: - b\n",
            "- {a: b}\n",
            "- [a, [b]]\n",
            "- n: 12\n",
            "- n: .5\n",
            "- r: |2\n    x\n",
            "- r: |\n\n    after blank\n",
            "name: not a list\n",
            "- a\n-b\n",
            "- a\n - b\n",
            "- k: v\n k2: v\n",
            "-\n  a\n  b\n",
        ] {
            assert!(from_str::<Value>(text).is_none(), "{text:?}");
        }
        // libyaml's key limit counts the spaces before the `:` (found by an adversarial fuzz).
        for text in [
            format!("- a{}: b\n", " ".repeat(1024)),
            format!("- '{}'{}: b\n", "k".repeat(998), " ".repeat(25)),
            format!("- x: y\n  {}{}: b\n", "k".repeat(1000), " ".repeat(25)),
        ] {
            assert!(serde_yaml_ng::from_str::<Value>(&text).is_err());
            assert!(from_str::<Value>(&text).is_none(), "{text:?}");
        }
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Typed {
        name: String,
        id: Option<String>,
        count: Option<i64>,
        ratio: Option<f64>,
        on: Option<bool>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn typed_fields_read_as_in_serde_yaml_ng() {
        // A plain `123` is a string where a string is wanted, `null` and an empty value are
        // none, numbers and bools read where the type takes them.
        let text = "- name: 123\n  id: null\n  count: -42\n  ratio: 1.5e3\n  on: true\n  tags:\n- name: x\n  id:\n  ratio: .inf\n  tags: [a]\n";
        let fast = from_str::<Vec<Typed>>(text).expect("in the subset");
        let slow: Vec<Typed> = serde_yaml_ng::from_str(text).expect("valid");
        assert_eq!(fast, slow);
        assert_eq!(fast[0].name, "123");
        // What the type refuses declines (serde_yaml_ng then gives the error).
        assert!(from_str::<Vec<Typed>>("- name: [a]\n").is_none());
        assert!(from_str::<Vec<Typed>>("- name: x\n  count: 0x1f\n").is_none());
        assert!(serde_yaml_ng::from_str::<Vec<Typed>>("- name: x\n  count: 0x1f\n").is_ok());
        // An unsigned integer takes no sign, not even `-0` (found by an adversarial fuzz).
        assert!(serde_yaml_ng::from_str::<Vec<u64>>("- -0\n").is_err());
        assert_eq!(from_str::<Vec<u64>>("- -0\n"), None);
        assert_eq!(from_str::<Vec<u8>>("- 7\n- 0\n"), serde_yaml_ng::from_str::<Vec<u8>>("- 7\n- 0\n").ok());
    }
}
