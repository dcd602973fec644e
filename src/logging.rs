//! Logs: one line per event on stderr, text (the default) or JSON (`--log-format json`).
//!
//! Logs go through a writer thread: a request formats its access-log line and hands it over,
//! and the thread writes whatever has queued in one syscall (a `BufWriter` flushed when the
//! queue is empty), so a busy server does not pay one write per request. Lines are never
//! dropped (a full queue makes the logger wait).
//!
//! The text line is formatted by [`TextLine`], not by tracing-subscriber's `Full` format: the
//! access log runs on every request, and `Full` spends most of its time styling (colour codes
//! are computed and written as empty strings even with colours off) and formatting the clock.
//! The line carries the same parts: `2026-12-02T05:42:01.123456Z  INFO
//! request{method=POST path=/graphql request_id=...}: target: message key=value ...`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Registry, registry::SpanRef};

/// How log lines are written (`--log-format`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The request id of a request or its response (the request-id layer sets it before any
/// handler runs, and the response carries it back).
pub fn request_id(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// The header the request id travels in.
pub static REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// Installs the global subscriber (filter from `RUST_LOG`, default `info`). Keep the guard for
/// the life of the process: dropping it flushes what is queued.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("catalog-bff-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let _ = SINK.set(Sink { writer: writer.clone(), format });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).fmt_fields(TextFields).event_format(TextLine).try_init(),
    };
    guard
}

/// Where [`AccessLog`] writes: the subscriber's own writer, in the subscriber's format.
struct Sink {
    writer: tracing_appender::non_blocking::NonBlocking,
    format: LogFormat,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// The target of the access log line (tower-http's own, so `RUST_LOG` filters it as before).
const ACCESS_TARGET: &str = "tower_http::trace::on_response";

thread_local! {
    /// The access line is formatted here: one buffer per worker thread, reused.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// tower-http's `OnResponse` for the access log: one line per request, `finished processing
/// request latency=N ms status=S` under the request's span, as tower-http's `DefaultOnResponse`
/// logs it, in the same text or JSON layout as every other line.
///
/// Why not `DefaultOnResponse`: it sends a tracing event, and dispatching and formatting that
/// event (field visitors, `fmt` machinery, the span scope copied field by field) was a seventh
/// of a cached request's instructions. This writes the line once into a reused buffer and hands
/// it to the same writer thread. `RUST_LOG` still decides (the `enabled!` check below uses the
/// same target and level); without [`init`] (a library user's own subscriber) it falls back to
/// the event.
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLog;

/// The request span's fields, for a request that was answered without one: the access line of a
/// cached `POST /graphql` carries them as if the span had been made (see
/// `http::fast_path::access_log_span`). The handler puts it on the response; the request id is
/// the response's `X-Request-Id`.
#[derive(Clone, Copy, Debug)]
pub struct Unspanned {
    pub method: &'static str,
    pub path: &'static str,
}

/// The name of the request span ([`request_span`]).
const REQUEST_SPAN: &str = "request";

/// The request span: what every line logged while a request is handled carries.
pub fn request_span(method: &str, path: &str, request_id: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        // As `&str`: the text format writes a plain token without any formatting machinery.
        method = method,
        path = path,
        request_id = request_id,
    )
}

impl Unspanned {
    /// The span this request would have had, for what it logs while it runs.
    pub fn span(&self, request_id: &str) -> tracing::Span {
        request_span(self.method, self.path, request_id)
    }
}

impl<B> tower_http::trace::OnResponse<B> for AccessLog {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, span: &tracing::Span) {
        let status = response.status().as_u16();
        let ms = latency.as_millis();
        // A request answered without its span names itself on the response.
        let unspanned = if span.is_none() { response.extensions().get::<Unspanned>() } else { None };
        let request_id = || {
            // The request-id layers put the request's id on every response.
            request_id(response.headers()).filter(|v| !v.is_empty()).unwrap_or("-")
        };
        let Some(sink) = SINK.get() else {
            let span = unspanned.map(|u| u.span(request_id()));
            let _in = span.as_ref().map(tracing::Span::enter);
            tracing::info!(target: ACCESS_TARGET, latency = %format_args!("{ms} ms"), status, "finished processing request");
            return;
        };
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return;
        }
        let scope = match unspanned {
            Some(u) => Scope::Fields(u, request_id()),
            None => Scope::Span(span),
        };
        LINE.with_borrow_mut(|line| {
            line.clear();
            let _ = match sink.format {
                LogFormat::Json => json_access_line(line, scope, ms, status),
                LogFormat::Text => text_access_line(line, scope, ms, status),
            };
            // One `write` is one message to the writer thread.
            let _ = sink.writer.clone().write_all(line.as_bytes());
        });
    }
}

