//! catalogctl run as a process against the real server: every command, every exit code, JSON
//! output parsed, progress lines in non-TTY mode.

use crate::support;

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use support::*;

fn ctl(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(support::catalogctl_bin());
    cmd.env("CATALOG_BFF_URL", server).env_remove("CATALOG_BFF_TOKEN").args(args);
    if let Some(t) = token {
        cmd.env("CATALOG_BFF_TOKEN", t);
    }
    cmd.output().expect("run catalogctl")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn source_file(dir: &Path, name: &str, id: &str, models: usize) -> String {
    std::fs::write(dir.join(format!("{name}.catalog.yaml")), models_yaml(models)).unwrap();
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!("plugin: models\nid: {id}\nname: CI source {id}\nlabels: [CI]\ncontentFile: {name}.catalog.yaml\n"),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await;
    let base = server.base.clone();
    let run = move |args: &[&str]| ctl(&base, None, args);

    // sources: table and stable JSON.
    let o = run(&["sources"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(t.starts_with("PLUGIN  ID"), "{t}");
    assert!(t.contains("team_models") && (t.contains("just now") || t.contains("s ago")), "{t}");
    let o = run(&["sources", "mcp", "-o", "json"]);
    let list = json_out(&o);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["status"]["state"], "AVAILABLE");

    // get, history.
    let o = run(&["get", "models/team_models", "-o", "json"]);
    assert_eq!(json_out(&o)["status"]["entityCount"], 3);
    let o = run(&["get", "models/nope"]);
    assert_eq!(code(&o), 1);

    // validate: compiler-style diagnostics, exit 2, nothing changed.
    let bad = work.path().join("bad.yaml");
    std::fs::write(&bad, "plugin: models\nid: team_models\ncontent: |\n  models:\n    - name: a\n      licence: x\n")
        .unwrap();
    let o = run(&["validate", "-f", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("bad.yaml:6:7 (models[0].licence): error: unknown field `licence`; did you mean `license`?"),
        "{out}"
    );
    let good = source_file(work.path(), "good", "ci_models", 4);
    let o = run(&["validate", "-f", &good]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // diff: impact, nothing changed.
    let o = run(&["diff", "-f", &good, "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(json_out(&o)["impact"]["toAdd"], 4);
    assert_eq!(code(&run(&["get", "models/ci_models"])), 1, "diff must not create the source");

    // apply with refresh: revision and refresh summary; a stale expected revision → 3.
    let o = run(&["apply", "-f", &good, "--refresh"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("models/ci_models: applied as revision 1"), "{out}");
    assert!(out.contains("Loaded 4 entities, removed 0 in"), "{out}");
    let o = run(&["apply", "-f", &good, "--expected-revision", "7", "-o", "json"]);
    assert_eq!(code(&o), 3);
    assert_eq!(json_out(&o)["error"]["details"]["currentRevision"], 1);
    let o = run(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    let o = run(&["apply", "-f", "/nonexistent/file.yaml"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    let two = source_file(work.path(), "good", "ci_models", 1);
    let o = run(&["apply", "-f", &two, "-o", "json"]);
    assert_eq!(code(&o), 1, "removing 3 of 4 needs confirmation: {}", text(&o));
    assert_eq!(json_out(&o)["error"]["code"], "REMOVALS_NEED_CONFIRMATION");
    let o = run(&["apply", "-f", &two, "--confirm-removals", "--refresh", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let r = json_out(&o);
    assert_eq!(r["revision"], 2);
    assert_eq!(r["refresh"]["results"][0]["entitiesRemoved"], 3);

    // refresh: waits, progress as timestamped lines (stderr is not a terminal), real result.
    let o = run(&["refresh", "models"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // A fast job may be over before the progress stream starts (then its first snapshot is the
    // last): what must be there is the timestamped final line.
    assert!(err.lines().any(|l| l.starts_with("20") && l.contains(" SUCCEEDED 4/4")), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("SUCCEEDED"));
    let o = run(&["refresh", "models/team_models", "--incremental", "-o", "json"]);
    let job = json_out(&o);
    assert_eq!(job["phase"], "SUCCEEDED");
    assert_eq!(job["results"][0]["entitiesUnchanged"], 3);
    let o = run(&["refresh", "mcp", "--no-wait", "-o", "json"]);
    let id = json_out(&o)["id"].as_str().unwrap().to_string();
    let o = run(&["job", &id, "--watch", "-o", "json"]);
    assert_eq!(json_out(&o)["phase"], "SUCCEEDED");
    let o = run(&["jobs", "-o", "json"]);
    assert!(json_out(&o).as_array().unwrap().iter().any(|j| j["id"] == id.as_str()));

    // A refresh that fails → 1; a partial one → 1, or 0 with --allow-partial.
    std::fs::remove_file(dir.path().join("partner-models.yaml")).unwrap();
    let o = run(&["refresh", "models/partner_models"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(text(&o).contains("FAILURE models/partner_models"), "{}", text(&o));
    std::fs::write(dir.path().join("partner-models.yaml"), format!("{}  - name: test/m0\n", models_yaml(2))).unwrap();
    let o = run(&["refresh", "models/partner_models", "--confirm-removals"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let o = run(&["refresh", "models/partner_models", "--allow-partial", "--confirm-removals", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(json_out(&o)["results"][0]["status"], "PARTIAL");

    // rollback and history.
    let o = run(&["rollback", "models/ci_models", "--to", "1", "--refresh", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(json_out(&o)["revision"], 3);
    let o = run(&["history", "models/ci_models", "-o", "json"]);
    let revs: Vec<i64> = json_out(&o).as_array().unwrap().iter().map(|r| r["revision"].as_i64().unwrap()).collect();
    assert_eq!(revs, vec![3, 2, 1]);
    let o = run(&["history", "models/ci_models"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ROLLBACK"));
    let o = run(&["refresh", "not a target/"]);
    assert_eq!(code(&o), 2);

    // refresh --all: one job over both plugins.
    let o = run(&["refresh", "--all", "--confirm-removals", "--allow-partial", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let job = json_out(&o);
    assert_eq!(job["plugin"], "*", "{job}");
    let plugins: std::collections::BTreeSet<&str> =
        job["results"].as_array().unwrap().iter().map(|r| r["plugin"].as_str().unwrap()).collect();
    assert_eq!(plugins, ["mcp", "models"].into(), "{job}");
    let o = run(&["refresh", "models", "--all"]);
    assert_eq!(code(&o), 2, "a target and --all: {}", text(&o));

    // suspend / resume: the state shows in get; an unknown source → 1.
    let o = run(&["suspend", "models/team_models"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("models/team_models: suspended (serving 3 entities"), "{}", text(&o));
    let o = run(&["sources", "models"]);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    let row = table.lines().find(|l| l.contains("team_models")).unwrap_or_default();
    assert!(table.contains("NEXT REFRESH") && row.ends_with("suspended"), "{table}");
    let o = run(&["resume", "models/team_models", "-o", "json"]);
    assert_eq!(json_out(&o)["suspended"], false, "{}", text(&o));
    let o = run(&["suspend", "models/nope"]);
    assert_eq!(code(&o), 1, "{}", text(&o));

    // job cancel: a finished job cannot be cancelled (2, the job unchanged); no id → 2.
    let o = run(&["job", "cancel", &id, "-o", "json"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(text(&o).contains("already ended (SUCCEEDED)"), "{}", text(&o));
    let o = run(&["job"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_and_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let tokens = support::tokens_file(dir.path(), &[("ci", "operator", "op"), ("ro", "viewer", "ro")]);
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&["--auth", "static", "--tokens-file", tokens.to_str().unwrap()])
        .start()
        .await;
    let o = ctl(&server.base, Some("wrong"), &["sources"]);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(text(&o).contains("unknown token"));
    let o = ctl(&server.base, None, &["sources", "-o", "json"]);
    assert_eq!(code(&o), 4);
    assert_eq!(json_out(&o)["error"]["code"], "UNAUTHENTICATED");
    let o = ctl(&server.base, Some("ro"), &["refresh", "models"]);
    assert_eq!(code(&o), 4, "a viewer cannot refresh: {}", text(&o));
    let o = ctl(&server.base, Some("op"), &["refresh", "models/team_models"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = ctl(&server.base, Some("op"), &["history", "models/team_models", "-o", "json"]);
    assert_eq!(code(&o), 0);

    // Nothing listens on this port: exit 5, with a JSON error for scripts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let o = ctl(&dead, None, &["sources", "-o", "json"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(json_out(&o)["error"]["code"], "UNREACHABLE");
}
