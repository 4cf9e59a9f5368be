//! Cluster-wide queries: `/v1/catalog/*`, `/v1/health/*` in Consul's shapes,
//! and Shoal's `/v1/shoal/pick/:service`. All support blocking queries.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_protocol::record::CheckStatus;

use super::blocking::{self, Answer};
use super::filter::{self, Filter, Shape};
use super::{ApiError, ApiState, Query};
use std::sync::Arc;

use crate::catalog::{self, CatalogNode, ServiceFilter};
use crate::consul_json::{self, ServiceEntry};
use crate::coordinates::Near;
use crate::reads::Reads;
use crate::snapshot::Snapshot;

/// Answers a read of the cluster (a blocking query, see `api::blocking`)
/// with `compute`, given the request's `?filter=` over `shape` elements,
/// compiled on the filter pool.
async fn cluster_read<F, R>(
    state: &ApiState,
    query: &Query,
    shape: Shape,
    compute: F,
) -> Result<Response, ApiError>
where
    F: Fn(&Snapshot, Option<&Filter>) -> Result<R, ApiError> + Send + Sync + 'static,
    R: Into<Answer> + Send + 'static,
{
    let expression = filter::Source::from_query(query, shape);
    blocking::respond_filtered(state, query, Reads::CLUSTER, expression, compute).await
}

/// `?node-meta=key:value` (repeatable): nodes must carry every pair.
fn node_meta(query: &Query) -> Result<Vec<(String, String)>, ApiError> {
    query
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
        .collect()
}

/// `?near=NODE` (`_agent`: this agent): the estimated round trips to sort
/// the answer by, nearest first, when that node has a coordinate; Consul
/// leaves the answer unsorted otherwise, and so do we.
fn near(state: &ApiState, query: &Query) -> Option<Arc<Near>> {
    let node = query.get("near")?;
    state.status().coordinates.near(node).map(Arc::new)
}

fn service_filter(query: &Query) -> Result<ServiceFilter, ApiError> {
    let node_meta = node_meta(query)?;
    Ok(ServiceFilter {
        passing: query.bool("passing")?,
        tags: query.all("tag").into_iter().map(str::to_string).collect(),
        node_meta,
    })
}

/// `GET /v1/catalog/services`
pub async fn services(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let node_meta = node_meta(&query)?;
    // Consul filters the instances (as `/v1/catalog/service/:name` shows
    // them), then lists what is left.
    cluster_read(
        &state,
        &query,
        Shape::CatalogService,
        move |snapshot, expression| {
            let mut service_tags = catalog::service_tags(&snapshot.members, &node_meta);
            if let Some(expression) = expression {
                service_tags.clear();
                for node in catalog::nodes(&snapshot.members) {
                    if !catalog::has_meta(&node, &node_meta) {
                        continue;
                    }
                    for service in &node.record.services {
                        if expression.matches(&consul_json::catalog_service(&node, service)) {
                            service_tags
                                .entry(service.name.as_str())
                                .or_default()
                                .extend(service.tags.iter().map(String::as_str));
                        }
                    }
                }
            }
            Ok(consul_json::catalog_services(&service_tags))
        },
    )
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
    let near = near(&state, &query);
    cluster_read(
        &state,
        &query,
        Shape::CatalogService,
        move |snapshot, expression| {
            let mut instances: Vec<_> =
                catalog::matching_instances(&snapshot.members, &name, &filter).collect();
            if let Some(near) = &near {
                near.sort(&mut instances, |(node, _)| node.record.name.as_str());
            }
            let entries = instances
                .iter()
                .map(|(node, service)| consul_json::catalog_service(node, service));
            Ok(Value::Array(filter::apply(expression, entries.collect())))
        },
    )
    .await
}

