//! `--store kubernetes`: the real binary against a fake Kubernetes API server over real HTTP
//! (tests/it/support/fake_kube.rs), reached through a kubeconfig as in a cluster. On PostgreSQL
//! when it is configured, else SQLite.

use crate::support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::fake_kube::FakeKube;
use support::{APPLY, Backend, Server, TestServer, database_url, error_code, eventually, models_yaml};

const NS: &str = "catalogs";
const MODELS_CM: &str = "catalog-bff-models";
const MCP_CM: &str = "catalog-bff-mcp";

fn backend() -> Backend {
    *support::backends().last().unwrap()
}

/// A seed sources file of the project's own (Kubeflow dialect) with one yaml source.
fn write_seed(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("team.yaml"), models_yaml(2)).unwrap();
    let path = dir.join("sources.yaml");
    std::fs::write(
        &path,
        "# seed\nmodel_catalogs:\n  - name: Team\n    id: team\n    type: yaml\n    properties:\n      yamlCatalogPath: team.yaml\nmcp_catalogs: []\n",
    )
    .unwrap();
    path
}

struct Cluster {
    kube: FakeKube,
    server: Server,
    /// The server's data directory: nothing but the SQLite database may appear in it.
    data: std::path::PathBuf,
    /// How the server was started (for a restart).
    launch: (String, Vec<String>, std::path::PathBuf),
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Stops the server (SIGTERM) and starts it again with the same flags.
    async fn restart(&mut self) {
        let (db, args, kubeconfig) = self.launch.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let old = std::mem::replace(
            &mut self.server,
            TestServer::new(&self.data)
                .database(&db)
                .flags(&args)
                .envs(&[("KUBECONFIG", kubeconfig.to_str().unwrap())])
                .start()
                .await,
        );
        drop(old);
    }
}

async fn start_cluster(extra: &[&str]) -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let kubeconfig = kube.kubeconfig(tmp.path(), NS);
    let seed = write_seed(&tmp.path().join("seed"));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db_dir = tmp.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    let db = database_url(backend(), &db_dir).await;
    let seed_arg = seed.display().to_string();
    let mut args =
        vec!["--store", "kubernetes", "--namespace", NS, "--seed", seed_arg.as_str(), "--watch-interval", "30"];
    args.extend_from_slice(extra);
    let server = TestServer::new(&data)
        .database(&db)
        .flags(&args)
        .envs(&[("KUBECONFIG", kubeconfig.to_str().unwrap())])
        .start()
        .await;
    let launch = (db.clone(), args.iter().map(|a| a.to_string()).collect(), kubeconfig.clone());
    Cluster { kube, server, data, launch, _tmp: tmp }
}

fn data_of(kube: &FakeKube, name: &str) -> BTreeMap<String, String> {
    kube.configmap_data(NS, name).unwrap_or_else(|| panic!("ConfigMap {name} missing"))
}

fn rv_of(kube: &FakeKube, name: &str) -> String {
    kube.configmap(NS, name).unwrap()["metadata"]["resourceVersion"].as_str().unwrap().to_string()
}

async fn source(server: &Server, id: &str) -> Value {
    server
        .ok(
            "query($id: ID!) { source(plugin: \"models\", id: $id) { id revision content status { state entityCount } revisions(limit: 10) { revision action actor } } }",
            json!({"id": id}),
        )
        .await["source"]
        .clone()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let what = format!("waiting for {what}");
    eventually(&what, Duration::from_secs(20), async || if check().await { Ok(()) } else { Err(false) }).await
}

