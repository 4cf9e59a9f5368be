// Services: a summary of every service (one blocking query on
// /v1/internal/ui/services), and one service's instances with every check
// (/v1/health/service/:name).

import { watch } from './api.js';
import { h, fill, badge, tags, pairs, table, message, notice, clearNotice } from './dom.js';

export function mount(main, name) {
  return name ? mountService(main, name) : mountList(main);
}

function count(n, status) {
  return h('td.num', { 'data-count': status }, n ? h('span', `${n} ${status}`) : h('span.muted', '0'));
}

function mountList(main) {
  const body = h('div#services');
  fill(main, h('h2', 'Services'), body);
  return watch('/v1/internal/ui/services', (data) => {
    clearNotice();
    const list = data || [];
    if (!list.length) { fill(body, h('p.muted', 'No services are registered in the cluster.')); return; }
    fill(body, table(['Service', '#Instances', '#Passing', '#Warning', '#Critical', '#In maintenance', 'Tags'],
      list.map((s) => h('tr', { 'data-service': s.Name },
        h('td', h('a', { href: `#/services/${encodeURIComponent(s.Name)}` }, s.Name)),
        h('td.num', s.InstanceCount),
        count(s.InstancesPassing, 'passing'),
        count(s.InstancesWarning, 'warning'),
        count(s.InstancesCritical, 'critical'),
        h('td.num', s.InstancesInMaintenance || h('span.muted', '0')),
        h('td', tags(s.Tags))))));
  }, (error) => { notice(error); fill(body, message('error', error.describe())); });
}

const RANK = { passing: 0, warning: 1, critical: 2 };

function worst(checks) {
  return checks.reduce((w, c) => (RANK[c.Status] > RANK[w] ? c.Status : w), 'passing');
}

function isMaintenance(check) {
  return check.CheckID === '_node_maintenance' || check.CheckID.startsWith('_service_maintenance:');
}

function instance(entry) {
  const { Node: node, Service: service, Checks: checks } = entry;
  const address = service.Address || node.Address;
  const maintenance = checks.filter(isMaintenance);
  return h('section.instance', { 'data-node': node.Node, 'data-service-id': service.ID, 'aria-label': `${service.ID} on ${node.Node}` },
    h('h3', badge(worst(checks)), ' ', service.ID, h('span.muted', ` on ${node.Node}`)),
    maintenance.map((c) => h('p.message.info', { 'data-maintenance': c.CheckID },
      `‖ In maintenance${c.CheckID === '_node_maintenance' ? ' (the whole node)' : ''}: ${c.Notes || 'no reason given'}`)),
    h('dl.pairs',
      h('dt', 'Node'), h('dd', node.Node),
      h('dt', 'Address'), h('dd.mono', `${address}:${service.Port}`),
      h('dt', 'Tags'), h('dd', service.Tags && service.Tags.length ? tags(service.Tags) : h('span.muted', 'none')),
      h('dt', 'Meta'), h('dd', pairs(service.Meta))),
    table(['Check', 'Status', 'Type', 'Output'], checks.map((c) =>
      h('tr', { 'data-check': c.CheckID, 'data-status': c.Status },
        h('td', c.Name, h('br'), h('span.muted.mono', c.CheckID)),
        h('td', badge(c.Status)),
        h('td', c.Type || ''),
        h('td', c.Output ? h('pre.output', c.Output) : h('span.muted', c.Notes || 'no output'))))));
}

function mountService(main, name) {
  const summary = h('p#service-summary', { 'aria-live': 'polite' });
  const body = h('div#instances');
  fill(main,
    h('p', h('a', { href: '#/services' }, '← All services')),
    h('h2', `Service ${name}`), summary, body);
  return watch(`/v1/health/service/${encodeURIComponent(name)}`, (data) => {
    clearNotice();
    const entries = data || [];
    const by = { passing: 0, warning: 0, critical: 0 };
    for (const e of entries) by[worst(e.Checks)] += 1;
    summary.textContent = entries.length
      ? `${entries.length} instances: ${by.passing} passing, ${by.warning} warning, ${by.critical} critical.`
      : 'No instances of this service.';
    fill(body, entries.map(instance));
  }, (error) => { notice(error); fill(body, message('error', error.describe())); });
}
