//! The deploy files start what they claim to start: `deploy/kustomize` rendered with the real
//! `kubectl kustomize`, validated against the Kubernetes schemas (`kubernetes-validate`), and
//! the exact container command (the Dockerfile's ENTRYPOINT + the manifest's `args`, `$(VAR)`
//! expanded as the kubelet does) run through the real binary with `--check-config`; the same
//! for `deploy/compose.yaml`. That is what catches an args/ENTRYPOINT clash (`serve` twice),
//! a missing `--auth`, or a Secret/PVC that nothing defines, none of which a YAML linter sees.
//! Docker cannot run here, so the image itself is checked by reading the Dockerfile.

use crate::support;

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use support::*;

/// The Kubernetes version the manifests are validated against (one `kubernetes-validate`
/// ships; the oldest still supported when this was written, so newer fields are not used).
const K8S_VERSION: &str = "1.32.0";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A skip that shows in the run's output (the harness hides `eprintln!` of passing tests).
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn on_path(tool: &str) -> bool {
    Command::new(tool).arg("--help").output().is_ok()
}

/// `kubectl kustomize DIR`: the rendered text. `None` (after a SKIPPED line) without kubectl.
fn kustomize(test: &str, dir: &str) -> Option<String> {
    if !on_path("kubectl") {
        skipped(test, "kubectl not found (.ci/run installs it)");
        return None;
    }
    let out = Command::new("kubectl").arg("kustomize").arg(repo().join(dir)).output().unwrap();
    assert!(out.status.success(), "kubectl kustomize {dir} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Every object of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubernetes-validate --strict` (unknown fields are errors) on the rendered objects.
fn validate(test: &str, dir: &str, text: &str) {
    if !on_path("kubernetes-validate") {
        skipped(test, &format!("kubernetes-validate not found, {dir} not schema-checked (.ci/run installs it)"));
        return;
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", K8S_VERSION])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{dir} does not validate against Kubernetes {K8S_VERSION}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered output"))
}

fn has(docs: &[Value], kind: &str, name: &str) -> bool {
    docs.iter().any(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// What the image runs, from the last stage of deploy/Dockerfile.
struct Image {
    entrypoint: Vec<String>,
    env: Vec<(String, String)>,
    text: String,
}

fn image() -> Image {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let last_stage = &text[text.rfind("\nFROM ").expect("a FROM line")..];
    let mut entrypoint = None;
    let mut env = Vec::new();
    for line in last_stage.lines() {
        if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            // Exec form only: the shell form would swallow the arguments.
            entrypoint = Some(serde_json::from_str::<Vec<String>>(rest).expect("ENTRYPOINT in exec (JSON) form"));
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (k, v) = rest.split_once('=').expect("ENV KEY=VALUE");
            env.push((k.to_string(), v.to_string()));
        }
    }
    Image { entrypoint: entrypoint.expect("an ENTRYPOINT"), env, text: last_stage.to_string() }
}

/// Runs the container's command line (ENTRYPOINT after the program name, then `args`) through
/// the real binary with `--check-config`, with only the given environment; the printed
/// settings, or a failure naming what the binary refused.
fn check_config(what: &str, args: &[String], env: &[(String, String)]) -> Value {
    let image = image();
    assert_eq!(image.entrypoint[0], "catalog-bff");
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in image.env.iter().chain(env) {
        cmd.env(k, v);
    }
    let out = cmd.args(&image.entrypoint[1..]).args(args).arg("--check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{what}: `catalog-bff {} {}` is refused by the binary (exit {:?}):\n{}",
        image.entrypoint[1..].join(" "),
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Standard base64 (Secret `data`), without a crate for it.
fn base64_decode(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        bits = (bits << 6) | ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The container's environment as the kubelet builds it: literal values, the downward API with
/// sample pod values, Secret keys from the rendered Secret when there is one (else a sample
/// value, for the installer-provided Secret of the base).
fn container_env(docs: &[Value], c: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.namespace" => "catalog-bff".to_string(),
                "metadata.name" => "catalog-bff-5d8c7b9f4-x2x7q".to_string(),
                other => panic!("no sample value for fieldRef {other}"),
            }
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            match docs.iter().find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == secret) {
                Some(s) => {
                    base64_decode(s["data"][key].as_str().unwrap_or_else(|| panic!("Secret {secret} has no key {key}")))
                }
                None if key == "DATABASE_URL" => {
                    "postgres://catalog:s3cret@db.example.internal:5432/catalog".to_string()
                }
                None => panic!("no sample value for Secret {secret} key {key}"),
            }
        } else {
            panic!("env {name}: unsupported source {e}");
        };
        env.push((name, value));
    }
    env
}

/// `$(VAR)` in args, expanded from the container's env as the kubelet does (`$$` escapes).
fn expand(args: &[String], env: &[(String, String)]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let mut s = a.replace("$$", "\u{0}");
            for (k, v) in env {
                s = s.replace(&format!("$({k})"), v);
            }
            assert!(!s.contains("$("), "arg {a:?} names a variable the container does not define");
            s.replace('\u{0}', "$")
        })
        .collect()
}

