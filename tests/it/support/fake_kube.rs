//! A fake Kubernetes API server for tests, over real HTTP on 127.0.0.1:0.
//!
//! The Kubernetes API cannot run in the test environment, so this serves the small part of it
//! that catalog-bff uses, with the semantics the real API server has and the client code relies
//! on (checked against the Kubernetes API conventions and kube-rs / kube-runtime's watcher):
//! - ConfigMaps: GET (404 `Status{reason: NotFound}`), LIST (`ConfigMapList` with the list's
//!   `metadata.resourceVersion`; `fieldSelector=metadata.name=X`, `labelSelector` with `k=v`,
//!   `k!=v`, `k`, `!k`), POST (409 `AlreadyExists`), PUT (409 `Conflict` when the body's
//!   `resourceVersion` is not the current one; no create-on-update, like the real strategy),
//!   PATCH (JSON merge patch and strategic merge patch; a `resourceVersion` in the patch is a
//!   precondition), DELETE. Keys and names are validated like the real API (422 `Invalid`), and
//!   `data` + `binaryData` over 1 MiB (keys + values) is 422 `Invalid` "Too long".
//! - One global `resourceVersion` counter (decimal strings), `metadata.uid`, `creationTimestamp`.
//! - WATCH (`?watch=true`): newline-delimited JSON events after the given `resourceVersion`
//!   (`ADDED`/`MODIFIED`/`DELETED`), `BOOKMARK`s every second with `allowWatchBookmarks=true`,
//!   `sendInitialEvents=true` (streaming lists: the current objects, then a bookmark annotated
//!   `k8s.io/initial-events-end`), `timeoutSeconds`, and an in-stream `ERROR` event with
//!   `Status{code: 410, reason: Expired}` for a `resourceVersion` older than the last
//!   [`FakeKube::compact`] (which also ends the open watches that way, as an etcd compaction
//!   does to watchers that fell behind).
//! - Secrets: GET with base64 `data`.
//! - Auth: every request needs the service-account bearer token (else 401 `Unauthorized`);
//!   [`FakeKube::deny`] makes a verb on a resource 403 `Forbidden` for it.
//! - TokenReview and SubjectAccessReview, driven by [`FakeKube::add_user`] / [`FakeKube::allow`].
//!
//! Not modelled: `limit`/`continue` paging (every list fits in one page, which a client must
//! accept anyway), server-side apply, JSON patch, `generateName`, other resource kinds.
#![allow(dead_code, reason = "each test uses some of the fake's knobs")]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// The real limit on a ConfigMap's (and a Secret's) data: 1 MiB.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

type Key = (String, String);
/// An API error answer (boxed: a `Response` is large).
type Fail = Box<Response>;
type Race = Box<dyn FnOnce(&mut BTreeMap<String, String>) + Send>;

/// One change to a ConfigMap, as a watcher sees it.
#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    kind: &'static str,
    object: Value,
}

#[derive(Clone, Debug)]
enum Signal {
    Event(WatchEvent),
    /// History before this resourceVersion is gone: open watches end with 410.
    Compacted(u64),
}

struct Allow {
    username: String,
    verb: String,
    resource: String,
    namespace: String,
    name: Option<String>,
}

struct State {
    rv: u64,
    configmaps: BTreeMap<Key, Value>,
    secrets: BTreeMap<Key, Value>,
    /// Every ConfigMap change since the last compaction, oldest first.
    history: Vec<WatchEvent>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted: u64,
    races: HashMap<Key, Race>,
    denied: HashSet<(String, String)>,
    users: HashMap<String, (String, Vec<String>)>,
    allows: Vec<Allow>,
    requests: Vec<String>,
    sa_token: String,
    /// Set by [`FakeKube::set_failing`]: every request answers 500.
    failing: bool,
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Signal>,
    /// Flipped by [`FakeKube::stop`]: watch streams end.
    stopped: tokio::sync::watch::Sender<bool>,
}

type Shared = Arc<Inner>;

