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

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber (filter from `RUST_LOG`, default `info`). Keep the guard for
/// the life of the process: dropping it flushes what is queued.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("catalog-bff-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).fmt_fields(TextFields).event_format(TextLine).try_init(),
    };
    guard
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

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldsVisitor { out: Escaped(writer), first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldsVisitor<'w> {
    out: Escaped<Writer<'w>>,
    first: bool,
    result: fmt::Result,
}

impl FieldsVisitor<'_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) { "" } else { " " };
        let name = field.name();
        self.result = if name == "message" {
            self.out.0.write_str(sep).and_then(|()| fmt::Write::write_fmt(&mut self.out, value))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.out
                .0
                .write_str(sep)
                .and_then(|()| write!(self.out.0, "{name}="))
                .and_then(|()| fmt::Write::write_fmt(&mut self.out, value))
        };
    }
}

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As tracing-subscriber's own format: the message bare, other strings quoted.
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

/// Writes what it is given with control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`, ...).
pub struct Escaped<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
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
    write!(
        w,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
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
