//! Issue 27, item 9: a bounded chaos run. Three replicas of `--store kubernetes` on one
//! PostgreSQL (behind a proxy the test cuts) and the fake API server, with applies, refreshes
//! and read-your-writes reads on every replica while the test kills a replica with SIGKILL and
//! restarts it, cuts PostgreSQL for 10 s, makes the API server fail, drops its watches (410
//! Gone), edits a ConfigMap from outside, and finally cuts one replica alone off from the API
//! server while the last change is applied on another. Afterwards every replica serves the same sources,
//! revisions and content hashes, entity names equal to what the recorded content declares, no
//! acknowledged apply is lost and no Min-Generation read ever answered older state.
//!
//! The run is seeded: `CATALOG_BFF_CHAOS_SEED=N` replays one (the seed is printed); otherwise
//! the seed comes from the clock. About 70 s.

use crate::support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fake_kube::FakeKube;
use support::tcp_cut::Proxy;
use support::*;

const NS: &str = "chaos";
const MODELS_CM: &str = "catalog-bff-models";
/// Applied by the workers.
const APPLIED: [&str; 2] = ["s0", "s1"];
/// Edited only from outside (so an outside edit never overwrites an acknowledged apply).
const OUTSIDE: &str = "s2";

/// xorshift64*: enough to replay a schedule from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn named(prefix: &str, n: usize) -> String {
    let mut s = String::from("source: Chaos\nmodels:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: {prefix}/m{i}\n    provider: Chaos\n    license: apache-2.0\n"));
    }
    s
}

/// The entity names a catalog text declares, sorted.
fn declared(content: &str) -> Vec<String> {
    let mut names: Vec<String> =
        content.lines().filter_map(|l| l.strip_prefix("  - name: ")).map(|n| n.trim().to_string()).collect();
    names.sort();
    names
}

fn write_seed(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut sources = String::from("model_catalogs:\n");
    for id in APPLIED.iter().chain([&OUTSIDE]) {
        std::fs::write(dir.join(format!("{id}.yaml")), named(&format!("{id}-seed"), 3)).unwrap();
        sources.push_str(&format!(
            "  - name: {id}\n    id: {id}\n    type: yaml\n    properties:\n      yamlCatalogPath: {id}.yaml\n"
        ));
    }
    sources.push_str("mcp_catalogs: []\n");
    let path = dir.join("sources.yaml");
    std::fs::write(&path, sources).unwrap();
    path
}

/// An apply the server acknowledged: the revision it answered, and what it wrote.
struct Acked {
    source: String,
    revision: i64,
    content: String,
}

struct Shared {
    bases: Mutex<Vec<String>>,
    acked: Mutex<Vec<Acked>>,
    counter: AtomicU64,
    /// Min-Generation reads that answered a revision older than an acknowledged apply's.
    stale: Mutex<Vec<String>>,
    ryw_checked: AtomicUsize,
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    vars: Value,
    min: Option<&str>,
) -> Option<(Value, Option<String>)> {
    let mut req = client.post(format!("{base}/graphql")).json(&json!({"query": query, "variables": vars}));
    if let Some(g) = min {
        req = req.header("x-catalog-min-generation", g);
    }
    let resp = req.send().await.ok()?;
    let generation = resp.headers().get("x-catalog-generation").and_then(|v| v.to_str().ok()).map(str::to_string);
    Some((resp.json().await.ok()?, generation))
}

const REVISION: &str = "query($id: ID!) { source(plugin: \"models\", id: $id) { revision } }";
const REFRESH: &str =
    "mutation($id: ID!) { refreshSource(plugin: \"models\", id: $id, wait: true, confirmRemovals: true) { phase } }";

