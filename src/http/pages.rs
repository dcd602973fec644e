//! The pages a browser opens: GraphiQL at `GET /graphql` (a bare GET, see `graphql::get`) and the
//! operator console at `/` (`console`), with the security headers every page response carries.
//!
//! GraphiQL works with no internet access: `build.rs` fetches GraphiQL, React, ReactDOM and
//! graphql-ws from their pinned, hash-verified npm tarballs at build time, and they are embedded
//! here and served under `/graphiql/`. The page's own script is a served file too (no inline
//! script), so the Content-Security-Policy can allow scripts from this origin only. A binary
//! built without the assets (no registry at build time) serves a page that says so, with an
//! `x-graphiql-assets: missing` header, instead of a page stuck on "Loading...".

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::LazyLock;
use tower_http::set_header::SetResponseHeaderLayer;

use super::AppState;

/// One file served under `/graphiql/`.
pub struct Asset {
    pub name: &'static str,
    /// `npm-name@version` for third-party files, `catalog-bff` for ours.
    pub package: &'static str,
    /// Hex sha256 of `bytes` (pinned in build.rs for third-party files): the ETag and the `v`
    /// that makes a URL immutable.
    pub sha256: &'static str,
    pub bytes: &'static [u8],
}

/// `EMBEDDED`, `MISSING_WHY` and `VENDORED`, written by build.rs.
mod generated {
    use super::Asset;
    include!(concat!(env!("OUT_DIR"), "/graphiql_assets.rs"));
}

/// Whether this binary was built with GraphiQL's assets.
pub const ASSETS_EMBEDDED: bool = generated::EMBEDDED;

/// The Content-Security-Policy of every page. Only this origin: `'self'` also covers the
/// same-host `ws:`/`wss:` GraphiQL's subscriptions use (CSP level 3; checked in Chromium by
/// `tests/it/pages.rs`). Fonts and icons are `data:` URLs inside graphiql.min.css. GraphiQL's
/// components set `style` attributes and insert `<style>` elements at run time, hence
/// `'unsafe-inline'` for styles only (scripts stay `'self'`).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; \
img-src 'self' data:; font-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The headers on every page and page asset (not on API responses, which are JSON for programs).
pub fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // A page that is not cached by a shared proxy keeps each user's token field theirs.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// GraphiQL's page script: renders GraphiQL with an HTTP fetcher for `/graphql`, graphql-ws for
/// subscriptions on `/graphql/ws`, and, with `--auth`, the token from the field (kept in
/// sessionStorage: gone when the tab closes) as `Authorization: Bearer` and in
/// `connection_init`.
const PAGE_JS: &str = r#"// catalog-bff: GraphiQL page script (a served file: the CSP forbids inline scripts).
(function () {
  'use strict';
  var KEY = 'catalog-bff.token';
  var auth = document.body.getAttribute('data-auth') || 'none';
  var mount = document.getElementById('graphiql');
  var root = ReactDOM.createRoot(mount);
  var wsClient = null;

  function token() {
    try { return sessionStorage.getItem(KEY) || ''; } catch (e) { return ''; }
  }
  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/graphql/ws';
  }
  function authFetch(input, init) {
    init = init || {};
    var headers = new Headers(init.headers || {});
    var t = token();
    // A header typed into GraphiQL's own headers editor wins over the token field.
    if (t && !headers.has('authorization')) headers.set('authorization', 'Bearer ' + t);
    return window.fetch(input, Object.assign({}, init, { headers: headers }));
  }
  function fetcher() {
    if (wsClient) wsClient.dispose();
    wsClient = graphqlWs.createClient({
      url: wsUrl(),
      lazy: true,
      connectionParams: function () {
        var t = token();
        return t ? { authorization: 'Bearer ' + t } : {};
      },
    });
    return GraphiQL.createFetcher({
      url: '/graphql',
      wsClient: wsClient,
      fetch: authFetch,
      enableIncrementalDelivery: false,
    });
  }
  function render() {
    // A new fetcher (and WebSocket client) on each token change: GraphiQL then reloads the
    // schema with the new credentials.
    root.render(React.createElement(GraphiQL, { fetcher: fetcher(), defaultEditorToolsVisibility: true }));
  }

  var form = document.getElementById('auth');
  if (form && auth !== 'none') {
    var field = document.getElementById('token');
    var status = document.getElementById('auth-status');
    form.hidden = false;
    field.value = token();
    status.textContent = token() ? 'Token set for this tab.' : 'No token: requests are unauthenticated.';
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      try {
        if (field.value.trim()) sessionStorage.setItem(KEY, field.value.trim());
        else sessionStorage.removeItem(KEY);
      } catch (e) { /* storage disabled: the token lives only in this page */ }
      status.textContent = field.value.trim() ? 'Token set for this tab.' : 'No token: requests are unauthenticated.';
      render();
    });
    document.getElementById('forget').addEventListener('click', function () {
      field.value = '';
      try { sessionStorage.removeItem(KEY); } catch (e) { /* see above */ }
      status.textContent = 'Token forgotten.';
      render();
    });
  }
  render();
})();
"#;

