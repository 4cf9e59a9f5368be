//! Membership with real processes: join, failure, graceful leave, restart.

use std::time::{Duration, Instant};

use shoal_tests::{Cluster, wait_for};

const ALIVE: u64 = 1;
const LEFT: u64 = 3;
const FAILED: u64 = 4;

fn names(statuses: &[(usize, u64)]) -> Vec<(String, u64)> {
    statuses
        .iter()
        .map(|(i, status)| (format!("node-{i}"), *status))
        .collect()
}

#[test]
fn five_agents_join_detect_failure_and_leave_then_rejoin() {
    let started = Instant::now();
    let mut cluster = Cluster::start(5);
    let all: Vec<usize> = (0..5).collect();

    // Everyone sees 5 alive members, through the API ...
    cluster.wait_members(
        &all,
        &names(&[(0, ALIVE), (1, ALIVE), (2, ALIVE), (3, ALIVE), (4, ALIVE)]),
        Duration::from_secs(15),
    );
    eprintln!("5 agents converged in {:?}", started.elapsed());

    // ... and through `shoal members --format json`.
    for agent in &cluster.agents {
        let output = agent.cli(&["members", "--format", "json"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let members: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let alive = members
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["Status"] == ALIVE && m["StatusText"] == "alive")
            .count();
        assert_eq!(alive, 5, "{} sees {members}", agent.name);
    }
    let generation_before = generation_of(&cluster, 0, "node-3");

    // SIGKILL node-3: the others report it failed.
    cluster.agents[3].kill();
    let killed = Instant::now();
    let rest = [0, 1, 2, 4];
    cluster.wait_members(
        &rest,
        &names(&[(0, ALIVE), (1, ALIVE), (2, ALIVE), (3, FAILED), (4, ALIVE)]),
        Duration::from_secs(30),
    );
    eprintln!("SIGKILL detected by all in {:?}", killed.elapsed());

    // SIGTERM node-4: the others report it left, not failed, and it exits 0.
    cluster.agents[4].signal(libc::SIGTERM);
    assert_eq!(
        cluster.agents[4].wait_exit(Duration::from_secs(10)),
        Some(0),
        "graceful exit code"
    );
    let survivors = [0, 1, 2];
    cluster.wait_members(
        &survivors,
        &names(&[(0, ALIVE), (1, ALIVE), (2, ALIVE), (3, FAILED), (4, LEFT)]),
        Duration::from_secs(15),
    );

    // Restart both with their data dirs: they come back with a higher
    // generation and everyone sees 5 alive again.
    cluster.agents[3].restart();
    cluster.agents[4].restart();
    cluster.wait_members(
        &all,
        &names(&[(0, ALIVE), (1, ALIVE), (2, ALIVE), (3, ALIVE), (4, ALIVE)]),
        Duration::from_secs(30),
    );
    let generation_after = generation_of(&cluster, 0, "node-3");
    assert!(
        generation_after > generation_before,
        "generation {generation_after} should exceed {generation_before}"
    );
}

fn generation_of(cluster: &Cluster, observer: usize, name: &str) -> u64 {
    wait_for(Duration::from_secs(5), "a generation", || {
        let members = cluster.agents[observer].get("/v1/agent/members")?;
        members
            .as_array()
            .and_then(|all| all.iter().find(|m| m["Name"] == name))
            .and_then(|m| m["Generation"].as_u64())
            .ok_or_else(|| format!("{name} not in {members}"))
    })
}
