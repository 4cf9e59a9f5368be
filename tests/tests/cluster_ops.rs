//! Runtime cluster operations with real agents, as an operator runs them:
//! `shoal join` / `PUT /v1/agent/join/:address`, `shoal force-leave
//! [-prune]` / `PUT /v1/agent/force-leave/:node`, the reap timeouts'
//! minimums, and a refused duplicate-name newcomer. After each, every
//! agent must show the same member list.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_tests::{
    Agent, AgentOptions, Cluster, GOSSIP_PORT, QUICK_GOSSIP, http_json, run_agent_until_exit,
    unique_loopback,
};

const TOKEN: &str = "join-token";

/// Consul's numeric member statuses.
const ALIVE: u64 = 1;
const LEFT: u64 = 3;
const FAILED: u64 = 4;

fn sorted_members(agent: &Agent) -> Result<Vec<(String, u64)>, String> {
    let mut members = agent.members()?;
    members.sort();
    Ok(members)
}

/// Waits until every agent in `agents` lists exactly `expected`; returns
/// how long that took. Each round asks every agent once, 10 ms apart, so
/// the time is a measurement to about one round (a few ms on loopback).
fn wait_same_list(agents: &[&Agent], expected: &[(&str, u64)], timeout: Duration) -> Duration {
    let mut expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(name, status)| (name.to_string(), *status))
        .collect();
    expected.sort();
    let started = Instant::now();
    loop {
        let mut last = None;
        for agent in agents {
            match sorted_members(agent) {
                Ok(seen) if seen == expected => {}
                Ok(seen) => last = Some(format!("{} lists {seen:?}", agent.name)),
                Err(error) => last = Some(format!("{}: {error}", agent.name)),
            }
        }
        let Some(last) = last else {
            return started.elapsed();
        };
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for every agent to list {expected:?}; last observed: {last}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks for `span` that every agent keeps listing `expected`.
fn stays_listed(agents: &[&Agent], expected: &[(&str, u64)], span: Duration) {
    let mut expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(name, status)| (name.to_string(), *status))
        .collect();
    expected.sort();
    let end = Instant::now() + span;
    while Instant::now() < end {
        for agent in agents {
            let seen = sorted_members(agent).unwrap();
            assert_eq!(seen, expected, "{} changed its list", agent.name);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn put(agent: &Agent, path: &str) -> (u16, serde_json::Value) {
    http_json("PUT", agent.http_addr(), path, None).unwrap()
}

fn error_text(body: &serde_json::Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An address where no agent listens.
fn nobody() -> SocketAddr {
    SocketAddr::new(unique_loopback(), GOSSIP_PORT)
}

#[test]
fn join_contacts_each_address_says_how_many_answered_and_every_agent_agrees() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start_serving(root.path(), "join-a", &[]);
    let b = Agent::start_serving(root.path(), "join-b", &[]);
    let c = Agent::start_serving(root.path(), "join-c", &[]);
    let dead = nobody();

    // One of two addresses answers: joined, as `consul join` says it.
    let output = a.cli(&["join", &b.gossip_addr().to_string(), &dead.to_string()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "Successfully joined cluster by contacting 1 nodes."
    );
    assert!(
        stderr(&output).contains(&format!("Error joining address '{dead}'")),
        "{}",
        stderr(&output)
    );

    // None answers: exit 1.
    let output = a.cli(&["join", &dead.to_string()]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("Failed to join any nodes."),
        "{}",
        stderr(&output)
    );

    // The HTTP route, from the third agent.
    let (status, body) = put(&c, &format!("/v1/agent/join/{}", a.gossip_addr()));
    assert_eq!(status, 200, "{body}");
    wait_same_list(
        &[&a, &b, &c],
        &[("join-a", ALIVE), ("join-b", ALIVE), ("join-c", ALIVE)],
        Duration::from_secs(30),
    );

    // An IP alone means the default gossip port, 7946 (nobody listens
    // there in this test).
    let (status, body) = put(&a, &format!("/v1/agent/join/{}", b.ip));
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains(&format!("{}:7946", b.ip)),
        "{body}"
    );
    // Consul's WAN pool and a malformed address: 400, saying why.
    let (status, body) = put(&a, &format!("/v1/agent/join/{}?wan=1", b.gossip_addr()));
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("wan"), "{body}");
    let (status, body) = put(&a, "/v1/agent/join/not%20an%20address");
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("address"), "{body}");

    // Each attempt is in the log: reached, or not with the address and why.
    let log = a.log();
    assert!(log.contains("join: reached"), "{log}");
    assert!(
        log.contains(&format!("join: could not reach {dead}")),
        "{log}"
    );
    // Nothing in the failed attempts changed the list.
    stays_listed(
        &[&a, &b, &c],
        &[("join-a", ALIVE), ("join-b", ALIVE), ("join-c", ALIVE)],
        Duration::from_secs(2),
    );
}

#[test]
fn join_needs_the_token_when_one_is_set() {
    let root = tempfile::tempdir().unwrap();
    let guarded = Agent::start_serving(root.path(), "guarded", &["--acl-token", TOKEN]);
    let other = Agent::start_serving(root.path(), "other", &[]);
    let path = format!("/v1/agent/join/{}", other.gossip_addr());
    let (status, body) = put(&guarded, &path);
    assert_eq!(status, 403, "{body}");
    let (status, body) = put(&guarded, "/v1/agent/force-leave/other");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        guarded.members().unwrap().len(),
        1,
        "joined without the token"
    );
    let (status, body) = put(&guarded, &format!("{path}?token={TOKEN}"));
    assert_eq!(status, 200, "{body}");
    wait_same_list(
        &[&guarded, &other],
        &[("guarded", ALIVE), ("other", ALIVE)],
        Duration::from_secs(30),
    );
}

