//! Debian's python3-consul, a real Consul client, against a live agent: it
//! must see exactly what the HTTP API shows, for services, health and KV.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{Agent, AgentOptions, wait_for};

/// Debian's interpreter, where `apt-get install python3-consul` puts the
/// library (a `python3` earlier on PATH, e.g. pyenv's, would not see it).
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn python_consul_registers_and_looks_up_services() {
    let probe = Command::new(PYTHON).args(["-c", "import consul"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3-consul is not installed: run scripts/test (or `apt-get install python3-consul`)"
    );
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "py-node".into(),
            ..AgentOptions::default()
        },
    );
    wait_for(Duration::from_secs(15), "the agent to answer", || {
        agent.get("/v1/agent/self").map(|_| ())
    });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/consul_client.py");
    let output = Command::new(PYTHON)
        .arg(script)
        .arg(agent.ip.to_string())
        .arg(agent.http_addr().port().to_string())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python-consul failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("script prints JSON");

    // health.service(passing=True): our one instance, with Consul's fields.
    let passing = seen["passing"].as_array().unwrap();
    assert_eq!(passing.len(), 1, "{seen}");
    assert_eq!(passing[0]["Service"]["ID"], "payments-1");
    assert_eq!(passing[0]["Service"]["Port"], 7000);
    assert_eq!(passing[0]["Node"]["Node"], "py-node");
    let statuses: Vec<&str> = passing[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["passing", "passing"]);
    assert_eq!(
        passing[0]["Checks"][1]["Notes"], "",
        "TTL notes go to Output, as in Consul"
    );
    assert_eq!(passing[0]["Checks"][1]["Output"], "all good");

    // catalog.services() and catalog.service() match the HTTP API's shapes.
    assert_eq!(
        seen["services"]["payments"],
        serde_json::json!(["canary", "v2"])
    );
    assert_eq!(seen["instances"][0]["ServiceID"], "payments-1");
    assert_eq!(
        seen["instances"][0]["ServiceTags"],
        serde_json::json!(["v2", "canary"])
    );
    assert_eq!(seen["local"]["payments-1"]["Service"], "payments");

    // The blocking call woke with a larger index and no passing instance.
    assert!(
        seen["new_index"].as_u64() > seen["index"].as_u64(),
        "{seen}"
    );
    assert_eq!(seen["after_fail"], serde_json::json!([]));
    assert_eq!(seen["after_deregister"], serde_json::json!([]));

    // python-consul's KV calls: values, flags, a blocking get, CAS, delete.
    assert_eq!(seen["kv_value"], "20");
    assert_eq!(seen["kv_value_after"], "30");
    assert!(
        seen["kv_new_index"].as_u64() > seen["kv_index"].as_u64(),
        "{seen}"
    );
    assert_eq!(
        seen["kv_tree"],
        serde_json::json!([
            ["config/db/host", "db.internal", 7],
            ["config/db/pool_size", "30", 0]
        ])
    );
    assert_eq!(seen["kv_deleted"], Value::Null);
    assert_eq!(agent.kv_get("config/db/pool_size"), Ok(Some("30".into())));

    // And the HTTP API agrees now.
    assert_eq!(
        agent.get("/v1/catalog/service/payments").unwrap(),
        serde_json::json!([])
    );
    assert_eq!(
        agent.get("/v1/agent/services").unwrap(),
        serde_json::json!({})
    );
}
