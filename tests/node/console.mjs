// Drives the operator console at `/` in headless Chromium (playwright-core) against a real
// server, for tests/it/console.rs.
// usage: node console.mjs <base-url> <artifact-dir> <chromium> <suite> [operator-token viewer-token]
// suites: `main` (auth none: table, save, diagnostics, preview, removals, rollback, refresh,
// live updates, keyboard), `trusted` (--trusted-documents ui-contract with --auth static:
// token prompt, save and suspend/resume as operator, viewer read-only and forced mutations
// refused), and the steps of the scheduling test, one browser run each so that the Rust test
// can check the server between them: `schedule` (next refresh per row), `suspend <id>`,
// `resume <id>`, `interval <id> <bad> <good>` (the refresh interval field), `cancel` (Refresh
// all, then Cancel while a url host stalls) and `retry <id>` (a failed source's retry); and, with
// --trusted-documents and static tokens, `everything <operator-token> <viewer-token>` (Refresh
// all over every plugin) and `jobs <operator-token> <viewer-token>` (the Jobs panel: a job
// started outside the page appears, a viewer's Cancel is off, the operator's ends it; then
// Cancel on a running refresh of every plugin).
// Prints one JSON line per step ({"step": ..., ...}); exits non-zero with {"error": ...} on a
// failure. Every request to another origin is aborted and fails the run (works offline), and so
// does any Content-Security-Policy violation or page error.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [base, artifacts, executablePath, suite, operatorToken, viewerToken] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const origin = new URL(base).origin;
const foreign = [];
const pageErrors = [];
const WAIT = { timeout: 15000 };

function emit(step, data = {}) {
  console.log(JSON.stringify({ step, ...data }));
}

function fail(message) {
  console.log(JSON.stringify({ error: message }));
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
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
    // A 401/403 answer is logged by Chromium as a failed resource; the page handles those
    // (token prompt, FORBIDDEN shown) and the steps check that it does.
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 40[13]/.test(m.text())) {
      pageErrors.push(`console: ${m.text()}`);
    }
  });
  return { context, page };
}

