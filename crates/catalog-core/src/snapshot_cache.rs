//! The startup snapshot cache: a restart with unchanged catalogs skips the YAML parse.
//!
//! Where: `DATA_DIR/snapshot-cache/`, one file per source, named
//! `<plugin>.<sha256 of the source id, hex>.snap` (the API never chooses a path; the directory
//! is reserved, see `paths`). A file holds what the load of one yaml source gave: the filtered
//! entities and the diagnostics.
//!
//! Format: `MAGIC` (8 bytes), format version (u32 LE), key (32 bytes), the JSON payload, and a
//! sha256 of everything before it (32 bytes). The key is a sha256 over the catalog text's content
//! hash, the canonical JSON of the source entry (its filters included), the plugin name, the
//! YAML depth limit and the build fingerprint (`build.rs`: a hash of the loading code and
//! `Cargo.lock`), so a different catalog, entry, setting or binary is a miss.
//!
//! **The cache never changes what is served**: any miss (no file, too large, wrong magic,
//! version or key, a checksum or JSON error) is logged and ignored, and the normal parse runs
//! (and rewrites the file). Reads happen only on the initial refresh; writes happen off the
//! refresh's path, atomically (temp file + rename), and are skipped past `MAX_BYTES`.

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::diagnostics::Diagnostic;
use super::plugins::models::exact_text;
use super::plugins::{Entity, PluginKind};
use super::store::atomic::write_atomic_with;

/// The directory under DATA_DIR.
pub const DIR_NAME: &str = "snapshot-cache";
const MAGIC: &[u8; 8] = b"CBFFSNAP";
/// Bumped whenever the payload's shape changes (the build fingerprint covers this file too).
const FORMAT_VERSION: u32 = 1;
/// Files larger than this are neither written nor read.
pub const MAX_BYTES: u64 = 512 * 1024 * 1024;
/// A hash of the code that decides what a load gives (see `build.rs`).
pub const BUILD_FINGERPRINT: &str = env!("CATALOG_BFF_BUILD_FINGERPRINT");
const HEADER_LEN: usize = 8 + 4 + 32;
const TRAILER_LEN: usize = 32;
const SUFFIX: &str = ".snap";

/// What identifies one load: a file with another key is a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// `entry_json` is the canonical JSON of the source entry, `content_hash` the hash of the
    /// catalog text the load parsed.
    pub fn new(plugin: PluginKind, entry_json: &str, content_hash: &str) -> Key {
        let depth = super::yaml::limits().max_depth.to_string();
        let mut h = Sha256::new();
        for part in [
            b"catalog-bff snapshot-cache key".as_slice(),
            &FORMAT_VERSION.to_le_bytes(),
            BUILD_FINGERPRINT.as_bytes(),
            plugin.name().as_bytes(),
            entry_json.as_bytes(),
            content_hash.as_bytes(),
            depth.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Key(h.finalize().into())
    }
}

/// What a cache file gives back: exactly what the load gave when it was written.
#[derive(Debug, Deserialize)]
pub struct Cached {
    pub entities: Vec<Entity>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Why a read was a miss (logged; never shown to an API caller).
#[derive(Debug)]
pub enum Miss {
    Absent,
    TooLarge(u64),
    Io(std::io::Error),
    Truncated,
    Magic,
    Version(u32),
    Key,
    Checksum,
    Json(serde_json::Error),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Absent => f.write_str("no cache file"),
            Miss::TooLarge(n) => write!(f, "the file has {n} bytes, over the {MAX_BYTES}-byte cap"),
            Miss::Io(e) => write!(f, "cannot read the file: {e}"),
            Miss::Truncated => f.write_str("the file is truncated"),
            Miss::Magic => f.write_str("not a snapshot cache file"),
            Miss::Version(v) => write!(f, "format version {v}, this server writes {FORMAT_VERSION}"),
            Miss::Key => f.write_str("written for other content, entry, settings or build"),
            Miss::Checksum => f.write_str("checksum mismatch"),
            Miss::Json(e) => write!(f, "unreadable payload: {e}"),
        }
    }
}

/// The cache directory and its reads and writes (blocking: call from a blocking thread).
#[derive(Debug)]
pub struct SnapshotCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Writes of one process one at a time: two refreshes of one source never interleave
    /// renames out of order for long, and the disk sees one large write at a time.
    write_lock: std::sync::Mutex<()>,
}

impl SnapshotCache {
    pub fn new(dir: PathBuf) -> SnapshotCache {
        SnapshotCache::with_cap(dir, MAX_BYTES)
    }

