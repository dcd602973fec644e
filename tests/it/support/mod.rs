//! Test helpers: start the real `catalog-bff` binary on an ephemeral port against a real SQLite
//! file or a real PostgreSQL database, and talk to it over real HTTP.
#![allow(dead_code, reason = "each test module uses some of the helpers")]

pub mod fake_kube;
pub mod tcp_cut;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_catalog-bff");

/// catalogctl's binary: its own crate (crates/catalogctl), built by the same `cargo test` at the
/// top into the same directory as the server's (its package has an integration test, so cargo
/// builds the binary before any test runs).
pub fn catalogctl_bin() -> std::path::PathBuf {
    let bin = std::path::Path::new(BIN).with_file_name(format!("catalogctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: `cargo test` at the top builds it (or `cargo build -p catalogctl`)",
        bin.display()
    );
    bin
}

/// An HTTP client (installs the rustls provider the way the server does).
pub fn client() -> reqwest::Client {
    catalog_core::install_crypto_provider();
    reqwest::Client::new()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The databases every behavioural test runs against. PostgreSQL comes from
/// `CATALOG_BFF_TEST_POSTGRES_URL` (set by `.ci/run`, which starts a throwaway server);
/// `CATALOG_BFF_REQUIRE_POSTGRES=1` turns its absence into a failure instead of a skip.
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    if std::env::var("CATALOG_BFF_TEST_POSTGRES_URL").is_ok() {
        out.push(Backend::Postgres);
    } else if std::env::var("CATALOG_BFF_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!(
            "CATALOG_BFF_REQUIRE_POSTGRES=1 but CATALOG_BFF_TEST_POSTGRES_URL is not set; run the suite with `bash .ci/run`"
        );
    } else {
        eprintln!("note: PostgreSQL not configured (CATALOG_BFF_TEST_POSTGRES_URL); running on SQLite only");
    }
    out
}

/// Whether a test that needs PostgreSQL must skip (none configured): says so on stderr as
/// `SKIPPED <test>` and answers true. `.ci/run` configures one and requires it.
pub fn skip_without_postgres(test: &str) -> bool {
    if backends().contains(&Backend::Postgres) {
        return false;
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs PostgreSQL (run .ci/run)");
    true
}

/// Upstream fixtures: `CATALOG_BFF_FIXTURES`, else `../shared/fixtures/upstream` beside the repo.
/// `None` (with a loud note on stderr naming the test) when they are not there: the tests on
/// upstream files are then skipped, and `tests/sample_formats.rs` covers the same formats with
/// the project's own samples.
pub fn upstream_fixtures(test: &str) -> Option<PathBuf> {
    let p = match std::env::var("CATALOG_BFF_FIXTURES") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/upstream"),
    };
    if p.is_dir() {
        return Some(p);
    }
    // Written to the process's stderr directly, not through `eprintln!`, which the test harness
    // captures and hides for passing tests: a skip must be visible in the run's output.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: upstream fixtures not found at {} (set CATALOG_BFF_FIXTURES or put ../shared beside the repo)",
        p.display()
    );
    None
}

