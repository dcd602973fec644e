// The operator console: sources per plugin, a drawer to edit one source (validate, preview,
// save, refresh, history, rollback), live updates from catalogEvents and refresh progress from
// refreshProgress. Plain ES modules, no framework; every request is a ui-contract operation.

import { GraphQLError, documentFor, loadOperations, send, setToken, token } from './api.js';
import { LiveClient } from './ws.js';
import { el, offsetOf, plural, position, replace, timeAgo, timeUntil } from './util.js';

const $ = (id) => document.getElementById(id);

const TABLE = 'sources-table.graphql';
const DETAILS = 'source-details.graphql';
const SAVE = 'save-source.graphql';
const CONSOLE = 'console.graphql';

const state = {
  viewer: null,
  plugins: [],
  plugin: null,
  sources: [],
  filter: '',
  drawer: null, // { plugin, id, source, content, revision, history }
  opener: null,
  busy: false,
  deferred: [],
  refreshUnsubscribe: null,
  job: null, // the refresh job the page shows: { id, phase, cancelling }
  jobs: [], // the Jobs panel: recent refresh jobs, newest first (refreshJobsConnection)
  jobsLoaded: false,
  cancelling: new Set(), // ids of jobs whose Cancel (in the Jobs panel) is on its way
};

const FINAL = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

// ---------------------------------------------------------------- status, toast, errors

function announce(text) {
  $('status').textContent = text;
}

let toastTimer = null;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.classList.add('shown');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('shown'), 8000);
}

function describe(error) {
  if (error instanceof GraphQLError) return `${error.code}: ${error.message}`;
  return String(error && error.message ? error.message : error);
}

/** Handles the errors every screen treats alike; returns true when it did. */
function common(error) {
  if (!(error instanceof GraphQLError)) return false;
  if (error.code === 'UNAUTHENTICATED') {
    askForToken(error.message);
    return true;
  }
  return false;
}

function askForToken(message) {
  const note = $('auth-note');
  note.textContent = `This server needs a token (${message}). Enter one above and press “Use token”.`;
  note.hidden = false;
  $('token').focus();
  announce('A token is needed');
}

// ---------------------------------------------------------------- viewer and edit rights

async function loadViewer() {
  try {
    const data = await send(CONSOLE, 'Viewer');
    state.viewer = data.viewer;
    $('auth-note').hidden = true;
  } catch (e) {
    state.viewer = null;
    if (!common(e)) announce(`Cannot tell who you are: ${describe(e)}`);
  }
  applyRights();
}

function canEdit() {
  return Boolean(state.viewer && state.viewer.canEdit);
}

function applyRights() {
  const v = state.viewer;
  $('viewer').textContent = v ? `${v.name} · ${v.role}` : 'not signed in';
  const reason = v
    ? `Read-only: ${v.name} is a ${v.role.toLowerCase()}; saving, refreshing and rolling back need an operator token.`
    : 'Read-only until a token is accepted.';
  const note = $('readonly-note');
  note.textContent = canEdit() ? '' : reason;
  note.hidden = canEdit();
  for (const b of document.querySelectorAll('button.edit')) {
    b.disabled = !canEdit() || state.busy;
    b.title = canEdit() ? '' : reason;
  }
  updateCancel();
  updateJobButtons();
}

/** The Cancel buttons: on only while the shown job runs (and for an operator). */
function updateCancel() {
  const j = state.job;
  const on = Boolean(j) && !FINAL.includes(j.phase) && !j.cancelling && canEdit();
  for (const id of ['refresh-cancel', 'drawer-refresh-cancel']) {
    const b = $(id);
    b.disabled = !on;
    b.title = !j || FINAL.includes(j.phase) ? 'The refresh has ended' : canEdit() ? '' : 'Cancelling needs an operator token';
  }
}

// ---------------------------------------------------------------- sources table

async function loadTable() {
  try {
    const data = await send(TABLE, 'SourcesTable', { plugin: null });
    state.plugins = data.plugins;
    state.allSources = data.sources;
    if (!state.plugin || !data.plugins.some((p) => p.name === state.plugin)) {
      const fromHash = new URLSearchParams(location.hash.slice(1)).get('plugin');
      state.plugin = data.plugins.some((p) => p.name === fromHash) ? fromHash : data.plugins[0] && data.plugins[0].name;
    }
    renderPlugins();
    renderTable();
  } catch (e) {
    if (!common(e)) announce(`Cannot load the sources: ${describe(e)}`);
  }
}

function renderPlugins() {
  const list = $('plugins');
  replace(
    list,
    state.plugins.map((p) =>
      el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            'aria-pressed': String(p.name === state.plugin),
            dataset: { plugin: p.name },
            onclick: () => selectPlugin(p.name),
          },
          `${p.name} (${p.sourceCount})`,
        ),
      ),
    ),
  );
}

function selectPlugin(name) {
  state.plugin = name;
  history.replaceState(null, '', `#plugin=${encodeURIComponent(name)}`);
  renderPlugins();
  renderTable();
}

function visibleSources() {
  const f = state.filter.trim().toLowerCase();
  return (state.allSources || [])
    .filter((s) => s.plugin === state.plugin)
    .filter((s) => !f || [s.name, s.id, ...(s.labels || [])].some((x) => String(x).toLowerCase().includes(f)));
}

const SUSPENDED_TITLE = 'Suspended: keeps serving its last entities; the scheduler, the watcher and plugin-wide refreshes skip it';

/** A relative time that the page keeps true while it is open (see `tickTimes`). */
function until(iso, cls) {
  return el('span', { class: cls, title: iso || '', dataset: { until: iso || '' } }, timeUntil(iso));
}

