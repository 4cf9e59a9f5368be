//! Regression tests for what an outside review found in the agent (issue
//! 10): duplicate node names (defect 10), `X-Consul-Index` after a restart
//! (defect 12) and blocking queries on an idle cluster (defect 13). Real
//! processes on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::{Agent, AgentOptions, Cluster, wait_for};

/// `GET path` with its status, JSON body and `X-Consul-Index`, and how
/// long the answer took.
struct Answer {
    status: u16,
    body: Value,
    index: u64,
    took: Duration,
}

fn get_indexed(addr: SocketAddr, path: &str) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into();
    let started = Instant::now();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|error| panic!("GET {path}: {error}"));
    let took = started.elapsed();
    let index = response
        .headers()
        .get("X-Consul-Index")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no numeric X-Consul-Index"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        index,
        took,
    }
}

/// Waits until the agent's HTTP API answers.
fn serving(agent: &Agent) {
    wait_for(
        Duration::from_secs(20),
        &format!("{} to serve", agent.name),
        || agent.get("/v1/agent/self").map(|_| ()),
    );
}

fn register(agent: &Agent, registration: Value) {
    serving(agent);
    let (status, body) = agent.register_service(&registration).unwrap();
    assert_eq!(status, 200, "registration on {}: {body}", agent.name);
}