    pub fn with_cap(dir: PathBuf, max_bytes: u64) -> SnapshotCache {
        SnapshotCache { dir, max_bytes, write_lock: std::sync::Mutex::new(()) }
    }

    /// The file name of a source's cache file.
    pub fn file_name(plugin: PluginKind, id: &str) -> String {
        format!("{}.{}{SUFFIX}", plugin.name(), hex::encode(Sha256::digest(id.as_bytes())))
    }

    pub fn path(&self, plugin: PluginKind, id: &str) -> PathBuf {
        self.dir.join(Self::file_name(plugin, id))
    }

    /// The source's cached load, if the file is there, intact and written for `key`.
    pub fn read(&self, plugin: PluginKind, id: &str, key: &Key) -> Result<Cached, Miss> {
        let bytes = self.read_checked(plugin, id, key)?;
        let cached = exact_text(|| serde_json::from_slice::<Cached>(&bytes[HEADER_LEN..bytes.len() - TRAILER_LEN]))
            .map_err(Miss::Json);
        drop(bytes);
        cached
    }

    /// Whether the source's file is already this load, intact (checksum and key; the payload is
    /// what this build wrote for that key): a refresh of unchanged content does not rewrite it.
    /// Streamed: the file is not held in memory.
    pub fn is_current(&self, plugin: PluginKind, id: &str, key: &Key) -> bool {
        let current = || -> std::io::Result<bool> {
            let mut file = std::io::BufReader::new(std::fs::File::open(self.path(plugin, id))?);
            let len = file.get_ref().metadata()?.len();
            if len > self.max_bytes || len < (HEADER_LEN + TRAILER_LEN) as u64 {
                return Ok(false);
            }
            let mut header = [0u8; HEADER_LEN];
            file.read_exact(&mut header)?;
            if check_header(&header, key).is_err() {
                return Ok(false);
            }
            let mut hasher = Sha256::new();
            hasher.update(header);
            let body = len - (HEADER_LEN + TRAILER_LEN) as u64;
            if std::io::copy(&mut (&mut file).take(body), &mut hasher)? != body {
                return Ok(false);
            }
            let mut trailer = [0u8; TRAILER_LEN];
            file.read_exact(&mut trailer)?;
            Ok(hasher.finalize()[..] == trailer)
        };
        current().unwrap_or(false)
    }

    /// The whole file, its size, magic, version, key and checksum checked.
    fn read_checked(&self, plugin: PluginKind, id: &str, key: &Key) -> Result<Vec<u8>, Miss> {
        let path = self.path(plugin, id);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Io(e)),
        };
        let len = file.metadata().map_err(Miss::Io)?.len();
        if len > self.max_bytes {
            return Err(Miss::TooLarge(len));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // Bounded even if the file grows after the size check.
        file.take(self.max_bytes + 1).read_to_end(&mut bytes).map_err(Miss::Io)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(Miss::TooLarge(bytes.len() as u64));
        }
        check(&bytes, key)?;
        Ok(bytes)
    }

    /// Writes a source's load atomically, replacing its previous file. Returns the file's size,
    /// or `Ok(None)` when the content is over the cap (nothing is written, an old file removed).
    pub fn write(
        &self,
        plugin: PluginKind,
        id: &str,
        key: &Key,
        entities: &[Arc<Entity>],
        diagnostics: &[Diagnostic],
    ) -> std::io::Result<Option<u64>> {
        let _one_at_a_time = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(plugin, id);
        let (mut size, mut over) = (0u64, false);
        let result = write_atomic_with(&path, |file| {
            let mut out = Hashing {
                inner: std::io::BufWriter::with_capacity(1 << 20, file),
                hasher: Sha256::new(),
                written: 0,
                cap: self.max_bytes,
                over: false,
            };
            let body = (|| {
                out.write_all(MAGIC)?;
                out.write_all(&FORMAT_VERSION.to_le_bytes())?;
                out.write_all(&key.0)?;
                exact_text(|| serde_json::to_writer(&mut out, &Payload { entities, diagnostics }))
                    .map_err(std::io::Error::other)
            })();
            over = out.over;
            body?;
            let sum = out.hasher.finalize_reset();
            out.inner.write_all(&sum)?;
            size = out.written + TRAILER_LEN as u64;
            out.inner.flush()
        });
        match result {
            Ok(()) => Ok(Some(size)),
            Err(_) if over => {
                // Too large to cache: no stale file of this source is left behind either.
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes every cache file (and leftover temp file) that is not one of `keep`'s. Returns
    /// how many were removed.
    pub fn retain(&self, keep: &[(PluginKind, &str)]) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return 0 };
        let keep: std::collections::HashSet<String> = keep.iter().map(|(p, id)| Self::file_name(*p, id)).collect();
        let mut removed = 0;
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = name.ends_with(SUFFIX) || (name.starts_with('.') && name.contains(".snap.tmp-"));
            if ours && !keep.contains(name) && entry.file_type().is_ok_and(|t| t.is_file()) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::debug!(file = name, error = %e, "could not remove a stale snapshot cache file"),
                }
            }
        }
        removed
    }
}

