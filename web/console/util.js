// Small DOM and formatting helpers for the operator console (no framework).

/** Creates an element: el('td', {class: 'num', title: 'x'}, 'text', child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Removes every child of `node`, then appends `children`. */
export function replace(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** "3 m ago" for an RFC 3339 time; "never" for none. */
export function timeAgo(iso, now = Date.now()) {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** "in 3 m" for a future RFC 3339 time, "due now" once it passed; "—" for none. */
export function timeUntil(iso, now = Date.now()) {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((t - now) / 1000);
  if (s <= 0) return 'due now';
  if (s < 60) return `in ${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `in ${m} m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `in ${h} h`;
  return `in ${Math.floor(h / 24)} d`;
}

/** The character offset of 1-based `line` and `column` in `text` (clamped to the text). */
export function offsetOf(text, line, column) {
  let offset = 0;
  for (let l = 1; l < (line || 1); l++) {
    const nl = text.indexOf('\n', offset);
    if (nl < 0) return text.length;
    offset = nl + 1;
  }
  const end = text.indexOf('\n', offset);
  const lineEnd = end < 0 ? text.length : end;
  return Math.min(offset + Math.max(0, (column || 1) - 1), lineEnd);
}

/** "line 3, column 7" (or what is known of it). */
export function position(d) {
  if (d.line == null) return d.field ? `at ${d.field}` : '';
  return d.column == null ? `line ${d.line}` : `line ${d.line}, column ${d.column}`;
}

export function plural(n, word) {
  if (n === 1) return `${n} ${word}`;
  return word.endsWith('y') ? `${n} ${word.slice(0, -1)}ies` : `${n} ${word}s`;
}
