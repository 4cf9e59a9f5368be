//! `sd_notify` as systemd sees it: each test points a real agent at a
//! Unix datagram socket it binds (`NOTIFY_SOCKET`, and `WATCHDOG_USEC`)
//! and reads what comes: READY=1 (alone, after joining, or after an
//! unreachable seed's bound), STATUS= lines, WATCHDOG=1 pings that stop
//! while the process is stopped, RELOADING=1/READY=1 around a SIGHUP
//! reload, STOPPING=1 on SIGTERM. The installed package runs the same
//! checks on its own unit (tests/tests/package.rs).

use std::time::{Duration, Instant};

use shoal_tests::notify::{NotifyListener, count};
use shoal_tests::{Agent, AgentOptions, http_json, unique_loopback, wait_for};

/// Starts `name` with `config` (a file) pointed at `listener`, with a
/// 2 s watchdog: pings every second.
fn start_notified(
    root: &std::path::Path,
    name: &str,
    config: &str,
    listener: &NotifyListener,
    join: Vec<std::net::SocketAddr>,
    args: &[&str],
) -> Agent {
    let mut options =
        AgentOptions::with_config_file(&root.join(format!("{name}.toml")), config, args);
    options.name = name.into();
    options.join = join;
    options.env = vec![
        (
            "NOTIFY_SOCKET".into(),
            listener.path().display().to_string(),
        ),
        ("WATCHDOG_USEC".into(), "2000000".into()),
    ];
    Agent::start(root, options)
}