/// The Deployment's container command, run through the binary.
fn deployment_settings(what: &str, docs: &[Value]) -> (Vec<String>, Value) {
    let c = container(find(docs, "Deployment", "catalog-bff"), "catalog-bff");
    assert!(c["command"].is_null(), "{what}: `command` would replace the image's ENTRYPOINT");
    let args = strings(&c["args"]);
    assert_ne!(args.first().map(String::as_str), Some("serve"), "{what}: the ENTRYPOINT already has `serve`");
    let env = container_env(docs, c);
    let expanded = expand(&args, &env);
    let settings = check_config(what, &expanded, &env);
    (expanded, settings)
}

/// Every Secret, ConfigMap and PVC a rendered pod template uses is rendered too, or is the one
/// the installer provides, which the kustomization and the README's "Run in a cluster" name.
fn references_are_defined(dir: &str, docs: &[Value], installer_provided: &[(&str, &str)]) {
    let mut wanted = BTreeSet::new();
    let mut claims_from_templates = BTreeSet::new();
    for w in docs.iter().filter(|d| d["spec"]["template"]["spec"].is_object()) {
        let pod = &w["spec"]["template"]["spec"];
        for t in w["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten() {
            claims_from_templates.insert(t["metadata"]["name"].as_str().unwrap().to_string());
        }
        for v in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(n) = v["secret"]["secretName"].as_str() {
                wanted.insert(("Secret", n.to_string()));
            }
            if let Some(n) = v["configMap"]["name"].as_str() {
                wanted.insert(("ConfigMap", n.to_string()));
            }
            if let Some(n) = v["persistentVolumeClaim"]["claimName"].as_str() {
                wanted.insert(("PersistentVolumeClaim", n.to_string()));
            }
        }
        let containers = pod["containers"].as_array().into_iter().chain(pod["initContainers"].as_array()).flatten();
        for c in containers {
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    wanted.insert(("Secret", n.to_string()));
                }
                if let Some(n) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                    wanted.insert(("ConfigMap", n.to_string()));
                }
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(n) = e["secretRef"]["name"].as_str() {
                    wanted.insert(("Secret", n.to_string()));
                }
                if let Some(n) = e["configMapRef"]["name"].as_str() {
                    wanted.insert(("ConfigMap", n.to_string()));
                }
            }
            // A volume mount must name a volume of the pod (or a claim template).
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let name = m["name"].as_str().unwrap();
                let in_pod = pod["volumes"].as_array().into_iter().flatten().any(|v| v["name"] == name);
                assert!(in_pod || claims_from_templates.contains(name), "{dir}: mount of an undefined volume {name}");
            }
        }
        if let Some(sa) = pod["serviceAccountName"].as_str() {
            wanted.insert(("ServiceAccount", sa.to_string()));
        }
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("## Run in a cluster").nth(1).expect("README has a \"Run in a cluster\" section");
    let section = section.split("\n## ").next().unwrap();
    let kustomization = std::fs::read_to_string(repo().join(dir).join("kustomization.yaml")).unwrap();
    for (kind, name) in &wanted {
        if has(docs, kind, name) {
            continue;
        }
        assert!(
            installer_provided.contains(&(kind, name.as_str())),
            "{dir}: {kind} {name} is used but neither rendered nor the documented installer-provided one"
        );
        assert!(
            section.contains(name.as_str()),
            "README \"Run in a cluster\" does not tell the installer to create {kind} {name}"
        );
        assert!(kustomization.contains(name.as_str()), "{dir}/kustomization.yaml does not name {kind} {name}");
    }
    // And the documented one really is needed (the list is not a blanket exemption).
    for (kind, name) in installer_provided {
        assert!(
            wanted.contains(&(*kind, name.to_string())),
            "{dir}: {kind} {name} is listed as installer-provided but not used"
        );
        assert!(!has(docs, kind, name), "{dir}: {kind} {name} is rendered, not installer-provided");
    }
}