/// Writes `DIR/tokens.yaml` for `--auth static`, one `(name, role, token)` per caller (the file
/// holds only each token's sha256), and returns its path.
pub fn tokens_file(dir: &Path, callers: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::from("tokens:\n");
    for (name, role, token) in callers {
        text.push_str(&format!(
            "  - name: {name}\n    role: {role}\n    sha256: {}\n",
            catalog_bff::auth::sha256_hex(token)
        ));
    }
    let p = dir.join("tokens.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The Chromium the page tests drive: `CATALOG_BFF_CHROMIUM`, else `/usr/bin/chromium`. `None`
/// (with a loud SKIPPED line naming the test) when there is none, unless
/// `CATALOG_BFF_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes a missing browser a failure.
pub fn chromium(test: &str) -> Option<PathBuf> {
    let p = match std::env::var("CATALOG_BFF_CHROMIUM") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/usr/bin/chromium"),
    };
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("CATALOG_BFF_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "{test}: CATALOG_BFF_REQUIRE_BROWSER=1 but no chromium at {} (apt-get install chromium, or set CATALOG_BFF_CHROMIUM)",
        p.display()
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no chromium at {} (set CATALOG_BFF_CHROMIUM)", p.display());
    None
}

/// Every source's query for [`source_states`] (and for reading `lastError`).
pub const LIST: &str = "{ sources { plugin id enabled status { state entityCount lastError } } }";

/// `plugin/id` → (state, entity count) of every source.
pub async fn source_states(server: &Server) -> std::collections::BTreeMap<String, (String, u64)> {
    let data = server.ok(LIST, json!({})).await;
    data["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s: &Value| {
            (
                format!("{}/{}", s["plugin"].as_str().unwrap(), s["id"].as_str().unwrap()),
                (s["status"]["state"].as_str().unwrap().to_string(), s["status"]["entityCount"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// A fresh database URL for one server.
pub async fn database_url(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
        Backend::Postgres => {
            use sea_orm::ConnectionTrait;
            let admin = std::env::var("CATALOG_BFF_TEST_POSTGRES_URL").expect("postgres url");
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let conn = sea_orm::Database::connect(&admin).await.expect("connect to test postgres");
            conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
            conn.close().await.ok();
            // Replace the database name in the admin URL.
            let base = match admin.rfind('/') {
                Some(i) if i > "postgres://".len() => admin[..i].to_string(),
                _ => admin.clone(),
            };
            format!("{base}/{name}")
        }
    }
}

/// Copies a directory tree (catalog fixtures into a scratch dir).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes, for "nothing changed" assertions: what an operator's
/// catalog directory holds. The server's own database is not part of it.
pub fn tree_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if !p.to_string_lossy().contains("test.db") {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, &mut out);
    out
}

/// Polls `check` every 50 ms until it returns `Ok(value)`, and returns that value. When
/// `within` has passed it panics with `what` and the last `Err` it saw (so the failure says
/// what the state was, not only that time ran out). The one polling loop of the suite.
pub async fn eventually<T, E: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last seen: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    pub sources: PathBuf,
    pub database: String,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// How to start the server under test: `TestServer::new(dir).database(&db).start().await`.
/// By default it serves the bundled example seeded into `dir` (no `--sources`), with JSON logs
/// at info, on an ephemeral port, and `start` waits until `/readyz` answers 200.
pub struct TestServer {
    dir: PathBuf,
    sources: Option<PathBuf>,
    database: Option<String>,
    backend: Option<Backend>,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    nofile: Option<u64>,
    wait_ready: bool,
}

impl TestServer {
    pub fn new(dir: impl AsRef<Path>) -> TestServer {
        TestServer {
            dir: dir.as_ref().to_path_buf(),
            sources: None,
            database: None,
            backend: None,
            flags: Vec::new(),
            env: Vec::new(),
            nofile: None,
            wait_ready: true,
        }
    }

    /// `--sources PATH` (else `DATA_DIR/sources.yaml`, seeded with the example).
    pub fn sources(mut self, path: impl AsRef<Path>) -> Self {
        self.sources = Some(path.as_ref().to_path_buf());
        self
    }

    pub fn sources_opt(mut self, path: Option<impl AsRef<Path>>) -> Self {
        self.sources = path.map(|p| p.as_ref().to_path_buf());
        self
    }

    /// `--database URL`.
    pub fn database(mut self, url: impl AsRef<str>) -> Self {
        self.database = Some(url.as_ref().to_string());
        self
    }

    /// A fresh database of this backend (see [`database_url`]), when no URL is given.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// A fresh PostgreSQL database (the test should have checked `skip_without_postgres`).
    pub fn postgres(self) -> Self {
        self.backend(Backend::Postgres)
    }

    /// One more `serve` flag (or its value).
    pub fn flag(mut self, flag: impl AsRef<str>) -> Self {
        self.flags.push(flag.as_ref().to_string());
        self
    }

    /// More `serve` flags, in order.
    pub fn flags<S: AsRef<str>>(mut self, flags: &[S]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.as_ref().to_string()));
        self
    }

    /// Extra environment variables (e.g. `KUBECONFIG`).
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(mut self, env: &[(K, V)]) -> Self {
        self.env.extend(env.iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())));
        self
    }

    /// The process's file-descriptor limit (soft and hard), as `ulimit -n` would set it.
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// Return as soon as the server listens, without waiting for `/readyz`.
    pub fn no_wait(self) -> Self {
        self.wait_ready(false)
    }

    pub fn wait_ready(mut self, wait: bool) -> Self {
        self.wait_ready = wait;
        self
    }

    pub async fn start(self) -> Server {
        let database = match (self.database, self.backend) {
            (Some(url), _) => url,
            (None, backend) => database_url(backend.unwrap_or(Backend::Sqlite), &self.dir).await,
        };
        let mut cmd = Command::new(BIN);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(nofile) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the limit struct we pass.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        Server::spawn(cmd, &self.dir, self.sources.as_deref(), &database, self.wait_ready, &flags).await
    }
}

impl Server {
    /// Starts the server on the bundled example, seeded into `dir`.
    pub async fn example(backend: Backend, dir: &Path) -> Server {
        TestServer::new(dir).backend(backend).start().await
    }

    async fn spawn(
        mut cmd: Command,
        dir: &Path,
        sources: Option<&Path>,
        database: &str,
        wait_ready: bool,
        extra: &[&str],
    ) -> Server {
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .arg("--database")
            .arg(database)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(s) = sources {
            cmd.arg("--sources").arg(s);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("start catalog-bff");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let logs2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_string());
                }
                logs2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; logs:\n{}", logs.lock().unwrap().join("\n"));
            }
        };
        let server = Server {
            child,
            base: format!("http://{addr}"),
            client: client(),
            dir: dir.to_path_buf(),
            sources: sources.map(Path::to_path_buf).unwrap_or_else(|| dir.join("sources.yaml")),
            database: database.to_string(),
            logs,
        };
        if wait_ready {
            server.wait_ready().await;
        }
        server
    }

    pub async fn wait_ready(&self) {
        eventually("the server is ready", Duration::from_secs(60), async || {
            match self.client.get(format!("{}/readyz", self.base)).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("/readyz answered {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// POSTs a GraphQL request and returns the whole JSON body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("POST /graphql");
        resp.json().await.expect("JSON body")
    }

    /// POSTs a document with several operations, selecting one by `operationName`.
    pub async fn gql_op(&self, document: &str, operation: &str, variables: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .json(&json!({"query": document, "operationName": operation, "variables": variables}))
            .send()
            .await
            .expect("POST /graphql");
        resp.json().await.expect("JSON body")
    }

    /// Like `gql`, but fails the test on any GraphQL error and returns `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> (PathBuf, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (self.dir.clone(), self.database.clone())
    }

    /// Stops the server with SIGKILL: no clean-up at all, as in a crash.
    pub fn kill(mut self) -> (PathBuf, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir.clone(), self.database.clone())
    }

    /// Reads one metric value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SOURCE_QUERY: &str = r#"query($plugin: String!, $id: ID!) {
  source(plugin: $plugin, id: $id) {
    id plugin name type enabled labels properties content revision
    status { state entityCount lastRefreshTime lastRefreshStatus lastRefreshSummary lastError entitiesLoaded entitiesRemoved durationMs diagnostics { message line column } }
    revisions(limit: 50) { revision action actor contentHash content }
  }
}"#;

