//! Cursor paging for the history lists: `Source.revisionsConnection`, `auditLogConnection` and
//! `refreshJobsConnection` (Relay connections, newest first).
//!
//! Cursors name the item, not its position: a revision number, an audit row id, a job's
//! (creation time, id). A page read after new items were recorded therefore neither repeats
//! nor skips anything, and the database reads one page (`LIMIT first + 1` with a keyset
//! `WHERE`) rather than counting through an offset. `first` is capped; more is refused with
//! VALIDATION_FAILED naming the cap, never cut silently.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::errors::invalid_input;

/// The most items one page of a history connection returns.
pub const MAX_PAGE: i32 = 100;

/// Extra fields of the history connections.
#[derive(SimpleObject)]
pub struct HistoryConnectionFields {
    /// Items in the whole list (with the same filter), across all pages.
    pub total_count: u64,
}

/// A history connection: `edges { cursor node }`, `pageInfo`, `totalCount`.
pub type HistoryConnection<T> = Connection<String, T, HistoryConnectionFields, EmptyFields>;

/// Builds a connection from one page (newest first).
pub fn connection<T: async_graphql::OutputType>(
    items: impl IntoIterator<Item = (String, T)>,
    has_previous: bool,
    has_next: bool,
    total: u64,
) -> HistoryConnection<T> {
    let mut conn =
        Connection::with_additional_fields(has_previous, has_next, HistoryConnectionFields { total_count: total });
    conn.edges.extend(items.into_iter().map(|(cursor, node)| Edge::new(cursor, node)));
    conn
}

/// `first` as a page size, or VALIDATION_FAILED naming the cap.
pub fn page_size(first: i32) -> Result<u64> {
    if (1..=MAX_PAGE).contains(&first) {
        return Ok(u64::try_from(first).unwrap_or(1));
    }
    Err(invalid_input(
        format!("`first` must be between 1 and {MAX_PAGE} (the page size cap of history connections); got {first}"),
        "first",
        &format!("ask for at most {MAX_PAGE} items and fetch the next page with `after: pageInfo.endCursor`"),
    ))
}

/// Longest cursor text read: ours are well under 200 characters.
const MAX_CURSOR_LEN: usize = 512;

/// What a cursor points at; the kind letter keeps one connection's cursor out of another.
#[derive(Debug, PartialEq, Eq)]
pub enum Cursor {
    /// A revision number.
    Revision(i32),
    /// An audit row id.
    Audit(i64),
    /// A job's creation time (as the database holds it) and id.
    Job(DateTime<Utc>, String),
}

impl Cursor {
    /// The opaque form clients get: hex of `<kind>:<key>`.
    pub fn encode(&self) -> String {
        let raw = match self {
            Cursor::Revision(n) => format!("r:{n}"),
            Cursor::Audit(id) => format!("a:{id}"),
            Cursor::Job(at, id) => {
                format!("j:{}\n{id}", at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            }
        };
        hex::encode(raw)
    }

    fn decode(text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR_LEN {
            return None;
        }
        let raw = String::from_utf8(hex::decode(text).ok()?).ok()?;
        let (kind, key) = raw.split_once(':')?;
        match kind {
            "r" => key.parse().ok().map(Cursor::Revision),
            "a" => key.parse().ok().map(Cursor::Audit),
            "j" => {
                let (at, id) = key.split_once('\n')?;
                let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
                Some(Cursor::Job(at, id.to_string()))
            }
            _ => None,
        }
    }
}

/// The `after` argument: None for the first page, or the cursor of the expected kind, or
/// VALIDATION_FAILED for anything else (a foreign or edited cursor).
pub fn after(text: Option<&str>, want: fn(&Cursor) -> bool) -> Result<Option<Cursor>> {
    let Some(text) = text else { return Ok(None) };
    match Cursor::decode(text) {
        Some(c) if want(&c) => Ok(Some(c)),
        _ => Err(invalid_input(
            "`after` is not a cursor of this connection",
            "after",
            "pass `pageInfo.endCursor` (or an edge's `cursor`) from a previous page of the same connection",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        let at = Utc::now();
        for c in [Cursor::Revision(7), Cursor::Audit(42), Cursor::Job(at, "abc".into())] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        for bad in ["", "zz", "not hex", &hex::encode("x:1"), &hex::encode("r:seven")] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