const PAGE_CSS: &str = r#"/* catalog-bff: GraphiQL page layout (a served file, like the script). */
html, body { height: 100%; margin: 0; }
body { display: flex; flex-direction: column; font-family: system-ui, sans-serif; }
#auth { display: flex; gap: .5rem; align-items: center; padding: .4rem .75rem; border-bottom: 1px solid #ccc; font-size: 14px; }
#auth[hidden] { display: none; }
#auth input { min-width: 20rem; }
#auth-status { color: #555; }
#graphiql { flex: 1; min-height: 0; }
.missing { max-width: 48rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }
.missing code, .missing pre { background: #f3f3f3; padding: .1rem .3rem; }
.missing pre { padding: .75rem; overflow-x: auto; }
"#;

/// Our own files, hashed once (their ETag and immutable-URL version).
static OWN: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    let hash = |s: &str| -> &'static str { Box::leak(format!("{:x}", Sha256::digest(s.as_bytes())).into_boxed_str()) };
    [
        Asset { name: "graphiql-page.js", package: "catalog-bff", sha256: hash(PAGE_JS), bytes: PAGE_JS.as_bytes() },
        Asset { name: "graphiql-page.css", package: "catalog-bff", sha256: hash(PAGE_CSS), bytes: PAGE_CSS.as_bytes() },
    ]
});

fn find(name: &str) -> Option<&'static Asset> {
    generated::VENDORED.iter().chain(OWN.iter()).find(|a| a.name == name)
}

