//! catalogctl output: tables for people, JSON/YAML for scripts, progress on a terminal or as
//! timestamped lines in CI logs.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::io::IsTerminal;

use super::source_file::SourceFile;
use super::{CliError, Format};

pub struct Out {
    format: Format,
}

impl Out {
    pub fn new(format: Format) -> Out {
        Out { format }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Prints `value` as JSON/YAML, or the human rendering.
    pub fn data(&self, value: &Value, human: impl FnOnce() -> String) {
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
            Format::Yaml => print!("{}", serde_yaml_ng::to_string(value).unwrap_or_default()),
            Format::Table => println!("{}", human()),
        }
    }

    /// Errors go to stderr for people; with json/yaml also to stdout as `{"error": ...}`.
    pub fn error(&self, e: &CliError) {
        eprintln!("catalogctl: {}", e.message);
        let v = serde_json::json!({"error": {"code": e.code, "message": e.message, "exitCode": e.exit as u8, "details": e.details}});
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            Format::Yaml => print!("{}", serde_yaml_ng::to_string(&v).unwrap_or_default()),
            Format::Table => {}
        }
    }
}

pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// "3m ago", "2h ago", "just now", "-" for never.
pub fn relative_time(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return "-".into();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
    match secs {
        0..=4 => "just now".into(),
        5..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// "in 4m", "in 12s", "due" (past), or "-" when there is no time.
pub fn time_until(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return "-".into();
    };
    let secs = (t.with_timezone(&Utc) - Utc::now()).num_seconds();
    match secs {
        i64::MIN..=0 => "due".into(),
        1..=59 => format!("in {secs}s"),
        60..=3599 => format!("in {}m", secs / 60),
        3600..=86_399 => format!("in {}h", secs / 3600),
        _ => format!("in {}d", secs / 86_400),
    }
}

pub fn compiler_line(src: &SourceFile, d: &Value) -> String {
    let severity = if d["severity"] == "WARNING" { "warning" } else { "error" };
    let mut loc = match (d["line"].as_u64(), d["column"].as_u64()) {
        (Some(l), Some(c)) if d["field"].as_str().is_none_or(|f| !f.starts_with("input.")) => format!(
            "{}:{}:{}",
            src.content_path.display(),
            l + u64::from(src.content_line_offset),
            c + u64::from(src.content_column_offset)
        ),
        _ => src.content_path.display().to_string(),
    };
    if let Some(f) = d["field"].as_str() {
        loc.push_str(&format!(" ({f})"));
    }
    let mut s = format!("{loc}: {severity}: {}", d["message"].as_str().unwrap_or_default());
    if let Some(sug) = d["suggestion"].as_str() {
        s.push_str(&format!("; did you mean `{sug}`?"));
    }
    if let Some(h) = d["hint"].as_str() {
        s.push_str(&format!("\n  = help: {h}"));
    }
    s
}

pub fn diagnostics(src: &SourceFile, report: &Value) -> String {
    let mut lines = Vec::new();
    for key in ["errors", "warnings"] {
        for d in report[key].as_array().into_iter().flatten() {
            lines.push(compiler_line(src, d));
        }
    }
    let errors = report["errors"].as_array().map_or(0, Vec::len);
    let warnings = report["warnings"].as_array().map_or(0, Vec::len);
    lines.push(if errors == 0 {
        format!("valid ({warnings} warning{})", if warnings == 1 { "" } else { "s" })
    } else {
        format!(
            "invalid: {errors} error{}, {warnings} warning{}",
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        )
    });
    lines.join("\n")
}

pub fn impact(r: &Value) -> String {
    let i = &r["impact"];
    let names = |k: &str| {
        i[k].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let mut s = format!(
        "to add: {}  to update: {}  to remove: {}  unchanged: {}",
        i["toAdd"], i["toUpdate"], i["toRemove"], i["unchanged"]
    );
    for (label, key) in [("+", "addedNames"), ("~", "updatedNames"), ("-", "removedNames")] {
        let n = names(key);
        if !n.is_empty() {
            s.push_str(&format!("\n  {label} {n}"));
        }
    }
    s
}

pub fn applied(src: &SourceFile, r: &Value) -> String {
    let target = format!("{}/{}", src.plugin, r["source"]["id"].as_str().unwrap_or_default());
    let mut s = if r["dryRun"] == true {
        format!("{target}: dry run, nothing changed (current revision {})\n{}", r["revision"], impact(r))
    } else if r["changed"] == true {
        format!("{target}: applied as revision {}", r["revision"])
    } else {
        format!("{target}: unchanged (revision {})", r["revision"])
    };
    for w in r["validation"]["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("\n{}", compiler_line(src, w)));
    }
    if !r["refresh"].is_null() {
        s.push('\n');
        s.push_str(&job_summary(&r["refresh"]));
    }
    s
}

/// "Loaded 6 entities, removed 1 in 42 ms", plus one line per failed source.
pub fn job_summary(job: &Value) -> String {
    let results = job["results"].as_array().cloned().unwrap_or_default();
    let sum = |k: &str| results.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    let ms = match (
        job["startedAt"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
        job["finishedAt"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
    ) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(0),
        _ => 0,
    };
    let mut s = format!(
        "{} {}: Loaded {} entities, removed {} in {ms} ms",
        job["phase"].as_str().unwrap_or_default(),
        job["id"].as_str().unwrap_or_default(),
        sum("entitiesLoaded"),
        sum("entitiesRemoved")
    );
    if job["phase"] == "CANCELLED"
        && let Some(e) = job["error"].as_str()
    {
        s.push_str(&format!("\n  {e}"));
    }
    for r in results.iter().filter(|r| r["status"] != "SUCCESS") {
        s.push_str(&format!(
            "\n  {} {}/{}: {}",
            r["status"].as_str().unwrap_or_default(),
            r["plugin"].as_str().unwrap_or_default(),
            r["sourceId"].as_str().unwrap_or_default(),
            r["summary"].as_str().unwrap_or_default()
        ));
        for d in r["diagnostics"].as_array().into_iter().flatten().take(3) {
            s.push_str(&format!("\n    {}", d["message"].as_str().unwrap_or_default()));
        }
    }
    s
}

/// Live progress: a bar on a terminal, timestamped lines otherwise (and nothing for json/yaml,
/// whose stdout is for the final document).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    last: (String, u64),
}

impl Progress {
    pub fn new(out: &Out, job: &Value) -> Progress {
        let human = out.format() == Format::Table;
        let tty = human && std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new(job["total"].as_u64().unwrap_or(0));
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}") {
                b.set_style(style);
            }
            b
        });
        Progress { bar, lines: human && !tty, last: (String::new(), u64::MAX) }
    }

    pub fn update(&mut self, job: &Value) {
        let phase = job["phase"].as_str().unwrap_or_default().to_string();
        let completed = job["completed"].as_u64().unwrap_or(0);
        let total = job["total"].as_u64().unwrap_or(0);
        let current = job["currentSource"].as_str().unwrap_or("");
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(completed);
            b.set_message(format!("{phase} {current}"));
        } else if self.lines && (phase.clone(), completed) != self.last {
            eprintln!("{} {phase} {completed}/{total} {current}", Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
        self.last = (phase, completed);
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn source_details(s: &Value) -> String {
    let st = &s["status"];
    let mut out = format!(
        "{}/{}  {}\n  type: {}  enabled: {}  revision: {}\n  state: {}  entities: {}  last refreshed: {} ({})\n  summary: {}",
        s["plugin"].as_str().unwrap_or_default(),
        s["id"].as_str().unwrap_or_default(),
        s["name"].as_str().unwrap_or_default(),
        s["type"].as_str().unwrap_or_default(),
        s["enabled"],
        s["revision"],
        st["state"].as_str().unwrap_or_default(),
        st["entityCount"],
        relative_time(st["lastRefreshTime"].as_str()),
        st["lastRefreshStatus"].as_str().unwrap_or("-"),
        st["lastRefreshSummary"].as_str().unwrap_or("-"),
    );
    if let Some(e) = st["lastError"].as_str() {
        out.push_str(&format!("\n  last error: {e}"));
    }
    let diags = st["diagnostics"].as_array().cloned().unwrap_or_default();
    if !diags.is_empty() {
        out.push_str("\n  diagnostics:");
        for d in diags {
            let at = match (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64()) {
                (Some(f), Some(l), Some(c)) => format!("{f}:{l}:{c}: "),
                (Some(f), _, _) => format!("{f}: "),
                _ => String::new(),
            };
            out.push_str(&format!(
                "\n    {at}{}: {}",
                d["severity"].as_str().unwrap_or("ERROR").to_lowercase(),
                d["message"].as_str().unwrap_or_default()
            ));
        }
    }
    out.push_str("\n  recent revisions:");
    for r in s["revisions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n    {:>4}  {:<9} {:<16} {}",
            r["revision"],
            r["action"].as_str().unwrap_or_default(),
            r["actor"].as_str().unwrap_or_default(),
            relative_time(r["createdAt"].as_str())
        ));
    }
    out
}
