//! `--auth kubernetes`: the caller's bearer token is a Kubernetes identity (a user's token, a
//! CI service account's token), checked the way Kubeflow's own BFFs do:
//!
//! 1. **Who**: a `TokenReview` asks the API server whether the token is valid and whose it is.
//!    The Kubernetes user name becomes the [`Caller`] name, so it is the actor on revisions,
//!    jobs and audit rows.
//! 2. **What**: `SubjectAccessReview`s ask whether that user (with its groups) may
//!    `--auth-operator-verb` (else `--auth-viewer-verb`) the `--auth-resource` in `--namespace`,
//!    named `<--configmap-prefix>-<plugin>`, for every plugin. A caller's role is the lowest over
//!    the plugins: operator only if they may change every plugin's ConfigMap, viewer if they may
//!    at least read every one, else FORBIDDEN. (Roles are global in this server, so a partial
//!    grant must not widen into a full one.)
//!
//! Decisions are cached for `--auth-cache-ttl` seconds, keyed by sha256(token) so no token is
//! kept in memory longer than a request. Both caches are bounded; unknown tokens go to their own
//! cache so a flood of random tokens cannot evict the real callers' decisions. An API server
//! that cannot be reached (or answers 5xx) gives UNAVAILABLE and is never cached: the next
//! request asks again.
//!
//! The API calls are bounded whatever the callers do: concurrent requests with one token share
//! one review (single flight, per token hash), and at most [`MAX_REVIEWS`] reviews run at once;
//! beyond them a request waits for a place at most [`REVIEW_WAIT`], then gets UNAVAILABLE.
//! (Failed authentications are also limited per client address, before this: `http::security`.)
//!
//! The Kubernetes client is built on first use (start-up is synchronous up to the listener, and
//! the client's configuration is read asynchronously); whether a configuration exists at all is
//! checked at start-up, so a missing kubeconfig fails fast.

use super::{AuthError, Authenticator, Caller, Role, sha256_hex};
use catalog_core::PluginKind;
use futures_util::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::time::Duration;

/// Most cached decisions for callers the API server knows (each entry is small).
const MAX_DECISIONS: u64 = 10_000;
/// Most cached "unknown token" answers.
const MAX_REJECTIONS: u64 = 10_000;
/// How long one API call may take before the caller gets UNAVAILABLE.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// What an UNAVAILABLE answer tells the client to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 5;
/// Token reviews (TokenReview plus SubjectAccessReviews) in flight at once.
pub const MAX_REVIEWS: usize = 16;
/// How long a request waits for one of those places.
const REVIEW_WAIT: Duration = Duration::from_secs(2);

/// The settings of `--auth kubernetes`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--namespace`; None = the pod's, else the kubeconfig context's.
    pub namespace: Option<String>,
    pub configmap_prefix: String,
    /// `--auth-resource`, `[GROUP/]RESOURCE`.
    pub resource: String,
    pub viewer_verb: String,
    pub operator_verb: String,
    pub cache_ttl: Duration,
}

/// A cached outcome for one token: a caller, or why not.
#[derive(Clone, Debug)]
enum Decision {
    Allowed(Caller),
    Forbidden(String),
}

/// Why a review gave no decision to cache.
#[derive(Clone, Debug)]
enum NoDecision {
    /// The API server does not know the token (cached as a rejection).
    Unknown(String),
    /// The API server could not be asked (never cached).
    Unavailable(AuthError),
}

pub struct KubernetesAuth {
    settings: Settings,
    group: String,
    resource: String,
    client: tokio::sync::OnceCell<(kube::Client, String)>,
    decisions: moka::future::Cache<String, Decision>,
    rejections: moka::future::Cache<String, String>,
    reviews: Arc<tokio::sync::Semaphore>,
}