/// What the access line names as the request's scope: its span (and the spans around it), or
/// the fields of the span a request answered without one would have had.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Span(&'a tracing::Span),
    Fields(&'a Unspanned, &'a str),
}

/// Calls `f` with the spans from the root to `span`, when the subscriber is ours.
fn with_scope(span: &tracing::Span, mut f: impl FnMut(&SpanRef<'_, Registry>)) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>()
            && let Some(current) = registry.span(id)
        {
            for s in current.scope().from_root() {
                f(&s);
            }
        }
    });
}

fn text_access_line(line: &mut String, scope: Scope<'_>, ms: u128, status: u16) -> fmt::Result {
    write_timestamp(line, SystemTime::now())?;
    line.push_str("  INFO ");
    match scope {
        Scope::Span(span) => {
            let mut any = false;
            with_scope(span, |s| {
                any = true;
                line.push_str(s.name());
                if let Some(fields) = s.extensions().get::<FormattedFields<TextFields>>()
                    && !fields.is_empty()
                {
                    line.push('{');
                    line.push_str(fields);
                    line.push('}');
                }
                line.push(':');
            });
            if any {
                line.push(' ');
            }
        }
        Scope::Fields(u, request_id) => {
            // The span's fields as `TextFields` writes them.
            line.push_str(REQUEST_SPAN);
            line.push('{');
            let mut fields = FieldsVisitor::new(line);
            for (name, value) in [("method", u.method), ("path", u.path), ("request_id", request_id)] {
                fields.text(name, value);
            }
            fields.result?;
            line.push_str("}: ");
        }
    }
    line.push_str(ACCESS_TARGET);
    line.push_str(": finished processing request latency=");
    push_number(line, ms);
    line.push_str(" ms status=");
    push_number(line, status.into());
    line.push('\n');
    Ok(())
}

/// `n` in decimal, without the formatting machinery.
fn push_number(line: &mut String, mut n: u128) {
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// The layout of tracing-subscriber's JSON format: `timestamp`, `level`, `fields`, `target`,
/// `span` (the innermost) and `spans` (root first), each span its fields plus `name`.
fn json_access_line(line: &mut String, scope: Scope<'_>, ms: u128, status: u16) -> fmt::Result {
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line, SystemTime::now())?;
    write!(
        line,
        "\",\"level\":\"INFO\",\"fields\":{{\"message\":\"finished processing request\",\"latency\":\"{ms} ms\",\"status\":{status}}},\"target\":\"{ACCESS_TARGET}\""
    )?;
    // `spans` holds `{..},{..}` root first; `last` is where the innermost one starts.
    let (mut spans, mut last) = (String::new(), 0);
    let span = match scope {
        Scope::Span(span) => span,
        Scope::Fields(u, request_id) => {
            // As `JsonFields` writes the span's fields, then its name.
            let object = serde_json::json!({"method": u.method, "path": u.path, "request_id": request_id});
            let mut entry = object.to_string();
            entry.pop();
            writeln!(
                line,
                ",\"span\":{entry},\"name\":\"{REQUEST_SPAN}\"}},\"spans\":[{entry},\"name\":\"{REQUEST_SPAN}\"}}]}}"
            )?;
            return Ok(());
        }
    };
    with_scope(span, |s| {
        if !spans.is_empty() {
            spans.push(',');
        }
        last = spans.len();
        let ext = s.extensions();
        let fields = ext.get::<FormattedFields<JsonFields>>().map(|f| f.as_str().trim()).unwrap_or("");
        // The fields are a JSON object (`{"k":v,...}`): the name goes in as one more entry.
        match fields.strip_suffix('}') {
            Some(open) if open.trim_end().len() > 1 => {
                spans.push_str(open);
                spans.push(',');
            }
            _ => spans.push('{'),
        }
        spans.push_str("\"name\":");
        spans.push_str(&serde_json::to_string(s.name()).unwrap_or_default());
        spans.push('}');
    });
    if !spans.is_empty() {
        write!(line, ",\"span\":{},\"spans\":[{spans}]", &spans[last..])?;
    }
    line.push_str("}\n");
    Ok(())
}

/// The text log line: UTC timestamp (microseconds), level, the spans with their fields, the
/// event's target and fields.
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write_timestamp(&mut w, SystemTime::now())?;
        let meta = event.metadata();
        write!(w, " {:>5} ", meta.level().as_str())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                w.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{{{fields}}}")?;
                }
                w.write_char(':')?;
            }
            w.write_char(' ')?;
        }
        w.write_str(meta.target())?;
        w.write_str(": ")?;
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Fields as `name=value`, separated by spaces, the `message` field bare. Values are escaped
/// ([`Escaped`]), so a value cannot start a new line or carry terminal escapes: no value a client
/// sends (a path, a request id, an operation name) can forge a log line.
pub struct TextFields;