/// Checks a cache file's header: magic, version, key.
fn check_header(header: &[u8], key: &Key) -> Result<(), Miss> {
    if header.len() < HEADER_LEN {
        return Err(Miss::Truncated);
    }
    if &header[..8] != MAGIC {
        return Err(Miss::Magic);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&header[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(Miss::Version(version));
    }
    if header[12..HEADER_LEN] != key.0 {
        return Err(Miss::Key);
    }
    Ok(())
}

/// Checks a whole cache file's framing: the header, then the checksum.
fn check(bytes: &[u8], key: &Key) -> Result<(), Miss> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(Miss::Truncated);
    }
    // The key before the checksum: a changed catalog is the common miss, and cheap this way.
    check_header(&bytes[..HEADER_LEN], key)?;
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    if Sha256::digest(body)[..] != *trailer {
        return Err(Miss::Checksum);
    }
    Ok(())
}

struct Payload<'a> {
    entities: &'a [Arc<Entity>],
    diagnostics: &'a [Diagnostic],
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Entities<'a>(&'a [Arc<Entity>]);
        impl Serialize for Entities<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|e| &**e))
            }
        }
        let mut st = s.serialize_struct("Cached", 2)?;
        st.serialize_field("entities", &Entities(self.entities))?;
        st.serialize_field("diagnostics", self.diagnostics)?;
        st.end()
    }
}

