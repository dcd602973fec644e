//! The error codes every layer answers with: `extensions.code` of GraphQL errors, the JSON
//! error bodies the HTTP layer writes itself, the audit outcome, and catalogctl's exit status.
//! One list, each code spelled once (`as_str`); the wire format is the SCREAMING_SNAKE_CASE word.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A client mistake: the message says what, where and how to fix it; nothing changed.
    ValidationFailed,
    /// The plugin, source, revision or job does not exist.
    NotFound,
    /// `expectedRevision` was not the current revision.
    Conflict,
    /// The change removes most entities and `confirmRemovals` was not set.
    RemovalsNeedConfirmation,
    /// The caller's role may not do this (or the document is not trusted).
    Forbidden,
    /// No valid credentials.
    Unauthenticated,
    /// Too many requests or changes from this caller or address.
    RateLimited,
    /// The request was not sent in time.
    RequestTimeout,
    /// A dependency (the database, the config store) is down, or the server is busy: retry.
    Unavailable,
    /// A server fault; the server log has the details.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::ValidationFailed,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::RemovalsNeedConfirmation,
        ErrorCode::Forbidden,
        ErrorCode::Unauthenticated,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::RemovalsNeedConfirmation => "REMOVALS_NEED_CONFIRMATION",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The code `word` names; `None` for a word this version does not know.
    pub fn parse(word: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_reads_back_as_itself() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).ok(), Some(serde_json::Value::from(c.as_str())));
        }
        assert_eq!(ErrorCode::parse("OK"), None);
    }
}
