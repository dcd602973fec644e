//! Build script: GraphiQL's browser assets (GraphiQL, React, ReactDOM, graphql-ws), embedded in
//! the binary so `GET /graphql` works with no internet access at run time (air-gapped clusters,
//! strict CSPs that forbid CDNs).
//!
//! The files come from the pinned npm tarballs, and every byte is checked against a hash pinned
//! here (the tarball's `dist.integrity` sha512, and each extracted file's sha256), so a mirror or
//! a cache cannot slip in other code. Where they come from, in order:
//! 1. `OUT_DIR/graphiql/` from an earlier run of this script (re-verified);
//! 2. `CATALOG_BFF_GRAPHIQL_ASSETS=DIR` (air-gapped builds): the tarballs (`npm pack`) or the
//!    extracted files (a previous build's `OUT_DIR/graphiql/`); the network is not used;
//! 3. the verified tarballs cached under `target/graphiql-npm/` (a rebuild does not refetch);
//! 4. the npm registry (`CATALOG_BFF_NPM_REGISTRY`, default `https://registry.npmjs.org`).
//!
//! If none works the build does not fail (unless `CATALOG_BFF_REQUIRE_GRAPHIQL_ASSETS=1`, as in
//! the container build): it prints a `cargo:warning` and the binary's GraphiQL page says the
//! assets are missing and how to rebuild with them (the API itself is unaffected).
//! No third-party code is committed to the repository.

use sha2::{Digest, Sha256, Sha512};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One extracted file: its path in the tarball, the name it is served under, its sha256.
struct File {
    tar_path: &'static str,
    name: &'static str,
    sha256: &'static str,
}

struct Package {
    name: &'static str,
    version: &'static str,
    /// `npm view <name>@<version> dist.integrity`.
    integrity: &'static str,
    files: &'static [File],
}

const PACKAGES: &[Package] = &[
    Package {
        name: "react",
        version: "18.3.1",
        integrity: "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==",
        files: &[File {
            tar_path: "package/umd/react.production.min.js",
            name: "react.production.min.js",
            sha256: "d949f1c3687aedadcedac85261865f29b17cd273997e7f6b2bfc53b2f9d4c4dd",
        }],
    },
    Package {
        name: "react-dom",
        version: "18.3.1",
        integrity: "sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==",
        files: &[File {
            tar_path: "package/umd/react-dom.production.min.js",
            name: "react-dom.production.min.js",
            sha256: "35f4f974f4b2bcd44da73963347f8952e341f83909e4498227d4e26b98f66f0d",
        }],
    },
    Package {
        name: "graphiql",
        version: "3.8.3",
        integrity: "sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw==",
        files: &[
            File {
                tar_path: "package/graphiql.min.js",
                name: "graphiql.min.js",
                sha256: "22faab94067b695e5f7959619fbe686ebcc8955002a0c97d986bcbba4ad4bc2c",
            },
            File {
                tar_path: "package/graphiql.min.css",
                name: "graphiql.min.css",
                sha256: "b1868247f8e0502cd869e581f5f3cb55b334862e7f51b1d6cbace11059b9adc2",
            },
        ],
    },
    Package {
        name: "graphql-ws",
        version: "5.16.2",
        integrity: "sha512-E1uccsZxt/96jH/OwmLPuXMACILs76pKF2i3W861LpKBCYtGIyPQGtWLuBLkND4ox1KHns70e83PS4te50nvPQ==",
        files: &[File {
            tar_path: "package/umd/graphql-ws.min.js",
            name: "graphql-ws.min.js",
            sha256: "deb8cd1b4feadd52ae0365a4df8a89847f2904c2a8cbdac8756b8d962c0cb8e4",
        }],
    },
];