/// The pod hardening, probes and labels every catalog-bff Deployment must keep.
fn hardened_and_probed(what: &str, deployment: &Value) {
    let labels = &deployment["metadata"]["labels"];
    for key in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
    ] {
        assert!(labels[key].is_string(), "{what}: Deployment label {key} missing: {labels}");
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    // The image's user (deploy/Dockerfile `USER 10001`) is the one the pod runs as.
    assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{what}");
    assert!(image().text.contains("USER 10001"), "the Dockerfile's user is not the manifests' runAsUser");
    let c = container(deployment, "catalog-bff");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz", "{what}");
    // The probes' port is the one the server listens on.
    let port = &c["ports"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port["name"], "{what}");
    assert_eq!(port["containerPort"], 8080, "{what}");
    assert!(
        c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string(),
        "{what}"
    );
    // A read-only root needs a writable /tmp.
    let tmp = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == "/tmp").expect("a /tmp mount");
    let vol = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == tmp["name"]).unwrap();
    assert!(vol["emptyDir"].is_object(), "{what}: /tmp is not an emptyDir");
}

#[test]
fn dockerfile_runs_serve_as_a_non_root_user_with_ca_certificates_and_a_healthcheck() {
    let image = image();
    assert_eq!(image.entrypoint, ["catalog-bff", "serve"]);
    assert!(image.text.contains("ca-certificates"), "the image needs CA certificates for https url sources");
    assert!(image.text.contains("\nUSER 10001"), "the image must not run as root");
    let health = image.text.lines().find(|l| l.starts_with("HEALTHCHECK")).expect("a HEALTHCHECK");
    let cmd: Vec<String> = serde_json::from_str(&health[health.find("CMD ").unwrap() + 4..]).unwrap();
    assert_eq!(cmd, ["catalog-bff", "healthcheck"], "the slim image has no curl: the binary checks itself");
    // The image's own defaults: `docker run IMAGE --auth static --tokens-file F` listens beyond
    // loopback, and the bare `docker run IMAGE` is refused with a message (not --auth none on
    // 0.0.0.0).
    let settings = check_config(
        "docker run IMAGE",
        &["--auth".into(), "static".into(), "--tokens-file".into(), "/t.yaml".into()],
        &[],
    );
    assert_eq!(settings["listen"], "0.0.0.0:8080");
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for (k, v) in &image.env {
        cmd.env(k, v);
    }
    let out = cmd.args(&image.entrypoint[1..]).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth none on 0.0.0.0:8080"));
}

