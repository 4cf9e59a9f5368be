// Building the page: elements are made with h() and filled with text
// nodes only, never from HTML strings, so no value from the cluster can
// become markup.

/** h('tag.class#id', {attr: value, onclick: fn}, child, ...) */
export function h(spec, attrs, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/i);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs !== undefined && attrs !== null && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked') el.checked = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const STATUS = {
  alive: ['s-ok', '✓'], passing: ['s-ok', '✓'], healthy: ['s-ok', '✓'], on: ['s-ok', '✓'],
  suspect: ['s-warn', '?'], warning: ['s-warn', '!'], leaving: ['s-warn', '→'], degraded: ['s-warn', '!'],
  maintenance: ['s-warn', '‖'],
  failed: ['s-bad', '✗'], critical: ['s-bad', '✗'], unhealthy: ['s-bad', '✗'],
  left: ['s-grey', '–'], off: ['s-grey', '○'],
};

/** A status as a badge: a symbol and the word, coloured as well. */
export function badge(status) {
  const [cls, symbol] = STATUS[status] || ['s-grey', '•'];
  return h(`span.badge.${cls}`, { 'data-status': status }, `${symbol} ${status}`);
}

export function tags(list) {
  return (list || []).map((t) => h('span.tag', t));
}

/** A definition list of an object's pairs. */
export function pairs(object) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h('span.muted', 'none');
  return h('dl.pairs', entries.map(([k, v]) => [h('dt', k), h('dd', typeof v === 'object' ? JSON.stringify(v) : String(v))]));
}

export function table(headers, rows, attrs) {
  return h('table', attrs || {},
    h('thead', h('tr', headers.map((title) => {
      const num = title.startsWith('#');
      return h(num ? 'th.num' : 'th', { scope: 'col' }, num ? title.slice(1) : title);
    }))),
    h('tbody', rows));
}

export function message(kind, text) {
  return h(`div.message.${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** Path segments of a key, each encoded, slashes kept. */
export function encodePath(key) {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** The page-wide alert: a 403 or an agent that stopped answering. */
export function notice(error) {
  const el = document.getElementById('notice');
  el.textContent = error.describe ? error.describe() : String(error);
  el.hidden = false;
}

export function clearNotice() {
  const el = document.getElementById('notice');
  if (!el.hidden) { el.hidden = true; el.textContent = ''; }
}
