//! `/v1/coordinate/*` in Consul's shapes: the network coordinates this
//! agent holds (see `shoal_protocol::coordinate`). Every agent computes
//! its own from its probes and gossips it, so any agent answers for the
//! whole datacenter, as Consul's servers do.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_protocol::coordinate::Coordinate;

use super::blocking;
use super::{ApiError, ApiState, Query};
use crate::reads::Reads;

/// Consul's `Coord` object.
fn coord(coordinate: &Coordinate) -> Value {
    json!({
        "Vec": coordinate.vec,
        "Error": coordinate.error,
        "Adjustment": coordinate.adjustment,
        "Height": coordinate.height,
    })
}

fn entry(node: &str, coordinate: &Coordinate) -> Value {
    json!({ "Node": node, "Segment": "", "Partition": "default", "Coord": coord(coordinate) })
}

/// `GET /v1/coordinate/nodes`: every node's coordinate, by name.
pub async fn nodes(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let coordinates = state.status().coordinates.clone();
    blocking::respond(&state, &query, Reads::CLUSTER, move |_| {
        let all = coordinates.sorted();
        Ok(Value::Array(
            all.into_iter()
                .map(|(node, coordinate)| entry(node, coordinate))
                .collect(),
        ))
    })
    .await
}

/// `GET /v1/coordinate/node/:node`: that node's coordinate, in a list
/// (Consul's shape: one per network segment); 404 when it has none.
pub async fn node(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let coordinates = state.status().coordinates.clone();
    if coordinates.get(&node).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node `{node}` has no coordinate (unknown, or none arrived yet)"),
        ));
    }
    blocking::respond(&state, &query, Reads::CLUSTER, move |_| {
        Ok(Value::Array(
            coordinates
                .get(&node)
                .map(|coordinate| entry(&node, coordinate))
                .into_iter()
                .collect(),
        ))
    })
    .await
}

/// `GET /v1/coordinate/datacenters`: each datacenter's WAN members and
/// their WAN coordinates, nearest datacenter first, as Consul lists its
/// servers'. On an agent that is not a WAN member: ours, with none.
pub async fn datacenters(State(state): State<ApiState>) -> Response {
    let ours = &state.config.datacenter;
    let Some(wan) = &state.wan else {
        return axum::Json(json!([{
            "Datacenter": ours,
            "AreaID": "WAN",
            "Coordinates": [],
        }]))
        .into_response();
    };
    let all: Vec<Value> = wan
        .datacenters(ours)
        .into_iter()
        .map(|dc| {
            let coordinates: Vec<Value> = dc
                .members
                .iter()
                .filter_map(|(node, coordinate)| Some(entry(node, coordinate.as_ref()?)))
                .collect();
            json!({ "Datacenter": dc.name, "AreaID": "WAN", "Coordinates": coordinates })
        })
        .collect();
    axum::Json(Value::Array(all)).into_response()
}
