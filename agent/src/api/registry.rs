//! `/v1/agent/service*`, `/v1/agent/check*` and maintenance: this agent's
//! registry (`crate::registry`), in Consul's shapes. Writes are validated here,
//! in full, before anything is sent to the core loop, so a bad request
//! changes nothing.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use shoal_protocol::record::{CheckStatus, ServiceRecord, worst_status};

use super::filter::{self, Shape};
use super::{ApiError, ApiState, Query};
use crate::checks::CheckDefinition;
use crate::consul_json;
use crate::core_counters::CoreCounters;
use crate::registry::ServiceDefinition;
use crate::registry::keys::normalize;
use crate::snapshot::{CheckDetail, Snapshot};

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Parses a JSON body and normalizes its keys.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_request("request body is empty; expected a JSON object"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| bad_request(format!("request body is not valid JSON: {error}")))?;
    if !value.is_object() {
        return Err(bad_request("request body must be a JSON object"));
    }
    Ok(normalize(value))
}

/// `GET /v1/agent/services[?filter=]`: id → service.
pub async fn services(
    State(state): State<ApiState>,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let expression = filter::from_query(&query, Shape::AgentService)?;
    let snapshot = state.snapshot();
    let services: Map<String, Value> = snapshot
        .local
        .services
        .iter()
        .map(|s| {
            let json = consul_json::agent_service(s, &state.config.datacenter, None);
            (s.id.clone(), json)
        })
        .filter(|(_, json)| expression.as_ref().is_none_or(|e| e.matches(json)))
        .collect();
    Ok(Json(Value::Object(services)))
}

/// `GET /v1/agent/service/:id`
pub async fn service(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = state.snapshot();
    snapshot
        .local
        .services
        .iter()
        .find(|s| s.id == id)
        .map(|s| {
            Json(consul_json::agent_service(
                s,
                &state.config.datacenter,
                None,
            ))
        })
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown service `{id}`")))
}

/// `GET /v1/agent/checks[?filter=]`: id → check.
pub async fn checks(State(state): State<ApiState>, query: Query) -> Result<Json<Value>, ApiError> {
    let expression = filter::from_query(&query, Shape::AgentCheck)?;
    let status = state.status();
    let checks: Map<String, Value> = status
        .local_checks
        .iter()
        .map(|c| {
            let json = consul_json::agent_check(c, &state.config.node_name);
            (c.record.id.clone(), json)
        })
        .filter(|(_, json)| expression.as_ref().is_none_or(|e| e.matches(json)))
        .collect();
    Ok(Json(Value::Object(checks)))
}

/// Exec checks from the API need `enable_script_checks`, as in Consul:
/// anything that can reach the API could otherwise run any command as the
/// agent's user.
fn refuse_scripts(state: &ApiState, checks: &[CheckDefinition]) -> Result<(), ApiError> {
    match checks.iter().find(|check| check.runs_a_program()) {
        Some(check) if !state.config.enable_script_checks => Err(bad_request(format!(
            "check `{}`: exec checks (Args) registered through the HTTP API are disabled on this agent, as they run commands as the agent's user; start it with enable_script_checks = true (--enable-script-checks) to allow them",
            check.id
        ))),
        _ => Ok(()),
    }
}

/// `PUT /v1/agent/service/register`
pub async fn register_service(
    State(state): State<ApiState>,
    query: Query,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    // Shoal always replaces a re-registered service's checks, whatever
    // this says; a value that is not a boolean is still refused.
    query.bool("replace-existing-checks")?;
    let raw = json_body(&body)?;
    let definition = ServiceDefinition::parse(&raw, "").map_err(|e| bad_request(e.to_string()))?;
    refuse_scripts(&state, &definition.checks)?;
    state.agent.register_service(definition, Some(raw)).await?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/service/deregister/:id` (GET too, for old clients).
pub async fn deregister_service(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.agent.deregister_service(id).await?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/check/register`
pub async fn register_check(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let raw = json_body(&body)?;
    let service_id = raw
        .get("serviceid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let default_id = raw
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_default();
    let definition = CheckDefinition::parse(&raw, "", service_id.as_deref(), &default_id)
        .map_err(|e| bad_request(e.to_string()))?;
    refuse_scripts(&state, std::slice::from_ref(&definition))?;
    state.agent.register_check(definition, Some(raw)).await?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/check/deregister/:id` (GET too, for old clients).
pub async fn deregister_check(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.agent.deregister_check(id).await?;
    Ok(StatusCode::OK)
}

async fn ttl(
    state: &ApiState,
    id: String,
    status: CheckStatus,
    output: Option<String>,
) -> Result<StatusCode, ApiError> {
    state.agent.ttl_update(id, status, output).await?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/check/pass|warn|fail/:id?note=` (GET too, for old
/// clients): a TTL check reports its status; the note becomes its output.
pub async fn check_report(
    State(state): State<ApiState>,
    Path((verb, id)): Path<(String, String)>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    let status = match verb.as_str() {
        "pass" => CheckStatus::Passing,
        "warn" => CheckStatus::Warning,
        "fail" => CheckStatus::Critical,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: /v1/agent/check/{verb}/{id}"),
            ));
        }
    };
    ttl(&state, id, status, query.get("note").map(str::to_string)).await
}

/// `PUT /v1/agent/check/update/:id` with `{"Status": "...", "Output": "..."}`.
pub async fn check_update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let body = json_body(&body)?;
    for key in body.as_object().into_iter().flat_map(|o| o.keys()) {
        if key != "status" && key != "output" {
            return Err(bad_request(format!(
                "{key}: unknown field (expected Status and Output)"
            )));
        }
    }
    let status = body
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("Status: is required (passing, warning or critical)"))?;
    let status = CheckStatus::parse(status).ok_or_else(|| {
        bad_request(format!(
            "Status: `{status}` is not one of passing, warning, critical"
        ))
    })?;
    let output = match body.get("output") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(bad_request("Output: must be a string")),
    };
    ttl(&state, id, status, output).await
}

