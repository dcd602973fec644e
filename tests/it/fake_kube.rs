//! Self-test of the fake Kubernetes API server (`tests/it/support/fake_kube.rs`) with the real kube
//! client and kube-runtime's watcher: if the fake drifts from what they expect, the ConfigMap
//! store and `--auth kubernetes` tests would test nothing.

use crate::support;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::time::Duration;
use support::fake_kube::FakeKube;

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    catalog_core::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn api_code(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API status error, got {other:?}"),
    }
}

#[tokio::test]
async fn stale_resource_version_is_409_conflict_and_race_next_update_makes_one() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&fake.kubeconfig(dir.path(), "ns")).await, "ns");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("cm".into());
    cm.data = Some(data(&[("a", "1")]));
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let (code, reason, _) = api_code(api.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    // Someone else writes in between: our resourceVersion is stale.
    fake.put_configmap("ns", "cm", data(&[("a", "2")]));
    let mut stale = created.clone();
    stale.data = Some(data(&[("a", "mine")]));
    let (code, reason, message) = api_code(api.replace("cm", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("the object has been modified"), "{message}");

    // With the current one it goes through; with race_next_update it does not, and the racing
    // write is what is stored.
    let mut fresh = api.get("cm").await.unwrap();
    fresh.data = Some(data(&[("a", "mine")]));
    fake.race_next_update("ns", "cm", |d| {
        d.insert("a".into(), "theirs".into());
    });
    let (code, ..) = api_code(api.replace("cm", &PostParams::default(), &fresh).await.unwrap_err());
    assert_eq!(code, 409);
    assert_eq!(fake.configmap_data("ns", "cm").unwrap()["a"], "theirs");
    let mut fresh = api.get("cm").await.unwrap();
    fresh.data = Some(data(&[("a", "mine")]));
    api.replace("cm", &PostParams::default(), &fresh).await.unwrap();
    assert_eq!(fake.configmap_data("ns", "cm").unwrap()["a"], "mine");

    // Merge and strategic merge patches on data; null deletes a key; a stale
    // resourceVersion in the patch is a failed precondition.
    let p = serde_json::json!({"data": {"b": "2"}});
    api.patch("cm", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    let p = serde_json::json!({"data": {"a": null}});
    api.patch("cm", &PatchParams::default(), &Patch::Strategic(&p)).await.unwrap();
    assert_eq!(fake.configmap_data("ns", "cm").unwrap(), data(&[("b", "2")]));
    let p = serde_json::json!({"metadata": {"resourceVersion": "1"}, "data": {"c": "3"}});
    let (code, ..) = api_code(api.patch("cm", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap_err());
    assert_eq!(code, 409);

    let (code, reason, _) = api_code(api.get("nope").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn over_one_mebibyte_is_422_invalid_and_stores_nothing() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&fake.kubeconfig(dir.path(), "ns")).await, "ns");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("big".into());
    // key (1 byte) + value: exactly at the limit is fine, one more byte is not.
    cm.data = Some(data(&[("k", &"x".repeat(1024 * 1024 - 1))]));
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut cm = api.get("big").await.unwrap();
    cm.data = Some(data(&[("k", &"x".repeat(1024 * 1024))]));
    let (code, reason, message) = api_code(api.replace("big", &PostParams::default(), &cm).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("Too long: must have at most 1048576 bytes"), "{message}");
    assert_eq!(fake.configmap_data("ns", "big").unwrap()["k"].len(), 1024 * 1024 - 1);
}

#[tokio::test]
async fn the_watcher_sees_a_put_and_recovers_from_410_after_compact() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.put_configmap("ns", "cm", data(&[("a", "1")]));
    let api: Api<ConfigMap> = Api::namespaced(client(&fake.kubeconfig(dir.path(), "ns")).await, "ns");
    let mut stream = watcher(api, watcher::Config::default().fields("metadata.name=cm")).boxed();
    let mut next = async || tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
    // The initial list.
    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    match next().await {
        Ok(watcher::Event::InitApply(cm)) => assert_eq!(cm.data.unwrap()["a"], "1"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next().await, Ok(watcher::Event::InitDone)));
    // A kubectl-edit-style change arrives as an Apply.
    fake.put_configmap("ns", "cm", data(&[("a", "2")]));
    fake.put_configmap("ns", "other", data(&[("a", "x")])); // filtered out by the field selector
    match next().await {
        Ok(watcher::Event::Apply(cm)) => assert_eq!(cm.data.unwrap()["a"], "2"),
        other => panic!("{other:?}"),
    }
    // History is compacted: the watch ends with 410, the watcher re-lists and sees the state.
    fake.compact();
    match next().await {
        Err(watcher::Error::WatchError(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    match next().await {
        Ok(watcher::Event::InitApply(cm)) => assert_eq!(cm.data.unwrap()["a"], "2"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next().await, Ok(watcher::Event::InitDone)));
    fake.delete_configmap("ns", "cm");
    assert!(matches!(next().await, Ok(watcher::Event::Delete(_))));
    // The watcher listed and watched with the field selector, asking for bookmarks.
    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")), "{reqs:#?}");
}

#[tokio::test]
async fn a_raw_watch_from_before_a_compaction_gets_an_in_stream_410() {
    let fake = FakeKube::start().await;
    fake.put_configmap("ns", "cm", data(&[("a", "1")]));
    let old = fake.resource_version();
    fake.put_configmap("ns", "cm", data(&[("a", "2")]));
    fake.compact();
    let url = format!("{}/api/v1/namespaces/ns/configmaps?watch=true&resourceVersion={old}", fake.url);
    let resp = support::client().get(url).bearer_auth(fake.sa_token()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "real API servers report this inside the stream");
    let text = resp.text().await.unwrap();
    let ev: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
}

#[tokio::test]
async fn a_wrong_token_is_401_and_a_denied_verb_is_403() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = support::fake_kube::kubeconfig_for(&fake.url, "not-the-token", dir.path(), "ns");
    let api: Api<ConfigMap> = Api::namespaced(client(&wrong).await, "ns");
    let (code, reason, _) = api_code(api.get("cm").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));

    fake.put_configmap("ns", "cm", data(&[("a", "1")]));
    fake.deny("update", "configmaps");
    let api: Api<ConfigMap> = Api::namespaced(client(&fake.kubeconfig(dir.path(), "ns")).await, "ns");
    let cm = api.get("cm").await.unwrap();
    let (code, reason, _) = api_code(api.replace("cm", &PostParams::default(), &cm).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(fake.requests().iter().filter(|r| r.starts_with("PUT ")).count(), 1);
}

#[tokio::test]
async fn the_watcher_works_with_streaming_lists_too() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.put_configmap("ns", "cm", data(&[("a", "1")]));
    let api: Api<ConfigMap> = Api::namespaced(client(&fake.kubeconfig(dir.path(), "ns")).await, "ns");
    let mut stream = watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut next = async || tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    assert!(matches!(next().await, Ok(watcher::Event::InitApply(_))));
    assert!(matches!(next().await, Ok(watcher::Event::InitDone)));
    fake.put_configmap("ns", "cm", data(&[("a", "2")]));
    match next().await {
        Ok(watcher::Event::Apply(cm)) => assert_eq!(cm.data.unwrap()["a"], "2"),
        other => panic!("{other:?}"),
    }
    assert!(fake.requests().iter().all(|r| r.contains("watch=true")), "no LIST with streaming lists");
}
