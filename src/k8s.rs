//! The Kubernetes API client, configured the standard way: the in-cluster service account when
//! running in a pod, else `KUBECONFIG` / `~/.kube/config`. Shared by the `kubernetes` config
//! store and `--auth kubernetes`.

use anyhow::Context;

/// The namespace file of the pod's service account.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// A client and the namespace to use: `--namespace` if given, else the pod's, else the
/// kubeconfig context's, else `default`.
pub async fn connect(namespace: Option<&str>) -> anyhow::Result<(kube::Client, String)> {
    catalog_core::install_crypto_provider();
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration: run in a pod with a service account, or set KUBECONFIG")?;
    let namespace = match namespace {
        Some(ns) => ns.to_string(),
        None => match std::fs::read_to_string(POD_NAMESPACE_FILE) {
            Ok(ns) if !ns.trim().is_empty() => ns.trim().to_string(),
            _ => config.default_namespace.clone(),
        },
    };
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}