/// The URL of an asset, versioned by its hash so the browser may cache it for good.
fn url(name: &str) -> String {
    match find(name) {
        Some(a) => format!("/graphiql/{}?v={}", a.name, &a.sha256[..16]),
        None => format!("/graphiql/{name}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// GraphiQL, for a bare `GET /graphql`.
pub fn graphiql(app: &AppState) -> Response {
    let mode = app.options.auth.mode();
    let mut resp = if ASSETS_EMBEDDED { page(mode).into_response() } else { missing_page().into_response() };
    let headers = resp.headers_mut();
    for (name, value) in security_headers() {
        headers.insert(name, value);
    }
    if !ASSETS_EMBEDDED {
        headers.insert(HeaderName::from_static("x-graphiql-assets"), HeaderValue::from_static("missing"));
    }
    resp
}

fn page(mode: &str) -> Html<String> {
    let mode = escape(mode);
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>catalog-bff · GraphiQL</title>
<link rel="stylesheet" href="{css}">
<link rel="stylesheet" href="{page_css}">
</head>
<body data-auth="{mode}">
<form id="auth" hidden>
<label for="token">Bearer token (<code>--auth {mode}</code>)</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false">
<button type="submit" id="use-token">Use token</button>
<button type="button" id="forget">Forget</button>
<span id="auth-status" role="status" aria-live="polite"></span>
</form>
<div id="graphiql">Loading GraphiQL…</div>
<script src="{react}"></script>
<script src="{react_dom}"></script>
<script src="{graphql_ws}"></script>
<script src="{graphiql}"></script>
<script src="{page_js}"></script>
</body>
</html>
"#,
        css = url("graphiql.min.css"),
        page_css = url("graphiql-page.css"),
        react = url("react.production.min.js"),
        react_dom = url("react-dom.production.min.js"),
        graphql_ws = url("graphql-ws.min.js"),
        graphiql = url("graphiql.min.js"),
        page_js = url("graphiql-page.js"),
    ))
}

/// The page of a binary built without the assets: what is missing, how to rebuild, and that
/// the API works.
fn missing_page() -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>catalog-bff · GraphiQL not embedded</title>
<link rel="stylesheet" href="{page_css}"></head>
<body><main class="missing">
<h1>GraphiQL is not available in this build</h1>
<p>This binary was built without GraphiQL's browser assets, because the build could not get
them: <code>{why}</code></p>
<p><strong>The GraphQL API works</strong>: send queries with <code>POST /graphql</code>
(or subscribe on <code>/graphql/ws</code>), for example with <code>catalogctl</code> or
<code>curl</code>.</p>
<p>To get GraphiQL, rebuild with access to the npm registry (or a mirror,
<code>CATALOG_BFF_NPM_REGISTRY=URL</code>), or offline from a directory holding the npm tarballs:</p>
<pre>npm pack graphiql@3.8.3 react@18.3.1 react-dom@18.3.1 graphql-ws@5.16.2   # on a machine with the registry
CATALOG_BFF_GRAPHIQL_ASSETS=/path/to/that/dir cargo build</pre>
<p>If the registry was only briefly unreachable, <code>touch build.rs &amp;&amp; cargo build</code>
fetches them again.</p>
</main></body>
</html>
"#,
        page_css = url("graphiql-page.css"),
        why = escape(generated::MISSING_WHY),
    ))
}

/// `GET /graphiql/{file}`: an embedded asset. With `?v=` equal to its hash prefix (the URLs the
/// page uses) it is cached for a year as immutable; otherwise it is revalidated by ETag.
async fn asset(Path(file): Path<String>, Query(query): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let Some(asset) = find(&file) else {
        let known: Vec<&str> = generated::VENDORED.iter().chain(OWN.iter()).map(|a| a.name).collect();
        let why = if ASSETS_EMBEDDED {
            format!("no GraphiQL asset `{file}`; the assets are: {}", known.join(", "))
        } else {
            format!("no GraphiQL asset `{file}`: this binary was built without GraphiQL's assets (see GET /graphql)")
        };
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], why).into_response();
    };
    let etag = format!("\"{}\"", &asset.sha256[..32]);
    let cache = if query.get("v").is_some_and(|v| asset.sha256.starts_with(v.as_str()) && v.len() >= 16) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let content_type =
        if asset.name.ends_with(".css") { "text/css; charset=utf-8" } else { "text/javascript; charset=utf-8" };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag));
    let fixed = [(header::ETAG, etag.clone()), (header::CACHE_CONTROL, cache.to_string())];
    if matches {
        return (StatusCode::NOT_MODIFIED, fixed).into_response();
    }
    (fixed, [(header::CONTENT_TYPE, content_type)], asset.bytes).into_response()
}

/// The page routes: GraphiQL's assets and the console, all with [`security_headers`] (a route
/// that sets one of them itself keeps its own).
pub fn router() -> Router<AppState> {
    let mut router = Router::new().route("/graphiql/{file}", get(asset)).merge(super::console::router());
    for (name, value) in security_headers() {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    router
}
