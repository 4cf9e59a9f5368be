//! Cluster-wide catalog queries over a [`Snapshot`], answered in Consul's
//! JSON shapes. A node that left is gone from the catalog; a failed node
//! stays, with Consul's `serfHealth` check critical, so its instances drop
//! out of `?passing` results at once.

use serde_json::{Value, json};
use shoal_protocol::record::{CheckRecord, CheckStatus, Health, ServiceRecord, worst_status};
use shoal_protocol::{MemberStatus, MemberView, NodeRecord};

use crate::daemon::snapshot::Snapshot;

/// One node of the catalog: a member we have a record for, not left.
#[derive(Clone, Copy)]
pub struct CatalogNode<'a> {
    pub member: &'a MemberView,
    pub record: &'a NodeRecord,
}

impl<'a> CatalogNode<'a> {
    /// Consul's `serfHealth` node check, from the membership status.
    pub fn serf_health(&self) -> CheckRecord {
        let (status, output) = match self.member.status {
            MemberStatus::Failed => (CheckStatus::Critical, "Agent not live or unreachable"),
            _ => (CheckStatus::Passing, "Agent alive and reachable"),
        };
        CheckRecord {
            id: "serfHealth".into(),
            name: "Serf Health Status".into(),
            kind: "serf".into(),
            status,
            critical: true,
            notes: String::new(),
            output: output.into(),
        }
    }

    /// Node-level checks: serfHealth first, then the node's own.
    pub fn node_checks(&self) -> Vec<CheckRecord> {
        let mut checks = vec![self.serf_health()];
        checks.extend(self.record.checks.iter().cloned());
        checks
    }

    /// Every check that applies to `service`: the node's, then its own.
    pub fn service_checks(&self, service: &ServiceRecord) -> Vec<CheckRecord> {
        let mut checks = self.node_checks();
        checks.extend(service.checks.iter().cloned());
        checks
    }

    pub fn address(&self) -> String {
        self.member.id.addr.ip().to_string()
    }

    pub fn service_address(&self, service: &ServiceRecord) -> String {
        if service.address.is_empty() {
            self.address()
        } else {
            service.address.clone()
        }
    }

    pub fn node_json(&self) -> Value {
        json!({
            "ID": "",
            "Node": self.record.name,
            "Address": self.address(),
            "Datacenter": self.record.datacenter,
            "TaggedAddresses": { "lan": self.address(), "wan": self.address() },
            "Meta": self.record.tags,
            "CreateIndex": 1,
            "ModifyIndex": self.record.version,
        })
    }

    pub fn check_json(&self, check: &CheckRecord, service: Option<&ServiceRecord>) -> Value {
        json!({
            "Node": self.record.name,
            "CheckID": check.id,
            "Name": check.name,
            "Status": check.consul_status().as_str(),
            "Notes": check.notes,
            "Output": check.output,
            "ServiceID": service.map(|s| s.id.as_str()).unwrap_or_default(),
            "ServiceName": service.map(|s| s.name.as_str()).unwrap_or_default(),
            "ServiceTags": service.map(|s| s.tags.clone()).unwrap_or_default(),
            "Type": check.kind,
            "Critical": check.critical,
            "Definition": {},
            "CreateIndex": 1,
            "ModifyIndex": self.record.version,
        })
    }

    pub fn service_json(&self, service: &ServiceRecord) -> Value {
        json!({
            "ID": service.id,
            "Service": service.name,
            "Tags": service.tags,
            "Address": service.address,
            "Meta": service.meta,
            "Port": service.port,
            "Weights": { "Passing": 1, "Warning": 1 },
            "EnableTagOverride": false,
            "Datacenter": self.record.datacenter,
            "CreateIndex": 1,
            "ModifyIndex": self.record.version,
        })
    }
}

/// The nodes in the catalog, in name order.
pub fn nodes(snapshot: &Snapshot) -> impl Iterator<Item = CatalogNode<'_>> {
    snapshot.members.iter().filter_map(|member| {
        let record = member.record.as_ref()?;
        let gone = member.status == MemberStatus::Left || record.id != member.id;
        (!gone).then_some(CatalogNode { member, record })
    })
}

/// Every instance of the service `name`: `(node, service)` pairs.
pub fn instances<'a>(
    snapshot: &'a Snapshot,
    name: &'a str,
) -> impl Iterator<Item = (CatalogNode<'a>, &'a ServiceRecord)> {
    nodes(snapshot).flat_map(move |node| {
        let services: Vec<&ServiceRecord> = node
            .record
            .services
            .iter()
            .filter(|s| s.name == name)
            .collect();
        services.into_iter().map(move |service| (node, service))
    })
}

/// Filters shared by the health and catalog service queries.
#[derive(Debug, Default, Clone)]
pub struct ServiceFilter {
    /// Only instances whose every check passes (Consul's `?passing`).
    pub passing: bool,
    /// Only instances with all of these tags (`?tag=`, repeatable).
    pub tags: Vec<String>,
    /// Only nodes with these `key:value` meta pairs (`?node-meta=`).
    pub node_meta: Vec<(String, String)>,
}

