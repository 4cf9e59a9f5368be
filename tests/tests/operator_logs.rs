//! The log an operator follows, on real agents: member lines (a `kill -9`
//! shows as a `WARN` "member … failed"), check transitions, joins that
//! fail with the reason, rate limiting under churn, the log streamed by
//! `GET /v1/agent/monitor` and `shoal monitor` (budgets and token), and an
//! agent with seeds that never joined shown as not ready. Also: a stderr
//! nobody reads doesn't stall the core loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{
    Agent, AgentOptions, Cluster, TinyHttp, http_json, shoal_bin, unique_loopback, wait_for,
};

const LONG: Duration = Duration::from_secs(60);

/// A `shoal monitor` process whose output is collected as it arrives.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(agent: &Agent, args: &[&str]) -> Monitor {
        let mut child = Command::new(shoal_bin())
            .arg("monitor")
            .args(args)
            .env("SHOAL_HTTP_ADDR", agent.http_addr().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shoal monitor");
        let stdout = child.stdout.take().expect("monitor stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Monitor { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        wait_for(LONG, what, || {
            // The guard must be gone before `text` locks again.
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|line| matches(line))
                .cloned();
            found.ok_or_else(|| format!("monitor so far:\n{}", self.text()))
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line of `agent`'s log that `matches`, waiting for it.
fn wait_log_line(agent: &Agent, what: &str, matches: impl Fn(&str) -> bool) -> String {
    wait_for(LONG, what, || {
        let log = agent.log();
        log.lines()
            .find(|line| matches(line))
            .map(str::to_string)
            .ok_or_else(|| format!("{}'s log so far:\n{log}", agent.name))
    })
}

/// Opens `GET path` on `addr` and returns the stream once the headers
/// are in, with the status line.
fn open_stream(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (String, BufReader<TcpStream>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let token = token
        .map(|t| format!("X-Consul-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{token}\r\n").expect("send request");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    (status.trim().to_string(), reader)
}

#[test]
fn a_killed_peer_is_a_warn_line_in_the_log_and_in_the_monitors() {
    let mut cluster = Cluster::start(3);
    cluster.wait_all_alive(LONG);
    let watcher = &cluster.agents[0];
    for peer in ["node-1", "node-2"] {
        wait_log_line(watcher, &format!("{peer} joined"), |line| {
            line.contains(" INFO ")
                && line.contains(&format!("member {peer} ("))
                && line.contains(") joined")
        });
    }
    // The agents run at debug; a monitor may ask for more than the agent
    // writes (trace), or less (warn).
    let text = Monitor::start(watcher, &["--log-level", "warn"]);
    let json = Monitor::start(watcher, &["--log-level", "debug", "--json"]);
    // A reload writes a line: once the debug monitor shows one, both
    // monitors (started together) follow the log.
    wait_for(LONG, "the monitors to follow the log", || {
        let _ = http_json("PUT", watcher.http_addr(), "/v1/agent/reload", None);
        std::thread::sleep(Duration::from_millis(500));
        if json.text().contains("reload") {
            Ok(())
        } else {
            Err(format!("JSON monitor so far: {}", json.text()))
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    let killed_addr = cluster.agents[2].gossip_addr();
    let killed_at = std::time::SystemTime::now();
    cluster.agents[2].kill();
    eprintln!(
        "node-2 killed (SIGKILL) at {} s since the epoch",
        killed_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    );

    let failed = |line: &str| line.contains("member=node-2") && line.contains("event=\"failed\"");
    let line = wait_log_line(&cluster.agents[0], "node-2 failed in the log", failed);
    eprintln!("log line: {line}");
    assert!(line.contains(" WARN "), "a failed member is a WARN: {line}");
    assert!(
        line.contains("member=node-2"),
        "the name as a field: {line}"
    );
    assert!(
        line.contains(&format!("addr={killed_addr}")),
        "the address as a field: {line}"
    );
    assert!(line.contains("event=\"failed\""), "{line}");

    let streamed = text.wait_line("the failure in the text monitor", failed);
    assert!(streamed.contains(" WARN "), "{streamed}");
    assert!(
        !text.text().contains(" INFO ") && !text.text().contains(" DEBUG "),
        "a warn monitor shows nothing below warn:\n{}",
        text.text()
    );
    let streamed = json.wait_line("the failure in the JSON monitor", |line| {
        line.contains("\"event\":\"failed\"") && line.contains("node-2")
    });
    let parsed: Value = serde_json::from_str(&streamed).expect("a JSON line");
    assert_eq!(parsed["level"], "WARN");
    assert_eq!(parsed["fields"]["member"], "node-2");
    assert_eq!(parsed["fields"]["addr"], killed_addr.to_string());
    // Debug lines reach a debug monitor though the line above is a warn:
    // a datagram that is not Shoal's is dropped with a debug line (the
    // test used to count on a debug line happening by itself, and the
    // one at 5 s went with the code-page trim).
    let watcher = &cluster.agents[0];
    let socket = std::net::UdpSocket::bind(SocketAddr::new(unique_loopback(), 0)).unwrap();
    socket
        .send_to(b"not a shoal datagram", watcher.gossip_addr())
        .unwrap();
    json.wait_line("a debug line in the debug monitor", |line| {
        line.contains("\"level\":\"DEBUG\"")
    });
    // node-1 saw it too.
    let seen = wait_log_line(&cluster.agents[1], "node-1 logs node-2 failed", failed);
    assert!(seen.contains(" WARN "), "{seen}");
}

#[test]
fn a_failing_check_is_a_warn_line_and_its_recovery_an_info_line() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "checked", &[]);
    let backend_addr = SocketAddr::new(unique_loopback(), 18080);
    let mut backend = TinyHttp::start(backend_addr, 200);
    let (status, body) = agent
        .register_service(&json!({
            "ID": "web-1",
            "Name": "web",
            "Port": 18080,
            "Check": {"CheckID": "web-1-http", "HTTP": format!("http://{backend_addr}/health"), "Interval": "500ms"},
        }))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let up = wait_log_line(&agent, "the check passing", |line| {
        line.contains("check web-1-http of service web-1 is now passing")
    });
    assert!(up.contains(" INFO "), "{up}");
    backend.stop();
    let _failing = TinyHttp::start(backend_addr, 503);
    let down = wait_log_line(&agent, "the check critical", |line| {
        line.contains("check web-1-http of service web-1 is now critical")
    });
    eprintln!("log line: {down}");
    assert!(down.contains(" WARN "), "{down}");
    assert!(
        down.contains("check=web-1-http") && down.contains("service=web-1"),
        "{down}"
    );
    assert!(
        down.contains("from=\"passing\"") && down.contains("to=\"critical\""),
        "{down}"
    );
    assert!(
        down.contains("503"),
        "the output excerpt names the answer: {down}"
    );
}

#[test]
fn joins_that_fail_say_why_and_the_agent_is_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let other = Agent::start_serving(root.path(), "other-cluster", &["--cluster", "elsewhere"]);
    let nothing = SocketAddr::new(unique_loopback(), 7946);
    let lonely = Agent::start(
        root.path(),
        AgentOptions {
            join: vec![nothing, other.http_addr(), other.gossip_addr()],
            ..AgentOptions::named("lonely")
        },
    );
    lonely.wait_serving();
    let alone = wait_log_line(&lonely, "the alone warning", |line| {
        line.contains("this agent is alone")
    });
    assert!(alone.contains(" WARN "), "{alone}");
    for (seed, reason) in [
        (nothing, "connection refused"),
        (other.http_addr(), "http port"),
        (other.gossip_addr(), "wrong cluster or key"),
    ] {
        let line = wait_log_line(&lonely, &format!("why {seed} is silent"), |line| {
            line.contains(&format!("cannot join through seed {seed}:"))
        });
        eprintln!("log line: {line}");
        assert!(line.contains(" WARN "), "{line}");
        assert!(
            line.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {line}"
        );
    }
    // Said once, then again only after a long interval.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lonely.log().matches("this agent is alone").count(),
        1,
        "{}",
        lonely.log()
    );

    let (status, health) = http_json("GET", lonely.http_addr(), "/health", None).unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ready"], false, "{health}");
    let reason = health["not_ready_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not joined") && reason.contains(&nothing.to_string()),
        "{health}"
    );
    let members = lonely.cli(&["members"]);
    let stderr = String::from_utf8_lossy(&members.stderr);
    assert!(members.status.success(), "{stderr}");
    assert!(
        stderr.contains("not ready: not joined"),
        "shoal members says why: {stderr}"
    );

    // Without seeds, an agent alone is ready and says nothing about it.
    let (_, health) = http_json("GET", other.http_addr(), "/health", None).unwrap();
    assert_eq!(health["ready"], true, "{health}");
    assert!(!other.log().contains("this agent is alone"));
}

#[test]
fn member_lines_are_rate_limited_with_a_suppressed_count() {
    // A newcomer joins a settled cluster of 12 and learns of all of them
    // at once (foca's join feed, then one anti-entropy exchange brings the
    // names): more member lines than a second's budget (10).
    let cluster = Cluster::start(12);
    cluster.wait_all_alive(Duration::from_secs(120));
    let newcomer = Agent::start(
        cluster.root.path(),
        AgentOptions::joining("newcomer", &cluster.agents[0]),
    );
    wait_for(
        Duration::from_secs(120),
        "the newcomer to see everyone",
        || {
            let alive = newcomer
                .members()?
                .iter()
                .filter(|(_, status)| *status == 1)
                .count();
            if alive == 13 {
                Ok(())
            } else {
                Err(format!("{alive} alive"))
            }
        },
    );
    let newcomer = &newcomer;
    let suppressed = wait_log_line(newcomer, "a suppressed line", |line| {
        line.contains("suppressed=")
    });
    eprintln!("log line: {suppressed}");
    // Joins still waiting for a name are logged within 5 s.
    std::thread::sleep(Duration::from_secs(6));
    let count: u64 = newcomer
        .log()
        .lines()
        .filter_map(|line| line.split("suppressed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum();
    let joined = newcomer
        .log()
        .lines()
        .filter(|line| line.contains(") joined"))
        .count() as u64;
    assert!(joined <= 12, "{}", newcomer.log());
    assert_eq!(
        joined + count,
        12,
        "every join is logged or counted:\n{}",
        newcomer.log()
    );
}

#[test]
fn the_monitor_is_budgeted_and_needs_the_token_when_one_is_set() {
    const TOKEN: &str = "s3cret-token";
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "guarded", &["--acl-token", TOKEN]);
    let (status, _) = open_stream(agent.http_addr(), "/v1/agent/monitor", None);
    assert!(status.contains(" 403 "), "{status}");
    let (status, _) = open_stream(
        agent.http_addr(),
        "/v1/agent/monitor?loglevel=loud",
        Some(TOKEN),
    );
    assert!(status.contains(" 400 "), "{status}");
    let mut open = Vec::new();
    for _ in 0..8 {
        let (status, stream) = open_stream(
            agent.http_addr(),
            "/v1/agent/monitor?loglevel=debug",
            Some(TOKEN),
        );
        assert!(status.contains(" 200 "), "{status}");
        open.push(stream);
    }
    let (status, mut refused) = open_stream(agent.http_addr(), "/v1/agent/monitor", Some(TOKEN));
    assert!(status.contains(" 429 "), "the ninth monitor: {status}");
    let mut body = String::new();
    let _ = refused.read_to_string(&mut body);
    // Closing one frees its place.
    drop(open.pop());
    wait_for(LONG, "a place for a new monitor", || {
        let (status, _) = open_stream(agent.http_addr(), "/v1/agent/monitor", Some(TOKEN));
        if status.contains(" 200 ") {
            Ok(())
        } else {
            Err(status)
        }
    });
    let cli = Command::new(shoal_bin())
        .args(["monitor", "--log-level", "loud"])
        .env("SHOAL_HTTP_ADDR", agent.http_addr().to_string())
        .output()
        .unwrap();
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("--log-level: unknown level `loud`"));
}

#[test]
fn a_stderr_nobody_reads_does_not_stall_the_agent() {
    // The agent's stderr is a pipe that is never read: once its buffer is
    // full, a blocking write would stop the core loop, and the peer
    // would declare this agent failed.
    let root = tempfile::tempdir().unwrap();
    let seed = Agent::start_serving(root.path(), "seed", &[]);
    let ip = unique_loopback();
    let data_dir = root.path().join("muted");
    let mut muted = Command::new(shoal_bin())
        .args([
            "agent",
            "--node",
            "muted",
            "--dns-addr",
            "off",
            "--log-level",
            "trace",
        ])
        .args(["--bind", &SocketAddr::new(ip, 7946).to_string()])
        .args(["--http-addr", &SocketAddr::new(ip, 8500).to_string()])
        .args(["--join", &seed.gossip_addr().to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _pipe = muted.stderr.take();
    wait_for(LONG, "the muted agent to join", || {
        let members = seed.members()?;
        if members
            .iter()
            .any(|(name, status)| name == "muted" && *status == 1)
        {
            Ok(())
        } else {
            Err(format!("{members:?}"))
        }
    });
    // Every garbage datagram is a debug line written from the gossip
    // loop ("dropped a datagram"): 20 s of them are far more than a pipe
    // holds (64 KiB).
    let blaster = std::net::UdpSocket::bind(SocketAddr::new(unique_loopback(), 0)).unwrap();
    let target = SocketAddr::new(ip, 7946);
    for _ in 0..20 {
        for _ in 0..500 {
            let _ = blaster.send_to(b"not a shoal datagram", target);
        }
        std::thread::sleep(Duration::from_secs(1));
        let members = seed.members().unwrap();
        assert!(
            members
                .iter()
                .any(|(name, status)| name == "muted" && *status == 1),
            "the muted agent must stay alive: {members:?}"
        );
    }
    let (status, _) = http_json("GET", SocketAddr::new(ip, 8500), "/health/live", None).unwrap();
    assert_eq!(status, 200);
    let _ = muted.kill();
    let _ = muted.wait();
}

#[test]
fn a_reload_says_what_changed() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    let options = AgentOptions::with_config_file(&config, "[tags]\nrole = \"web\"\n", &[]);
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "reloaded".into(),
            ..options
        },
    );
    agent.wait_serving();
    std::fs::write(&config, "[tags]\nrole = \"db\"\n").unwrap();
    let line = wait_log_line(&agent, "the reload line", |line| {
        line.contains("configuration reloaded")
    });
    eprintln!("log line: {line}");
    assert!(line.contains("changed tags;"), "{line}");
    assert!(line.contains("now 0 services, 0 checks"), "{line}");
}