/** "in 4 m" (or "—"), and "retry N, next in …" while a failed refresh is being retried. */
function scheduleCell(s) {
  const retries = s.status.retryCount || 0;
  return [
    until(s.nextRefreshAt, 'next'),
    retries > 0
      ? el(
          'span',
          { class: 'retry', dataset: { retryCount: retries } },
          `retry ${retries}`,
          s.status.nextRetryAt ? [', next ', until(s.status.nextRetryAt, 'next-retry')] : null,
        )
      : null,
  ];
}

function renderTable() {
  $('plugin-title').textContent = state.plugin ? `Sources · ${state.plugin}` : 'Sources';
  $('sources-caption').textContent = state.plugin ? `Sources of plugin ${state.plugin}` : 'Sources';
  // Re-rendering replaces the rows: keep the focus on the same control of the same source.
  const active = document.activeElement;
  const activeRow = active && $('sources-body').contains(active) ? active.closest('tr') : null;
  const refocus = activeRow ? { plugin: activeRow.dataset.plugin, id: activeRow.dataset.sourceId, role: active.dataset.role } : null;
  const rows = visibleSources().map((s) =>
    el(
      'tr',
      { dataset: { sourceId: s.id, plugin: s.plugin, suspended: String(Boolean(s.suspended)) } },
      el(
        'td',
        {},
        el(
          'button',
          { type: 'button', class: 'link', dataset: { role: 'open' }, onclick: (ev) => openDrawer(s.plugin, s.id, ev.currentTarget) },
          s.name,
        ),
      ),
      el('td', { class: 'mono' }, s.id),
      el('td', { class: 'enabled' }, s.enabled ? 'yes' : 'no'),
      el(
        'td',
        {},
        el('span', { class: `state state-${s.status.state.toLowerCase()}` }, s.status.state),
        s.suspended ? [' ', el('span', { class: 'badge badge-suspended', title: SUSPENDED_TITLE }, 'Suspended')] : null,
      ),
      el('td', { class: 'num count' }, s.status.entityCount),
      el('td', { class: 'ago', title: s.status.lastRefreshTime || '', dataset: { ago: s.status.lastRefreshTime || '' } }, timeAgo(s.status.lastRefreshTime)),
      el(
        'td',
        { class: 'last-status', title: s.status.lastError || s.status.lastRefreshSummary || '' },
        s.status.lastRefreshStatus || '—',
        s.status.lastRefreshSummary ? el('span', { class: 'summary' }, ` · ${s.status.lastRefreshSummary}`) : null,
      ),
      el('td', { class: 'schedule' }, scheduleCell(s)),
      el(
        'td',
        { class: 'row-actions' },
        el(
          'button',
          {
            type: 'button',
            class: `edit ${s.suspended ? 'resume' : 'suspend'}`,
            'aria-label': `${s.suspended ? 'Resume' : 'Suspend'} ${s.plugin}/${s.id}`,
            'aria-describedby': 'readonly-note',
            dataset: { role: 'suspend' },
            onclick: (ev) => setSuspended(s, !s.suspended, ev.currentTarget),
          },
          s.suspended ? 'Resume' : 'Suspend',
        ),
      ),
    ),
  );
  replace($('sources-body'), rows);
  $('sources-empty').hidden = rows.length > 0;
  applyRights();
  if (refocus) {
    const row = document.querySelector(`#sources-body tr[data-source-id="${CSS.escape(refocus.id)}"][data-plugin="${CSS.escape(refocus.plugin)}"]`);
    const target = row && (row.querySelector(`[data-role="${CSS.escape(refocus.role || 'open')}"]`) || row.querySelector('button'));
    if (target) target.focus();
  }
}

/** Keeps every relative time on the page true ("in 25 s", "3 m ago") without re-rendering. */
function tickTimes() {
  const now = Date.now();
  for (const node of document.querySelectorAll('[data-until]')) node.textContent = timeUntil(node.dataset.until || null, now);
  for (const node of document.querySelectorAll('[data-ago]')) node.textContent = timeAgo(node.dataset.ago || null, now);
}

/** Suspend or Resume from a row; the answer (or the API's refusal) shows at once. */
async function setSuspended(s, suspend, button) {
  const what = suspend ? 'Suspend' : 'Resume';
  replace($('table-outcome'));
  // Disabling the button drops its focus: give it back to the row's new button afterwards.
  const hadFocus = Boolean(button) && document.activeElement === button;
  const refocus = () => {
    if (!hadFocus) return;
    const row = document.querySelector(`#sources-body tr[data-source-id="${CSS.escape(s.id)}"][data-plugin="${CSS.escape(s.plugin)}"]`);
    const b = row && row.querySelector('[data-role="suspend"]');
    if (b) b.focus();
  };
  if (button) button.disabled = true;
  try {
    const data = await send(TABLE, suspend ? 'SuspendSource' : 'ResumeSource', { plugin: s.plugin, id: s.id });
    const updated = suspend ? data.suspendSource : data.resumeSource;
    const list = state.allSources || [];
    const i = list.findIndex((x) => x.plugin === updated.plugin && x.id === updated.id);
    if (i >= 0) list[i] = updated;
    renderTable();
    const text = `${suspend ? 'Suspended' : 'Resumed'} ${updated.plugin}/${updated.id}`;
    toast(text);
    announce(text);
    if (state.drawer && state.drawer.plugin === updated.plugin && state.drawer.id === updated.id) loadDrawer({ keepEditor: true });
  } catch (e) {
    if (common(e)) return;
    const code = e instanceof GraphQLError ? e.code : 'ERROR';
    replace(
      $('table-outcome'),
      el('p', { class: 'error-text', dataset: { code } }, `${what} of ${s.plugin}/${s.id} failed: ${describe(e)}. Nothing was changed.`),
    );
    announce(`${what} failed: ${code}`);
  } finally {
    if (button && document.contains(button)) applyRights();
    refocus();
  }
}

// ---------------------------------------------------------------- drawer

function editorDirty() {
  const d = state.drawer;
  return Boolean(d) && ($('editor').value !== (d.content ?? '') || $('refresh-interval').value.trim() !== (d.interval ?? ''));
}

