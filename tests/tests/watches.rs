//! `[[watches]]` with real processes: every type runs its handler (a shell
//! script that appends its stdin to a file) once at start and once per
//! change, with the JSON the matching HTTP endpoint gives; unrelated
//! changes don't run it; a slow handler never runs twice at once; an
//! `http` handler gets the JSON posted; `shoal watch` prints and runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::recorder::{RECORD_END as END, make_executable, recorded as runs, recorder};
use shoal_tests::{Agent, AgentOptions, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn wait_runs(file: &Path, count: usize, what: &str) -> Vec<Value> {
    wait_for(TIMEOUT, what, || {
        let got = runs(file);
        if got.len() >= count {
            Ok(got)
        } else {
            Err(format!("{} runs: {got:?}", got.len()))
        }
    })
}

/// Every watch type, each writing to `<type>.out` in `dir`.
fn watches_config(dir: &Path, script: &Path) -> String {
    let watch = |kind: &str, params: &str| {
        format!(
            "[[watches]]\ntype = \"{kind}\"\n{params}\nhandler = [\"{}\", \"{}\"]\n\n",
            script.display(),
            dir.join(format!("{kind}.out")).display()
        )
    };
    [
        watch("key", "key = \"app/color\""),
        watch("keyprefix", "prefix = \"app/\""),
        watch("services", ""),
        watch("service", "service = \"web\"\npassing = true"),
        watch("checks", "state = \"any\""),
        watch("nodes", ""),
        watch("members", ""),
        watch("event", "name = \"deploy\""),
    ]
    .concat()
}

const KINDS: [&str; 8] = [
    "key",
    "keyprefix",
    "services",
    "service",
    "checks",
    "nodes",
    "members",
    "event",
];

fn counts(dir: &Path) -> Vec<(String, usize)> {
    KINDS
        .iter()
        .map(|kind| {
            (
                kind.to_string(),
                runs(&dir.join(format!("{kind}.out"))).len(),
            )
        })
        .collect()
}

/// Asserts that only `changed` kinds ran once more than in `before`,
/// after the change has had time to reach every watch.
fn assert_only(dir: &Path, before: &[(String, usize)], changed: &[&str]) {
    std::thread::sleep(Duration::from_millis(1500));
    let after = counts(dir);
    for ((kind, old), (_, new)) in before.iter().zip(&after) {
        let expected = old + usize::from(changed.contains(&kind.as_str()));
        assert_eq!(*new, expected, "{kind} watch runs: {before:?} -> {after:?}");
    }
}

#[test]
fn every_watch_type_runs_at_start_and_once_per_change() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let script = recorder(dir);
    let config = dir.join("agent.toml");
    let mut agent = Agent::start(
        dir,
        AgentOptions {
            name: "solo".into(),
            ..AgentOptions::with_config_file(&config, &watches_config(dir, &script), &[])
        },
    );
    agent.wait_serving();

    // Once at start, each with its endpoint's shape.
    for kind in KINDS {
        wait_runs(
            &dir.join(format!("{kind}.out")),
            1,
            &format!("{kind} at start"),
        );
    }
    let start = counts(dir);
    assert!(start.iter().all(|(_, n)| *n == 1), "{start:?}");
    let first = |kind: &str| runs(&dir.join(format!("{kind}.out")))[0].clone();
    assert_eq!(first("key"), Value::Null);
    assert_eq!(first("keyprefix"), json!([]));
    assert_eq!(
        first("services"),
        agent.get("/v1/catalog/services").unwrap()
    );
    assert_eq!(first("service"), json!([]));
    assert_eq!(first("nodes"), agent.get("/v1/catalog/nodes").unwrap());
    assert_eq!(first("members")[0]["Name"], "solo");
    assert_eq!(first("event"), json!([]));

    // A KV write runs the key and keyprefix watches only.
    let before = counts(dir);
    assert!(agent.kv_put("app/color", "blue").unwrap());
    let key = wait_runs(&dir.join("key.out"), 2, "the key watch")[1].clone();
    assert_eq!(key["Key"], "app/color");
    assert_eq!(key["Value"], "Ymx1ZQ==");
    let prefix = wait_runs(&dir.join("keyprefix.out"), 2, "the keyprefix watch")[1].clone();
    assert_eq!(prefix, agent.get("/v1/kv/app/?recurse").unwrap());
    assert_only(dir, &before, &["key", "keyprefix"]);

    // A key elsewhere under the prefix: keyprefix only.
    let before = counts(dir);
    assert!(agent.kv_put("app/size", "xl").unwrap());
    wait_runs(&dir.join("keyprefix.out"), 3, "the keyprefix watch");
    assert_only(dir, &before, &["keyprefix"]);

    // A passing instance of web: services, service, checks, and nodes (a
    // node's ModifyIndex is its record's version); not members or KV.
    let before = counts(dir);
    let (status, _) = agent
        .register_service(&json!({
            "Name": "web", "ID": "web-1", "Port": 8080,
            "Check": {"CheckID": "web-ttl", "TTL": "60s", "Status": "passing"}
        }))
        .unwrap();
    assert_eq!(status, 200);
    let service = wait_runs(&dir.join("service.out"), 2, "the service watch")[1].clone();
    assert_eq!(service[0]["Service"]["ID"], "web-1");
    assert_eq!(
        service,
        agent.get("/v1/health/service/web?passing").unwrap()
    );
    let services = wait_runs(&dir.join("services.out"), 2, "the services watch")[1].clone();
    assert!(services.get("web").is_some(), "{services}");
    let checks = wait_runs(&dir.join("checks.out"), 2, "the checks watch")[1].clone();
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["CheckID"] == "web-ttl"),
        "{checks}"
    );
    assert_only(dir, &before, &["services", "service", "checks", "nodes"]);

    // Failing its check: the passing-only service watch drops it.
    let before = counts(dir);
    let (code, _) = shoal_tests::http_json(
        "PUT",
        agent.http_addr(),
        "/v1/agent/check/fail/web-ttl",
        None,
    )
    .unwrap();
    assert_eq!(code, 200);
    let service = wait_runs(&dir.join("service.out"), 3, "the service watch")[2].clone();
    assert_eq!(service, json!([]));
    assert_only(dir, &before, &["service", "checks", "nodes"]);

    // An event.
    let before = counts(dir);
    let fired = agent.cli(&["event", "deploy", "v42"]);
    assert!(fired.status.success(), "{fired:?}");
    let events = wait_runs(&dir.join("event.out"), 2, "the event watch")[1].clone();
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["Payload"], "djQy");
    // Another event of another name: not for this watch.
    assert!(agent.cli(&["event", "other"]).status.success());
    assert_only(dir, &before, &["event"]);

    // Another node joins: nodes and members run (members may run more
    // than once as the newcomer's record arrives), with both nodes.
    let other = Agent::start(dir, AgentOptions::joining("other", &agent));
    other.wait_serving();
    wait_for(TIMEOUT, "the nodes watch to list both", || {
        let last = runs(&dir.join("nodes.out")).pop().unwrap();
        if last.as_array().is_some_and(|nodes| nodes.len() == 2) {
            Ok(())
        } else {
            Err(last.to_string())
        }
    });
    wait_for(TIMEOUT, "the members watch to list both", || {
        let last = runs(&dir.join("members.out")).pop().unwrap();
        if last.as_array().is_some_and(|members| members.len() == 2) {
            Ok(())
        } else {
            Err(last.to_string())
        }
    });
    assert_eq!(
        runs(&dir.join("nodes.out")).pop().unwrap(),
        agent.get("/v1/catalog/nodes").unwrap()
    );

    // Nothing failed.
    let counters = agent.get("/v1/agent/self").unwrap()["Stats"]["watches"].clone();
    assert_eq!(counters["failures"], 0, "{counters}");
    drop(other);
    agent.kill();
}