/// A monitor sees lines below the agent's own `log_level` even from a call
/// site that fired before any monitor was attached (tracing caches, per
/// call site, whether anyone wants it: "never" while nobody watched).
#[test]
fn a_monitor_sees_info_lines_an_agent_at_warn_already_skipped() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "quiet", &["--log-level", "warn"]);
    let (status, body) = agent
        .register_service(&json!({
            "ID": "ttl-1",
            "Name": "ttl",
            "Port": 18081,
            "Check": {"CheckID": "ttl-1-check", "TTL": "600s"},
        }))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let put = |path: &str| {
        http_json("PUT", agent.http_addr(), path, None).unwrap();
    };
    // The INFO "now passing" line fires once with nobody watching.
    put("/v1/agent/check/pass/ttl-1-check");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !agent.log().contains("is now passing"),
        "the agent runs at warn"
    );
    let monitor = Monitor::start(&agent, &["--log-level", "info"]);
    // A reload's line (a call site first hit now) shows it follows.
    wait_for(LONG, "the monitor to follow the log", || {
        put("/v1/agent/reload");
        std::thread::sleep(Duration::from_millis(300));
        (!monitor.text().is_empty())
            .then_some(())
            .ok_or_else(|| "nothing yet".to_string())
    });
    put("/v1/agent/check/fail/ttl-1-check");
    monitor.wait_line("the WARN critical line in the monitor", |line| {
        line.contains("check ttl-1-check of service ttl-1 is now critical")
    });
    put("/v1/agent/check/pass/ttl-1-check");
    monitor.wait_line("the INFO passing line in the monitor", |line| {
        line.contains("check ttl-1-check of service ttl-1 is now passing")
    });
}
