//! Consul compatibility, round 2, against real agents: Consul's check IDs
//! (also for registrations saved by earlier versions), Go's booleans,
//! the status and catalog endpoints clients call, `?filter=`,
//! `?node-meta=`, node IDs, service tagged addresses, and the 501s for
//! what Shoal refuses by design.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Agent, AgentOptions, Cluster, http_json, query_encode as encode, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn put(agent: &Agent, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    http_json(
        "PUT",
        agent.http_addr(),
        path,
        body.as_deref().map(str::as_bytes),
    )
    .unwrap()
}

fn status_of(agent: &Agent, method: &str, path: &str) -> (u16, Value) {
    http_json(method, agent.http_addr(), path, None).unwrap()
}

fn check_ids(agent: &Agent) -> Vec<(String, String)> {
    let checks = agent.get("/v1/agent/checks").unwrap();
    let mut ids: Vec<(String, String)> = checks
        .as_object()
        .unwrap()
        .values()
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap().to_string(),
                c["Name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn check_ids_booleans_and_saved_registrations_as_consul() {
    let root = tempfile::tempdir().unwrap();
    // A data dir as an earlier version left it: a service registered with
    // a one-element `Checks`, whose check that version called `web-1:1`.
    let data_dir = root.path().join("compat");
    std::fs::create_dir_all(&data_dir).unwrap();
    let saved = json!({
        "services": [{"name": "web", "id": "web-1", "port": 8080,
                      "checks": [{"ttl": "30s"}]}],
        "checks": [],
        "node_maintenance": null,
        "service_maintenance": {},
    });
    std::fs::write(data_dir.join("local.json"), saved.to_string()).unwrap();
    let mut agent = Agent::start(root.path(), AgentOptions::named("compat"));
    agent.wait_serving();
    wait_for(WAIT, "the saved service to load", || {
        let ids = check_ids(&agent);
        (!ids.is_empty()).then_some(()).ok_or(format!("{ids:?}"))
    });
    assert_eq!(
        check_ids(&agent),
        [("service:web-1".into(), "Service 'web' check".into())],
        "the saved single check is renamed as Consul names it"
    );

    // Two checks (Check + Checks): numbered from 1, Check first.
    let (code, body) = agent
        .register_service(&json!({
            "Name": "api", "ID": "api-1", "Port": 9000,
            "Check": {"TTL": "30s"},
            "Checks": [{"TTL": "30s", "Name": "second"}]
        }))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        check_ids(&agent),
        [
            ("service:api-1:1".into(), "Service 'api' check".into()),
            ("service:api-1:2".into(), "second".into()),
            ("service:web-1".into(), "Service 'web' check".into()),
        ]
    );
    // A TTL pass on the single check's Consul ID.
    assert_eq!(
        put(&agent, "/v1/agent/check/pass/service:web-1", None).0,
        200
    );
    let passing = agent.get("/v1/health/service/web?passing").unwrap();
    assert_eq!(passing.as_array().unwrap().len(), 1, "{passing}");

    // Booleans as Go's ParseBool; presence-only parameters as Consul.
    for (value, in_maintenance) in [("True", true), ("F", false), ("1", true), ("FALSE", false)] {
        let (code, body) = put(
            &agent,
            &format!("/v1/agent/maintenance?enable={value}"),
            None,
        );
        assert_eq!(code, 200, "enable={value}: {body}");
        wait_for(
            WAIT,
            &format!("maintenance {in_maintenance} after enable={value}"),
            || {
                let checks = agent.get("/v1/health/node/compat")?;
                let has = checks
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["CheckID"] == "_node_maintenance");
                (has == in_maintenance)
                    .then_some(())
                    .ok_or(checks.to_string())
            },
        );
    }
    for bad in ["/v1/agent/maintenance?enable=yes", "/v1/agent/maintenance"] {
        let (code, body) = put(&agent, bad, None);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("enable:"),
            "{body}"
        );
    }
    let (code, body) = status_of(&agent, "GET", "/v1/health/service/web?passing=maybe");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("passing"),
        "{body}"
    );
    put(&agent, "/v1/agent/check/fail/service:web-1", None);
    for (query, expected) in [
        ("passing", 0),
        ("passing=t", 0),
        ("passing=false", 1),
        ("passing=0", 1),
    ] {
        let found = agent
            .get(&format!("/v1/health/service/web?{query}"))
            .unwrap();
        assert_eq!(
            found.as_array().unwrap().len(),
            expected,
            "?{query}: {found}"
        );
    }
    assert!(agent.kv_put("cfg/a", "1").unwrap());
    let recursed = agent.get("/v1/kv/cfg?recurse=false").unwrap();
    assert_eq!(
        recursed.as_array().unwrap().len(),
        1,
        "?recurse=false recurses, as in Consul"
    );

    // The IDs, and the node ID, survive a restart.
    let node_id = agent.get("/v1/agent/self").unwrap()["Config"]["NodeID"].clone();
    agent.restart();
    agent.wait_serving();
    wait_for(WAIT, "the registrations to come back", || {
        let ids = check_ids(&agent);
        (ids.len() == 3).then_some(()).ok_or(format!("{ids:?}"))
    });
    assert_eq!(
        put(&agent, "/v1/agent/check/pass/service:web-1", None).0,
        200
    );
    assert_eq!(
        agent.get("/v1/agent/self").unwrap()["Config"]["NodeID"],
        node_id
    );
    let file = std::fs::read_to_string(data_dir.join("node-id")).unwrap();
    assert_eq!(json!(file.trim()), node_id);
}

