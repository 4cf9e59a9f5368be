//! Cluster-wide queries: `/v1/catalog/*`, `/v1/health/*` in Consul's shapes,
//! and Shoal's `/v1/shoal/pick/:service`. All support blocking queries.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_protocol::record::CheckStatus;

use super::{ApiError, ApiState, Query, blocking, consul_json};
use crate::catalog::{self, ServiceFilter};

fn service_filter(query: &Query) -> Result<ServiceFilter, ApiError> {
    let node_meta = query
        .all("node-meta")
        .into_iter()
        .map(|pair| {
            pair.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("node-meta: `{pair}` is not of the form key:value"),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(ServiceFilter {
        passing: query.flag("passing"),
        tags: query.all("tag").into_iter().map(str::to_string).collect(),
        node_meta,
    })
}

/// `GET /v1/catalog/services`
pub async fn services(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let service_tags = catalog::service_tags(&snapshot.members);
        Ok(consul_json::catalog_services(&service_tags))
    })
    .await
}

/// `GET /v1/catalog/service/:name`
pub async fn service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let filter = service_filter(&query)?;
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let entries = catalog::matching_instances(&snapshot.members, &name, &filter)
            .map(|(node, service)| consul_json::catalog_service(&node, service));
        Ok(Value::Array(entries.collect()))
    })
    .await
}

/// `GET /v1/catalog/nodes`
pub async fn nodes(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let nodes = catalog::nodes(&snapshot.members).map(|node| consul_json::node(&node));
        Ok(Value::Array(nodes.collect()))
    })
    .await
}

/// `GET /v1/health/service/:name`
pub async fn health_service(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let filter = service_filter(&query)?;
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let entries = catalog::matching_instances(&snapshot.members, &name, &filter)
            .map(|(node, service)| consul_json::health_service_entry(&node, service));
        Ok(Value::Array(entries.collect()))
    })
    .await
}

/// `GET /v1/health/checks/:service`
pub async fn health_checks(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let checks = catalog::service_checks(&snapshot.members, &name);
        Ok(Value::Array(
            checks.iter().map(consul_json::cluster_check).collect(),
        ))
    })
    .await
}

/// `GET /v1/health/state/:state`
pub async fn health_state(
    State(state): State<ApiState>,
    Path(wanted): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let wanted = match wanted.as_str() {
        "any" => None,
        text => Some(CheckStatus::parse(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state: `{wanted}` is not one of any, passing, warning, critical"),
            )
        })?),
    };
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let checks = catalog::all_checks(&snapshot.members)
            .into_iter()
            .filter(|found| wanted.is_none_or(|status| found.check.consul_status() == status));
        Ok(Value::Array(
            checks
                .map(|found| consul_json::cluster_check(&found))
                .collect(),
        ))
    })
    .await
}

/// `GET /v1/health/node/:node`
pub async fn health_node(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    blocking::respond(&state, &query, blocking::Watch::Cluster, |snapshot| {
        let checks = catalog::all_checks(&snapshot.members)
            .into_iter()
            .filter(|found| found.node.record.name == node);
        Ok(Value::Array(
            checks
                .map(|found| consul_json::cluster_check(&found))
                .collect(),
        ))
    })
    .await
}

/// `GET /v1/shoal/pick/:service[?tag=]`: one healthy instance at random
/// (degraded ones only when none is healthy); 404 when there is none.
pub async fn pick(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let filter = ServiceFilter {
        passing: false,
        ..service_filter(&query)?
    };
    let snapshot = state.snapshot();
    let picked =
        catalog::pick(&snapshot.members, &name, &filter, &mut rand::rng()).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no healthy instance of service `{name}`"),
            )
        })?;
    let (node, service) = (picked.node, picked.service);
    let body: Value = json!({
        "Node": node.record.name,
        "Address": node.service_address(service),
        "Port": service.port,
        "ServiceID": service.id,
        "Service": service.name,
        "Tags": service.tags,
        "Meta": service.meta,
        "Health": picked.health.as_str(),
    });
    Ok(Json(body).into_response())
}
