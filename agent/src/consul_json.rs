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
    to_value(&NodeJson::new(node))
}

/// The fields `Node` and `CatalogService` share: where the node is, and
/// the indexes of its record (a `Node` without its `Meta`).
fn node_fields(node: &CatalogNode<'_>) -> Value {
    let mut value = self::node(node);
    if let Value::Object(fields) = &mut value {
        fields.remove("Meta");
    }
    value
}

/// A shape serialized into a tree. Serializing these structs cannot fail
/// (string keys, no floats, nothing fallible).
fn to_value(shape: &impl Serialize) -> Value {
    serde_json::to_value(shape).expect("Consul shapes serialize")
}

// The shapes as structs, serialized straight to bytes where no `?filter=`
// needs a tree (see `ServiceEntry`). Fields are declared in the order of
// their JSON names, as a tree's map sorts them, so both ways give the same
// bytes (tested below).

/// `Node`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeJson<'a> {
    address: String,
    create_index: u64,
    datacenter: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    meta: BTreeMap<&'a str, &'a str>,
    modify_index: u64,
    node: &'a str,
    tagged_addresses: LanWan,
}

#[derive(Serialize)]
struct LanWan {
    lan: String,
    wan: String,
}

impl<'a> NodeJson<'a> {
    fn new(node: &CatalogNode<'a>) -> Self {
        let address = node.address();
        NodeJson {
            tagged_addresses: LanWan {
                lan: address.clone(),
                wan: address.clone(),
            },
            address,
            create_index: CREATE_INDEX,
            datacenter: &node.record.datacenter,
            id: node.record.node_id().unwrap_or_default(),
            meta: node.record.user_tags(),
            modify_index: node.record.version,
            node: &node.record.name,
        }
    }
}

/// `AgentService`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceJson<'a> {
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_index: Option<u64>,
    datacenter: &'a str,
    enable_tag_override: bool,
    #[serde(rename = "ID")]
    id: &'a str,
    meta: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modify_index: Option<u64>,
    port: u16,
    service: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tagged_addresses: BTreeMap<&'a str, AddressPort<'a>>,
    tags: &'a [String],
    weights: Weights,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AddressPort<'a> {
    address: &'a str,
    port: u16,
}

/// Consul's default weights: Shoal does not weigh instances.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u8,
    warning: u8,
}

impl<'a> AgentServiceJson<'a> {
    fn new(service: &'a ServiceRecord, datacenter: &'a str, modify_index: Option<u64>) -> Self {
        AgentServiceJson {
            address: &service.address,
            create_index: modify_index.map(|_| CREATE_INDEX),
            datacenter,
            enable_tag_override: false,
            id: &service.id,
            meta: service.user_meta(),
            modify_index,
            port: service.port,
            service: &service.name,
            tagged_addresses: tagged(service),
            tags: &service.tags,
            weights: Weights {
                passing: 1,
                warning: 1,
            },
        }
    }
}

/// `HealthCheck`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HealthCheckJson<'a> {
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    create_index: u64,
    critical: bool,
    definition: Empty,
    modify_index: u64,
    name: &'a str,
    node: &'a str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    status: &'static str,
    #[serde(rename = "Type")]
    kind: &'a str,
}

/// `{}`.
#[derive(Serialize)]
struct Empty {}

impl<'a> HealthCheckJson<'a> {
    fn new(
        node: &CatalogNode<'a>,
        check: &'a CheckRecord,
        service: Option<&'a ServiceRecord>,
    ) -> Self {
        HealthCheckJson {
            check_id: &check.id,
            create_index: CREATE_INDEX,
            critical: check.critical,
            definition: Empty {},
            modify_index: node.record.version,
            name: &check.name,
            node: &node.record.name,
            notes: &check.notes,
            output: &check.output,
            service_id: service.map_or("", |s| s.id.as_str()),
            service_name: service.map_or("", |s| s.name.as_str()),
            service_tags: service.map_or(&[], |s| s.tags.as_slice()),
            status: check.consul_status().as_str(),
            kind: &check.kind,
        }
    }
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
    to_value(&AgentServiceJson::new(service, datacenter, modify_index))
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
    let tagged = tagged(service);
    (!tagged.is_empty()).then(|| to_value(&tagged))
}

fn tagged(service: &ServiceRecord) -> BTreeMap<&str, AddressPort<'_>> {
    service
        .tagged_addresses()
        .into_iter()
        .map(|(name, (address, port))| (name, AddressPort { address, port }))
        .collect()
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
    to_value(&HealthCheckJson::new(node, check, service))
}

/// [`health_check`] of a check found by a cluster-wide query.
pub fn cluster_check(check: &ClusterCheck<'_>) -> Value {
    health_check(&check.node, &check.check, check.service)
}

/// `ServiceEntry` (`/v1/health/service/:name`): the node, the service and
/// every check that applies to it, node checks first.
pub fn health_service_entry(node: &CatalogNode<'_>, service: &ServiceRecord) -> Value {
    to_value(&ServiceEntry {
        node: *node,
        service,
    })
}