async function openDrawer(plugin, id, opener) {
  state.opener = opener || document.activeElement;
  state.drawer = { plugin, id, source: null, content: '', interval: '', revision: null };
  $('drawer').hidden = false;
  $('drawer-title').textContent = id;
  clearOutcome();
  $('revision-view').hidden = true;
  $('drawer-banner').hidden = true;
  $('drawer-refresh').hidden = true;
  await loadDrawer({ keepEditor: false });
  $('drawer-title').focus();
}

function closeDrawer() {
  if ($('drawer').hidden) return;
  $('drawer').hidden = true;
  const closed = state.drawer;
  state.drawer = null;
  const back = state.opener;
  state.opener = null;
  if (back && document.contains(back)) back.focus();
  else {
    // The table was re-rendered meanwhile: focus the same source's row.
    const row = closed && document.querySelector(`#sources-body tr[data-source-id="${CSS.escape(closed.id)}"][data-plugin="${CSS.escape(closed.plugin)}"] button`);
    (row || $('filter')).focus();
  }
}

async function loadDrawer({ keepEditor }) {
  const d = state.drawer;
  if (!d) return;
  try {
    const [details, hist] = await Promise.all([
      send(DETAILS, 'SourceDetails', { plugin: d.plugin, id: d.id, first: 5 }),
      send(CONSOLE, 'SourceHistory', { plugin: d.plugin, id: d.id, limit: 20 }),
    ]);
    if (state.drawer !== d) return;
    const s = details.source;
    if (!s) {
      announce(`Source ${d.plugin}/${d.id} no longer exists`);
      closeDrawer();
      return;
    }
    d.source = s;
    d.history = hist.source ? hist.source.revisions : [];
    if (!keepEditor) {
      d.content = s.content ?? '';
      d.interval = s.refreshInterval ?? '';
      d.revision = s.revision;
      $('editor').value = d.content;
      $('refresh-interval').value = d.interval;
      $('refresh-interval').removeAttribute('aria-invalid');
      $('drawer-banner').hidden = true;
      updateGutter();
    }
    renderDrawer(details.entities);
  } catch (e) {
    if (!common(e)) announce(`Cannot load ${d.plugin}/${d.id}: ${describe(e)}`);
  }
}

function renderDrawer(entities) {
  const d = state.drawer;
  const s = d.source;
  $('drawer-title').textContent = `${s.name} (${s.plugin}/${s.id})`;
  const row = (k, v, cls) => [el('dt', {}, k), el('dd', { class: cls }, v)];
  replace(
    $('drawer-details'),
    row('ID', s.id, 'mono'),
    row('Type', s.type),
    row('Enabled', s.enabled ? 'yes' : 'no'),
    row('Suspended', s.suspended ? 'yes: plugin-wide and scheduled refreshes skip it' : 'no', 'drawer-suspended'),
    row('State', s.status.state, 'drawer-state'),
    row('Entities', String(s.status.entityCount), 'drawer-count'),
    row('Revision', s.revision == null ? '—' : String(s.revision), 'drawer-revision'),
    row('Last refreshed', `${timeAgo(s.status.lastRefreshTime)}${s.status.durationMs ? ` (${s.status.durationMs} ms)` : ''}`),
    row('Last status', s.status.lastRefreshSummary || s.status.lastRefreshStatus || '—'),
    row('Refresh interval', s.refreshInterval || 'default', 'drawer-interval'),
    row('Next refresh', until(s.nextRefreshAt, 'next'), 'drawer-next'),
    s.status.retryCount > 0 ? row('Retries', scheduleCell(s)[1], 'drawer-retry') : [],
    s.status.lastError ? row('Last error', s.status.lastError, 'error-text') : [],
    entities ? row('Entities (first)', entities.edges.map((e) => e.node.name).join(', ') || '—') : [],
  );
  replace($('drawer-labels'), (s.labels || []).length ? s.labels.map((l) => el('li', {}, l)) : el('li', {}, 'none'));
  $('drawer-properties').textContent = JSON.stringify(s.properties, null, 2);
  const editable = s.content != null;
  $('editor').readOnly = !editable;
  $('editor-note').textContent = editable
    ? `Editing revision ${d.revision ?? '—'}. Save sends it with expectedRevision ${d.revision ?? 'none'}.`
    : `A ${s.type} source has no editable catalog content; Save stores its refresh interval.`;
  $('refresh-interval-note').textContent = `A duration of at least 10s (30s, 10m, 1h); empty: ${
    s.type === 'url' ? "the server's default for url sources" : 'refresh when the file changes only'
  }. Saved with Save.`;
  renderHistory();
  applyRights();
}

function updateGutter() {
  const lines = $('editor').value.split('\n').length;
  let text = '';
  for (let i = 1; i <= lines; i++) text += `${i}\n`;
  $('gutter').textContent = text;
  $('gutter').scrollTop = $('editor').scrollTop;
}

function input() {
  const d = state.drawer;
  const out = { id: d.id, refreshInterval: $('refresh-interval').value.trim() };
  // A source without editable content (a url source) keeps its entry; only the interval changes.
  if (!d.source || d.source.content != null) out.content = $('editor').value;
  return out;
}

function clearOutcome() {
  $('refresh-interval').removeAttribute('aria-invalid');
  replace($('outcome'));
  replace($('diagnostics'));
  replace($('impact'));
}

function setBusy(busy, text) {
  state.busy = busy;
  $('save-progress').hidden = !busy;
  $('save-progress-text').textContent = text || '';
  $('drawer').setAttribute('aria-busy', String(busy));
  for (const id of ['validate', 'preview']) $(id).disabled = busy;
  applyRights();
  if (!busy) flushDeferred();
}

/** A diagnostic about the refresh interval field (`refreshInterval` or `input.refreshInterval`). */
function isIntervalDiagnostic(d) {
  return /(^|\.)refreshInterval$/.test(d.field || '');
}

