//! Cluster-wide queries: `/v1/catalog/*`, `/v1/health/*` in Consul's shapes,
//! and Shoal's `/v1/shoal/pick/:service`. All support blocking queries.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_protocol::record::Health;

use super::{ApiError, ApiState, Query, blocking};
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
    blocking::respond(&state, &query, |snapshot| {
        Ok(catalog::catalog_services(snapshot))
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
    blocking::respond(&state, &query, |snapshot| {
        Ok(catalog::catalog_service(snapshot, &name, &filter))
    })
    .await
}

/// `GET /v1/catalog/nodes`
pub async fn nodes(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    blocking::respond(&state, &query, |snapshot| {
        Ok(catalog::catalog_nodes(snapshot))
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
    blocking::respond(&state, &query, |snapshot| {
        Ok(catalog::health_service(snapshot, &name, &filter))
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
    blocking::respond(&state, &query, |snapshot| {
        Ok(catalog::health_checks(snapshot, &name))
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
    blocking::respond(&state, &query, |snapshot| {
        catalog::health_state(snapshot, &wanted).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state: `{wanted}` is not one of any, passing, warning, critical"),
            )
        })
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
    blocking::respond(&state, &query, |snapshot| {
        Ok(catalog::health_node(snapshot, &node))
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
    let candidates: Vec<_> = catalog::instances(&snapshot, &name)
        .filter(|(node, service)| filter.matches(node, service))
        .map(|(node, service)| (catalog::instance_health(&node, service), node, service))
        .filter(|(health, _, _)| *health != Health::Unhealthy)
        .collect();
    let best = candidates.iter().map(|(health, _, _)| *health).min();
    let pool: Vec<_> = candidates
        .iter()
        .filter(|(health, _, _)| Some(*health) == best)
        .collect();
    if pool.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no healthy instance of service `{name}`"),
        ));
    }
    let (health, node, service) = pool[random_index(pool.len())];
    let body: Value = json!({
        "Node": node.record.name,
        "Address": node.service_address(service),
        "Port": service.port,
        "ServiceID": service.id,
        "Service": service.name,
        "Tags": service.tags,
        "Meta": service.meta,
        "Health": health.as_str(),
    });
    Ok(Json(body).into_response())
}

/// A cheap random index (no RNG state to share between requests).
fn random_index(len: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (hasher.finish() % len as u64) as usize
}
