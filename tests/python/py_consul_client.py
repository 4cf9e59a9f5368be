"""Drives a live shoal cluster with py-consul (the maintained fork of
python-consul, from PyPI) and prints what it saw as JSON for the Rust test
to compare with the HTTP API. Usage: py_consul_client.py HOST PORT OTHER_NODE"""
import json
import sys
import time

import consul

host, port, other_node = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = consul.Consul(host=host, port=port)
me = c.agent.self()["Config"]["NodeName"]

# One check: py-consul sends it as a one-element Checks list.
assert c.agent.service.register(
    "web", service_id="web-1", port=8080, tags=["v1"], meta={"version": "1"},
    check=consul.Check.ttl("300s"),
)
# Two checks: check plus extra_checks.
assert c.agent.service.register(
    "api", service_id="api-1", port=9000, tags=["v2"],
    check=consul.Check.ttl("300s"), extra_checks=[consul.Check.ttl("300s")],
)
ttl_pass = c.agent.check.ttl_pass("service:web-1", notes="fine")
check_ids = sorted(c.agent.checks())

# Maintenance with Python booleans (py-consul sends enable=True).
maintenance_on = c.agent.maintenance(True, "upgrade")
_, node_checks_on = c.health.node(me)
maintenance_off = c.agent.maintenance(False)
service_maintenance_on = c.agent.service.maintenance("api-1", True, "deploy")
_, api_checks = c.health.checks("api")
service_maintenance_off = c.agent.service.maintenance("api-1", False)

leader = c.status.leader()
peers = c.status.peers()
datacenters = c.catalog.datacenters()
_, node = c.catalog.node(me)
_, other = c.catalog.node(other_node)
_, missing = c.catalog.node("no-such-node")

filters = {
    "agent_services": c.agent.services(filter_expr='Tags contains "v1"'),
    "agent_checks": c.agent.checks(filter_expr='Status == "passing"'),
    "health_service": c.health.service("web", filter_expr='Checks.Status == "passing"')[1],
    "health_service_none": c.health.service("api", filter_expr='Checks.Status == "passing" and Service.Port == 1')[1],
    "health_checks": c.health.checks("api", filter_expr='CheckID == "service:api-1:2"')[1],
    "health_state": c.health.state("critical", filter_expr='ServiceName == "api"')[1],
    "health_node": c.health.node(me, filter_expr='CheckID == "serfHealth"')[1],
    "catalog_service": c.catalog.service("web", filter_expr='ServiceMeta.version == "1"')[1],
    "catalog_nodes": c.catalog.nodes(filter_expr='Meta.role == "edge"')[1],
}
# Network coordinates: both nodes' once the peer's has arrived (each agent
# publishes its own within seconds of its first probe).
deadline = time.time() + 20
while True:
    _, coordinate_nodes = c.coordinate.nodes()
    if len(coordinate_nodes) == 2 or time.time() > deadline:
        break
    time.sleep(0.5)
_, coordinate_me = c.coordinate.node(me)
_, coordinate_missing = c.coordinate.node("no-such-node")
coordinate_dcs = c.coordinate.datacenters()
_, near_nodes = c.catalog.nodes(near="_agent")

try:
    c.agent.services(filter_expr="Tags ==")
    bad_filter = None
except consul.ConsulException as error:
    bad_filter = str(error)

print(json.dumps({
    "me": me,
    "ttl_pass": ttl_pass,
    "check_ids": check_ids,
    "maintenance_on": maintenance_on,
    "maintenance_off": maintenance_off,
    "node_checks_on": node_checks_on,
    "service_maintenance_on": service_maintenance_on,
    "service_maintenance_off": service_maintenance_off,
    "api_checks": api_checks,
    "leader": leader,
    "peers": peers,
    "datacenters": datacenters,
    "node": node,
    "other": other,
    "missing": missing,
    "filters": filters,
    "coordinate_nodes": coordinate_nodes,
    "coordinate_me": coordinate_me,
    "coordinate_missing": coordinate_missing,
    "coordinate_dcs": coordinate_dcs,
    "near_nodes": near_nodes,
    "bad_filter": bad_filter,
}))