pub struct FakeKube {
    pub url: String,
    inner: Shared,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let (events, _) = broadcast::channel(4096);
        let (stopped, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                rv: 1000,
                configmaps: BTreeMap::new(),
                secrets: BTreeMap::new(),
                history: Vec::new(),
                compacted: 0,
                races: HashMap::new(),
                denied: HashSet::new(),
                users: HashMap::new(),
                allows: Vec::new(),
                requests: Vec::new(),
                sa_token: format!("sa-{}", uuid::Uuid::new_v4().simple()),
                failing: false,
            }),
            events,
            stopped,
        });
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        FakeKube { url: format!("http://{addr}"), inner, shutdown: Mutex::new(Some(tx)) }
    }

    /// The API server goes away: new connections are refused, idle ones closed, watches end.
    pub fn stop(&self) {
        let _ = self.inner.stopped.send(true);
        if let Some(tx) = self.shutdown.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }

    /// While on, every request answers 500 `InternalError` (an overloaded or broken API server;
    /// 500 rather than 503 because kube's client retries 503 for minutes).
    pub fn set_failing(&self, on: bool) {
        self.state().failing = on;
    }

    /// The bearer token of the fake's service account (what `kubeconfig` holds).
    pub fn sa_token(&self) -> String {
        self.state().sa_token.clone()
    }

    /// A kubeconfig (server: self.url, namespace, user token = the fake's service-account token,
    /// which may do everything unless `deny` says otherwise); returns its path.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        kubeconfig_for(&self.url, &self.sa_token(), dir, namespace)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    /// The stored ConfigMap object, as a GET would return it.
    pub fn configmap(&self, ns: &str, name: &str) -> Option<Value> {
        self.state().configmaps.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// The stored ConfigMap's `data` (empty if it has none), `None` if it does not exist.
    pub fn configmap_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.configmap(ns, name).map(|o| data_of(&o))
    }

    /// Like `kubectl edit`/`apply` by someone else: creates or replaces `data`, bumps
    /// resourceVersion, emits ADDED/MODIFIED to watchers.
    pub fn put_configmap(&self, ns: &str, name: &str, data: BTreeMap<String, String>) {
        let mut st = self.state();
        let key = (ns.to_string(), name.to_string());
        let data = Value::Object(data.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
        match st.configmaps.get(&key).cloned() {
            Some(mut obj) => {
                obj["data"] = data;
                commit(&self.inner, &mut st, key, obj, "MODIFIED");
            }
            None => {
                let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data});
                let obj = stamp_new(obj, ns, name);
                commit(&self.inner, &mut st, key, obj, "ADDED");
            }
        }
    }

    /// Deletes a ConfigMap (if it exists), emitting DELETED.
    pub fn delete_configmap(&self, ns: &str, name: &str) {
        let mut st = self.state();
        remove(&self.inner, &mut st, &(ns.to_string(), name.to_string()));
    }

    pub fn set_secret(&self, ns: &str, name: &str, data: BTreeMap<String, Vec<u8>>) {
        let mut st = self.state();
        let rv = st.next_rv();
        let data: Map<String, Value> = data.into_iter().map(|(k, v)| (k, Value::String(b64_encode(&v)))).collect();
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(),
                          "resourceVersion": rv.to_string(), "creationTimestamp": now()},
            "data": data,
        });
        st.secrets.insert((ns.to_string(), name.to_string()), obj);
    }

    /// Sets a label on a stored Secret (as `kubectl label secret` would).
    pub fn label_secret(&self, ns: &str, name: &str, key: &str, value: &str) {
        let mut st = self.state();
        let rv = st.next_rv();
        if let Some(obj) = st.secrets.get_mut(&(ns.to_string(), name.to_string())) {
            obj["metadata"]["labels"][key] = json!(value);
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
    }

    /// The next UPDATE (PUT or PATCH) of this ConfigMap first sees a concurrent write (one extra
    /// MODIFIED with `data` changed by `change`), so the client's resourceVersion is stale → 409.
    pub fn race_next_update(
        &self,
        ns: &str,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>) + Send + 'static,
    ) {
        self.state().races.insert((ns.to_string(), name.to_string()), Box::new(change));
    }

    /// Forget history: watches from an older resourceVersion get 410 Gone ("too old resource
    /// version"); open watches end with that error too, so a watcher must re-list.
    pub fn compact(&self) {
        let mut st = self.state();
        st.compacted = st.rv;
        st.history.clear();
        let _ = self.inner.events.send(Signal::Compacted(st.rv));
    }

    /// The service account gets 403 for this verb (`get list watch create update patch delete`)
    /// on this resource (`configmaps`, `secrets`, `tokenreviews`, `subjectaccessreviews`).
    pub fn deny(&self, verb: &str, resource: &str) {
        self.state().denied.insert((verb.to_string(), resource.to_string()));
    }

    /// A user token for TokenReview.
    pub fn add_user(&self, token: &str, username: &str, groups: &[&str]) {
        self.state()
            .users
            .insert(token.to_string(), (username.to_string(), groups.iter().map(|g| g.to_string()).collect()));
    }

    /// A SubjectAccessReview rule: `username` may `verb` (`*` = any) on `resource`
    /// (`[GROUP/]RESOURCE`) in `namespace`, on the object `name` (None = any).
    pub fn allow(&self, username: &str, verb: &str, resource: &str, namespace: &str, name: Option<&str>) {
        self.state().allows.push(Allow {
            username: username.to_string(),
            verb: verb.to_string(),
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.map(str::to_string),
        });
    }

    /// Every request so far, in order: "GET /api/v1/namespaces/x/configmaps/y?query".
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// How many requests so far contain `needle` (e.g. "tokenreviews").
    pub fn count_requests(&self, needle: &str) -> usize {
        self.state().requests.iter().filter(|r| r.contains(needle)).count()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }
}