const ASSETS_ENV: &str = "CATALOG_BFF_GRAPHIQL_ASSETS";
const REGISTRY_ENV: &str = "CATALOG_BFF_NPM_REGISTRY";
/// `=1`: a build without the assets is an error, not a warning (the container image build sets
/// it: an image must never ship without GraphiQL unnoticed).
const REQUIRE_ENV: &str = "CATALOG_BFF_REQUIRE_GRAPHIQL_ASSETS";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={ASSETS_ENV}");
    println!("cargo:rerun-if-env-changed={REGISTRY_ENV}");
    println!("cargo:rerun-if-env-changed={REQUIRE_ENV}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let assets = out_dir.join("graphiql");
    let result = std::fs::create_dir_all(&assets)
        .map_err(|e| format!("cannot create {}: {e}", assets.display()))
        .and_then(|()| PACKAGES.iter().try_for_each(|p| obtain(p, &assets, &out_dir)));
    let generated = match result {
        Ok(()) => embedded(&assets),
        Err(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            eprintln!("GraphiQL assets not embedded and {REQUIRE_ENV}=1: {why}");
            eprintln!(
                "Give the build access to the npm registry (or a mirror: {REGISTRY_ENV}=URL), or set {ASSETS_ENV}=DIR (a directory with `npm pack graphiql@3.8.3 react@18.3.1 react-dom@18.3.1 graphql-ws@5.16.2`)."
            );
            std::process::exit(1);
        }
        Err(why) => {
            for line in why.lines() {
                println!("cargo:warning=GraphiQL assets not embedded: {line}");
            }
            println!(
                "cargo:warning=The server still builds and the API at /graphql works; its GraphiQL page will say the assets are missing."
            );
            println!(
                "cargo:warning=To embed them: build with access to the npm registry (or a mirror: {REGISTRY_ENV}=URL), or set {ASSETS_ENV}=DIR (a directory with `npm pack graphiql@3.8.3 react@18.3.1 react-dom@18.3.1 graphql-ws@5.16.2`), then `touch build.rs && cargo build`."
            );
            missing(&why)
        }
    };
    let target = out_dir.join("graphiql_assets.rs");
    if let Err(e) = std::fs::write(&target, generated) {
        // Nothing sensible to build without the generated module.
        panic!("cannot write {}: {e}", target.display());
    }
}

/// The generated module when every file is in `dir` (verified).
fn embedded(dir: &Path) -> String {
    let mut s = String::from(
        "// Generated by build.rs: the verified GraphiQL assets, embedded.\npub const EMBEDDED: bool = true;\npub const MISSING_WHY: &str = \"\";\npub static VENDORED: &[Asset] = &[\n",
    );
    for p in PACKAGES {
        for f in p.files {
            s.push_str(&format!(
                "    Asset {{ name: {:?}, package: {:?}, sha256: {:?}, bytes: include_bytes!({:?}) }},\n",
                f.name,
                format!("{}@{}", p.name, p.version),
                f.sha256,
                dir.join(f.name).display().to_string()
            ));
        }
    }
    s.push_str("];\n");
    s
}

/// The generated module when the assets could not be had: the page explains, using `why`.
fn missing(why: &str) -> String {
    format!(
        "// Generated by build.rs: the GraphiQL assets could not be obtained.\npub const EMBEDDED: bool = false;\npub const MISSING_WHY: &str = {why:?};\npub static VENDORED: &[Asset] = &[];\n"
    )
}

