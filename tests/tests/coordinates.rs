//! Network coordinates on real agents: six agents in three zones, with
//! round trips of 20 ms and 80 ms between zones made by delaying relays
//! (no netem here), learn coordinates that put their zone-mates nearest:
//! `?near=_agent` lists them first, `shoal rtt` estimates the delays, and
//! `/v1/coordinate/*` answers in Consul's shapes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::relay::Relay;
use shoal_tests::{Agent, AgentOptions, GOSSIP_PORT, unique_loopback, wait_for};

/// Agent `i` is in zone `i % 3`: node-0 and node-3 in zone 0, node-1 and
/// node-4 in zone 1, node-2 and node-5 in zone 2 (so that the zones'
/// order is not the names').
fn zone(agent: usize) -> usize {
    agent % 3
}

/// One-way delay between two zones: 10 ms between zones 0 and 1 (a 20 ms
/// round trip), 40 ms from either to zone 2 (80 ms), none inside a zone.
fn one_way(a: usize, b: usize) -> Duration {
    match (zone(a).min(zone(b)), zone(a).max(zone(b))) {
        (x, y) if x == y => Duration::ZERO,
        (0, 1) => Duration::from_millis(10),
        _ => Duration::from_millis(40),
    }
}

/// The estimated round trip `shoal rtt` prints, in ms.
fn rtt(agent: &Agent, from: &str, to: &str) -> Result<f64, String> {
    let output = agent.cli(&["rtt", from, to]);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        return Err(format!(
            "exit {:?}: {text}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // "Estimated a <-> b rtt: 12.345 ms (using LAN coordinates)"
    text.split("rtt: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| format!("unexpected output: {text}"))
}

#[test]
fn coordinates_learn_the_zones_and_near_sorts_by_them() {
    let root = tempfile::tempdir().unwrap();
    // Real gossip address of each agent, for the relays' delays.
    let real: Arc<Mutex<HashMap<SocketAddr, usize>>> = Arc::default();
    let mut agents: Vec<Agent> = Vec::new();
    let mut relays: Vec<Relay> = Vec::new();
    for i in 0..6 {
        let relay_addr = SocketAddr::new(unique_loopback(), GOSSIP_PORT);
        let join = relays.first().map(|r| vec![r.addr]).unwrap_or_default();
        let agent = Agent::start(
            root.path(),
            AgentOptions {
                name: format!("node-{i}"),
                join,
                args: vec!["--advertise".into(), relay_addr.to_string()],
                ..AgentOptions::default()
            },
        );
        real.lock().unwrap().insert(agent.gossip_addr(), i);
        let zones = real.clone();
        relays.push(Relay::start_delayed(
            relay_addr,
            agent.gossip_addr(),
            move |from| {
                zones
                    .lock()
                    .unwrap()
                    .get(&from)
                    .map_or(Duration::ZERO, |&sender| one_way(sender, i))
            },
        ));
        agents.push(agent);
    }
    for agent in &agents {
        agent.wait_serving();
        let (code, body) = agent
            .register_service(&json!({"Name": "web", "Port": 8080}))
            .unwrap();
        assert_eq!(code, 200, "{body}");
    }

    // Node 0 lists node 3 (its zone) first after itself, then zone 1,
    // then zone 2, once the coordinates have settled.
    let zone_of = |name: &str| zone(name.trim_start_matches("node-").parse().unwrap());
    let first = &agents[0];
    wait_for(
        Duration::from_secs(120),
        "?near=_agent to order node-0's answer by zone",
        || {
            let entries = first.get("/v1/health/service/web?near=_agent")?;
            let zones: Vec<usize> = entries
                .as_array()
                .ok_or("not a list")?
                .iter()
                .map(|entry| zone_of(entry["Node"]["Node"].as_str().unwrap_or("node-9")))
                .collect();
            if zones == [0, 0, 1, 1, 2, 2] {
                Ok(())
            } else {
                Err(format!("zones in answer order: {zones:?}"))
            }
        },
    );

    // The estimates against the delays (20 ms and 80 ms round trips, 0
    // plus loopback inside a zone), once they have settled; loose bounds:
    // six agents share two cores with the relays.
    let settled = wait_for(Duration::from_secs(60), "the estimates to settle", || {
        let near = rtt(first, "node-0", "node-3")?;
        let across = rtt(first, "node-0", "node-1")?;
        let far = rtt(first, "node-0", "node-5")?;
        let summary =
            format!("zone {near:.2} ms, 20 ms link {across:.2} ms, 80 ms link {far:.2} ms");
        if near < 8.0 && (12.0..=30.0).contains(&across) && (55.0..=110.0).contains(&far) {
            Ok(summary)
        } else {
            Err(format!(
                "{summary}; coordinates: {}",
                describe(&first.get("/v1/coordinate/nodes")?)
            ))
        }
    });
    eprintln!("estimated round trips: {settled}");
    // The second node defaults to the agent's own.
    let default = rtt(first, "node-5", "node-0").unwrap();
    let output = first.cli(&["rtt", "node-5"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with("Estimated node-5 <-> node-0 rtt: "),
        "{text}"
    );
    assert!(default > 50.0);

    // Consul's shapes.
    let nodes = first.get("/v1/coordinate/nodes").unwrap();
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["Node"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["node-0", "node-1", "node-2", "node-3", "node-4", "node-5"]
    );
    let coord = &nodes[3]["Coord"];
    assert_eq!(coord["Vec"].as_array().unwrap().len(), 8, "{coord}");
    assert!(coord["Error"].as_f64().unwrap() < 1.5, "it moved: {coord}");
    assert!(coord["Height"].as_f64().unwrap() > 0.0);
    let one = first.get("/v1/coordinate/node/node-4").unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["Node"], "node-4");
    assert!(
        first.get("/v1/coordinate/node/nope").is_err(),
        "404 for an unknown node"
    );
    let dcs = first.get("/v1/coordinate/datacenters").unwrap();
    assert_eq!(dcs[0]["Datacenter"], "dc1");
    let unknown = first.cli(&["rtt", "nope", "node-0"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("could not find a coordinate for node `nope`"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    // The catalog sorts too, and an unknown `near` node leaves the order
    // as without it (by name).
    let catalog = first.get("/v1/catalog/service/web?near=node-5").unwrap();
    assert_eq!(
        zone_of(catalog[0]["Node"].as_str().unwrap()),
        2,
        "{catalog}"
    );
    let unsorted = first.get("/v1/catalog/service/web?near=nope").unwrap();
    let plain = first.get("/v1/catalog/service/web").unwrap();
    assert_eq!(node_names(&unsorted), node_names(&plain));
}

/// Each node's height, error, adjustment (ms) and distance from the
/// origin, for a failure message.
fn describe(nodes: &Value) -> String {
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let coord = &entry["Coord"];
            let norm: f64 = coord["Vec"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt();
            format!(
                "{} h {:.2} e {:.2} a {:.2} |v| {:.2}",
                entry["Node"],
                coord["Height"].as_f64().unwrap_or(f64::NAN) * 1000.0,
                coord["Error"].as_f64().unwrap_or(f64::NAN),
                coord["Adjustment"].as_f64().unwrap_or(f64::NAN) * 1000.0,
                norm * 1000.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn node_names(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["Node"].as_str().unwrap().to_string())
        .collect()
}
