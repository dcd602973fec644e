//! A nesting-depth guard that runs before serde_yaml_ng sees the text.
//!
//! Why: the YAML parser's cost grows quadratically with nesting (80,000 `[` took seconds), and
//! `validateSource` is a query any viewer may send. This scanner is a single pass over the bytes
//! with an indentation stack whose pushes and pops are amortised O(1), so it is linear in the
//! input and refuses deep documents before the expensive parse starts.
//!
//! What counts as one level: an open flow collection (`[` or `{`), a block indentation level
//! (a line indented deeper than its parent), and each `- ` of a compact sequence (`- - - x`).
//! Quoted scalars, comments and block scalars (`|`, `>`) do not count. The count is a close
//! over-approximation of the parser's nesting, never an under-approximation for these forms.

use crate::Limits;
use crate::error::{YamlError, YamlErrorKind};

/// The default limit: real catalogs nest less than 10 deep.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// The first point where nesting goes past `limit`: 1-based line and column.
#[derive(Debug, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Checks `text` against `limits` and returns an error naming the limit and the flag that
/// sets it.
pub fn check(text: &str, file: &str, limits: Limits) -> Result<(), YamlError> {
    let limit = limits.max_depth;
    match scan(text, limit) {
        Ok(()) => Ok(()),
        Err(at) => Err(YamlError::new(
            YamlErrorKind::Syntax,
            format!("YAML nesting deeper than the limit of {limit} levels (--max-yaml-depth)"),
            file,
        )
        .at(u32::try_from(at.line).ok(), u32::try_from(at.column).ok())
        .hint(format!(
            "flatten the document to at most {limit} nested collections; a deployer can raise the limit with \
             --max-yaml-depth (env CATALOG_BFF_MAX_YAML_DEPTH)"
        ))),
    }
}

/// Scans `text` for nesting deeper than `limit`. Linear in `text.len()`.
pub fn scan(text: &str, limit: usize) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    // Block context: columns of the open indentation levels, strictly increasing.
    let mut stack: Vec<usize> = Vec::new();
    // Flow context: open `[`/`{` count (they may span lines).
    let mut flow = 0usize;
    // A quoted scalar that continues on the next line.
    let mut open_quote: Option<u8> = None;
    // Inside a block scalar (`|`/`>`): lines indented deeper than this column are text.
    let mut block_scalar: Option<usize> = None;
    let mut line_no = 0usize;
    let mut start = 0usize;
    while start < bytes.len() {
        let end = bytes[start..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| start + p);
        let line = &bytes[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_no += 1;
        start = end + 1;

        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0usize;
        if open_quote.is_none() && flow == 0 {
            if blank || line[indent] == b'#' {
                continue;
            }
            if indent == 0 && (line.starts_with(b"---") || line.starts_with(b"...")) {
                let rest = &line[3..];
                if rest.is_empty() || rest[0] == b' ' || rest[0] == b'\t' {
                    stack.clear();
                    continue;
                }
            }
            // One block level per indentation column.
            while stack.last().is_some_and(|&top| top > indent) {
                stack.pop();
            }
            if stack.last() != Some(&indent) {
                stack.push(indent);
                if stack.len() > limit {
                    return Err(TooDeep { line: line_no, column: indent + 1 });
                }
            }
            i = indent;
            // Compact sequences and explicit keys: every `- ` / `? ` opens a level at the
            // column of what follows it.
            while i < line.len() && (line[i] == b'-' || line[i] == b'?') && line.get(i + 1).is_none_or(|&b| b == b' ') {
                let mut j = i + 1;
                while j < line.len() && line[j] == b' ' {
                    j += 1;
                }
                if j >= line.len() || line[j] == b'#' {
                    break;
                }
                stack.push(j);
                if stack.len() > limit {
                    return Err(TooDeep { line: line_no, column: j + 1 });
                }
                i = j;
            }
        }
        // The rest of the line: quotes, comments, flow brackets, block scalar headers.
        let mut at_node = true; // a `[`/`{` here starts a flow collection
        while i < line.len() {
            let b = line[i];
            if let Some(q) = open_quote {
                if q == b'"' && b == b'\\' {
                    i += 2;
                    continue;
                }
                if b == q {
                    if q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    open_quote = None;
                    at_node = false;
                }
                i += 1;
                continue;
            }
            match b {
                b' ' | b'\t' => {
                    i += 1;
                    continue;
                }
                b'#' if i == 0 || line[i - 1] == b' ' || line[i - 1] == b'\t' => break,
                b'"' | b'\'' if at_node || (flow > 0 && is_flow_token_start(line, i)) => {
                    open_quote = Some(b);
                    i += 1;
                    continue;
                }
                b'[' | b'{' if at_node || flow > 0 => {
                    flow += 1;
                    if stack.len() + flow > limit {
                        return Err(TooDeep { line: line_no, column: i + 1 });
                    }
                    at_node = true;
                    i += 1;
                    continue;
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    at_node = false;
                    i += 1;
                    continue;
                }
                b',' if flow > 0 => {
                    at_node = true;
                    i += 1;
                    continue;
                }
                b':' if line.get(i + 1).is_none_or(|&c| c == b' ' || c == b'\t') || flow > 0 => {
                    at_node = true;
                    i += 1;
                    continue;
                }
                b'&' | b'!' if at_node => {
                    // An anchor or tag before a node: skip it, the node follows.
                    while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                        i += 1;
                    }
                    continue;
                }
                b'|' | b'>' if at_node && flow == 0 => {
                    // A block scalar header: the more-indented lines after it are text.
                    let rest = &line[i + 1..];
                    let header_ok = rest
                        .iter()
                        .take_while(|&&c| c != b'#')
                        .all(|&c| c == b'-' || c == b'+' || c.is_ascii_digit() || c == b' ' || c == b'\t');
                    if header_ok {
                        block_scalar = Some(indent);
                        break;
                    }
                    at_node = false;
                }
                _ => at_node = false,
            }
            // A plain scalar: skip to the end of the token (flow indicators end it in flow).
            while i < line.len() {
                let c = line[i];
                if c == b' ' || c == b'\t' {
                    break;
                }
                if flow > 0 && matches!(c, b',' | b'[' | b']' | b'{' | b'}') {
                    break;
                }
                if c == b':' && line.get(i + 1).is_none_or(|&n| n == b' ' || n == b'\t' || flow > 0 && n == b',') {
                    break;
                }
                i += 1;
            }
        }
    }
    Ok(())
}

