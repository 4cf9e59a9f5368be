//! `GET /v1/internal/ui/services`: one line per service for the UI's
//! services page, at Consul's path and with its field names (`Name`,
//! `Tags`, `Nodes`, `InstanceCount`, `ChecksPassing`, `ChecksWarning`,
//! `ChecksCritical`), plus Shoal's instance counts by worst check
//! (`InstancesPassing`, `InstancesWarning`, `InstancesCritical`) and
//! `InstancesInMaintenance`. Blocking queries work as on the catalog.
//!
//! One query instead of one `/v1/health/service/:name` per service: the
//! page stays one blocking query however many services there are.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};
use shoal_protocol::record::{CheckStatus, worst_status};

use crate::api::{ApiError, ApiState, Query, blocking};
use crate::catalog;
use crate::reads::Reads;

#[derive(Default)]
struct Summary<'a> {
    tags: BTreeSet<&'a str>,
    nodes: BTreeSet<&'a str>,
    instances: usize,
    checks: [usize; 3],
    by_worst: [usize; 3],
    in_maintenance: usize,
}

fn slot(status: CheckStatus) -> usize {
    match status {
        CheckStatus::Passing => 0,
        CheckStatus::Warning => 1,
        CheckStatus::Critical => 2,
    }
}

/// Whether a check is one of the maintenance checks Shoal adds.
fn is_maintenance(id: &str) -> bool {
    id == "_node_maintenance" || id.starts_with("_service_maintenance:")
}

/// The summary of every service in `snapshot`'s catalog.
pub fn summary(members: &[shoal_protocol::MemberView]) -> Value {
    let mut services: BTreeMap<&str, Summary> = BTreeMap::new();
    for node in catalog::nodes(members) {
        for service in &node.record.services {
            let entry = services.entry(service.name.as_str()).or_default();
            entry.tags.extend(service.tags.iter().map(String::as_str));
            entry.nodes.insert(node.record.name.as_str());
            entry.instances += 1;
            let checks = node.service_checks(service);
            for check in &checks {
                entry.checks[slot(check.status)] += 1;
            }
            entry.by_worst[slot(worst_status(&checks))] += 1;
            if checks.iter().any(|check| is_maintenance(&check.id)) {
                entry.in_maintenance += 1;
            }
        }
    }
    Value::Array(
        services
            .into_iter()
            .map(|(name, s)| {
                json!({
                    "Name": name,
                    "Tags": s.tags,
                    "Nodes": s.nodes,
                    "InstanceCount": s.instances,
                    "ChecksPassing": s.checks[0],
                    "ChecksWarning": s.checks[1],
                    "ChecksCritical": s.checks[2],
                    "InstancesPassing": s.by_worst[0],
                    "InstancesWarning": s.by_worst[1],
                    "InstancesCritical": s.by_worst[2],
                    "InstancesInMaintenance": s.in_maintenance,
                })
            })
            .collect(),
    )
}

/// `GET /v1/internal/ui/services`
pub async fn services(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    blocking::respond(&state, &query, Reads::CLUSTER, |snapshot| {
        Ok(summary(&snapshot.members))
    })
    .await
}
