//! The bundled example catalog, written into the data directory on first start so that
//! `catalog-bff serve` works with no flags.

use std::path::Path;

pub const FILES: [(&str, &str); 6] = [
    ("sources.yaml", include_str!("example/sources.yaml")),
    ("team-models.yaml", include_str!("example/team-models.yaml")),
    ("partner-models.yaml", include_str!("example/partner-models.yaml")),
    ("archived-models.yaml", include_str!("example/archived-models.yaml")),
    ("platform-mcp-servers.yaml", include_str!("example/platform-mcp-servers.yaml")),
    ("lab-mcp-servers.yaml", include_str!("example/lab-mcp-servers.yaml")),
];

/// Writes the example into `dir` unless it already has a `sources.yaml`. Returns whether it
/// seeded anything.
pub fn seed(dir: &Path) -> std::io::Result<bool> {
    if dir.join("sources.yaml").exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    // Catalog files first, the sources file last: a crash half-way leaves no sources file, so
    // the next start seeds again.
    for (name, text) in FILES.iter().rev() {
        catalog_core::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(true)
}
