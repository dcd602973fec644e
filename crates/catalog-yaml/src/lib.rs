//! catalog-bff's YAML toolkit: everything that reads catalog YAML before the core sees a value.
//!
//! - [`depth`]: a linear nesting guard that runs before any parser (libyaml's cost grows
//!   quadratically with nesting).
//! - [`split`] and [`subset`]: a large catalog's entity list parsed in pieces on several
//!   threads, each piece by a reader for the plain YAML subset catalogs are written in (~3x
//!   serde_yaml_ng's speed; it declines everything else, and serde_yaml_ng reads that).
//! - [`syntax_check`], [`strict_parse`], [`strict_parse_list`]: the entry points, with
//!   serde_yaml_ng's errors as located [`YamlError`]s (line, column, field path, the nearest
//!   known field name, a hint).
//! - [`find_key_value`], [`key_value_positions`]: best-effort positions for errors found after
//!   parsing.
//!
//! It knows nothing of catalogs, sources or the server: no tokio, no core types. The limits
//! are parameters ([`Limits`]); whoever reads YAML passes the ones it was configured with.

#![expect(
    clippy::result_large_err,
    reason = "a YamlError is rich (file, position, field, suggestion, hint) and only built on error paths"
)]

pub mod depth;
mod error;
mod parse;
pub mod split;
pub mod subset;

pub use error::{YamlError, YamlErrorKind, edit_distance, nearest};
pub use parse::{
    Position, find_key_value, from_serde_error, key_value_positions, strict_parse, strict_parse_list, syntax_check,
};

/// What a YAML text may cost before it is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The deepest nesting accepted (`--max-yaml-depth`); see [`depth`].
    pub max_depth: usize,
}

impl Limits {
    pub const fn new(max_depth: usize) -> Self {
        // A limit of 0 would refuse every document, even `a: 1`.
        Limits { max_depth: if max_depth == 0 { 1 } else { max_depth } }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: depth::DEFAULT_MAX_DEPTH }
    }
}