#[test]
fn kustomize_base_renders_valid_manifests_whose_args_the_binary_accepts() {
    const T: &str = "kustomize_base_renders_valid_manifests_whose_args_the_binary_accepts";
    let dir = "deploy/kustomize/base";
    let Some(text) = kustomize(T, dir) else { return };
    validate(T, dir, &text);
    let docs = documents(&text);

    let deployment = find(&docs, "Deployment", "catalog-bff");
    assert_eq!(deployment["spec"]["replicas"], 3);
    hardened_and_probed(dir, deployment);
    let (args, settings) = deployment_settings(dir, &docs);
    assert!(args.windows(2).any(|w| w == ["--database", "postgres://catalog:s3cret@db.example.internal:5432/catalog"]));
    assert_eq!(settings["store"], "kubernetes");
    assert_eq!(settings["auth"], "kubernetes");
    assert_eq!(settings["listen"], "0.0.0.0:8080");
    assert_eq!(settings["namespace"], "catalog-bff");
    let database = settings["database"].as_str().unwrap();
    assert!(database.starts_with("postgres://") && database.contains("db.example.internal"), "{database}");
    assert!(!database.contains("s3cret"), "--check-config must not print the password: {database}");

    // RBAC: what the kubernetes store and --auth kubernetes call, bound to the pod's account.
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap();
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let role = find(&docs, "Role", "catalog-bff");
    let rules = role["rules"].as_array().unwrap();
    let verbs = |resource: &str| -> BTreeSet<String> {
        rules
            .iter()
            .filter(|r| strings(&r["resources"]).iter().any(|x| x == resource))
            .flat_map(|r| strings(&r["verbs"]))
            .collect()
    };
    assert_eq!(verbs("configmaps"), ["create", "get", "list", "patch", "update", "watch"].map(String::from).into());
    assert_eq!(verbs("secrets"), ["get"].map(String::from).into());
    let cluster_role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && strings(&d["rules"][0]["resources"]) == ["tokenreviews"])
        .expect("a ClusterRole for tokenreviews");
    let cr_rules = cluster_role["rules"].as_array().unwrap();
    for (group, resource) in
        [("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")]
    {
        assert!(
            cr_rules.iter().any(|r| strings(&r["apiGroups"]) == [group]
                && strings(&r["resources"]) == [resource]
                && strings(&r["verbs"]) == ["create"]),
            "ClusterRole lacks {resource} create"
        );
    }
    for (binding, role_kind, role_name) in [
        (find(&docs, "RoleBinding", "catalog-bff"), "Role", role["metadata"]["name"].as_str().unwrap()),
        (
            find(&docs, "ClusterRoleBinding", cluster_role["metadata"]["name"].as_str().unwrap()),
            "ClusterRole",
            cluster_role["metadata"]["name"].as_str().unwrap(),
        ),
    ] {
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        assert_eq!(binding["roleRef"]["name"], role_name);
        assert!(
            binding["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == namespace),
            "{role_kind} binding does not name the pod's ServiceAccount {namespace}/{sa}"
        );
    }

    // Service, disruption budget and network policy select the pods; ingress on the API port.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value| selector.as_object().unwrap().iter().all(|(k, v)| &pod_labels[k] == v);
    let service = find(&docs, "Service", "catalog-bff");
    assert!(selects(&service["spec"]["selector"]));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert!(selects(&find(&docs, "PodDisruptionBudget", "catalog-bff")["spec"]["selector"]["matchLabels"]));
    let policy = find(&docs, "NetworkPolicy", "catalog-bff");
    assert!(selects(&policy["spec"]["podSelector"]["matchLabels"]));
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8080);
    let egress_ports: BTreeSet<u64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["ports"].as_array().unwrap().iter().map(|p| p["port"].as_u64().unwrap()))
        .collect();
    for port in [53, 5432, 443, 6443] {
        assert!(egress_ports.contains(&port), "egress to port {port} (DNS, PostgreSQL, API server, https) missing");
    }

    references_are_defined(dir, &docs, &[("Secret", "catalog-bff-db")]);
}

