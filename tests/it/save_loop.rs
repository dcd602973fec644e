//! The save → refresh → see loop, end to end against the real server, on SQLite and PostgreSQL.

use crate::support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_with_refresh_shows_the_new_count_immediately() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let before = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await;
        let count = before["source"]["status"]["entityCount"].as_u64().unwrap() as usize;
        let rev = before["source"]["revision"].as_i64().unwrap();
        let t0 = chrono::Utc::now();

        let original = before["source"]["content"].as_str().unwrap().to_string();
        let content = format!(
            "{original}  - name: extra/added-model\n    provider: Tester\n    artifacts:\n      - uri: oci://registry.example.com/extra:1\n"
        );
        let out = server
            .ok(
                APPLY,
                json!({"plugin": "models", "input": {"id": "team_models", "content": content},
                       "options": {"refreshAfterApply": true, "expectedRevision": rev}}),
            )
            .await;
        let res = &out["applySource"];
        assert_eq!(res["revision"], rev + 1, "{backend:?}: {res:#}");
        assert_eq!(res["changed"], true);
        assert_eq!(res["source"]["status"]["entityCount"], count + 1, "{backend:?}: {res:#}");
        assert_eq!(res["refresh"]["phase"], "SUCCEEDED");
        assert_eq!(res["refresh"]["results"][0]["entitiesLoaded"], count + 1);
        let fresh =
            chrono::DateTime::parse_from_rfc3339(res["source"]["status"]["lastRefreshTime"].as_str().unwrap()).unwrap();
        assert!(fresh >= t0, "lastRefreshTime {fresh} is older than the mutation ({t0})");

        // An immediate read shows the same state: never stale after a save.
        let list = server
            .ok(
                "{ sources(plugin: \"models\") { id revision content status { entityCount lastRefreshTime } } }",
                json!({}),
            )
            .await;
        let team = list["sources"].as_array().unwrap().iter().find(|s| s["id"] == "team_models").unwrap();
        assert_eq!(team["status"]["entityCount"], count + 1);
        assert_eq!(team["revision"], rev + 1);
        assert_eq!(team["status"]["lastRefreshTime"], res["source"]["status"]["lastRefreshTime"]);
        assert_eq!(team["content"].as_str().unwrap(), content);
        // ... and the file on disk holds exactly the applied content.
        assert_eq!(std::fs::read_to_string(dir.path().join("team-models.yaml")).unwrap(), content);
        let ents = server.ok("{ entities(plugin: \"models\", sourceId: \"team_models\", first: 100) { totalCount edges { node { name sourceId } } } }", json!({})).await;
        assert_eq!(ents["entities"]["totalCount"], count + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_rejected_with_position_and_changes_nothing() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let files_before = tree_bytes(dir.path());
        let revs_before =
            server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await["source"]["revisions"]
                .clone();

        // 1. Invalid YAML.
        let body = server
            .gql(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": "models:\n  - name: a\n    tasks: [x\n"}}))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
        let d = &body["errors"][0]["extensions"]["diagnostics"][0];
        assert!(d["line"].as_u64().unwrap() >= 3, "{d:#}");
        assert!(d["column"].as_u64().is_some(), "{d:#}");
        assert_eq!(d["layer"], "SYNTAX");

        // 2. An unknown field: position, field path and the nearest known name.
        let body = server
            .gql(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": "models:\n  - name: a\n    licence: mit\n"}}))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"));
        let d = &body["errors"][0]["extensions"]["diagnostics"][0];
        assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(3), Some(5)), "{d:#}");
        assert_eq!(d["field"], "models[0].licence");
        assert_eq!(d["suggestion"], "license");
        assert!(
            body["errors"][0]["message"].as_str().unwrap().contains(":3:5: error: unknown field `licence`"),
            "{body:#}"
        );

        // 3. A bad id.
        let body =
            server.gql(APPLY, json!({"plugin": "models", "input": {"id": "Bad Id!", "content": models_yaml(1)}})).await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"));
        let d = &body["errors"][0]["extensions"]["diagnostics"][0];
        assert_eq!(d["field"], "input.id", "{d:#}");
        assert!(d["hint"].as_str().unwrap().contains("^[a-z0-9][a-z0-9_-]*$"));

        // validateSource reports the same thing per layer and changes nothing either.
        let v = server
            .ok(
                "query($i: SourceInput!) { validateSource(plugin: \"models\", input: $i) { valid layers { layer passed skipped } errors { line column field suggestion } } }",
                json!({"i": {"id": "team_models", "content": "models:\n  - name: a\n    licence: mit\n"}}),
            )
            .await;
        assert_eq!(v["validateSource"]["valid"], false);
        assert_eq!(v["validateSource"]["layers"][0]["passed"], true);
        assert_eq!(v["validateSource"]["layers"][1]["passed"], false);
        assert_eq!(v["validateSource"]["layers"][2]["skipped"], true);

        assert!(files_before == tree_bytes(dir.path()), "{backend:?}: files changed after rejected input");
        let revs_after =
            server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await["source"]["revisions"]
                .clone();
        assert_eq!(revs_before, revs_after);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_expected_revision_conflicts_and_only_one_concurrent_apply_wins() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let rev =
            server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "partner_models"})).await["source"]["revision"]
                .as_i64()
                .unwrap();

        let stale = server
            .gql(APPLY, json!({"plugin": "models", "input": {"id": "partner_models", "content": models_yaml(2)}, "options": {"expectedRevision": rev + 5}}))
            .await;
        assert_eq!(error_code(&stale).as_deref(), Some("CONFLICT"), "{stale:#}");
        assert_eq!(stale["errors"][0]["extensions"]["currentRevision"], rev);

        let a = server.gql(APPLY, json!({"plugin": "models", "input": {"id": "partner_models", "content": models_yaml(3)}, "options": {"expectedRevision": rev, "confirmRemovals": true}}));
        let b = server.gql(APPLY, json!({"plugin": "models", "input": {"id": "partner_models", "content": models_yaml(4)}, "options": {"expectedRevision": rev, "confirmRemovals": true}}));
        let (a, b) = tokio::join!(a, b);
        let wins: Vec<_> = [&a, &b].into_iter().filter(|r| r.get("errors").is_none()).collect();
        let conflicts: Vec<_> = [&a, &b].into_iter().filter(|r| error_code(r).as_deref() == Some("CONFLICT")).collect();
        assert_eq!((wins.len(), conflicts.len()), (1, 1), "{backend:?}: {a:#} {b:#}");
        let winner_content = if a.get("errors").is_none() { models_yaml(3) } else { models_yaml(4) };
        assert_eq!(std::fs::read_to_string(dir.path().join("partner-models.yaml")).unwrap(), winner_content);
        let after = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "partner_models"})).await;
        assert_eq!(after["source"]["revision"], rev + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_content_and_counts_as_a_new_revision() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let original = std::fs::read_to_string(dir.path().join("team-models.yaml")).unwrap();
        let before = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await;
        let rev1 = before["source"]["revision"].as_i64().unwrap();
        let count1 = before["source"]["status"]["entityCount"].as_u64().unwrap();

        server
            .ok(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": models_yaml(7)}, "options": {"refreshAfterApply": true, "confirmRemovals": true}}))
            .await;
        let rolled = server
            .ok(
                "mutation($r: Int!) { rollbackSource(plugin: \"models\", id: \"team_models\", revision: $r, options: {refreshAfterApply: true, confirmRemovals: true}) { revision source { content status { entityCount } revisions { revision action } } } }",
                json!({"r": rev1}),
            )
            .await;
        let r = &rolled["rollbackSource"];
        assert_eq!(r["revision"], rev1 + 2, "{backend:?}: {r:#}");
        assert_eq!(r["source"]["status"]["entityCount"], count1);
        assert_eq!(r["source"]["content"].as_str().unwrap(), original);
        assert_eq!(std::fs::read_to_string(dir.path().join("team-models.yaml")).unwrap(), original);
        let actions: Vec<&str> =
            r["source"]["revisions"].as_array().unwrap().iter().map(|x| x["action"].as_str().unwrap()).collect();
        assert_eq!(actions, vec!["ROLLBACK", "APPLY", "IMPORT"]);

        let missing = server
            .gql(
                "mutation { rollbackSource(plugin: \"models\", id: \"team_models\", revision: 99) { revision } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&missing).as_deref(), Some("NOT_FOUND"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_preserves_status_counts_and_revisions() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        server
            .ok(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": models_yaml(9)}, "options": {"refreshAfterApply": true, "confirmRemovals": true}}))
            .await;
        let before = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await;
        let (dir_path, db) = server.stop();

        let server = TestServer::new(&dir_path).database(&db).start().await;
        let after = server.ok(SOURCE_QUERY, json!({"plugin": "models", "id": "team_models"})).await;
        assert_eq!(after["source"]["revision"], before["source"]["revision"], "{backend:?}");
        assert_eq!(after["source"]["revisions"], before["source"]["revisions"]);
        assert_eq!(after["source"]["status"]["entityCount"], 9);
        assert_eq!(after["source"]["status"]["state"], "AVAILABLE");
        // The status row was read back from the database and refreshed on start.
        assert_eq!(after["source"]["status"]["lastRefreshSummary"], "Loaded 9 entities");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_of_an_unreadable_file_keeps_the_previous_entities() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let before = server.ok(SOURCE_QUERY, json!({"plugin": "mcp", "id": "platform_mcp"})).await;
        let count = before["source"]["status"]["entityCount"].as_u64().unwrap();
        assert!(count > 0);
        std::fs::remove_file(dir.path().join("platform-mcp-servers.yaml")).unwrap();

        let job = server
            .ok("mutation { refreshSource(plugin: \"mcp\", id: \"platform_mcp\") { phase results { status diagnostics { message } } } }", json!({}))
            .await;
        assert_eq!(job["refreshSource"]["phase"], "FAILED");
        assert_eq!(job["refreshSource"]["results"][0]["status"], "FAILURE");

        let after = server.ok(SOURCE_QUERY, json!({"plugin": "mcp", "id": "platform_mcp"})).await;
        let st = &after["source"]["status"];
        assert_eq!(st["state"], "ERROR", "{backend:?}: {st:#}");
        assert_eq!(st["entityCount"], count, "previous entities must be kept");
        assert!(st["lastError"].as_str().unwrap().contains("cannot read catalog file"), "{st:#}");
        let ents =
            server.ok("{ entities(plugin: \"mcp\", sourceId: \"platform_mcp\") { totalCount } }", json!({})).await;
        assert_eq!(ents["entities"]["totalCount"], count);
    }
}
