//! Metrics with real processes: a two-agent cluster's `/metrics` passes
//! Prometheus's own linter (`promtool check metrics`, Debian's
//! `prometheus` package) and counts what happened (gossip, anti-entropy,
//! KV writes and fsyncs, check runs, API requests by matched route);
//! `/v1/agent/metrics` has Consul's JSON shape; `shoal metrics` prints
//! all three formats; `/v1/shoal/prometheus/targets` serves the catalog in
//! Prometheus's `http_sd` format with its filters.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{
    Agent, AgentOptions, QUICK_GOSSIP, TinyHttp, http_json, unique_loopback, wait_for,
};

/// `GET path` as text (the Prometheus format is not JSON).
fn get_text(agent: &Agent, path: &str) -> String {
    let (status, body) = http_json("GET", agent.http_addr(), path, None).expect("GET");
    assert_eq!(status, 200, "GET {path}: {body}");
    body.as_str().expect("a text body").to_string()
}

/// The value of the sample `series` (name with labels, exactly as shown).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run scripts/test (or `apt-get install prometheus`)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn metrics_pass_promtool_and_count_what_happened() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("quick.toml");
    let first = Agent::start(
        root.path(),
        AgentOptions {
            name: "m0".into(),
            ..AgentOptions::with_config_file(&config, QUICK_GOSSIP, &[])
        },
    );
    let second = Agent::start(
        root.path(),
        AgentOptions {
            name: "m1".into(),
            join: vec![first.gossip_addr()],
            ..AgentOptions::with_config_file(&config, QUICK_GOSSIP, &[])
        },
    );
    first.wait_serving();
    second.wait_serving();
    let backend = TinyHttp::start((unique_loopback(), 8080).into(), 200);
    let (status, body) = first
        .register_service(&json!({
            "Name": "web", "ID": "web-1", "Port": 8080, "Address": backend.addr.ip().to_string(),
            "Check": {"HTTP": format!("http://{}/", backend.addr), "Interval": "200ms"},
        }))
        .expect("register");
    assert_eq!(status, 200, "{body}");
    assert!(first.kv_put("metrics/a", "1").expect("put"));
    let _ = first.kv_get("metrics/a").expect("get");
    let (status, _) = http_json("GET", first.http_addr(), "/v1/no/such/thing", None).expect("404");
    assert_eq!(status, 404);

    // Counters reach /metrics within one publish of the loop (2 s), and
    // anti-entropy runs every 2 s with QUICK_GOSSIP.
    let text = wait_for(
        Duration::from_secs(30),
        "metrics to count the traffic",
        || {
            let text = get_text(&first, "/metrics");
            let missing: Vec<&str> = [
                "shoal_gossip_received_datagrams_total",
                "shoal_gossip_sent_bytes_total",
                "shoal_swim_probes_sent_total",
                r#"shoal_sync_exchanges_total{role="initiated",outcome="completed"}"#,
                r#"shoal_check_runs_total{kind="http",status="passing"}"#,
                r#"shoal_kv_writes_total{result="accepted"}"#,
                "shoal_kv_fsync_duration_seconds_count",
                r#"shoal_api_requests_total{route="/v1/kv/{*key}",method="PUT",code="200"}"#,
                r#"shoal_api_requests_total{route="unmatched",method="GET",code="404"}"#,
                r#"shoal_api_request_duration_seconds_count{route="/v1/agent/service/register"}"#,
                "process_resident_memory_bytes",
                "process_open_fds",
            ]
            .into_iter()
            .filter(|series| !sample(&text, series).is_some_and(|value| value > 0.0))
            .collect();
            if missing.is_empty() {
                Ok(text)
            } else {
                Err(format!("zero or absent: {missing:?}"))
            }
        },
    );
    assert_eq!(
        sample(&text, r#"shoal_members{status="alive"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&text, "shoal_local_health_score"), Some(0.0));
    assert_eq!(sample(&text, "shoal_catalog_service_instances"), Some(1.0));
    assert!(text.contains("# TYPE shoal_kv_fsync_duration_seconds histogram"));

    // Repeated reads answered from the lookup cache still count under
    // their route.
    let health =
        r#"shoal_api_requests_total{route="/v1/health/service/{name}",method="GET",code="200"}"#;
    let before = sample(&text, health).unwrap_or(0.0);
    let hits_before = sample(&text, "shoal_api_cache_hits_total").unwrap_or(0.0);
    for _ in 0..10 {
        let (status, _) = http_json(
            "GET",
            first.http_addr(),
            "/v1/health/service/web?passing",
            None,
        )
        .expect("lookup");
        assert_eq!(status, 200);
    }
    let after = get_text(&first, "/metrics");
    assert!(
        sample(&after, health).unwrap_or(0.0) >= before + 10.0,
        "10 lookups not all counted: before {before}, now {:?}",
        sample(&after, health)
    );
    assert!(
        sample(&after, "shoal_api_cache_hits_total").unwrap_or(0.0) > hits_before,
        "no lookup was a cache hit"
    );
    assert!(text.contains(r#"shoal_kv_fsync_duration_seconds_bucket{le="+Inf"}"#));

    let (ok, said) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics refused /metrics:\n{said}\n{text}"
    );
    assert!(said.trim().is_empty(), "promtool has remarks:\n{said}");
    // The linter is not a rubber stamp: a counter without `_total` fails.
    let (ok, said) =
        promtool_check("# HELP shoal_bad A counter.\n# TYPE shoal_bad counter\nshoal_bad 1\n");
    assert!(
        !ok || !said.trim().is_empty(),
        "promtool accepted a bad counter name"
    );

    // Consul's JSON shape, and the text format through ?format=prometheus.
    let consul = first.get("/v1/agent/metrics").expect("agent/metrics");
    for field in ["Gauges", "Points", "Counters", "Samples"] {
        assert!(consul[field].is_array(), "{field} in {consul}");
    }
    let timestamp = consul["Timestamp"].as_str().expect("Timestamp");
    assert!(timestamp.ends_with(" +0000 UTC"), "{timestamp}");
    let alive = consul["Gauges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|gauge| gauge["Name"] == "shoal_members" && gauge["Labels"]["status"] == "alive")
        .expect("shoal_members in Gauges");
    assert_eq!(alive["Value"], 2.0);
    let fsync = consul["Samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|sample| sample["Name"] == "shoal_kv_fsync_duration_seconds")
        .expect("the fsync histogram in Samples");
    assert!(fsync["Count"].as_u64().unwrap() > 0 && fsync["Mean"].as_f64().unwrap() > 0.0);
    let as_text = get_text(&first, "/v1/agent/metrics?format=prometheus");
    assert!(as_text.contains("# TYPE shoal_api_requests_total counter"));
    let (status, body) = http_json(
        "GET",
        first.http_addr(),
        "/v1/agent/metrics?format=xml",
        None,
    )
    .expect("GET");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("format"), "{body}");

    // The CLI, in its three formats.
    let table = first.cli(&["metrics"]);
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("Name"), "{table}");
    assert!(
        table.lines().any(|line| line.starts_with("shoal_members")
            && line.contains("status=alive")
            && line.trim_end().ends_with(" 2")),
        "{table}"
    );
    let filtered = first.cli(&["metrics", "--format", "prometheus", "fsync"]);
    let filtered = String::from_utf8_lossy(&filtered.stdout);
    assert!(
        filtered.contains("# TYPE shoal_kv_fsync_duration_seconds histogram"),
        "{filtered}"
    );
    assert!(!filtered.contains("shoal_members"), "{filtered}");
    let json = first.cli(&["metrics", "--format", "json"]);
    let json: Value = serde_json::from_slice(&json.stdout).expect("shoal metrics --format json");
    assert!(json["Counters"].is_array());
}

/// The catalog in `http_sd` format: one group per instance, consul_sd's
/// labels under `__meta_shoal_`, and the filters.
#[test]
fn prometheus_targets_serve_the_catalog_in_http_sd_format() {
    let root = tempfile::tempdir().expect("tempdir");
    let first = Agent::start(
        root.path(),
        AgentOptions {
            tags: vec![("rack".into(), "r-1".into())],
            ..AgentOptions::named("sd0")
        },
    );
    let second = Agent::start(root.path(), AgentOptions::joining("sd1", &first));
    first.wait_serving();
    second.wait_serving();
    let registrations = [
        (
            &first,
            json!({"Name": "web", "ID": "web-1", "Port": 8080, "Address": "10.0.0.1",
            "Tags": ["v2", "primary"], "Meta": {"version": "1.2", "app-team": "pay"}}),
        ),
        (
            &second,
            json!({"Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v2"],
            "Check": {"TTL": "60s", "Status": "critical"}}),
        ),
        (
            &second,
            json!({"Name": "db", "ID": "db-1", "Port": 5432, "Address": "::1"}),
        ),
    ];
    for (agent, registration) in &registrations {
        let (status, body) = agent.register_service(registration).expect("register");
        assert_eq!(status, 200, "{body}");
    }
    let groups = |query: &str| -> Result<Vec<Value>, String> {
        let body = first.get(&format!("/v1/shoal/prometheus/targets{query}"))?;
        Ok(body.as_array().ok_or("not an array")?.clone())
    };
    let all = wait_for(
        Duration::from_secs(20),
        "three instances in the targets",
        || {
            let all = groups("")?;
            if all.len() == 3 {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        },
    );
    let web1 = all
        .iter()
        .find(|group| group["labels"]["__meta_shoal_service_id"] == "web-1")
        .expect("web-1");
    assert_eq!(web1["targets"], json!(["10.0.0.1:8080"]));
    let labels = &web1["labels"];
    assert_eq!(labels["__meta_shoal_service"], "web");
    assert_eq!(labels["__meta_shoal_node"], "sd0");
    assert_eq!(labels["__meta_shoal_tags"], ",v2,primary,");
    assert_eq!(labels["__meta_shoal_health"], "passing");
    assert_eq!(labels["__meta_shoal_dc"], "dc1");
    assert_eq!(labels["__meta_shoal_service_meta_version"], "1.2");
    assert_eq!(labels["__meta_shoal_service_meta_app_team"], "pay");
    assert_eq!(labels["__meta_shoal_node_meta_rack"], "r-1");
    let name = regex_free_label_check;
    for group in &all {
        assert_eq!(group["targets"].as_array().unwrap().len(), 1, "{group}");
        for key in group["labels"].as_object().unwrap().keys() {
            assert!(name(key), "`{key}` is not a valid Prometheus label name");
        }
    }
    let db = all
        .iter()
        .find(|g| g["labels"]["__meta_shoal_service"] == "db")
        .unwrap();
    assert_eq!(
        db["targets"],
        json!(["[::1]:5432"]),
        "an IPv6 address in brackets"
    );
    let web2 = all
        .iter()
        .find(|g| g["labels"]["__meta_shoal_service_id"] == "web-2")
        .unwrap();
    assert_eq!(web2["labels"]["__meta_shoal_health"], "critical");
    assert_eq!(
        web2["targets"],
        json!([format!("{}:8081", second.ip)]),
        "the node's address when the service has none"
    );

    let ids = |groups: Vec<Value>| -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                g["labels"]["__meta_shoal_service_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(ids(groups("?service=web").unwrap()), ["web-1", "web-2"]);
    assert_eq!(ids(groups("?service=web&service=db").unwrap()).len(), 3);
    assert_eq!(ids(groups("?service=web&passing").unwrap()), ["web-1"]);
    assert_eq!(ids(groups("?tag=primary").unwrap()), ["web-1"]);
    assert_eq!(ids(groups("?tag=v2&tag=primary").unwrap()), ["web-1"]);
    assert!(groups("?service=nothing").unwrap().is_empty());
    let (status, body) = http_json(
        "GET",
        first.http_addr(),
        "/v1/shoal/prometheus/targets?dc=elsewhere",
        None,
    )
    .expect("GET");
    assert_eq!(status, 400, "{body}");
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, Prometheus's label names.
fn regex_free_label_check(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