/// A user as a TokenReview answered: everything a SubjectAccessReview must repeat.
struct Reviewed {
    name: String,
    groups: Vec<String>,
    uid: Option<String>,
    extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

impl KubernetesAuth {
    /// Checks the settings and that a Kubernetes configuration exists (nothing is connected to).
    pub fn new(settings: Settings) -> anyhow::Result<KubernetesAuth> {
        let (group, resource) = match settings.resource.split_once('/') {
            Some((g, r)) => (g.trim().to_string(), r.trim().to_string()),
            None => (String::new(), settings.resource.trim().to_string()),
        };
        anyhow::ensure!(
            !resource.is_empty() && !resource.contains('/'),
            "--auth-resource {:?} is not `[GROUP/]RESOURCE` (e.g. `configmaps`, or `example.com/catalogs`)",
            settings.resource
        );
        for (flag, verb) in
            [("--auth-viewer-verb", &settings.viewer_verb), ("--auth-operator-verb", &settings.operator_verb)]
        {
            anyhow::ensure!(
                !verb.trim().is_empty() && !verb.contains(char::is_whitespace),
                "{flag} {verb:?} is not a Kubernetes verb (e.g. get, update)"
            );
        }
        anyhow::ensure!(
            kube::Config::incluster().is_ok() || kube::config::Kubeconfig::read().is_ok(),
            "--auth kubernetes needs a Kubernetes configuration: run in a pod with a service account, or set KUBECONFIG"
        );
        let ttl = settings.cache_ttl.max(Duration::from_millis(1));
        Ok(KubernetesAuth {
            decisions: moka::future::Cache::builder().max_capacity(MAX_DECISIONS).time_to_live(ttl).build(),
            rejections: moka::future::Cache::builder().max_capacity(MAX_REJECTIONS).time_to_live(ttl).build(),
            settings,
            group,
            resource,
            client: tokio::sync::OnceCell::new(),
            reviews: Arc::new(tokio::sync::Semaphore::new(MAX_REVIEWS)),
        })
    }

    async fn client(&self) -> Result<&(kube::Client, String), AuthError> {
        self.client
            .get_or_try_init(|| crate::k8s::connect(self.settings.namespace.as_deref()))
            .await
            .map_err(|e| unavailable(format!("{e:#}")))
    }

    /// Who the token belongs to (what a SubjectAccessReview needs to ask about them): Ok(Ok(user)), Ok(Err(why not)) for a token the API server
    /// rejects, Err for an API server that did not answer.
    async fn review_token(&self, token: &str) -> Result<Result<Reviewed, String>, AuthError> {
        let (client, _) = self.client().await?;
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_string(), audiences: None },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(client.clone());
        let answer = call("TokenReview", api.create(&PostParams::default(), &review)).await?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        match (status.authenticated, user.username) {
            (Some(true), Some(name)) if !name.is_empty() => {
                Ok(Ok(Reviewed { name, groups: user.groups.unwrap_or_default(), uid: user.uid, extra: user.extra }))
            }
            _ => Ok(Err("the token is not valid for this cluster (TokenReview: not authenticated)".into())),
        }
    }

