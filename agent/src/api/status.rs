//! `/v1/status/*` and `/v1/agent/host`: the questions Consul clients ask
//! to see whether the cluster is up.
//!
//! Shoal has no leader. `/v1/status/leader` answers this agent's own
//! advertise address: the clients that call it (wait-for-Consul loops,
//! Spring Cloud Consul, health probes) only check that the answer is a
//! non-empty address, i.e. that the cluster can answer; none of them sends
//! anything to that address. An empty string, Consul's answer while an
//! election runs, would make them wait forever.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use shoal_protocol::MemberStatus;

use super::ApiState;

/// `GET /v1/status/leader`: `"ip:port"` of this agent.
pub async fn leader(State(state): State<ApiState>) -> Json<String> {
    Json(state.config.advertise.to_string())
}

/// `GET /v1/status/peers`: the gossip addresses of the alive members.
pub async fn peers(State(state): State<ApiState>) -> Json<Vec<String>> {
    let snapshot = state.snapshot();
    Json(
        snapshot
            .members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .map(|m| m.id.addr.to_string())
            .collect(),
    )
}

/// `GET /v1/agent/host`: the host, as Consul's `Host`/`CPU`/`Memory`
/// fields show it, from what the OS says cheaply.
pub async fn host() -> Json<Value> {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let uptime = sysinfo::System::uptime();
    Json(json!({
        "Host": {
            "hostname": gethostname::gethostname().to_string_lossy(),
            "uptime": uptime,
            "bootTime": sysinfo::System::boot_time(),
            "os": std::env::consts::OS,
            "platform": sysinfo::System::name().unwrap_or_default(),
            "platformVersion": sysinfo::System::os_version().unwrap_or_default(),
            "kernelVersion": sysinfo::System::kernel_version().unwrap_or_default(),
            "kernelArch": std::env::consts::ARCH,
        },
        "CPU": [{ "cores": std::thread::available_parallelism().map_or(1, |n| n.get()) }],
        "Memory": {
            "total": system.total_memory(),
            "available": system.available_memory(),
            "used": system.used_memory(),
        },
        "Disk": {},
        "CollectionTime": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        "Errors": [],
    }))
}
