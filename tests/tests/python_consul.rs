//! python-consul, a real Consul client (its last release, 1.1.0, from PyPI,
//! installed by `scripts/test` into a venv of its own: it shares the
//! `consul` module name with py-consul), against a live agent: it must see
//! exactly what the HTTP API shows, for services, health and KV. Debian's
//! python3-consul is 0.7.1, from before Consul 1.0: it sends Consul's
//! legacy `GET` forms for TTL updates and deregistration, which Consul
//! answers 405 since 1.0, and so does Shoal (a web page could send them).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{Agent, AgentOptions, wait_for};

/// The python-consul venv's python: `$SHOAL_TEST_PYTHON_CONSUL_VENV/bin/python`,
/// else `<workspace>/target/test-venv-python-consul/bin/python`.
fn python() -> PathBuf {
    let venv = std::env::var_os("SHOAL_TEST_PYTHON_CONSUL_VENV").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/test-venv-python-consul"
            ))
        },
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    let probe = Command::new(&python)
        .args(["-c", "import consul; assert consul.__version__ >= '1'"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python-consul 1.x is not installed in {}: run scripts/test (it creates the venv)",
        venv.display()
    );
    python
}

#[test]
fn python_consul_registers_and_looks_up_services() {
    let python = python();
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
    let output = Command::new(&python)
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
