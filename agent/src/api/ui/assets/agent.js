// This agent: its config, gossip counters, reload status and local checks.
// These come from /v1/agent/self and /health/detailed, which have no
// blocking form: they are read every 5 s while the tab is visible.

import { get, every } from './api.js';
import { h, fill, badge, pairs, table, message, notice, clearNotice } from './dom.js';

export function mount(main) {
  const body = h('div#agent');
  fill(main, h('h2', 'This agent'), body);
  return every(5000, async () => {
    try {
      const [self, detailed] = await Promise.all([get('/v1/agent/self'), get('/health/detailed')]);
      clearNotice();
      render(body, self.data, detailed.data);
    } catch (error) {
      notice(error);
      fill(body, message('error', error.describe()));
    }
  });
}

function counters(object) {
  return table(['Counter', '#Value'], Object.entries(object || {}).map(([k, v]) =>
    h('tr', { 'data-counter': k }, h('td', k), h('td.num', v ?? '–'))));
}

function render(body, self, detailed) {
  const config = self.Config;
  const stats = self.Stats;
  const reload = stats.reload || {};
  const checks = Object.entries(detailed.checks || {});
  fill(body,
    h('div.columns',
      h('section', h('h3', 'Configuration'), h('dl.pairs#agent-config',
        h('dt', 'Node'), h('dd', config.NodeName),
        h('dt', 'Datacenter'), h('dd', config.Datacenter),
        h('dt', 'Cluster'), h('dd', config.Cluster ?? ''),
        h('dt', 'Version'), h('dd', config.Version),
        h('dt', 'Gossip address'), h('dd.mono', config.BindAddr),
        h('dt', 'Advertised'), h('dd.mono', config.AdvertiseAddr),
        h('dt', 'HTTP address'), h('dd.mono', config.HTTPAddr),
        h('dt', 'Join'), h('dd.mono', (config.Join || []).join(', ') || 'none'),
        h('dt', 'Generation'), h('dd', stats.agent.generation),
        h('dt', 'Index'), h('dd', stats.agent.index),
        h('dt', 'Keyring'), h('dd', stats.keyring ? stats.keyring.source : ''),
        h('dt', 'Tags'), h('dd', pairs(self.Meta)))),
      h('section', h('h3', 'Health'), h('p#agent-health', badge(detailed.status),
        detailed.name_conflict ? ` Another live agent claims this node's name: ${detailed.name_conflict}` : ''),
      h('h3', 'Config reload'), h('dl.pairs#agent-reload',
        h('dt', 'Reloads'), h('dd', reload.reloads ?? 0),
        h('dt', 'Refused'), h('dd', reload.failures ?? 0),
        h('dt', 'Last success'), h('dd', reload.last_success || 'never'),
        h('dt', 'Last trigger'), h('dd', reload.last_trigger ? JSON.stringify(reload.last_trigger) : '–'),
        h('dt', 'Needs restart'), h('dd', (reload.needs_restart || []).join(', ') || 'nothing'),
        h('dt', 'Watching'), h('dd.mono', (reload.watching || []).join(', ') || 'nothing')),
      reload.last_error ? message('error', `The last reload was refused; the previous config keeps running: ${reload.last_error}`)
        : h('p.muted', 'No reload error.'),
      h('h3', 'Members seen'), counters(stats.serf_lan),
      h('h3', 'KV store'), counters(stats.kv))),
    h('h3', 'Local checks'),
    checks.length ? table(['Check', 'Status', 'Type', 'Service', 'Output', '#Duration', 'Last run'], checks.map(([id, c]) =>
      h('tr', { 'data-check': id, 'data-status': c.status },
        h('td.mono', id), h('td', badge(c.status)), h('td', c.type), h('td', c.service_id || 'node'),
        h('td', c.output ? h('pre', c.output) : h('span.muted', 'no output')),
        h('td.num', c.duration_ms === null || c.duration_ms === undefined ? '–' : `${c.duration_ms.toFixed(1)} ms`),
        h('td', c.last_run || 'not yet'))))
      : h('p.muted', 'No checks run on this agent.'),
    h('div.columns',
      h('section', h('h3', 'Gossip'), counters(stats.gossip)),
      h('section', h('h3', 'Blocking queries'), counters(stats.blocking))));
}
