// Flags: every flag with its definition (a blocking query on /v1/flags),
// an editor whose errors appear beside the field the agent names, and
// "evaluate for user" with the agent's own decision and reason.

import { watch, request, get } from './api.js';
import { h, fill, badge, table, message, notice, clearNotice } from './dom.js';

export function mount(main, key) {
  return key ? mountFlag(main, key) : mountList(main);
}

function targeting(d) {
  const parts = [];
  if (d.allow_users && d.allow_users.length) parts.push(`allow ${d.allow_users.join(', ')}`);
  if (d.deny_users && d.deny_users.length) parts.push(`deny ${d.deny_users.join(', ')}`);
  if (d.services && d.services.length) parts.push(`services ${d.services.join(', ')}`);
  if (d.environments && d.environments.length) parts.push(`environments ${d.environments.join(', ')}`);
  const nodeTags = Object.entries(d.node_tags || {});
  if (nodeTags.length) parts.push(`node tags ${nodeTags.map(([k, v]) => `${k}=${v}`).join(', ')}`);
  return parts.length ? parts.join('; ') : 'everyone';
}

function mountList(main) {
  const body = h('div#flags');
  const name = h('input#flag-new-key', { type: 'text', spellcheck: 'false', placeholder: 'new-checkout' });
  const newError = h('span.field-error#flag-new-error', { 'aria-live': 'polite' });
  fill(main, h('h2', 'Feature flags'), body,
    h('form.toolbar', { onsubmit: (event) => {
      event.preventDefault();
      const key = name.value.trim();
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(key)) {
        name.setAttribute('aria-invalid', 'true');
        newError.textContent = 'A flag key is 1 to 128 letters, digits, "-", "_" or ".".';
        return;
      }
      location.hash = `#/flags/${encodeURIComponent(key)}`;
    } },
    h('label', { for: 'flag-new-key' }, 'New flag'), name,
    h('button', { type: 'submit' }, 'Create…'), newError));
  return watch('/v1/flags', (data) => {
    clearNotice();
    const list = data || [];
    if (!list.length) { fill(body, h('p.muted', 'No feature flags yet.')); return; }
    fill(body, table(['Flag', 'State', '#Rollout', 'Targeting', 'Description'], list.map((f) => {
      const d = f.definition;
      return h('tr', { 'data-flag': f.key },
        h('td', h('a', { href: `#/flags/${encodeURIComponent(f.key)}` }, f.key)),
        d ? [h('td', badge(d.enabled ? 'on' : 'off')), h('td.num', `${d.rollout_percentage}%`), h('td', targeting(d)), h('td', d.description || '')]
          : h('td', { colspan: 4 }, message('error', `Invalid definition: ${f.error}`)));
    })));
  }, (error) => { notice(error); fill(body, message('error', error.describe())); });
}

const LISTS = [
  ['allow_users', 'Always on for users', 'comma-separated user ids (on whenever the flag is enabled)'],
  ['deny_users', 'Always off for users', 'comma-separated user ids'],
  ['services', 'Only for services', 'comma-separated service names'],
  ['environments', 'Only in environments', "comma-separated values of the agent's env tag"],
];

const splitList = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

