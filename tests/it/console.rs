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
}