/// The `(Node, Address)` pairs `/v1/catalog/service/{service}` lists.
fn instances(agent: &Agent, service: &str) -> Result<Vec<(String, String)>, String> {
    let body = agent.get(&format!("/v1/catalog/service/{service}"))?;
    Ok(body
        .as_array()
        .ok_or("not an array")?
        .iter()
        .map(|entry| {
            (
                entry["Node"].as_str().unwrap_or_default().to_string(),
                entry["Address"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn expect_instances(agent: &Agent, service: &str, expected: &[(String, String)]) {
    wait_for(
        Duration::from_secs(20),
        &format!("{} to list {service} on {expected:?}", agent.name),
        || {
            let seen = instances(agent, service)?;
            if seen == expected {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
}

// ---------------------------------------------------------------------
// Defect 10: a duplicate node name silently hid the other agent.
// ---------------------------------------------------------------------

#[test]
fn a_newcomer_whose_name_is_taken_refuses_to_join_and_hides_nothing() {
    let first_root = tempfile::tempdir().unwrap();
    let second_root = tempfile::tempdir().unwrap();
    let mut holder = Agent::start(first_root.path(), AgentOptions::named("dup"));
    let watcher = Agent::start(first_root.path(), AgentOptions::joining("watcher", &holder));
    register(&holder, json!({"Name": "pay", "ID": "pay-1", "Port": 7000}));
    let pay_on_holder = vec![("dup".to_string(), holder.ip.to_string())];
    expect_instances(&holder, "pay", &pay_on_holder);
    expect_instances(&watcher, "pay", &pay_on_holder);

    // Another agent, its own data dir, the same name, joining the holder.
    let mut newcomer = Agent::start(second_root.path(), AgentOptions::joining("dup", &holder));
    let started = Instant::now();
    let code = newcomer.wait_exit(Duration::from_secs(30));
    let log = newcomer.log();
    assert!(
        matches!(code, Some(code) if code != 0),
        "the newcomer should exit non-zero within 30 s, got {code:?}; its log:\n{log}"
    );
    eprintln!("the newcomer refused to join in {:?}", started.elapsed());
    let holder_addr = holder.gossip_addr().to_string();
    assert!(
        log.lines()
            .any(|line| line.contains("dup") && line.contains(&holder_addr)),
        "no line of the newcomer's log names `dup` and {holder_addr}:\n{log}"
    );

    // The holder's service was never hidden, and stays listed.
    for _ in 0..20 {
        for agent in [&holder, &watcher] {
            assert_eq!(
                instances(agent, "pay").unwrap(),
                pay_on_holder,
                "{} lost the holder's service",
                agent.name
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The holder restarts with its own data dir: same name, no conflict.
    holder.restart();
    serving(&holder);
    expect_instances(&watcher, "pay", &pay_on_holder);
    expect_instances(&holder, "pay", &pay_on_holder);
    std::thread::sleep(Duration::from_secs(2));
    assert!(holder.is_running(), "the restarted holder exited");
}

#[test]
fn an_agent_that_moved_address_keeps_its_name() {
    // Same data dir, new address: its own earlier identity is not a
    // conflict, whether or not the cluster has noticed it is gone.
    let root = tempfile::tempdir().unwrap();
    let watcher = Agent::start(root.path(), AgentOptions::named("watcher"));
    let mut mover = Agent::start(root.path(), AgentOptions::joining("mover", &watcher));
    register(&mover, json!({"Name": "pay", "ID": "pay-1", "Port": 7000}));
    expect_instances(
        &watcher,
        "pay",
        &[("mover".to_string(), mover.ip.to_string())],
    );

    // Killed and started at once elsewhere, before the cluster's failure
    // detector has declared the old address down.
    mover.kill();
    let mut moved = Agent::start(root.path(), AgentOptions::joining("mover", &watcher));
    assert_ne!(moved.ip, mover.ip);
    expect_instances(
        &watcher,
        "pay",
        &[("mover".to_string(), moved.ip.to_string())],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        moved.is_running(),
        "the moved agent exited:\n{}",
        moved.log()
    );
}

// ---------------------------------------------------------------------
// Defect 12: X-Consul-Index started again at 1 after a restart.
// ---------------------------------------------------------------------

#[test]
fn the_index_keeps_growing_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(root.path(), AgentOptions::named("solo"));
    serving(&agent);
    // A few changes so the index moves past its first values.
    for i in 0..5 {
        register(
            &agent,
            json!({"Name": "web", "ID": format!("web-{i}"), "Port": 8000 + i}),
        );
    }
    assert_eq!(agent.kv_put("config/before", "1"), Ok(true));
    let before = get_indexed(agent.http_addr(), "/v1/catalog/services");
    assert_eq!(before.status, 200);
    let kv_before = get_indexed(agent.http_addr(), "/v1/kv/config/before");
    let old_index = before.index.max(kv_before.index);

    agent.restart();
    serving(&agent);

    // A client that still holds the old index gets an answer at once, and
    // the index it gets is larger than the one it held.
    let after = get_indexed(
        agent.http_addr(),
        &format!("/v1/catalog/services?index={old_index}&wait=30s"),
    );
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(
        after.took < Duration::from_secs(5),
        "a blocking query with the pre-restart index {old_index} waited {:?}",
        after.took
    );
    assert!(
        after.index > old_index,
        "X-Consul-Index went back from {old_index} to {} after the restart",
        after.index
    );

    // The KV's indexes move on too: a write after the restart has a larger
    // ModifyIndex than any index a client saw before it, and the index of
    // a read is never below the ModifyIndex it returns.
    assert_eq!(agent.kv_put("config/after", "2"), Ok(true));
    let kv_after = get_indexed(agent.http_addr(), "/v1/kv/config/after");
    assert_eq!(kv_after.status, 200, "{}", kv_after.body);
    let modify = kv_after.body[0]["ModifyIndex"].as_u64().unwrap();
    assert!(
        modify > old_index,
        "ModifyIndex {modify} after the restart is not above the old index {old_index}"
    );
    assert!(
        kv_after.index >= modify,
        "X-Consul-Index {} is below the ModifyIndex {modify} it answers with",
        kv_after.index
    );
    // A blocking read of the key with the old index answers at once too.
    let kv_blocking = get_indexed(
        agent.http_addr(),
        &format!("/v1/kv/config/before?index={old_index}&wait=30s"),
    );
    assert!(kv_blocking.took < Duration::from_secs(5));
    assert_eq!(kv_blocking.body[0]["Key"], "config/before");
}

#[test]
fn an_index_from_the_future_is_answered_at_once() {
    // Consul's rule: an index beyond the current one means the client's
    // view is from elsewhere (or before a reset): answer now.
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), AgentOptions::named("solo"));
    serving(&agent);
    let now = get_indexed(agent.http_addr(), "/v1/catalog/services");
    let future = now.index.saturating_add(1_000_000);
    let answer = get_indexed(
        agent.http_addr(),
        &format!("/v1/catalog/services?index={future}&wait=20s"),
    );
    assert_eq!(answer.status, 200);
    assert!(
        answer.took < Duration::from_secs(5),
        "an index ahead of the agent's waited {:?}",
        answer.took
    );
}

// ---------------------------------------------------------------------
// Defect 13: the stats tick woke every blocking query every 2 s.
// ---------------------------------------------------------------------

/// Three idle agents; `web` registered on node-1.
fn idle_cluster() -> Cluster {
    let cluster = Cluster::start(3);
    let agents = &cluster.agents;
    register(
        &agents[1],
        json!({"Name": "web", "ID": "web-1", "Port": 8080}),
    );
    for agent in agents {
        expect_instances(agent, "web", &[("node-1".into(), agents[1].ip.to_string())]);
    }
    cluster
}

/// `Stats.blocking.wakeups` of `/v1/agent/self`: how many times a waiting
/// blocking query was woken to recompute its answer.
fn wakeups(agent: &Agent) -> u64 {
    let body = agent.get("/v1/agent/self").unwrap();
    body["Stats"]["blocking"]["wakeups"]
        .as_u64()
        .unwrap_or_else(|| panic!("no Stats.blocking.wakeups in {}", body["Stats"]))
}

#[test]
fn a_blocking_query_on_an_idle_cluster_sleeps_until_a_change() {
    let cluster = idle_cluster();
    let agents = &cluster.agents;
    // Let the joins' own changes settle.
    std::thread::sleep(Duration::from_secs(3));
    let agent = &agents[0];
    let current = get_indexed(agent.http_addr(), "/v1/health/service/web");

    // Nothing changes: the query runs its whole wait, and nothing woke it.
    let woken_before = wakeups(agent);
    let quiet = get_indexed(
        agent.http_addr(),
        &format!("/v1/health/service/web?index={}&wait=6s", current.index),
    );
    assert!(
        quiet.took >= Duration::from_millis(5500),
        "a blocking query on an idle cluster returned after {:?}",
        quiet.took
    );
    assert_eq!(quiet.body, current.body);
    let woken = wakeups(agent) - woken_before;
    assert_eq!(woken, 0, "an idle 6 s wait was woken {woken} times");

    // A change to its result still wakes it at once.
    let index = quiet.index;
    let waiting = std::thread::spawn({
        let addr = agent.http_addr();
        move || {
            get_indexed(
                addr,
                &format!("/v1/health/service/web?index={index}&wait=60s"),
            )
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let changed_at = Instant::now();
    register(
        &agents[2],
        json!({"Name": "web", "ID": "web-2", "Port": 8081}),
    );
    let woken = waiting.join().unwrap();
    let delay = changed_at.elapsed();
    assert!(
        delay < Duration::from_secs(5),
        "the change woke the query only after {delay:?}"
    );
    assert_eq!(
        woken.body.as_array().map(Vec::len),
        Some(2),
        "{}",
        woken.body
    );
    assert!(woken.index > index);
}
