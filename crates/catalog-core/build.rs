//! Build script: `CATALOG_BFF_BUILD_FINGERPRINT`, the hash of the code that decides what a
//! catalog load gives, for the snapshot cache (`src/snapshot_cache.rs`).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The source files whose code decides what a catalog load gives (entities, diagnostics, the
/// filter): the snapshot cache is keyed on their hash, so a binary built from other loading code
/// never takes another binary's cache file as valid. `Cargo.lock` is in: a serde or YAML parser
/// upgrade changes what a parse gives too. Paths are relative to this crate.
const FINGERPRINTED: &[&str] = &[
    "src/plugins",
    // The YAML toolkit (depth guard, splitter, subset reader, located errors) and the core's
    // entry points into it.
    "../catalog-yaml/src",
    "src/yaml.rs",
    "src/validate.rs",
    "src/diagnostics.rs",
    // The entry filter (`filter_entities`) and the cache's own format.
    "src/service/apply.rs",
    "src/snapshot_cache.rs",
    "../../Cargo.lock",
];

/// Exports `CATALOG_BFF_BUILD_FINGERPRINT`: sha256 over every file of [`FINGERPRINTED`] (path,
/// length, bytes; directories walked in sorted order). A file that cannot be read hashes as
/// missing rather than failing the build.
fn main() {
    fn add(h: &mut Sha256, root: &Path, rel: &Path) {
        let full = root.join(rel);
        if full.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(&full) {
                Ok(d) => d.filter_map(|e| e.ok()).map(|e| rel.join(e.file_name())).collect(),
                Err(_) => Vec::new(),
            };
            entries.sort();
            for e in entries {
                add(h, root, &e);
            }
            return;
        }
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0u8]);
        match std::fs::read(&full) {
            Ok(bytes) => {
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(_) => h.update(b"missing"),
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut h = Sha256::new();
    for rel in FINGERPRINTED {
        println!("cargo:rerun-if-changed={rel}");
        add(&mut h, &root, Path::new(rel));
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=CATALOG_BFF_BUILD_FINGERPRINT={hex}");
}
