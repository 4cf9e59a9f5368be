// Members: every agent this one knows, live (a blocking query on
// /v1/agent/members), filtered by status and text.

import { watch } from './api.js';
import { h, fill, badge, tags, table, message, notice, clearNotice } from './dom.js';

const STATUSES = ['alive', 'suspect', 'leaving', 'left', 'failed'];

export function mount(main) {
  let members = null;
  const status = h('select#member-status', { onchange: render },
    h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s }, s)));
  const text = h('input#member-filter', { type: 'search', placeholder: 'name, address or tag', oninput: render, onchange: render });
  const summary = h('p#member-summary.muted', { 'aria-live': 'polite' });
  const body = h('div#members');
  fill(main,
    h('h2', 'Members'),
    h('div.toolbar',
      h('label', { for: 'member-status' }, 'Status '), status,
      h('label', { for: 'member-filter' }, 'Filter '), text),
    summary, body);

  function render() {
    if (!members) return;
    const wanted = status.value;
    const needle = text.value.trim().toLowerCase();
    const shown = members.filter((m) => {
      if (wanted && m.StatusText !== wanted) return false;
      if (!needle) return true;
      const tagText = Object.entries(m.Tags || {}).map(([k, v]) => `${k}=${v}`).join(' ');
      return `${m.Name} ${m.Addr}:${m.Port} ${tagText}`.toLowerCase().includes(needle);
    });
    const counts = STATUSES.map((s) => [s, members.filter((m) => m.StatusText === s).length])
      .filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(', ');
    summary.textContent = `${members.length} members: ${counts}. Showing ${shown.length}.`;
    fill(body, table(['Name', 'Address', 'Status', '#Generation', 'Tags'], shown.map((m) =>
      h('tr', { 'data-name': m.Name, 'data-status': m.StatusText },
        h('td', m.Name),
        h('td.mono', `${m.Addr}:${m.Port}`),
        h('td', badge(m.StatusText)),
        h('td.num', m.Generation),
        h('td', tags(Object.entries(m.Tags || {}).map(([k, v]) => `${k}=${v}`)))))));
  }

  return watch('/v1/agent/members', (data) => {
    clearNotice();
    members = (data || []).slice().sort((a, b) => a.Name.localeCompare(b.Name));
    render();
  }, (error) => {
    notice(error);
    members = null;
    fill(body, message('error', error.describe()));
  });
}
