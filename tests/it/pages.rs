//! The pages: GraphiQL at `GET /graphql` works offline (its assets are embedded in the binary
//! and served under `/graphiql/`), and every page response carries the security headers
//! (CSP with this origin only, nosniff, no referrer, no framing) while API responses keep theirs.
//! Over real HTTP, and in a real Chromium (`tests/node/graphiql.mjs`) with every request to
//! another origin aborted: GraphiQL renders, runs the `sources` query, receives a subscription
//! event, reports no CSP violation, and with `--auth static` sends the token field.

use crate::support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::*;

const OPERATOR_TOKEN: &str = "operator-token-for-graphiql";

/// A browser's request for the GraphiQL page.
async fn browser_get(server: &Server, path: &str) -> reqwest::Response {
    server
        .client
        .get(format!("{}{path}", server.base))
        .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
        .send()
        .await
        .unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The security headers every page and page asset carries.
fn assert_security_headers(resp: &reqwest::Response, what: &str) {
    let csp = header(resp, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.split(';').any(|d| d.trim() == directive), "{what}: CSP lacks `{directive}`: {csp}");
    }
    // Scripts from this origin only: no inline scripts, no eval, no CDN.
    let script = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).unwrap_or("");
    assert_eq!(script, "script-src 'self'", "{what}: {csp}");
    assert_eq!(header(resp, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(resp, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(resp, "x-frame-options"), "DENY", "{what}");
}

/// `Some(page response)` when this binary embeds GraphiQL's assets. A binary built without them
/// (no npm registry at build time) is a SKIPPED here, and a failure under `.ci/run`
/// (`CATALOG_BFF_REQUIRE_BROWSER=1`), where the assets must be there.
async fn embedded_page(server: &Server, test: &str) -> Option<reqwest::Response> {
    let resp = browser_get(server, "/graphql").await;
    assert_eq!(resp.status(), 200);
    if header(&resp, "x-graphiql-assets") != "missing" {
        return Some(resp);
    }
    let body = resp.text().await.unwrap();
    assert!(
        std::env::var("CATALOG_BFF_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "{test}: this binary was built without GraphiQL's assets (x-graphiql-assets: missing); see the build's cargo warnings. Page:\n{body}"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: built without GraphiQL's assets (see the cargo warnings of build.rs)"
    );
    None
}

/// The `src` / `href` of every `<script>` and stylesheet `<link>` of a page; fails on an inline
/// script (the CSP would block it anyway).
fn page_assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (tag, attr) in [("<script", "src=\""), ("<link", "href=\"")] {
        for (i, _) in html.match_indices(tag) {
            let end = html[i..].find('>').map(|e| i + e).unwrap();
            let element = &html[i..end];
            let Some(start) = element.find(attr) else {
                assert!(tag != "<script", "an inline script in the page: {element}");
                continue;
            };
            let value = &element[start + attr.len()..];
            out.push(value[..value.find('"').unwrap()].to_string());
        }
    }
    out
}

#[tokio::test]
async fn graphiql_page_and_its_assets_are_served_by_the_binary_with_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let Some(resp) =
        embedded_page(&server, "graphiql_page_and_its_assets_are_served_by_the_binary_with_security_headers").await
    else {
        return;
    };
    assert!(header(&resp, "content-type").starts_with("text/html"), "{:?}", resp.headers());
    assert_security_headers(&resp, "GET /graphql (page)");
    let html = resp.text().await.unwrap();
    assert!(!html.contains("unpkg.com") && !html.contains("cdn.jsdelivr"), "the page still names a CDN:\n{html}");

    let assets = page_assets(&html);
    for name in [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphql-ws.min.js",
        "graphiql.min.js",
        "graphiql.min.css",
        "graphiql-page.js",
    ] {
        assert!(
            assets.iter().any(|a| a.starts_with(&format!("/graphiql/{name}?v="))),
            "the page does not load /graphiql/{name} (versioned): {assets:?}"
        );
    }
    for url in &assets {
        assert!(url.starts_with("/graphiql/"), "an asset not from this server: {url}");
        let resp = server.client.get(format!("{}{url}", server.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_security_headers(&resp, url);
        let ct = header(&resp, "content-type").to_string();
        let expected = if url.contains(".css?") { "text/css" } else { "text/javascript" };
        assert!(ct.starts_with(expected), "{url}: content-type {ct}");
        // The URLs carry the content hash: cached for good.
        assert_eq!(header(&resp, "cache-control"), "public, max-age=31536000, immutable", "{url}");
        let etag = header(&resp, "etag").to_string();
        assert!(etag.starts_with('"') && etag.len() > 10, "{url}: etag {etag:?}");
        assert!(!resp.bytes().await.unwrap().is_empty(), "{url}: empty");
        // Revalidation by ETag.
        let again =
            server.client.get(format!("{}{url}", server.base)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{url} with If-None-Match");
    }

    // The production React build, byte for byte the pinned npm file.
    let react = server.client.get(format!("{}/graphiql/react.production.min.js", server.base)).send().await.unwrap();
    assert_eq!(header(&react, "cache-control"), "no-cache", "an unversioned URL is revalidated");
    let bytes = react.bytes().await.unwrap();
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        "d949f1c3687aedadcedac85261865f29b17cd273997e7f6b2bfc53b2f9d4c4dd",
        "react.production.min.js is not React 18.3.1's production UMD build"
    );

    // An unknown asset: a clear 404 that lists what there is.
    let missing = server.client.get(format!("{}/graphiql/nope.js", server.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_security_headers(&missing, "404 under /graphiql/");
    let text = missing.text().await.unwrap();
    assert!(text.contains("nope.js") && text.contains("graphiql.min.js"), "{text}");

    // API responses keep their own headers: no page CSP on JSON.
    let api = server
        .client
        .post(format!("{}/graphql", server.base))
        .json(&json!({"query": "{ sources { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert!(api.headers().get("content-security-policy").is_none(), "{:?}", api.headers());
    assert!(api.headers().get("x-frame-options").is_none(), "{:?}", api.headers());
}

#[tokio::test]
async fn graphiql_is_public_under_static_auth_but_its_queries_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = start_with_auth(dir.path(), &tokens).await;
    let Some(resp) = embedded_page(&server, "graphiql_is_public_under_static_auth_but_its_queries_are_not").await
    else {
        return;
    };
    assert_security_headers(&resp, "GET /graphql (page, --auth static)");
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"data-auth="static""#) && html.contains(r#"id="token""#), "no token field:\n{html}");
    let js = server.client.get(format!("{}/graphiql/graphiql-page.js", server.base)).send().await.unwrap();
    assert_eq!(js.status(), 200, "assets need no token");
    // The API itself still wants one.
    let api = server
        .client
        .post(format!("{}/graphql", server.base))
        .json(&json!({"query": "{ sources { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
}

// ---- in Chromium -------------------------------------------------------------------------------

fn tokens_file(dir: &Path) -> PathBuf {
    support::tokens_file(dir, &[("graphiql-operator", "operator", OPERATOR_TOKEN)])
}

async fn start_with_auth(dir: &Path, tokens: &Path) -> Server {
    let db = database_url(Backend::Sqlite, dir).await;
    TestServer::new(dir)
        .database(&db)
        .flags(&["--auth", "static", "--tokens-file", tokens.to_str().unwrap()])
        .start()
        .await
}

/// Runs `tests/node/graphiql.mjs` against the server; its JSON lines arrive on the receiver.
fn run_graphiql_script(
    chromium: &Path,
    base: &str,
    args: &[&str],
) -> (tokio::process::Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        node.join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run `npm ci --prefix tests/node` (bash .ci/run does)"
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots/graphiql");
    let mut child = tokio::process::Command::new("node")
        .arg(node.join("graphiql.mjs"))
        .arg(base)
        .arg(&artifacts)
        .args(args)
        .env("CATALOG_BFF_CHROMIUM", chromium)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let rx = support::stdout_lines(&mut child);
    (child, rx)
}

/// The next JSON line of the script; fails (naming the step) if it is another step or the
/// script ended (its stderr, shown by the harness, says why).
async fn step(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, name: &str) -> Value {
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(90), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for step {name}"))
            .unwrap_or_else(|| panic!("graphiql.mjs ended before step {name} (see its stderr above)"));
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        if v["step"] == "done" && name != "done" {
            panic!("graphiql.mjs stopped before step {name}: {v:#} (see its stderr above)");
        }
        assert_eq!(v["step"], name, "unexpected step: {v:#}");
        return v;
    }
}

/// The end of a run: nothing left this origin and no CSP violation was reported.
async fn finish(mut child: tokio::process::Child, rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) {
    let done = step(rx, "done").await;
    assert_eq!(done["blocked"], json!([]), "GraphiQL tried to reach other hosts (no internet here): {done:#}");
    assert_eq!(done["violations"], json!([]), "the CSP blocked something GraphiQL needs: {done:#}");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "graphiql.mjs failed: {done:#}");
}

async fn revision(server: &Server, token: Option<&str>, id: &str) -> i64 {
    let mut req = server.client.post(format!("{}/graphql", server.base)).json(&json!({
        "query": "query($id: ID!) { source(plugin: \"models\", id: $id) { revision } }",
        "variables": {"id": id},
    }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body: Value = req.send().await.unwrap().json().await.unwrap();
    body["data"]["source"]["revision"].as_i64().unwrap_or_else(|| panic!("{body:#}"))
}

/// An apply made over HTTP while GraphiQL is subscribed.
async fn apply_over_http(server: &Server, token: Option<&str>) {
    let mut req = server.client.post(format!("{}/graphql", server.base)).json(&json!({
        "query": APPLY,
        "variables": {"plugin": "models", "input": {"id": "team_models", "content": models_yaml(3)},
            "options": {"refreshAfterApply": true, "confirmRemovals": true}},
    }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body: Value = req.send().await.unwrap().json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
}

#[tokio::test]
async fn graphiql_runs_a_query_and_a_subscription_in_chromium_with_no_internet() {
    const TEST: &str = "graphiql_runs_a_query_and_a_subscription_in_chromium_with_no_internet";
    let Some(chromium) = chromium(TEST) else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    if embedded_page(&server, TEST).await.is_none() {
        return;
    }
    let api: Vec<String> = server.ok("{ sources { plugin id } }", json!({})).await["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}/{}", s["plugin"].as_str().unwrap(), s["id"].as_str().unwrap()))
        .collect();
    let before = revision(&server, None, "team_models").await;

    let (child, mut rx) = run_graphiql_script(&chromium, &server.base, &["open"]);
    let rendered = step(&mut rx, "rendered").await;
    assert_eq!(rendered["title"], "catalog-bff · GraphiQL");
    let query = step(&mut rx, "query").await;
    let shown: Vec<String> = query["result"]["data"]["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("GraphiQL showed no sources: {query:#}"))
        .iter()
        .map(|s| format!("{}/{}", s["plugin"].as_str().unwrap(), s["id"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, api, "GraphiQL's result is not what the API returns");
    assert!(shown.contains(&"models/team_models".to_string()), "{shown:?}");

    step(&mut rx, "subscribed").await;
    apply_over_http(&server, None).await;
    let event = step(&mut rx, "event").await;
    assert_eq!(event["result"]["data"]["catalogEvents"]["sourceId"], "team_models", "{event:#}");
    finish(child, &mut rx).await;
    assert!(revision(&server, None, "team_models").await > before, "the apply made no revision");
}

#[tokio::test]
async fn graphiql_under_static_auth_sends_the_token_field_in_chromium() {
    const TEST: &str = "graphiql_under_static_auth_sends_the_token_field_in_chromium";
    let Some(chromium) = chromium(TEST) else { return };
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let server = start_with_auth(dir.path(), &tokens).await;
    if embedded_page(&server, TEST).await.is_none() {
        return;
    }
    let before = revision(&server, Some(OPERATOR_TOKEN), "team_models").await;

    let (child, mut rx) = run_graphiql_script(&chromium, &server.base, &["auth", OPERATOR_TOKEN]);
    step(&mut rx, "rendered").await;
    let without = step(&mut rx, "without-token").await;
    assert_eq!(
        without["result"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "without a token GraphiQL must show UNAUTHENTICATED: {without:#}"
    );
    assert!(without["result"]["data"]["sources"].is_null(), "{without:#}");
    let with = step(&mut rx, "with-token").await;
    assert!(
        with["result"]["data"]["sources"].as_array().is_some_and(|s| s.iter().any(|s| s["id"] == "team_models")),
        "with the token field filled the query must work: {with:#}"
    );
    assert_eq!(with["stored"], true, "the token is kept in sessionStorage");

    // The subscription authenticates in connection_init.
    let subscribed = step(&mut rx, "subscribed").await;
    assert_eq!(subscribed["connectionInit"]["authorization"], format!("Bearer {OPERATOR_TOKEN}"), "{subscribed:#}");
    apply_over_http(&server, Some(OPERATOR_TOKEN)).await;
    let event = step(&mut rx, "event").await;
    assert_eq!(event["result"]["data"]["catalogEvents"]["sourceId"], "team_models", "{event:#}");
    finish(child, &mut rx).await;
    assert!(revision(&server, Some(OPERATOR_TOKEN), "team_models").await > before);
}
