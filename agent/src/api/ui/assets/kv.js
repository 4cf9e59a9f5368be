// KV: browse keys by prefix (separator "/"), view a value as text, JSON or
// base64, and create, edit or delete it. Every edit carries the `cas` of
// the value it started from: a value that changed meanwhile is reported,
// never overwritten.

import { watch, request } from './api.js';
import { h, fill, message, notice, clearNotice, encodePath } from './dom.js';

function decodeValue(base64) {
  const binary = atob(base64 || '');
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  let text = null;
  try { text = new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch { /* binary */ }
  let json = null;
  if (text !== null && /^\s*[[{]/.test(text)) {
    try { json = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON */ }
  }
  return { base64: base64 || '', text, json };
}

function fromBase64(text) {
  const binary = atob(text.replace(/\s+/g, ''));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

const keyHref = (key) => `#/kv/${encodePath(key)}`;

export function mount(main, path) {
  const isFolder = path === '' || path.endsWith('/');
  const prefix = isFolder ? path : path.slice(0, path.lastIndexOf('/') + 1);
  const key = isFolder ? null : path;

  const crumbs = [h('a', { href: '#/kv/' }, '(root)')];
  let so = '';
  for (const part of prefix.split('/').filter(Boolean)) {
    so += `${part}/`;
    crumbs.push(' / ', h('a', { href: keyHref(so) }, part));
  }
  const list = h('ul#kv-keys', { 'aria-label': `Keys under ${prefix || 'the root'}` });
  const listState = h('p.muted', 'Loading…');
  const entry = h('div#kv-entry');
  fill(main,
    h('h2', 'Key/value store'),
    h('nav.breadcrumbs', { 'aria-label': 'Prefix' }, crumbs),
    h('div.kv',
      h('section', h('h3', `Keys under ${prefix || '/'}`), listState, list, createForm(prefix)),
      h('section', entry)));

  const stops = [watch(`/v1/kv/${encodePath(prefix)}?keys&separator=/`, (keys) => {
    clearNotice();
    listState.textContent = keys ? '' : 'No keys under this prefix.';
    fill(list, (keys || []).map((k) => h('li', h('a', {
      href: keyHref(k), 'data-key': k, 'aria-current': k === key ? 'true' : null,
    }, k.slice(prefix.length) || k))));
  }, (error) => { notice(error); listState.textContent = error.describe(); fill(list); })];

  if (key) stops.push(editor(entry, key));
  else fill(entry, h('p.muted', 'Choose a key to see its value, or create one.'));
  return () => stops.forEach((stop) => stop());
}

function createForm(prefix) {
  const name = h('input#kv-new-key', { type: 'text', value: prefix, spellcheck: 'false', required: true });
  const value = h('textarea#kv-new-value', { rows: 4 });
  const result = h('div#kv-create-result', { 'aria-live': 'polite' });
  const form = h('form', { onsubmit: async (event) => {
    event.preventDefault();
    const key = name.value.trim();
    if (!key || key.endsWith('/')) { fill(result, message('error', 'Give the key a name that does not end with "/".')); return; }
    try {
      const { data } = await request('PUT', `/v1/kv/${encodePath(key)}?cas=0`, { body: value.value });
      if (data === true) location.hash = keyHref(key);
      else fill(result, message('error', `Not created: the key "${key}" already exists.`));
    } catch (error) { fill(result, message('error', error.describe())); }
  } },
  h('h3', 'New key'),
  h('div.form-row', h('label', { for: 'kv-new-key' }, 'Key'), name),
  h('div.form-row', h('label', { for: 'kv-new-value' }, 'Value'), value),
  h('button.primary#kv-create', { type: 'submit' }, 'Create'), result);
  return form;
}

function editor(root, key) {
  let shown = null; // {index, flags, value} of the value the edit started from
  let dirty = false;
  const title = h('h3', key);
  const meta = h('p.muted#kv-meta');
  const modes = h('div.toolbar', { role: 'radiogroup', 'aria-label': 'Show the value as' });
  const view = h('pre#kv-value', { tabindex: '0', 'aria-label': 'Value' });
  const changed = h('div#kv-changed', { 'aria-live': 'polite' });
  const edit = h('textarea#kv-edit', { rows: 8, spellcheck: 'false', oninput: () => { dirty = true; } });
  const asBase64 = h('input#kv-edit-base64', { type: 'checkbox', onchange: () => { dirty = true; } });
  const result = h('div#kv-result', { 'aria-live': 'polite' });
  const confirmDelete = h('button.danger#kv-delete-confirm', { type: 'button', hidden: true, onclick: remove }, 'Really delete');
  let mode = null; // the operator's choice; JSON first when the value is JSON

  fill(root, title, meta, modes, view, changed,
    h('form', { onsubmit: save },
      h('h3', h('label', { for: 'kv-edit' }, 'Edit')), edit,
      h('p', h('label', asBase64, ' the text above is base64 (binary value)')),
      h('div.toolbar',
        h('button.primary#kv-save', { type: 'submit' }, 'Save'),
        h('button#kv-discard', { type: 'button', onclick: () => { dirty = false; load(current); } }, 'Discard my edit'),
        h('button.danger#kv-delete', { type: 'button', onclick: () => { confirmDelete.hidden = false; confirmDelete.focus(); } }, 'Delete…'),
        confirmDelete)),
    result);

  let current = null;
  function showValue() {
    if (!current) { view.textContent = ''; return; }
    const v = current.value;
    const options = [['text', 'Text', v.text !== null], ['json', 'JSON', v.json !== null], ['base64', 'Base64', true]];
    if (!options.find(([m, , ok]) => m === mode && ok)) mode = v.json !== null ? 'json' : v.text !== null ? 'text' : 'base64';
    fill(modes, options.map(([m, label, ok]) => h('label', h('input', {
      type: 'radio', name: 'kv-mode', value: m, checked: m === mode, disabled: !ok,
      onchange: () => { mode = m; showValue(); },
    }), ` ${label}`)));
    view.textContent = mode === 'json' ? v.json : mode === 'text' ? v.text : v.base64;
  }

  function load(entry) {
    shown = entry;
    fill(changed);
    if (!entry) { edit.value = ''; return; }
    asBase64.checked = entry.value.text === null;
    edit.value = asBase64.checked ? entry.value.base64 : entry.value.text;
  }

  async function save(event) {
    event.preventDefault();
    let body = edit.value;
    if (asBase64.checked) {
      try { body = fromBase64(edit.value); } catch { fill(result, message('error', 'The text is not valid base64.')); return; }
    }
    const cas = shown ? shown.index : 0;
    const flags = shown ? `&flags=${shown.flags}` : '';
    try {
      const { data } = await request('PUT', `/v1/kv/${encodePath(key)}?cas=${cas}${flags}`, { body });
      if (data === true) {
        dirty = false;
        fill(result, message('ok', 'Saved.'));
      } else {
        fill(result, message('error', `Conflict: not saved. The key changed after index ${cas}, the value you started from` +
          `${current ? ` (it is now at index ${current.index})` : ' (it has been deleted)'}. Your edit is kept in the box;` +
          ' "Discard my edit" loads the current value.'));
      }
    } catch (error) { fill(result, message('error', error.describe())); }
  }

  async function remove() {
    confirmDelete.hidden = true;
    const cas = shown ? shown.index : 0;
    try {
      const { data } = await request('DELETE', `/v1/kv/${encodePath(key)}?cas=${cas}`);
      if (data === true) fill(result, message('ok', 'Deleted.'));
      else fill(result, message('error', `Conflict: not deleted. The key changed after index ${cas}, the value shown.`));
    } catch (error) { fill(result, message('error', error.describe())); }
  }

  return watch(`/v1/kv/${encodePath(key)}`, (data) => {
    clearNotice();
    const pair = data && data[0];
    current = pair ? { index: pair.ModifyIndex, flags: pair.Flags, value: decodeValue(pair.Value) } : null;
    meta.textContent = current
      ? `Modify index ${current.index} · flags ${current.flags} · ${current.value.text === null ? 'binary' : `${current.value.text.length} characters`}`
      : 'This key does not exist (deleted, or not created yet): saving creates it.';
    showValue();
    if (!dirty) load(current);
    else if ((current && current.index) !== (shown && shown.index)) {
      fill(changed, message('info', 'This key changed on the cluster since you began editing: saving will be refused as a conflict.'));
    }
  }, (error) => { notice(error); meta.textContent = error.describe(); });
}