#[test]
fn postgres_overlay_adds_a_database_the_deployment_can_reach() {
    const T: &str = "postgres_overlay_adds_a_database_the_deployment_can_reach";
    let dir = "deploy/kustomize/overlays/postgres";
    let Some(text) = kustomize(T, dir) else { return };
    validate(T, dir, &text);
    let docs = documents(&text);
    let deployment = find(&docs, "Deployment", "catalog-bff");
    assert_eq!(deployment["spec"]["replicas"], 3);
    hardened_and_probed(dir, deployment);
    references_are_defined(dir, &docs, &[]);

    // DATABASE_URL comes from the rendered Secret, and names the rendered Service.
    let (_, settings) = deployment_settings(dir, &docs);
    assert_eq!(settings["store"], "kubernetes");
    assert_eq!(settings["auth"], "kubernetes");
    assert_eq!(settings["listen"], "0.0.0.0:8080");
    let database = settings["database"].as_str().unwrap();
    let host = database.split('@').nth(1).unwrap().split(':').next().unwrap();
    let service = find(&docs, "Service", host);
    assert_eq!(service["spec"]["ports"][0]["port"], 5432);
    let db = find(&docs, "StatefulSet", "catalog-bff-postgres");
    let db_labels = &db["spec"]["template"]["metadata"]["labels"];
    assert!(service["spec"]["selector"].as_object().unwrap().iter().all(|(k, v)| &db_labels[k] == v));
    // The URL's user, password and database are the ones PostgreSQL is initialised with.
    let secret_name =
        db["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"].as_str().unwrap();
    let secret = find(&docs, "Secret", secret_name);
    let get = |k: &str| base64_decode(secret["data"][k].as_str().unwrap());
    assert_eq!(
        get("DATABASE_URL"),
        format!("postgres://{}:{}@{host}:5432/{}", get("POSTGRES_USER"), get("POSTGRES_PASSWORD"), get("POSTGRES_DB"))
    );
    let pod = &db["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(db["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");
}

#[test]
fn single_node_overlay_runs_the_file_store_with_static_tokens_on_a_volume() {
    const T: &str = "single_node_overlay_runs_the_file_store_with_static_tokens_on_a_volume";
    let dir = "deploy/kustomize/overlays/single-node";
    let Some(text) = kustomize(T, dir) else { return };
    validate(T, dir, &text);
    let docs = documents(&text);
    let deployment = find(&docs, "Deployment", "catalog-bff");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
    hardened_and_probed(dir, deployment);
    references_are_defined(dir, &docs, &[("Secret", "catalog-bff-tokens")]);

    let (_, settings) = deployment_settings(dir, &docs);
    assert_eq!(settings["store"], "file");
    assert_eq!(settings["auth"], "static");
    assert_eq!(settings["listen"], "0.0.0.0:8080");
    // SQLite in the data dir, and the data dir is the volume.
    let database = settings["database"].as_str().unwrap();
    assert!(database.starts_with("sqlite:///var/lib/catalog-bff/"), "{database}");
    let c = container(deployment, "catalog-bff");
    let pod = &deployment["spec"]["template"]["spec"];
    let volume_at = |path: &str| -> &Value {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap();
        pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == m["name"]).unwrap()
    };
    assert_eq!(
        volume_at("/var/lib/catalog-bff/catalog-bff.db")["persistentVolumeClaim"]["claimName"],
        "catalog-bff-data"
    );
    let tokens = settings["tokensFile"].as_str().unwrap();
    let tokens_volume = volume_at(tokens);
    assert_eq!(tokens_volume["secret"]["secretName"], "catalog-bff-tokens");
    assert!(tokens.ends_with("/tokens.yaml"), "the Secret key tokens.yaml is the file name: {tokens}");
    // No Kubernetes API use in file mode: no RBAC, and no budget that would block drains.
    for kind in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "PodDisruptionBudget"] {
        assert!(!docs.iter().any(|d| d["kind"] == kind), "{dir} still renders a {kind}");
    }
    assert_eq!(pod["automountServiceAccountToken"], false);
}