#[test]
fn alone_it_is_ready_at_once_reports_status_feeds_the_watchdog_reloads_and_stops() {
    let root = tempfile::tempdir().unwrap();
    let mut listener = NotifyListener::bind();
    let env_file = root.path().join("check-env");
    // A failing exec check: its status shows in STATUS=, and what it
    // inherits shows that children don't get the agent's notify socket.
    let config = format!(
        "[[checks]]\nid = \"failing\"\nargs = [\"sh\", \"-c\", \"env > {}; exit 2\"]\ninterval = \"1s\"\n",
        env_file.display()
    );
    let started = Instant::now();
    let mut agent = start_notified(root.path(), "solo", &config, &listener, vec![], &[]);

    let ready = listener.wait_for("READY=1", Duration::from_secs(20));
    eprintln!(
        "ExecStart to READY=1, no seeds: {:?}",
        ready.at.duration_since(started)
    );
    let status = ready.value("STATUS").expect("READY=1 comes with a STATUS=");
    assert!(
        status.starts_with("members alive: 1, checks critical: "),
        "{status}"
    );
    // The API answers once READY=1 was sent.
    agent
        .get("/v1/agent/self")
        .expect("the API answers after READY=1");

    // Status lines follow the checks (looked at every 5 s), unless the
    // check had already run when READY=1 was sent.
    let failing = "members alive: 1, checks critical: 1";
    if status != failing {
        listener.wait_for(&format!("STATUS={failing}"), Duration::from_secs(20));
    }
    let inherited = wait_for(Duration::from_secs(10), "the check to run", || {
        std::fs::read_to_string(&env_file).map_err(|error| error.to_string())
    });
    assert!(
        !inherited.contains("NOTIFY_SOCKET") && !inherited.contains("WATCHDOG_USEC"),
        "children must not inherit the agent's notify socket:\n{inherited}"
    );

    // WATCHDOG_USEC = 2 s: a ping every second.
    let pings = count(
        &listener.collect_for(Duration::from_millis(3500)),
        "WATCHDOG=1",
    );
    assert!((2..=6).contains(&pings), "{pings} pings in 3.5 s");

    // A stopped process sends nothing: systemd would restart it.
    let pid = agent.pid().unwrap();
    let while_stopped = listener.watchdog_pings_while_stopped(pid, Duration::from_secs(3));
    assert_eq!(while_stopped, 0, "pings while stopped");
    listener.wait_for("WATCHDOG=1", Duration::from_secs(5));

    // SIGHUP: RELOADING=1, then READY=1 again.
    agent.signal(libc::SIGHUP);
    let reloading = listener.wait_for("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.value("MONOTONIC_USEC").is_some(), "{reloading:?}");
    let ready_again = listener.wait_for("READY=1", Duration::from_secs(10));
    assert!(ready_again.at >= reloading.at);

    // SIGTERM: STOPPING=1, then a graceful exit.
    agent.signal(libc::SIGTERM);
    listener.wait_for("STOPPING=1", Duration::from_secs(10));
    assert_eq!(
        agent.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        agent.log()
    );
}

#[test]
fn an_unreachable_seed_delays_ready_by_join_ready_timeout_at_most() {
    let root = tempfile::tempdir().unwrap();
    let mut listener = NotifyListener::bind();
    // Nothing listens there.
    let seed = std::net::SocketAddr::new(unique_loopback(), shoal_tests::GOSSIP_PORT);
    let started = Instant::now();
    let _agent = start_notified(
        root.path(),
        "lonely",
        "join_ready_timeout = \"2s\"\n",
        &listener,
        vec![seed],
        &[],
    );
    let joining = listener.wait_for("STATUS=", Duration::from_secs(20));
    assert!(!joining.has("READY=1"), "{joining:?}");
    let status = joining.value("STATUS").unwrap();
    assert!(
        status.starts_with("joining: waiting up to 2s for a seed ("),
        "{status}"
    );
    let ready = listener.wait_for("READY=1", Duration::from_secs(20));
    let waited = ready.at.duration_since(started);
    eprintln!("ExecStart to READY=1, unreachable seed, join_ready_timeout 2s: {waited:?}");
    assert!(waited >= Duration::from_secs(2), "READY=1 after {waited:?}");
    let status = ready.value("STATUS").unwrap();
    assert!(
        status
            == format!(
                "alone: no seed answered within 2s; retrying ({seed}); members alive: 1, checks critical: 0"
            ),
        "{status}"
    );
}

#[test]
fn ready_waits_for_a_live_seed_to_answer() {
    let root = tempfile::tempdir().unwrap();
    let seed = Agent::start_serving(root.path(), "seed", &[]);
    let mut listener = NotifyListener::bind();
    let started = Instant::now();
    // A bound far beyond the test's: READY=1 can only come from the join.
    let joiner = start_notified(
        root.path(),
        "joiner",
        "join_ready_timeout = \"10m\"\n",
        &listener,
        vec![seed.gossip_addr()],
        &[],
    );
    let ready = listener.wait_for("READY=1", Duration::from_secs(30));
    eprintln!(
        "ExecStart to READY=1, live seed: {:?}",
        ready.at.duration_since(started)
    );
    assert_eq!(
        ready.value("STATUS"),
        Some("members alive: 2, checks critical: 0")
    );
    wait_for(
        Duration::from_secs(10),
        "the joiner to list the seed",
        || {
            let members = joiner.members()?;
            (members.len() == 2)
                .then_some(())
                .ok_or(format!("{members:?}"))
        },
    );
}

#[test]
fn a_wedged_gossip_loop_stops_the_watchdog_while_the_rest_of_the_agent_runs() {
    let root = tempfile::tempdir().unwrap();
    let mut listener = NotifyListener::bind();
    let agent = start_notified(
        root.path(),
        "wedged",
        "",
        &listener,
        vec![],
        &["--fault-injection"],
    );
    listener.wait_for("READY=1", Duration::from_secs(20));
    let before = count(
        &listener.collect_for(Duration::from_millis(2500)),
        "WATCHDOG=1",
    );
    assert!(before >= 2, "{before} pings in 2.5 s");

    // The test hook blocks the core loop's thread for 4 s: only the
    // loop stops, the HTTP API (another thread) keeps answering.
    let asked_at = Instant::now();
    let (status, body) = http_json(
        "PUT",
        agent.http_addr(),
        "/v1/shoal/fault?stall_loop=4s",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    listener.collect_for(Duration::from_millis(300));
    agent
        .get("/v1/agent/self")
        .expect("the API answers while the core loop is wedged");
    let window = Duration::from_millis(3500).saturating_sub(asked_at.elapsed());
    assert!(
        window >= Duration::from_secs(2),
        "the API took until {:?} after the stall began",
        asked_at.elapsed()
    );
    let while_wedged = listener.collect_for(window);
    assert_eq!(count(&while_wedged, "WATCHDOG=1"), 0, "{while_wedged:?}");
    listener.wait_for("WATCHDOG=1", Duration::from_secs(5));
}
