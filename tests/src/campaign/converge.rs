//! After the heal: invariant (a), every agent converges to the same
//! members, KV map and catalog within a bound, and invariant (b), the
//! final KV values and registrations are ones the history allows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::AGENTS;
use super::client::{base64_decode, call};
use super::history::Op;
use super::verdict::check_final;
use super::workload::FLAG_PREFIX;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What one agent shows at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalView {
    /// `(name, Consul status)`, newest generation of each name.
    pub members: BTreeMap<String, u64>,
    /// Every KV entry: key to `(flags, value)`.
    pub kv: BTreeMap<String, (u64, String)>,
    /// One line per catalog node, service instance and check.
    pub catalog: BTreeSet<String>,
    /// Service instances: `service:<node>/<id>` to the instance's `op-` tag.
    pub services: BTreeMap<String, String>,
}

fn get(addr: SocketAddr, path: &str) -> Result<Value, String> {
    match call("GET", addr, path, None, READ_TIMEOUT) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => Err(format!("GET {path}: HTTP {status}: {body}")),
        Err(error) => Err(format!("GET {path}: {error}")),
    }
}

/// Reads one agent's members, KV and catalog.
pub fn read_view(addr: SocketAddr) -> Result<FinalView, String> {
    let mut members = BTreeMap::new();
    let mut generations = BTreeMap::new();
    for member in get(addr, "/v1/agent/members")?
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = member["Name"].as_str().unwrap_or_default().to_string();
        let generation = member["Generation"].as_u64().unwrap_or_default();
        if generations
            .get(&name)
            .is_none_or(|&seen| generation >= seen)
        {
            generations.insert(name.clone(), generation);
            members.insert(name, member["Status"].as_u64().unwrap_or_default());
        }
    }
    let mut kv = BTreeMap::new();
    let entries = match call("GET", addr, "/v1/kv/?recurse", None, READ_TIMEOUT) {
        Ok((200, body)) => body,
        Ok((404, _)) => Value::Array(Vec::new()),
        Ok((status, body)) => return Err(format!("KV listing: HTTP {status}: {body}")),
        Err(error) => return Err(format!("KV listing: {error}")),
    };
    for entry in entries.as_array().into_iter().flatten() {
        let key = entry["Key"].as_str().unwrap_or_default().to_string();
        let value = match entry["Value"].as_str() {
            Some(encoded) => base64_decode(encoded)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .ok_or_else(|| format!("KV {key}: value is not base64: {encoded}"))?,
            None => String::new(),
        };
        kv.insert(key, (entry["Flags"].as_u64().unwrap_or_default(), value));
    }
    let mut catalog = BTreeSet::new();
    let mut services = BTreeMap::new();
    for node in get(addr, "/v1/catalog/nodes")?
        .as_array()
        .into_iter()
        .flatten()
    {
        catalog.insert(format!(
            "node {} version {}",
            node["Node"], node["ModifyIndex"]
        ));
    }
    let names = get(addr, "/v1/catalog/services")?;
    for name in names
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, _)| name)
    {
        for entry in get(addr, &format!("/v1/health/service/{name}"))?
            .as_array()
            .into_iter()
            .flatten()
        {
            let node = entry["Node"]["Node"].as_str().unwrap_or_default();
            let service = &entry["Service"];
            let id = service["ID"].as_str().unwrap_or_default();
            let checks: Vec<String> = entry["Checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}={}", c["CheckID"], c["Status"]))
                .collect();
            catalog.insert(format!(
                "service {node}/{id} name {} port {} tags {} checks {}",
                service["Service"],
                service["Port"],
                service["Tags"],
                checks.join(",")
            ));
            let marker = service["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|tag| tag.starts_with("op-"))
                .unwrap_or("(no op- tag)");
            services.insert(format!("service:{node}/{id}"), marker.to_string());
        }
    }
    Ok(FinalView {
        members,
        kv,
        catalog,
        services,
    })
}