async fn worker(shared: Arc<Shared>, seed: u64, until: Instant) {
    let mut rng = Rng(seed | 1);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(8)).build().unwrap();
    while Instant::now() < until {
        let bases = shared.bases.lock().unwrap().clone();
        let here = &bases[rng.below(3) as usize];
        let source = APPLIED[rng.below(2) as usize];
        match rng.below(10) {
            0..=5 => {
                let c = shared.counter.fetch_add(1, Ordering::Relaxed);
                let content = named(&format!("{source}-{c}"), 2 + (c % 4) as usize);
                let vars = json!({"plugin": "models", "input": {"id": source, "content": content},
                                  "options": {"confirmRemovals": true, "refreshAfterApply": true}});
                let Some((body, generation)) = post(&client, here, APPLY, vars, None).await else { continue };
                let Some(revision) = body["data"]["applySource"]["revision"].as_i64() else { continue };
                shared.acked.lock().unwrap().push(Acked { source: source.into(), revision, content });
                // Read it back elsewhere with its generation: the new revision, or UNAVAILABLE.
                let there = &bases[rng.below(3) as usize];
                if let Some((read, _)) =
                    post(&client, there, REVISION, json!({"id": source}), generation.as_deref()).await
                    && let Some(seen) = read["data"]["source"]["revision"].as_i64()
                {
                    shared.ryw_checked.fetch_add(1, Ordering::Relaxed);
                    if seen < revision {
                        shared.stale.lock().unwrap().push(format!(
                            "{there}: {source} revision {seen} after an acknowledged apply of revision {revision} (generation {generation:?})"
                        ));
                    }
                }
            }
            6..=7 => {
                let _ = post(&client, here, REFRESH, json!({"id": source}), None).await;
            }
            _ => {
                let _ = post(&client, here, "{ sources { id revision } }", json!({}), None).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.below(80))).await;
    }
}

