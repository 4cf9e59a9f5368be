//! Who may drive the HTTP API, with real processes: the gossip keyring is a
//! secret behind the token (reads included), percent-encoded or otherwise
//! disguised paths get no further than the plain ones, exec checks need an
//! explicit opt-in, a foreign `Host` header (DNS rebinding) is refused, and
//! a stored keyring that overrides `--encrypt` says so.
//!
//! Requests are written by hand on a TCP stream so that paths and headers
//! reach the agent exactly as written (no client library normalizes them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Agent, AgentOptions, wait_for};

const TOKEN: &str = "s3cr3t-token";
const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

/// One request, byte for byte as given. `host: None` sends an HTTP/1.0
/// request without a `Host` header. Returns the status and the body.
fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut head = match host {
        Some(host) => format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n"),
        None => format!("{method} {target} HTTP/1.0\r\n"),
    };
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut stream = TcpStream::connect(addr).expect("connect to the agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?} for {method} {target}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A request from a well-behaved local client: `Host` is the agent's address.
fn call(
    agent: &Agent,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let host = agent.http_addr().to_string();
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Consul-Token", t)).into_iter().collect();
    raw(
        agent.http_addr(),
        method,
        target,
        Some(&host),
        &headers,
        body,
    )
}

fn call_json(agent: &Agent, method: &str, target: &str, token: Option<&str>) -> Value {
    let (status, body) = call(agent, method, target, token, b"");
    assert_eq!(status, 200, "{method} {target}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

// ---------------------------------------------------------------------------
// Defect 4: the gossip keyring is a secret.

#[test]
fn keyring_reads_need_the_token_when_one_is_set() {
    let root = tempfile::tempdir().unwrap();
    // No protect_reads: ordinary reads stay open, the keyring does not.
    let agent = Agent::start_serving(
        root.path(),
        "keyring-guarded",
        &["--acl-token", TOKEN, "--encrypt", KEY_A],
    );
    let (status, _) = call(&agent, "GET", "/v1/agent/members", None, b"");
    assert_eq!(status, 200, "ordinary reads stay open");

    for token in [None, Some("wrong")] {
        let (status, body) = call(&agent, "GET", "/v1/operator/keyring", token, b"");
        assert_eq!(status, 403, "GET keyring with {token:?}: {body}");
        assert!(!body.contains(KEY_A), "the key leaked: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("keyring") && message.contains("token"),
            "the 403 says why: {message}"
        );
    }
    let (status, body) = call(&agent, "GET", "/v1/operator/keyring", Some(TOKEN), b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(KEY_A), "{body}");

    // The CLI reads the token from SHOAL_HTTP_TOKEN.
    let output = std::process::Command::new(shoal_tests::shoal_bin())
        .args(["keyring", "list"])
        .env("SHOAL_HTTP_ADDR", agent.http_addr().to_string())
        .env("SHOAL_HTTP_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(KEY_A),
        "shoal keyring list: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = agent.cli(&["keyring", "list"]);
    assert!(
        !output.status.success(),
        "without the token the CLI is refused"
    );
}

/// Safe by default: an agent without a token (the default) does not hand
/// its gossip keys to any local caller; reading them needs the operator's
/// opt-in, as changing them does.
#[test]
fn keyring_reads_without_a_token_need_the_opt_in() {
    let root = tempfile::tempdir().unwrap();
    let closed = Agent::start_serving(root.path(), "keyring-default", &["--encrypt", KEY_A]);
    let (status, _) = call(&closed, "GET", "/v1/agent/members", None, b"");
    assert_eq!(status, 200, "ordinary reads stay open");
    for target in disguises("/v1/operator/keyring") {
        let (status, body) = call(&closed, "GET", &target, None, b"");
        // 301: redirected to the clean path, refused below.
        assert!(
            [301, 403, 404].contains(&status),
            "GET {target} without a token: {status} {body}"
        );
        assert!(
            !body.contains(KEY_A),
            "GET {target}: the key leaked: {body}"
        );
    }
    let (status, body) = call(&closed, "GET", "/v1/operator/keyring", None, b"");
    assert_eq!(status, 403, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("acl.token") && message.contains("allow_unauthenticated_keyring"),
        "the 403 names the keys to set: {message}"
    );
    // The CLI is refused with the same reason and prints no key.
    let output = closed.cli(&["keyring", "list"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "shoal keyring list: {stdout}");
    assert!(
        stderr.contains("allow_unauthenticated_keyring"),
        "shoal keyring list: {stderr}"
    );
    assert!(
        !stdout.contains(KEY_A) && !stderr.contains(KEY_A),
        "the key leaked: {stdout} {stderr}"
    );
    // What the agent says about its keyring elsewhere is no key either.
    let (status, body) = call(&closed, "GET", "/v1/agent/self", None, b"");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(KEY_A), "/v1/agent/self leaked the key");

    // With the opt-in, from the flag or the environment, reads work (the
    // config file's spelling: `browser_safety.rs`).
    let flag = Agent::start_serving(
        root.path(),
        "keyring-flag",
        &["--encrypt", KEY_A, "--acl-allow-unauthenticated-keyring"],
    );
    let from_env = Agent::start(
        root.path(),
        AgentOptions {
            args: vec!["--encrypt".into(), KEY_A.into()],
            env: vec![(
                "SHOAL_ACL_ALLOW_UNAUTHENTICATED_KEYRING".into(),
                "true".into(),
            )],
            ..AgentOptions::named("keyring-env")
        },
    );
    from_env.wait_serving();
    for agent in [&flag, &from_env] {
        let ring = call_json(agent, "GET", "/v1/operator/keyring", None);
        assert!(
            ring[0]["Keys"].get(KEY_A).is_some(),
            "{}: {ring}",
            agent.name
        );
        let output = agent.cli(&["keyring", "list"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains(KEY_A),
            "{}: shoal keyring list: {stdout} {}",
            agent.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// ---------------------------------------------------------------------------
// Defect 9: disguised paths.

/// Ways to write `path` that a lax router might still route: each letter
/// percent-encoded on its own (both hex cases), a slash as `%2F`, doubled
/// slashes, a trailing slash, dot segments. The query string is kept.
fn disguises(target: &str) -> Vec<String> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (target, String::new()),
    };
    let bytes = path.as_bytes();
    let mut out = vec![path.to_string()];
    for (i, byte) in bytes.iter().enumerate() {
        if byte.is_ascii_alphanumeric() {
            let (before, after) = (&path[..i], &path[i + 1..]);
            out.push(format!("{before}%{byte:02X}{after}"));
            out.push(format!("{before}%{byte:02x}{after}"));
        }
        if *byte == b'/' && i > 0 {
            let (before, after) = (&path[..i], &path[i + 1..]);
            out.push(format!("{before}%2F{after}"));
            out.push(format!("{before}%2f{after}"));
            out.push(format!("{before}//{after}"));
            out.push(format!("{before}/./{after}"));
            out.push(format!("{before}/x/../{after}"));
        }
    }
    let every: String = bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                format!("%{b:02X}")
            } else {
                (*b as char).to_string()
            }
        })
        .collect();
    out.push(every);
    out.push(format!("{path}/"));
    out.push(format!("/{path}"));
    // Digits have one hex form: drop the repeats, keep the order.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out.into_iter().map(|p| format!("{p}{query}")).collect()
}

/// Everything a write could change, read with the token.
fn observable_state(agent: &Agent) -> Value {
    let self_ = call_json(agent, "GET", "/v1/agent/self", Some(TOKEN));
    json!({
        "services": call_json(agent, "GET", "/v1/agent/services", Some(TOKEN)),
        "checks": call_json(agent, "GET", "/v1/agent/checks", Some(TOKEN)),
        "kv": call_json(agent, "GET", "/v1/kv/?recurse", Some(TOKEN)),
        "flags": call_json(agent, "GET", "/v1/flags", Some(TOKEN)),
        "fault": call_json(agent, "GET", "/v1/shoal/fault", Some(TOKEN)),
        "keyring": call_json(agent, "GET", "/v1/operator/keyring", Some(TOKEN)),
        "reloads": self_["Stats"]["reload"],
        "record_version": self_["Stats"]["agent"]["record_version"],
    })
}

#[test]
fn percent_encoded_paths_cannot_bypass_the_token() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_serving(
        root.path(),
        "encoded",
        &[
            "--acl-token",
            TOKEN,
            "--encrypt",
            KEY_A,
            "--fault-injection",
        ],
    );
    let registration = json!({
        "Name": "web", "ID": "web", "Port": 80,
        "Check": {"CheckID": "ttl1", "Name": "ttl1", "TTL": "10m"},
    });
    let setup = [
        (
            "PUT",
            "/v1/agent/service/register",
            registration.to_string(),
        ),
        ("PUT", "/v1/kv/k", "orig".to_string()),
        (
            "PUT",
            "/v1/flags/f",
            json!({"enabled": false, "rollout_percentage": 0}).to_string(),
        ),
    ];
    for (method, target, body) in &setup {
        let (status, answer) = call(&agent, method, target, Some(TOKEN), body.as_bytes());
        assert_eq!(status, 200, "{method} {target}: {answer}");
    }
    let before = observable_state(&agent);
    assert_eq!(before["checks"]["ttl1"]["Status"], "critical", "{before}");

    let service = json!({"Name": "evil", "Port": 1}).to_string();
    let check = json!({"Name": "evil", "TTL": "10s"}).to_string();
    let update = json!({"Status": "passing", "Output": "pwned"}).to_string();
    let flag = json!({"enabled": true, "rollout_percentage": 100}).to_string();
    let key = json!({ "Key": KEY_B }).to_string();
    // Every route that changes state (api/mod.rs), with each method that
    // reaches it; the GET (and so HEAD) forms are Consul's legacy writes.
    let legacy = ["PUT", "GET", "HEAD"];
    let routes: Vec<(&[&str], &str, &str)> = vec![
        (&["PUT"], "/v1/agent/leave", ""),
        (&["PUT"], "/v1/agent/reload", ""),
        (&["PUT"], "/v1/agent/service/register", &service),
        (&legacy, "/v1/agent/service/deregister/web", ""),
        (
            &["PUT"],
            "/v1/agent/service/maintenance/web?enable=true&reason=pwned",
            "",
        ),
        (
            &["PUT"],
            "/v1/agent/maintenance?enable=true&reason=pwned",
            "",
        ),
        (&["PUT"], "/v1/agent/check/register", &check),
        (&legacy, "/v1/agent/check/deregister/ttl1", ""),
        (&legacy, "/v1/agent/check/pass/ttl1?note=pwned", ""),
        (&legacy, "/v1/agent/check/warn/ttl1?note=pwned", ""),
        (&legacy, "/v1/agent/check/fail/ttl1?note=pwned", ""),
        (&["PUT"], "/v1/agent/check/update/ttl1", &update),
        (&["PUT"], "/v1/shoal/fault?block=127.0.0.9", ""),
        (&["PUT", "DELETE"], "/v1/kv/k", "pwned"),
        (&["PUT", "DELETE"], "/v1/kv/?recurse", "pwned"),
        (&["PUT", "DELETE"], "/v1/kv?recurse", "pwned"),
        (&["PUT", "DELETE"], "/v1/flags/f", &flag),
        (&["POST", "PUT", "DELETE"], "/v1/operator/keyring", &key),
        // A secret: needs the token even to read.
        (&["GET", "HEAD"], "/v1/operator/keyring", ""),
    ];
    let mut tried = 0;
    let mut executed = Vec::new();
    for (methods, target, body) in &routes {
        for method in methods.iter() {
            for disguised in disguises(target) {
                let (status, answer) = call(&agent, method, &disguised, None, body.as_bytes());
                tried += 1;
                // 301/308: a doubled slash or a dot segment is redirected to
                // the clean path (as Consul's server does) before any route
                // runs; that path is among the disguises, refused there.
                if ![301, 308, 403, 404, 405].contains(&status) {
                    executed.push(format!("{method} {disguised} -> {status} {answer}"));
                }
            }
        }
    }
    assert!(
        executed.is_empty(),
        "{} of {tried} disguised writes without a token were not refused:\n{}",
        executed.len(),
        executed.join("\n")
    );
    assert!(agent.is_running(), "a disguised leave stopped the agent");
    let after = observable_state(&agent);
    assert_eq!(after, before, "a refused request changed state");
    assert_eq!(after["checks"]["ttl1"]["Status"], "critical");

    // The plain routes still work with the token (with PUT: the legacy
    // GET forms answer 405, see browser_safety.rs).
    let (status, body) = call(
        &agent,
        "PUT",
        "/v1/agent/check/pass/ttl1?note=ok",
        Some(TOKEN),
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let checks = call_json(&agent, "GET", "/v1/agent/checks", None);
    assert_eq!(checks["ttl1"]["Status"], "passing", "{checks}");
}

// ---------------------------------------------------------------------------
// Defect 5: exec checks and the Host header.

fn exec_check(id: &str, marker: &Path) -> Value {
    json!({
        "CheckID": id,
        "Name": id,
        "Args": ["/bin/sh", "-c", format!("touch {}", marker.display())],
        "Interval": "200ms",
    })
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

#[test]
fn api_exec_checks_are_refused_unless_enable_script_checks() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "no-scripts", &[]);
    let marker = root.path().join("ran-check");
    let marker_service = root.path().join("ran-service");

    let check = exec_check("script", &marker).to_string();
    let (status, body) = call(
        &agent,
        "PUT",
        "/v1/agent/check/register",
        None,
        check.as_bytes(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("enable_script_checks"), "{body}");
    // Inside a service registration too, as `Check` or in `Checks`.
    for field in ["Check", "Checks"] {
        let nested = exec_check("svc-script", &marker_service);
        let nested = if field == "Check" {
            nested
        } else {
            json!([nested])
        };
        let service = json!({"Name": "svc", "Port": 1, field: nested}).to_string();
        let (status, body) = call(
            &agent,
            "PUT",
            "/v1/agent/service/register",
            None,
            service.as_bytes(),
        );
        assert_eq!(status, 400, "{field}: {body}");
        assert!(error_of(&body).contains("enable_script_checks"), "{body}");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!marker.exists(), "the refused check ran its command");
    assert!(!marker_service.exists(), "the refused service check ran");
    assert_eq!(agent.get("/v1/agent/checks").unwrap(), json!({}));
    assert_eq!(agent.get("/v1/agent/services").unwrap(), json!({}));

    // Other kinds are not affected.
    let ttl = json!({"Name": "ttl", "TTL": "30s"}).to_string();
    let (status, body) = call(
        &agent,
        "PUT",
        "/v1/agent/check/register",
        None,
        ttl.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");

    let allowed = Agent::start_serving(root.path(), "scripts", &["--enable-script-checks"]);
    let (status, body) = call(
        &allowed,
        "PUT",
        "/v1/agent/check/register",
        None,
        check.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(10), "the allowed check to run", || {
        marker
            .exists()
            .then_some(())
            .ok_or("no marker yet".to_string())
    });
}

#[test]
fn saved_exec_checks_are_refused_at_load_and_the_rest_loads() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_serving(root.path(), "saved", &["--enable-script-checks"]);
    let marker = root.path().join("ran");
    for check in [
        exec_check("script", &marker),
        json!({"CheckID": "beat", "Name": "beat", "TTL": "10m"}),
    ] {
        let body = check.to_string();
        let (status, answer) = call(
            &agent,
            "PUT",
            "/v1/agent/check/register",
            None,
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let service = json!({
        "Name": "svc", "ID": "svc", "Port": 1,
        "Check": exec_check("svc-script", &marker),
    })
    .to_string();
    let (status, answer) = call(
        &agent,
        "PUT",
        "/v1/agent/service/register",
        None,
        service.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let plain = json!({"Name": "plain", "ID": "plain", "Port": 2}).to_string();
    let (status, answer) = call(
        &agent,
        "PUT",
        "/v1/agent/service/register",
        None,
        plain.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    wait_for(Duration::from_secs(10), "the check to run", || {
        marker
            .exists()
            .then_some(())
            .ok_or("no marker yet".to_string())
    });

    // Restart without the option: the saved exec registrations are refused.
    agent.kill();
    std::fs::remove_file(&marker).unwrap();
    agent.options.args.clear();
    agent.restart();
    agent.wait_serving();
    let checks = agent.get("/v1/agent/checks").unwrap();
    assert!(
        checks.get("beat").is_some(),
        "the TTL check survives: {checks}"
    );
    assert!(checks.get("script").is_none(), "{checks}");
    assert!(checks.get("svc-script").is_none(), "{checks}");
    let services = agent.get("/v1/agent/services").unwrap();
    assert!(services.get("plain").is_some(), "{services}");
    assert!(services.get("svc").is_none(), "{services}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!marker.exists(), "a refused saved check ran its command");
    let log = agent.log();
    let refusal = log
        .lines()
        .find(|line| line.contains("ERROR") && line.contains("enable_script_checks"))
        .unwrap_or_else(|| panic!("no error logged about the refused checks:\n{log}"));
    assert!(refusal.contains("script"), "{refusal}");
}

#[test]
fn config_exec_checks_follow_enable_local_script_checks() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("ran");
    let config = root.path().join("agent.toml");
    let write_config = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "{extra}\n[[checks]]\nid = \"local-script\"\nname = \"local-script\"\nargs = [\"/bin/sh\", \"-c\", \"touch {}\"]\ninterval = \"200ms\"\n",
                marker.display()
            ),
        )
        .unwrap();
    };
    let config_arg = config.display().to_string();

    // Allowed by default: the operator wrote it.
    write_config("");
    let agent = Agent::start_serving(root.path(), "local-on", &["--config", &config_arg]);
    wait_for(
        Duration::from_secs(10),
        "the configured check to run",
        || {
            marker
                .exists()
                .then_some(())
                .ok_or("no marker yet".to_string())
        },
    );
    drop(agent);
    std::fs::remove_file(&marker).unwrap();

    // Refused at load, naming the key, when enable_local_script_checks = false.
    write_config("enable_local_script_checks = false");
    let mut refused = Agent::start(
        root.path(),
        AgentOptions {
            name: "local-off".into(),
            args: vec!["--config".into(), config_arg.clone()],
            ..AgentOptions::default()
        },
    );
    assert_eq!(refused.wait_exit(Duration::from_secs(15)), Some(2));
    let log = refused.log();
    assert!(log.contains("enable_local_script_checks"), "{log}");
    assert!(log.contains("local-script"), "{log}");
    assert!(!marker.exists());
}

#[test]
fn requests_with_a_foreign_host_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "rebind", &[]);
    let addr = agent.http_addr();
    let port = addr.port();

    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        "".to_string(),
    ] {
        let (status, body) = raw(addr, "PUT", "/v1/kv/rebound", Some(&host), &[], b"x");
        assert_eq!(status, 403, "Host {host:?}: {body}");
        let message = error_of(&body);
        assert!(message.contains("Host"), "the 403 says why: {message}");
        let (status, _) = raw(addr, "GET", "/v1/agent/self", Some(&host), &[], b"");
        assert_eq!(status, 403, "reads too, with Host {host:?}");
    }
    assert_eq!(
        agent.kv_get("rebound"),
        Ok(None),
        "a refused write changed nothing"
    );

    for host in [
        format!("localhost:{port}"),
        "localhost".to_string(),
        "LOCALHOST".to_string(),
        format!("127.0.0.1:{port}"),
        format!("127.1.2.3:{port}"),
        format!("[::1]:{port}"),
        "[::1]".to_string(),
        addr.to_string(),
    ] {
        let (status, body) = raw(addr, "PUT", "/v1/kv/local", Some(&host), &[], b"ok");
        assert_eq!(status, 200, "Host {host:?}: {body}");
    }
    // HTTP/1.0 without a Host header.
    let (status, body) = raw(addr, "GET", "/v1/kv/local?raw", None, &[], b"");
    assert_eq!((status, body.as_str()), (200, "ok"));
    // The CLI passes.
    let output = agent.cli(&["kv", "get", "local"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Defect 14: the stored keyring wins over --encrypt, visibly.

#[test]
fn a_stored_keyring_overriding_encrypt_is_reported() {
    let root = tempfile::tempdir().unwrap();
    // No token: keyring changes need the operator's opt-in.
    let mut agent = Agent::start_serving(
        root.path(),
        "rotated",
        &["--encrypt", KEY_A, "--acl-allow-unauthenticated-keyring"],
    );
    let keyring = |agent: &Agent| agent.get("/v1/agent/self").unwrap()["Stats"]["keyring"].clone();
    let fresh = keyring(&agent);
    assert_eq!(fresh["source"], "config", "{fresh}");
    assert_eq!(fresh["overrides_configured_key"], false, "{fresh}");

    for method in ["POST", "PUT"] {
        let body = json!({ "Key": KEY_B }).to_string();
        let (status, answer) = call(
            &agent,
            method,
            "/v1/operator/keyring",
            None,
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{method}: {answer}");
    }
    wait_for(Duration::from_secs(10), "KEY_B to be primary", || {
        let ring = agent.get("/v1/operator/keyring")?;
        if ring[0]["PrimaryKeys"].get(KEY_B).is_some() {
            Ok(())
        } else {
            Err(ring.to_string())
        }
    });

    agent.restart();
    agent.wait_serving();
    let restarted = keyring(&agent);
    assert_eq!(restarted["source"], "kv", "{restarted}");
    assert_eq!(restarted["overrides_configured_key"], true, "{restarted}");
    let ring = agent.get("/v1/operator/keyring").unwrap();
    assert!(ring[0]["PrimaryKeys"].get(KEY_B).is_some(), "{ring}");
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("overrides") && l.contains("encrypt")),
        "no warning about the override:\n{log}"
    );
}