/// Puts every file of `p` into `assets`, verified, from the first place that has them.
fn obtain(p: &Package, assets: &Path, out_dir: &Path) -> Result<(), String> {
    if p.files.iter().all(|f| read_verified(&assets.join(f.name), f).is_ok()) {
        return Ok(());
    }
    let tarball = format!("{}-{}.tgz", p.name, p.version);
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()).map(PathBuf::from) {
        println!("cargo:rerun-if-changed={}", dir.display());
        // Extracted files (e.g. a previous build's OUT_DIR/graphiql).
        if p.files.iter().all(|f| read_verified(&dir.join(f.name), f).is_ok()) {
            for f in p.files {
                let bytes = read_verified(&dir.join(f.name), f)?;
                write(&assets.join(f.name), &bytes)?;
            }
            return Ok(());
        }
        let path = dir.join(&tarball);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{ASSETS_ENV}={}: neither {} nor {tarball} there ({e})",
                dir.display(),
                p.files.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        verify_integrity(p, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        return extract(p, &bytes, assets);
    }
    let cache = cache_dir(out_dir).join(&tarball);
    if let Ok(bytes) = std::fs::read(&cache)
        && verify_integrity(p, &bytes).is_ok()
    {
        return extract(p, &bytes, assets);
    }
    let registry = std::env::var(REGISTRY_ENV).ok().filter(|r| !r.is_empty());
    let registry = registry.as_deref().unwrap_or("https://registry.npmjs.org").trim_end_matches('/');
    let url = format!("{registry}/{}/-/{tarball}", p.name);
    let bytes = download(&url)?;
    verify_integrity(p, &bytes).map_err(|e| format!("{url}: {e}"))?;
    // The cache is an optimisation: a failure to write it only means a refetch next time.
    if let Some(parent) = cache.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(&cache, &bytes);
    extract(p, &bytes, assets)
}

/// `target/graphiql-npm`: the target directory is the first ancestor of OUT_DIR holding cargo's
/// `CACHEDIR.TAG`, so the cache outlives OUT_DIR changes (profiles, build script edits).
fn cache_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(|t| t.join("graphiql-npm"))
        .unwrap_or_else(|| out_dir.join("graphiql-npm"))
}

fn download(url: &str) -> Result<Vec<u8>, String> {
    // The system's roots, not a bundled list: mirrors and egress proxies often carry a company
    // CA. Trust in the bytes comes from the pinned hashes anyway.
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
    let agent: ureq::Agent =
        ureq::Agent::config_builder().tls_config(tls).timeout_global(Some(Duration::from_secs(120))).build().into();
    let mut resp = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
    resp.body_mut().with_config().limit(64 << 20).read_to_vec().map_err(|e| format!("GET {url}: reading the body: {e}"))
}

/// Checks `bytes` against the package's pinned `dist.integrity` (sha512, base64).
fn verify_integrity(p: &Package, bytes: &[u8]) -> Result<(), String> {
    use base64::Engine;
    let expected = p.integrity.strip_prefix("sha512-").unwrap_or(p.integrity);
    let actual = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes));
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{}@{} tarball sha512 mismatch: expected sha512-{expected}, got sha512-{actual} (a corrupt download or a mirror serving other bytes)",
            p.name, p.version
        ))
    }
}

/// Extracts the package's files from its tarball into `assets`, each verified.
fn extract(p: &Package, tgz: &[u8], assets: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut found = 0;
    let entries = archive.entries().map_err(|e| format!("{}@{}: bad tarball: {e}", p.name, p.version))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}@{}: bad tarball: {e}", p.name, p.version))?;
        let path = entry.path().map_err(|e| format!("{}@{}: bad tarball: {e}", p.name, p.version))?.into_owned();
        let Some(f) = p.files.iter().find(|f| path == Path::new(f.tar_path)) else { continue };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| format!("{}@{}: {}: {e}", p.name, p.version, f.tar_path))?;
        check_file(f, &bytes)?;
        write(&assets.join(f.name), &bytes)?;
        found += 1;
    }
    if found == p.files.len() {
        Ok(())
    } else {
        Err(format!(
            "{}@{}: the tarball lacks some of {:?}",
            p.name,
            p.version,
            p.files.iter().map(|f| f.tar_path).collect::<Vec<_>>()
        ))
    }
}

fn read_verified(path: &Path, f: &File) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_file(f, &bytes).map(|()| bytes)
}

fn check_file(f: &File, bytes: &[u8]) -> Result<(), String> {
    let actual = format!("{:x}", Sha256::digest(bytes));
    if actual == f.sha256 {
        Ok(())
    } else {
        Err(format!("{}: sha256 mismatch: expected {}, got {actual}", f.name, f.sha256))
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