fn apply_vars(id: &str, content: &str) -> Value {
    json!({"plugin": "models", "input": {"id": id, "name": id, "type": "yaml", "content": content},
           "options": {"refreshAfterApply": true}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_then_save_refresh_see_with_no_file_written() {
    let c = start_cluster(&[]).await;
    // Seeded from the file: the models ConfigMap holds the sources list and the catalog under
    // the server-assigned key; the mcp one exists, empty.
    let models = data_of(&c.kube, MODELS_CM);
    assert!(models["sources.yaml"].contains("id: team"), "{models:?}");
    assert!(models["sources.yaml"].contains("yamlCatalogPath: team-models.yaml"), "{models:?}");
    assert_eq!(models["team-models.yaml"], models_yaml(2));
    assert!(data_of(&c.kube, MCP_CM)["sources.yaml"].contains("mcp_catalogs"));
    let team = source(&c.server, "team").await;
    assert_eq!(team["status"]["entityCount"], 2, "{team}");

    let before: Vec<_> = std::fs::read_dir(&c.data).unwrap().map(|e| e.unwrap().file_name()).collect();
    let body = c.server.gql(APPLY, apply_vars("fresh", &models_yaml(3))).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["applySource"]["source"]["status"]["entityCount"], 3, "{body}");
    assert_eq!(body["data"]["applySource"]["revision"], 1);
    // Written through the API, into the ConfigMap; the data directory gained nothing.
    let models = data_of(&c.kube, MODELS_CM);
    assert_eq!(models["fresh-models.yaml"], models_yaml(3));
    assert!(models["sources.yaml"].contains("id: fresh"));
    assert!(models["sources.yaml"].contains("id: team"), "the other source is kept: {}", models["sources.yaml"]);
    let after: Vec<_> = std::fs::read_dir(&c.data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "apply in kubernetes mode wrote a file");
    assert!(c.kube.count_requests("PATCH /api/v1/namespaces/catalogs/configmaps/catalog-bff-models") >= 1);
    // Content is read back from the ConfigMap.
    assert_eq!(source(&c.server, "fresh").await["content"], models_yaml(3));
    // The readiness check names the store.
    let ready: Value =
        c.server.client.get(format!("{}/readyz", c.server.base)).send().await.unwrap().json().await.unwrap();
    assert!(ready.to_string().contains("ConfigMaps catalog-bff-"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_edit_becomes_an_external_revision_and_a_refresh() {
    let c = start_cluster(&[]).await;
    let mut data = data_of(&c.kube, MODELS_CM);
    data.insert("team-models.yaml".into(), models_yaml(5));
    c.kube.put_configmap(NS, MODELS_CM, data);
    // The watch event wakes the server long before its 30 s poll.
    wait_for("the edited catalog to load", async || source(&c.server, "team").await["status"]["entityCount"] == 5)
        .await;
    let team = source(&c.server, "team").await;
    let revisions = team["revisions"].as_array().unwrap();
    assert_eq!(revisions[0]["actor"], "external", "{team}");
    assert_eq!(revisions[0]["revision"], 2, "{team}");
    assert_eq!(team["content"], models_yaml(5));

    // An edit that breaks the sources list keeps the last good configuration and says why.
    let mut data = data_of(&c.kube, MODELS_CM);
    data.insert("sources.yaml".into(), "model_catalogs:\n  - id: [broken\n".into());
    c.kube.put_configmap(NS, MODELS_CM, data);
    // Degraded, not failed: the last good configuration is served, so the probe stays up.
    wait_for("readiness to report the invalid ConfigMap", async || {
        let r = c.server.client.get(format!("{}/readyz", c.server.base)).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        status == 200 && body["degraded"][0] == "config"
    })
    .await;
    assert_eq!(source(&c.server, "team").await["status"]["entityCount"], 5);

    // A deleted ConfigMap (a GitOps prune) is not "every source removed": the last good
    // configuration stays in use and readiness says why.
    c.kube.delete_configmap(NS, MODELS_CM);
    wait_for("readiness to name the deleted ConfigMap", async || {
        let r = c.server.client.get(format!("{}/readyz", c.server.base)).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        body.to_string().contains("does not exist")
    })
    .await;
    assert_eq!(source(&c.server, "team").await["status"]["entityCount"], 5);
}

/// Faults stay per plugin: a broken MCP ConfigMap (an outside edit, or at start) leaves model
/// applies, refreshes and the change feed working; MCP keeps its last good configuration and
/// says why (configErrors, a degraded /readyz), and loads again once fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_mcp_configmap_leaves_models_working() {
    let mut c = start_cluster(&[]).await;
    let mut mcp = data_of(&c.kube, MCP_CM);
    let good_mcp = mcp.clone();
    mcp.insert("sources.yaml".into(), "mcp_catalogs:\n  - id: [broken\n".into());
    c.kube.put_configmap(NS, MCP_CM, mcp);
    wait_for("configErrors to name the MCP ConfigMap", async || {
        let v = c.server.ok("{ configErrors { message file } }", json!({})).await;
        v["configErrors"].to_string().contains(MCP_CM)
    })
    .await;
    let r = c.server.client.get(format!("{}/readyz", c.server.base)).send().await.unwrap();
    assert_eq!(r.status(), 200, "degraded, not failed");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["degraded"][0], "config", "{body}");

    // Model applies still work, through the API and from outside.
    c.server.ok(APPLY, apply_vars("fresh", &models_yaml(3))).await;
    assert_eq!(source(&c.server, "fresh").await["status"]["entityCount"], 3);
    let mut models = data_of(&c.kube, MODELS_CM);
    models.insert("team-models.yaml".into(), models_yaml(6));
    c.kube.put_configmap(NS, MODELS_CM, models);
    wait_for("the outside model edit to load", async || source(&c.server, "team").await["status"]["entityCount"] == 6)
        .await;
    // An MCP apply says what is wrong and changes nothing.
    let body = c
        .server
        .gql(
            APPLY,
            json!({"plugin": "mcp", "input": {"id": "tools", "name": "tools", "type": "yaml", "content": "mcp_servers: []\n"}}),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body:#}");
    assert!(body.to_string().contains(MCP_CM) && body.to_string().contains("fix or restore"), "{body:#}");

    // A restart with the MCP ConfigMap still broken starts (no crash loop), models served.
    c.restart().await;
    assert_eq!(source(&c.server, "fresh").await["status"]["entityCount"], 3);
    let v = c.server.ok("{ configErrors { message file } }", json!({})).await;
    assert!(v["configErrors"].to_string().contains(MCP_CM), "{v}");

    // Fixed: the errors clear.
    c.kube.put_configmap(NS, MCP_CM, good_mcp);
    wait_for("configErrors to clear", async || {
        c.server.ok("{ configErrors { message } }", json!({})).await["configErrors"] == json!([])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_write_elsewhere_is_retried_and_one_to_the_same_source_conflicts() {
    let c = start_cluster(&[]).await;
    // Someone adds an unrelated key between our read and our write: 409, re-read, retry; both
    // changes survive.
    c.kube.race_next_update(NS, MODELS_CM, |d| {
        d.insert("notes.txt".into(), "kept".into());
    });
    let body = c.server.gql(APPLY, apply_vars("one", &models_yaml(1))).await;
    assert!(body["errors"].is_null(), "{body}");
    let data = data_of(&c.kube, MODELS_CM);
    assert_eq!(data["notes.txt"], "kept");
    assert_eq!(data["one-models.yaml"], models_yaml(1));

    // Someone rewrites the very catalog we are applying: CONFLICT, theirs stays, and their
    // write is recorded as a revision the caller can see.
    c.kube.race_next_update(NS, MODELS_CM, |d| {
        d.insert("team-models.yaml".into(), models_yaml(4));
    });
    let vars = json!({"plugin": "models", "input": {"id": "team", "content": models_yaml(7)},
                      "options": {"expectedRevision": 1}});
    let body = c.server.gql(APPLY, vars).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    assert_eq!(data_of(&c.kube, MODELS_CM)["team-models.yaml"], models_yaml(4));
    let team = source(&c.server, "team").await;
    assert_eq!(team["revisions"][0]["actor"], "external", "{team}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_keeps_labels_annotations_and_keys_it_does_not_own() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let c = start_cluster(&[]).await;
    // A GitOps tool labels and annotates the ConfigMap and keeps a binary key in it.
    let kubeconfig = kube::config::Kubeconfig::read_from(c.kube.kubeconfig(c._tmp.path(), NS)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    catalog_core::install_crypto_provider();
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), NS);
    let patch = json!({"metadata": {"labels": {"argocd.argoproj.io/instance": "catalogs"},
                                    "annotations": {"owner": "platform-team"}},
                       "binaryData": {"logo.png": "iVBORw0K"}});
    api.patch(MODELS_CM, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();

    let body = c.server.gql(APPLY, apply_vars("kept", &models_yaml(1))).await;
    assert!(body["errors"].is_null(), "{body}");
    let cm = c.kube.configmap(NS, MODELS_CM).unwrap();
    assert_eq!(cm["metadata"]["labels"]["argocd.argoproj.io/instance"], "catalogs", "{cm}");
    assert_eq!(cm["metadata"]["annotations"]["owner"], "platform-team", "{cm}");
    assert_eq!(cm["binaryData"]["logo.png"], "iVBORw0K", "{cm}");
    assert_eq!(cm["data"]["kept-models.yaml"], models_yaml(1));
    assert_eq!(cm["data"]["team-models.yaml"], models_yaml(2));
}

/// A model catalog of about `bytes` bytes.
fn big_catalog(bytes: usize) -> String {
    let mut s = String::from("source: Big\nmodels:\n");
    let mut i = 0;
    while s.len() < bytes {
        s.push_str(&format!("  - name: big/m{i}\n    description: {}\n", "x".repeat(200)));
        i += 1;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_past_one_mib_is_refused_up_front_and_nothing_changes() {
    let c = start_cluster(&[]).await;
    let body = c.server.gql(APPLY, apply_vars("half", &big_catalog(600 * 1024))).await;
    assert!(body["errors"].is_null(), "{body}");
    let rv = rv_of(&c.kube, MODELS_CM);
    let writes = c.kube.count_requests("/api/v1/namespaces/catalogs/configmaps/catalog-bff-models")
        - c.kube.count_requests("GET /api/v1/namespaces/catalogs/configmaps/catalog-bff-models");

    for dry_run in [true, false] {
        let mut vars = apply_vars("more", &big_catalog(600 * 1024));
        vars["options"]["dryRun"] = json!(dry_run);
        let body = c.server.gql(APPLY, vars).await;
        assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body}");
        let text = body.to_string();
        assert!(
            text.contains("catalog-bff-models") && text.contains("1048576"),
            "names the ConfigMap and limit: {text}"
        );
        assert!(text.contains("url"), "says what to do: {text}");
    }
    // Nothing was sent, nothing changed.
    assert_eq!(rv_of(&c.kube, MODELS_CM), rv);
    let writes_now = c.kube.count_requests("/api/v1/namespaces/catalogs/configmaps/catalog-bff-models")
        - c.kube.count_requests("GET /api/v1/namespaces/catalogs/configmaps/catalog-bff-models");
    assert_eq!(writes_now, writes, "a refused apply sent a write");
    let body = c.server.gql("{ source(plugin: \"models\", id: \"more\") { id } }", json!({})).await;
    assert!(body["data"]["source"].is_null(), "{body}");

    // binaryData, labels and annotations count too: 600 KiB of data plus 150 KiB, next to
    // 150 KiB of binaryData, is what the API server counts (and would accept); a 200 KiB
    // annotation (kubectl apply's last-applied-configuration is one) takes it past 1 MiB.
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let kubeconfig = kube::config::Kubeconfig::read_from(c.kube.kubeconfig(c._tmp.path(), NS)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    catalog_core::install_crypto_provider();
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), NS);
    let patch = json!({"metadata": {"annotations": {"notes": "n".repeat(100 * 1024)}},
                       "binaryData": {"blob.bin": support::fake_kube::b64_encode(&vec![7u8; 300 * 1024])}});
    api.patch(MODELS_CM, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rv = rv_of(&c.kube, MODELS_CM);
    // The store reads the ConfigMap under the apply's lock, so the patch is seen at once.
    let body = c.server.gql(APPLY, apply_vars("small", &big_catalog(150 * 1024))).await;
    assert_eq!(error_code(&body).as_deref(), Some("VALIDATION_FAILED"), "{body}");
    assert!(body.to_string().contains("binaryData, labels and annotations"), "{body}");
    assert_eq!(rv_of(&c.kube, MODELS_CM), rv, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_secret_ref_reads_the_kubernetes_secret_through_the_api() {
    let c = start_cluster(&["--url-allow", "127.0.0.1", "--secret-namespaces", "catalogs,shared"]).await;
    let host = support::CatalogHost::start(models_yaml(2)).await;
    const LABEL: &str = "catalog-bff.io/source-credential";
    c.kube.set_secret(NS, "hub-token", BTreeMap::from([("token".to_string(), b"s3cret\n".to_vec())]));
    c.kube.label_secret(NS, "hub-token", LABEL, "true");
    c.kube.set_secret("shared", "other", BTreeMap::from([("token".to_string(), b"t2".to_vec())]));
    c.kube.label_secret("shared", "other", LABEL, "true");
    c.kube.set_secret("private", "other", BTreeMap::from([("token".to_string(), b"no".to_vec())]));
    c.kube.label_secret("private", "other", LABEL, "true");
    // The server's own Secret (say, the database password) is not labelled for sources.
    c.kube.set_secret(
        NS,
        "catalog-bff-db",
        BTreeMap::from([("DATABASE_URL".to_string(), b"postgres://x:pw@db/x".to_vec())]),
    );
    let url_source = |id: &str, secret: Value| {
        json!({"plugin": "models", "input": {"id": id, "name": id, "type": "url",
               "properties": {"url": host.url, "authSecretRef": secret}},
               "options": {"refreshAfterApply": true}})
    };
    let body = c.server.gql(APPLY, url_source("hub", json!({"name": "hub-token", "key": "token"}))).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(body["data"]["applySource"]["source"]["status"]["entityCount"], 2, "{body}");
    assert_eq!(host.state.lock().unwrap().last_auth.as_deref(), Some("Bearer s3cret"));
    assert!(c.kube.count_requests("GET /api/v1/namespaces/catalogs/secrets/hub-token") >= 1);

    let body = c
        .server
        .gql(APPLY, url_source("shared", json!({"name": "other", "key": "token", "namespace": "shared"})))
        .await;
    assert_eq!(body["data"]["applySource"]["source"]["status"]["state"], "AVAILABLE", "{body}");
    assert_eq!(host.state.lock().unwrap().last_auth.as_deref(), Some("Bearer t2"));

    // A namespace outside --secret-namespaces is never asked for.
    let body = c
        .server
        .gql(APPLY, url_source("private", json!({"name": "other", "key": "token", "namespace": "private"})))
        .await;
    let source = &body["data"]["applySource"]["source"];
    assert_eq!(source["status"]["state"], "ERROR", "{body}");
    assert_eq!(c.kube.count_requests("/namespaces/private/secrets"), 0);
    let view = support::source_states(&c.server).await;
    assert_eq!(view["models/private"].0, "ERROR");

    // An operator cannot send a Secret that is not labelled for sources to a URL of theirs.
    host.state.lock().unwrap().last_auth = None;
    let body = c.server.gql(APPLY, url_source("steal", json!({"name": "catalog-bff-db", "key": "DATABASE_URL"}))).await;
    assert_eq!(body["data"]["applySource"]["source"]["status"]["state"], "ERROR", "{body}");
    assert_eq!(host.state.lock().unwrap().last_auth, None, "the unlabelled secret was sent");
    let err = c.server.ok(support::LIST, json!({})).await.to_string();
    assert!(err.contains(LABEL), "the error says how to opt in: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_copies_a_sources_file_into_the_configmaps_and_refuses_what_cannot_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let kubeconfig = kube.kubeconfig(tmp.path(), NS);
    let seed = write_seed(&tmp.path().join("src"));
    let import = |extra: &[&str]| {
        std::process::Command::new(support::BIN)
            .arg("import")
            .arg("--sources")
            .arg(&seed)
            .args(["--namespace", NS])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap()
    };
    let out = import(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(data_of(&kube, MODELS_CM)["team-models.yaml"], models_yaml(2));
    // A second import does not overwrite without being asked to.
    let out = import(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overwrite"));
    // A catalog too large for a ConfigMap: refused, naming the limit, nothing written.
    std::fs::write(tmp.path().join("src/team.yaml"), big_catalog(1100 * 1024)).unwrap();
    let rv = rv_of(&kube, MODELS_CM);
    let out = import(&["--overwrite"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1048576") && err.contains(MODELS_CM), "{err}");
    assert_eq!(rv_of(&kube, MODELS_CM), rv);
}

/// Replicas of `--store kubernetes` (one per name) on one PostgreSQL and `kube`, seeded from
/// `seed`, each with its own data directory under `tmp`.
async fn kube_replicas(kube: &FakeKube, tmp: &Path, seed: &Path, names: &[&str], extra: &[&str]) -> Vec<Server> {
    let kubeconfig = kube.kubeconfig(tmp, NS);
    let db = database_url(Backend::Postgres, tmp).await;
    let seed_arg = seed.display().to_string();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap())];
    let mut replicas = Vec::new();
    for name in names {
        let data = tmp.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut args = vec![
            "--store",
            "kubernetes",
            "--namespace",
            NS,
            "--seed",
            &seed_arg,
            "--replica-id",
            name,
            "--watch-interval",
            "30",
        ];
        args.extend_from_slice(extra);
        replicas.push(TestServer::new(&data).database(&db).flags(&args).envs(&env).start().await);
    }
    replicas
}

/// Two replicas of `--store kubernetes` on one PostgreSQL and one API server: an apply on A is
/// read on B with A's consistency token, and a `kubectl edit` reaches both, recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_configmaps_and_a_kubectl_edit_reaches_both() {
    if support::skip_without_postgres("two_replicas_share_the_configmaps_and_a_kubectl_edit_reaches_both") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let seed = write_seed(&tmp.path().join("seed"));
    let replicas = kube_replicas(&kube, tmp.path(), &seed, &["a", "b"], &[]).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let resp = a
        .client
        .post(format!("{}/graphql", a.base))
        .json(&json!({"query": APPLY, "variables": apply_vars("shared", &models_yaml(4))}))
        .send()
        .await
        .unwrap();
    let token = resp.headers()["x-catalog-generation"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");
    let read = b
        .client
        .post(format!("{}/graphql", b.base))
        .header("x-catalog-min-generation", &token)
        .json(&json!({"query": "{ source(plugin: \"models\", id: \"shared\") { revision content status { entityCount } } }"}))
        .send()
        .await
        .unwrap();
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["data"]["source"]["revision"], 1, "{read}");
    assert_eq!(read["data"]["source"]["content"], models_yaml(4), "{read}");
    assert_eq!(read["data"]["source"]["status"]["entityCount"], 4, "{read}");

    // Someone edits the ConfigMap: both replicas load it, and it is one external revision.
    let mut data = data_of(&kube, MODELS_CM);
    data.insert("team-models.yaml".into(), models_yaml(6));
    kube.put_configmap(NS, MODELS_CM, data);
    for server in [a, b] {
        wait_for("the edit on every replica", async || source(server, "team").await["status"]["entityCount"] == 6)
            .await;
    }
    let team = source(b, "team").await;
    let externals = team["revisions"].as_array().unwrap().iter().filter(|r| r["actor"] == "external").count();
    assert_eq!(externals, 1, "{team}");
}

/// `n` models named `{prefix}/m{i}`.
fn named_models(prefix: &str, n: usize) -> String {
    let mut s = String::from("source: Test\nmodels:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: {prefix}/m{i}\n    provider: Tester\n    license: apache-2.0\n"));
    }
    s
}

const TEAM: &str = "{ source(plugin: \"models\", id: \"team\") { revision content status { state entityCount lastRefreshSummary } } entities(plugin: \"models\", sourceId: \"team\", first: 500) { nodes { name } } }";

/// What a replica serves for `team`: (revision, state, entity count, summary, sorted names).
async fn team_view(server: &Server) -> (Value, Value, Value, Value, Vec<String>) {
    let d = server.ok(TEAM, json!({})).await;
    let mut names: Vec<String> =
        d["entities"]["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    let s = &d["source"];
    (
        s["revision"].clone(),
        s["status"]["state"].clone(),
        s["status"]["entityCount"].clone(),
        s["status"]["lastRefreshSummary"].clone(),
        names,
    )
}

/// Waits until every replica serves the same `team` view (at most `within`), and returns it.
async fn agreed(replicas: &[Server], within: Duration) -> (Value, Value, Value, Value, Vec<String>) {
    eventually("replicas agree", within, async || {
        let mut views = Vec::new();
        for r in replicas {
            views.push(team_view(r).await);
        }
        if views.windows(2).all(|w| w[0] == w[1]) {
            return Ok(views.swap_remove(0));
        }
        Err(views)
    })
    .await
}

/// Issue 27's scenario, deterministic: three replicas, the kubernetes store, one PostgreSQL.
/// Sequential applies, then a race of 20 applies with one expectedRevision over two replicas
/// (each replacing every entity name, without a refresh), then an outside edit of the ConfigMap
/// replacing every name again. Each change is decided once (by the replica that runs its
/// refresh) and every replica ends in that state within a second: the race winner recorded
/// and not loaded anywhere; the outside edit refused by the removal guard everywhere (the last
/// good entities kept, the status says so), and once confirmed, loaded everywhere. (Before:
/// after the outside edit the replicas disagreed, as in the 30, 30 and 23 entities.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_decide_each_change_once_and_agree() {
    if support::skip_without_postgres("three_replicas_decide_each_change_once_and_agree") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let seed = write_seed(&tmp.path().join("seed"));
    std::fs::write(tmp.path().join("seed/team.yaml"), named_models("seed", 4)).unwrap();
    let replicas = kube_replicas(&kube, tmp.path(), &seed, &["a", "b", "c"], &["--rate-limit", "0"]).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    let apply = |n: usize, prefix: &str, options: Value| json!({"plugin": "models", "input": {"id": "team", "content": named_models(prefix, n)}, "options": options});

    // 20 sequential applies on A: 4 → 23 entities.
    for n in 4..24 {
        a.ok(APPLY, apply(n, "seed", json!({"refreshAfterApply": true}))).await;
    }
    let view = agreed(&replicas, Duration::from_secs(1)).await;
    assert_eq!(view.2, 23, "{view:?}");
    let revision = view.0.as_i64().unwrap();

    // 20 concurrent applies with one expectedRevision over A and B, each replacing every name.
    let race: Vec<_> = (0..20)
        .map(|k| {
            let server = if k % 2 == 0 { a } else { b };
            let vars = apply(30, &format!("race{k}"), json!({"expectedRevision": revision, "confirmRemovals": true}));
            async move { (k, server.gql(APPLY, vars).await) }
        })
        .collect();
    let mut winners = Vec::new();
    for (k, body) in futures_util::future::join_all(race).await {
        match error_code(&body).as_deref() {
            None => winners.push(k),
            Some("CONFLICT") => {}
            other => panic!("race apply {k}: {other:?} {body:#}"),
        }
    }
    assert_eq!(winners.len(), 1, "one wins: {winners:?}");
    // Applied without a refresh: recorded everywhere, loaded nowhere yet, the same on every
    // replica (before, some replicas loaded it on their own and the others never did).
    let view = agreed(&replicas, Duration::from_secs(1)).await;
    assert_eq!((view.0.as_i64(), view.2.as_i64()), (Some(revision + 1), Some(23)), "{view:?}");
    let expected = view.4.clone();
    assert!(expected.iter().all(|n| n.starts_with("seed/")), "{view:?}");

    // An outside edit (as `kubectl edit` would) replacing every name: the removal guard refuses
    // it on the replica that runs its refresh, and every replica follows that decision.
    let mut data = data_of(&kube, MODELS_CM);
    data.insert("team-models.yaml".into(), named_models("outside", 41));
    kube.put_configmap(NS, MODELS_CM, data);
    eventually("the outside edit is recorded", Duration::from_secs(20), async || {
        let v = team_view(a).await;
        if v.0.as_i64() == Some(revision + 1) { Err(v) } else { Ok(()) }
    })
    .await;
    // Give the refresh of the outside edit time to be decided, then all must agree within 1 s.
    eventually("the outside edit's refresh finishes", Duration::from_secs(20), async || {
        let v = team_view(a).await;
        if v.3.as_str().is_some_and(|s| s.contains("confirmRemovals") || s.contains("Loaded"))
            && v.0 != json!(revision + 1)
        {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await;
    let view = agreed(&replicas, Duration::from_secs(1)).await;
    assert_eq!(view.4, expected, "the refused edit keeps the last good entities everywhere: {view:?}");
    assert_eq!(view.0.as_i64(), Some(revision + 2), "{view:?}");
    assert_eq!(view.1, "ERROR", "{view:?}");
    assert!(view.3.as_str().unwrap().contains("confirmRemovals"), "the status says how to confirm: {view:?}");
    for r in &replicas {
        let content = r.ok(TEAM, json!({})).await["source"]["content"].clone();
        assert_eq!(content, named_models("outside", 41), "every replica shows the recorded content");
    }

    // Confirmed on C: loaded everywhere.
    let c = &replicas[2];
    let out = c
        .ok(
            "mutation { refreshSource(plugin: \"models\", id: \"team\", wait: true, confirmRemovals: true) { phase } }",
            json!({}),
        )
        .await;
    assert_eq!(out["refreshSource"]["phase"], "SUCCEEDED", "{out}");
    let view = agreed(&replicas, Duration::from_secs(1)).await;
    assert_eq!(view.2, 41, "{view:?}");
    assert!(view.4.iter().all(|n| n.starts_with("outside/")), "{view:?}");
}

/// The scenario on three replicas: an invalid `sources.yaml` in the MCP ConfigMap made
/// `/readyz` fail on every replica (the Service had no endpoints) and model applies answer
/// INTERNAL. Now every replica stays ready (degraded: `config`), names the broken ConfigMap in
/// `configErrors`, and takes model applies that every replica then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_mcp_configmap_leaves_every_replica_ready_and_taking_model_applies() {
    if support::skip_without_postgres("a_broken_mcp_configmap_leaves_every_replica_ready_and_taking_model_applies") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    let seed = write_seed(&tmp.path().join("seed"));
    let replicas = kube_replicas(&kube, tmp.path(), &seed, &["a", "b", "c"], &["--rate-limit", "0"]).await;
    let mut mcp = data_of(&kube, MCP_CM);
    mcp.insert("sources.yaml".into(), "mcp_catalogs:\n  - id: [broken\n".into());
    kube.put_configmap(NS, MCP_CM, mcp);
    for (i, r) in replicas.iter().enumerate() {
        wait_for(&format!("replica {i} to name the MCP ConfigMap in configErrors"), async || {
            let v = r.ok("{ configErrors { message file } }", json!({})).await;
            v["configErrors"].to_string().contains(MCP_CM)
        })
        .await;
        let resp = r.client.get(format!("{}/readyz", r.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "replica {i}: degraded, not failed");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["degraded"][0], "config", "replica {i}: {body}");
    }
    // A model apply on each replica; each is served by all three.
    for (i, r) in replicas.iter().enumerate() {
        let out = r.ok(APPLY, apply_vars(&format!("fresh{i}"), &models_yaml(i + 1))).await;
        assert!(out["applySource"]["revision"].is_number(), "replica {i}: {out:#}");
    }
    for (i, r) in replicas.iter().enumerate() {
        for j in 0..replicas.len() {
            wait_for(&format!("replica {i} to serve fresh{j}"), async || {
                source(r, &format!("fresh{j}")).await["status"]["entityCount"] == json!(j + 1)
            })
            .await;
        }
    }
}
