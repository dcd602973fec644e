//! Cursor paging of the history lists (`Source.revisionsConnection`, `auditLogConnection`,
//! `refreshJobsConnection`) against the real server, on SQLite and PostgreSQL: every item once,
//! in order, cursors that survive new writes, a page cap that is refused out loud, and
//! malformed cursors refused with VALIDATION_FAILED.

use crate::support;

use serde_json::{Value, json};
use support::*;

const APPLY: &str = "mutation($c: String!) { applySource(plugin: \"models\", input: {id: \"team_models\", content: $c}, options: {confirmRemovals: true}) { revision } }";

const REVISIONS: &str = "query($first: Int, $after: String) { source(plugin: \"models\", id: \"team_models\") { revision revisionsConnection(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { revision action } } } } }";

const AUDIT: &str = "query($first: Int, $after: String, $plugin: String, $sourceId: ID) { auditLogConnection(first: $first, after: $after, plugin: $plugin, sourceId: $sourceId) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { action plugin sourceId revision outcome } } } }";

const JOBS: &str = "query($first: Int, $after: String) { refreshJobsConnection(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id phase } } } }";

/// Applies `n` distinct contents to `team_models`; returns the last revision number.
async fn apply_n(server: &Server, n: usize) -> i64 {
    let mut last = 0;
    for i in 1..=n {
        let out = server.ok(APPLY, json!({"c": models_yaml(i)})).await;
        last = out["applySource"]["revision"].as_i64().unwrap();
    }
    last
}

