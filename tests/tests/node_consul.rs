//! The npm `consul` package (silas/node-consul, installed by `scripts/test`
//! into `target/test-node`) against a real two-agent cluster: register,
//! TTL checks, health, catalog, KV and agent calls, as a Node service
//! would make them. A stock client sends no `Origin` and no Fetch Metadata,
//! so the browser guard must let every one of its calls through.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::Cluster;

/// `$SHOAL_TEST_NODE_MODULES` (a folder holding `node_modules/consul`),
/// else `<workspace>/target/test-node`.
fn node_project() -> PathBuf {
    let project = std::env::var_os("SHOAL_TEST_NODE_MODULES").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-node")),
        PathBuf::from,
    );
    assert!(
        project.join("node_modules/consul/package.json").exists(),
        "the npm `consul` package is not installed in {}: run scripts/test (it installs it)",
        project.display()
    );
    project
}

#[test]
fn the_npm_consul_client_registers_checks_and_reads() {
    let project = node_project();
    let cluster = Cluster::start(2);
    cluster.wait_all_alive(Duration::from_secs(30));
    let (a, b) = (&cluster.agents[0], &cluster.agents[1]);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/consul_client.js");
    let output = Command::new("node")
        .arg(script)
        .arg(a.ip.to_string())
        .arg(a.http_addr().port().to_string())
        .env("NODE_PATH", project.join("node_modules"))
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "node-consul failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("script prints JSON");

    let passing = seen["passing"].as_array().expect("passing is a list");
    assert_eq!(passing.len(), 1, "{seen}");
    assert_eq!(passing[0]["Service"]["ID"], "payments-1");
    assert_eq!(passing[0]["Service"]["Port"], 7000);
    assert_eq!(passing[0]["Node"]["Node"], a.name.as_str());
    assert_eq!(
        seen["catalog_services"]["payments"],
        json!(["v2"]),
        "{seen}"
    );
    assert_eq!(seen["local_services"]["payments-1"]["Service"], "payments");
    let check = &seen["checks"]["service:payments-1"];
    assert_eq!(check["Status"], "passing", "{seen}");
    assert_eq!(check["Output"], "all good", "{seen}");
    assert_eq!(
        seen["after_fail"],
        json!([]),
        "a failing check leaves ?passing"
    );

    assert_eq!(seen["kv_set"], true);
    assert_eq!(seen["kv_set_flags"], true);
    assert_eq!(seen["kv_value"], "20");
    assert_eq!(
        seen["kv_keys"],
        json!(["config/db/host", "config/db/pool_size"])
    );
    assert_eq!(seen["kv_cas_won"], false, "a CAS on a stale index loses");
    assert_eq!(seen["kv_after_cas"], "20", "{seen}");
    assert_eq!(seen["kv_after_del"], Value::Null, "{seen}");
    // What the client wrote reached the other agent.
    b.wait_kv("config/db/pool_size", Some("20"), Duration::from_secs(15));
    b.wait_kv("config/db/host", None, Duration::from_secs(15));

    assert_eq!(seen["self_node"], a.name.as_str());
    let mut members: Vec<String> = serde_json::from_value(seen["members"].clone()).unwrap();
    members.sort();
    let mut names = vec![a.name.clone(), b.name.clone()];
    names.sort();
    assert_eq!(members, names);
    assert!(
        seen["maintenance_checks"]
            .as_array()
            .unwrap()
            .contains(&json!("_node_maintenance")),
        "{seen}"
    );
    assert_eq!(seen["after_deregister"], json!([]), "{seen}");
    let checks = a.get(&format!("/v1/health/node/{}", a.name)).unwrap();
    assert!(
        !checks.to_string().contains("_node_maintenance"),
        "maintenance was turned off: {checks}"
    );
}
