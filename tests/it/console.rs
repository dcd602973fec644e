//! The operator console at `/`, driven in headless Chromium (`tests/node/console.mjs`, with
//! playwright-core) against the real server, offline (the script aborts and fails on any request
//! to another origin) and under the console's Content-Security-Policy (any violation fails).
//! Each test reads what the page showed from the script's JSON lines and checks the server side
//! over the API. Screenshots of every state go to `target/screenshots/console/`.

use crate::support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::*;

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/console")
}

/// Runs one suite of the browser script and returns its steps by name.
async fn run_browser(chromium: &Path, base: &str, suite: &str, extra: &[&str]) -> BTreeMap<String, Value> {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        node.join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run `npm ci --prefix tests/node` (bash .ci/run does)"
    );
    let out = tokio::process::Command::new("node")
        .arg(node.join("console.mjs"))
        .arg(base)
        .arg(artifacts())
        .arg(chromium)
        .arg(suite)
        .args(extra)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the {suite} browser run failed:\n{stdout}\n{stderr}");
    let mut steps = BTreeMap::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v.get("error").is_none(), "{suite}: {v}");
        steps.insert(v["step"].as_str().unwrap().to_string(), v);
    }
    assert!(steps.contains_key("done"), "{suite} did not finish:\n{stdout}\n{stderr}");
    steps
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