function showDiagnostics(list, heading) {
  if (list.some(isIntervalDiagnostic)) $('refresh-interval').setAttribute('aria-invalid', 'true');
  replace($('outcome'), el('p', { class: 'error-text' }, heading));
  replace(
    $('diagnostics'),
    list.map((d) =>
      el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: 'diagnostic',
            dataset: { line: d.line ?? '', column: d.column ?? '', field: d.field ?? '' },
            onclick: () => (isIntervalDiagnostic(d) ? $('refresh-interval').focus() : jumpTo(d.line, d.column)),
          },
          `${position(d)}${position(d) ? ': ' : ''}${d.message}`,
        ),
        d.hint ? el('span', { class: 'hint' }, ` ${d.hint}`) : null,
        d.suggestion ? el('span', { class: 'hint' }, ` Did you mean “${d.suggestion}”?`) : null,
      ),
    ),
  );
}

function jumpTo(line, column) {
  const ta = $('editor');
  if (line == null) {
    ta.focus();
    return;
  }
  const start = offsetOf(ta.value, line, column);
  const nl = ta.value.indexOf('\n', start);
  const end = nl < 0 ? ta.value.length : nl;
  ta.focus();
  ta.setSelectionRange(start, Math.max(start, end));
  // Scroll the line into view: rows are one line-height apart.
  const lineHeight = parseFloat(getComputedStyle(ta).lineHeight) || 18;
  ta.scrollTop = Math.max(0, (line - 3) * lineHeight);
  updateGutter();
}

function impactView(impact, title) {
  const group = (label, n, names, cls) =>
    el(
      'div',
      { class: `impact-group ${cls}` },
      el('h4', {}, `${label}: ${n}`),
      names && names.length ? el('ul', {}, names.map((x) => el('li', {}, x))) : null,
      names && n > names.length ? el('p', { class: 'note' }, `…and ${n - names.length} more`) : null,
    );
  return el(
    'section',
    { class: 'impact-view', 'aria-label': title },
    el('h4', {}, title),
    group('To add', impact.toAdd, impact.addedNames, 'add'),
    group('To update', impact.toUpdate, impact.updatedNames, 'update'),
    group('To remove', impact.toRemove, impact.removedNames, 'remove'),
    impact.unchanged != null ? el('p', { class: 'note' }, `Unchanged: ${impact.unchanged}`) : null,
  );
}

async function validate() {
  clearOutcome();
  setBusy(true, 'Validating…');
  try {
    const data = await send(SAVE, 'ValidateSource', { plugin: state.drawer.plugin, input: input() });
    const r = data.validateSource;
    if (r.valid) {
      replace(
        $('outcome'),
        el('p', { class: 'ok-text' }, `Valid${r.warnings.length ? ` with ${plural(r.warnings.length, 'warning')}` : ''}. Nothing was changed.`),
      );
      if (r.warnings.length) showWarnings(r.warnings);
    } else {
      showDiagnostics(r.errors, `Invalid: ${plural(r.errors.length, 'problem')}. Nothing was changed.`);
    }
  } catch (e) {
    failure(e, 'Validate');
  } finally {
    setBusy(false);
  }
}

function showWarnings(warnings) {
  replace(
    $('diagnostics'),
    warnings.map((w) =>
      el('li', {}, el('button', { type: 'button', class: 'diagnostic warning', onclick: () => jumpTo(w.line, w.column) }, `${position(w)}${position(w) ? ': ' : ''}${w.message}`)),
    ),
  );
}

async function preview() {
  clearOutcome();
  setBusy(true, 'Computing the impact…');
  try {
    const d = state.drawer;
    const data = await send(SAVE, 'PreviewSource', { plugin: d.plugin, input: input(), expectedRevision: d.revision });
    const r = data.applySource;
    if (!r.validation.valid) {
      showDiagnostics(r.validation.errors, 'Invalid: nothing would be saved.');
    } else {
      replace($('outcome'), el('p', { class: 'ok-text' }, 'Dry run: nothing was changed.'));
      replace($('impact'), impactView(r.impact, 'Impact of saving'));
    }
  } catch (e) {
    failure(e, 'Preview');
  } finally {
    setBusy(false);
  }
}

/** Shows a refused mutation or query the way the user can act on it; nothing pretends success. */
function failure(e, what) {
  if (common(e)) return;
  if (e instanceof GraphQLError && e.code === 'VALIDATION_FAILED' && Array.isArray(e.extensions.diagnostics)) {
    showDiagnostics(e.extensions.diagnostics, `${what} refused: ${e.message}. Nothing was saved.`);
    announce(`${what} refused: ${plural(e.extensions.diagnostics.length, 'problem')}`);
    return;
  }
  if (e instanceof GraphQLError && e.code === 'CONFLICT') {
    const current = e.extensions.currentRevision;
    replace(
      $('outcome'),
      el(
        'p',
        { class: 'error-text' },
        `Conflict: the source is at revision ${current ?? '?'} now, you loaded revision ${state.drawer.revision}. Nothing was saved. `,
        el('button', { type: 'button', id: 'conflict-reload', onclick: () => reloadDrawer() }, 'Reload the source'),
      ),
    );
    announce('Conflict: the source changed since you loaded it');
    return;
  }
  const code = e instanceof GraphQLError ? e.code : 'ERROR';
  replace($('outcome'), el('p', { class: 'error-text', dataset: { code } }, `${what} failed: ${describe(e)}. Nothing was changed.`));
  announce(`${what} failed: ${code}`);
}

async function reloadDrawer() {
  if (!state.drawer) return;
  clearOutcome();
  $('drawer-banner').hidden = true;
  await loadDrawer({ keepEditor: false });
  announce(`Reloaded revision ${state.drawer ? state.drawer.revision : ''}`);
}