async function check(page, where) {
  const csp = await page.evaluate(() => window.__csp);
  if (csp.length) fail(`${where}: Content-Security-Policy violations: ${csp.join('; ')}`);
  if (foreign.length) fail(`${where}: requests to other origins were attempted: ${foreign.join(', ')}`);
  if (pageErrors.length) fail(`${where}: page errors: ${pageErrors.join('; ')}`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
}

async function open(page) {
  await page.goto(`${base}/`);
  await page.waitForSelector('body[data-ready="true"]', WAIT);
}

async function tableRows(page) {
  return page.$$eval('#sources-body tr', (rows) =>
    rows.map((r) => ({
      plugin: r.dataset.plugin,
      id: r.dataset.sourceId,
      name: r.cells[0].textContent.trim(),
      enabled: r.cells[2].textContent.trim() === 'yes',
      state: r.cells[3].querySelector('.state').textContent.trim(),
      suspended: r.cells[3].querySelector('.badge-suspended') ? r.cells[3].querySelector('.badge-suspended').textContent.trim() : null,
      entityCount: Number(r.cells[4].textContent.trim()),
      lastRefreshed: r.cells[5].textContent.trim(),
      lastStatus: r.cells[6].textContent.trim(),
      next: r.cells[7].querySelector('.next').textContent.trim(),
      nextAt: r.cells[7].querySelector('.next').dataset.until || null,
      retry: r.cells[7].querySelector('.retry') ? r.cells[7].querySelector('.retry').textContent.trim() : null,
      retryAt: r.cells[7].querySelector('.next-retry') ? r.cells[7].querySelector('.next-retry').dataset.until : null,
      action: r.cells[8].querySelector('button').textContent.trim(),
    })),
  );
}

async function row(page, id) {
  return (await tableRows(page)).find((r) => r.id === id);
}

async function rowCount(page, id) {
  return Number((await page.textContent(`#sources-body tr[data-source-id="${id}"] td.count`)).trim());
}

async function openDrawer(page, id) {
  await page.click(`#sources-body tr[data-source-id="${id}"] button`);
  await page.waitForFunction((sid) => {
    const d = window.catalogConsole.state.drawer;
    return d && d.id === sid && d.source && !document.getElementById('drawer').hidden;
  }, id, WAIT);
}

async function clearToast(page) {
  await page.evaluate(() => {
    document.getElementById('toast').textContent = '';
  });
}

async function toastText(page, prefix) {
  await page.waitForFunction((p) => document.getElementById('toast').textContent.startsWith(p), prefix, WAIT);
  return page.textContent('#toast');
}

/** Records whether the save progress indicator was shown (it may be brief). */
async function watchProgress(page) {
  await page.evaluate(() => {
    window.__sawProgress = false;
    const node = document.getElementById('save-progress');
    new MutationObserver((records) => {
      if (!node.hidden || records.some((r) => r.oldValue !== null)) window.__sawProgress = true;
    }).observe(node, { attributes: true, attributeFilter: ['hidden'], attributeOldValue: true });
  });
}

function offsetOf(text, line, column) {
  let offset = 0;
  for (let l = 1; l < line; l++) offset = text.indexOf('\n', offset) + 1;
  return offset + column - 1;
}

const ADDED = `  - name: console/added-model
    provider: Console Test
    description: Added from the operator console test.
    license: mit
    artifacts:
      - uri: oci://registry.example.com/console/added-model:1.0
`;

async function api(query, variables, tokenValue) {
  const headers = { 'content-type': 'application/json' };
  if (tokenValue) headers.authorization = `Bearer ${tokenValue}`;
  const r = await fetch(`${base}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  return r.json();
}

async function mainSuite() {
  const { page } = await newPage();
  await open(page);
  // The table, per plugin.
  const models = await tableRows(page);
  await shot(page, 'sources');
  await page.click('#plugins button[data-plugin="mcp"]');
  const mcp = await tableRows(page);
  await page.click('#plugins button[data-plugin="models"]');
  const viewer = await page.textContent('#viewer');
  const saveDisabled = await page.isDisabled('#refresh-all');
  // Every control has an accessible name (a label, aria-label or its text).
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('button, input, select, textarea')]
      .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.getAttribute('aria-labelledby') && !c.textContent.trim())
      .map((c) => c.id || c.outerHTML.slice(0, 60)),
  );
  emit('table', { rows: [...models, ...mcp], viewer, refreshAllDisabled: saveDisabled, unlabelled });
  // The filter.
  await page.fill('#filter', 'partner');
  const filtered = (await tableRows(page)).map((r) => r.id);
  await page.fill('#filter', '');
  emit('filter', { ids: filtered });
  await check(page, 'table');

  // Save: edit, progress, toast, row updated without a reload.
  await page.evaluate(() => {
    window.__notReloaded = true;
  });
  await openDrawer(page, 'team_models');
  const focusInDrawer = await page.evaluate(() => document.getElementById('drawer').contains(document.activeElement));
  const before = await page.inputValue('#editor');
  const loadedRevision = await page.evaluate(() => window.catalogConsole.state.drawer.revision);
  const propsText = await page.textContent('#drawer-properties');
  await shot(page, 'drawer');
  const countBefore = await rowCount(page, 'team_models');
  const edited = before.endsWith('\n') ? before + ADDED : `${before}\n${ADDED}`;
  await page.fill('#editor', edited);
  const gutterLines = (await page.textContent('#gutter')).trim().split('\n').length;
  await watchProgress(page);
  await clearToast(page);
  await page.click('#save');
  const saved = await toastText(page, 'Saved revision');
  await page.waitForFunction((n) => {
    const cell = document.querySelector('#sources-body tr[data-source-id="team_models"] td.count');
    return cell && Number(cell.textContent) === n;
  }, countBefore + 1, WAIT);
  const drawerCount = Number(await page.textContent('#drawer-details .drawer-count'));
  const drawerRevision = Number(await page.textContent('#drawer-details .drawer-revision'));
  await shot(page, 'saved');
  emit('save', {
    focusInDrawer,
    loadedRevision,
    properties: propsText,
    countBefore,
    countAfter: await rowCount(page, 'team_models'),
    drawerCount,
    drawerRevision,
    toast: saved,
    toastLive: await page.getAttribute('#toast', 'aria-live'),
    sawProgress: await page.evaluate(() => window.__sawProgress),
    notReloaded: await page.evaluate(() => window.__notReloaded === true),
    gutterLines,
    editorLines: edited.split('\n').length,
  });
  await check(page, 'save');

  // Invalid YAML: diagnostics with line and column; clicking one moves the cursor there.
  const broken = `${edited}  - name: broken\n    tasks: [unclosed\n    provider: nobody\n`;
  await page.fill('#editor', broken);
  await clearToast(page);
  await page.click('#save');
  await page.waitForSelector('#diagnostics button.diagnostic', WAIT);
  const diags = await page.$$eval('#diagnostics button.diagnostic', (bs) =>
    bs.map((b) => ({ text: b.textContent, line: Number(b.dataset.line), column: Number(b.dataset.column) })),
  );
  const first = diags.find((d) => d.line > 0 && d.column > 0);
  if (!first) fail(`no diagnostic with a line and column: ${JSON.stringify(diags)}`);
  await page.locator('#diagnostics button.diagnostic').nth(diags.indexOf(first)).click();
  const selection = await page.evaluate(() => {
    const ta = document.getElementById('editor');
    return { start: ta.selectionStart, focused: document.activeElement === ta };
  });
  await shot(page, 'diagnostics');
  emit('invalid', {
    diagnostics: diags,
    line: first.line,
    column: first.column,
    selectionStart: selection.start,
    expected: offsetOf(broken, first.line, first.column),
    editorFocused: selection.focused,
    toast: await page.textContent('#toast'),
    outcome: await page.textContent('#outcome'),
    drawerRevision: Number(await page.textContent('#drawer-details .drawer-revision')),
  });
  await check(page, 'invalid');

  // Preview impact (dry run): names to add and to remove.
  const lines = edited.split('\n');
  const secondModel = lines.findIndex((l, i) => i > lines.findIndex((x) => x.startsWith('  - name:')) && l.startsWith('  - name:'));
  const removedName = lines[secondModel].replace('  - name:', '').trim();
  let end = lines.findIndex((l, i) => i > secondModel && l.startsWith('  - name:'));
  if (end < 0) end = lines.length;
  const previewText = [...lines.slice(0, secondModel), ...lines.slice(end)].join('\n').replace('console/added-model', 'console/preview-model');
  await page.fill('#editor', previewText);
  await page.click('#preview');
  await page.waitForSelector('#impact .impact-view', WAIT);
  const impact = await page.evaluate(() => {
    const names = (cls) => [...document.querySelectorAll(`#impact .impact-group.${cls} li`)].map((li) => li.textContent);
    return { add: names('add'), update: names('update'), remove: names('remove') };
  });
  await shot(page, 'preview');
  emit('preview', { impact, removedName, drawerRevision: Number(await page.textContent('#drawer-details .drawer-revision')) });
  await check(page, 'preview');

  // A removal that needs confirmation: the dialog lists the names, then the save applies.
  const keepOne = lines.slice(0, secondModel).join('\n') + '\n';
  await page.fill('#editor', keepOne);
  await clearToast(page);
  await page.click('#save');
  await page.waitForSelector('#confirm[open]', WAIT);
  const listed = await page.$$eval('#confirm-body li', (lis) => lis.map((li) => li.textContent));
  await shot(page, 'removal-dialog');
  await page.click('#confirm-ok');
  const removedToast = await toastText(page, 'Saved revision');
  emit('removal', { listed, toast: removedToast, countAfter: await rowCount(page, 'team_models') });
  await check(page, 'removal');

  // History: view a revision's content, roll back with confirmation.
  await page.waitForSelector('#history-body tr[data-revision="2"] button.rollback', WAIT);
  const history = await page.$$eval('#history-body tr', (rows) => rows.map((r) => [...r.cells].slice(0, 3).map((c) => c.textContent)));
  await page.click('#history-body tr[data-revision="2"] button.view-revision');
  const viewed = await page.textContent('#revision-content');
  await clearToast(page);
  await page.click('#history-body tr[data-revision="2"] button.rollback');
  await page.waitForSelector('#confirm[open]', WAIT);
  await page.click('#confirm-ok');
  const rolledToast = await toastText(page, 'Rolled back');
  await page.waitForFunction(() => window.catalogConsole.state.drawer.revision === 4, null, WAIT);
  await shot(page, 'rollback');
  emit('rollback', {
    history,
    viewedHasAdded: viewed.includes('console/added-model'),
    toast: rolledToast,
    countAfter: await rowCount(page, 'team_models'),
    editorHasAdded: (await page.inputValue('#editor')).includes('console/added-model'),
  });
  await check(page, 'rollback');

  // Refresh the open source, INCREMENTAL: progress and the result in the drawer.
  await page.selectOption('#source-refresh-mode', 'INCREMENTAL');
  await page.click('#refresh-source');
  await page.waitForFunction(() => ['SUCCEEDED', 'FAILED'].includes(document.getElementById('drawer-refresh').dataset.phase), null, WAIT);
  await page.waitForFunction(() => document.querySelectorAll('#refresh-results li').length > 0, null, WAIT);
  emit('refresh-source', {
    phase: await page.getAttribute('#drawer-refresh', 'data-phase'),
    text: await page.textContent('#drawer-refresh-text'),
    results: await page.$$eval('#refresh-results li', (lis) => lis.map((li) => li.textContent)),
  });
  await shot(page, 'refresh-source');
  await check(page, 'refresh-source');

  // Escape closes the drawer and focus goes back to the source's row.
  await page.focus('#editor');
  await page.keyboard.press('Escape');
  const afterEscape = await page.evaluate(() => ({
    hidden: document.getElementById('drawer').hidden,
    focusRow: document.activeElement && document.activeElement.closest('tr') ? document.activeElement.closest('tr').dataset.sourceId : null,
  }));
  emit('keyboard', afterEscape);

  // Refresh the plugin: live progress up to total, a result per source.
  await page.evaluate(() => {
    window.__progressTexts = [];
    const t = document.getElementById('refresh-text');
    new MutationObserver(() => window.__progressTexts.push(t.textContent)).observe(t, { childList: true, characterData: true, subtree: true });
  });
  await page.click('#refresh-all');
  await page.waitForFunction(() => ['SUCCEEDED', 'FAILED'].includes(document.getElementById('refresh-panel').dataset.phase), null, WAIT);
  await page.waitForFunction(() => document.querySelectorAll('#refresh-results li').length > 0, null, WAIT);
  const refresh = await page.evaluate(() => {
    const bar = document.getElementById('refresh-progress');
    return {
      phase: document.getElementById('refresh-panel').dataset.phase,
      value: bar.value,
      max: bar.max,
      text: document.getElementById('refresh-text').textContent,
      results: [...document.querySelectorAll('#refresh-results li')].map((li) => li.dataset.sourceId),
      seen: window.__progressTexts,
    };
  });
  await shot(page, 'refresh');
  emit('refresh', refresh);
  await check(page, 'refresh');

  // Live: an apply made through the API while the page is open updates the table; the open
  // drawer with unsaved edits says so instead of replacing them.
  await openDrawer(page, 'partner_models');
  const partner = await page.inputValue('#editor');
  const mine = `${partner.endsWith('\n') ? partner : `${partner}\n`}# my unsaved note\n`;
  await page.fill('#editor', mine);
  const partnerBefore = await rowCount(page, 'partner_models');
  const external = `${partner.endsWith('\n') ? partner : `${partner}\n`}${ADDED.replace('console/added-model', 'external/model')}`;
  const applied = await api(
    'mutation($input: SourceInput!) { applySource(plugin: "models", input: $input, options: {refreshAfterApply: true}) { revision } }',
    { input: { id: 'partner_models', content: external } },
  );
  if (applied.errors) fail(`external apply failed: ${JSON.stringify(applied.errors)}`);
  await page.waitForFunction((n) => {
    const cell = document.querySelector('#sources-body tr[data-source-id="partner_models"] td.count');
    return cell && Number(cell.textContent) === n;
  }, partnerBefore + 1, WAIT);
  await page.waitForSelector('#drawer-banner:not([hidden])', WAIT);
  await shot(page, 'external');
  const kept = (await page.inputValue('#editor')) === mine;
  const banner = await page.textContent('#drawer-banner-text');
  // Saving the stale edit: CONFLICT, nothing saved, and an offer to reload the source.
  await clearToast(page);
  await page.click('#save');
  await page.waitForSelector('#conflict-reload', WAIT);
  const conflict = await page.textContent('#outcome');
  const conflictToast = await page.textContent('#toast');
  await shot(page, 'conflict');
  await page.click('#conflict-reload');
  await page.waitForFunction(() => document.getElementById('editor').value.includes('external/model'), null, WAIT);
  // The banner's own Reload does the same after another change elsewhere.
  await page.fill('#editor', `${await page.inputValue('#editor')}# another note\n`);
  const second = await api(
    'mutation($input: SourceInput!) { applySource(plugin: "models", input: $input) { revision } }',
    { input: { id: 'partner_models', content: external.replace('external/model', 'external/model-2') } },
  );
  if (second.errors) fail(`second external apply failed: ${JSON.stringify(second.errors)}`);
  await page.waitForSelector('#drawer-banner:not([hidden])', WAIT);
  await page.click('#drawer-reload');
  await page.waitForFunction(() => document.getElementById('editor').value.includes('external/model-2'), null, WAIT);
  emit('external', {
    revision: applied.data.applySource.revision,
    countBefore: partnerBefore,
    countAfter: await rowCount(page, 'partner_models'),
    kept,
    banner,
    conflict,
    conflictToast,
    reloadedRevision: await page.evaluate(() => window.catalogConsole.state.drawer.revision),
    live: await page.textContent('#live'),
  });
  await check(page, 'external');

  // The live socket drops: the console reconnects (with backoff), subscribes again, and a change
  // made after that still reaches the table.
  await page.keyboard.press('Escape');
  await page.evaluate(() => {
    window.__liveStates = [];
    const l = document.getElementById('live');
    new MutationObserver(() => window.__liveStates.push(l.dataset.state)).observe(l, { attributes: true, attributeFilter: ['data-state'] });
    window.catalogConsole.live.socket.close();
  });
  await page.waitForFunction(() => window.__liveStates.includes('reconnecting') && document.getElementById('live').dataset.state === 'live', null, WAIT);
  const partnerNow = await rowCount(page, 'partner_models');
  const third = await api(
    'mutation($input: SourceInput!) { applySource(plugin: "models", input: $input, options: {refreshAfterApply: true}) { revision } }',
    { input: { id: 'partner_models', content: `${external}${ADDED.replace('console/added-model', 'external/model-3')}` } },
  );
  if (third.errors) fail(`third external apply failed: ${JSON.stringify(third.errors)}`);
  await page.waitForFunction((n) => {
    const cell = document.querySelector('#sources-body tr[data-source-id="partner_models"] td.count');
    return cell && Number(cell.textContent) === n;
  }, partnerNow + 1, WAIT);
  emit('reconnect', { states: await page.evaluate(() => window.__liveStates), countBefore: partnerNow, countAfter: await rowCount(page, 'partner_models') });
  await check(page, 'reconnect');
}

async function setToken(page, value) {
  await page.fill('#token', value);
  await page.click('#auth-form button[type="submit"]');
}

async function trustedSuite() {
  // No token: the page asks for one.
  const op = await newPage();
  const page = op.page;
  await open(page);
  await page.waitForSelector('#auth-note:not([hidden])', WAIT);
  const prompt = await page.textContent('#auth-note');
  await shot(page, 'auth-needed');
  emit('needs-token', { prompt, focused: await page.evaluate(() => document.activeElement.id) });
  // An operator token: the table loads, Save works (every document is a trusted one).
  await setToken(page, operatorToken);
  await page.waitForFunction(() => document.querySelectorAll('#sources-body tr').length > 0, null, WAIT);
  await page.waitForFunction(() => document.getElementById('live').dataset.state === 'live', null, WAIT);
  const rows = await tableRows(page);
  await openDrawer(page, 'team_models');
  const before = await page.inputValue('#editor');
  await page.fill('#editor', before.endsWith('\n') ? before + ADDED : `${before}\n${ADDED}`);
  await clearToast(page);
  await page.click('#save');
  const saved = await toastText(page, 'Saved revision');
  await shot(page, 'trusted-saved');
  emit('operator', { viewer: await page.textContent('#viewer'), rows: rows.length, toast: saved, countAfter: await rowCount(page, 'team_models') });
  await check(page, 'operator');
  // Suspend and Resume from the row (trusted documents too).
  await page.keyboard.press('Escape');
  await page.click('#sources-body tr[data-source-id="partner_models"] button.suspend');
  await page.waitForSelector('#sources-body tr[data-source-id="partner_models"] .badge-suspended', WAIT);
  const suspended = await row(page, 'partner_models');
  await shot(page, 'trusted-suspended');
  await page.click('#sources-body tr[data-source-id="partner_models"] button.resume');
  await page.waitForSelector('#sources-body tr[data-source-id="partner_models"] button.suspend', WAIT);
  const resumed = await row(page, 'partner_models');
  emit('operator-suspend', { suspended, resumed, outcome: await page.textContent('#table-outcome') });
  await check(page, 'operator-suspend');
  await op.context.close();

  // A viewer token: edit controls disabled with a reason; a forced mutation is refused.
  const vw = await newPage();
  const vpage = vw.page;
  await open(vpage);
  await setToken(vpage, viewerToken);
  await vpage.waitForFunction(() => document.getElementById('viewer').textContent.includes('VIEWER'), null, WAIT);
  await vpage.waitForFunction(() => document.querySelectorAll('#sources-body tr').length > 0, null, WAIT);
  await openDrawer(vpage, 'team_models');
  const disabled = await vpage.evaluate(() => ({
    save: document.getElementById('save').disabled,
    refreshSource: document.getElementById('refresh-source').disabled,
    refreshAll: document.getElementById('refresh-all').disabled,
    rollback: [...document.querySelectorAll('button.rollback')].map((b) => b.disabled),
    reason: document.getElementById('readonly-note').textContent,
    validate: document.getElementById('validate').disabled,
  }));
  await shot(vpage, 'viewer');
  const forced = await vpage.evaluate(async () => {
    const d = window.catalogConsole.state.drawer;
    try {
      await window.catalogConsole.send('save-source.graphql', 'SaveSource', {
        plugin: 'models',
        input: { id: 'team_models', content: document.getElementById('editor').value + '# forced\n' },
        expectedRevision: d.revision,
      });
      return 'accepted';
    } catch (e) {
      return e.code;
    }
  });
  // The same through the page's own Save path, with the button forced on: the refusal shows.
  await vpage.fill('#editor', (await vpage.inputValue('#editor')) + '# forced\n');
  await vpage.evaluate(() => {
    const b = document.getElementById('save');
    b.disabled = false;
    b.click();
  });
  await vpage.waitForSelector('#outcome [data-code="FORBIDDEN"]', WAIT);
  const shown = await vpage.textContent('#outcome');
  await shot(vpage, 'viewer-forbidden');
  emit('viewer', { disabled, forced, shown, toast: await vpage.textContent('#toast') });
  await check(vpage, 'viewer');
  // Suspend is off for a viewer; forced on, the API's refusal shows like the other errors.
  await vpage.keyboard.press('Escape');
  const suspendButton = '#sources-body tr[data-source-id="team_models"] button.suspend';
  const suspendDisabled = await vpage.isDisabled(suspendButton);
  await clearToast(vpage);
  await vpage.evaluate((sel) => {
    const b = document.querySelector(sel);
    b.disabled = false;
    b.click();
  }, suspendButton);
  await vpage.waitForSelector('#table-outcome [data-code]', WAIT);
  const suspendShown = await vpage.textContent('#table-outcome');
  await shot(vpage, 'viewer-suspend-forbidden');
  emit('viewer-suspend', {
    disabled: suspendDisabled,
    code: await vpage.getAttribute('#table-outcome [data-code]', 'data-code'),
    shown: suspendShown,
    badge: (await row(vpage, 'team_models')).suspended,
    toast: await vpage.textContent('#toast'),
  });
  await check(vpage, 'viewer-suspend');
}

// ---- the scheduling test (tests/it/console.rs the_console_shows_schedules_suspends_and_cancels)
const extra = process.argv.slice(6);

async function scheduleSuite() {
  const { page } = await newPage();
  await open(page);
  emit('schedule', { rows: await tableRows(page) });
  await shot(page, 'schedule');
  await check(page, 'schedule');
}

async function suspendSuite(resume) {
  const [id] = extra;
  const { page } = await newPage();
  await open(page);
  const before = await row(page, id);
  const button = `#sources-body tr[data-source-id="${id}"] button.${resume ? 'resume' : 'suspend'}`;
  await page.focus(button);
  await clearToast(page);
  await page.click(button);
  const toast = await toastText(page, resume ? 'Resumed' : 'Suspended');
  if (resume) await page.waitForSelector(`#sources-body tr[data-source-id="${id}"] button.suspend`, WAIT);
  else await page.waitForSelector(`#sources-body tr[data-source-id="${id}"] .badge-suspended`, WAIT);
  const after = await row(page, id);
  const focus = await page.evaluate(() => {
    const a = document.activeElement;
    return a && a.closest('tr') ? `${a.closest('tr').dataset.sourceId} ${a.textContent}` : null;
  });
  await shot(page, resume ? 'resumed' : 'suspended');
  emit(resume ? 'resume' : 'suspend', { before, after, toast, focus, outcome: await page.textContent('#table-outcome') });
  await check(page, resume ? 'resume' : 'suspend');
}

async function intervalSuite() {
  const [id, bad, good] = extra;
  const { page } = await newPage();
  await open(page);
  await openDrawer(page, id);
  const loaded = await page.inputValue('#refresh-interval');
  const revisionBefore = await page.evaluate(() => window.catalogConsole.state.drawer.revision);
  // A bad value (`-`: skip this): the API's diagnostics, listed like the others; nothing saved.
  let diagnostics = null;
  let invalid = null;
  let outcome = null;
  let focused = null;
  let badToast = null;
  let revisionAfterBad = null;
  if (bad !== '-') {
    await page.fill('#refresh-interval', bad);
    await clearToast(page);
    await page.click('#save');
    await page.waitForSelector('#diagnostics button.diagnostic', WAIT);
    diagnostics = await page.$$eval('#diagnostics button.diagnostic', (bs) => bs.map((b) => ({ text: b.textContent, field: b.dataset.field })));
    invalid = await page.getAttribute('#refresh-interval', 'aria-invalid');
    outcome = await page.textContent('#outcome');
    await page.locator('#diagnostics button.diagnostic').first().click();
    focused = await page.evaluate(() => document.activeElement.id);
    badToast = await page.textContent('#toast');
    revisionAfterBad = Number(await page.textContent('#drawer-details .drawer-revision'));
    await shot(page, 'interval-invalid');
  }
  // A good one: saved, and the table's next refresh follows.
  await page.fill('#refresh-interval', good);
  await clearToast(page);
  await page.click('#save');
  const toast = await toastText(page, 'Saved revision');
  await page.waitForFunction((v) => document.querySelector('#drawer-details .drawer-interval').textContent === (v || 'default'), good, WAIT);
  const drawerInterval = await page.textContent('#drawer-details .drawer-interval');
  const fieldAfter = await page.inputValue('#refresh-interval');
  await page.keyboard.press('Escape');
  await shot(page, 'interval-saved');
  emit('interval', {
    loaded,
    revisionBefore,
    diagnostics,
    invalid,
    outcome,
    focused,
    badToast,
    revisionAfterBad,
    toast,
    drawerInterval,
    fieldAfter,
    row: await row(page, id),
  });
  await check(page, 'interval');
}

async function cancelSuite() {
  const { page } = await newPage();
  await open(page);
  const disabledBefore = await page.isDisabled('#refresh-cancel');
  await page.selectOption('#refresh-mode', 'FULL');
  await page.click('#refresh-all');
  // Every source but the stalled url one is done; the job runs on.
  await page.waitForFunction(() => {
    const p = document.getElementById('refresh-panel');
    return p.dataset.phase === 'RUNNING' && Number(p.dataset.total) > 1 && Number(p.dataset.completed) === Number(p.dataset.total) - 1;
  }, null, WAIT);
  await page.waitForTimeout(300);
  const running = await page.evaluate(() => ({
    phase: document.getElementById('refresh-panel').dataset.phase,
    text: document.getElementById('refresh-text').textContent,
    cancelEnabled: !document.getElementById('refresh-cancel').disabled,
    jobId: window.catalogConsole.state.job && window.catalogConsole.state.job.id,
  }));
  await shot(page, 'cancel-running');
  const clicked = Date.now();
  await page.click('#refresh-cancel');
  await page.waitForFunction(() => document.getElementById('refresh-panel').dataset.phase === 'CANCELLED', null, { timeout: 5000 });
  const pageMs = Date.now() - clicked;
  const api = await (async () => {
    const r = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'query($id: ID!) { refreshJob(id: $id) { phase error results { sourceId } } }', variables: { id: running.jobId } }),
    });
    return r.json();
  })();
  const apiMs = Date.now() - clicked;
  // The subscription's last word does not undo the end.
  await page.waitForTimeout(500);
  const ended = await page.evaluate(() => ({
    phase: document.getElementById('refresh-panel').dataset.phase,
    text: document.getElementById('refresh-text').textContent,
    results: [...document.querySelectorAll('#refresh-results li')].map((li) => li.dataset.sourceId),
    cancelDisabled: document.getElementById('refresh-cancel').disabled,
    note: document.getElementById('refresh-note').textContent,
  }));
  await shot(page, 'cancelled');
  emit('cancel', { disabledBefore, running, pageMs, apiMs, api, ended });
  await check(page, 'cancel');

  // The drawer's own refresh of the stalled source has a Cancel too.
  await openDrawer(page, 'remote');
  await page.click('#refresh-source');
  await page.waitForFunction(() => document.getElementById('drawer-refresh').dataset.phase === 'RUNNING', null, WAIT);
  const drawerEnabled = !(await page.isDisabled('#drawer-refresh-cancel'));
  const drawerClicked = Date.now();
  await page.click('#drawer-refresh-cancel');
  await page.waitForFunction(() => document.getElementById('drawer-refresh').dataset.phase === 'CANCELLED', null, { timeout: 5000 });
  const drawerMs = Date.now() - drawerClicked;
  await shot(page, 'drawer-cancelled');
  emit('drawer-cancel', {
    enabled: drawerEnabled,
    ms: drawerMs,
    text: await page.textContent('#drawer-refresh-text'),
    disabledAfter: await page.isDisabled('#drawer-refresh-cancel'),
  });
  await check(page, 'drawer-cancel');
}

