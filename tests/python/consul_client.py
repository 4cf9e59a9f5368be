"""Drives a live shoal agent with Debian's python3-consul, a real Consul
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

print(json.dumps({
    "index": int(index),
    "new_index": int(new_index),
    "passing": passing,
    "services": services,
    "instances": instances,
    "local": local,
    "after_fail": after_fail,
    "after_deregister": after_deregister,
}))