pub const APPLY: &str = r#"mutation($plugin: String!, $input: SourceInput!, $options: ApplyOptions) {
  applySource(plugin: $plugin, input: $input, options: $options) {
    revision changed dryRun
    validation { valid errors { message line column field } warnings { message line column field layer } }
    impact { toAdd toUpdate toRemove unchanged addedNames removedNames }
    refresh { id phase total completed results { status entitiesLoaded entitiesAdded entitiesRemoved summary } }
    source { id revision content status { state entityCount lastRefreshTime lastRefreshSummary } }
  }
}"#;

/// A model catalog with `n` models named `m0..m{n-1}`.
pub fn models_yaml(n: usize) -> String {
    let mut s = String::from("source: Test\nmodels:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - name: test/m{i}\n    provider: Tester\n    description: model number {i}\n    license: apache-2.0\n    artifacts:\n      - uri: oci://registry.example.com/test/m{i}:1\n"
        ));
    }
    s
}

pub fn error_code(body: &Value) -> Option<String> {
    body["errors"][0]["extensions"]["code"].as_str().map(str::to_string)
}

// ---- a catalog host for url sources ------------------------------------------------------------

/// A real HTTP server serving a catalog YAML, with scripted failures, for `url` source tests.
#[derive(Default)]
pub struct HostState {
    pub body: String,
    pub etag: Option<String>,
    /// The next N requests answer 500.
    pub fail_next: usize,
    /// Delay before answering, in milliseconds.
    pub delay_ms: u64,
    pub requests: usize,
    pub not_modified: usize,
    pub last_auth: Option<String>,
    /// When each request arrived.
    pub arrivals: Vec<std::time::Instant>,
}