async function retrySuite() {
  const [id] = extra;
  const { page } = await newPage();
  await open(page);
  const r = await row(page, id);
  await openDrawer(page, id);
  const drawerRetry = (await page.$('#drawer-details .drawer-retry')) ? await page.textContent('#drawer-details .drawer-retry') : null;
  await shot(page, 'retry');
  emit('retry', { row: r, drawerRetry });
  await check(page, 'retry');
}

// ---- refresh of every plugin and the Jobs panel (tests/it/console.rs
// the_console_refreshes_every_plugin_and_cancels_any_job_in_chromium; --trusted-documents on)

/** Runs a ui-contract operation as the test (not the page), like any other client would. */
async function contractOp(file, operationName, variables, tokenValue) {
  const query = readFileSync(new URL(`../../ui-contract/${file}`, import.meta.url), 'utf8');
  const r = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenValue}` },
    body: JSON.stringify({ query, operationName, variables }),
  });
  return r.json();
}

async function signedIn(tokenValue, role) {
  const ctx = await newPage();
  await open(ctx.page);
  await setToken(ctx.page, tokenValue);
  await ctx.page.waitForFunction((r) => document.getElementById('viewer').textContent.includes(r), role, WAIT);
  await ctx.page.waitForFunction(() => document.querySelectorAll('#sources-body tr').length > 0, null, WAIT);
  await ctx.page.waitForFunction(() => window.catalogConsole.state.jobsLoaded, null, WAIT);
  await ctx.page.waitForFunction(() => document.getElementById('live').dataset.state === 'live', null, WAIT);
  return ctx;
}

/** The Jobs panel's row of job `id` as the page shows it (null when it is not listed). */
async function jobRow(page, id) {
  return page.evaluate((jid) => {
    const r = document.querySelector(`#jobs-body tr[data-job-id="${jid}"]`);
    if (!r) return null;
    const b = r.querySelector('button.job-cancel');
    return {
      phase: r.dataset.phase,
      shownPhase: r.querySelector('.phase').textContent,
      target: r.querySelector('.target').textContent,
      mode: r.querySelector('.mode').textContent,
      actor: r.querySelector('.actor').textContent,
      progress: r.querySelector('.job-progress').textContent.trim(),
      why: [...r.querySelectorAll('.job-phase .why')].map((s) => s.textContent),
      cancel: b ? { disabled: b.disabled, label: b.getAttribute('aria-label'), title: b.title } : null,
    };
  }, id);
}