/// Why the views are not converged yet, or `None` if they are.
fn disagreement(views: &[FinalView]) -> Option<String> {
    let mut problems = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let alive = view.members.values().filter(|&&status| status == 1).count();
        if view.members.len() != AGENTS || alive != AGENTS {
            problems.push(format!("node-{i} sees members {:?}", view.members));
        }
    }
    let first = &views[0];
    for (i, view) in views.iter().enumerate().skip(1) {
        if view.kv != first.kv {
            let keys: BTreeSet<&String> = first.kv.keys().chain(view.kv.keys()).collect();
            let differ: Vec<String> = keys
                .into_iter()
                .filter(|key| first.kv.get(*key) != view.kv.get(*key))
                .map(|key| format!("{key}: {:?} vs {:?}", first.kv.get(key), view.kv.get(key)))
                .collect();
            problems.push(format!("KV node-0 vs node-{i}: {}", differ.join("; ")));
        }
        if view.catalog != first.catalog {
            let only_first: Vec<&String> = first.catalog.difference(&view.catalog).collect();
            let only_other: Vec<&String> = view.catalog.difference(&first.catalog).collect();
            problems.push(format!(
                "catalog node-0 vs node-{i}: only on node-0 {only_first:?}, only on node-{i} {only_other:?}"
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("\n  "))
}

/// Polls every agent until all views agree, for at most `bound`. Returns
/// how long it took (or what still differed) and the last views.
pub fn converge(
    addrs: &[SocketAddr],
    bound: Duration,
) -> (Result<Duration, String>, Vec<FinalView>) {
    let started = Instant::now();
    let mut last_views = Vec::new();
    loop {
        let views: Result<Vec<FinalView>, String> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| read_view(*addr).map_err(|e| format!("node-{i}: {e}")))
            .collect();
        let problem = match views {
            Ok(views) => {
                let problem = disagreement(&views);
                last_views = views;
                match problem {
                    None => return (Ok(started.elapsed()), last_views),
                    Some(problem) => problem,
                }
            }
            Err(error) => error,
        };
        if started.elapsed() > bound {
            return (
                Err(format!(
                    "(a) the agents did not converge within {bound:?} of the heal; still:\n  {problem}"
                )),
                last_views,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The marker a KV value carries: the value itself, or for a flag the
/// `description` of its definition.
fn kv_marker(key: &str, value: &str) -> String {
    if key.starts_with(FLAG_PREFIX) {
        serde_json::from_str::<Value>(value)
            .ok()
            .and_then(|definition| definition["description"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("(flag without description: {value})"))
    } else {
        value.to_string()
    }
}

/// Invariant (b) on one view: for every target in the history or in the
/// view, the final state is one the history allows. Returns the number of
/// targets checked and the violations.
pub fn check_history(
    view: &FinalView,
    who: &str,
    ops: &[Op],
    killed_after: &dyn Fn(&Op) -> Option<Duration>,
    describe: &dyn Fn(&Op) -> String,
) -> (u64, Vec<String>) {
    let mut finals: BTreeMap<String, Option<String>> = BTreeMap::new();
    for op in ops {
        finals.entry(op.target.clone()).or_insert(None);
    }
    for (key, (_, value)) in &view.kv {
        finals.insert(key.clone(), Some(kv_marker(key, value)));
    }
    for (target, marker) in &view.services {
        finals.insert(target.clone(), Some(marker.clone()));
    }
    let mut checked = 0;
    let mut violations = Vec::new();
    for (target, final_marker) in &finals {
        let on_target: Vec<&Op> = ops.iter().filter(|op| &op.target == target).collect();
        checked += 1;
        if let Err(error) = check_final(&on_target, final_marker.as_deref(), killed_after) {
            let history: Vec<String> = on_target
                .iter()
                .rev()
                .take(12)
                .rev()
                .map(|op| format!("    {}", describe(op)))
                .collect();
            violations.push(format!(
                "(b) {target} on {who}: {error}\n  its last operations:\n{}",
                history.join("\n")
            ));
        }
    }
    (checked, violations)
}