#[test]
fn endpoints_filters_and_identity_across_a_cluster() {
    let cluster = Cluster::start_with(2, |i| AgentOptions {
        tags: vec![("env".into(), if i == 0 { "prod" } else { "dev" }.into())],
        ..AgentOptions::default()
    });
    cluster.wait_all_alive(WAIT);
    let (a, b) = (&cluster.agents[0], &cluster.agents[1]);
    let registration = json!({
        "Name": "web", "ID": "web-a", "Port": 8080, "Tags": ["v1", "canary"],
        "Meta": {"version": "1.2"},
        "TaggedAddresses": {"wan": {"Address": "203.0.113.7", "Port": 80}},
        "Check": {"TTL": "30s", "Status": "passing"}
    });
    assert_eq!(a.register_service(&registration).unwrap().0, 200);
    let other = json!({"Name": "web", "ID": "web-b", "Port": 8081, "Tags": ["v2"],
                       "Check": {"TTL": "30s"}});
    assert_eq!(b.register_service(&other).unwrap().0, 200);
    wait_for(WAIT, "both instances in b's catalog", || {
        let found = b.get("/v1/catalog/service/web")?;
        (found.as_array().unwrap().len() == 2)
            .then_some(())
            .ok_or(found.to_string())
    });

    // Node IDs: a UUID, the same in /v1/agent/self, the catalog and members.
    let id_a = a.get("/v1/agent/self").unwrap()["Config"]["NodeID"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id_a.len(), 36, "{id_a}");
    let nodes = b.get("/v1/catalog/nodes").unwrap();
    let node_a = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Node"] == "node-0")
        .unwrap();
    assert_eq!(node_a["ID"], json!(id_a));
    assert_eq!(
        node_a["Meta"],
        json!({"env": "prod"}),
        "the ID is not node meta"
    );
    let members = b.get("/v1/agent/members").unwrap();
    let member_a = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == "node-0")
        .unwrap();
    assert_eq!(member_a["Tags"]["id"], json!(id_a));

    // Tagged addresses: kept, gossiped, shown as Consul shows them.
    let wan = json!({"wan": {"Address": "203.0.113.7", "Port": 80}});
    assert_eq!(
        a.get("/v1/agent/services").unwrap()["web-a"]["TaggedAddresses"],
        wan
    );
    let seen = b
        .get(&format!(
            "/v1/catalog/service/web?filter={}",
            encode("ServiceID == web-a")
        ))
        .unwrap();
    assert_eq!(seen[0]["ServiceTaggedAddresses"], wan, "{seen}");
    assert_eq!(seen[0]["ServiceMeta"], json!({"version": "1.2"}));

    // Status and catalog endpoints.
    assert_eq!(
        b.get("/v1/status/leader").unwrap(),
        json!(b.gossip_addr().to_string())
    );
    let mut peers: Vec<String> =
        serde_json::from_value(b.get("/v1/status/peers").unwrap()).unwrap();
    peers.sort();
    let mut expected = vec![a.gossip_addr().to_string(), b.gossip_addr().to_string()];
    expected.sort();
    assert_eq!(peers, expected);
    assert_eq!(b.get("/v1/catalog/datacenters").unwrap(), json!(["dc1"]));
    let node = b.get("/v1/catalog/node/node-0").unwrap();
    assert_eq!(node["Node"]["ID"], json!(id_a));
    assert_eq!(node["Services"]["web-a"]["Port"], 8080);
    assert_eq!(
        b.get(&format!("/v1/catalog/node/{id_a}")).unwrap()["Node"]["Node"],
        "node-0"
    );
    assert_eq!(b.get("/v1/catalog/node/nope").unwrap(), Value::Null);
    let listed = b.get("/v1/catalog/node-services/node-1").unwrap();
    assert_eq!(listed["Services"][0]["ID"], "web-b");
    let host = a.get("/v1/agent/host").unwrap();
    assert!(host["Memory"]["total"].as_u64().unwrap() > 0, "{host}");

    // ?node-meta= on catalog/nodes and catalog/services.
    let prod = b.get("/v1/catalog/nodes?node-meta=env:prod").unwrap();
    assert_eq!(prod.as_array().unwrap().len(), 1);
    assert_eq!(prod[0]["Node"], "node-0");
    let dev = b.get("/v1/catalog/services?node-meta=env:dev").unwrap();
    assert_eq!(dev["web"], json!(["v2"]), "{dev}");
    assert_eq!(
        b.get("/v1/catalog/services?node-meta=env:none").unwrap(),
        json!({})
    );
    let dev_checks = b.get("/v1/health/state/any?node-meta=env:dev").unwrap();
    let on: Vec<&Value> = dev_checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["Node"])
        .collect();
    assert!(
        !on.is_empty() && on.iter().all(|n| *n == "node-1"),
        "{dev_checks}"
    );

    // ?filter= on every endpoint that takes it.
    let count = |agent: &Agent, path: &str, filter: &str| -> usize {
        let sep = if path.contains('?') { '&' } else { '?' };
        let body = agent
            .get(&format!("{path}{sep}filter={}", encode(filter)))
            .unwrap();
        match body {
            Value::Array(items) => items.len(),
            Value::Object(map) if map.contains_key("Services") => match &map["Services"] {
                Value::Array(items) => items.len(),
                Value::Object(services) => services.len(),
                other => panic!("{path}: {other}"),
            },
            Value::Object(map) => map.len(),
            other => panic!("{path}: {other}"),
        }
    };
    let cases: &[(&Agent, &str, &str, usize)] = &[
        (a, "/v1/agent/services", "Tags contains canary", 1),
        (a, "/v1/agent/services", "Service != web", 0),
        (
            b,
            "/v1/agent/checks",
            "ServiceID == web-b and Status == critical",
            1,
        ),
        (b, "/v1/catalog/service/web", "v1 in ServiceTags", 1),
        (
            b,
            "/v1/catalog/service/web",
            "NodeMeta.env == dev or ServicePort == 8080",
            2,
        ),
        (b, "/v1/catalog/nodes", "Meta.env matches \"^p\"", 1),
        (b, "/v1/health/service/web", "Checks.Status == critical", 1),
        (
            b,
            "/v1/health/service/web",
            "Service.Meta.version is not empty",
            1,
        ),
        (b, "/v1/health/checks/web", "Status == passing", 1),
        (b, "/v1/health/node/node-1", "CheckID == serfHealth", 1),
        (
            b,
            "/v1/health/state/any",
            "ServiceName == web and not (Node == node-0)",
            1,
        ),
        (b, "/v1/catalog/node-services/node-0", "Port == 8080", 1),
        (b, "/v1/catalog/node-services/node-0", "Port == 1", 0),
        (b, "/v1/catalog/node/node-0", "Tags contains canary", 1),
        (b, "/v1/catalog/node/node-0", "Tags contains v2", 0),
        (b, "/v1/catalog/services", "ServiceTags contains v2", 1),
        (b, "/v1/catalog/services", "ServiceName == nothing", 0),
    ];
    for (agent, path, filter, expected) in cases {
        assert_eq!(
            count(agent, path, filter),
            *expected,
            "{path} ?filter={filter}"
        );
    }
    for (filter, position, problem) in [
        ("Service.Nope == x", 1, "unknown selector `Service.Nope`"),
        (
            "Service.Service == web and (",
            29,
            "expected a selector or a value",
        ),
    ] {
        let path = format!("/v1/health/service/web?filter={}", encode(filter));
        let (code, body) = status_of(b, "GET", &path);
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(code, 400, "{filter}: {body}");
        assert!(
            error.starts_with(&format!("filter: at position {position}: "))
                && error.contains(problem),
            "{filter}: {error}"
        );
    }

    // Refused by design: 501 with the reason and what to use instead.
    for (method, path, words) in [
        ("PUT", "/v1/session/create", "consensus"),
        ("GET", "/v1/session/list", "consensus"),
        ("PUT", "/v1/kv/lock?acquire=abc", "consensus"),
        ("PUT", "/v1/txn", "cas"),
        ("PUT", "/v1/coordinate/update", "coordinate"),
        ("GET", "/v1/agent/connect/ca/roots", "mesh"),
        ("GET", "/v1/query", "/v1/health/service"),
        ("GET", "/v1/operator/raft/configuration", "Raft"),
        ("PUT", "/v1/catalog/register", "/v1/agent/service/register"),
        ("GET", "/v1/health/connect/web", "mesh"),
    ] {
        let (code, body) = status_of(a, method, path);
        assert_eq!(code, 501, "{method} {path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(words),
            "{path}: {body}"
        );
    }
    assert_eq!(
        a.kv_get("lock"),
        Ok(None),
        "a refused acquire wrote nothing"
    );
}
