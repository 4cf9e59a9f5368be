//! py-consul, the maintained Consul client on PyPI (installed by
//! `scripts/test` into the test venv), against a real two-agent cluster:
//! Consul's check IDs, Python booleans, the status and catalog endpoints,
//! and `filter_expr` on services, checks and health, each compared with
//! what the HTTP API answers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{AgentOptions, Cluster, query_encode};

/// The test venv's python: `$SHOAL_TEST_VENV/bin/python`, else
/// `<workspace>/target/test-venv/bin/python`.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SHOAL_TEST_VENV").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venv")),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    let probe = Command::new(&python).args(["-c", "import consul"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "py-consul is not installed in {}: run scripts/test (it creates the venv)",
        venv.display()
    );
    python
}

#[test]
fn py_consul_sees_what_the_http_api_shows() {
    let python = venv_python();
    let cluster = Cluster::start_with(2, |i| AgentOptions {
        tags: if i == 0 {
            vec![("role".into(), "edge".into())]
        } else {
            Vec::new()
        },
        ..AgentOptions::default()
    });
    cluster.wait_all_alive(Duration::from_secs(30));
    let (a, b) = (&cluster.agents[0], &cluster.agents[1]);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/py_consul_client.py");
    let output = Command::new(&python)
        .arg(script)
        .arg(a.ip.to_string())
        .arg(a.http_addr().port().to_string())
        .arg(&b.name)
        .output()
        .expect("run the venv's python");
    assert!(
        output.status.success(),
        "py-consul failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("script prints JSON");

    // Consul's check IDs: the single check is `service:web-1`, and
    // ttl_pass on it works (it returned False before).
    assert_eq!(seen["ttl_pass"], true, "{seen}");
    assert_eq!(
        seen["check_ids"],
        json!(["service:api-1:1", "service:api-1:2", "service:web-1"])
    );
    // Maintenance with Python's True/False.
    for key in [
        "maintenance_on",
        "maintenance_off",
        "service_maintenance_on",
        "service_maintenance_off",
    ] {
        assert_eq!(seen[key], true, "{key}: {seen}");
    }
    let ids = |checks: &Value| -> Vec<String> {
        checks
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["CheckID"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        ids(&seen["node_checks_on"]).contains(&"_node_maintenance".to_string()),
        "{seen}"
    );
    assert!(
        ids(&seen["api_checks"]).contains(&"_service_maintenance:api-1".to_string()),
        "{seen}"
    );
    let now = a.get("/v1/health/node/node-0").unwrap();
    assert!(
        !ids(&now).contains(&"_node_maintenance".to_string()),
        "maintenance is off again"
    );

    // Status and catalog calls.
    assert_eq!(seen["leader"], json!(a.gossip_addr().to_string()));
    let mut peers: Vec<String> = serde_json::from_value(seen["peers"].clone()).unwrap();
    peers.sort();
    let mut expected = vec![a.gossip_addr().to_string(), b.gossip_addr().to_string()];
    expected.sort();
    assert_eq!(peers, expected);
    assert_eq!(
        seen["datacenters"],
        a.get("/v1/catalog/datacenters").unwrap()
    );
    let node = a.get("/v1/catalog/node/node-0").unwrap();
    assert_eq!(seen["node"]["Node"]["ID"], node["Node"]["ID"]);
    assert_eq!(seen["node"]["Node"]["ID"].as_str().unwrap().len(), 36);
    let services = |node: &Value| -> Vec<String> {
        node["Services"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(services(&seen["node"]), ["api-1", "web-1"]);
    assert_eq!(services(&seen["node"]), services(&node));
    assert_eq!(seen["other"]["Node"]["Node"], "node-1");
    assert_eq!(seen["missing"], Value::Null);

    // Network coordinates in Consul's shapes, and `near` accepted.
    let coordinates = seen["coordinate_nodes"].as_array().unwrap();
    let names: Vec<&str> = coordinates
        .iter()
        .map(|c| c["Node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-0", "node-1"], "{coordinates:?}");
    for entry in coordinates {
        assert_eq!(
            entry["Coord"]["Vec"].as_array().unwrap().len(),
            8,
            "{entry}"
        );
        assert!(entry["Coord"]["Height"].as_f64().unwrap() > 0.0, "{entry}");
    }
    assert_eq!(seen["coordinate_me"][0]["Node"], "node-0");
    assert_eq!(seen["coordinate_missing"], Value::Null, "404 reads as None");
    assert_eq!(seen["coordinate_dcs"][0]["Datacenter"], "dc1");
    let mut near: Vec<&str> = seen["near_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap())
        .collect();
    near.sort_unstable();
    assert_eq!(near, ["node-0", "node-1"]);

    // filter_expr: what py-consul got is what the HTTP API answers now,
    // and it is filtered.
    let filters = &seen["filters"];
    let http = |path: &str, filter: &str| -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        a.get(&format!("{path}{sep}filter={}", query_encode(filter)))
            .unwrap()
    };
    let compared = [
        (
            "agent_services",
            "/v1/agent/services",
            "Tags contains \"v1\"",
        ),
        ("agent_checks", "/v1/agent/checks", "Status == \"passing\""),
        (
            "health_service",
            "/v1/health/service/web",
            "Checks.Status == \"passing\"",
        ),
        (
            "health_service_none",
            "/v1/health/service/api",
            "Checks.Status == \"passing\" and Service.Port == 1",
        ),
        (
            "health_checks",
            "/v1/health/checks/api",
            "CheckID == \"service:api-1:2\"",
        ),
        (
            "health_state",
            "/v1/health/state/critical",
            "ServiceName == \"api\"",
        ),
        (
            "health_node",
            "/v1/health/node/node-0",
            "CheckID == \"serfHealth\"",
        ),
        (
            "catalog_service",
            "/v1/catalog/service/web",
            "ServiceMeta.version == \"1\"",
        ),
        (
            "catalog_nodes",
            "/v1/catalog/nodes",
            "Meta.role == \"edge\"",
        ),
    ];
    for (key, path, filter) in compared {
        assert_eq!(
            filters[key],
            http(path, filter),
            "{key}: {path} ?filter={filter}"
        );
    }
    let count = |key: &str| match &filters[key] {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        other => panic!("{key}: {other}"),
    };
    assert_eq!(
        filters["agent_services"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["web-1"]
    );
    assert_eq!(
        filters["agent_checks"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["service:web-1"]
    );
    for (key, expected) in [
        ("health_service", 1),
        ("health_service_none", 0),
        ("health_checks", 1),
        ("health_state", 2),
        ("health_node", 1),
        ("catalog_service", 1),
        ("catalog_nodes", 1),
    ] {
        assert_eq!(count(key), expected, "{key}: {filters}");
    }
    assert_eq!(filters["catalog_nodes"][0]["Node"], "node-0");
    let bad = seen["bad_filter"].as_str().unwrap_or_default();
    assert!(
        bad.contains("filter: at position"),
        "a bad filter is a 400 py-consul reports: {seen}"
    );
}
