//! Consul's JSON shapes, one function per Consul type, so that every
//! endpoint showing a service, a check or a node shows the same fields.
//! Handlers select what to show (see [`crate::catalog`] and the snapshot);
//! this module only says how Consul spells it. Shoal adds `Critical` to
//! checks; the rest is as Consul's API documents it.
//!
//! Consul omits a type's `CreateIndex`/`ModifyIndex` where it has none
//! (the agent's own view); so do we.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};
use shoal_protocol::MemberView;
use shoal_protocol::event::UserEvent;
use shoal_protocol::kv::Stored;
use shoal_protocol::record::{CheckRecord, CheckStatus, ServiceRecord};

use crate::catalog::{CatalogNode, ClusterCheck};
use crate::snapshot::{CheckDetail, Snapshot};

/// Every record has existed since index 1: Shoal has no Raft log, so the
/// creation index is not tracked.
const CREATE_INDEX: u64 = 1;

/// `Node` (`/v1/catalog/nodes`, a health entry's `Node`).
pub fn node(node: &CatalogNode<'_>) -> Value {
    with_fields(
        node_fields(node),
        json!({ "Meta": node.record.user_tags() }),
    )
}

/// The fields `Node` and `CatalogService` share: where the node is, and
/// the indexes of its record.
fn node_fields(node: &CatalogNode<'_>) -> Value {
    json!({
        "ID": node.record.node_id().unwrap_or_default(),
        "Node": node.record.name,
        "Address": node.address(),
        "Datacenter": node.record.datacenter,
        "TaggedAddresses": { "lan": node.address(), "wan": node.address() },
        "CreateIndex": CREATE_INDEX,
        "ModifyIndex": node.record.version,
    })
}

/// `base` with the fields of `extra` added (both objects).
fn with_fields(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
        base.extend(extra);
    }
    base
}

/// `AgentService` (`/v1/agent/services`, a health entry's `Service`).
/// `modify_index` is the owning record's version where the service is
/// shown from the catalog, `None` for the agent's own view.
pub fn agent_service(
    service: &ServiceRecord,
    datacenter: &str,
    modify_index: Option<u64>,
) -> Value {
    let mut value = json!({
        "ID": service.id,
        "Service": service.name,
        "Tags": service.tags,
        "Meta": service.user_meta(),
        "Port": service.port,
        "Address": service.address,
        "Weights": { "Passing": 1, "Warning": 1 },
        "EnableTagOverride": false,
        "Datacenter": datacenter,
    });
    if let Some(tagged) = tagged_addresses(service) {
        value = with_fields(value, json!({ "TaggedAddresses": tagged }));
    }
    if let Some(modify_index) = modify_index {
        value = with_fields(
            value,
            json!({ "CreateIndex": CREATE_INDEX, "ModifyIndex": modify_index }),
        );
    }
    value
}

/// `CatalogService` (`/v1/catalog/service/:name`): a node and one of its
/// services, flattened.
pub fn catalog_service(node: &CatalogNode<'_>, service: &ServiceRecord) -> Value {
    let service_fields = json!({
        "NodeMeta": node.record.user_tags(),
        "ServiceKind": "",
        "ServiceID": service.id,
        "ServiceName": service.name,
        "ServiceTags": service.tags,
        "ServiceAddress": service.address,
        "ServicePort": service.port,
        "ServiceMeta": service.user_meta(),
        "ServiceWeights": { "Passing": 1, "Warning": 1 },
        "ServiceEnableTagOverride": false,
    });
    let mut value = with_fields(node_fields(node), service_fields);
    if let Some(tagged) = tagged_addresses(service) {
        value = with_fields(value, json!({ "ServiceTaggedAddresses": tagged }));
    }
    value
}

