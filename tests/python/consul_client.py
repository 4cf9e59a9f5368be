"""Drives a live shoal agent with python-consul 1.1.0 (PyPI), a real Consul
client, and prints what it saw as JSON for the Rust test to compare with
the HTTP API. Usage: consul_client.py HOST PORT"""
import json
import sys

import consul

host, port = sys.argv[1], int(sys.argv[2])
c = consul.Consul(host=host, port=port)

# Register a service with a TTL check, the way the library does it.
assert c.agent.service.register(
    "payments",
    service_id="payments-1",
    port=7000,
    tags=["v2", "canary"],
    check=consul.Check.ttl("30s"),
)
check_id = "service:payments-1"
c.agent.check.ttl_pass(check_id, notes="all good")

index, passing = c.health.service("payments", passing=True)
_, services = c.catalog.services()
_, instances = c.catalog.service("payments")
local = c.agent.services()

# A blocking call returns once the check fails.
c.agent.check.ttl_fail(check_id, notes="broken")
new_index, after_fail = c.health.service("payments", passing=True, index=index, wait="10s")

# Deregistering removes it.
c.agent.service.deregister("payments-1")
_, after_deregister = c.catalog.service("payments")

# The KV store: put, get (with its index), a blocking get, recurse, delete.
assert c.kv.put("config/db/pool_size", "20") is True
assert c.kv.put("config/db/host", "db.internal", flags=7) is True
kv_index, pool = c.kv.get("config/db/pool_size")
assert c.kv.put("config/db/pool_size", "30") is True
kv_new_index, pool_after = c.kv.get("config/db/pool_size", index=kv_index, wait="10s")
_, tree = c.kv.get("config/db", recurse=True)
assert c.kv.put("config/db/pool_size", "never", cas=1) is False
assert c.kv.delete("config/db/host") is True
_, host_after_delete = c.kv.get("config/db/host")

print(json.dumps({
    "kv_value": pool["Value"].decode(),
    "kv_value_after": pool_after["Value"].decode(),
    "kv_index": int(kv_index),
    "kv_new_index": int(kv_new_index),
    "kv_tree": [[e["Key"], e["Value"].decode(), e["Flags"]] for e in tree],
    "kv_deleted": host_after_delete,
    "index": int(index),
    "new_index": int(new_index),
    "passing": passing,
    "services": services,
    "instances": instances,
    "local": local,
    "after_fail": after_fail,
    "after_deregister": after_deregister,
}))