function confirmDialog(title, body, okLabel) {
  return new Promise((resolve) => {
    const dlg = $('confirm');
    $('confirm-title').textContent = title;
    replace($('confirm-body'), body);
    $('confirm-ok').textContent = okLabel;
    const done = () => {
      dlg.removeEventListener('close', done);
      resolve(dlg.returnValue === 'ok');
    };
    dlg.returnValue = '';
    dlg.addEventListener('close', done);
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

function removalBody(ext, message) {
  const impact = ext.impact || {};
  return [
    el('p', {}, message),
    el('p', {}, `This removes ${plural(impact.toRemove ?? 0, 'entity')} of ${impact.currentCount ?? '?'}:`),
    el('ul', { class: 'removed' }, (impact.removedNames || []).map((n) => el('li', {}, n))),
    impact.toRemove > (impact.removedNames || []).length ? el('p', {}, `…and ${impact.toRemove - impact.removedNames.length} more`) : null,
  ];
}

async function save(confirmRemovals = false) {
  const d = state.drawer;
  if (!d) return;
  clearOutcome();
  setBusy(true, 'Saving and refreshing…');
  let ok = false;
  try {
    const data = await send(SAVE, 'SaveSource', {
      plugin: d.plugin,
      input: input(),
      expectedRevision: d.revision,
      confirmRemovals,
    });
    const r = data.applySource;
    if (!r.validation.valid) {
      showDiagnostics(r.validation.errors, 'Invalid: nothing was saved.');
      return;
    }
    ok = true;
    await afterChange(d, r, r.changed ? `Saved revision ${r.revision}` : `No change (revision ${r.revision})`);
  } catch (e) {
    if (e instanceof GraphQLError && e.code === 'REMOVALS_NEED_CONFIRMATION') {
      setBusy(false);
      const yes = await confirmDialog('Remove entities?', removalBody(e.extensions, e.message), 'Remove and save');
      if (yes) return save(true);
      replace($('outcome'), el('p', { class: 'note' }, 'Not saved: the removals were not confirmed.'));
      return;
    }
    failure(e, 'Save');
  } finally {
    if (state.busy) setBusy(false);
    if (!ok) applyRights();
  }
}

/** After a save or rollback: update the row and the drawer in place, then the toast. */
async function afterChange(d, r, head) {
  const src = (state.allSources || []).find((s) => s.plugin === d.plugin && s.id === d.id);
  if (src && r.source) {
    src.revision = r.source.revision;
    for (const k of ['suspended', 'refreshInterval', 'nextRefreshAt']) if (k in r.source) src[k] = r.source[k];
    Object.assign(src.status, r.source.status);
    renderTable();
  }
  await loadDrawer({ keepEditor: false });
  const results = (r.refresh && r.refresh.results) || [];
  const res = results.find((x) => !x.sourceId || x.sourceId === d.id) || results[0];
  const ms = state.drawer && state.drawer.source ? state.drawer.source.status.durationMs : null;
  let text = head;
  if (res) {
    text += ` · loaded ${plural(res.entitiesLoaded, 'entity')}, removed ${res.entitiesRemoved}`;
    const dur = res.durationMs ?? ms;
    if (dur != null) text += ` in ${dur} ms`;
    if (res.status !== 'SUCCESS') text += ` (${res.status}: ${res.summary})`;
  }
  toast(text);
  announce(text);
  loadTable();
}

async function refreshSource() {
  const d = state.drawer;
  if (!d) return;
  await startRefresh('StartRefreshSource', { plugin: d.plugin, id: d.id, mode: $('source-refresh-mode').value }, `${d.plugin}/${d.id}`);
}

async function refreshAll() {
  const mode = $('refresh-mode').value;
  if ($('refresh-scope').value === 'all') {
    // One job over every source of every plugin (refreshAll): one progress stream, and a
    // failing source does not stop the others.
    await startRefresh('StartRefreshAll', { mode }, 'every plugin');
    return;
  }
  if (!state.plugin) return;
  await startRefresh('StartRefreshPlugin', { plugin: state.plugin, mode }, `plugin ${state.plugin}`);
}

async function startRefresh(op, variables, what) {
  const panel = $('refresh-panel');
  $('toast').classList.remove('shown');
  panel.hidden = false;
  panel.dataset.phase = 'QUEUED';
  state.job = null;
  jobNote('');
  updateCancel();
  replace($('refresh-results'));
  $('refresh-title').textContent = `Refresh of ${what} (${variables.mode})`;
  $('refresh-text').textContent = 'Starting…';
  let job;
  try {
    const data = await send(CONSOLE, op, variables);
    job = data.refreshSource || data.refreshPlugin || data.refreshAll;
  } catch (e) {
    if (!common(e)) {
      $('refresh-text').textContent = `Refresh refused: ${describe(e)}`;
      panel.dataset.phase = 'REFUSED';
      announce(`Refresh refused: ${e.code || ''}`);
    }
    return;
  }
  state.job = { id: job.id, phase: job.phase, cancelling: false };
  showJob(job);
  scheduleJobs();
  if (state.refreshUnsubscribe) state.refreshUnsubscribe();
  state.refreshUnsubscribe = live.subscribe(
    { query: documentFor(CONSOLE), operationName: 'RefreshProgress', variables: { jobId: job.id } },
    {
      next: (payload) => {
        if (payload.data && payload.data.refreshProgress) showJob(payload.data.refreshProgress);
        if (payload.errors) $('refresh-text').textContent = `Progress unavailable: ${payload.errors[0].message}`;
      },
      error: (errors) => {
        $('refresh-text').textContent = `Progress unavailable: ${errors && errors[0] ? errors[0].message : 'error'}`;
      },
      complete: () => {
        state.refreshUnsubscribe = null;
        loadTable();
        scheduleJobs();
        if (state.drawer && !editorDirty()) loadDrawer({ keepEditor: false });
      },
    },
  );
}

/** A note under the job's progress (page panel and drawer): a refused cancel, say. */
function jobNote(text, code) {
  for (const id of ['refresh-note', 'drawer-refresh-note']) {
    $(id).textContent = text;
    if (code) $(id).dataset.code = code;
    else delete $(id).dataset.code;
  }
}

/** Cancel on the shown running job: cancelRefreshJob, then the job as it ended (CANCELLED). */
async function cancelJob() {
  const j = state.job;
  if (!j || FINAL.includes(j.phase) || j.cancelling) return;
  j.cancelling = true;
  updateCancel();
  jobNote('');
  try {
    const data = await send(CONSOLE, 'CancelRefreshJob', { id: j.id });
    showJob(data.cancelRefreshJob);
    loadTable();
    scheduleJobs();
    if (state.drawer && !editorDirty()) loadDrawer({ keepEditor: false });
  } catch (e) {
    if (!common(e)) {
      const code = e instanceof GraphQLError ? e.code : 'ERROR';
      jobNote(`Cancel failed: ${describe(e)}`, code);
      announce(`Cancel failed: ${code}`);
    }
  } finally {
    j.cancelling = false;
    updateCancel();
  }
}

function showJob(job) {
  const j = state.job;
  if (j && j.id === job.id) {
    // A snapshot sent before the job ended may arrive after its end (the cancel's answer
    // comes over HTTP, progress over the socket): the end stands.
    if (FINAL.includes(j.phase) && !FINAL.includes(job.phase)) return;
    j.phase = job.phase;
  }
  upsertJob(job);
  updateCancel();
  const bar = $('refresh-progress');
  bar.max = Math.max(1, job.total);
  bar.value = job.completed;
  const panel = $('refresh-panel');
  panel.dataset.phase = job.phase;
  panel.dataset.completed = String(job.completed);
  panel.dataset.total = String(job.total);
  const current = job.currentSource ? ` · ${job.currentSource}` : '';
  $('refresh-text').textContent = `${job.phase} · ${job.completed}/${job.total}${current}${job.error ? ` · ${job.error}` : ''}`;
  // A job over every plugin (`plugin` reads `*`) names each result's plugin.
  const every = job.plugin === '*';
  replace(
    $('refresh-results'),
    job.results.map((r) =>
      el(
        'li',
        { class: `result-${r.status.toLowerCase()}`, dataset: { sourceId: r.sourceId, plugin: r.plugin } },
        `${every ? `${r.plugin}/` : ''}${r.sourceId}: ${r.status} · loaded ${r.entitiesLoaded}, removed ${r.entitiesRemoved}, updated ${r.entitiesUpdated}, unchanged ${r.entitiesUnchanged} in ${r.durationMs} ms · ${r.summary}`,
      ),
    ),
  );
  // A refresh of the open source shows in the drawer too (the drawer covers the page's panel).
  const mine = state.drawer && job.sourceId === state.drawer.id && job.plugin === state.drawer.plugin;
  $('drawer-refresh').hidden = !mine;
  if (mine) {
    $('drawer-refresh-bar').max = bar.max;
    $('drawer-refresh-bar').value = job.completed;
    const r = job.results[0];
    $('drawer-refresh-text').textContent = `Refresh ${$('refresh-text').textContent}${r ? ` · ${r.status}: ${r.summary} (loaded ${r.entitiesLoaded}, unchanged ${r.entitiesUnchanged})` : ''}`;
    $('drawer-refresh').dataset.phase = job.phase;
  }
  if (FINAL.includes(job.phase)) announce(`Refresh ${job.phase.toLowerCase()}: ${job.completed}/${job.total}`);
}

// ---------------------------------------------------------------- the Jobs panel

/** What a job refreshes, in words: "every plugin", "plugin models" or "models/team_models". */
function jobTarget(job) {
  const what = job.plugin === '*' ? 'every plugin' : job.sourceId ? `${job.plugin}/${job.sourceId}` : `plugin ${job.plugin}`;
  return job.dryRun ? `${what} (dry run)` : what;
}

function jobActive(job) {
  return job.phase === 'QUEUED' || job.phase === 'RUNNING';
}

let jobsSeq = 0;
let jobsTimer = null;
let jobsPoll = null;

/** Reloads the Jobs panel soon (several events in a row make one request). */
function scheduleJobs(delay = 100) {
  clearTimeout(jobsTimer);
  jobsTimer = setTimeout(loadJobs, delay);
}

async function loadJobs() {
  const seq = ++jobsSeq;
  try {
    const data = await send(CONSOLE, 'RefreshJobs', { first: 20 });
    if (seq !== jobsSeq) return; // a later load is on its way
    const known = new Map(state.jobs.map((j) => [j.id, j]));
    state.jobs = data.refreshJobsConnection.nodes.map((n) => {
      // An answer computed before a job's end (e.g. our cancel's) does not undo the end.
      const old = known.get(n.id);
      return old && FINAL.includes(old.phase) && !FINAL.includes(n.phase) ? old : n;
    });
    state.jobsLoaded = true;
    renderJobs();
  } catch (e) {
    if (seq === jobsSeq && !common(e)) jobsNote(`Cannot load the refresh jobs: ${describe(e)}`, e instanceof GraphQLError ? e.code : 'ERROR');
  }
}

/** A job's newer snapshot (the page's own progress stream, a cancel's answer) into the list. */
function upsertJob(job) {
  const i = state.jobs.findIndex((j) => j.id === job.id);
  if (i < 0) {
    if (!state.jobsLoaded) return;
    state.jobs.unshift({ ...job });
    state.jobs.length = Math.min(state.jobs.length, 20);
  } else {
    if (FINAL.includes(state.jobs[i].phase) && !FINAL.includes(job.phase)) return;
    const merged = { ...state.jobs[i] };
    for (const [k, v] of Object.entries(job)) if (k !== 'results') merged[k] = v;
    state.jobs[i] = merged;
  }
  renderJobs();
}

function jobsNote(text, code) {
  const n = $('jobs-note');
  n.textContent = text;
  if (code) n.dataset.code = code;
  else delete n.dataset.code;
}

function renderJobs(focusJob) {
  // Re-rendering replaces the rows: keep the focus on the same job's control.
  const active = document.activeElement;
  const inJobs = active && $('jobs-body').contains(active);
  const want = focusJob || (inJobs && active.closest('tr') ? active.closest('tr').dataset.jobId : null);
  const rows = state.jobs.map((job) => {
    const running = jobActive(job);
    const started = job.startedAt || job.createdAt;
    return el(
      'tr',
      { dataset: { jobId: job.id, phase: job.phase, plugin: job.plugin } },
      el('td', { class: 'ago', title: started || '', dataset: { ago: started || '' } }, timeAgo(started)),
      el('td', { class: 'target' }, jobTarget(job)),
      el('td', { class: 'mode' }, job.mode),
      el(
        'td',
        { class: 'job-phase' },
        el('span', { class: `phase phase-${job.phase.toLowerCase()}` }, job.phase),
        job.queuedReason && running ? el('span', { class: 'why' }, job.queuedReason) : null,
        job.error ? el('span', { class: 'why' }, job.error) : null,
      ),
      el(
        'td',
        { class: 'job-progress' },
        el('progress', { max: Math.max(1, job.total), value: job.completed, 'aria-label': `Progress of the refresh of ${jobTarget(job)}` }),
        ` ${job.completed}/${job.total}`,
        job.currentSource && running ? el('span', { class: 'why' }, job.currentSource) : null,
      ),
      el('td', { class: 'actor' }, job.actor),
      el(
        'td',
        { class: 'job-actions' },
        running
          ? el(
              'button',
              {
                type: 'button',
                class: 'job-cancel',
                'aria-label': `Cancel the refresh of ${jobTarget(job)} started by ${job.actor}`,
                'aria-describedby': 'readonly-note',
                dataset: { role: 'cancel', jobId: job.id },
                onclick: (ev) => cancelListed(job, ev.currentTarget),
              },
              state.cancelling.has(job.id) ? 'Cancelling…' : 'Cancel',
            )
          : null,
      ),
    );
  });
  replace($('jobs-body'), rows);
  $('jobs-empty').hidden = rows.length > 0;
  updateJobButtons();
  if (want) {
    const b = document.querySelector(`#jobs-body tr[data-job-id="${CSS.escape(want)}"] button`);
    if (b && !b.disabled) b.focus();
    else if (inJobs || focusJob) $('jobs-title').focus(); // its button is gone (the job ended)
  }
  // Progress between a job's start and its end: look again while any job runs.
  clearTimeout(jobsPoll);
  if (state.jobs.some(jobActive)) jobsPoll = setTimeout(() => scheduleJobs(0), 2000);
}

/** Cancel on the Jobs panel: on for an operator while the job is QUEUED or RUNNING. */
function updateJobButtons() {
  const reason = canEdit() ? '' : 'Cancelling needs an operator token';
  for (const b of document.querySelectorAll('#jobs-body button.job-cancel')) {
    b.disabled = !canEdit() || state.cancelling.has(b.dataset.jobId);
    b.title = reason;
  }
}

/** Cancel on any listed job, whoever started it: cancelRefreshJob, then the job as it ended. */
async function cancelListed(job, button) {
  if (state.cancelling.has(job.id)) return;
  const hadFocus = document.activeElement === button;
  state.cancelling.add(job.id);
  jobsNote('');
  renderJobs();
  let ended = null;
  try {
    const data = await send(CONSOLE, 'CancelRefreshJob', { id: job.id });
    ended = data.cancelRefreshJob;
    announce(`Refresh of ${jobTarget(ended)} ${ended.phase.toLowerCase()}`);
  } catch (e) {
    if (!common(e)) {
      const code = e instanceof GraphQLError ? e.code : 'ERROR';
      jobsNote(`Cancel of the refresh of ${jobTarget(job)} failed: ${describe(e)}`, code);
      announce(`Cancel failed: ${code}`);
    }
  } finally {
    state.cancelling.delete(job.id);
  }
  if (ended) {
    upsertJob(ended);
    // The same job in the refresh panel (the page's own refresh) ends there too.
    if (state.job && state.job.id === ended.id) showJob(ended);
    loadTable();
  }
  renderJobs(hadFocus ? job.id : undefined);
  scheduleJobs();
}

// ---------------------------------------------------------------- history and rollback

function renderHistory() {
  const d = state.drawer;
  const rows = (d.history || []).map((r) =>
    el(
      'tr',
      { dataset: { revision: r.revision } },
      el('td', {}, String(r.revision)),
      el('td', {}, r.action),
      el('td', {}, r.actor),
      el('td', { title: r.createdAt, dataset: { ago: r.createdAt || '' } }, timeAgo(r.createdAt)),
      el(
        'td',
        {},
        el('button', { type: 'button', class: 'view-revision', onclick: () => viewRevision(r) }, `View r${r.revision}`),
        ' ',
        r.revision !== d.revision
          ? el(
              'button',
              { type: 'button', class: 'edit rollback', 'aria-describedby': 'readonly-note', onclick: () => rollback(r.revision) },
              `Roll back to r${r.revision}`,
            )
          : el('span', { class: 'note' }, 'current'),
      ),
    ),
  );
  replace($('history-body'), rows);
}

function viewRevision(r) {
  $('revision-view').hidden = false;
  $('revision-view-title').textContent = `Revision ${r.revision} (${r.action} by ${r.actor}, ${timeAgo(r.createdAt)})`;
  $('revision-content').textContent = r.content ?? '(no catalog content recorded)';
  $('revision-content').focus();
}

async function rollback(revision, confirmRemovals = false) {
  const d = state.drawer;
  if (!d) return;
  if (!confirmRemovals) {
    const body = [
      el('p', {}, `Roll ${d.plugin}/${d.id} back to revision ${revision}? This records a new revision with that content and refreshes the source.`),
      editorDirty() ? el('p', { class: 'error-text' }, 'Your unsaved edits in the editor will be replaced.') : null,
    ];
    if (!(await confirmDialog('Roll back?', body, `Roll back to r${revision}`))) return;
  }
  clearOutcome();
  setBusy(true, `Rolling back to revision ${revision}…`);
  try {
    const data = await send(CONSOLE, 'RollbackSourceChecked', {
      plugin: d.plugin,
      id: d.id,
      revision,
      expectedRevision: d.revision,
      confirmRemovals,
    });
    const r = data.rollbackSource;
    await afterChange(d, r, `Rolled back to revision ${revision} as revision ${r.revision}`);
  } catch (e) {
    if (e instanceof GraphQLError && e.code === 'REMOVALS_NEED_CONFIRMATION') {
      setBusy(false);
      if (await confirmDialog('Remove entities?', removalBody(e.extensions, e.message), 'Remove and roll back')) return rollback(revision, true);
      return;
    }
    failure(e, 'Rollback');
  } finally {
    if (state.busy) setBusy(false);
  }
}

// ---------------------------------------------------------------- live updates

let tableTimer = null;
function scheduleTable() {
  clearTimeout(tableTimer);
  tableTimer = setTimeout(loadTable, 100);
}

function onEvent(ev) {
  scheduleTable();
  // A job started or ended anywhere (the scheduler, a hook, another tab): the Jobs panel.
  if (ev.kind === 'REFRESH_STARTED' || ev.kind === 'REFRESH_FINISHED' || (ev.kind === 'REFRESHED' && state.jobs.some(jobActive))) {
    scheduleJobs();
  }
  const d = state.drawer;
  if (!d || ev.plugin !== d.plugin || (ev.sourceId && ev.sourceId !== d.id)) return;
  if (state.busy) {
    // Our own save or rollback is running: its answer says what changed; look again after it.
    state.deferred.push(ev);
    return;
  }
  drawerEvent(ev);
}

function flushDeferred() {
  const events = state.deferred.splice(0);
  for (const ev of events) drawerEvent(ev);
}

function drawerEvent(ev) {
  const d = state.drawer;
  if (!d) return;
  const contentChanged =
    ['APPLIED', 'ROLLED_BACK', 'CONFIG_CHANGED_EXTERNALLY'].includes(ev.kind) &&
    (ev.revision == null || d.revision == null || ev.revision > d.revision);
  if (!contentChanged) {
    // A refresh: new counts and status, same content; never touch the editor's text.
    loadDrawer({ keepEditor: true });
    return;
  }
  if (editorDirty()) {
    $('drawer-banner-text').textContent = `This source changed elsewhere (${ev.kind.toLowerCase().replace('_', ' ')}${ev.revision != null ? `, revision ${ev.revision}` : ''}) while you were editing. Your edits are kept; Save will report a conflict.`;
    $('drawer-banner').hidden = false;
    loadDrawer({ keepEditor: true });
  } else {
    loadDrawer({ keepEditor: false });
    announce(`${d.plugin}/${d.id} changed elsewhere; reloaded`);
  }
}

const live = new LiveClient({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`,
  token,
  onStatus: (s) => {
    $('live').textContent = `Live: ${s}`;
    $('live').dataset.state = s;
  },
  onReconnect: () => {
    loadTable();
    loadJobs();
  },
});

function subscribeEvents() {
  live.subscribe(
    { query: documentFor(CONSOLE), operationName: 'CatalogEvents', variables: {} },
    {
      next: (payload) => {
        if (payload.data && payload.data.catalogEvents) onEvent(payload.data.catalogEvents);
      },
      error: (errors) => announce(`Live updates refused: ${errors && errors[0] ? errors[0].message : 'error'}`),
      complete: () => {},
    },
  );
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('auth-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setToken($('token').value.trim());
    $('token').value = '';
    await loadViewer();
    live.restart();
    await loadTable();
    await loadJobs();
  });
  $('filter').addEventListener('input', (ev) => {
    state.filter = ev.target.value;
    renderTable();
  });
  $('refresh-all').addEventListener('click', refreshAll);
  $('refresh-scope').addEventListener('change', () => {
    $('refresh-all').textContent = $('refresh-scope').value === 'all' ? 'Refresh all plugins' : 'Refresh all';
  });
  $('drawer-close').addEventListener('click', closeDrawer);
  $('drawer-reload').addEventListener('click', reloadDrawer);
  $('validate').addEventListener('click', validate);
  $('preview').addEventListener('click', preview);
  $('save').addEventListener('click', () => save(false));
  $('refresh-source').addEventListener('click', refreshSource);
  $('refresh-cancel').addEventListener('click', cancelJob);
  $('drawer-refresh-cancel').addEventListener('click', cancelJob);
  $('refresh-interval').addEventListener('input', () => $('refresh-interval').removeAttribute('aria-invalid'));
  const ta = $('editor');
  ta.addEventListener('input', updateGutter);
  ta.addEventListener('scroll', () => {
    $('gutter').scrollTop = ta.scrollTop;
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('confirm').open && !$('drawer').hidden) {
      ev.preventDefault();
      closeDrawer();
    }
  });
  // Relative times ("3 m ago", "in 25 s") stay true while the page is open.
  setInterval(tickTimes, 5000);
}

async function main() {
  wire();
  applyRights();
  try {
    await loadOperations();
  } catch (e) {
    announce(describe(e));
    return;
  }
  await loadViewer();
  await loadTable();
  await loadJobs();
  subscribeEvents();
  live.connect();
  document.body.dataset.ready = 'true';
}

// For tests and the curious: the console's own GraphQL client and state.
window.catalogConsole = { send, state, live };

main();