thread_local! {
    /// Fields are formatted here first, then written on in one piece: the request span's
    /// `FormattedFields` string (made empty by tracing-subscriber) then grows once, to its exact
    /// size, instead of doubling field by field, and each piece is a plain `String` push
    /// rather than a call through `Writer`'s `dyn fmt::Write`.
    static FIELDS: RefCell<String> = RefCell::new(String::with_capacity(256));
}

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        FIELDS.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                let result = record_fields(&mut buffer, fields).and_then(|()| writer.write_str(&buffer));
                // One huge event does not keep its buffer for the life of the thread.
                if buffer.capacity() > 16 * 1024 {
                    *buffer = String::with_capacity(256);
                }
                result
            }
            // Re-entered (a value's `Debug` logged something): a buffer of its own.
            Err(_) => {
                let mut own = String::new();
                record_fields(&mut own, fields).and_then(|()| writer.write_str(&own))
            }
        })
    }
}

fn record_fields<R: RecordFields>(out: &mut String, fields: R) -> fmt::Result {
    let mut visitor = FieldsVisitor::new(out);
    fields.record(&mut visitor);
    visitor.result
}

struct FieldsVisitor<'w> {
    out: Escaped<&'w mut String>,
    first: bool,
    result: fmt::Result,
}

impl<'w> FieldsVisitor<'w> {
    fn new(out: &'w mut String) -> Self {
        FieldsVisitor { out: Escaped(out), first: true, result: Ok(()) }
    }

    /// ` name=` (no separator before the first field; `message` has no name).
    fn name(&mut self, name: &str) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.out.0.write_char(' ')?;
        }
        if name == "message" {
            return Ok(());
        }
        self.out.0.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.out.0.write_char('=')
    }

    fn field(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.name(name).and_then(|()| fmt::Write::write_fmt(&mut self.out, value));
        }
    }

    /// A string field: logfmt style, the message and bare tokens as they are (no formatting
    /// machinery: the access log's request fields take this path on every request), anything
    /// else quoted.
    fn text(&mut self, name: &str, value: &str) {
        if name == "message" {
            self.field(name, format_args!("{value}"));
        } else if bare(value) {
            if self.result.is_ok() {
                self.result = self.name(name).and_then(|()| self.out.0.write_str(value));
            }
        } else {
            self.field(name, format_args!("{value:?}"));
        }
    }
}

/// A string value that reads unambiguously without quotes: printable ASCII with no space,
/// quote, backslash or `=` (a path, an id, a plugin name). Anything else is quoted.
fn bare(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='))
}

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field.name(), format_args!("{value:?}"));
    }
}