/// What one replica serves, everything the replicas must agree on.
async fn view(server: &Server) -> Value {
    let mut out = serde_json::Map::new();
    let all = server
        .ok("{ sources { id revision status { state entityCount } revisions(limit: 500) { revision contentHash action } } }", json!({}))
        .await;
    out.insert("sources".into(), all["sources"].clone());
    for id in APPLIED.iter().chain([&OUTSIDE]) {
        let d = server
            .ok(
                "query($id: ID!) { source(plugin: \"models\", id: $id) { content } entities(plugin: \"models\", sourceId: $id, first: 500) { nodes { name } } }",
                json!({"id": id}),
            )
            .await;
        let mut names: Vec<String> = d["entities"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        out.insert(format!("{id}.content"), d["source"]["content"].clone());
        out.insert(format!("{id}.entities"), json!(names));
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_agree_after_kills_database_cuts_and_api_faults() {
    if skip_without_postgres("replicas_agree_after_kills_database_cuts_and_api_faults") {
        return;
    }
    let seed: u64 = std::env::var("CATALOG_BFF_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("chaos seed {seed} (replay with CATALOG_BFF_CHAOS_SEED={seed})");
    let mut rng = Rng(seed | 1);

    let tmp = tempfile::tempdir().unwrap();
    let kube = FakeKube::start().await;
    // Each replica reaches the API server through its own proxy, so one replica alone can be
    // cut off from it (as a network partition or a node's broken route would).
    let mut api_proxies = Vec::new();
    let mut kubeconfigs = Vec::new();
    for name in ["a", "b", "c"] {
        let proxy = Proxy::start(kube.url.trim_start_matches("http://").to_string()).await;
        let dir = tmp.path().join(format!("kube-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("http://127.0.0.1:{}", proxy.port);
        kubeconfigs.push(support::fake_kube::kubeconfig_for(&url, &kube.sa_token(), &dir, NS));
        api_proxies.push(proxy);
    }
    let seed_file = write_seed(&tmp.path().join("seed"));
    let db = database_url(Backend::Postgres, tmp.path()).await;
    let (proxy, proxied) = Proxy::for_url(&db).await;
    let seed_arg = seed_file.display().to_string();
    let args = |name: &'static str| -> Vec<String> {
        [
            "--store",
            "kubernetes",
            "--namespace",
            NS,
            "--seed",
            &seed_arg,
            "--replica-id",
            name,
            "--watch-interval",
            "5",
            "--rate-limit",
            "0",
            "--db-timeout",
            "1",
            "--job-lease",
            "3",
            "--consistency-wait",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let names = ["a", "b", "c"];
    let start = async |i: usize| {
        let data = tmp.path().join(names[i]);
        std::fs::create_dir_all(&data).unwrap();
        let a = args(names[i]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let env = [("KUBECONFIG", kubeconfigs[i].to_str().unwrap())];
        TestServer::new(&data).database(&proxied).flags(&a).envs(&env).start().await
    };
    let mut servers = Vec::new();
    for i in 0..names.len() {
        servers.push(start(i).await);
    }
    let shared = Arc::new(Shared {
        bases: Mutex::new(servers.iter().map(|s| s.base.clone()).collect()),
        acked: Mutex::new(Vec::new()),
        counter: AtomicU64::new(0),
        stale: Mutex::new(Vec::new()),
        ryw_checked: AtomicUsize::new(0),
    });
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(50);
    let workers: Vec<_> = (0..3).map(|k| tokio::spawn(worker(shared.clone(), rng.next() ^ k, until))).collect();
    let at = async |secs: u64| tokio::time::sleep_until((t0 + Duration::from_secs(secs)).into()).await;

    // A replica dies (SIGKILL) and comes back.
    at(4 + rng.below(4)).await;
    let victim = rng.below(3) as usize;
    eprintln!("t={:?}: kill -9 replica {}", t0.elapsed(), names[victim]);
    drop(servers.remove(victim).kill());
    tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
    let back = start(victim).await;
    shared.bases.lock().unwrap()[victim] = back.base.clone();
    servers.insert(victim, back);

    // PostgreSQL goes silent for 10 s.
    at(15).await;
    eprintln!("t={:?}: PostgreSQL cut", t0.elapsed());
    proxy.cut.send_replace(true);
    at(25).await;
    proxy.cut.send_replace(false);
    eprintln!("t={:?}: PostgreSQL back", t0.elapsed());

    // The API server fails (500) for a while, then forgets its history (watches get 410).
    at(28 + rng.below(3)).await;
    kube.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1000 + rng.below(3000))).await;
    kube.set_failing(false);
    at(35).await;
    kube.compact();

    // Outside edits of s2 (as `kubectl edit` would), adding a model each time.
    for round in 0..2 {
        at(37 + 5 * round).await;
        let mut data = kube.configmap_data(NS, MODELS_CM).unwrap();
        let key = format!("{OUTSIDE}-models.yaml");
        let current = data.get(&key).cloned().unwrap_or_default();
        data.insert(
            key,
            format!("{current}  - name: {OUTSIDE}-outside/m{round}\n    provider: Chaos\n    license: apache-2.0\n"),
        );
        kube.put_configmap(NS, MODELS_CM, data);
    }
    for w in workers {
        w.await.unwrap();
    }
    eprintln!(
        "t={:?}: workload over: {} applies acknowledged, {} read-your-writes reads checked",
        t0.elapsed(),
        shared.acked.lock().unwrap().len(),
        shared.ryw_checked.load(Ordering::Relaxed)
    );

    // Settle: one confirmed refresh of each source (an apply acknowledged while its refresh
    // could not run is loaded now), then every replica must agree.
    for id in APPLIED.iter().chain([&OUTSIDE]) {
        eventually(&format!("the final refresh of {id} succeeds"), Duration::from_secs(30), async || {
            let d = servers[0].gql(REFRESH, json!({"id": id})).await;
            if d["data"]["refreshSource"]["phase"] == "SUCCEEDED" { Ok(()) } else { Err(d) }
        })
        .await;
    }
    let _settled = eventually(
        &format!("seed {seed}: replicas agree within 10 s after the faults ended"),
        Duration::from_secs(10),
        async || {
            let mut views = Vec::new();
            for s in &servers {
                views.push(view(s).await);
            }
            if views.windows(2).all(|w| w[0] == w[1]) {
                return Ok(views.swap_remove(0));
            }
            let diff: Vec<String> = views.iter().map(|v| serde_json::to_string(v).unwrap()).collect();
            Err(diff)
        },
    )
    .await;
    eprintln!("converged {:?} after the workload", t0.elapsed() - Duration::from_secs(50));

    // The last change while one replica cannot reach the API server, and nothing after it:
    // that replica must catch up by itself once it can (before: it counted the change as
    // applied without reading it and served the old content for good).
    let cut_off = rng.below(3) as usize;
    let writer = (cut_off + 1) % 3;
    eprintln!("replica {} cut off from the API server; the last apply goes to {}", names[cut_off], names[writer]);
    api_proxies[cut_off].cut.send_replace(true);
    let last = named("s0-last", 5);
    let vars = json!({"plugin": "models", "input": {"id": "s0", "content": last},
                      "options": {"confirmRemovals": true, "refreshAfterApply": true}});
    let body = servers[writer].ok(APPLY, vars).await;
    let last_revision = body["applySource"]["revision"].as_i64().unwrap();
    shared.acked.lock().unwrap().push(Acked { source: "s0".into(), revision: last_revision, content: last.clone() });
    tokio::time::sleep(Duration::from_secs(2)).await;
    api_proxies[cut_off].cut.send_replace(false);
    let agreed = eventually(
        &format!(
            "seed {seed}: within 15 s after replica {} could reach the API server again, the replicas agree on s0",
            names[cut_off]
        ),
        Duration::from_secs(15),
        async || {
            let mut views = Vec::new();
            for s in &servers {
                views.push(view(s).await);
            }
            if views.windows(2).all(|w| w[0] == w[1]) && views[0]["s0.content"] == json!(last) {
                return Ok(views.swap_remove(0));
            }
            let diff: Vec<String> = views.iter().map(|v| serde_json::to_string(&v["s0.content"]).unwrap()).collect();
            Err(diff)
        },
    )
    .await;

    let stale = shared.stale.lock().unwrap();
    assert!(stale.is_empty(), "seed {seed}: Min-Generation reads answered older state:\n{}", stale.join("\n"));
    // Entity names are what the recorded content declares, on every replica (they agree).
    for id in APPLIED.iter().chain([&OUTSIDE]) {
        let content = agreed[format!("{id}.content")].as_str().unwrap();
        assert_eq!(agreed[format!("{id}.entities")], json!(declared(content)), "seed {seed}: {id}");
    }
    let outside = agreed[format!("{OUTSIDE}.content")].as_str().unwrap();
    assert!(outside.contains("s2-outside/m1"), "seed {seed}: the outside edits were not all recorded: {outside}");
    // No acknowledged apply is lost: each is in the history, and the newest is what is served
    // unless a later apply went through whose answer was lost.
    let sources: BTreeMap<String, &Value> =
        agreed["sources"].as_array().unwrap().iter().map(|s| (s["id"].as_str().unwrap().to_string(), s)).collect();
    let acked = shared.acked.lock().unwrap();
    assert!(!acked.is_empty(), "seed {seed}: no apply was acknowledged at all");
    for a in acked.iter() {
        let s = sources[&a.source];
        let recorded = s["revisions"].as_array().unwrap().iter().any(|r| r["revision"] == a.revision);
        assert!(recorded, "seed {seed}: acknowledged revision {} of {} is not in the history", a.revision, a.source);
    }
    for id in APPLIED {
        let newest = acked.iter().filter(|a| a.source == id).max_by_key(|a| a.revision);
        if let Some(newest) = newest
            && sources[id]["revision"] == newest.revision
        {
            assert_eq!(agreed[format!("{id}.content")], newest.content, "seed {seed}: {id}");
        }
    }
}
