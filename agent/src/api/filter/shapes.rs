//! One example of each element type a filter runs over, made by the same
//! `consul_json` functions that answer the endpoints, so the selectors a
//! filter may use are exactly the fields the endpoint shows.

use std::collections::BTreeMap;

use serde_json::Value;
use shoal_protocol::record::{NODE_ID_TAG, TAGGED_ADDRESS_PREFIX};
use shoal_protocol::{
    CheckRecord, CheckStatus, MemberStatus, MemberView, NodeId, NodeRecord, ServiceRecord,
};

use crate::catalog::CatalogNode;
use crate::consul_json;
use crate::snapshot::CheckDetail;

/// The element types of the endpoints that take `?filter=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/agent/services` (each value of the map).
    AgentService,
    /// `/v1/agent/checks` (each value of the map).
    AgentCheck,
    /// `/v1/catalog/service/:name`.
    CatalogService,
    /// `/v1/catalog/nodes`.
    Node,
    /// `/v1/health/service/:name`.
    ServiceEntry,
    /// `/v1/health/checks/:name`, `/v1/health/node/:node`,
    /// `/v1/health/state/:state`.
    HealthCheck,
}

impl Shape {
    /// An element with every field filled in (lists with one element).
    pub fn sample(self) -> Value {
        let check = CheckRecord {
            id: "c".into(),
            name: "c".into(),
            kind: "ttl".into(),
            status: CheckStatus::Passing,
            critical: true,
            notes: String::new(),
            output: String::new(),
        };
        let service = ServiceRecord {
            id: "s".into(),
            name: "s".into(),
            address: String::new(),
            port: 1,
            tags: vec!["t".into()],
            meta: BTreeMap::from([
                ("k".into(), "v".into()),
                (format!("{TAGGED_ADDRESS_PREFIX}lan"), "127.0.0.1:1".into()),
            ]),
            checks: vec![check.clone()],
        };
        let id = NodeId::seed("127.0.0.1:1".parse().expect("a socket address"));
        let mut record = NodeRecord::new(id, "n");
        record.tags = BTreeMap::from([
            ("k".into(), "v".into()),
            (NODE_ID_TAG.into(), String::new()),
        ]);
        record.services = vec![service.clone()];
        let member = MemberView {
            id,
            status: MemberStatus::Alive,
            record: Some(record.clone()),
        };
        let node = CatalogNode {
            member: &member,
            record: &record,
        };
        match self {
            Shape::AgentService => consul_json::agent_service(&service, "dc", None),
            Shape::AgentCheck => consul_json::agent_check(
                &CheckDetail {
                    record: check,
                    service_id: Some("s".into()),
                    service_name: "s".into(),
                    service_tags: vec!["t".into()],
                    interval: None,
                    timeout: None,
                    last_run: None,
                    last_duration: None,
                },
                "n",
            ),
            Shape::CatalogService => consul_json::catalog_service(&node, &service),
            Shape::Node => consul_json::node(&node),
            Shape::ServiceEntry => consul_json::health_service_entry(&node, &service),
            Shape::HealthCheck => consul_json::health_check(&node, &check, Some(&service)),
        }
    }
}
