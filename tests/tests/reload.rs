//! Config hot reload with real processes: editing the config file (in
//! place or by rename, as editors do) or `config.d/` changes the services
//! every agent sees; a broken file leaves the old config running and is
//! reported; SIGHUP and `shoal reload` run the same path; keys that need a
//! restart are reported, not applied.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{Agent, AgentOptions, http_json, wait_for};

const TIMEOUT: Duration = Duration::from_secs(20);

fn service_file(web_tag: &str, extra: &str) -> String {
    format!(
        r#"
tags = {{ env = "staging" }}

[[services]]
name = "web"
id = "web-1"
port = 8080
tags = ["{web_tag}"]
{extra}"#
    )
}

/// Replaces the file the way editors do: write a new file, rename it over.
fn save_by_rename(path: &Path, text: &str) {
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// `/v1/catalog/services` on `agent`: `{"name": [tags]}`.
fn wait_services(agent: &Agent, what: &str, check: impl Fn(&Value) -> bool) {
    wait_for(TIMEOUT, &format!("{} to see {what}", agent.name), || {
        let services = agent.get("/v1/catalog/services")?;
        if check(&services) {
            Ok(())
        } else {
            Err(services.to_string())
        }
    });
}

fn reload_status(agent: &Agent) -> Value {
    agent.get("/v1/agent/self").unwrap()["Stats"]["reload"].clone()
}

fn wait_reloads(agent: &Agent, at_least: u64, trigger: &str) {
    wait_for(TIMEOUT, &format!("a {trigger} reload"), || {
        let status = reload_status(agent);
        if status["reloads"].as_u64() >= Some(at_least) && status["last_trigger"] == trigger {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
}

#[test]
fn edits_apply_cluster_wide_and_broken_files_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    std::fs::write(&config, service_file("v1", "")).unwrap();
    std::fs::create_dir(root.path().join("config.d")).unwrap();
    let mut first = Agent::start(
        root.path(),
        AgentOptions {
            name: "node-0".into(),
            args: vec!["--config".into(), config.display().to_string()],
            // Flags and SHOAL_* overrides apply on every load.
            tags: vec![("role".into(), "web".into())],
            ..AgentOptions::default()
        },
    );
    let second = Agent::start(root.path(), AgentOptions::joining("node-1", &first));
    wait_services(&second, "web v1", |s| s["web"] == serde_json::json!(["v1"]));

    // An edit in place: new tag, a second service.
    let with_api = "\n[[services]]\nname = \"api\"\nid = \"api-1\"\nport = 9090\n";
    std::fs::write(&config, service_file("v2", with_api)).unwrap();
    wait_services(&second, "web v2 and api", |s| {
        s["web"] == serde_json::json!(["v2"]) && s.get("api").is_some()
    });

    // A broken file: refused, reported, the old config keeps running.
    std::fs::write(&config, "[[services]\nname = \"web\"\n").unwrap();
    wait_for(TIMEOUT, "the reload error in /v1/agent/self", || {
        let body = first.get("/v1/agent/self")?;
        match body["Config"]["ReloadError"].as_str() {
            Some(error) if error.contains("agent.toml") => Ok(()),
            _ => Err(body["Stats"]["reload"].to_string()),
        }
    });
    let (status, body) = http_json("PUT", first.http_addr(), "/v1/agent/reload", None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("agent.toml"),
        "{body}"
    );
    let output = first.cli(&["reload"]);
    assert!(!output.status.success());
    std::thread::sleep(Duration::from_millis(800));
    let services = second.get("/v1/catalog/services").unwrap();
    assert_eq!(services["web"], serde_json::json!(["v2"]), "{services}");
    assert!(services.get("api").is_some(), "{services}");
    assert!(first.is_running());

    // Fixed, saved by rename as editors do: applied, the error cleared.
    save_by_rename(&config, &service_file("v3", ""));
    wait_services(&second, "web v3 without api", |s| {
        s["web"] == serde_json::json!(["v3"]) && s.get("api").is_none()
    });
    wait_for(TIMEOUT, "the reload error to clear", || {
        let status = reload_status(&first);
        if status["last_error"].is_null() {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    // Node tags from the file, with the --tag flag still applied.
    wait_for(TIMEOUT, "node-0's tags on node-1", || {
        let members = second.get("/v1/agent/members")?;
        let tags = members
            .as_array()
            .and_then(|m| m.iter().find(|m| m["Name"] == "node-0"))
            .map(|m| m["Tags"].clone())
            .unwrap_or_default();
        // The node ID rides in the tags and survives the reload.
        if tags["env"] == "staging"
            && tags["role"] == "web"
            && tags["id"].as_str().is_some_and(|id| id.len() == 36)
        {
            Ok(())
        } else {
            Err(tags.to_string())
        }
    });

    // A new file in config.d.
    std::fs::write(
        root.path().join("config.d/cache.toml"),
        "[service]\nname = \"cache\"\nid = \"cache-1\"\nport = 6379\n",
    )
    .unwrap();
    wait_services(&second, "cache from config.d", |s| s.get("cache").is_some());
}

#[test]
fn sighup_and_shoal_reload_run_the_same_path() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    std::fs::write(&config, service_file("v1", "")).unwrap();
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "node-0".into(),
            args: vec!["--config".into(), config.display().to_string()],
            ..AgentOptions::default()
        },
    );
    wait_services(&agent, "web v1", |s| s["web"] == serde_json::json!(["v1"]));

    agent.signal(libc::SIGHUP);
    wait_reloads(&agent, 1, "signal");
    assert!(
        agent.get("/health/live").is_ok(),
        "SIGHUP must not stop the agent"
    );

    let output = agent.cli(&["reload"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("1 services"), "{text}");
    wait_reloads(&agent, 2, "api");

    // A key that can't change live: reported, the running value kept.
    let text = format!("cluster = \"elsewhere\"\n{}", service_file("v2", ""));
    std::fs::write(&config, text).unwrap();
    wait_services(&agent, "web v2", |s| s["web"] == serde_json::json!(["v2"]));
    let status = reload_status(&agent);
    assert_eq!(
        status["needs_restart"],
        serde_json::json!(["cluster"]),
        "{status}"
    );
    let self_ = agent.get("/v1/agent/self").unwrap();
    assert_eq!(self_["Config"]["Cluster"], "shoal");
}

/// A valid TOML text of about `bytes` bytes: `body` padded with comments.
fn padded(body: &str, bytes: usize) -> String {
    let line = format!("# {}\n", "x".repeat(1000));
    let mut text = body.to_string();
    while text.len() < bytes {
        text.push_str(&line);
    }
    text
}

#[test]
fn config_files_past_the_size_cap_are_refused_at_start_and_on_reload() {
    let root = tempfile::tempdir().unwrap();
    let over = 4 * 1024 * 1024 + 4096;

    // At start: a config file past 4 MiB stops the agent with exit code 2,
    // naming the file and the limit.
    let big = root.path().join("big.toml");
    let data_dir = root.path().join("never");
    let ip = shoal_tests::unique_loopback();
    std::fs::write(
        &big,
        padded(
            &format!(
                "data_dir = {:?}\nbind = \"{ip}:7946\"\nhttp_addr = \"{ip}:8500\"\ndns_addr = \"off\"\n",
                data_dir.display().to_string()
            ),
            over,
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(shoal_tests::shoal_bin())
        .args(["agent", "--config"])
        .arg(&big)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.is_some(),
        "an agent started from a {over}-byte config file: {stderr}"
    );
    assert_eq!(status.unwrap().code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("big.toml") && stderr.contains("4 MiB"),
        "the error must name the file and the limit: {stderr}"
    );

    // On reload: a config.d file past the cap is refused, the old config
    // keeps running.
    let config = root.path().join("agent.toml");
    std::fs::write(&config, service_file("v1", "")).unwrap();
    std::fs::create_dir(root.path().join("config.d")).unwrap();
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "node-0".into(),
            args: vec!["--config".into(), config.display().to_string()],
            ..AgentOptions::default()
        },
    );
    wait_services(&agent, "web v1", |s| s["web"] == serde_json::json!(["v1"]));
    std::fs::write(
        root.path().join("config.d/huge.toml"),
        padded(
            "[service]\nname = \"huge\"\nid = \"huge-1\"\nport = 1\n",
            over,
        ),
    )
    .unwrap();
    let (status, body) = http_json("PUT", agent.http_addr(), "/v1/agent/reload", None).unwrap();
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("huge.toml") && error.contains("4 MiB"),
        "the error must name the file and the limit: {body}"
    );
    std::thread::sleep(Duration::from_millis(800));
    let services = agent.get("/v1/catalog/services").unwrap();
    assert_eq!(services["web"], serde_json::json!(["v1"]), "{services}");
    assert!(services.get("huge").is_none(), "{services}");
}
