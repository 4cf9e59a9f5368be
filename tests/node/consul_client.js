// Drives a live shoal agent with the npm `consul` package (silas/node-consul,
// a stock Consul client) and prints what it saw as JSON for the Rust test
// (tests/tests/node_consul.rs) to check. Usage: node consul_client.js HOST PORT
'use strict';

const Consul = require('consul');

async function main() {
  const [host, port] = process.argv.slice(2);
  const consul = new Consul({ host, port: Number(port) });
  const seen = {};

  // Register a service with a TTL check, report it passing, look it up.
  await consul.agent.service.register({
    name: 'payments',
    id: 'payments-1',
    port: 7000,
    tags: ['v2'],
    check: { ttl: '30s' },
  });
  const checkId = 'service:payments-1';
  await consul.agent.check.pass({ id: checkId, note: 'all good' });
  seen.passing = await consul.health.service({ service: 'payments', passing: true });
  seen.catalog_services = await consul.catalog.service.list();
  seen.local_services = await consul.agent.service.list();
  seen.checks = await consul.agent.check.list();

  // Failing the check takes it out of ?passing.
  await consul.agent.check.fail({ id: checkId, note: 'broken' });
  seen.after_fail = await consul.health.service({ service: 'payments', passing: true });

  // The KV store: set, get, keys, a CAS that must lose, delete.
  seen.kv_set = await consul.kv.set('config/db/pool_size', '20');
  seen.kv_set_flags = await consul.kv.set('config/db/host', 'db.internal', { flags: 7 });
  const pool = await consul.kv.get('config/db/pool_size');
  seen.kv_value = pool.Value;
  seen.kv_keys = await consul.kv.keys('config/');
  // The client answers a lost CAS (`false`) with undefined, against Consul too.
  seen.kv_cas_won = (await consul.kv.set('config/db/pool_size', 'never', { cas: 1 })) === true;
  seen.kv_after_cas = (await consul.kv.get('config/db/pool_size')).Value;
  seen.kv_del = await consul.kv.del('config/db/host');
  seen.kv_after_del = (await consul.kv.get('config/db/host')) ?? null;

  // The agent itself.
  const self = await consul.agent.self();
  seen.self_node = self.Config.NodeName;
  seen.members = (await consul.agent.members()).map((m) => m.Name);
  await consul.agent.maintenance({ enable: true, reason: 'npm test' });
  seen.maintenance_checks = (await consul.health.node(seen.self_node)).map((c) => c.CheckID);
  await consul.agent.maintenance({ enable: false });

  // Deregistering removes the service.
  await consul.agent.service.deregister('payments-1');
  seen.after_deregister = await consul.catalog.service.nodes('payments');

  process.stdout.write(JSON.stringify(seen));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
