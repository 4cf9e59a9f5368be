//! `GET /v1/shoal/prometheus/targets`: the catalog's service instances in
//! Prometheus's `http_sd` format, for `http_sd_configs` (Debian's
//! Prometheus is built without `consul_sd`).
//!
//! One target group per instance: `targets` is `["address:port"]`, and the
//! labels follow `consul_sd`'s with `shoal` for `consul`:
//! `__meta_shoal_service`, `__meta_shoal_service_id`,
//! `__meta_shoal_service_address`, `__meta_shoal_service_port`,
//! `__meta_shoal_node`, `__meta_shoal_address` (the node's),
//! `__meta_shoal_tags` (`,a,b,`: every tag between commas, so a relabel
//! regex `.*,a,.*` matches one), `__meta_shoal_health` (`passing`,
//! `warning` or `critical`: the worst of the instance's checks, the
//! node's included), `__meta_shoal_dc`, and one label per meta key,
//! `__meta_shoal_service_meta_<key>` and `__meta_shoal_node_meta_<key>`,
//! with every character of the key that a label name can't hold turned
//! into `_` (as `consul_sd` does).
//!
//! `?service=` (repeatable) keeps those services, `?tag=` (repeatable)
//! instances with every tag, `?passing` instances whose every check passes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use shoal_protocol::record::worst_status;

use super::{ApiError, ApiState, Query};
use crate::catalog::{self, CatalogNode, ServiceFilter};

/// One `http_sd` target group.
#[derive(Debug, Serialize, PartialEq)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `GET /v1/shoal/prometheus/targets`
pub async fn targets(
    State(state): State<ApiState>,
    query: Query,
) -> Result<Json<Vec<TargetGroup>>, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let filter = ServiceFilter {
        passing: query.bool("passing")?,
        tags: query.all("tag").into_iter().map(String::from).collect(),
        node_meta: Vec::new(),
    };
    let services = query.all("service");
    let snapshot = state.snapshot();
    let mut groups = Vec::new();
    for node in catalog::nodes(&snapshot.members) {
        for service in &node.record.services {
            if !services.is_empty() && !services.contains(&service.name.as_str()) {
                continue;
            }
            if filter.matches(&node, service) {
                groups.push(group(&node, service));
            }
        }
    }
    groups.sort_by(|a, b| {
        let key = |g: &TargetGroup| {
            (
                g.labels["__meta_shoal_service"].clone(),
                g.labels["__meta_shoal_node"].clone(),
                g.labels["__meta_shoal_service_id"].clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    Ok(Json(groups))
}

fn group(node: &CatalogNode<'_>, service: &shoal_protocol::ServiceRecord) -> TargetGroup {
    let address = node.service_address(service);
    let target = match address.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, service.port).to_string(),
        Err(_) => format!("{address}:{}", service.port),
    };
    let mut labels = BTreeMap::new();
    let mut label = |name: &str, value: &str| {
        labels
            .entry(format!("__meta_shoal_{name}"))
            .or_insert_with(|| value.to_string());
    };
    label("service", &service.name);
    label("service_id", &service.id);
    label("service_address", &address);
    label("service_port", &service.port.to_string());
    label("node", &node.record.name);
    label("address", &node.address());
    label("dc", &node.record.datacenter);
    let tags = if service.tags.is_empty() {
        String::new()
    } else {
        format!(",{},", service.tags.join(","))
    };
    label("tags", &tags);
    label(
        "health",
        worst_status(&node.service_checks(service)).as_str(),
    );
    for (key, value) in &service.meta {
        label(&format!("service_meta_{}", sanitize(key)), value);
    }
    for (key, value) in &node.record.tags {
        label(&format!("node_meta_{}", sanitize(key)), value);
    }
    TargetGroup {
        targets: vec![target],
        labels,
    }
}

/// A meta key as part of a label name: every character but ASCII letters,
/// digits and `_` becomes `_` (Prometheus's `SanitizeLabelName`).
pub fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_keys_become_valid_label_names() {
        assert_eq!(sanitize("version"), "version");
        assert_eq!(sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(sanitize("région-1"), "r_gion_1");
        let label = regex::Regex::new("^[a-zA-Z_][a-zA-Z0-9_]*$").unwrap();
        for key in ["", "9lives", "a b", "ü", "x:y"] {
            let name = format!("__meta_shoal_service_meta_{}", sanitize(key));
            assert!(label.is_match(&name), "{name}");
        }
    }
}