#[test]
fn compose_runs_two_replicas_on_one_postgres_with_static_tokens() {
    let text = std::fs::read_to_string(repo().join("deploy/compose.yaml")).unwrap();
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    yaml.apply_merge().unwrap();
    let compose: Value = serde_json::to_value(&yaml).unwrap();
    let services = compose["services"].as_object().unwrap();
    let replicas: BTreeMap<&String, &Value> =
        services.iter().filter(|(_, s)| s["build"]["dockerfile"] == "deploy/Dockerfile").collect();
    assert_eq!(replicas.len(), 2, "two catalog-bff replicas");
    let postgres =
        services.iter().find(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("postgres"))).unwrap();
    let mut databases = BTreeSet::new();
    let mut replica_ids = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (name, s) in &replicas {
        assert!(s["entrypoint"].is_null(), "{name}: keep the image's ENTRYPOINT");
        let args = strings(&s["command"]);
        assert!(!args.is_empty(), "{name}: command must be a list of serve's flags");
        assert_ne!(args[0], "serve", "{name}: the ENTRYPOINT already has `serve`");
        let env: Vec<(String, String)> = s["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let settings = check_config(name, &args, &env);
        assert_eq!(settings["auth"], "static", "{name}");
        assert_eq!(settings["store"], "file", "{name}");
        assert_eq!(settings["listen"], "0.0.0.0:8080", "{name}");
        databases.insert(settings["database"].as_str().unwrap().to_string());
        let id = args.windows(2).find(|w| w[0] == "--replica-id").map(|w| w[1].clone()).expect("--replica-id");
        replica_ids.insert(id);
        // The tokens file is mounted where --tokens-file points, from a file in the repo.
        let tokens = settings["tokensFile"].as_str().unwrap();
        let mount = strings(&s["volumes"])
            .into_iter()
            .find(|v| v.split(':').nth(1) == Some(tokens))
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {tokens}"));
        assert!(repo().join("deploy").join(mount.split(':').next().unwrap()).is_file(), "{mount}");
        // Both replicas share the config volume at the data dir.
        assert!(strings(&s["volumes"]).contains(&"config:/var/lib/catalog-bff".to_string()), "{name}");
        assert_eq!(s["depends_on"][postgres.0]["condition"], "service_healthy", "{name}");
        host_ports.insert(strings(&s["ports"])[0].clone());
    }
    assert_eq!(databases.len(), 1, "both replicas on one database: {databases:?}");
    let database = databases.into_iter().next().unwrap();
    assert!(database.contains(&format!("@{}:5432/", postgres.0)), "{database}");
    assert_eq!(replica_ids.len(), 2);
    assert_eq!(host_ports.len(), 2);
}

/// The compose tokens file works with the real server, for the tokens its comment documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_tokens_file_accepts_the_documented_tokens() {
    let tokens = repo().join("deploy/compose/tokens.yaml");
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(Backend::Sqlite, dir.path()).await;
    let server = TestServer::new(dir.path())
        .database(&db)
        .flags(&["--auth", "static", "--tokens-file", tokens.to_str().unwrap()])
        .start()
        .await;
    let post = |token: Option<&'static str>, query: &'static str| {
        let mut req = server
            .client
            .post(format!("{}/graphql", server.base))
            .header("content-type", "application/json")
            .json(&json!({"query": query}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let text = std::fs::read_to_string(&tokens).unwrap();
    assert!(text.contains("dev-operator-token") && text.contains("dev-viewer-token"));
    let (status, body) = post(Some("dev-viewer-token"), "{ plugins { name } }").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["plugins"].as_array().is_some_and(|p| !p.is_empty()), "{body}");
    let (_, body) = post(Some("dev-viewer-token"), "mutation { refreshPlugin(plugin: \"models\") { id } }").await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let (_, body) =
        post(Some("dev-operator-token"), "mutation { refreshPlugin(plugin: \"models\", wait: true) { phase } }").await;
    assert!(body["errors"].is_null(), "{body}");
    let (status, body) = post(None, "{ plugins { name } }").await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"));
}

/// `catalog-bff healthcheck` (the image's HEALTHCHECK) succeeds against a running server, also
/// when given the listen address as the container has it (0.0.0.0), and fails when nothing
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommand_reports_whether_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::example(Backend::Sqlite, dir.path()).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let run = |listen: String, via_env: bool| {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("CATALOG_BFF_LISTEN").arg("healthcheck");
        if via_env {
            cmd.env("CATALOG_BFF_LISTEN", listen);
        } else {
            cmd.arg("--listen").arg(listen);
        }
        cmd.output().unwrap()
    };
    assert!(run(format!("127.0.0.1:{port}"), false).status.success());
    assert!(run(format!("0.0.0.0:{port}"), true).status.success(), "the image's CATALOG_BFF_LISTEN=0.0.0.0:PORT");
    let missing = Command::new(BIN)
        .args(["healthcheck", "--listen", &format!("127.0.0.1:{port}"), "--path", "/nope"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not 200"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    drop(server.stop());
    let down = run(format!("127.0.0.1:{port}"), false);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