/// Consul's service `TaggedAddresses` (`{"lan": {"Address", "Port"}}`),
/// left out when there are none, as Consul does.
fn tagged_addresses(service: &ServiceRecord) -> Option<Value> {
    let tagged = service.tagged_addresses();
    (!tagged.is_empty()).then(|| {
        tagged
            .into_iter()
            .map(|(name, (address, port))| {
                (
                    name.to_string(),
                    json!({ "Address": address, "Port": port }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    })
}

/// `/v1/catalog/services`: every service name with the union of its tags.
pub fn catalog_services(service_tags: &BTreeMap<&str, BTreeSet<&str>>) -> Value {
    json!(service_tags)
}

/// `HealthCheck` (`/v1/health/*`, a health entry's `Checks`).
pub fn health_check(
    node: &CatalogNode<'_>,
    check: &CheckRecord,
    service: Option<&ServiceRecord>,
) -> Value {
    json!({
        "Node": node.record.name,
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
        "CreateIndex": CREATE_INDEX,
        "ModifyIndex": node.record.version,
    })
}

/// [`health_check`] of a check found by a cluster-wide query.
pub fn cluster_check(check: &ClusterCheck<'_>) -> Value {
    health_check(&check.node, &check.check, check.service)
}

/// `ServiceEntry` (`/v1/health/service/:name`): the node, the service and
/// every check that applies to it, node checks first.
pub fn health_service_entry(node: &CatalogNode<'_>, service: &ServiceRecord) -> Value {
    let mut checks: Vec<Value> = node
        .node_checks()
        .iter()
        .map(|check| health_check(node, check, None))
        .collect();
    checks.extend(
        service
            .checks
            .iter()
            .map(|check| health_check(node, check, Some(service))),
    );
    json!({
        "Node": self::node(node),
        "Service": agent_service(service, &node.record.datacenter, Some(node.record.version)),
        "Checks": checks,
    })
}

/// `AgentCheck` (`/v1/agent/checks`): a check registered on this agent,
/// with its interval and timeout.
pub fn agent_check(check: &CheckDetail, node_name: &str) -> Value {
    let millis = |duration: Option<std::time::Duration>| {
        duration
            .map(|d| format!("{}ms", d.as_millis()))
            .unwrap_or_default()
    };
    json!({
        "Node": node_name,
        "CheckID": check.record.id,
        "Name": check.record.name,
        "Status": check.record.consul_status().as_str(),
        "Notes": check.record.notes,
        "Output": check.record.output,
        "ServiceID": check.service_id.clone().unwrap_or_default(),
        "ServiceName": check.service_name,
        "ServiceTags": check.service_tags,
        "Type": check.record.kind,
        "Critical": check.record.critical,
        "Interval": millis(check.interval),
        "Timeout": millis(check.timeout),
    })
}

/// `AgentServiceChecksInfo` (`/v1/agent/health/service/*`): a local
/// service, its checks and their aggregated status.
pub fn agent_service_checks_info(
    status: CheckStatus,
    service: &ServiceRecord,
    checks: &[&CheckDetail],
    datacenter: &str,
    node_name: &str,
) -> Value {
    json!({
        "AggregatedStatus": status.as_str(),
        "Service": agent_service(service, datacenter, None),
        "Checks": checks.iter().map(|check| agent_check(check, node_name)).collect::<Vec<_>>(),
    })
}

/// `KVPair` (`/v1/kv/:key`): the value base64-encoded, `null` when empty.
pub fn kv_pair(stored: &Stored) -> Value {
    let entry = &stored.entry;
    let value = if entry.value.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&entry.value))
    };
    json!({
        "CreateIndex": stored.create_index,
        "ModifyIndex": stored.modify_index,
        "LockIndex": 0,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": value,
    })
}

/// `Member` (`/v1/agent/members`, `/v1/agent/self`'s `Member`), plus
/// Shoal's `Generation` and `StatusText`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    /// 1 alive, 2 leaving, 3 left, 4 failed.
    pub status: u8,
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
    pub generation: u64,
    pub status_text: &'static str,
}

impl Member {
    /// A member as Consul shows it: its record's tags plus `dc`.
    pub fn from_view(member: &MemberView) -> Self {
        let mut tags = member
            .record
            .as_ref()
            .map(|record| record.tags.clone())
            .unwrap_or_default();
        if let Some(record) = &member.record {
            tags.entry("dc".into())
                .or_insert_with(|| record.datacenter.clone());
        }
        let version = shoal_protocol::envelope::PROTOCOL_VERSION;
        Self {
            name: member.name(),
            addr: member.id.addr.ip().to_string(),
            port: member.id.addr.port(),
            tags,
            status: member.status.consul_code(),
            protocol_min: version,
            protocol_max: version,
            protocol_cur: version,
            delegate_min: version,
            delegate_max: version,
            delegate_cur: version,
            generation: member.id.generation,
            status_text: member.status.as_str(),
        }
    }
}

/// Consul's `UserEvent` JSON (`/v1/event/fire`, `/v1/event/list`).
pub fn user_event(event: &UserEvent) -> Value {
    let payload = if event.payload.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&event.payload))
    };
    json!({
        "ID": crate::events::uuid(&event.id),
        "Name": event.name,
        "Payload": payload,
        "NodeFilter": event.node_filter,
        "ServiceFilter": event.service_filter,
        "TagFilter": event.tag_filter,
        "Version": 1,
        "LTime": event.ltime,
    })
}

/// The event list as `/v1/event/list?name=` gives it (`name` empty: all).
pub fn event_list(snapshot: &Snapshot, name: &str) -> Value {
    Value::Array(
        snapshot
            .events
            .iter()
            .filter(|event| name.is_empty() || event.name == name)
            .map(|event| user_event(event))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServiceRecord {
        ServiceRecord {
            id: "web-1".into(),
            name: "web".into(),
            address: String::new(),
            port: 80,
            tags: vec!["v1".into()],
            meta: BTreeMap::new(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn agent_service_has_raft_indexes_only_from_the_catalog() {
        let own = agent_service(&web(), "dc1", None);
        assert!(own.get("CreateIndex").is_none() && own.get("ModifyIndex").is_none());
        assert_eq!(own["Datacenter"], "dc1");
        let seen = agent_service(&web(), "dc2", Some(7));
        assert_eq!(
            (seen["CreateIndex"].clone(), seen["ModifyIndex"].clone()),
            (json!(1), json!(7))
        );
        let mut without_indexes = seen.as_object().unwrap().clone();
        without_indexes.remove("CreateIndex");
        without_indexes.remove("ModifyIndex");
        without_indexes.insert("Datacenter".into(), json!("dc1"));
        assert_eq!(Value::Object(without_indexes), own);
    }
}
