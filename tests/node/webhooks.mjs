// Drives the console's Webhooks page (`/console/webhooks.html`) in headless Chromium
// (playwright-core) against a real server, for tests/it/webhooks.rs.
// usage: node webhooks.mjs <base-url> <artifact-dir> <chromium> <receiver-url>
// Registers a receiver (after a refused URL shows its field), makes an event over the API, sees
// the delivery DELIVERED, redelivers it, deletes the receiver. Prints one JSON line per step;
// exits non-zero with {"error": ...} on a failure, on any request to another origin, on any
// Content-Security-Policy violation and on any page error.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [base, artifacts, executablePath, receiver] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const origin = new URL(base).origin;
const foreign = [];
const pageErrors = [];
const WAIT = { timeout: 20000 };

function emit(step, data = {}) {
  console.log(JSON.stringify({ step, ...data }));
}

function fail(message) {
  console.log(JSON.stringify({ error: message }));
  process.exit(1);
}

async function api(query, variables) {
  const r = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  return r.json();
}

const browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
});

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin === origin || url.protocol === 'data:') return route.continue();
    foreign.push(url.href);
    return route.abort();
  });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => d.accept());
  const check = async (where) => {
    const csp = await page.evaluate(() => window.__csp);
    if (csp.length) fail(`${where}: Content-Security-Policy violations: ${csp.join('; ')}`);
    if (foreign.length) fail(`${where}: requests to other origins: ${foreign.join(', ')}`);
    if (pageErrors.length) fail(`${where}: page errors: ${pageErrors.join('; ')}`);
  };
  const shot = (name) => page.screenshot({ path: join(artifacts, `webhooks-${name}.png`), fullPage: true });

  // The link from the Sources page leads here.
  await page.goto(`${base}/`);
  await page.waitForSelector('body[data-ready="true"]', WAIT);
  await page.click('#webhooks-link');
  await page.waitForURL('**/console/webhooks.html', WAIT);
  await page.waitForSelector('body[data-ready="true"]', WAIT);
  emit('empty', { emptyShown: await page.isVisible('#hooks-empty') });

  const fillForm = async (url) => {
    await page.fill('#create-url', url);
    await page.fill('#create-secret-name', 'hook-secret');
    await page.fill('#create-secret-key', 'signing');
    await page.fill('#create-plugins', 'models');
  };
  await fillForm('http://10.0.0.1/hook');
  await page.click('#create-submit');
  await page.waitForSelector('#create-error:not([hidden])', WAIT);
  emit('refused', {
    text: await page.textContent('#create-error'),
    fields: await page.getAttribute('#create-error', 'data-fields'),
    receivers: await page.$$eval('article.webhook', (a) => a.length),
  });
  await shot('refused');

  await fillForm(receiver);
  await page.click('#create-submit');
  await page.waitForSelector('article.webhook', WAIT);
  emit('created', { url: await page.textContent('article.webhook h4') });

  const applied = await api(
    'mutation { applySource(plugin: "models", input: {id: "local", labels: ["from-the-console-test"]}) { revision } }',
  );
  if (applied.errors) fail(`apply: ${JSON.stringify(applied.errors)}`);
  await page.waitForSelector('tr[data-state="DELIVERED"]', WAIT);
  const first = await page.$$eval('tr[data-delivery]', (rows) =>
    rows.map((r) => ({ id: r.dataset.delivery, state: r.dataset.state, message: r.dataset.message, text: r.textContent })),
  );
  emit('delivered', { rows: first });
  await shot('delivered');

  await page.click(`button[data-delivery="${first[0].id}"]`);
  await page.waitForFunction(
    () => {
      const rows = [...document.querySelectorAll('tr[data-delivery]')];
      return rows.length === 2 && rows.every((r) => r.dataset.state === 'DELIVERED');
    },
    null,
    WAIT,
  );
  const both = await page.$$eval('tr[data-delivery]', (rows) => rows.map((r) => ({ id: r.dataset.delivery, message: r.dataset.message })));
  emit('redelivered', { rows: both });
  await shot('redelivered');

  await page.click('article.webhook h4 button');
  await page.waitForSelector('#hooks-empty:not([hidden])', WAIT);
  emit('deleted', { receivers: await page.$$eval('article.webhook', (a) => a.length) });
  await check('end');
  emit('done');
} catch (e) {
  fail(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