/// `GET /v1/catalog/nodes`
pub async fn nodes(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let node_meta = node_meta(&query)?;
    let near = near(&state, &query);
    cluster_read(&state, &query, Shape::Node, move |snapshot, expression| {
        let mut nodes: Vec<_> = catalog::nodes(&snapshot.members)
            .filter(|node| catalog::has_meta(node, &node_meta))
            .collect();
        if let Some(near) = &near {
            near.sort(&mut nodes, |node| node.record.name.as_str());
        }
        let nodes = nodes.iter().map(consul_json::node);
        Ok(Value::Array(filter::apply(expression, nodes.collect())))
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
    let near = near(&state, &query);
    cluster_read(
        &state,
        &query,
        Shape::ServiceEntry,
        move |snapshot, expression| {
            let mut entries: Vec<_> =
                catalog::matching_instances(&snapshot.members, &name, &filter)
                    .map(|(node, service)| ServiceEntry { node, service })
                    .collect();
            if let Some(near) = &near {
                near.sort(&mut entries, |entry| entry.node.record.name.as_str());
            }
            match expression {
                // The hot lookup: straight to bytes, no tree.
                None => Answer::serialize(&entries),
                Some(expression) => {
                    let entries = entries
                        .iter()
                        .map(|entry| consul_json::health_service_entry(&entry.node, entry.service));
                    Ok(Value::Array(filter::apply(Some(expression), entries.collect())).into())
                }
            }
        },
    )
    .await
}

/// `GET /v1/health/checks/:service`
pub async fn health_checks(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let node_meta = node_meta(&query)?;
    let near = near(&state, &query);
    cluster_read(
        &state,
        &query,
        Shape::HealthCheck,
        move |snapshot, expression| {
            let mut checks: Vec<_> = catalog::service_checks(&snapshot.members, &name)
                .into_iter()
                .filter(|found| catalog::has_meta(&found.node, &node_meta))
                .collect();
            if let Some(near) = &near {
                near.sort(&mut checks, |found| found.node.record.name.as_str());
            }
            let checks = checks.iter();
            Ok(Value::Array(filter::apply(
                expression,
                checks
                    .map(|found| consul_json::cluster_check(found))
                    .collect(),
            )))
        },
    )
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
    let node_meta = node_meta(&query)?;
    let near = near(&state, &query);
    cluster_read(
        &state,
        &query,
        Shape::HealthCheck,
        move |snapshot, expression| {
            let mut checks: Vec<_> = catalog::all_checks(&snapshot.members)
                .into_iter()
                .filter(|found| wanted.is_none_or(|status| found.check.consul_status() == status))
                .filter(|found| catalog::has_meta(&found.node, &node_meta))
                .collect();
            if let Some(near) = &near {
                near.sort(&mut checks, |found| found.node.record.name.as_str());
            }
            let checks = checks.iter();
            Ok(Value::Array(filter::apply(
                expression,
                checks
                    .map(|found| consul_json::cluster_check(found))
                    .collect(),
            )))
        },
    )
    .await
}

/// `GET /v1/health/node/:node`
pub async fn health_node(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    cluster_read(
        &state,
        &query,
        Shape::HealthCheck,
        move |snapshot, expression| {
            let checks = catalog::all_checks(&snapshot.members)
                .into_iter()
                .filter(|found| found.node.record.name == node);
            Ok(Value::Array(filter::apply(
                expression,
                checks
                    .map(|found| consul_json::cluster_check(&found))
                    .collect(),
            )))
        },
    )
    .await
}

/// The catalog node named `name` (Consul also accepts the node ID).
fn find_node<'a>(members: &'a [shoal_protocol::MemberView], name: &str) -> Option<CatalogNode<'a>> {
    catalog::nodes(members)
        .find(|node| node.record.name == name || node.record.node_id() == Some(name))
}

/// `GET /v1/catalog/node/:node`: `{Node, Services}` with the services by
/// ID; `null` for a node not in the catalog, as Consul answers.
pub async fn node(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    cluster_read(
        &state,
        &query,
        Shape::AgentService,
        move |snapshot, expression| {
            Ok(
                find_node(&snapshot.members, &name).map_or(Value::Null, |node| {
                    let services: serde_json::Map<String, Value> = node
                        .record
                        .services
                        .iter()
                        .map(|service| (service.id.clone(), catalog_node_service(&node, service)))
                        .filter(|(_, json)| expression.is_none_or(|e| e.matches(json)))
                        .collect();
                    json!({ "Node": consul_json::node(&node), "Services": services })
                }),
            )
        },
    )
    .await
}

/// `GET /v1/catalog/node-services/:node`: `{Node, Services}` with the
/// services in a list; `null` for a node not in the catalog.
pub async fn node_services(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    cluster_read(
        &state,
        &query,
        Shape::AgentService,
        move |snapshot, expression| {
            Ok(
                find_node(&snapshot.members, &name).map_or(Value::Null, |node| {
                    let services = node
                        .record
                        .services
                        .iter()
                        .map(|service| catalog_node_service(&node, service))
                        .collect();
                    json!({
                        "Node": consul_json::node(&node),
                        "Services": filter::apply(expression, services),
                    })
                }),
            )
        },
    )
    .await
}

fn catalog_node_service(node: &CatalogNode<'_>, service: &shoal_protocol::ServiceRecord) -> Value {
    consul_json::agent_service(service, &node.record.datacenter, Some(node.record.version))
}

/// `GET /v1/catalog/datacenters`: ours first, then the other
/// datacenters nearest first, as Consul sorts them. A WAN member knows
/// them from its WAN pool; another agent asks a WAN member of its
/// datacenter, and without one lists the datacenters its own members
/// say they are in.
pub async fn datacenters(State(state): State<ApiState>) -> Response {
    let ours = state.config.datacenter.clone();
    if let Some(wan) = &state.wan {
        let all: Vec<String> = wan
            .datacenters(&ours)
            .into_iter()
            .map(|dc| dc.name)
            .collect();
        return Json(json!(all)).into_response();
    }
    let asked = shoal_protocol::forward::ForwardRequest {
        datacenter: ours.clone(),
        query: shoal_protocol::forward::ForwardQuery::Http {
            path: "/v1/catalog/datacenters".into(),
            token: None,
        },
        hops: 0,
    };
    // A WAN member of ours answers at once, or the list is ours alone.
    if let Ok(answer) = state
        .forwarder
        .forward(asked, std::time::Duration::from_secs(2))
        .await
        && answer.status == 200
        && let Ok(all) = serde_json::from_slice::<Vec<String>>(&answer.body)
    {
        return Json(json!(all)).into_response();
    }
    let snapshot = state.snapshot();
    let mut others: Vec<&str> = catalog::nodes(&snapshot.members)
        .map(|node| node.record.datacenter.as_str())
        .filter(|dc| !dc.is_empty() && *dc != ours)
        .collect();
    others.sort_unstable();
    others.dedup();
    let mut all = vec![ours.as_str()];
    all.extend(others);
    Json(json!(all)).into_response()
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
        "Meta": service.user_meta(),
        "Health": picked.health.as_str(),
    });
    Ok(Json(body).into_response())
}