async function waitJobPhase(page, id, phases, options = WAIT) {
  await page.waitForFunction(
    ([jid, ps]) => {
      const r = document.querySelector(`#jobs-body tr[data-job-id="${jid}"]`);
      return r && ps.includes(r.dataset.phase);
    },
    [id, phases],
    options,
  );
}

async function everythingSuite() {
  const { page } = await signedIn(operatorToken, 'OPERATOR');
  const scopes = await page.$$eval('#refresh-scope option', (os) => os.map((o) => [o.value, o.textContent]));
  await page.selectOption('#refresh-mode', 'FULL');
  await page.selectOption('#refresh-scope', 'all');
  const button = await page.textContent('#refresh-all');
  await page.click('#refresh-all');
  await page.waitForFunction(() => ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(document.getElementById('refresh-panel').dataset.phase), null, WAIT);
  await page.waitForFunction(() => {
    const p = document.getElementById('refresh-panel');
    return document.querySelectorAll('#refresh-results li').length === Number(p.dataset.total);
  }, null, WAIT);
  const refresh = await page.evaluate(() => ({
    jobId: window.catalogConsole.state.job && window.catalogConsole.state.job.id,
    phase: document.getElementById('refresh-panel').dataset.phase,
    title: document.getElementById('refresh-title').textContent,
    text: document.getElementById('refresh-text').textContent,
    max: document.getElementById('refresh-progress').max,
    value: document.getElementById('refresh-progress').value,
    results: [...document.querySelectorAll('#refresh-results li')].map((li) => ({
      plugin: li.dataset.plugin,
      sourceId: li.dataset.sourceId,
      status: li.className.replace('result-', '').toUpperCase(),
      text: li.textContent,
    })),
  }));
  // The Jobs panel lists the job (REFRESH_FINISHED carries plugin `*`).
  await waitJobPhase(page, refresh.jobId, [refresh.phase]);
  const listed = await jobRow(page, refresh.jobId);
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('button, input, select, textarea, progress')]
      .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.getAttribute('aria-labelledby') && !c.textContent.trim())
      .map((c) => c.id || c.outerHTML.slice(0, 60)),
  );
  await shot(page, 'refresh-everything');
  emit('everything', { scopes, button, refresh, listed, unlabelled });
  await check(page, 'everything');
}