/// Hashes and counts what goes through; fails past `cap`.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
    cap: u64,
    /// Set when a write was refused for the cap.
    over: bool,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 + TRAILER_LEN as u64 > self.cap {
            self.over = true;
            return Err(std::io::Error::other("snapshot cache file over its size cap"));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODELS: &str = "source: T\nmodels:\n  - name: a\n    description: first\n    tasks: [x, y]\n    customProperties:\n      b: {double_value: 0.30000000000000004}\n      a: {metadataType: MetadataDoubleValue, double_value: 4.9e-324}\n      n: {double_value: .nan}\n      i: {int_value: .inf}\n      s: {struct_value: {k: [1, 2.5, null, \"t\"]}}\n    artifacts:\n      - uri: oci://r/a:1\n        customProperties:\n          size: {metadataType: MetadataIntValue, int_value: \"12\"}\n  - name: b\n    language: []\n    artifacts: []\n  - name: b\n";

    const MCP_KUBEFLOW: &str = "mcp_servers:\n  - name: s1\n    tools:\n      - name: t\n        accessType: read_only\n        parameters:\n          - {name: p, type: string, required: true}\n    securityIndicators: {verifiedSource: true}\n    runtimeMetadata: {a: 1.5, b: [null]}\n    customProperties:\n      x: {string_value: \"y\"}\n    endpoints: {http: \"http://h\"}\n    transports: [http]\n  - name: s2\n    runtimeMetadata: .nan\n  - name: s3\n    runtimeMetadata: null\n";

    const MCP_FLAT: &str = "mcpservers:\n  - name: f\n    serverUrl: http://x\n    transportType: sse\n    supportedTransports: \"http, sse\"\n    toolCount: 3\n    verified: true\n";

    fn roundtrip(plugin: PluginKind, text: &str) {
        let loaded = plugin.load(text, "t.yaml").expect("load");
        let entities: Vec<Arc<Entity>> = loaded.entities.iter().cloned().map(Arc::new).collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path().join(DIR_NAME));
        let key = Key::new(plugin, "{}", "hash");
        cache.write(plugin, "src", &key, &entities, &loaded.diagnostics).unwrap().unwrap();
        let back = cache.read(plugin, "src", &key).unwrap();
        assert_eq!(back.entities, loaded.entities);
        assert_eq!(back.diagnostics, loaded.diagnostics);
        // The API's view (custom properties as JSON) is the same too.
        assert_eq!(serde_json::to_value(&back.entities).unwrap(), serde_json::to_value(&loaded.entities).unwrap());
    }

    #[test]
    fn models_roundtrip_exactly() {
        roundtrip(PluginKind::Models, MODELS);
        let loaded = PluginKind::Models.load(MODELS, "t.yaml").unwrap();
        // The lossy cases are in the test data (a non-finite double reads as `null`).
        let Entity::Model(m) = &loaded.entities[0] else { panic!() };
        let text = m.custom_properties.as_ref().unwrap().as_json_text();
        assert!(text.contains(r#""n":{"double_value":null}"#), "{text}");
        assert!(text.contains("0.30000000000000004") && text.contains("5e-324"), "{text}");
        assert_eq!(loaded.diagnostics.len(), 1, "the duplicate name");
    }

    #[test]
    fn mcp_servers_roundtrip_exactly() {
        roundtrip(PluginKind::Mcp, MCP_KUBEFLOW);
        roundtrip(PluginKind::Mcp, MCP_FLAT);
        let loaded = PluginKind::Mcp.load(MCP_KUBEFLOW, "t.yaml").unwrap();
        let Entity::McpServer(s2) = &loaded.entities[1] else { panic!() };
        assert_eq!(s2.runtime_metadata, Some(serde_json::Value::Null), "the case a plain JSON roundtrip loses");
    }

    fn write_one(cache: &SnapshotCache, key: &Key) -> PathBuf {
        let loaded = PluginKind::Models.load(MODELS, "t.yaml").unwrap();
        let entities: Vec<Arc<Entity>> = loaded.entities.into_iter().map(Arc::new).collect();
        cache.write(PluginKind::Models, "src", key, &entities, &loaded.diagnostics).unwrap().unwrap();
        cache.path(PluginKind::Models, "src")
    }

    #[test]
    fn every_kind_of_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path().to_path_buf());
        let key = Key::new(PluginKind::Models, "{}", "hash");
        let path = write_one(&cache, &key);
        let good = std::fs::read(&path).unwrap();
        assert!(cache.read(PluginKind::Models, "src", &key).is_ok());
        assert!(cache.is_current(PluginKind::Models, "src", &key));
        assert!(!cache.is_current(PluginKind::Models, "src", &Key::new(PluginKind::Models, "{}", "other")));
        assert!(matches!(cache.read(PluginKind::Models, "other", &key), Err(Miss::Absent)));
        assert!(matches!(
            cache.read(PluginKind::Models, "src", &Key::new(PluginKind::Models, "{}", "other")),
            Err(Miss::Key)
        ));
        assert_ne!(Key::new(PluginKind::Models, "{}", "hash"), Key::new(PluginKind::Mcp, "{}", "hash"));
        assert_ne!(Key::new(PluginKind::Models, "{\"a\":1}", "hash"), key);
        // Every single byte flipped, anywhere: a miss, never an error or other data.
        for i in (0..good.len()).step_by(7).chain([0, 9, 12, good.len() - 1]) {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            assert!(cache.read(PluginKind::Models, "src", &key).is_err(), "byte {i}");
            assert!(!cache.is_current(PluginKind::Models, "src", &key), "byte {i}");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(cache.read(PluginKind::Models, "src", &key), Err(Miss::Checksum)));
        std::fs::write(&path, &good[..10]).unwrap();
        assert!(matches!(cache.read(PluginKind::Models, "src", &key), Err(Miss::Truncated)));
        let mut v2 = good.clone();
        v2[8] = 2;
        std::fs::write(&path, &v2).unwrap();
        assert!(matches!(cache.read(PluginKind::Models, "src", &key), Err(Miss::Version(2))));
        // A consistent file (right checksum) with a broken payload: a JSON miss.
        let mut body = good[..HEADER_LEN].to_vec();
        body.extend_from_slice(b"{\"entities\":[{\"Model\":{}}],\"diagnostics\":[]}");
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        std::fs::write(&path, &body).unwrap();
        assert!(matches!(cache.read(PluginKind::Models, "src", &key), Err(Miss::Json(_))));
    }

    #[test]
    fn the_cap_is_kept_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let big = SnapshotCache::new(dir.path().to_path_buf());
        let key = Key::new(PluginKind::Models, "{}", "hash");
        let path = write_one(&big, &key);
        let size = std::fs::metadata(&path).unwrap().len();
        let small = SnapshotCache::with_cap(dir.path().to_path_buf(), size - 1);
        assert!(matches!(small.read(PluginKind::Models, "src", &key), Err(Miss::TooLarge(_))));
        let loaded = PluginKind::Models.load(MODELS, "t.yaml").unwrap();
        let entities: Vec<Arc<Entity>> = loaded.entities.into_iter().map(Arc::new).collect();
        assert_eq!(small.write(PluginKind::Models, "src", &key, &entities, &loaded.diagnostics).unwrap(), None);
        // Over the cap: the old file is gone too, and no temp file is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn retain_removes_other_sources_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path().to_path_buf());
        let key = Key::new(PluginKind::Models, "{}", "hash");
        let kept = write_one(&cache, &key);
        std::fs::write(dir.path().join(SnapshotCache::file_name(PluginKind::Mcp, "gone")), b"x").unwrap();
        std::fs::write(dir.path().join(".models.x.snap.tmp-123"), b"x").unwrap();
        std::fs::write(dir.path().join("README"), b"not ours").unwrap();
        assert_eq!(cache.retain(&[(PluginKind::Models, "src")]), 2);
        assert!(kept.exists());
        assert!(dir.path().join("README").exists());
        assert!(SnapshotCache::file_name(PluginKind::Models, "../../etc").starts_with("models."));
    }

    /// A YAML scalar for `v`, as a catalog author could write it.
    fn yaml_float(v: f64) -> String {
        if v.is_nan() {
            ".nan".into()
        } else if v.is_infinite() {
            if v > 0.0 { ".inf".into() } else { "-.inf".into() }
        } else {
            format!("{v:?}")
        }
    }

    fn float() -> impl proptest::strategy::Strategy<Value = f64> {
        use proptest::prelude::*;
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(5e-324),
            Just(0.30000000000000004),
            (-1e6..1e6f64),
        ]
    }

    /// Writes a load to a fresh cache and reads it back: equal entities and diagnostics.
    fn round_trip(
        plugin: PluginKind,
        loaded: crate::plugins::Loaded,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let entities: Vec<Arc<Entity>> = loaded.entities.iter().cloned().map(Arc::new).collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = SnapshotCache::new(dir.path().to_path_buf());
        let key = Key::new(plugin, "{}", "h");
        cache.write(plugin, "s", &key, &entities, &loaded.diagnostics).unwrap().unwrap();
        let back = cache.read(plugin, "s", &key).unwrap();
        proptest::prop_assert_eq!(back.entities, loaded.entities);
        proptest::prop_assert_eq!(back.diagnostics, loaded.diagnostics);
        Ok(())
    }

    proptest::proptest! {
        /// Whatever a catalog of models (any text, any floats, ints and nested values in custom
        /// properties) or MCP servers (any runtimeMetadata) loads to, the cache gives back equal
        /// entities and diagnostics.
        #[test]
        fn any_load_roundtrips(
            models in proptest::collection::vec(
                (
                    "[a-c]{1,3}",
                    "\\PC{0,16}",
                    proptest::collection::vec(("[a-z]{1,4}", float(), proptest::prelude::any::<i64>(), proptest::prelude::any::<bool>()), 0..4),
                ),
                0..8,
            ),
            servers in proptest::collection::vec(("[a-c]{1,3}", float(), "\\PC{0,16}"), 0..5),
        ) {
            let mut yaml = String::from("models:\n");
            for (name, description, props) in &models {
                yaml.push_str(&format!("  - name: {name}\n    description: {}\n", serde_json::to_string(description).unwrap()));
                if !props.is_empty() {
                    yaml.push_str("    customProperties:\n");
                    for (i, (key, f, n, b)) in props.iter().enumerate() {
                        let value = match i % 4 {
                            0 => format!("{{double_value: {}}}", yaml_float(*f)),
                            1 => format!("{{metadataType: MetadataIntValue, int_value: {n}}}"),
                            2 => format!("{{bool_value: {b}, string_value: {}}}", serde_json::to_string(description).unwrap()),
                            _ => format!("{{struct_value: {{x: [{}, {n}, null]}}}}", yaml_float(*f)),
                        };
                        yaml.push_str(&format!("      {key}: {value}\n"));
                    }
                }
                yaml.push_str("    artifacts:\n      - uri: oci://r/x:1\n");
            }
            let models_loaded = PluginKind::Models.load(&yaml, "p.yaml");
            // Printable text in JSON quoting is valid YAML: the property must not pass by skipping.
            proptest::prop_assert!(models_loaded.is_ok(), "{yaml}\n{models_loaded:?}");
            if let Ok(loaded) = models_loaded {
                round_trip(PluginKind::Models, loaded)?;
            }
            let mut yaml = String::from("mcp_servers:\n");
            for (name, f, text) in &servers {
                yaml.push_str(&format!(
                    "  - name: {name}\n    runtimeMetadata: {}\n    description: {}\n",
                    yaml_float(*f),
                    serde_json::to_string(text).unwrap()
                ));
            }
            let servers_loaded = PluginKind::Mcp.load(&yaml, "p.yaml");
            proptest::prop_assert!(servers_loaded.is_ok(), "{yaml}\n{servers_loaded:?}");
            if let Ok(loaded) = servers_loaded {
                round_trip(PluginKind::Mcp, loaded)?;
            }
        }
    }
}