/// In flow context a quote opens a scalar only at the start of a token.
fn is_flow_token_start(line: &[u8], i: usize) -> bool {
    i == 0 || matches!(line[i - 1], b' ' | b'\t' | b'[' | b'{' | b',' | b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refused at (line, column), or `None` when accepted.
    type Expect = Option<(usize, usize)>;

    /// `expect`: None = accepted; Some((line, column)) = refused there.
    fn check(yaml: &str, limit: usize, expect: Expect) {
        let got = scan(yaml, limit).err().map(|t| (t.line, t.column));
        assert_eq!(got, expect, "limit {limit}, yaml:\n{yaml}");
    }

    #[test]
    fn data_driven_cases() {
        let cases: &[(&str, usize, Expect)] = &[
            ("", 3, None),
            ("a: 1\n", 1, None),
            ("a:\n  b: 1\n", 1, Some((2, 3))),
            ("a:\n  b: 1\n", 2, None),
            ("[[[x]]]\n", 3, Some((1, 3))),
            ("[[[x]]]\n", 4, None),
            ("a: [[x]]\n", 2, Some((1, 5))),
            // `- x` counts the sequence and its item's column: one more than the containers.
            ("- - - x\n", 3, Some((1, 7))),
            ("- - - x\n", 4, None),
            // Quotes and comments do not count.
            ("a: \"[[[[[[\"\n", 1, None),
            ("a: '[[[[ '' [[['\n", 1, None),
            ("a: 1 # [[[[[[[\n", 1, None),
            ("# [[[[[[[[\na: 1\n", 1, None),
            // Flow indicators inside a block plain scalar are text.
            ("a: foo[1] {x}\n", 1, None),
            // Block scalars are text, whatever they contain.
            ("a: |\n  [[[[[[\n  - - - - -\nb: 1\n", 1, None),
            ("a: >-\n      {{{{{{{\nb: 1\n", 1, None),
            // Siblings and dedents do not accumulate.
            ("a:\n  b: 1\n  c: 2\nd:\n  e: 3\n", 2, None),
            ("models:\n  - name: x\n    artifacts:\n      - uri: y\n", 5, None),
            ("models:\n  - name: x\n    artifacts:\n      - uri: y\n", 4, Some((4, 9))),
            // Flow collections spanning lines.
            ("a: [\n  [\n    [x]\n  ]\n]\n", 3, Some((3, 5))),
            ("a: [\n  [\n    [x]\n  ]\n]\nb: 1\n", 4, None),
            // A quoted scalar spanning lines.
            ("a: \"[[[\n  [[[[\"\nb: [1]\n", 2, None),
            // A document marker resets.
            ("a:\n  b: 1\n---\nc: 1\n", 2, None),
            // Anchors and tags before a collection.
            ("a: &x [[1]]\n", 2, Some((1, 8))),
            ("a: !!seq [1]\n", 2, None),
        ];
        for (yaml, limit, expect) in cases {
            check(yaml, *limit, *expect);
        }
    }

    #[test]
    fn huge_inputs_are_refused_at_the_first_too_deep_point() {
        let brackets = "[".repeat(80_000);
        assert_eq!(scan(&brackets, 64), Err(TooDeep { line: 1, column: 64 }));
        let dashes = "- ".repeat(80_000) + "x";
        assert_eq!(scan(&dashes, 64), Err(TooDeep { line: 1, column: 129 }));
        let mut indented = String::new();
        for i in 0..2000 {
            indented.push_str(&" ".repeat(i));
            indented.push_str("k:\n");
        }
        assert_eq!(scan(&indented, 64), Err(TooDeep { line: 65, column: 65 }));
    }

    #[test]
    fn the_bundled_examples_pass() {
        for text in [
            include_str!("../../../src/example/sources.yaml"),
            include_str!("../../../src/example/team-models.yaml"),
            include_str!("../../../src/example/partner-models.yaml"),
            include_str!("../../../src/example/platform-mcp-servers.yaml"),
            include_str!("../../../src/example/lab-mcp-servers.yaml"),
        ] {
            assert_eq!(scan(text, 16), Ok(()));
        }
    }

    #[test]
    fn the_diagnostic_names_the_limit_and_flag() {
        let d = crate::depth::check(&"[".repeat(200), "input.content", Limits::default()).unwrap_err();
        assert!(d.message.contains("64") && d.message.contains("--max-yaml-depth"), "{d:?}");
        assert_eq!((d.line, d.column), (Some(1), Some(64)));
    }
}