async function jobsSuite() {
  // A viewer's page and an operator's, both open before the job starts elsewhere.
  const vw = await signedIn(viewerToken, 'VIEWER');
  const op = await signedIn(operatorToken, 'OPERATOR');
  const vpage = vw.page;
  const page = op.page;
  const started = await contractOp('console.graphql', 'StartRefreshSource', { plugin: 'models', id: 'remote', mode: 'FULL' }, operatorToken);
  if (started.errors) fail(`the outside refresh failed: ${JSON.stringify(started.errors)}`);
  const jobId = started.data.refreshSource.id;
  // Both pages list it without a reload (catalogEvents REFRESH_STARTED), with a Cancel.
  await waitJobPhase(page, jobId, ['QUEUED', 'RUNNING']);
  await waitJobPhase(vpage, jobId, ['QUEUED', 'RUNNING']);
  await page.waitForSelector(`#jobs-body tr[data-job-id="${jobId}"] button.job-cancel`, WAIT);
  const listed = await jobRow(page, jobId);
  const viewerListed = await jobRow(vpage, jobId);
  await shot(vpage, 'jobs-viewer');

  // The viewer's Cancel, forced on: the API's FORBIDDEN shows; the job runs on.
  await vpage.evaluate((jid) => {
    const b = document.querySelector(`#jobs-body tr[data-job-id="${jid}"] button.job-cancel`);
    b.disabled = false;
    b.click();
  }, jobId);
  await vpage.waitForSelector('#jobs-note[data-code]', WAIT);
  const viewerRefused = {
    code: await vpage.getAttribute('#jobs-note', 'data-code'),
    note: await vpage.textContent('#jobs-note'),
    api: (await contractOp('refresh-rollback.graphql', 'RefreshJob', { id: jobId }, operatorToken)).data.refreshJob.phase,
    row: await jobRow(vpage, jobId),
  };

  // The operator's Cancel keeps the keyboard focus while the panel re-renders: another job
  // (mcp/tools, elsewhere) starts and ends meanwhile.
  await page.focus(`#jobs-body tr[data-job-id="${jobId}"] button.job-cancel`);
  const other = await contractOp('console.graphql', 'StartRefreshSource', { plugin: 'mcp', id: 'tools' }, operatorToken);
  if (other.errors) fail(`the second outside refresh failed: ${JSON.stringify(other.errors)}`);
  const otherId = other.data.refreshSource.id;
  await waitJobPhase(page, otherId, ['SUCCEEDED']);
  const focusKept = await page.evaluate((jid) => {
    const a = document.activeElement;
    return Boolean(a && a.matches('button.job-cancel') && a.closest('tr').dataset.jobId === jid);
  }, jobId);
  const order = await page.$$eval('#jobs-body tr', (rows) => rows.slice(0, 2).map((r) => r.dataset.jobId));
  await shot(page, 'jobs-running');

  const clicked = Date.now();
  await page.click(`#jobs-body tr[data-job-id="${jobId}"] button.job-cancel`);
  await waitJobPhase(page, jobId, ['CANCELLED'], { timeout: 5000 });
  const pageMs = Date.now() - clicked;
  const api = await contractOp('refresh-rollback.graphql', 'RefreshJob', { id: jobId }, operatorToken);
  const apiMs = Date.now() - clicked;
  const ended = await jobRow(page, jobId);
  const focusAfter = await page.evaluate(() => document.activeElement && document.activeElement.id);
  // The viewer's page follows too (REFRESH_FINISHED), its Cancel gone.
  await waitJobPhase(vpage, jobId, ['CANCELLED']);
  const viewerEnded = await jobRow(vpage, jobId);
  await shot(page, 'jobs-cancelled');
  emit('jobs', { jobId, started: started.data.refreshSource.phase, listed, viewerListed, viewerRefused, otherId, focusKept, order, pageMs, apiMs, api, ended, focusAfter, viewerEnded, note: await page.textContent('#jobs-note') });
  await check(page, 'jobs');
  await check(vpage, 'jobs-viewer');

  // Refresh of every plugin while the url host still stalls: the refresh panel's Cancel ends it.
  await page.selectOption('#refresh-scope', 'all');
  await page.click('#refresh-all');
  await page.waitForFunction(() => {
    const p = document.getElementById('refresh-panel');
    return p.dataset.phase === 'RUNNING' && Number(p.dataset.total) > 1 && Number(p.dataset.completed) === Number(p.dataset.total) - 1;
  }, null, WAIT);
  const allId = await page.evaluate(() => window.catalogConsole.state.job.id);
  await waitJobPhase(page, allId, ['RUNNING']);
  const allListed = await jobRow(page, allId);
  const allClicked = Date.now();
  await page.click('#refresh-cancel');
  await page.waitForFunction(() => document.getElementById('refresh-panel').dataset.phase === 'CANCELLED', null, { timeout: 5000 });
  const allMs = Date.now() - allClicked;
  await waitJobPhase(page, allId, ['CANCELLED']);
  const allEnded = await page.evaluate(() => ({
    text: document.getElementById('refresh-text').textContent,
    results: [...document.querySelectorAll('#refresh-results li')].map((li) => `${li.dataset.plugin}/${li.dataset.sourceId}`),
    cancelDisabled: document.getElementById('refresh-cancel').disabled,
  }));
  await shot(page, 'jobs-all-cancelled');
  emit('all-cancel', { jobId: allId, listed: allListed, ms: allMs, ended: allEnded, row: await jobRow(page, allId) });
  await check(page, 'all-cancel');
}

try {
  if (suite === 'main') await mainSuite();
  else if (suite === 'trusted') await trustedSuite();
  else if (suite === 'schedule') await scheduleSuite();
  else if (suite === 'suspend') await suspendSuite(false);
  else if (suite === 'resume') await suspendSuite(true);
  else if (suite === 'interval') await intervalSuite();
  else if (suite === 'cancel') await cancelSuite();
  else if (suite === 'retry') await retrySuite();
  else if (suite === 'everything') await everythingSuite();
  else if (suite === 'jobs') await jobsSuite();
  else fail(`unknown suite ${suite}`);
  emit('done');
} catch (e) {
  fail(`${suite}: ${e && e.stack ? e.stack : e}`);
} finally {
  await browser.close();
}
