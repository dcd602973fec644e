//! catalogctl on its own, with no server: what it does before and without the network.
//! (Every command against a real server is in the server's suite, `tests/it/catalogctl.rs`; this
//! test also makes `cargo test` build the binary that suite runs.)

use std::process::Command;

const CTL: &str = env!("CARGO_BIN_EXE_catalogctl");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(CTL).args(args).env_remove("CATALOG_BFF_URL").env_remove("CATALOG_BFF_TOKEN").output();
    let out = out.unwrap_or_else(|e| panic!("run {CTL}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_server_that_is_not_there_is_exit_5_unreachable() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let (code, out, err) = run(&["--server", "http://127.0.0.1:9", "--timeout", "5", "sources"]);
    assert_eq!(code, Some(5), "{out}{err}");
    assert!(err.contains("cannot reach http://127.0.0.1:9"), "{err}");
}

#[test]
fn a_malformed_target_is_exit_2_before_any_request() {
    let (code, _, err) = run(&["--server", "http://127.0.0.1:9", "get", "/nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not PLUGIN or PLUGIN/ID"), "{err}");
}

#[test]
fn an_invalid_source_file_is_exit_2_with_its_position() {
    let dir = std::env::temp_dir().join(format!("catalogctl-offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "plugin: models\nid: x\nnmae: typo\n").unwrap_or_else(|e| panic!("{e}"));
    let file = file.display().to_string();
    let (code, _, err) = run(&["--server", "http://127.0.0.1:9", "validate", "-f", &file]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.yaml:"), "the diagnostic names the file: {err}");
}
