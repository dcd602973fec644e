//! Atomic, durable file writes (the file config store, the example seed).
//!
//! A write is: temp file in the same directory → write → fsync → rename over the target →
//! fsync the directory. Readers see the old file or the new one, never a torn one, and after
//! a successful return the new content survives a power cut.

use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(content))
}

/// Like [`write_atomic`], with the content streamed by `write` into the temp file (the snapshot
/// cache writes a large file without holding it in memory). An error from `write` leaves the
/// target as it was and removes the temp file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            // Keep the target's permissions (a 0600 catalog stays 0600).
            let _ = std::fs::set_permissions(&tmp, meta.permissions());
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.yaml");
        super::write_atomic(&p, b"one").unwrap();
        super::write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn failure_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.yaml");
        std::fs::write(&p, b"old").unwrap();
        // A directory where the file's parent should be makes the write fail.
        let bad = dir.path().join("a.yaml").join("b.yaml");
        assert!(super::write_atomic(&bad, b"x").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }
}