async fn revisions(server: &Server, id: &str) -> Vec<(i64, String)> {
    let data = server
        .ok(
            "query($id: ID!) { source(plugin: \"models\", id: $id) { revisions { revision action } } }",
            json!({"id": id}),
        )
        .await;
    data["source"]["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["revision"].as_i64().unwrap(), r["action"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_does_the_whole_loop_in_chromium() {
    let Some(chromium) = chromium("the_console_does_the_whole_loop_in_chromium") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;

    // The page and its assets: embedded, typed, revalidated by ETag, under the console's CSP.
    let page = server.client.get(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-cache");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
    );
    let etag = h["etag"].to_str().unwrap().to_string();
    let again = server.client.get(format!("{}/", server.base)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    let js = server.client.get(format!("{}/console/app.js", server.base)).send().await.unwrap();
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let missing = server.client.get(format!("{}/console/nope.js", server.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let ops: Value = server
        .client
        .get(format!("{}/console/operations.json", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    for e in std::fs::read_dir(&contract).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "graphql") {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert_eq!(s(&ops[name]), std::fs::read_to_string(&p).unwrap(), "operations.json serves {name} as it is");
        }
    }

    let api_sources = server.ok("{ sources { plugin id name enabled status { state entityCount } } }", json!({})).await
        ["sources"]
        .clone();
    let steps = run_browser(&chromium, &server.base, "main", &[]).await;

    // The table matches `sources` from the API, row for row.
    let rows = steps["table"]["rows"].as_array().unwrap();
    let api = api_sources.as_array().unwrap();
    assert_eq!(rows.len(), api.len(), "{rows:#?}");
    for (row, src) in rows.iter().zip(api) {
        assert_eq!(row["plugin"], src["plugin"]);
        assert_eq!(row["id"], src["id"]);
        assert_eq!(row["name"], src["name"]);
        assert_eq!(row["enabled"], src["enabled"]);
        assert_eq!(row["state"], src["status"]["state"]);
        assert_eq!(row["entityCount"], src["status"]["entityCount"]);
        assert!(s(&row["lastRefreshed"]).ends_with(" ago"), "{row}");
    }
    assert_eq!(steps["filter"]["ids"], json!(["partner_models"]));
    assert_eq!(steps["table"]["unlabelled"], json!([]), "every control is labelled");

    // Save: progress shown, a toast with the new count, row and drawer updated without reload.
    let save = &steps["save"];
    assert_eq!(save["focusInDrawer"], true, "focus moves into the drawer");
    assert_eq!(save["loadedRevision"], 1);
    assert_eq!(save["sawProgress"], true, "{save}");
    assert_eq!(save["notReloaded"], true);
    assert_eq!(save["countAfter"], save["countBefore"].as_i64().unwrap() + 1);
    assert_eq!(save["drawerCount"], save["countAfter"]);
    assert_eq!(save["drawerRevision"], 2);
    assert!(s(&save["toast"]).starts_with("Saved revision 2 · loaded 4 entities, removed 0 in "), "{save}");
    assert_eq!(save["toastLive"], "polite");
    assert_eq!(save["gutterLines"], save["editorLines"], "one line number per line");

    // Invalid YAML: diagnostics with line/column; clicking one puts the cursor there.
    let invalid = &steps["invalid"];
    assert!(invalid["line"].as_i64().unwrap() > 0 && invalid["column"].as_i64().unwrap() > 0);
    assert_eq!(invalid["selectionStart"], invalid["expected"], "{invalid}");
    assert_eq!(invalid["editorFocused"], true);
    assert_eq!(invalid["toast"], "", "nothing pretends the save happened");
    assert!(s(&invalid["outcome"]).contains("Nothing was saved"), "{invalid}");
    assert_eq!(invalid["drawerRevision"], 2);

    // Dry-run impact lists names.
    let preview = &steps["preview"];
    assert_eq!(preview["impact"]["add"], json!(["console/preview-model"]));
    let removed: Vec<&str> = preview["impact"]["remove"].as_array().unwrap().iter().map(s).collect();
    assert!(removed.contains(&s(&preview["removedName"])) && removed.contains(&"console/added-model"), "{preview}");

    // A removal needing confirmation: the dialog lists the names, then the save applies.
    let removal = &steps["removal"];
    assert_eq!(removal["listed"].as_array().unwrap().len(), 3, "{removal}");
    assert!(s(&removal["toast"]).starts_with("Saved revision 3 · loaded 1 entity, removed 3"), "{removal}");
    assert_eq!(removal["countAfter"], 1);

    // Rollback with confirmation, then the same toast and in-place update.
    let rollback = &steps["rollback"];
    assert_eq!(rollback["viewedHasAdded"], true, "a revision's content can be viewed");
    assert!(
        s(&rollback["toast"]).starts_with("Rolled back to revision 2 as revision 4 · loaded 4 entities"),
        "{rollback}"
    );
    assert_eq!(rollback["countAfter"], 4);
    assert_eq!(rollback["editorHasAdded"], true);

    // An INCREMENTAL refresh of the open source: its progress and result show in the drawer.
    let source_refresh = &steps["refresh-source"];
    assert_eq!(source_refresh["phase"], "SUCCEEDED", "{source_refresh}");
    assert!(s(&source_refresh["text"]).contains("1/1"), "{source_refresh}");
    assert!(s(&source_refresh["results"][0]).starts_with("team_models: SUCCESS"), "{source_refresh}");
    assert!(s(&source_refresh["results"][0]).contains("unchanged 4"), "{source_refresh}");

    // Escape closes the drawer and focus returns to the source's row.
    assert_eq!(steps["keyboard"], json!({"step": "keyboard", "hidden": true, "focusRow": "team_models"}));

    // Refresh of a plugin: the bar reaches total, a result per source.
    let refresh = &steps["refresh"];
    assert_eq!(refresh["phase"], "SUCCEEDED", "{refresh}");
    assert_eq!(refresh["max"], 3);
    assert_eq!(refresh["value"], refresh["max"]);
    let mut ids: Vec<&str> = refresh["results"].as_array().unwrap().iter().map(s).collect();
    ids.sort();
    assert_eq!(ids, ["archived_models", "partner_models", "team_models"]);

    // An apply through the API while the page is open: the table updates, the drawer with
    // unsaved edits keeps them and says the source changed.
    let external = &steps["external"];
    assert_eq!(external["countAfter"], external["countBefore"].as_i64().unwrap() + 1, "{external}");
    assert_eq!(external["kept"], true);
    assert!(s(&external["banner"]).contains("changed elsewhere"), "{external}");
    // Saving over the change: CONFLICT, nothing saved, an offer to reload (which then works).
    assert!(s(&external["conflict"]).contains("Conflict") && s(&external["conflict"]).contains("Nothing was saved"));
    assert_eq!(external["conflictToast"], "");
    assert_eq!(external["reloadedRevision"], 3);

    // A dropped live socket reconnects and resubscribes: a later change still updates the table.
    let reconnect = &steps["reconnect"];
    assert!(reconnect["states"].as_array().unwrap().contains(&json!("reconnecting")), "{reconnect}");
    assert_eq!(reconnect["countAfter"], reconnect["countBefore"].as_i64().unwrap() + 1, "{reconnect}");

    // The server side: one revision per save and rollback, none for the invalid save or the
    // previews.
    let team = revisions(&server, "team_models").await;
    let expected: Vec<(i64, String)> =
        [(4, "ROLLBACK"), (3, "APPLY"), (2, "APPLY"), (1, "IMPORT")].iter().map(|(r, a)| (*r, a.to_string())).collect();
    assert_eq!(team, expected);
    assert_eq!(
        revisions(&server, "partner_models").await.len(),
        4,
        "three external applies, the conflicting save none"
    );
    let states = source_states(&server).await;
    assert_eq!(states["models/team_models"].1, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_with_trusted_documents_and_static_tokens() {
    let Some(chromium) = chromium("the_console_works_with_trusted_documents_and_static_tokens") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let tokens =
        support::tokens_file(dir.path(), &[("ops", "operator", "op-token"), ("reader", "viewer", "viewer-token")]);
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&[
            "--auth",
            "static",
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--trusted-documents",
            contract.to_str().unwrap(),
        ])
        .start()
        .await;
    // Trusted documents are on: an operator's ad-hoc query is refused.
    let adhoc: Value = server
        .client
        .post(format!("{}/graphql", server.base))
        .bearer_auth("op-token")
        .json(&json!({"query": "{ plugins { name } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(adhoc.get("errors").is_some(), "trusted documents should refuse an ad-hoc query: {adhoc}");

    let steps = run_browser(&chromium, &server.base, "trusted", &["op-token", "viewer-token"]).await;
    let prompt = &steps["needs-token"];
    assert!(s(&prompt["prompt"]).contains("needs a token"), "{prompt}");
    assert_eq!(prompt["focused"], "token");

    let operator = &steps["operator"];
    assert!(s(&operator["viewer"]).contains("ops · OPERATOR"), "{operator}");
    assert_eq!(operator["rows"], 3);
    assert!(s(&operator["toast"]).starts_with("Saved revision 2 · loaded 4 entities"), "{operator}");
    assert_eq!(operator["countAfter"], 4);

    let viewer = &steps["viewer"];
    let d = &viewer["disabled"];
    assert_eq!(d["save"], true, "{viewer}");
    assert_eq!(d["refreshSource"], true);
    assert_eq!(d["refreshAll"], true);
    assert!(d["rollback"].as_array().unwrap().iter().all(|b| b == true), "{viewer}");
    assert_eq!(d["validate"], false, "a viewer may still validate");
    assert!(s(&d["reason"]).contains("viewer"), "{viewer}");
    assert_eq!(viewer["forced"], "FORBIDDEN");
    assert!(s(&viewer["shown"]).contains("FORBIDDEN"), "{viewer}");
    assert_eq!(viewer["toast"], "");

    // Suspend and Resume from the row, as the operator, with trusted documents on.
    let op_suspend = &steps["operator-suspend"];
    assert_eq!(op_suspend["suspended"]["suspended"], "Suspended", "{op_suspend}");
    assert_eq!(op_suspend["suspended"]["action"], "Resume", "{op_suspend}");
    assert_eq!(op_suspend["resumed"]["suspended"], Value::Null, "{op_suspend}");
    assert_eq!(op_suspend["resumed"]["action"], "Suspend", "{op_suspend}");
    assert_eq!(op_suspend["outcome"], "", "{op_suspend}");
    // A viewer's Suspend is off; forced, the API's FORBIDDEN shows and nothing changes.
    let v_suspend = &steps["viewer-suspend"];
    assert_eq!(v_suspend["disabled"], true, "{v_suspend}");
    assert_eq!(v_suspend["code"], "FORBIDDEN", "{v_suspend}");
    assert!(
        s(&v_suspend["shown"]).contains("FORBIDDEN") && s(&v_suspend["shown"]).contains("Nothing was changed"),
        "{v_suspend}"
    );
    assert_eq!(v_suspend["badge"], Value::Null, "{v_suspend}");
    assert_eq!(v_suspend["toast"], "");

    // The server side: the operator's save is revision 2; the viewer's attempts recorded nothing.
    let data: Value = server
        .client
        .post(format!("{}/graphql", server.base))
        .bearer_auth("op-token")
        .json(&json!({
            "query": std::fs::read_to_string(contract.join("source-details.graphql")).unwrap(),
            "operationName": "SourceDetails",
            "variables": {"plugin": "models", "id": "team_models", "first": 1},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(data.get("errors").is_none(), "{data}");
    assert_eq!(data["data"]["source"]["revision"], 2);
    assert_eq!(data["data"]["source"]["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(data["data"]["source"]["suspended"], false, "the viewer's forced suspend changed nothing");
    let sources = std::fs::read_to_string(&server.sources).unwrap();
    assert!(!sources.contains("suspended: true"), "the operator's resume is in the file:\n{sources}");
}

// ---- scheduling: next refresh, retries, suspend / resume, refresh interval, cancel ------------

/// The lines of the entry of source `id` in a sources file (from its `- ` line to the next).
fn entry_of(sources: &str, id: &str) -> String {
    let mut entries: Vec<Vec<&str>> = Vec::new();
    for line in sources.lines() {
        if line.trim_start().starts_with("- ") && line.contains(':') {
            entries.push(vec![line]);
        } else if let Some(e) = entries.last_mut() {
            e.push(line);
        }
    }
    entries
        .into_iter()
        .map(|e| e.join("\n"))
        .find(|e| e.lines().any(|l| l.trim().trim_start_matches("- ") == format!("id: {id}")))
        .unwrap_or_else(|| panic!("no entry `{id}` in:\n{sources}"))
}

const SCHEDULE: &str = "{ sources(plugin: \"models\") { id suspended refreshInterval nextRefreshAt \
                        status { state entityCount retryCount nextRetryAt } } }";

async fn api_source(server: &Server, id: &str) -> Value {
    let data = server.ok(SCHEDULE, json!({})).await;
    data["sources"].as_array().unwrap().iter().find(|s| s["id"] == id).cloned().unwrap()
}

fn page_row<'a>(rows: &'a Value, id: &str) -> &'a Value {
    rows.as_array().unwrap().iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no row {id}: {rows}"))
}

/// Issue 29 item 9 in Chromium: per row the next refresh ("in 54 m" or "—"), a Suspended badge
/// and Suspend / Resume (written to the sources file), the refresh interval field with the
/// API's diagnostics, a Cancel button on a running refresh (a url host stalls 30 s) that ends
/// it CANCELLED within 2 s, and "retry N, next in …" on a source whose refresh failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_schedules_suspends_and_cancels_in_chromium() {
    let Some(chromium) = chromium("the_console_shows_schedules_suspends_and_cancels_in_chromium") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    let sources_path = dir.path().join("sources.yaml");
    std::fs::write(
        &sources_path,
        format!(
            "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    refreshInterval: 1h\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Plain\n    id: plain\n    type: yaml\n    properties:\n      yamlCatalogPath: plain.yaml\n  - name: Remote\n    id: remote\n    type: url\n    properties:\n      url: {}\n",
            host.url
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("local.yaml"), models_yaml(2)).unwrap();
    std::fs::write(dir.path().join("plain.yaml"), models_yaml(1)).unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let args = ["--url-allow", "127.0.0.1", "--rate-limit", "0", "--watch-interval", "0", "--fetch-retries", "0"];
    let server = TestServer::new(dir.path()).sources(&sources_path).database(&db).flags(&args).start().await;
    eventually("the url source's first load", std::time::Duration::from_secs(10), async || {
        let r = api_source(&server, "remote").await;
        if r["status"]["entityCount"] == 3 { Ok(()) } else { Err(r) }
    })
    .await;
    let file = || std::fs::read_to_string(&sources_path).unwrap();

    // Next refresh per row: the API's nextRefreshAt as a relative time, "—" when there is none.
    let steps = run_browser(&chromium, &server.base, "schedule", &[]).await;
    let rows = &steps["schedule"]["rows"];
    for id in ["local", "plain", "remote"] {
        let (row, api) = (page_row(rows, id), api_source(&server, id).await);
        assert_eq!(row["nextAt"], api["nextRefreshAt"], "{id}: {row} vs {api}");
        assert_eq!(row["suspended"], Value::Null, "{row}");
        assert_eq!(row["retry"], Value::Null, "{row}");
        assert_eq!(row["action"], "Suspend", "{row}");
    }
    let next = |id: &str| s(&page_row(rows, id)["next"]).to_string();
    assert!(
        next("local").starts_with("in ") && (next("local").ends_with(" m") || next("local") == "in 1 h"),
        "1h ± 10 %: {rows}"
    );
    assert!(next("remote").starts_with("in ") && next("remote").ends_with(" m"), "the default 10m: {rows}");
    assert_eq!(next("plain"), "—", "a yaml source without an interval has no next refresh: {rows}");

    // Suspend from the row: the badge, Resume, no next refresh; the file and the API agree.
    let steps = run_browser(&chromium, &server.base, "suspend", &["local"]).await;
    let suspend = &steps["suspend"];
    assert_eq!(suspend["before"]["suspended"], Value::Null, "{suspend}");
    assert_eq!(suspend["after"]["suspended"], "Suspended", "{suspend}");
    assert_eq!(suspend["after"]["action"], "Resume", "{suspend}");
    assert_eq!(suspend["after"]["next"], "—", "a suspended source is not scheduled: {suspend}");
    assert_eq!(suspend["toast"], "Suspended models/local", "{suspend}");
    assert_eq!(suspend["focus"], "local Resume", "focus stays on the row's button: {suspend}");
    assert_eq!(suspend["outcome"], "");
    assert!(entry_of(&file(), "local").contains("suspended: true"), "{}", file());
    assert_eq!(api_source(&server, "local").await["suspended"], true);

    // Resume: the badge goes, the schedule comes back; the file and the API agree.
    let steps = run_browser(&chromium, &server.base, "resume", &["local"]).await;
    let resume = &steps["resume"];
    assert_eq!(resume["before"]["suspended"], "Suspended", "the badge survives a reload: {resume}");
    assert_eq!(resume["after"]["suspended"], Value::Null, "{resume}");
    assert_eq!(resume["after"]["action"], "Suspend", "{resume}");
    assert!(s(&resume["after"]["next"]).starts_with("in "), "{resume}");
    assert_eq!(resume["toast"], "Resumed models/local", "{resume}");
    assert!(!entry_of(&file(), "local").contains("suspended: true"), "{}", file());
    let local = api_source(&server, "local").await;
    assert_eq!(local["suspended"], false);
    assert_eq!(resume["after"]["nextAt"], local["nextRefreshAt"], "{resume} vs {local}");

    // The refresh interval of the url source: "5s" is refused with the API's diagnostic, shown
    // like the others (nothing saved); "2m" is saved, in the file, and the row follows.
    let revisions_before = revisions(&server, "remote").await.len();
    let steps = run_browser(&chromium, &server.base, "interval", &["remote", "5s", "2m"]).await;
    let interval = &steps["interval"];
    assert_eq!(interval["loaded"], "", "{interval}");
    let diags = interval["diagnostics"].as_array().unwrap();
    assert!(
        diags.iter().any(|d| s(&d["field"]).ends_with("refreshInterval") && s(&d["text"]).contains("`5s` is shorter")),
        "the API's diagnostic for the interval is listed: {interval}"
    );
    assert_eq!(interval["invalid"], "true", "the field is marked invalid: {interval}");
    assert!(s(&interval["outcome"]).contains("Nothing was saved"), "{interval}");
    assert_eq!(interval["focused"], "refresh-interval", "clicking the diagnostic focuses the field: {interval}");
    assert_eq!(interval["badToast"], "");
    assert_eq!(interval["revisionAfterBad"], interval["revisionBefore"], "{interval}");
    assert!(s(&interval["toast"]).starts_with("Saved revision"), "{interval}");
    assert_eq!(interval["drawerInterval"], "2m");
    assert_eq!(interval["fieldAfter"], "2m");
    let remote = api_source(&server, "remote").await;
    assert_eq!(remote["refreshInterval"], "2m", "{remote}");
    assert!(entry_of(&file(), "remote").contains("refreshInterval: 2m"), "{}", file());
    assert_eq!(revisions(&server, "remote").await.len(), revisions_before + 1, "one save, the refused one none");
    assert_eq!(interval["row"]["nextAt"], remote["nextRefreshAt"], "{interval} vs {remote}");
    assert!(s(&interval["row"]["next"]).starts_with("in "), "{interval}");

    // Empty = the default again: the key leaves the entry.
    let steps = run_browser(&chromium, &server.base, "interval", &["remote", "-", ""]).await;
    let cleared = &steps["interval"];
    assert_eq!(cleared["loaded"], "2m", "{cleared}");
    assert_eq!(cleared["drawerInterval"], "default", "{cleared}");
    assert_eq!(api_source(&server, "remote").await["refreshInterval"], Value::Null);
    assert!(!entry_of(&file(), "remote").contains("refreshInterval"), "{}", file());

    // Cancel: Refresh all while the url host stalls 30 s; the running job's Cancel ends it
    // CANCELLED, in the page and over the API, within 2 s; the others' results stay listed.
    let requests_before = host.state.lock().unwrap().requests;
    host.state.lock().unwrap().delay_ms = 30_000;
    let steps = run_browser(&chromium, &server.base, "cancel", &[]).await;
    let cancel = &steps["cancel"];
    assert_eq!(cancel["disabledBefore"], true, "no job, no Cancel: {cancel}");
    assert_eq!(cancel["running"]["phase"], "RUNNING", "{cancel}");
    assert_eq!(cancel["running"]["cancelEnabled"], true, "{cancel}");
    assert!(host.state.lock().unwrap().requests > requests_before, "the job fetched the stalled host");
    let page_ms = cancel["pageMs"].as_u64().unwrap();
    let api_ms = cancel["apiMs"].as_u64().unwrap();
    assert!(page_ms < 2000, "the page showed CANCELLED {page_ms} ms after the click");
    assert_eq!(cancel["api"]["data"]["refreshJob"]["phase"], "CANCELLED", "{cancel}");
    assert!(api_ms < 2000, "refreshJob said CANCELLED {api_ms} ms after the click");
    let ended = &cancel["ended"];
    assert_eq!(ended["phase"], "CANCELLED", "{cancel}");
    assert!(s(&ended["text"]).starts_with("CANCELLED") && s(&ended["text"]).contains("cancelled by"), "{cancel}");
    let mut done: Vec<&str> = ended["results"].as_array().unwrap().iter().map(s).collect();
    done.sort();
    assert_eq!(done, ["local", "plain"], "the sources refreshed before the cancel: {cancel}");
    assert_eq!(ended["cancelDisabled"], true, "Cancel is off once the job ended: {cancel}");
    assert_eq!(ended["note"], "", "{cancel}");
    let job = server
        .ok(
            "query($id: ID!) { refreshJob(id: $id) { phase results { sourceId } } }",
            json!({"id": cancel["running"]["jobId"]}),
        )
        .await;
    assert_eq!(job["refreshJob"]["phase"], "CANCELLED", "{job}");
    assert_eq!(job["refreshJob"]["results"].as_array().unwrap().len(), 2, "{job}");
    assert_eq!(
        api_source(&server, "remote").await["status"]["entityCount"],
        3,
        "the cancelled fetch kept what it served"
    );
    // The same from the drawer, on a refresh of the stalled source alone.
    let drawer = &steps["drawer-cancel"];
    assert_eq!(drawer["enabled"], true, "{drawer}");
    assert!(drawer["ms"].as_u64().unwrap() < 2000, "{drawer}");
    assert!(s(&drawer["text"]).starts_with("Refresh CANCELLED"), "{drawer}");
    assert_eq!(drawer["disabledAfter"], true, "{drawer}");

    // A failed refresh is retried: the row says "retry 1, next in … s", at the API's nextRetryAt.
    {
        let mut h = host.state.lock().unwrap();
        h.delay_ms = 0;
        h.fail_next = 1;
    }
    let failed = server
        .ok("mutation { refreshSource(plugin: \"models\", id: \"remote\", wait: true) { phase } }", json!({}))
        .await;
    assert_eq!(failed["refreshSource"]["phase"], "FAILED", "{failed}");
    let remote = api_source(&server, "remote").await;
    assert_eq!(remote["status"]["retryCount"], 1, "{remote}");
    assert!(remote["status"]["nextRetryAt"].is_string(), "{remote}");
    let steps = run_browser(&chromium, &server.base, "retry", &["remote"]).await;
    let retry = &steps["retry"];
    let text = s(&retry["row"]["retry"]);
    assert!(text.starts_with("retry 1, next in ") && text.ends_with(" s"), "{retry}");
    assert_eq!(retry["row"]["retryAt"], remote["status"]["nextRetryAt"], "{retry} vs {remote}");
    assert!(s(&retry["drawerRetry"]).starts_with("retry 1, next in "), "{retry}");
}

// ---- refresh of every plugin and the Jobs panel ----------------------------------------------

/// Runs a ui-contract operation with a bearer token (trusted documents are on) and returns the
/// whole answer.
async fn contract_op(server: &Server, token: &str, file: &str, op: &str, variables: Value) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract").join(file)).unwrap();
    server
        .client
        .post(format!("{}/graphql", server.base))
        .bearer_auth(token)
        .json(&json!({"query": text, "operationName": op, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Issue 29 items 6 and 9 in Chromium, with trusted documents and static tokens: Refresh all
/// over every plugin (`refreshAll`: one job, results of `models` and `mcp` sources, as
/// `refreshJob(id)` reads them); the Jobs panel lists a job started outside the page while the
/// page is open (a url host stalls 30 s), a viewer's Cancel is off (and refused when forced),
/// the operator's Cancel keeps its focus while the panel re-renders and ends the job CANCELLED
/// within 2 s of the click, over the API; then the refresh panel's Cancel on a running refresh
/// of every plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refreshes_every_plugin_and_cancels_any_job_in_chromium() {
    let Some(chromium) = chromium("the_console_refreshes_every_plugin_and_cancels_any_job_in_chromium") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let host = CatalogHost::start(models_yaml(3)).await;
    let sources_path = dir.path().join("sources.yaml");
    std::fs::write(
        &sources_path,
        format!(
            "model_catalogs:\n  - name: Local\n    id: local\n    type: yaml\n    properties:\n      yamlCatalogPath: local.yaml\n  - name: Remote\n    id: remote\n    type: url\n    properties:\n      url: {}\nmcp_catalogs:\n  - name: Tools\n    id: tools\n    type: yaml\n    properties:\n      yamlCatalogPath: tools.yaml\n",
            host.url
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("local.yaml"), models_yaml(2)).unwrap();
    std::fs::write(dir.path().join("tools.yaml"), "mcp_servers:\n  - name: s1\n  - name: s2\n").unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let tokens =
        support::tokens_file(dir.path(), &[("ops", "operator", "op-token"), ("reader", "viewer", "viewer-token")]);
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-contract");
    let server = TestServer::new(dir.path())
        .sources(&sources_path)
        .database(&db)
        .flags(&[
            "--auth",
            "static",
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--trusted-documents",
            contract.to_str().unwrap(),
            "--url-allow",
            "127.0.0.1",
            "--fetch-retries",
            "0",
            "--rate-limit",
            "0",
            "--watch-interval",
            "0",
        ])
        .start()
        .await;
    let table = async || contract_op(&server, "op-token", "sources-table.graphql", "SourcesTable", json!({})).await;
    eventually("the url source's first load", std::time::Duration::from_secs(10), async || {
        let t = table().await;
        let remote = t["data"]["sources"].as_array().and_then(|a| a.iter().find(|s| s["id"] == "remote").cloned());
        match remote {
            Some(r) if r["status"]["entityCount"] == 3 => Ok(()),
            _ => Err(t),
        }
    })
    .await;
    let job_of = async |id: &str| {
        let body = contract_op(&server, "op-token", "refresh-rollback.graphql", "RefreshJob", json!({"id": id})).await;
        assert!(body.get("errors").is_none(), "{body}");
        body["data"]["refreshJob"].clone()
    };

    // Refresh all, every plugin: one job (`*`) whose results the page lists as the API has them.
    let steps = run_browser(&chromium, &server.base, "everything", &["op-token", "viewer-token"]).await;
    let every = &steps["everything"];
    assert_eq!(every["scopes"], json!([["plugin", "This plugin"], ["all", "Every plugin"]]), "{every}");
    assert_eq!(every["button"], "Refresh all plugins", "{every}");
    let refresh = &every["refresh"];
    assert!(s(&refresh["title"]).contains("every plugin"), "{every}");
    let job = job_of(s(&refresh["jobId"])).await;
    assert_eq!(job["plugin"], "*", "the page started one refreshAll job: {job}");
    assert_eq!(job["phase"], "SUCCEEDED", "{job}");
    assert_eq!(refresh["phase"], job["phase"], "{every}");
    assert_eq!((refresh["max"].as_f64(), refresh["value"].as_f64()), (Some(3.0), Some(3.0)), "{every}");
    let triple = |r: &Value| (s(&r["plugin"]).to_string(), s(&r["sourceId"]).to_string(), s(&r["status"]).to_string());
    let mut shown: Vec<_> = refresh["results"].as_array().unwrap().iter().map(triple).collect();
    let mut api: Vec<_> = job["results"].as_array().unwrap().iter().map(triple).collect();
    shown.sort();
    api.sort();
    assert_eq!(shown, api, "the page's results are refreshJob's: {every} vs {job}");
    let plugins: std::collections::BTreeSet<&str> = shown.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(plugins, ["mcp", "models"].into(), "results of both plugins: {every}");
    for r in refresh["results"].as_array().unwrap() {
        let api_r = job["results"].as_array().unwrap().iter().find(|a| a["sourceId"] == r["sourceId"]).unwrap();
        let head = format!("{}/{}: SUCCESS · loaded {}", s(&r["plugin"]), s(&r["sourceId"]), api_r["entitiesLoaded"]);
        assert!(s(&r["text"]).starts_with(&head), "{r} vs {api_r}");
    }
    let listed = &every["listed"];
    assert_eq!(
        (s(&listed["target"]), s(&listed["phase"]), s(&listed["actor"]), s(&listed["progress"])),
        ("every plugin", "SUCCEEDED", "ops", "3/3"),
        "the Jobs panel lists it: {every}"
    );
    assert_eq!(listed["cancel"], Value::Null, "no Cancel on an ended job: {every}");
    assert_eq!(every["unlabelled"], json!([]), "every control is labelled");

    // The Jobs panel: a refresh of the stalled url source, started by the test (not the page).
    let requests_before = host.state.lock().unwrap().requests;
    host.state.lock().unwrap().delay_ms = 30_000;
    let steps = run_browser(&chromium, &server.base, "jobs", &["op-token", "viewer-token"]).await;
    let jobs = &steps["jobs"];
    let job_id = s(&jobs["jobId"]).to_string();
    assert!(host.state.lock().unwrap().requests > requests_before, "the outside job fetched the stalled host");
    let listed = &jobs["listed"];
    assert!(["QUEUED", "RUNNING"].contains(&s(&listed["phase"])), "{jobs}");
    assert_eq!((s(&listed["target"]), s(&listed["actor"])), ("models/remote", "ops"), "{jobs}");
    assert_eq!(listed["cancel"]["disabled"], false, "the operator's Cancel is on: {jobs}");
    assert!(s(&listed["cancel"]["label"]).starts_with("Cancel the refresh of models/remote"), "{jobs}");
    // The viewer sees it too, its Cancel off; forced, the API refuses and the job runs on.
    let viewer = &jobs["viewerListed"];
    assert!(["QUEUED", "RUNNING"].contains(&s(&viewer["phase"])), "{jobs}");
    assert_eq!(viewer["cancel"]["disabled"], true, "a viewer's Cancel is off: {jobs}");
    assert!(s(&viewer["cancel"]["title"]).contains("operator"), "{jobs}");
    let refused = &jobs["viewerRefused"];
    assert_eq!(refused["code"], "FORBIDDEN", "{jobs}");
    assert!(s(&refused["note"]).contains("FORBIDDEN"), "{jobs}");
    assert!(["QUEUED", "RUNNING"].contains(&s(&refused["api"])), "the viewer's cancel changed nothing: {jobs}");
    // Focus stays on the job's Cancel while another job's start and end re-render the panel.
    assert_eq!(jobs["order"], json!([jobs["otherId"], jobs["jobId"]]), "the newer job is listed first: {jobs}");
    assert_eq!(jobs["focusKept"], true, "{jobs}");
    // The click ends it CANCELLED within 2 s, in the page and over the API.
    let page_ms = jobs["pageMs"].as_u64().unwrap();
    let api_ms = jobs["apiMs"].as_u64().unwrap();
    assert_eq!(jobs["api"]["data"]["refreshJob"]["phase"], "CANCELLED", "{jobs}");
    assert!(api_ms < 2000, "refreshJob said CANCELLED {api_ms} ms after the click");
    assert!(page_ms < 2000, "the page showed CANCELLED {page_ms} ms after the click");
    let ended = &jobs["ended"];
    assert_eq!((s(&ended["phase"]), &ended["cancel"]), ("CANCELLED", &Value::Null), "{jobs}");
    assert!(ended["why"].as_array().unwrap().iter().any(|w| s(w).starts_with("cancelled by ops")), "{jobs}");
    assert_eq!(jobs["focusAfter"], "jobs-title", "focus goes to the panel once its button is gone: {jobs}");
    assert_eq!(jobs["note"], "", "{jobs}");
    assert_eq!(
        (s(&jobs["viewerEnded"]["phase"]), &jobs["viewerEnded"]["cancel"]),
        ("CANCELLED", &Value::Null),
        "{jobs}"
    );
    let job = job_of(&job_id).await;
    assert_eq!(job["phase"], "CANCELLED", "{job}");
    assert!(s(&job["error"]).starts_with("cancelled by ops"), "{job}");
    let t = table().await;
    let remote = t["data"]["sources"].as_array().unwrap().iter().find(|s| s["id"] == "remote").unwrap().clone();
    assert_eq!(remote["status"]["entityCount"], 3, "the cancelled fetch kept what it served: {remote}");

    // Refresh of every plugin with the host still stalled: the refresh panel's Cancel ends it.
    let all = &steps["all-cancel"];
    assert_eq!((s(&all["listed"]["target"]), s(&all["listed"]["phase"])), ("every plugin", "RUNNING"), "{all}");
    assert!(all["ms"].as_u64().unwrap() < 2000, "{all}");
    assert!(s(&all["ended"]["text"]).starts_with("CANCELLED"), "{all}");
    assert_eq!(all["ended"]["cancelDisabled"], true, "{all}");
    assert_eq!(s(&all["row"]["phase"]), "CANCELLED", "the Jobs panel follows: {all}");
    let job = job_of(s(&all["jobId"])).await;
    assert_eq!((s(&job["plugin"]), s(&job["phase"])), ("*", "CANCELLED"), "{job}");
    let mut done: Vec<String> = job["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}/{}", s(&r["plugin"]), s(&r["sourceId"])))
        .collect();
    done.sort();
    assert_eq!(done, ["mcp/tools", "models/local"], "{job}");
    let mut shown: Vec<&str> = all["ended"]["results"].as_array().unwrap().iter().map(s).collect();
    shown.sort();
    assert_eq!(shown, done, "{all}");
}