fn maintenance_reason(query: &Query) -> Result<Option<String>, ApiError> {
    // As Consul: `enable` is required and read as Go's ParseBool, so
    // Python clients' `enable=True` works.
    let enable = match query.get("enable") {
        None | Some("") => return Err(bad_request("enable: is required (true or false)")),
        Some(text) => super::parse_bool(text).ok_or_else(|| super::bad_bool("enable", text))?,
    };
    Ok(enable.then(|| {
        query
            .get("reason")
            .unwrap_or("Maintenance mode is enabled")
            .to_string()
    }))
}

/// `PUT /v1/agent/maintenance?enable=true|false&reason=`
pub async fn node_maintenance(
    State(state): State<ApiState>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    let reason = maintenance_reason(&query)?;
    state.agent.node_maintenance(reason).await?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true|false&reason=`
pub async fn service_maintenance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    let reason = maintenance_reason(&query)?;
    state.agent.service_maintenance(id, reason).await?;
    Ok(StatusCode::OK)
}

/// Local instances with their aggregated status, and the HTTP status
/// Consul answers with: 200 passing, 429 warning, 503 critical.
fn instance_health(
    state: &ApiState,
    (snapshot, details): (&Snapshot, &CoreCounters),
    matches: impl Fn(&ServiceRecord) -> bool,
) -> Option<(StatusCode, Value)> {
    let node_checks: Vec<&CheckDetail> = details
        .local_checks
        .iter()
        .filter(|c| c.service_id.is_none())
        .collect();
    let mut worst = CheckStatus::Passing;
    let mut entries = Vec::new();
    for service in snapshot.local.services.iter().filter(|s| matches(s)) {
        let checks: Vec<&CheckDetail> = node_checks
            .iter()
            .copied()
            .chain(
                details
                    .local_checks
                    .iter()
                    .filter(|c| c.service_id.as_deref() == Some(service.id.as_str())),
            )
            .collect();
        let mut records: Vec<_> = checks.iter().map(|c| c.record.clone()).collect();
        records.extend(
            service
                .checks
                .iter()
                .filter(|c| c.kind == "maintenance")
                .cloned(),
        );
        let status = worst_status(&records);
        worst = worst.max(status);
        entries.push(consul_json::agent_service_checks_info(
            status,
            service,
            &checks,
            &state.config.datacenter,
            &state.config.node_name,
        ));
    }
    if entries.is_empty() {
        return None;
    }
    let code = match worst {
        CheckStatus::Passing => StatusCode::OK,
        CheckStatus::Warning => StatusCode::TOO_MANY_REQUESTS,
        CheckStatus::Critical => StatusCode::SERVICE_UNAVAILABLE,
    };
    Some((code, Value::Array(entries)))
}

/// `GET /v1/agent/health/service/name/:name`
pub async fn health_by_name(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (snapshot, status) = (state.snapshot(), state.status());
    let (code, body) = instance_health(&state, (&snapshot, &status), |s| s.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no local service named `{name}`"),
            )
        })?;
    Ok((code, Json(body)).into_response())
}

/// `GET /v1/agent/health/service/id/:id`
pub async fn health_by_id(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (snapshot, status) = (state.snapshot(), state.status());
    let (code, body) = instance_health(&state, (&snapshot, &status), |s| s.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown service `{id}`")))?;
    let body = body
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    Ok((code, Json(body)).into_response())
}

/// For `/health/detailed`: every local check with its details.
pub fn detailed_checks(status: &CoreCounters) -> BTreeMap<String, Value> {
    status
        .local_checks
        .iter()
        .map(|c| {
            (
                c.record.id.clone(),
                json!({
                    "status": c.record.status.as_str(),
                    "critical": c.record.critical,
                    "type": c.record.kind,
                    "service_id": c.service_id,
                    "output": c.record.output,
                    "duration_ms": c.last_duration.map(|d| d.as_secs_f64() * 1000.0),
                    "last_run": c.last_run.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                }),
            )
        })
        .collect()
}