/// A `ServiceEntry` that serializes straight from the records: a lookup
/// without `?filter=` writes its bytes with no tree of maps and strings in
/// between (most of the CPU of a lookup the cache cannot answer).
#[derive(Clone, Copy)]
pub struct ServiceEntry<'a> {
    pub node: CatalogNode<'a>,
    pub service: &'a ServiceRecord,
}

impl Serialize for ServiceEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct ServiceEntryJson<'a> {
            checks: Vec<HealthCheckJson<'a>>,
            node: NodeJson<'a>,
            service: AgentServiceJson<'a>,
        }
        let (node, service) = (&self.node, self.service);
        // serfHealth is made on the fly: the entry's checks borrow it.
        let node_checks = node.node_checks();
        let checks = node_checks
            .iter()
            .map(|check| HealthCheckJson::new(node, check, None))
            .chain(
                service
                    .checks
                    .iter()
                    .map(|check| HealthCheckJson::new(node, check, Some(service))),
            )
            .collect();
        ServiceEntryJson {
            checks,
            node: NodeJson::new(node),
            service: AgentServiceJson::new(
                service,
                &node.record.datacenter,
                Some(node.record.version),
            ),
        }
        .serialize(serializer)
    }
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

    /// A member with everything a `ServiceEntry` shows: reserved and user
    /// tags, a node check, a service with meta, tagged addresses, an own
    /// address and checks of each kind.
    fn busy_member(status: shoal_protocol::MemberStatus) -> MemberView {
        use shoal_protocol::record::{NODE_ID_TAG, NodeRecord, TAGGED_ADDRESS_PREFIX};
        let id = shoal_protocol::NodeId {
            addr: "127.0.0.9:7946".parse().unwrap(),
            generation: 3,
        };
        let mut record = NodeRecord::new(id, "node-9");
        record.version = 42;
        record.datacenter = "dc-east".into();
        record.tags.insert(NODE_ID_TAG.into(), "6c1f-uuid".into());
        record.tags.insert("rack".into(), "r1 \"quoted\"".into());
        let check = |id: &str, status, critical| CheckRecord {
            id: id.into(),
            name: format!("{id} name"),
            kind: "http".into(),
            status,
            critical,
            notes: "notes ü".into(),
            output: "HTTP GET: 200 OK\n".into(),
        };
        record
            .checks
            .push(check("disk", CheckStatus::Warning, true));
        let mut service = web();
        service.address = "10.0.0.9".into();
        service.tags.push("tag with space".into());
        service.meta.insert("version".into(), "1.2".into());
        service.meta.insert(
            format!("{TAGGED_ADDRESS_PREFIX}wan"),
            "203.0.113.9:8443".into(),
        );
        service.checks = vec![
            check("http", CheckStatus::Passing, true),
            check("soft", CheckStatus::Critical, false),
        ];
        record.services = vec![service, web()];
        MemberView {
            id,
            status,
            record: Some(record),
        }
    }

    #[test]
    fn a_service_entry_serialized_straight_is_byte_for_byte_its_tree() {
        use shoal_protocol::MemberStatus;
        for status in [MemberStatus::Alive, MemberStatus::Failed] {
            let member = busy_member(status);
            let record = member.record.as_ref().unwrap();
            let node = CatalogNode {
                member: &member,
                record,
            };
            for service in &record.services {
                let entry = ServiceEntry { node, service };
                let straight = serde_json::to_string(&entry).unwrap();
                let tree = health_service_entry(&node, service);
                // The tree sorts its keys: same bytes, so the cache, the
                // blocking queries' fingerprints and clients see no change.
                assert_eq!(straight, serde_json::to_string(&tree).unwrap());
                assert_eq!(tree["Node"]["Meta"], json!({ "rack": "r1 \"quoted\"" }));
                assert_eq!(tree["Node"]["TaggedAddresses"]["wan"], "127.0.0.9");
                assert_eq!(tree["Node"]["ID"], "6c1f-uuid");
                assert_eq!(tree["Checks"][0]["CheckID"], "serfHealth");
                assert_eq!(tree["Checks"][1]["CheckID"], "disk");
                assert_eq!(tree["Checks"][0]["Definition"], json!({}));
            }
            let tree = health_service_entry(&node, &record.services[0]);
            assert_eq!(
                tree["Service"]["TaggedAddresses"],
                json!({ "wan": { "Address": "203.0.113.9", "Port": 8443 } })
            );
            assert_eq!(tree["Service"]["Meta"], json!({ "version": "1.2" }));
            assert_eq!(tree["Checks"][3]["Status"], "warning");
            assert_eq!(
                tree["Checks"][3]["ServiceTags"],
                json!(["v1", "tag with space"])
            );
            let plain = health_service_entry(&node, &record.services[1]);
            assert!(plain["Service"].get("TaggedAddresses").is_none());
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
