//! Trust in the core (issue 8, items 1, 2 and the YAML part of 4): the server owns where catalog
//! bytes go, Secret refs resolve only inside the secrets directory, url sources cannot reach
//! internal addresses (after DNS and on redirects), and deep YAML is refused before parsing.
//! Every refusal changes nothing: files and revision counts are compared before and after.

use crate::support;

use serde_json::{Value, json};
use support::*;

const REVISIONS: &str = "{ sources { plugin id revisions(limit: 100) { revision } } }";

async fn revision_total(server: &Server) -> usize {
    let v = server.ok(REVISIONS, json!({})).await;
    v["sources"].as_array().unwrap().iter().map(|s| s["revisions"].as_array().unwrap().len()).sum()
}

fn diag_field(body: &Value) -> String {
    body["errors"][0]["extensions"]["diagnostics"][0]["field"].as_str().unwrap_or_default().to_string()
}

async fn state_and_error(server: &Server, id: &str) -> (String, String) {
    let s = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": id})).await;
    (
        s["source"]["status"]["state"].as_str().unwrap_or_default().to_string(),
        s["source"]["status"]["lastError"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_assigns_catalog_locations_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    std::fs::create_dir(dir.path().join("subdir")).unwrap();
    std::fs::write(outside.path().join("target.yaml"), "untouched").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path().join("target.yaml"), dir.path().join("evil-models.yaml")).unwrap();
    let before = tree_bytes(dir.path());
    let revisions = revision_total(&server).await;
    let abs = dir.path().to_str().unwrap().to_string();

    // A new source naming any location but its own assigned one is refused.
    for path in [
        "sources.yaml",
        "test.db",
        "test.db-wal",
        "test.db-shm",
        "team-models.yaml",
        "platform-mcp-servers.yaml",
        ".",
        "",
        "a\u{0}b",
        "subdir",
        "../escaped.yaml",
        "other.yaml",
    ] {
        let body = server
            .gql(APPLY, json!({"plugin": "models", "input": {"id": "sneaky", "content": models_yaml(1), "properties": {"yamlCatalogPath": path}}}))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{path:?}: {body:#}");
        assert_eq!(diag_field(&body), "input.properties.yamlCatalogPath", "{path:?}");
        let hint = body["errors"][0]["extensions"]["diagnostics"][0]["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains("leave yamlCatalogPath out; the server stores this source's catalog at sneaky-models.yaml"),
            "{hint}"
        );
        assert!(!body.to_string().contains(&abs), "absolute path in {body}");
    }
    // An existing source may only name its own location.
    let body = server
        .gql(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": models_yaml(2), "properties": {"yamlCatalogPath": "partner-models.yaml"}}}))
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    assert!(body.to_string().contains("the server stores this source's catalog at team-models.yaml"), "{body}");

    // The assigned name is a symlink to a file outside the directory: refused, never written.
    #[cfg(unix)]
    {
        let body =
            server.gql(APPLY, json!({"plugin": "models", "input": {"id": "evil", "content": models_yaml(1)}})).await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
        assert!(body.to_string().contains("symlink"), "{body}");
        assert!(!body.to_string().contains(&abs), "absolute path in {body}");
        assert_eq!(std::fs::read_to_string(outside.path().join("target.yaml")).unwrap(), "untouched");
        // validateSource says the same, before anything is written.
        let v = server
            .ok(
                "query($i: SourceInput!) { validateSource(plugin: \"models\", input: $i) { valid errors { field message } } }",
                json!({"i": {"id": "evil", "content": models_yaml(1)}}),
            )
            .await;
        assert_eq!(v["validateSource"]["valid"], false);
        assert_eq!(v["validateSource"]["errors"][0]["field"], "input.properties.yamlCatalogPath");
    }
    assert_eq!(tree_bytes(dir.path()), before);
    assert_eq!(revision_total(&server).await, revisions);

    // Leaving the path out, or naming exactly the assigned one, works.
    server.ok(APPLY, json!({"plugin": "models", "input": {"id": "fresh", "content": models_yaml(1)}})).await;
    let src = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "fresh"})).await;
    assert_eq!(src["source"]["properties"]["yamlCatalogPath"], "fresh-models.yaml");
    assert!(dir.path().join("fresh-models.yaml").exists());
    server
        .ok(APPLY, json!({"plugin": "mcp", "input": {"id": "named", "content": "mcp_servers:\n  - name: s\n", "properties": {"yamlCatalogPath": "named-mcp.yaml"}}}))
        .await;
    assert!(dir.path().join("named-mcp.yaml").exists());
    assert_eq!(revision_total(&server).await, revisions + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployers_shared_or_self_location_puts_the_later_source_in_error() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let far = elsewhere.path().join("far.yaml");
    std::fs::write(&far, models_yaml(2)).unwrap();
    std::fs::write(dir.path().join("a.yaml"), models_yaml(3)).unwrap();
    let sources = dir.path().join("sources.yaml");
    std::fs::write(
        &sources,
        format!(
            "model_catalogs:\n  - name: A\n    id: a\n    type: yaml\n    properties:\n      yamlCatalogPath: a.yaml\n  - name: B\n    id: b\n    type: yaml\n    properties:\n      yamlCatalogPath: ./a.yaml\n  - name: S\n    id: s\n    type: yaml\n    properties:\n      yamlCatalogPath: sources.yaml\n  - name: Far\n    id: far\n    type: yaml\n    properties:\n      yamlCatalogPath: {}\n",
            far.display()
        ),
    )
    .unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).sources(&sources).database(&db).start().await;
    assert_eq!(state_and_error(&server, "a").await.0, "AVAILABLE");
    let (state, err) = state_and_error(&server, "b").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("already the catalog of source models/a"), "{err}");
    let (state, err) = state_and_error(&server, "s").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("is the sources file itself"), "{err}");
    // A deployer's location outside the directory still loads on refresh...
    assert_eq!(state_and_error(&server, "far").await.0, "AVAILABLE");
    // ...and `content` never reads the sources file or another source's file back.
    let all = server.ok("{ sources { id content } }", json!({})).await;
    for s in all["sources"].as_array().unwrap() {
        let shown = !s["content"].is_null();
        assert_eq!(shown, s["id"] == "a" || s["id"] == "far", "{s}");
    }

    let before = tree_bytes(dir.path());
    let far_before = std::fs::read(&far).unwrap();
    let revisions = revision_total(&server).await;
    for (id, why) in [("b", "models/a"), ("s", "sources file"), ("far", "outside")] {
        let body = server.gql(APPLY, json!({"plugin": "models", "input": {"id": id, "content": models_yaml(1)}})).await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{id}: {body:#}");
        assert!(body.to_string().contains(why), "{id}: {body}");
    }
    assert_eq!(tree_bytes(dir.path()), before);
    assert_eq!(std::fs::read(&far).unwrap(), far_before);
    assert_eq!(revision_total(&server).await, revisions);
    // An entry-only edit of the outside source is still possible (no content is written).
    server.ok(APPLY, json!({"plugin": "models", "input": {"id": "far", "name": "Far away"}})).await;
    assert_eq!(std::fs::read(&far).unwrap(), far_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_sources_refuse_loopback_unless_allowed() {
    let host = CatalogHost::start(models_yaml(3)).await;
    let by_name = host.url.replace("127.0.0.1", "localhost");
    let write = |dir: &std::path::Path| {
        let sources = dir.join("sources.yaml");
        std::fs::write(
            &sources,
            format!(
                "model_catalogs:\n  - name: Ip\n    id: ip\n    type: url\n    properties:\n      url: {}\n  - name: Named\n    id: named\n    type: url\n    properties:\n      url: {by_name}\n",
                host.url
            ),
        )
        .unwrap();
        sources
    };

    let dir = tempfile::tempdir().unwrap();
    let sources = write(dir.path());
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).sources(&sources).database(&db).start().await;
    let (state, err) = state_and_error(&server, "ip").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("loopback") && err.contains("--url-allow"), "{err}");
    // A host name is checked after DNS resolution.
    let (state, err) = state_and_error(&server, "named").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("loopback") && err.contains("--url-allow"), "{err}");
    assert_eq!(host.state.lock().unwrap().requests, 0, "no request may reach a refused address");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let sources = write(dir.path());
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server =
        TestServer::new(dir.path()).sources(&sources).database(&db).flags(&["--url-allow", "127.0.0.1"]).start().await;
    let s = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "ip"})).await;
    assert_eq!(s["source"]["status"]["state"], "AVAILABLE", "{s:#}");
    assert_eq!(s["source"]["status"]["entityCount"], 3);
    assert!(host.state.lock().unwrap().requests >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_an_allowed_host_to_a_refused_one_is_refused() {
    // A tiny server on 127.0.0.1 that redirects to the IPv6 loopback (never contacted).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits2 = hits.clone();
    let app = axum::Router::new().route(
        "/catalog.yaml",
        axum::routing::get(move || {
            hits2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { axum::response::Redirect::temporary(&format!("http://[::1]:{port}/catalog.yaml")) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources.yaml");
    std::fs::write(
        &sources,
        format!("model_catalogs:\n  - name: R\n    id: r\n    type: url\n    properties:\n      url: http://127.0.0.1:{port}/catalog.yaml\n"),
    )
    .unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server =
        TestServer::new(dir.path()).sources(&sources).database(&db).flags(&["--url-allow", "127.0.0.1"]).start().await;
    let (state, err) = state_and_error(&server, "r").await;
    assert_eq!(state, "ERROR");
    assert!(
        err.contains("redirected to http://[::1]") && err.contains("loopback") && err.contains("--url-allow"),
        "{err}"
    );
    // Refused, not retried: one request per refresh.
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_refs_name_a_secret_and_resolve_inside_the_secrets_dir() {
    let host = CatalogHost::start(models_yaml(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("stolen"), "private-bytes\n").unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("evil")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path().join("stolen"), secrets.join("evil/token")).unwrap();
    let sources = dir.path().join("sources.yaml");
    std::fs::write(
        &sources,
        format!(
            "model_catalogs:\n  - name: Etc\n    id: etc\n    type: url\n    properties:\n      url: {u}\n      authSecretRef: {{name: /etc, key: hostname}}\n  - name: Link\n    id: link\n    type: url\n    properties:\n      url: {u}\n      authSecretRef: {{name: evil, key: token}}\n",
            u = host.url
        ),
    )
    .unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .sources(&sources)
        .database(&db)
        .flags(&["--url-allow", "127.0.0.1", "--secrets-dir", secrets.to_str().unwrap()])
        .start()
        .await;
    // A deployer's file: the source fails with the reason, nothing is read or sent.
    let (state, err) = state_and_error(&server, "etc").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("not a Kubernetes Secret name"), "{err}");
    let (state, err) = state_and_error(&server, "link").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("resolves outside --secrets-dir"), "{err}");
    {
        let st = host.state.lock().unwrap();
        assert_eq!(st.requests, 0);
        assert!(st.last_auth.is_none());
    }

    // Through the API the bad name is refused up front and nothing changes.
    let before = tree_bytes(dir.path());
    let revisions = revision_total(&server).await;
    let body = server
        .gql(
            APPLY,
            json!({"plugin": "models", "input": {"id": "new_remote", "type": "url",
                   "properties": {"url": host.url, "authSecretRef": {"name": "/etc", "key": "hostname"}}}}),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    assert_eq!(diag_field(&body), "input.properties.authSecretRef.name");
    let body = server
        .gql(
            APPLY,
            json!({"plugin": "models", "input": {"id": "new_remote", "type": "url",
                   "properties": {"url": host.url, "authSecretRef": {"name": "ok", "key": "../../x"}}}}),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    assert_eq!(diag_field(&body), "input.properties.authSecretRef.key");
    assert_eq!(tree_bytes(dir.path()), before);
    assert_eq!(revision_total(&server).await, revisions);
    assert_eq!(host.state.lock().unwrap().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_yaml_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let before = tree_bytes(dir.path());
    let revisions = revision_total(&server).await;
    let validate = "query($i: SourceInput!) { validateSource(plugin: \"models\", input: $i) { valid errors { message line column } } }";
    for (what, content, column) in [
        ("brackets", "[".repeat(80_000) + &"]".repeat(80_000), 64),
        ("compact sequence", "- ".repeat(80_000) + "x", 129),
    ] {
        assert!(content.len() >= 160_000);
        let v = server.ok(validate, json!({"i": {"id": "team_models", "content": content}})).await;
        assert_eq!(v["validateSource"]["valid"], false, "{what}");
        let e = &v["validateSource"]["errors"][0];
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("limit of 64") && msg.contains("--max-yaml-depth"), "{what}: {msg}");
        assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(1), Some(column)), "{what}");
        let body =
            server.gql(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": content}})).await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{what}");
    }
    assert_eq!(tree_bytes(dir.path()), before);
    assert_eq!(revision_total(&server).await, revisions);

    // A catalog file on disk (refresh) is held to the same limit.
    std::fs::write(dir.path().join("partner-models.yaml"), format!("models: {}", "[".repeat(100))).unwrap();
    let r = server
        .ok(
            "mutation { refreshSource(plugin: \"models\", id: \"partner_models\") { results { status diagnostics { message } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["refreshSource"]["results"][0]["status"], "FAILURE");
    assert!(r.to_string().contains("--max-yaml-depth"), "{r}");

    // A large file (parsed in pieces, with the depth scan beside the parse) is refused all the
    // same when one item nests too deep, though every piece on its own parses.
    let mut big = String::from("source: x\nmodels:\n");
    let mut i = 0;
    while big.len() < 400_000 {
        big.push_str(&format!("  - name: m{i}\n    description: filler item {i}\n"));
        i += 1;
    }
    big.push_str("  - name: deep\n    readme:\n");
    for d in 0..80 {
        big.push_str(&format!("{}k:\n", " ".repeat(6 + 2 * d)));
    }
    big.push_str(&format!("{}end\n  - name: after\n", " ".repeat(6 + 2 * 80)));
    std::fs::write(dir.path().join("partner-models.yaml"), &big).unwrap();
    let r = server
        .ok(
            "mutation { refreshSource(plugin: \"models\", id: \"partner_models\") { results { status diagnostics { message line } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["refreshSource"]["results"][0]["status"], "FAILURE", "{r}");
    let message = r["refreshSource"]["results"][0]["diagnostics"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("limit of 64") && message.contains("--max-yaml-depth"), "{r}");
}

/// Review finding: a custom `authHeader` followed a redirect to another origin (reqwest strips
/// only `Authorization` and cookies). A credentialed request refuses cross-origin redirects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentialed_fetch_never_follows_a_redirect_to_another_origin() {
    let target = CatalogHost::start(models_yaml(2)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let to = target.url.clone();
    let app = axum::Router::new()
        .route("/catalog.yaml", axum::routing::get(move || async move { axum::response::Redirect::temporary(&to) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("catalog-host")).unwrap();
    std::fs::write(secrets.join("catalog-host/token"), "TOPSECRET\n").unwrap();
    let sources = dir.path().join("sources.yaml");
    std::fs::write(
        &sources,
        format!(
            "model_catalogs:\n  - name: R\n    id: r\n    type: url\n    properties:\n      url: http://127.0.0.1:{port}/catalog.yaml\n      authSecretRef: {{name: catalog-host, key: token}}\n      authHeader: X-Api-Key\n  - name: Plain\n    id: plain\n    type: url\n    properties:\n      url: http://127.0.0.1:{port}/catalog.yaml\n"
        ),
    )
    .unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .sources(&sources)
        .database(&db)
        .flags(&["--url-allow", "127.0.0.1", "--secrets-dir", secrets.to_str().unwrap()])
        .start()
        .await;
    let (state, err) = state_and_error(&server, "r").await;
    assert_eq!(state, "ERROR");
    assert!(err.contains("another origin"), "{err}");
    // Only the uncredentialed source reached the other origin, and no secret ever did.
    assert_eq!(state_and_error(&server, "plain").await.0, "AVAILABLE");
    let host = target.state.lock().unwrap();
    assert_eq!(host.requests, 1, "the credentialed fetch followed the redirect");
    assert!(host.last_auth.is_none());
}

/// Review finding: 20,000 duplicate names cost quadratic time in `validateSource` and a report
/// of 20,000 diagnostics. Positions are now found in one pass, and a report lists at most 200
/// diagnostics per layer plus one that counts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_duplicate_names_give_a_bounded_report() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let content = format!("models:\n{}", "- name: a\n".repeat(20_000));
    let body = server
        .ok(
            "query($i: SourceInput!) { validateSource(plugin: \"models\", input: $i) { valid errors { message } } }",
            json!({"i": {"id": "team_models", "content": content}}),
        )
        .await;
    let report = &body["validateSource"];
    assert_eq!(report["valid"], false);
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.len() <= 201, "{} errors", errors.len());
    assert!(errors.iter().any(|e| e["message"].as_str().unwrap().contains("more")), "{errors:?}");
}