pub struct CatalogHost {
    pub url: String,
    pub state: std::sync::Arc<std::sync::Mutex<HostState>>,
}

impl CatalogHost {
    pub async fn start(body: String) -> CatalogHost {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        type Shared = std::sync::Arc<std::sync::Mutex<HostState>>;
        async fn serve(State(st): State<Shared>, headers: HeaderMap) -> axum::response::Response {
            let delay = {
                let mut s = st.lock().unwrap();
                s.requests += 1;
                s.arrivals.push(std::time::Instant::now());
                s.last_auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                s.delay_ms
            };
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let mut s = st.lock().unwrap();
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
            }
            let inm = headers.get("if-none-match").and_then(|v| v.to_str().ok());
            if let (Some(tag), Some(inm)) = (&s.etag, inm)
                && tag == inm
            {
                s.not_modified += 1;
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let mut resp = s.body.clone().into_response();
            if let Some(tag) = &s.etag {
                resp.headers_mut().insert("etag", tag.parse().unwrap());
            }
            resp
        }
        let state: Shared = std::sync::Arc::new(std::sync::Mutex::new(HostState { body, ..HostState::default() }));
        let app = axum::Router::new().route("/catalog.yaml", axum::routing::get(serve)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CatalogHost { url: format!("http://{addr}/catalog.yaml"), state }
    }
}

/// Runs `tests/node/client.mjs` (graphql-ws or graphql-sse) and returns its stdout lines as they come.
pub fn node_client(
    transport: &str,
    base: &str,
    query: &str,
    variables: Value,
) -> (tokio::process::Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/graphql-ws").is_dir(),
        "node test clients missing: run `npm ci --prefix tests/node` (bash .ci/run does)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("client.mjs"))
        .args([transport, base, query, &variables.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let rx = stdout_lines(&mut child);
    (child, rx)
}

/// The lines a child (started with a piped stdout) prints, as they come.
pub fn stdout_lines(child: &mut tokio::process::Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from a node client, failing the test after `secs`.
pub async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, secs: u64) -> String {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .expect("timed out waiting for the client")
        .expect("client exited")
}

/// A minimal graphql-transport-ws client over tokio-tungstenite (the Rust peer).
pub struct WsClient {
    pub socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl WsClient {
    pub async fn connect(base: &str, origin: Option<&str>) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("{}/graphql/ws", base.replacen("http", "ws", 1)).into_client_request()?;
        req.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (mut socket, _) = tokio_tungstenite::connect_async(req).await?;
        use futures_util::SinkExt;
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(json!({"type": "connection_init"}).to_string().into()))
            .await?;
        let mut c = WsClient { socket };
        let ack = c.next_message(10).await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        Ok(c)
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        use futures_util::SinkExt;
        let msg = json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}});
        self.socket.send(tokio_tungstenite::tungstenite::Message::Text(msg.to_string().into())).await.unwrap();
    }

    /// The next protocol message other than ping/pong (answering pings), or None on close/timeout.
    pub async fn next_message(&mut self, secs: u64) -> Option<Value> {
        use futures_util::{SinkExt, StreamExt};
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()??.ok()?;
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v["type"] == "ping" {
                    let _ = self
                        .socket
                        .send(tokio_tungstenite::tungstenite::Message::Text(json!({"type": "pong"}).to_string().into()))
                        .await;
                    continue;
                }
                if v["type"] == "pong" {
                    continue;
                }
                return Some(v);
            } else if let tokio_tungstenite::tungstenite::Message::Close(_) = msg {
                return None;
            }
        }
    }
}
