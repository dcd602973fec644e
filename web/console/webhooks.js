// The console's Webhooks page: registered receivers, their recent deliveries (state, attempts,
// last status and error; the newest 10 of each), register, delete and redeliver. Every request is an operation of
// ui-contract/webhooks.graphql (so it works under --trusted-documents ui-contract). The list is
// read again every 3 s while the page is visible.

import { GraphQLError, send } from './api.js';
import { el, replace, timeAgo } from './util.js';

const $ = (id) => document.getElementById(id);
const FILE = 'webhooks.graphql';
const KINDS = ['APPLIED', 'REFRESHED', 'ROLLED_BACK', 'REFRESH_STARTED', 'REFRESH_FINISHED', 'CONFIG_CHANGED_EXTERNALLY'];

function describe(error) {
  if (error instanceof GraphQLError) return `${error.code}: ${error.message}`;
  return String(error && error.message ? error.message : error);
}

function announce(text) {
  $('status').textContent = text;
}

function authProblem(error) {
  if (!(error instanceof GraphQLError)) return false;
  if (error.code !== 'UNAUTHENTICATED' && error.code !== 'FORBIDDEN') return false;
  const note = $('auth-note');
  note.textContent =
    error.code === 'FORBIDDEN'
      ? `Only operators may see webhooks: ${error.message}`
      : `Sign in on the Sources page (token) first: ${error.message}`;
  note.hidden = false;
  return true;
}

function deliveryRow(d) {
  const target = d.sourceId ? `${d.plugin}/${d.sourceId}` : d.plugin;
  const when = d.deliveredAt || d.createdAt;
  const redeliver = el('button', { type: 'button', class: 'edit', dataset: { delivery: d.id } }, 'Redeliver');
  redeliver.addEventListener('click', () => redeliverOne(d.id));
  return el(
    'tr',
    { dataset: { delivery: d.id, state: d.state, message: d.messageId } },
    el('td', {}, d.eventKind || '?'),
    el('td', {}, target),
    el('td', { class: `state state-${d.state.toLowerCase()}` }, d.state),
    el('td', { class: 'num' }, String(d.attempts)),
    el('td', { class: 'num' }, d.statusCode == null ? '-' : String(d.statusCode)),
    el('td', { title: when }, timeAgo(when)),
    el('td', { class: 'error-text' }, d.lastError || (d.state === 'PENDING' && d.nextAttemptAt ? `next attempt ${timeAgo(d.nextAttemptAt)}` : '')),
    el('td', {}, redeliver),
  );
}

function hookBlock(w) {
  const del = el('button', { type: 'button', class: 'edit', dataset: { webhook: w.id } }, 'Delete');
  del.addEventListener('click', () => deleteOne(w));
  const events = w.events.join(', ');
  const plugins = w.plugins ? w.plugins.join(', ') : 'every plugin';
  const rows = w.deliveries.nodes.map(deliveryRow);
  return el(
    'article',
    { class: 'webhook', dataset: { webhook: w.id } },
    el('h4', {}, w.url, ' ', del),
    el('p', { class: 'note' }, `${events} · ${plugins} · secret ${w.secretRef.name}/${w.secretRef.key} · ${w.deliveries.totalCount} deliveries`),
    rows.length
      ? el(
          'table',
          { class: 'sources deliveries' },
          el('caption', {}, `Recent deliveries to ${w.url}`),
          el(
            'thead',
            {},
            el(
              'tr',
              {},
              ['Event', 'Target', 'State', 'Attempts', 'Status', 'When', 'Last error', ''].map((h) => el('th', { scope: 'col' }, h)),
            ),
          ),
          el('tbody', {}, rows),
        )
      : el('p', { class: 'note' }, 'No deliveries yet.'),
  );
}

async function load() {
  try {
    const data = await send(FILE, 'Webhooks');
    const hooks = data.webhooks || [];
    replace($('hooks'), hooks.map(hookBlock));
    $('hooks-empty').hidden = hooks.length > 0;
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('auth-note').hidden = true;
  } catch (e) {
    if (!authProblem(e)) announce(`Cannot read webhooks: ${describe(e)}`);
  }
  document.body.dataset.ready = 'true';
}

async function create(event) {
  event.preventDefault();
  const error = $('create-error');
  error.hidden = true;
  const events = KINDS.filter((k) => $(`event-${k}`).checked);
  const plugins = $('create-plugins')
    .value.split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const input = {
    url: $('create-url').value.trim(),
    events,
    plugins: plugins.length ? plugins : null,
    secretRef: { name: $('create-secret-name').value.trim(), key: $('create-secret-key').value.trim() },
  };
  try {
    const data = await send(FILE, 'CreateWebhook', { input });
    announce(`Registered ${data.createWebhook.url}`);
    $('create').reset();
    await load();
  } catch (e) {
    if (authProblem(e)) return;
    const diags = (e.extensions && e.extensions.diagnostics) || [];
    const lines = diags.length ? diags.map((d) => `${d.field || 'input'}: ${d.message}${d.hint ? ` (${d.hint})` : ''}`) : [describe(e)];
    replace(error, lines.map((l) => el('span', { class: 'diag' }, l)));
    error.dataset.fields = diags.map((d) => d.field || '').join(' ');
    error.hidden = false;
  }
}

async function deleteOne(w) {
  if (!window.confirm(`Delete the receiver ${w.url}? Its queued deliveries are not sent.`)) return;
  try {
    await send(FILE, 'DeleteWebhook', { id: w.id });
    announce(`Deleted ${w.url}`);
  } catch (e) {
    if (!authProblem(e)) announce(`Cannot delete: ${describe(e)}`);
  }
  await load();
}

async function redeliverOne(id) {
  try {
    const data = await send(FILE, 'RedeliverWebhook', { deliveryId: id });
    announce(`Redelivery ${data.redeliverWebhook.id} queued`);
  } catch (e) {
    if (!authProblem(e)) announce(`Cannot redeliver: ${describe(e)}`);
  }
  await load();
}

function start() {
  replace(
    $('create-events'),
    KINDS.map((k) =>
      el('label', { class: 'check' }, el('input', { type: 'checkbox', id: `event-${k}`, value: k, checked: k === 'APPLIED' || k === 'REFRESH_FINISHED' }), ` ${k}`),
    ),
  );
  $('create').addEventListener('submit', create);
  $('reload').addEventListener('click', load);
  setInterval(() => {
    if (document.visibilityState === 'visible') load();
  }, 3000);
  load();
}

start();
