//! Trust at the edge, error codes: a client mistake in an argument is VALIDATION_FAILED (or
//! NOT_FOUND) naming the argument and what is allowed, and changes nothing; INTERNAL is only
//! for our faults and never shows server paths.

use crate::support;

use serde_json::{Value, json};
use support::*;

/// What a mistaken request must not change: the catalog's status rows and revisions.
const STATE: &str = "{ sources { plugin id revision status { state entityCount lastRefreshTime } } }";

/// `{"a": {"a": ... 1}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

struct Case {
    name: &'static str,
    query: &'static str,
    variables: Value,
    code: &'static str,
    /// Each must appear in the message (the field, the allowed range).
    says: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let long = "a".repeat(10_000);
    let apply = "mutation($p: String!, $i: SourceInput!, $o: ApplyOptions) { applySource(plugin: $p, input: $i, options: $o) { revision } }";
    let validate = "query($p: String!, $i: SourceInput!) { validateSource(plugin: $p, input: $i) { valid } }";
    let content = models_yaml(2);
    vec![
        Case {
            name: "negative expectedRevision",
            query: apply,
            variables: json!({"p": "models", "i": {"id": "team_models", "content": content}, "o": {"expectedRevision": -5}}),
            code: "VALIDATION_FAILED",
            says: &["options.expectedRevision", "revisions start at 1", "-5"],
        },
        Case {
            name: "expectedRevision 0",
            query: apply,
            variables: json!({"p": "models", "i": {"id": "team_models", "content": content}, "o": {"expectedRevision": 0}}),
            code: "VALIDATION_FAILED",
            says: &["options.expectedRevision", "revisions start at 1"],
        },
        Case {
            name: "rollbackSource(revision: 0)",
            query: "mutation { rollbackSource(plugin: \"models\", id: \"team_models\", revision: 0) { revision } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`revision`", "revisions start at 1"],
        },
        Case {
            name: "rollbackSource with a negative expectedRevision",
            query: "mutation { rollbackSource(plugin: \"models\", id: \"team_models\", revision: 1, options: {expectedRevision: -1}) { revision } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["options.expectedRevision", "revisions start at 1"],
        },
        Case {
            name: "revisions(limit: 0) (review finding: was silently clamped)",
            query: "{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 0) { revision } } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`limit`", "between 1 and 500"],
        },
        Case {
            name: "revisions(limit: 100000)",
            query: "{ source(plugin: \"models\", id: \"team_models\") { revisions(limit: 100000) { revision } } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`limit`", "between 1 and 500"],
        },
        Case {
            name: "auditLog(limit: 0)",
            query: "{ auditLog(limit: 0) { actor } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`limit`", "between 1 and 1000"],
        },
        Case {
            name: "auditLog(limit: 100000)",
            query: "{ auditLog(limit: 100000) { actor } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`limit`", "between 1 and 1000", "100000"],
        },
        Case {
            name: "refreshJobs(limit: 501)",
            query: "{ refreshJobs(limit: 501) { id } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`limit`", "between 1 and 500"],
        },
        Case {
            name: "a foreign cursor",
            query: "{ entities(plugin: \"models\", after: \"not-a-cursor\") { totalCount } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`after`", "endCursor"],
        },
        Case {
            name: "10,000-character input.id on applySource",
            query: apply,
            variables: json!({"p": "models", "i": {"id": long, "content": content}}),
            code: "VALIDATION_FAILED",
            says: &["input.id", "at most 253"],
        },
        Case {
            name: "10,000-character input.id on validateSource",
            query: validate,
            variables: json!({"p": "models", "i": {"id": long}}),
            code: "VALIDATION_FAILED",
            says: &["input.id", "at most 253"],
        },
        Case {
            name: "10,000-character id on source",
            query: "query($id: ID!) { source(plugin: \"models\", id: $id) { id } }",
            variables: json!({"id": long}),
            code: "VALIDATION_FAILED",
            says: &["`id`", "at most 253"],
        },
        Case {
            name: "10,000-character sourceId on entities",
            query: "query($id: ID!) { entities(plugin: \"models\", sourceId: $id) { totalCount } }",
            variables: json!({"id": long}),
            code: "VALIDATION_FAILED",
            says: &["`sourceId`", "at most 253"],
        },
        Case {
            name: "10,000-character id on refreshSource",
            query: "mutation($id: ID!) { refreshSource(plugin: \"models\", id: $id) { phase } }",
            variables: json!({"id": long}),
            code: "VALIDATION_FAILED",
            says: &["`id`", "at most 253"],
        },
        Case {
            name: "a path-like id on rollbackSource",
            query: "mutation { rollbackSource(plugin: \"models\", id: \"../sources\", revision: 1) { revision } }",
            variables: json!({}),
            code: "VALIDATION_FAILED",
            says: &["`id`", "^[a-z0-9][a-z0-9_-]*$"],
        },
        Case {
            name: "10,000-character refresh job id",
            query: "query($id: ID!) { refreshJob(id: $id) { id } }",
            variables: json!({"id": long}),
            code: "VALIDATION_FAILED",
            says: &["`id`", "at most 128"],
        },
        Case {
            name: "10,000-character search",
            query: "query($s: String) { entities(plugin: \"models\", search: $s) { totalCount } }",
            variables: json!({"s": long}),
            code: "VALIDATION_FAILED",
            says: &["`search`", "at most 256"],
        },
        Case {
            name: "unknown plugin on source",
            query: "{ source(plugin: \"agents\", id: \"team_models\") { id } }",
            variables: json!({}),
            code: "NOT_FOUND",
            says: &["plugin `agents`", "known plugins: models, mcp"],
        },
        Case {
            name: "unknown plugin on applySource",
            query: apply,
            variables: json!({"p": "agents", "i": {"id": "team_models", "content": content}}),
            code: "NOT_FOUND",
            says: &["plugin `agents`", "known plugins: models, mcp"],
        },
        Case {
            name: "unknown plugin on refreshPlugin",
            query: "mutation { refreshPlugin(plugin: \"agents\") { phase } }",
            variables: json!({}),
            code: "NOT_FOUND",
            says: &["plugin `agents`", "known plugins: models, mcp"],
        },
        Case {
            name: "10,000-character plugin",
            query: "query($p: String) { sources(plugin: $p) { id } }",
            variables: json!({"p": long}),
            code: "VALIDATION_FAILED",
            says: &["`plugin`", "known plugins: models, mcp"],
        },
        Case {
            name: "deep properties on applySource",
            query: apply,
            variables: json!({"p": "models", "i": {"id": "team_models", "properties": nested(40)}}),
            code: "VALIDATION_FAILED",
            says: &["input.properties", "at most 32 levels"],
        },
        Case {
            name: "deep properties on validateSource",
            query: validate,
            variables: json!({"p": "models", "i": {"id": "team_models", "properties": nested(40)}}),
            code: "VALIDATION_FAILED",
            says: &["input.properties", "at most 32 levels"],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_mistakes_get_honest_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path()).database(&db).flags(&["--rate-limit", "0"]).start().await;
    let dir_text = dir.path().to_string_lossy().to_string();
    let files = tree_bytes(dir.path());
    let state = server.ok(STATE, json!({})).await;
    let mut failures = Vec::new();
    for case in cases() {
        let body = server.gql(case.query, case.variables.clone()).await;
        let err = &body["errors"][0];
        let message = err["message"].as_str().unwrap_or_default();
        let code = err["extensions"]["code"].as_str().unwrap_or_default();
        let mut wrong = Vec::new();
        if code != case.code {
            wrong.push(format!("code {code}, want {}", case.code));
        }
        for s in case.says {
            if !message.contains(s) {
                wrong.push(format!("message does not say {s:?}"));
            }
        }
        if message.len() > 400 {
            wrong.push(format!("message is {} bytes long (an argument was echoed whole)", message.len()));
        }
        if message.contains(&dir_text) {
            wrong.push("message shows a server path".to_string());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n  {}",
                case.name,
                wrong.join("; "),
                body.to_string().chars().take(600).collect::<String>()
            ));
        }
        assert!(files == tree_bytes(dir.path()), "{}: files changed", case.name);
        assert_eq!(server.ok(STATE, json!({})).await, state, "{}: revisions or status changed", case.name);
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases().len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_are_generic_and_logged_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    // No watcher: the broken file stays unnoticed until the apply reads it.
    let server = TestServer::new(dir.path()).database(&db).flags(&["--watch-interval", "0"]).start().await;
    // Something only the server's side can fix: the sources file on disk became unreadable.
    std::fs::write(dir.path().join("sources.yaml"), "model_catalogs: [unclosed\n").unwrap();
    let files = tree_bytes(dir.path());
    let body =
        server.gql(APPLY, json!({"plugin": "models", "input": {"id": "team_models", "content": models_yaml(2)}})).await;
    assert_eq!(error_code(&body).as_deref(), Some("INTERNAL"), "{body:#}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert_eq!(message, "internal error; the server log has the details");
    assert!(!message.contains(&*dir.path().to_string_lossy()));
    assert!(files == tree_bytes(dir.path()), "files changed");
    // The details are in the log, once.
    eventually("the details are logged once", std::time::Duration::from_secs(10), async || {
        let logged = server.log_text().lines().filter(|l| l.contains("the sources file on disk is invalid")).count();
        if logged == 1 {
            return Ok(());
        }
        assert!(logged == 0, "logged {logged} times:\n{}", server.log_text());
        Err(format!("logged {logged} times:\n{}", server.log_text()))
    })
    .await;
}
