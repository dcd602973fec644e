// GraphiQL in a real Chromium (driven by tests/it/pages.rs), with every request that is not to the
// server's own origin aborted and recorded: proof that the page works with no internet access.
//
//   node graphiql.mjs <base-url> <artifact-dir> open          the sources query, then a subscription
//   node graphiql.mjs <base-url> <artifact-dir> auth <token>  UNAUTHENTICATED without, data with the token
//
// Prints one JSON object per line ({"step": ...}); the Rust test drives the server side (it sends
// the mutation after the "subscribed" line) and asserts on what is printed. The last line is
// {"step":"done", blocked, violations, consoleErrors}. Exits non-zero with a message on failure.
// The browser is CATALOG_BFF_CHROMIUM (set by the Rust test from common::chromium).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [base, artifacts, scenario, token] = process.argv.slice(2);
if (!base || !artifacts || !['open', 'auth'].includes(scenario) || (scenario === 'auth' && !token)) {
  console.error('usage: node graphiql.mjs <base-url> <artifact-dir> open|auth [token]');
  process.exit(2);
}
const executablePath = process.env.CATALOG_BFF_CHROMIUM;
if (!executablePath) {
  console.error('CATALOG_BFF_CHROMIUM is not set (the path of the chromium executable)');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const origin = new URL(base).origin;
const emit = (obj) => console.log(JSON.stringify(obj));

const blocked = [];
const violations = [];
const consoleErrors = [];

const browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    blocked.push(url);
    return route.abort();
  });
  page.on('websocket', (ws) => {
    const u = new URL(ws.url());
    if (u.host !== new URL(base).host) blocked.push(ws.url());
  });
  // The page reports CSP violations as events; Chromium also logs them on the console.
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample, source: e.sourceFile });
    });
  });
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content[- ]Security[- ]Policy/i.test(text)) violations.push({ console: text });
    else if (msg.type() === 'error') consoleErrors.push(text);
  });
  page.on('pageerror', (err) => consoleErrors.push(String(err)));
  const subscribed = [];
  const sockets = [];
  const inits = [];
  page.on('websocket', (ws) => {
    sockets.push(ws.url());
    ws.on('socketerror', (e) => consoleErrors.push(`websocket ${ws.url()}: ${e}`));
    ws.on('framesent', (f) => {
      try {
        const m = JSON.parse(f.payload);
        if (m.type === 'subscribe') subscribed.push(m);
        if (m.type === 'connection_init') inits.push(m.payload || {});
      } catch {
        /* not JSON */
      }
    });
  });

  const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`) });
  const response = await page.goto(`${base}/graphql`, { waitUntil: 'load' });
  if (!response || response.status() !== 200) throw new Error(`GET /graphql answered ${response && response.status()}`);
  await page.waitForSelector('.graphiql-container .graphiql-query-editor .CodeMirror', { timeout: 20000 });
  emit({ step: 'rendered', title: await page.title() });
  await shot('rendered');
  // A dialog (Radix) inserts a <style> element: the CSP's style-src must allow it.
  await page.click('[aria-label="Open settings dialog"]');
  await page.waitForSelector('[role="dialog"]');
  await shot('settings-dialog');
  await page.keyboard.press('Escape');
  await page.waitForSelector('[role="dialog"]', { state: 'detached' });

  // Sets the query editor's text (CodeMirror's own API: typing would fight auto-closing brackets).
  // GraphiQL re-parses the editor's text (operation type, name) debounced, and picks HTTP or
  // WebSocket from that parse: give it a moment before running.
  const setQuery = async (q) => {
    await page.evaluate((text) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text), q);
    await page.waitForTimeout(600);
  };
  const result = () => page.evaluate(() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue());
  // Runs the editor's query and waits until the result pane holds JSON that `done` accepts.
  const run = async (done, what) => {
    const before = await result();
    await page.click('.graphiql-execute-button');
    const deadline = Date.now() + 20000;
    for (;;) {
      const text = await result();
      if (text !== before && text.trim()) {
        try {
          const json = JSON.parse(text);
          if (done(json)) return json;
        } catch {
          /* still streaming */
        }
      }
      if (Date.now() > deadline) throw new Error(`${what}: no expected result in GraphiQL; the result pane shows: ${text}`);
      await page.waitForTimeout(100);
    }
  };
  const SOURCES = '{ sources { plugin id name } }';

  await setQuery(SOURCES);
  if (scenario === 'open') {
    const data = await run((j) => j.data || j.errors, 'sources query');
    emit({ step: 'query', result: data });
    await shot('sources-query');
  } else {
    const without = await run((j) => j.data || j.errors, 'query without token');
    emit({ step: 'without-token', result: without });
    await shot('auth-without-token');
    await page.fill('#token', token);
    await page.click('#use-token');
    await page.waitForSelector('.graphiql-query-editor .CodeMirror');
    await setQuery(SOURCES);
    const withToken = await run((j) => j.data && j.data.sources, 'query with token');
    const stored = await page.evaluate(() => sessionStorage.getItem('catalog-bff.token'));
    emit({ step: 'with-token', result: withToken, stored: stored === token });
    await shot('auth-with-token');
  }

  // A subscription over graphql-ws: the Rust test makes a change once GraphiQL has subscribed.
  await setQuery('subscription { catalogEvents { kind sourceId } }');
  const pending = run((j) => j.data && j.data.catalogEvents && j.data.catalogEvents.sourceId, 'subscription');
  const deadline = Date.now() + 20000;
  while (!subscribed.some((m) => /catalogEvents/.test(m.payload && m.payload.query))) {
    if (Date.now() > deadline) {
      throw new Error(
        `GraphiQL sent no graphql-ws subscribe message for catalogEvents (WebSockets opened: ${JSON.stringify(sockets)}; result pane: ${await result()})`,
      );
    }
    await page.waitForTimeout(50);
  }
  emit({ step: 'subscribed', connectionInit: inits[0] || null });
  const event = await pending;
  emit({ step: 'event', result: event });
  await shot(scenario === 'open' ? 'subscription-event' : 'auth-subscription-event');
  const csp = await page.evaluate(() => window.__csp);
  violations.push(...csp);
} catch (e) {
  failed = true;
  console.error(`graphiql.mjs (${scenario}): ${e && e.stack ? e.stack : e}`);
} finally {
  emit({ step: 'done', blocked, violations, consoleErrors });
  await browser.close();
}
process.exit(failed ? 1 : 0);