/// A kubeconfig for `url` with a bearer `token`; returns its path (`dir/kubeconfig`).
pub fn kubeconfig_for(url: &str, token: &str, dir: &Path, namespace: &str) -> PathBuf {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
         current-context: fake\nusers:\n- name: fake\n  user:\n    token: {token}\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

// ---- the HTTP side --------------------------------------------------------------------------

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn data_of(obj: &Value) -> BTreeMap<String, String> {
    obj["data"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// Sets the server-owned metadata of a new object (resourceVersion is set by `commit`).
fn stamp_new(mut obj: Value, ns: &str, name: &str) -> Value {
    let meta = obj["metadata"].as_object_mut().unwrap();
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(ns));
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    obj["apiVersion"] = json!("v1");
    obj["kind"] = json!("ConfigMap");
    obj
}

/// Stores a ConfigMap with a fresh resourceVersion and tells the watchers.
fn commit(inner: &Inner, st: &mut State, key: Key, mut obj: Value, kind: &'static str) -> Value {
    let rv = st.next_rv();
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    if obj["data"].as_object().is_some_and(|m| m.is_empty()) {
        obj.as_object_mut().unwrap().remove("data");
    }
    st.configmaps.insert(key, obj.clone());
    let ev = WatchEvent { rv, kind, object: obj.clone() };
    st.history.push(ev.clone());
    let _ = inner.events.send(Signal::Event(ev));
    obj
}

fn remove(inner: &Inner, st: &mut State, key: &Key) -> Option<Value> {
    let mut obj = st.configmaps.remove(key)?;
    let rv = st.next_rv();
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    let ev = WatchEvent { rv, kind: "DELETED", object: obj.clone() };
    st.history.push(ev.clone());
    let _ = inner.events.send(Signal::Event(ev));
    Some(obj)
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

/// A `Status` object, the body of every API error.
fn status(code: u16, reason: &str, message: String, details: Value) -> Fail {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if !details.is_null() {
        body["details"] = details;
    }
    Box::new(json_response(StatusCode::from_u16(code).unwrap(), body))
}

fn not_found(resource: &str, name: &str) -> Fail {
    status(404, "NotFound", format!("{resource} \"{name}\" not found"), json!({"name": name, "kind": resource}))
}

fn conflict(name: &str) -> Fail {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on configmaps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        json!({"name": name, "kind": "configmaps"}),
    )
}

fn bad_request(message: String) -> Fail {
    status(400, "BadRequest", message, Value::Null)
}

fn invalid(name: &str, field: &str, cause_reason: &str, cause: String) -> Fail {
    status(
        422,
        "Invalid",
        format!("ConfigMap \"{name}\" is invalid: {field}: {cause}"),
        json!({"name": name, "kind": "ConfigMap", "causes": [{"reason": cause_reason, "message": cause, "field": field}]}),
    )
}

/// What the real API validates on a ConfigMap: its name, its keys, its size.
fn validate_configmap(name: &str, obj: &Value) -> Result<(), Fail> {
    let dns_ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !dns_ok {
        return Err(invalid(
            name,
            "metadata.name",
            "FieldValueInvalid",
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    let mut total = 0usize;
    for field in ["data", "binaryData"] {
        let Some(v) = obj.get(field) else { continue };
        if v.is_null() {
            continue;
        }
        let Some(map) = v.as_object() else {
            return Err(bad_request(format!(
                "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: {field} must be an object"
            )));
        };
        for (k, v) in map {
            let key_ok = !k.is_empty()
                && k.len() <= 253
                && k != "."
                && k != ".."
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !key_ok {
                return Err(invalid(
                    name,
                    &format!("{field}[{k}]"),
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                    ),
                ));
            }
            let Some(s) = v.as_str() else {
                return Err(bad_request(format!(
                    "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: {field}[{k}] must be a string"
                )));
            };
            let len = if field == "binaryData" { b64_decoded_len(s) } else { s.len() };
            total += k.len() + len;
        }
    }
    if total > MAX_CONFIGMAP_BYTES {
        return Err(invalid(
            name,
            "[]",
            "FieldValueTooLong",
            format!("Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes"),
        ));
    }
    Ok(())
}

enum Target {
    /// `namespace` None = all namespaces.
    ConfigMaps {
        namespace: Option<String>,
        name: Option<String>,
    },
    Secret {
        namespace: String,
        name: String,
    },
    TokenReview,
    SubjectAccessReview,
}

fn route(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match parts.as_slice() {
        ["api", "v1", "configmaps"] => Some(Target::ConfigMaps { namespace: None, name: None }),
        ["api", "v1", "namespaces", ns, "configmaps"] => {
            Some(Target::ConfigMaps { namespace: Some(ns.to_string()), name: None })
        }
        ["api", "v1", "namespaces", ns, "configmaps", name] => {
            Some(Target::ConfigMaps { namespace: Some(ns.to_string()), name: Some(name.to_string()) })
        }
        ["api", "v1", "namespaces", ns, "secrets", name] => {
            Some(Target::Secret { namespace: ns.to_string(), name: name.to_string() })
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Some(Target::TokenReview),
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => Some(Target::SubjectAccessReview),
        _ => None,
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed `fieldSelector` + `labelSelector`.
struct Selector {
    name: Option<String>,
    namespace: Option<String>,
    labels: Vec<(String, String, Option<String>)>, // (op, key, value): "=", "!=", "exists", "!exists"
}

impl Selector {
    fn parse(q: &HashMap<String, String>) -> Result<Selector, Fail> {
        let mut sel = Selector { name: None, namespace: None, labels: Vec::new() };
        if let Some(fs) = q.get("fieldSelector").filter(|s| !s.is_empty()) {
            for term in fs.split(',') {
                let (k, v) = term
                    .split_once("==")
                    .or_else(|| term.split_once('='))
                    .ok_or_else(|| bad_request(format!("invalid field selector: {term}")))?;
                match k {
                    "metadata.name" => sel.name = Some(v.to_string()),
                    "metadata.namespace" => sel.namespace = Some(v.to_string()),
                    other => {
                        return Err(bad_request(format!("field label not supported: {other}")));
                    }
                }
            }
        }
        if let Some(ls) = q.get("labelSelector").filter(|s| !s.is_empty()) {
            for term in ls.split(',') {
                let term = term.trim();
                if let Some((k, v)) = term.split_once("!=") {
                    sel.labels.push(("!=".into(), k.to_string(), Some(v.to_string())));
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                    sel.labels.push(("=".into(), k.to_string(), Some(v.to_string())));
                } else if let Some(k) = term.strip_prefix('!') {
                    sel.labels.push(("!exists".into(), k.to_string(), None));
                } else if term.contains(' ') || term.contains('(') {
                    return Err(bad_request(format!("unsupported label selector in the fake API server: {term}")));
                } else {
                    sel.labels.push(("exists".into(), term.to_string(), None));
                }
            }
        }
        Ok(sel)
    }

    fn matches(&self, namespace: Option<&str>, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default();
        if namespace.is_some_and(|n| n != ns) || self.namespace.as_deref().is_some_and(|n| n != ns) {
            return false;
        }
        if self.name.as_deref().is_some_and(|n| Some(n) != meta["name"].as_str()) {
            return false;
        }
        self.labels.iter().all(|(op, k, v)| {
            let have = meta["labels"][k.as_str()].as_str();
            match op.as_str() {
                "=" => have == v.as_deref(),
                "!=" => have != v.as_deref(),
                "exists" => have.is_some(),
                _ => have.is_none(),
            }
        })
    }
}

async fn handle(
    axum::extract::State(inner): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let line = format!("{method} {}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let q = query_map(&uri);
    let target = route(uri.path());
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    let verb = match (&method, &target) {
        (&Method::GET, Some(Target::ConfigMaps { name: None, .. })) if watch => "watch",
        (&Method::GET, Some(Target::ConfigMaps { name: None, .. })) => "list",
        (&Method::GET, _) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    };
    let resource = match &target {
        Some(Target::ConfigMaps { .. }) => "configmaps",
        Some(Target::Secret { .. }) => "secrets",
        Some(Target::TokenReview) => "tokenreviews",
        Some(Target::SubjectAccessReview) => "subjectaccessreviews",
        None => "",
    };
    {
        let mut st = inner.state.lock().unwrap();
        st.requests.push(line);
        if st.failing {
            return *status(
                500,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out".into(),
                Value::Null,
            );
        }
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        if token != Some(st.sa_token.as_str()) {
            return *status(401, "Unauthorized", "Unauthorized".into(), Value::Null);
        }
        if st.denied.contains(&(verb.to_string(), resource.to_string())) {
            let ns = match &target {
                Some(Target::ConfigMaps { namespace: Some(ns), .. }) | Some(Target::Secret { namespace: ns, .. }) => {
                    format!(" in the namespace \"{ns}\"")
                }
                _ => String::new(),
            };
            let name = match &target {
                Some(Target::ConfigMaps { name: Some(n), .. }) | Some(Target::Secret { name: n, .. }) => n.clone(),
                _ => String::new(),
            };
            let group = match &target {
                Some(Target::TokenReview) => "authentication.k8s.io",
                Some(Target::SubjectAccessReview) => "authorization.k8s.io",
                _ => "",
            };
            return *status(
                403,
                "Forbidden",
                format!(
                    "{resource} \"{name}\" is forbidden: User \"system:serviceaccount:default:catalog-bff\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{ns}"
                ),
                json!({"name": name, "kind": resource}),
            );
        }
    }
    let Some(target) = target else {
        return *status(404, "NotFound", "the server could not find the requested resource".into(), Value::Null);
    };
    let parse_body = || -> Result<Value, Fail> {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| bad_request(format!("the request body is not valid JSON: {e}")))
            .and_then(|v| {
                if v.is_object() { Ok(v) } else { Err(bad_request("the request body must be a JSON object".into())) }
            })
    };
    let result = match target {
        Target::ConfigMaps { namespace, name: None } => match method {
            Method::GET if watch => return start_watch(inner, namespace, &q),
            Method::GET => list(&inner, namespace.as_deref(), &q),
            Method::POST => match namespace {
                Some(ns) => parse_body().and_then(|b| create(&inner, &ns, b)),
                None => Err(status(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource".into(),
                    Value::Null,
                )),
            },
            _ => Err(status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
                Value::Null,
            )),
        },
        Target::ConfigMaps { namespace: Some(ns), name: Some(name) } => match method {
            Method::GET => {
                let st = inner.state.lock().unwrap();
                st.configmaps.get(&(ns, name.clone())).cloned().ok_or_else(|| not_found("configmaps", &name))
            }
            Method::PUT => parse_body().and_then(|b| update(&inner, &ns, &name, b)),
            Method::PATCH => {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
                if ct.starts_with("application/merge-patch+json")
                    || ct.starts_with("application/strategic-merge-patch+json")
                {
                    parse_body().and_then(|b| patch(&inner, &ns, &name, b))
                } else {
                    Err(status(
                        415,
                        "UnsupportedMediaType",
                        format!("the fake API server supports merge and strategic merge patches, not {ct:?}"),
                        Value::Null,
                    ))
                }
            }
            Method::DELETE => {
                let mut st = inner.state.lock().unwrap();
                match remove(&inner, &mut st, &(ns, name.clone())) {
                    Some(obj) => Ok(obj),
                    None => Err(not_found("configmaps", &name)),
                }
            }
            _ => Err(status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
                Value::Null,
            )),
        },
        Target::ConfigMaps { namespace: None, name: Some(_) } => unreachable!(),
        Target::Secret { namespace, name } => match method {
            Method::GET => {
                let st = inner.state.lock().unwrap();
                st.secrets.get(&(namespace, name.clone())).cloned().ok_or_else(|| not_found("secrets", &name))
            }
            _ => Err(status(405, "MethodNotAllowed", "the fake API server only reads secrets".into(), Value::Null)),
        },
        Target::TokenReview if method == Method::POST => parse_body().map(|b| token_review(&inner, b)),
        Target::SubjectAccessReview if method == Method::POST => parse_body().map(|b| access_review(&inner, b)),
        _ => Err(status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Value::Null,
        )),
    };
    match result {
        Ok(v) => {
            let code = if method == Method::POST { StatusCode::CREATED } else { StatusCode::OK };
            json_response(code, v)
        }
        Err(r) => *r,
    }
}

fn list(inner: &Inner, namespace: Option<&str>, q: &HashMap<String, String>) -> Result<Value, Fail> {
    let sel = Selector::parse(q)?;
    let st = inner.state.lock().unwrap();
    let items: Vec<Value> = st.configmaps.values().filter(|o| sel.matches(namespace, o)).cloned().collect();
    Ok(json!({
        "kind": "ConfigMapList", "apiVersion": "v1",
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    }))
}

fn create(inner: &Inner, ns: &str, body: Value) -> Result<Value, Fail> {
    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(invalid(
            "",
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        ));
    }
    if let Some(bns) = body["metadata"]["namespace"].as_str()
        && bns != ns
    {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request".into(),
        ));
    }
    validate_configmap(&name, &body)?;
    let mut st = inner.state.lock().unwrap();
    let key = (ns.to_string(), name.clone());
    if st.configmaps.contains_key(&key) {
        return Err(status(
            409,
            "AlreadyExists",
            format!("configmaps \"{name}\" already exists"),
            json!({"name": name, "kind": "configmaps"}),
        ));
    }
    let obj = stamp_new(clean_new(body), ns, &name);
    Ok(commit(inner, &mut st, key, obj, "ADDED"))
}

/// Drops the server-owned metadata a client may have sent on a create.
fn clean_new(mut body: Value) -> Value {
    if let Some(meta) = body["metadata"].as_object_mut() {
        for k in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"] {
            meta.remove(k);
        }
    }
    body
}