function mountFlag(main, key) {
  const errors = {};
  const inputs = {};
  let dirty = false;
  const markDirty = () => { dirty = true; };
  const row = (field, label, input, hint) => {
    errors[field] = h(`span.field-error#flag-error-${field}`, { 'aria-live': 'polite' });
    input.setAttribute('aria-describedby', `flag-error-${field}`);
    inputs[field] = input;
    return h('div.form-row', h('label', { for: input.id }, label), h('div', input, hint ? h('div.hint', hint) : null, errors[field]));
  };
  const enabled = h('input#flag-enabled', { type: 'checkbox', onchange: markDirty });
  const slider = h('input#flag-rollout-slider', { type: 'range', min: 0, max: 100, step: 1, 'aria-label': 'Rollout percentage' });
  const percent = h('input#flag-rollout', { type: 'number', min: 0, max: 100, step: 'any' });
  slider.addEventListener('input', () => { percent.value = slider.value; markDirty(); });
  percent.addEventListener('input', () => { slider.value = percent.value; markDirty(); });
  const rollout = h('div.rollout', slider, percent, ' %');
  const form = h('form#flag-form', { novalidate: true, onsubmit: save, oninput: markDirty });
  const result = h('div#flag-result', { 'aria-live': 'polite' });
  const stored = h('pre#flag-definition');
  const state = h('p#flag-state');
  fill(form,
    row('enabled', 'Enabled', enabled),
    row('rollout_percentage', 'Rollout', rollout, 'share of users (by a stable hash of flag and user) that get it'),
    LISTS.map(([field, label, hint]) => row(field, label, h(`input#flag-${field}`, { type: 'text', spellcheck: 'false' }), hint)),
    row('node_tags', 'Only on nodes tagged', h('input#flag-node_tags', { type: 'text', spellcheck: 'false' }), 'tag=value pairs, comma-separated; every one must match'),
    row('description', 'Description', h('input#flag-description', { type: 'text' })),
    h('div.toolbar', h('button.primary#flag-save', { type: 'submit' }, 'Save flag'),
      h('button#flag-discard', { type: 'button', onclick: () => { dirty = false; load(current); } }, 'Discard changes')),
    result);
  inputs.rollout_percentage = percent;
  errors.key = errors.rollout_percentage;

  const user = h('input#eval-user', { type: 'text', spellcheck: 'false' });
  const service = h('input#eval-service', { type: 'text', spellcheck: 'false', placeholder: "this agent's services" });
  const decision = h('div#eval-result', { 'aria-live': 'polite' });
  const evaluate = h('form#eval-form', { onsubmit: async (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (user.value.trim()) query.set('user', user.value.trim());
    if (service.value.trim()) query.set('service', service.value.trim());
    try {
      const { data } = await get(`/v1/flags/${encodeURIComponent(key)}?${query}`);
      fill(decision, h('p', { 'data-enabled': String(data.enabled) }, badge(data.enabled ? 'on' : 'off'),
        ` for user ${data.user ?? '(none)'}: `, h('span#eval-reason', data.reason),
        data.bucket !== undefined && !String(data.reason).includes('bucket') ? h('span.muted', ` (bucket ${data.bucket})`) : null));
    } catch (error) { fill(decision, message('error', error.describe())); }
  } },
  h('div.toolbar', h('label', { for: 'eval-user' }, 'User'), user,
    h('label', { for: 'eval-service' }, 'Service'), service,
    h('button#eval-run', { type: 'submit' }, 'Evaluate')), decision);

  fill(main, h('p', h('a', { href: '#/flags' }, '← All flags')), h('h2', `Flag ${key}`), state,
    h('div.columns',
      h('section', h('h3', 'Definition'), form),
      h('section', h('h3', 'Evaluate for a user on this agent'), evaluate, h('h3', 'Stored definition'), stored)));

  let current;
  function load(definition) {
    for (const el of Object.values(errors)) el.textContent = '';
    for (const el of Object.values(inputs)) el.removeAttribute('aria-invalid');
    const d = definition || { enabled: false, rollout_percentage: 0 };
    enabled.checked = !!d.enabled;
    slider.value = percent.value = d.rollout_percentage;
    for (const [field] of LISTS) inputs[field].value = (d[field] || []).join(', ');
    inputs.node_tags.value = Object.entries(d.node_tags || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    inputs.description.value = d.description || '';
  }

  function fieldError(field, text) {
    const base = field.replace(/[[.].*$/, '');
    const target = errors[base] ? base : 'enabled';
    errors[target].textContent = text;
    if (inputs[target]) inputs[target].setAttribute('aria-invalid', 'true');
    (inputs[target] || enabled).focus();
  }

  async function save(event) {
    event.preventDefault();
    for (const el of Object.values(errors)) el.textContent = '';
    for (const el of Object.values(inputs)) el.removeAttribute('aria-invalid');
    fill(result);
    // Checked here first, with the agent's words, so that bad input
    // never leaves the page; the agent checks again and names the field.
    const rolloutText = percent.value.trim();
    const rollout = Number(rolloutText);
    if (rolloutText === '' || !Number.isFinite(rollout) || rollout < 0 || rollout > 100) {
      fieldError('rollout_percentage', `rollout_percentage: must be a number between 0 and 100, not ${rolloutText || 'empty'}`);
      return;
    }
    const definition = { enabled: enabled.checked, rollout_percentage: rollout, description: inputs.description.value };
    for (const [field] of LISTS) definition[field] = splitList(inputs[field].value);
    const nodeTags = {};
    for (const pair of splitList(inputs.node_tags.value)) {
      const at = pair.indexOf('=');
      if (at <= 0) { fieldError('node_tags', `"${pair}" is not of the form tag=value`); return; }
      nodeTags[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
    }
    definition.node_tags = nodeTags;
    try {
      await request('PUT', `/v1/flags/${encodeURIComponent(key)}`, { body: JSON.stringify(definition) });
      dirty = false;
      fill(result, message('ok', 'Saved.'));
    } catch (error) {
      const named = error.status === 400 && error.message.match(/^field `([^`]+)`: (.*)$/s);
      if (named) fieldError(named[1], `${named[1]}: ${named[2]}`);
      fill(result, message('error', error.describe()));
    }
  }

  return watch('/v1/flags', (data) => {
    clearNotice();
    const flag = (data || []).find((f) => f.key === key);
    current = flag ? flag.definition : null;
    fill(state, flag
      ? (flag.definition ? [badge(flag.definition.enabled ? 'on' : 'off'), ` rollout ${flag.definition.rollout_percentage}% · targeting: ${targeting(flag.definition)} · modify index ${flag.modify_index}`]
        : message('error', `The stored value is not a valid definition: ${flag.error}`))
      : 'This flag does not exist yet: saving creates it.');
    stored.textContent = flag ? JSON.stringify(flag.definition, null, 2) : '(none)';
    if (!dirty) load(current);
  }, (error) => { notice(error); fill(state, message('error', error.describe())); });
}
