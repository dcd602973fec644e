//! When a source refreshes on its own: its interval (`refreshInterval`, a Go-style duration),
//! the retry backoff after a failed refresh, and the jitter that spreads both.
//!
//! Everything here is a pure function of what every replica reads alike (the entry, the
//! status row's times truncated to milliseconds, the source's key), so every replica computes
//! the same due time for a source, and the claim on that due time (`Db::claim_schedule`) lets
//! exactly one of them run it. No clock is read here, and nothing of the catalog is imported:
//! the entry check uses the parser, the service the rest (`service/schedule.rs`).

use sha2::{Digest, Sha256};
use std::time::Duration;

/// The shortest `refreshInterval` accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The longest `refreshInterval` accepted (a year): longer is almost surely a typo.
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far a due time is spread around its nominal time: ±10 %.
const JITTER: f64 = 0.10;

/// How sources refresh on their own (the server's flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulePolicy {
    /// `--default-refresh-interval`: for `url` sources without `refreshInterval`; `None`: off.
    pub default_url_interval: Option<Duration>,
    /// `--retry-initial-interval`: the first retry's delay after a failed refresh (doubling).
    pub retry_initial: Duration,
    /// `--retry-max-interval`: the longest delay between two retries.
    pub retry_max: Duration,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        SchedulePolicy {
            default_url_interval: Some(Duration::from_secs(600)),
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(900),
        }
    }
}

/// Parses a Go-style duration (`30s`, `10m`, `1h30m`, `1.5h`, `500ms`): one or more numbers,
/// each followed by its unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). No sign, no spaces.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration");
    if text.is_empty() {
        return Err("the duration is empty".into());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("`{text}` has a number without a unit")),
            other => return Err(format!("`{text}` has the unknown unit `{other}`")),
        };
        total += value * seconds;
        if !total.is_finite() || total > MAX_INTERVAL.as_secs_f64() * 10.0 {
            return Err(format!("`{text}` is too long"));
        }
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

/// A `refreshInterval` as an entry may carry it: a duration between [`MIN_INTERVAL`] and
/// [`MAX_INTERVAL`]. The error says what is wrong, for a diagnostic.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < MIN_INTERVAL {
        return Err(format!("refreshInterval `{text}` is shorter than the minimum, 10s"));
    }
    if d > MAX_INTERVAL {
        return Err(format!("refreshInterval `{text}` is longer than the maximum, 8760h (a year)"));
    }
    Ok(d)
}

/// A number in [-1, 1] fixed by `parts`: the same on every replica and every build.
fn spread(parts: &[&[u8]]) -> f64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let unit = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    unit * 2.0 - 1.0
}

/// `base` spread by ±10 %, fixed by the source and the time it is measured from.
fn jittered(base: Duration, plugin: &str, id: &str, from_ms: i64, what: &[u8]) -> Duration {
    let f = 1.0 + JITTER * spread(&[plugin.as_bytes(), id.as_bytes(), &from_ms.to_le_bytes(), what]);
    Duration::from_secs_f64(base.as_secs_f64() * f)
}

fn add_ms(at_ms: i64, d: Duration) -> i64 {
    at_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// When a source with `interval` whose last refresh ended at `last_ms` (ms since the epoch) is
/// due again: `last + interval ± 10 %`.
pub fn next_refresh_ms(plugin: &str, id: &str, last_ms: i64, interval: Duration) -> i64 {
    add_ms(last_ms, jittered(interval, plugin, id, last_ms, b"interval"))
}

/// The delay before retry number `count` (1 for the first) of a refresh that failed at
/// `failed_ms`: `retry_initial · 2^(count-1)`, capped by `retry_max`, ± 10 %.
pub fn retry_delay(plugin: &str, id: &str, failed_ms: i64, count: u32, policy: &SchedulePolicy) -> Duration {
    let doublings = count.saturating_sub(1).min(30);
    let base = policy.retry_initial.saturating_mul(1u32 << doublings).min(policy.retry_max);
    jittered(base, plugin, id, failed_ms, b"retry")
}

/// Why a source is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueWhy {
    /// Its interval passed since the last refresh.
    Interval,
    /// Its last refresh failed in a way a retry may fix.
    Retry,
}

/// The next time a source refreshes on its own, or `None`: the earlier of its interval's due
/// time and its retry time.
pub fn next_due(interval_due_ms: Option<i64>, retry_at_ms: Option<i64>) -> Option<(i64, DueWhy)> {
    match (interval_due_ms, retry_at_ms) {
        (Some(i), Some(r)) if r < i => Some((r, DueWhy::Retry)),
        (Some(i), _) => Some((i, DueWhy::Interval)),
        (None, Some(r)) => Some((r, DueWhy::Retry)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        for (text, secs) in [
            ("30s", 30.0),
            ("10m", 600.0),
            ("1h", 3600.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("2m3s", 123.0),
        ] {
            assert_eq!(parse_duration(text).unwrap().as_secs_f64(), secs, "{text}");
        }
        for text in ["", "10", "ten", "10x", "-5s", "1 h", "s", ".s", "1e3s"] {
            assert!(parse_duration(text).is_err(), "{text} parsed");
        }
    }

    #[test]
    fn intervals_are_bounded() {
        assert!(parse_interval("9s").unwrap_err().contains("minimum, 10s"));
        assert_eq!(parse_interval("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_interval("8761h").unwrap_err().contains("maximum"));
        assert!(parse_interval("999999999999999h").is_err());
    }

    #[test]
    fn jitter_is_within_ten_percent_and_the_same_everywhere() {
        let interval = Duration::from_secs(100);
        let mut seen = std::collections::HashSet::new();
        for last in 0..200i64 {
            let due = next_refresh_ms("models", "a", last * 1000, interval);
            let delta = due - last * 1000;
            assert!((90_000..=110_000).contains(&delta), "{delta}");
            assert_eq!(due, next_refresh_ms("models", "a", last * 1000, interval));
            seen.insert(delta / 1000);
        }
        assert!(seen.len() > 10, "the jitter does not spread: {seen:?}");
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        let policy = SchedulePolicy {
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(900),
            ..SchedulePolicy::default()
        };
        let nominal = [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0];
        for (i, want) in nominal.iter().enumerate() {
            let got = retry_delay("mcp", "x", 5, u32::try_from(i + 1).unwrap(), &policy).as_secs_f64();
            assert!((got - want).abs() <= want * 0.1 + 1e-9, "retry {}: {got} vs {want}", i + 1);
        }
        assert!(retry_delay("mcp", "x", 5, u32::MAX, &policy) <= Duration::from_secs(990));
    }

    #[test]
    fn the_earlier_of_interval_and_retry_wins() {
        assert_eq!(next_due(Some(10), Some(5)), Some((5, DueWhy::Retry)));
        assert_eq!(next_due(Some(10), Some(50)), Some((10, DueWhy::Interval)));
        assert_eq!(next_due(None, Some(50)), Some((50, DueWhy::Retry)));
        assert_eq!(next_due(None, None), None);
    }
}