#[test]
fn a_slow_handler_never_runs_twice_at_once_and_ends_on_the_last_value() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let out = dir.join("slow.out");
    let overlap = dir.join("overlap");
    let script = dir.join("slow.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nmkdir \"{lock}\" 2>/dev/null || echo overlap >> \"{overlap}\"\n\
             input=$(cat)\nsleep 1\nprintf '%s\\n{END}\\n' \"$input\" >> \"{out}\"\nrmdir \"{lock}\"\n",
            lock = dir.join("lock").display(),
            overlap = overlap.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    make_executable(&script);
    let config = dir.join("agent.toml");
    let text = format!(
        "[[watches]]\ntype = \"keyprefix\"\nprefix = \"slow/\"\nhandler = [\"{}\"]\n",
        script.display()
    );
    let agent = Agent::start(
        dir,
        AgentOptions {
            name: "slow".into(),
            ..AgentOptions::with_config_file(&config, &text, &[])
        },
    );
    agent.wait_serving();
    wait_runs(&out, 1, "the first run");
    for n in 0..10 {
        assert!(agent.kv_put("slow/n", &n.to_string()).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last run sees the last value ("9" is OQ== in base64).
    wait_for(TIMEOUT, "a run with the last value", || {
        let last = runs(&out).pop().unwrap();
        if last[0]["Value"] == "OQ==" {
            Ok(())
        } else {
            Err(last.to_string())
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let total = runs(&out).len();
    assert!(!overlap.exists(), "the handler ran twice at once");
    // One second per run over ~1 s of writes: changes were folded.
    assert!(total <= 5, "{total} runs for 10 writes in 1 s");
}

/// Accepts HTTP requests on loopback and keeps their bodies.
fn http_sink() -> (
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<(String, String)>,
) {
    let listener = std::net::TcpListener::bind((shoal_tests::unique_loopback(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send((head, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (addr, rx)
}

#[test]
fn an_http_handler_gets_the_json_posted_and_reload_changes_watches() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let (addr, posts) = http_sink();
    let config = dir.join("agent.toml");
    let text = format!(
        "[[watches]]\ntype = \"key\"\nkey = \"flag\"\n\
         http = {{ url = \"http://{addr}/hook\", method = \"PUT\", headers = {{ X-Env = \"test\" }} }}\n"
    );
    let agent = Agent::start(
        dir,
        AgentOptions {
            name: "poster".into(),
            ..AgentOptions::with_config_file(&config, &text, &[])
        },
    );
    agent.wait_serving();
    let (head, body) = posts.recv_timeout(TIMEOUT).expect("the first post");
    assert!(head.starts_with("PUT /hook "), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-env: test"), "{head}");
    assert_eq!(body.trim(), "null");
    assert!(agent.kv_put("flag", "on").unwrap());
    let (_, body) = posts
        .recv_timeout(TIMEOUT)
        .expect("the post after a change");
    let pair: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(pair["Value"], "b24=");

    // A reload that replaces the watch: the new one runs at once.
    let script = recorder(dir);
    let out = dir.join("reloaded.out");
    std::fs::write(
        &config,
        format!(
            "[[watches]]\ntype = \"key\"\nkey = \"flag\"\nhandler = [\"{}\", \"{}\"]\n",
            script.display(),
            out.display()
        ),
    )
    .unwrap();
    let reloaded = agent.cli(&["reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    let got = wait_runs(&out, 1, "the reloaded watch");
    assert_eq!(got[0]["Value"], "b24=");
    assert!(agent.kv_put("flag", "off").unwrap());
    wait_runs(&out, 2, "the reloaded watch after a change");
    assert!(
        posts.recv_timeout(Duration::from_secs(2)).is_err(),
        "the removed http watch still ran"
    );

    // A bad watch in a reload is refused by key, and the old one stays.
    std::fs::write(&config, "[[watches]]\ntype = \"nope\"\n").unwrap();
    let refused = agent.cli(&["reload"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("watches[0].type"), "{stderr}");
    assert!(agent.kv_put("flag", "on").unwrap());
    wait_runs(&out, 3, "the kept watch after a refused reload");
}

#[test]
fn shoal_watch_prints_json_and_runs_a_handler_with_a_token() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    // Reads need the token too, so every query `shoal watch` makes does.
    let agent = Agent::start_serving(
        dir,
        "cli",
        &["--acl-token", "s3cret", "--acl-protect-reads"],
    );
    let with_token = |args: &[&str]| {
        std::process::Command::new(shoal_tests::shoal_bin())
            .args(args)
            .env("SHOAL_HTTP_ADDR", agent.http_addr().to_string())
            .env("SHOAL_HTTP_TOKEN", "s3cret")
            .output()
            .unwrap()
    };
    let refused = agent.cli(&["watch", "--type", "keyprefix", "--prefix", "app/"]);
    assert!(!refused.status.success(), "a watch without the token ran");
    let refused = agent.cli(&["event", "deploy"]);
    assert!(
        !refused.status.success(),
        "an event fired without the token"
    );
    let put = with_token(&["kv", "put", "app/x", "1"]);
    assert!(put.status.success(), "{put:?}");
    let printed = with_token(&["watch", "--type", "keyprefix", "--prefix", "app/"]);
    assert!(printed.status.success(), "{printed:?}");
    let body: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(body[0]["Key"], "app/x");

    let bad = with_token(&["watch", "--type", "service"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("service"));

    // With a handler: at start, then on each change.
    let script = recorder(dir);
    let out = dir.join("cli.out");
    let mut child = std::process::Command::new(shoal_tests::shoal_bin())
        .args(["watch", "--type", "service", "--service", "web", "--"])
        .arg(&script)
        .arg(&out)
        .env("SHOAL_HTTP_ADDR", agent.http_addr().to_string())
        .env("SHOAL_HTTP_TOKEN", "s3cret")
        .spawn()
        .unwrap();
    let got = wait_runs(&out, 1, "shoal watch at start");
    assert_eq!(got[0], json!([]));
    let (status, _) = shoal_tests::http_json(
        "PUT",
        agent.http_addr(),
        "/v1/agent/service/register?token=s3cret",
        Some(br#"{"Name": "web", "ID": "web-9", "Port": 9}"#),
    )
    .unwrap();
    assert_eq!(status, 200);
    let got = wait_runs(&out, 2, "shoal watch after a change");
    assert_eq!(got[1][0]["Service"]["ID"], "web-9");
    let _ = child.kill();
    let _ = child.wait();
}