/// Every page of a connection (`path` is the connection's place in `data`), `first` at a time.
async fn walk(server: &Server, query: &str, vars: Value, path: &[&str], first: i64) -> (Vec<Value>, i64) {
    let mut nodes = Vec::new();
    let mut after = Value::Null;
    for _ in 0..100 {
        let mut v = vars.clone();
        v["first"] = json!(first);
        v["after"] = after.clone();
        let data = server.ok(query, v).await;
        let mut conn = &data;
        for p in path {
            conn = &conn[*p];
        }
        let total = conn["totalCount"].as_i64().unwrap();
        let edges = conn["edges"].as_array().unwrap();
        assert!(edges.len() as i64 <= first, "a page is larger than first: {conn:#}");
        nodes.extend(edges.iter().map(|e| e["node"].clone()));
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            return (nodes, total);
        }
        after = conn["pageInfo"]["endCursor"].clone();
        assert!(after.is_string(), "hasNextPage without an endCursor: {conn:#}");
    }
    panic!("more than 100 pages: the cursor does not advance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revision_appears_once_in_order_across_pages() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let last = apply_n(&server, 11).await;
        assert!(last >= 12, "{backend:?}: the import plus 11 applies, got revision {last}");
        let (nodes, total) = walk(&server, REVISIONS, json!({}), &["source", "revisionsConnection"], 5).await;
        let revs: Vec<i64> = nodes.iter().map(|n| n["revision"].as_i64().unwrap()).collect();
        let want: Vec<i64> = (1..=last).rev().collect();
        assert_eq!(revs, want, "{backend:?}: every revision once, newest first");
        assert_eq!(total, last, "{backend:?}: totalCount");
        assert_eq!(nodes.last().unwrap()["action"], "IMPORT");
        assert_eq!(nodes[0]["action"], "APPLY");
        // The contract list still works and agrees with the connection.
        let data = server
            .ok("{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 500) { revision } } }", json!({}))
            .await;
        let listed: Vec<i64> =
            data["source"]["revisions"].as_array().unwrap().iter().map(|r| r["revision"].as_i64().unwrap()).collect();
        assert_eq!(listed, want, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_stays_valid_after_a_new_apply() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        let last = apply_n(&server, 7).await;
        let data = server.ok(REVISIONS, json!({"first": 3})).await;
        let conn = &data["source"]["revisionsConnection"];
        let first: Vec<i64> =
            conn["edges"].as_array().unwrap().iter().map(|e| e["node"]["revision"].as_i64().unwrap()).collect();
        assert_eq!(first, vec![last, last - 1, last - 2], "{backend:?}");
        let cursor = conn["pageInfo"]["endCursor"].clone();
        // A new revision lands between the two pages.
        let out = server.ok(APPLY, json!({"c": models_yaml(20)})).await;
        assert_eq!(out["applySource"]["revision"], last + 1);
        let data = server.ok(REVISIONS, json!({"first": 3, "after": cursor})).await;
        let conn = &data["source"]["revisionsConnection"];
        let next: Vec<i64> =
            conn["edges"].as_array().unwrap().iter().map(|e| e["node"]["revision"].as_i64().unwrap()).collect();
        assert_eq!(next, vec![last - 3, last - 4, last - 5], "{backend:?}: no repeat, no skip");
        assert_eq!(conn["totalCount"], last + 1, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_job_pages_cover_every_row_once() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        apply_n(&server, 4).await;
        for _ in 0..3 {
            server.ok("mutation { refreshSource(plugin: \"models\", id: \"team_models\") { phase } }", json!({})).await;
        }
        // Audit: 4 applies and 3 refreshes of team_models, newest first.
        let filter = json!({"plugin": "models", "sourceId": "team_models"});
        let (nodes, total) = walk(&server, AUDIT, filter, &["auditLogConnection"], 2).await;
        let actions: Vec<&str> = nodes.iter().map(|n| n["action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            [
                "REFRESH_SOURCE",
                "REFRESH_SOURCE",
                "REFRESH_SOURCE",
                "APPLY_SOURCE",
                "APPLY_SOURCE",
                "APPLY_SOURCE",
                "APPLY_SOURCE"
            ],
            "{backend:?}"
        );
        assert!(nodes.iter().all(|n| n["outcome"] == "OK" && n["sourceId"] == "team_models"), "{nodes:#?}");
        assert_eq!(total, 7, "{backend:?}");
        let (_, other) = walk(&server, AUDIT, json!({"plugin": "mcp"}), &["auditLogConnection"], 2).await;
        assert_eq!(other, 0, "{backend:?}: the plugin filter");
        // Jobs: every recorded job once, and as many as the deprecated list shows.
        let (jobs, total) = walk(&server, JOBS, json!({}), &["refreshJobsConnection"], 2).await;
        let mut ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len() as i64, total, "{backend:?}");
        assert!(total >= 3, "{backend:?}: {total}");
        let listed = server.ok("{ refreshJobs(limit: 500) { id } }", json!({})).await;
        let mut want: Vec<&str> =
            listed["refreshJobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
        ids.sort();
        want.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "{backend:?}: a job appeared twice");
        assert_eq!(ids, want, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_cap_first_is_refused_naming_the_cap() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        for (query, vars) in [
            (REVISIONS, json!({"first": 101})),
            (AUDIT, json!({"first": 500})),
            (JOBS, json!({"first": 101})),
            (JOBS, json!({"first": 0})),
        ] {
            let body = server.gql(query, vars.clone()).await;
            assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{backend:?} {vars}: {body:#}");
            let msg = body["errors"][0]["message"].as_str().unwrap();
            assert!(msg.contains("100") && msg.contains("first"), "{backend:?}: the message names the cap: {msg}");
        }
        // The contract list: over its cap is an error naming the cap, not a shorter list.
        let body = server
            .gql(
                "{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 501) { revision } } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("500"), "{body:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cursor_is_validation_failed() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::example(backend, dir.path()).await;
        apply_n(&server, 3).await;
        let audit = server.ok(AUDIT, json!({"first": 1})).await;
        let audit_cursor = audit["auditLogConnection"]["pageInfo"]["endCursor"].clone();
        assert!(audit_cursor.is_string(), "{audit:#}");
        for (query, after) in [
            (REVISIONS, json!("not-a-cursor")),
            (REVISIONS, json!("")),
            (REVISIONS, audit_cursor.clone()),
            (AUDIT, json!("zz")),
            (JOBS, audit_cursor.clone()),
        ] {
            let body = server.gql(query, json!({"first": 2, "after": after})).await;
            assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{backend:?} after={after}: {body:#}");
            assert_eq!(body["errors"][0]["extensions"]["field"], "after", "{body:#}");
        }
    }
}