/// Writes what it is given with control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`, ...).
pub struct Escaped<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Control characters are U+0000-U+001F, U+007F and U+0080-U+009F (UTF-8 `C2 80`-`C2 9F`):
        // text without those bytes is written as it is, after one byte scan.
        if !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return self.0.write_str(s);
        }
        let mut rest = s;
        while let Some(i) = rest.find(|c: char| c.is_control()) {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-12-02T05:42:01.123456Z`.
fn write_timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    // Digits by hand: `write!` with seven padded integers cost more than the rest of the line.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, m.into());
    put(8, 2, d.into());
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 6, since.subsec_micros().into());
    w.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> String {
        let mut s = String::new();
        write_timestamp(&mut s, UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into())).unwrap();
        s
    }

    #[test]
    fn timestamps_match_chrono_across_leap_years_and_month_ends() {
        for secs in [0u64, 951_782_399, 951_782_400, 1_709_164_800, 1_735_689_599, 4_102_444_800, 1_796_189_521] {
            let expected = chrono::DateTime::from_timestamp(secs as i64, 7_000)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            assert_eq!(at(secs, 7), expected);
        }
    }

    #[test]
    fn control_characters_in_values_are_escaped() {
        use fmt::Write as _;
        let mut out = Escaped(String::new());
        out.write_str("/graphql\n2026-01-01T00:00:00Z  INFO forged\u{1b}[31m\tok").unwrap();
        assert_eq!(out.0, "/graphql\\n2026-01-01T00:00:00Z  INFO forged\\u{1b}[31m\\tok");
        assert!(!out.0.contains('\n') && !out.0.contains('\u{1b}'));
    }

    #[test]
    fn next_line_and_other_c1_controls_are_escaped_but_letters_are_not() {
        use fmt::Write as _;
        let mut out = Escaped(String::new());
        out.write_str("caf\u{e9} \u{85}x \u{9b}31m \u{a0}").unwrap();
        assert_eq!(out.0, "caf\u{e9} \\u{85}x \\u{9b}31m \u{a0}");
    }

    /// A writer the tests read back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The text format (`TextFields` + `TextLine`) writing here.
        fn text_subscriber(&self) -> impl tracing::Subscriber + for<'a> LookupSpan<'a> {
            let w = self.clone();
            tracing_subscriber::fmt()
                .with_writer(move || w.clone())
                .with_ansi(false)
                .fmt_fields(TextFields)
                .event_format(TextLine)
                .finish()
        }

        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn text_fields_are_bare_tokens_or_quoted() {
        let out = Captured::default();
        let subscriber = out.text_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(source = "big", note = "two words", q = "a=\"b\"", empty = "", n = 3, "done");
        });
        let line = out.text();
        assert!(
            line.ends_with(&(r#": done source=big note="two words" q="a=\"b\"" empty="" n=3"#.to_owned() + "\n")),
            "{line}"
        );
    }

    #[test]
    fn access_lines_carry_the_request_span_in_both_formats() {
        let out = Captured::default();
        let subscriber = out.text_subscriber();
        let mut line = String::new();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", method = "POST", path = "/graphql", request_id = "abc");
            text_access_line(&mut line, Scope::Span(&span), 12, 503).unwrap();
        });
        let expected = "  INFO request{method=POST path=/graphql request_id=abc}: tower_http::trace::on_response: finished processing request latency=12 ms status=503\n";
        assert!(line.ends_with(expected), "{line}");
        assert_eq!(line.len(), "2026-12-02T05:42:01.123456Z".len() + expected.len());

        let w = out.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || w.clone()).json().finish();
        let mut line = String::new();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("outer");
            let _in = outer.enter();
            let span = tracing::info_span!("request", method = "GET", path = "/q\"x", request_id = "r-1");
            json_access_line(&mut line, Scope::Span(&span), 0, 200).unwrap();
        });
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], ACCESS_TARGET);
        assert_eq!(v["fields"]["message"], "finished processing request");
        assert_eq!(v["fields"]["latency"], "0 ms");
        assert_eq!(v["fields"]["status"], 200);
        assert_eq!(
            v["span"],
            serde_json::json!({"method": "GET", "path": "/q\"x", "request_id": "r-1", "name": "request"})
        );
        assert_eq!(v["spans"][0], serde_json::json!({"name": "outer"}));
        assert_eq!(v["spans"][1], v["span"]);
        assert_eq!(at(0, 0).len(), v["timestamp"].as_str().unwrap().len());
    }

    /// A request answered without its span (a cached `POST /graphql`) gets the same access line
    /// as one with the span, in both formats.
    #[test]
    fn access_lines_without_the_span_read_as_with_it() {
        let u = Unspanned { method: "POST", path: "/graphql" };
        let after_timestamp = |line: &str| line["2026-12-02T05:42:01.123456Z".len()..].to_string();
        // A plain token is written bare, anything else escaped and quoted (as TextFields does).
        for (request_id, shown) in [("abc-1", "abc-1"), ("-", "-"), ("two words", "\"two words\"")] {
            let out = Captured::default();
            let (mut spanned, mut fields) = (String::new(), String::new());
            tracing::subscriber::with_default(out.text_subscriber(), || {
                text_access_line(&mut spanned, Scope::Span(&u.span(request_id)), 3, 200).unwrap();
            });
            text_access_line(&mut fields, Scope::Fields(&u, request_id), 3, 200).unwrap();
            assert_eq!(after_timestamp(&fields), after_timestamp(&spanned));
            assert!(
                fields.contains(&format!(" request{{method=POST path=/graphql request_id={shown}}}: ")),
                "{fields}"
            );

            let w = out.clone();
            let json = tracing_subscriber::fmt().with_writer(move || w.clone()).json().finish();
            let (mut spanned, mut fields) = (String::new(), String::new());
            tracing::subscriber::with_default(json, || {
                json_access_line(&mut spanned, Scope::Span(&u.span(request_id)), 3, 200).unwrap();
            });
            json_access_line(&mut fields, Scope::Fields(&u, request_id), 3, 200).unwrap();
            let mut a: serde_json::Value = serde_json::from_str(&spanned).unwrap();
            let mut b: serde_json::Value = serde_json::from_str(&fields).unwrap();
            assert!(fields.ends_with("}\n"));
            a["timestamp"] = serde_json::Value::Null;
            b["timestamp"] = serde_json::Value::Null;
            assert_eq!(a, b);
            assert_eq!(b["span"]["request_id"], request_id);
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0u128, 7, 10, 200, 65_535, u128::MAX] {
            let mut s = String::new();
            push_number(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    proptest::proptest! {
        #[test]
        fn every_second_in_four_centuries_formats_like_chrono(secs in 0u64..12_622_780_800, micros in 0u32..1_000_000) {
            let expected = chrono::DateTime::from_timestamp(secs as i64, micros * 1000)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            proptest::prop_assert_eq!(at(secs, micros), expected);
        }
    }
}