/// Runs a pending `race_next_update` for this object: someone else writes first.
fn run_race(inner: &Inner, st: &mut State, key: &Key) {
    if let Some(change) = st.races.remove(key)
        && let Some(mut obj) = st.configmaps.get(key).cloned()
    {
        let mut data = data_of(&obj);
        change(&mut data);
        obj["data"] = Value::Object(data.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
        commit(inner, st, key.clone(), obj, "MODIFIED");
    }
}

/// Keeps the server-owned metadata of `current` on the replacement `new`.
fn keep_server_fields(current: &Value, mut new: Value) -> Value {
    let cm = &current["metadata"];
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for k in ["name", "namespace", "uid", "creationTimestamp"] {
        new["metadata"][k] = cm[k].clone();
    }
    new["apiVersion"] = json!("v1");
    new["kind"] = json!("ConfigMap");
    new
}

fn update(inner: &Inner, ns: &str, name: &str, body: Value) -> Result<Value, Fail> {
    if body["metadata"]["name"].as_str() != Some(name) {
        return Err(bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            body["metadata"]["name"].as_str().unwrap_or_default()
        )));
    }
    validate_configmap(name, &body)?;
    let mut st = inner.state.lock().unwrap();
    let key = (ns.to_string(), name.to_string());
    run_race(inner, &mut st, &key);
    let Some(current) = st.configmaps.get(&key).cloned() else {
        return Err(not_found("configmaps", name));
    };
    // An update without resourceVersion is unconditional (ConfigMaps allow it); with one, it
    // must be the current one (optimistic concurrency).
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty())
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(conflict(name));
    }
    let new = keep_server_fields(&current, body);
    Ok(commit(inner, &mut st, key, new, "MODIFIED"))
}