impl ServiceFilter {
    pub fn matches(&self, node: &CatalogNode<'_>, service: &ServiceRecord) -> bool {
        if !self.tags.iter().all(|tag| service.tags.contains(tag)) {
            return false;
        }
        if !self
            .node_meta
            .iter()
            .all(|(key, value)| node.record.tags.get(key) == Some(value))
        {
            return false;
        }
        !self.passing || worst_status(&node.service_checks(service)) == CheckStatus::Passing
    }
}

/// `GET /v1/health/service/:name`
pub fn health_service(snapshot: &Snapshot, name: &str, filter: &ServiceFilter) -> Value {
    let entries: Vec<Value> = instances(snapshot, name)
        .filter(|(node, service)| filter.matches(node, service))
        .map(|(node, service)| {
            let mut checks: Vec<Value> = node.node_checks().iter().map(|c| node.check_json(c, None)).collect();
            checks.extend(service.checks.iter().map(|c| node.check_json(c, Some(service))));
            json!({ "Node": node.node_json(), "Service": node.service_json(service), "Checks": checks })
        })
        .collect();
    Value::Array(entries)
}

/// `GET /v1/catalog/service/:name`
pub fn catalog_service(snapshot: &Snapshot, name: &str, filter: &ServiceFilter) -> Value {
    let entries: Vec<Value> = instances(snapshot, name)
        .filter(|(node, service)| filter.matches(node, service))
        .map(|(node, service)| {
            json!({
                "ID": "",
                "Node": node.record.name,
                "Address": node.address(),
                "Datacenter": node.record.datacenter,
                "TaggedAddresses": { "lan": node.address(), "wan": node.address() },
                "NodeMeta": node.record.tags,
                "ServiceKind": "",
                "ServiceID": service.id,
                "ServiceName": service.name,
                "ServiceTags": service.tags,
                "ServiceAddress": service.address,
                "ServicePort": service.port,
                "ServiceMeta": service.meta,
                "ServiceWeights": { "Passing": 1, "Warning": 1 },
                "ServiceEnableTagOverride": false,
                "CreateIndex": 1,
                "ModifyIndex": node.record.version,
            })
        })
        .collect();
    Value::Array(entries)
}

/// `GET /v1/catalog/services`: every service name with the union of its tags.
pub fn catalog_services(snapshot: &Snapshot) -> Value {
    let mut services: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for node in nodes(snapshot) {
        for service in &node.record.services {
            services
                .entry(service.name.as_str())
                .or_default()
                .extend(service.tags.iter().map(String::as_str));
        }
    }
    json!(services)
}

/// `GET /v1/catalog/nodes`
pub fn catalog_nodes(snapshot: &Snapshot) -> Value {
    Value::Array(nodes(snapshot).map(|node| node.node_json()).collect())
}

/// Every check in the cluster, with the service it belongs to.
fn all_checks(snapshot: &Snapshot) -> Vec<Value> {
    let mut out = Vec::new();
    for node in nodes(snapshot) {
        out.extend(node.node_checks().iter().map(|c| node.check_json(c, None)));
        for service in &node.record.services {
            out.extend(
                service
                    .checks
                    .iter()
                    .map(|c| node.check_json(c, Some(service))),
            );
        }
    }
    out
}

/// `GET /v1/health/state/:state` (`any`, `passing`, `warning`, `critical`);
/// `None` for an unknown state.
pub fn health_state(snapshot: &Snapshot, state: &str) -> Option<Value> {
    if state != "any" && CheckStatus::parse(state).is_none() {
        return None;
    }
    let checks = all_checks(snapshot)
        .into_iter()
        .filter(|check| state == "any" || check["Status"] == state)
        .collect();
    Some(Value::Array(checks))
}

/// `GET /v1/health/checks/:service`
pub fn health_checks(snapshot: &Snapshot, name: &str) -> Value {
    let checks = instances(snapshot, name)
        .flat_map(|(node, service)| {
            service
                .checks
                .iter()
                .map(move |c| node.check_json(c, Some(service)))
        })
        .collect();
    Value::Array(checks)
}

/// `GET /v1/health/node/:node`
pub fn health_node(snapshot: &Snapshot, name: &str) -> Value {
    let checks = all_checks(snapshot)
        .into_iter()
        .filter(|check| check["Node"] == name)
        .collect();
    Value::Array(checks)
}

/// Instances of `name` whose every check passes, cluster-wide.
pub fn count_passing(snapshot: &Snapshot, name: &str) -> usize {
    instances(snapshot, name)
        .filter(|(node, service)| {
            worst_status(&node.service_checks(service)) == CheckStatus::Passing
        })
        .count()
}

/// Shoal's health of one instance, serfHealth included.
pub fn instance_health(node: &CatalogNode<'_>, service: &ServiceRecord) -> Health {
    Health::of(&node.service_checks(service))
}