/// Four agents with frequent anti-entropy (so anything an exchange would
/// bring back shows within seconds); node-3 is killed and seen failed by
/// the other three.
fn cluster_with_a_failed_member() -> (Cluster, tempfile::TempDir) {
    let configs = tempfile::tempdir().unwrap();
    let dir = configs.path().to_path_buf();
    let mut cluster = Cluster::start_with(4, move |i| {
        AgentOptions::with_config_file(&dir.join(format!("gossip-{i}.toml")), QUICK_GOSSIP, &[])
    });
    cluster.wait_all_alive(Duration::from_secs(60));
    cluster.agents[3].kill();
    let [a, b, c, _] = &cluster.agents[..] else {
        unreachable!()
    };
    wait_same_list(
        &[a, b, c],
        &[
            ("node-0", ALIVE),
            ("node-1", ALIVE),
            ("node-2", ALIVE),
            ("node-3", FAILED),
        ],
        Duration::from_secs(60),
    );
    (cluster, configs)
}

#[test]
fn force_leave_moves_a_failed_member_to_left_on_every_agent() {
    let (cluster, _configs) = cluster_with_a_failed_member();
    let [a, b, c, _] = &cluster.agents[..] else {
        unreachable!()
    };
    let live = [("node-0", ALIVE), ("node-1", ALIVE), ("node-2", ALIVE)];

    // A live member, an unknown name, the agent itself: refused, nothing
    // changes.
    let output = a.cli(&["force-leave", "node-1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is alive, not failed"),
        "{}",
        stderr(&output)
    );
    let (status, body) = put(a, "/v1/agent/force-leave/node-1");
    assert_eq!(status, 409, "{body}");
    let (status, body) = put(a, "/v1/agent/force-leave/nobody-here");
    assert_eq!(status, 404, "{body}");
    assert!(
        error_text(&body).contains("no member named `nobody-here`"),
        "{body}"
    );
    let (status, body) = put(a, "/v1/agent/force-leave/node-0");
    assert_eq!(status, 409, "{body}");
    let (status, body) = put(a, "/v1/agent/force-leave/node-3?wan");
    assert_eq!(status, 400, "{body}");

    // The failed member moves to left on every agent.
    let started = Instant::now();
    let output = a.cli(&["force-leave", "node-3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let answered = started.elapsed();
    let mut expected = live.to_vec();
    expected.push(("node-3", LEFT));
    let spread = wait_same_list(&[a, b, c], &expected, Duration::from_secs(30));
    println!(
        "force-leave: the CLI returned after {} ms; every agent listed node-3 as left {} ms later",
        answered.as_millis(),
        spread.as_millis()
    );
    // And stays left (anti-entropy runs every ~2 s here).
    stays_listed(&[a, b, c], &expected, Duration::from_secs(5));

    // A left member can be pruned too: gone everywhere.
    let output = b.cli(&["force-leave", "-prune", "node-3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    wait_same_list(&[a, b, c], &live, Duration::from_secs(30));
}

#[test]
fn force_leave_prune_removes_a_failed_member_from_every_agent_now() {
    let (cluster, _configs) = cluster_with_a_failed_member();
    let [a, b, c, _] = &cluster.agents[..] else {
        unreachable!()
    };
    let live = [("node-0", ALIVE), ("node-1", ALIVE), ("node-2", ALIVE)];
    let started = Instant::now();
    let (status, body) = put(c, "/v1/agent/force-leave/node-3?prune");
    assert_eq!(status, 200, "{body}");
    let answered = started.elapsed();
    let spread = wait_same_list(&[a, b, c], &live, Duration::from_secs(30));
    println!(
        "force-leave -prune: answered after {} ms; node-3 was off every agent's list {} ms later",
        answered.as_millis(),
        spread.as_millis()
    );
    // Nothing brings it back: not gossip still in flight, not
    // anti-entropy (every ~2 s here), not the reconnect attempts.
    stays_listed(&[a, b, c], &live, Duration::from_secs(8));
}

#[test]
fn a_refused_duplicate_name_newcomer_is_not_listed_by_anyone() {
    let cluster = Cluster::start(3);
    cluster.wait_all_alive(Duration::from_secs(60));
    // Its own root: its data dir must not be the live node-1's.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut newcomer = Agent::start(
        elsewhere.path(),
        AgentOptions::joining("node-1", &cluster.agents[0]),
    );
    let code = newcomer.wait_exit(Duration::from_secs(60));
    assert!(
        code.is_some_and(|code| code != 0),
        "the newcomer did not exit with an error: {code:?}\n{}",
        newcomer.log()
    );
    let agents: Vec<&Agent> = cluster.agents.iter().collect();
    let live = [("node-0", ALIVE), ("node-1", ALIVE), ("node-2", ALIVE)];
    wait_same_list(&agents, &live, Duration::from_secs(30));
    stays_listed(&agents, &live, Duration::from_secs(5));
}

#[test]
fn reap_timeouts_below_their_minimum_are_refused_naming_the_key() {
    let root = tempfile::tempdir().unwrap();
    for (key, value, minimum) in [
        ("reconnect_timeout", "1h", "8h"),
        ("tombstone_timeout", "10m", "1h"),
    ] {
        let config = format!("[gossip]\n{key} = \"{value}\"\n");
        let (code, output) = run_agent_until_exit(root.path(), &format!("short-{key}"), &config);
        assert_ne!(code, Some(0), "{output}");
        assert!(code.is_some(), "the agent started: {output}");
        assert!(output.contains(&format!("gossip.{key}")), "{output}");
        assert!(output.contains(minimum), "{output}");
    }
    // At the minimum: accepted (the agent runs until killed).
    let config = "[gossip]\nreconnect_timeout = \"8h\"\ntombstone_timeout = \"1h\"\n";
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "at-minimum".into(),
            ..AgentOptions::with_config_file(&root.path().join("ok.toml"), config, &[])
        },
    );
    agent.wait_serving();
}