/// RFC 7386 JSON merge patch (for a ConfigMap, a strategic merge patch means the same: its
/// fields are maps and scalars, which merge the same way; `null` deletes a key).
fn merge(target: &mut Value, patch: &Value) {
    if let Some(p) = patch.as_object() {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn patch(inner: &Inner, ns: &str, name: &str, body: Value) -> Result<Value, Fail> {
    let mut st = inner.state.lock().unwrap();
    let key = (ns.to_string(), name.to_string());
    run_race(inner, &mut st, &key);
    let Some(current) = st.configmaps.get(&key).cloned() else {
        return Err(not_found("configmaps", name));
    };
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(conflict(name));
    }
    let mut new = current.clone();
    merge(&mut new, &body);
    let new = keep_server_fields(&current, new);
    validate_configmap(name, &new)?;
    Ok(commit(inner, &mut st, key, new, "MODIFIED"))
}

fn token_review(inner: &Inner, mut body: Value) -> Value {
    let st = inner.state.lock().unwrap();
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    body["status"] = match st.users.get(token) {
        Some((username, groups)) => json!({
            "authenticated": true,
            "user": {"username": username, "uid": format!("uid-{username}"), "groups": groups},
        }),
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    };
    body["apiVersion"] = json!("authentication.k8s.io/v1");
    body["kind"] = json!("TokenReview");
    body
}

fn access_review(inner: &Inner, mut body: Value) -> Value {
    let st = inner.state.lock().unwrap();
    let spec = &body["spec"];
    let user = spec["user"].as_str().unwrap_or_default();
    let ra = &spec["resourceAttributes"];
    let verb = ra["verb"].as_str().unwrap_or_default();
    let group = ra["group"].as_str().unwrap_or_default();
    let resource = match ra["resource"].as_str().unwrap_or_default() {
        r if group.is_empty() => r.to_string(),
        r => format!("{group}/{r}"),
    };
    let namespace = ra["namespace"].as_str().unwrap_or_default();
    let name = ra["name"].as_str().unwrap_or_default();
    let allowed = st.allows.iter().any(|a| {
        a.username == user
            && (a.verb == "*" || a.verb == verb)
            && a.resource == resource
            && a.namespace == namespace
            && a.name.as_deref().is_none_or(|n| n == name)
    });
    body["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the fake's rules"})
    } else {
        json!({"allowed": false})
    };
    body["apiVersion"] = json!("authorization.k8s.io/v1");
    body["kind"] = json!("SubjectAccessReview");
    body
}