    /// Whether `user` may `verb` the configured resource named `name`.
    async fn may(&self, user: &Reviewed, verb: &str, name: &str) -> Result<bool, AuthError> {
        let (client, namespace) = self.client().await?;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                uid: user.uid.clone(),
                // Token scopes (OpenShift's `scopes.authorization.openshift.io`) travel in
                // `extra`: without them a scoped token would be judged as its whole user.
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.clone()),
                    verb: Some(verb.to_string()),
                    group: Some(self.group.clone()),
                    resource: Some(self.resource.clone()),
                    name: Some(name.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(client.clone());
        let answer = call("SubjectAccessReview", api.create(&PostParams::default(), &review)).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    /// The role over all plugins: the lowest of each plugin's.
    async fn decide(&self, user: Reviewed) -> Result<Decision, AuthError> {
        let mut role = Role::Operator;
        for plugin in PluginKind::ALL {
            let name = format!("{}-{}", self.settings.configmap_prefix, plugin.name());
            let (operator, viewer) = futures_util::future::try_join(
                self.may(&user, &self.settings.operator_verb, &name),
                self.may(&user, &self.settings.viewer_verb, &name),
            )
            .await?;
            let here = if operator {
                Role::Operator
            } else if viewer {
                Role::Viewer
            } else {
                let namespace = self.client().await.map(|(_, ns)| ns.clone()).unwrap_or_default();
                return Ok(Decision::Forbidden(format!(
                    "Kubernetes user {:?} may neither {} nor {} {} {name:?} in namespace {namespace:?}; \
                     grant one of them with a Role and RoleBinding",
                    user.name, self.settings.viewer_verb, self.settings.operator_verb, self.settings.resource,
                )));
            };
            role = role.min(here);
        }
        Ok(Decision::Allowed(Caller { name: user.name, role }))
    }

    async fn authenticate_token(&self, token: &str) -> Result<Caller, AuthError> {
        let key = sha256_hex(token);
        if let Some(why) = self.rejections.get(&key).await {
            return Err(AuthError::Unauthenticated(why));
        }
        // One review per token at a time: concurrent requests with it wait for that one
        // (moka runs one init future per key and hands its result, or its error, to all).
        let decided = self.decisions.try_get_with(key.clone(), self.review(token)).await;
        match decided {
            Ok(d) => outcome(d),
            Err(e) => match (*e).clone() {
                NoDecision::Unknown(why) => {
                    self.rejections.insert(key, why.clone()).await;
                    Err(AuthError::Unauthenticated(why))
                }
                NoDecision::Unavailable(err) => Err(err),
            },
        }
    }

    /// A token's decision from the API server, in one of [`MAX_REVIEWS`] places.
    async fn review(&self, token: &str) -> Result<Decision, NoDecision> {
        let _place = match tokio::time::timeout(REVIEW_WAIT, self.reviews.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(NoDecision::Unavailable(AuthError::Unavailable {
                    message: format!(
                        "{MAX_REVIEWS} token reviews are already in progress with the Kubernetes API server; retry shortly"
                    ),
                    retry_after_secs: 1,
                }));
            }
        };
        let user = match self.review_token(token).await {
            Ok(Ok(user)) => user,
            Ok(Err(why)) => return Err(NoDecision::Unknown(why)),
            Err(e) => return Err(NoDecision::Unavailable(e)),
        };
        self.decide(user).await.map_err(NoDecision::Unavailable)
    }
}

fn outcome(d: Decision) -> Result<Caller, AuthError> {
    match d {
        Decision::Allowed(c) => Ok(c),
        Decision::Forbidden(why) => Err(AuthError::Forbidden(why)),
    }
}

fn unavailable(detail: String) -> AuthError {
    tracing::warn!(%detail, "--auth kubernetes: the Kubernetes API server is not usable");
    AuthError::Unavailable {
        message: format!("cannot check the token with the Kubernetes API server: {detail}; retry later"),
        retry_after_secs: RETRY_AFTER_SECS,
    }
}

/// One API call, bounded; every failure is UNAVAILABLE (never cached), with what went wrong.
async fn call<T>(what: &str, fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, AuthError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(s))) if s.code == 401 || s.code == 403 => Err(unavailable(format!(
            "the server's own credentials may not create a {what} ({} {}: {}); \
             bind its service account to the ClusterRole system:auth-delegator",
            s.code, s.reason, s.message
        ))),
        Ok(Err(e)) => Err(unavailable(format!("{what} failed: {e}"))),
        Err(_) => Err(unavailable(format!("{what} got no answer within {} s", CALL_TIMEOUT.as_secs()))),
    }
}

impl Authenticator for KubernetesAuth {
    fn authenticate<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return Err(AuthError::Unauthenticated(
                    "authentication required: send Authorization: Bearer <your Kubernetes token> \
                     (e.g. `kubectl create token NAME` or `oc whoami -t`)"
                        .into(),
                ));
            };
            self.authenticate_token(token).await
        })
    }
    fn mode(&self) -> &'static str {
        "kubernetes"
    }
    fn calls_out(&self) -> bool {
        true
    }
    fn known<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return true;
            };
            let key = sha256_hex(token);
            self.decisions.contains_key(&key) || self.rejections.contains_key(&key)
        })
    }
}

/// Shared handle, as `http_options` stores authenticators.
pub fn shared(settings: Settings) -> anyhow::Result<Arc<dyn Authenticator>> {
    Ok(Arc::new(KubernetesAuth::new(settings)?))
}
