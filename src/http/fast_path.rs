//! The hot path, in one place: `POST /graphql` (every cached read) skips what the other
//! routes go through.
//!
//! - **No router.** [`Routes`] hands `POST /graphql` to its handler before axum's router, which
//!   would clone the URI into an `OriginalUri` extension, match the path, insert `MatchedPath`
//!   and the (empty) URL parameters and box the handler's future behind two service layers,
//!   for a route known by its method and path alone. Everything else (other methods on
//!   `/graphql` too: GET, and the 405 for the rest) goes through the router unchanged.
//! - **No request span up front.** [`access_log_span`] gives it none; the handler opens the same
//!   span around whatever may log, and the response is marked (`graphql::GRAPHQL_POST`) so the access
//!   line names it as the span would have.
//! - The body is read by `http::body` (shared with `POST /graphql/stream`), not by axum's
//!   extractor.
//!
//! The test below sends the same requests down both paths and compares the answers byte for
//! byte.

use axum::Router;

use super::AppState;

/// The routes, with `POST /graphql` (every cached read) handed to its handler before the
/// router: the router would clone the URI into an `OriginalUri` extension, match the path,
/// insert `MatchedPath` and the (empty) URL parameters into the request's extensions and box
/// the handler's future behind two service layers, for a route that is known by its method and
/// path alone. Everything else, including other methods on `/graphql` (GET, and the 405 for the
/// rest), goes through the router unchanged.
#[derive(Clone)]
pub(super) struct Routes {
    app: AppState,
    router: Router,
}

impl Routes {
    pub(super) fn new(app: AppState, router: Router) -> Routes {
        Routes { app, router }
    }
}

/// `POST /graphql`: the route every cached read takes.
pub(crate) fn is_graphql_post<B>(req: &axum::http::Request<B>) -> bool {
    req.method() == axum::http::Method::POST && req.uri().path() == GRAPHQL_POST.path
}

pub(super) const GRAPHQL_POST: crate::logging::Unspanned =
    crate::logging::Unspanned { method: "POST", path: "/graphql" };

type RouterFuture = <Router as tower::Service<axum::extract::Request>>::Future;
type Answer = Result<axum::response::Response, std::convert::Infallible>;

impl tower::Service<axum::extract::Request> for Routes {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<futures_util::future::BoxFuture<'static, Answer>, RouterFuture>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        tower::Service::<axum::extract::Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        if is_graphql_post(&req) {
            let app = self.app.clone();
            futures_util::future::Either::Left(Box::pin(async move {
                let mut resp = super::graphql::post(axum::extract::State(app), req).await;
                // Its access line names it (it has no request span: see `access_log_span`).
                resp.extensions_mut().insert(GRAPHQL_POST);
                Ok(resp)
            }))
        } else {
            futures_util::future::Either::Right(self.router.call(req))
        }
    }
}

/// The span of the access log line: method, path and request id; none for `POST /graphql`.
///
/// A span costs a cached read a sixth of its instructions (the registry's slot, the fields
/// formatted, entered and left on every poll, closed), for a request that logs nothing but its
/// access line. So `POST /graphql` starts without one: the handler makes the same span
/// ([`crate::logging::request_span`]) around whatever may log (authentication, execution), and marks its
/// response ([`crate::logging::Unspanned`]) so the access line names the request as the span
/// would have.
pub fn access_log_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    if is_graphql_post(req) {
        return tracing::Span::none();
    }
    crate::logging::request_span(
        req.method().as_str(),
        req.uri().path(),
        crate::logging::request_id(req.headers()).unwrap_or("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::sync::Arc;
    use tower::Service;

    async fn answer(
        service: &mut (impl Service<Request<Body>, Response = axum::response::Response> + Send),
        body: &str,
    ) -> (StatusCode, Vec<(String, Vec<u8>)>, Vec<u8>) {
        let req = Request::post("/graphql")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let Ok(resp) = service.call(req).await else { panic!("the service failed") };
        let status = resp.status();
        let mut headers: Vec<(String, Vec<u8>)> =
            resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        // The router's route sets Content-Length on a body of known size; on the fast path
        // hyper writes the same header when it sends the response (it does so for every body
        // whose size is known). So on the wire both carry it: add it where it is missing.
        if !headers.iter().any(|(k, _)| k == "content-length") {
            headers.push(("content-length".into(), bytes.len().to_string().into_bytes()));
        }
        headers.sort();
        (status, headers, bytes.to_vec())
    }

    /// `POST /graphql` answers the same bytes (status, every header, body) whether it takes the
    /// fast path or goes through the router, on a miss and on a hit, for data and for errors.
    #[tokio::test]
    async fn the_fast_path_and_the_router_answer_byte_for_byte_the_same() {
        let dir = tempfile::tempdir().unwrap();
        crate::example::seed(dir.path()).unwrap();
        let store = Arc::new(catalog_core::FileStore::new(dir.path().join("sources.yaml"), Default::default()));
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = catalog_core::Db::connect(&url, std::time::Duration::from_secs(10)).await.unwrap();
        let options = catalog_core::CatalogOptions { watch_interval: None, ..Default::default() };
        let catalog = catalog_core::Catalog::open(store, db, options).await.unwrap();
        // After the initial refresh nothing changes the catalog, so a hit stays a hit.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !catalog.readiness().await.iter().all(|c| c.ok) {
            assert!(std::time::Instant::now() < deadline, "the catalog never became ready");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Two applications on one catalog, so each path starts with its own empty cache.
        let (fast_state, fast_router) = super::super::app(catalog.clone(), super::super::HttpOptions::default());
        let mut fast = Routes::new(fast_state, fast_router);
        let (_, mut router) = super::super::app(catalog.clone(), super::super::HttpOptions::default());
        let cacheable = [
            // Configuration only: the same whatever happens to the entities.
            r#"{"query":"{ sources(plugin: \"models\") { id name enabled labels } }"}"#,
            r#"{"query":"query Named { plugins { name } }","operationName":"Named"}"#,
        ];
        for round in ["miss", "hit"] {
            for body in cacheable {
                let f = answer(&mut fast, body).await;
                let r = answer(&mut router, body).await;
                assert_eq!(f, r, "{round}: {body}: the fast path and the router differ");
                let x_cache = f.1.iter().find(|(k, _)| k == "x-cache").map(|(_, v)| v.as_slice());
                assert_eq!(x_cache, Some(round.as_bytes()), "{body}");
            }
        }
        // Errors (these also invalidate the cache: a document that is not a query counts as a
        // change), compared last.
        for body in [
            r#"{"query":"{ sources(plugin: \"nope\") { id } }"}"#,
            r#"{"query":"{ nosuchfield }"}"#,
            r#"{"query":"{ sources { id "}"#,
            r#"not json"#,
        ] {
            let f = answer(&mut fast, body).await;
            let r = answer(&mut router, body).await;
            assert_eq!(f, r, "{body}: the fast path and the router differ");
        }
    }
}