fn bookmark(rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta}})
}

fn expired(asked: u64, oldest: u64) -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({oldest})"), "reason": "Expired", "code": 410,
    }})
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A watch: replays history after the asked resourceVersion, then streams live events.
fn start_watch(inner: Shared, namespace: Option<String>, q: &HashMap<String, String>) -> Response {
    let sel = match Selector::parse(q) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let asked = q.get("resourceVersion").filter(|s| !s.is_empty() && *s != "0");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    // Under the lock: what to replay, and the live subscription, so nothing falls in between.
    let (first, mut live, mut stopped) = {
        let st = inner.state.lock().unwrap();
        let mut first = Vec::new();
        if initial {
            // A streaming list: the current state (at least as new as asked), then a bookmark
            // that marks the end of the initial events.
            for o in st.configmaps.values().filter(|o| sel.matches(namespace.as_deref(), o)) {
                first.push(json!({"type": "ADDED", "object": o}));
            }
            first.push(bookmark(st.rv, true));
        } else {
            match asked {
                Some(rv) => match rv.parse::<u64>() {
                    Ok(n) if n < st.compacted => first.push(expired(n, st.compacted)),
                    Ok(n) => {
                        for ev in st.history.iter().filter(|e| e.rv > n && sel.matches(namespace.as_deref(), &e.object))
                        {
                            first.push(json!({"type": ev.kind, "object": ev.object}));
                        }
                    }
                    Err(_) => {
                        return *bad_request(format!(
                            "invalid resourceVersion {rv:?}: not a resourceVersion this server issued"
                        ));
                    }
                },
                None => {
                    // No resourceVersion ("0" or absent): the current state as ADDED first.
                    for o in st.configmaps.values().filter(|o| sel.matches(namespace.as_deref(), o)) {
                        first.push(json!({"type": "ADDED", "object": o}));
                    }
                }
            }
        }
        (first, inner.events.subscribe(), inner.stopped.subscribe())
    };
    tokio::spawn(async move {
        let ended_early = first.iter().any(|f| f["type"] == "ERROR");
        let mut last = 0u64;
        for v in &first {
            if let Some(rv) = v["object"]["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()) {
                last = last.max(rv);
            }
            if tx.send(line(v)).await.is_err() {
                return;
            }
        }
        if ended_early || *stopped.borrow() {
            return;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = stopped.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let rv = inner.state.lock().unwrap().rv;
                    if tx.send(line(&bookmark(rv, false))).await.is_err() {
                        return;
                    }
                }
                msg = live.recv() => match msg {
                    Ok(Signal::Event(ev)) => {
                        // Replayed already, or not for this watch.
                        if ev.rv <= last || !sel.matches(namespace.as_deref(), &ev.object) {
                            continue;
                        }
                        last = ev.rv;
                        if tx.send(line(&json!({"type": ev.kind, "object": ev.object}))).await.is_err() {
                            return;
                        }
                    }
                    Ok(Signal::Compacted(rv)) => {
                        let _ = tx.send(line(&expired(last, rv))).await;
                        return;
                    }
                    Err(_) => {
                        // Fell behind the broadcast: the real server ends such a watch too.
                        let _ = tx.send(line(&expired(last, last + 1))).await;
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::io::Error>)));
    Response::builder().status(200).header("content-type", "application/json").body(Body::from_stream(stream)).unwrap()
}

// ---- base64 (std alphabet, padded), for Secret and binaryData values ---------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decoded_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}
