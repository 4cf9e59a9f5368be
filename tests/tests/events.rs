//! User events with real processes: an event fired on one agent of three is
//! listed on the others and runs their `event` watch with the payload; a
//! service filter reaches only the agents that have the service; a
//! blocking query on the list wakes on a new event; bad input is refused;
//! an agent that joins later doesn't replay old events.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::{Agent, AgentOptions, Cluster, http_json, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);
const END: &str = "--end--";

fn recorder(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("record.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\ncat >> \"$1\"\necho {END} >> \"$1\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split(END)
        .map(str::trim)
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| serde_json::from_str(chunk).unwrap())
        .collect()
}

/// An agent config: an `event` watch writing to `out`, and a `web` service
/// when `web` is set.
fn config(script: &Path, out: &Path, web: bool) -> String {
    let service = if web {
        "[[services]]\nname = \"web\"\nid = \"web-1\"\nport = 8080\ntags = [\"primary\"]\n\n"
    } else {
        ""
    };
    format!(
        "{service}[[watches]]\ntype = \"event\"\nname = \"deploy\"\nhandler = [\"{}\", \"{}\"]\n",
        script.display(),
        out.display()
    )
}

/// Event names and payloads (base64) listed on `agent`.
fn listed(agent: &Agent) -> Vec<(String, Value)> {
    agent
        .get("/v1/event/list")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["Name"].as_str().unwrap().to_string(),
                event["Payload"].clone(),
            )
        })
        .collect()
}

fn wait_listed(agent: &Agent, name: &str) -> Value {
    wait_for(TIMEOUT, &format!("{} to list `{name}`", agent.name), || {
        let list = agent.get(&format!("/v1/event/list?name={name}"))?;
        match list.as_array().and_then(|events| events.last()) {
            Some(event) => Ok(event.clone()),
            None => Err(list.to_string()),
        }
    })
}

#[test]
fn events_reach_every_agent_filters_hold_and_late_joiners_do_not_replay() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    let script = recorder(&dir);
    let out = |i: usize| dir.join(format!("events-{i}.out"));
    let cluster = Cluster::start_with(3, |i| {
        let path = dir.join(format!("agent-{i}.toml"));
        // Only node-2 runs `web`.
        AgentOptions::with_config_file(&path, &config(&script, &out(i), i == 2), &[])
    });
    cluster.wait_all_alive(TIMEOUT);
    let agents = &cluster.agents;
    for i in 0..3 {
        wait_for(TIMEOUT, "the event watch's first run", || {
            let got = runs(&out(i));
            if got.len() == 1 {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        });
    }

    // Fired on node-0 with the CLI: listed everywhere, watches run.
    let fired = agents[0].cli(&["event", "deploy", "v42"]);
    assert!(fired.status.success(), "{fired:?}");
    for agent in agents {
        let event = wait_listed(agent, "deploy");
        assert_eq!(event["Payload"], "djQy");
        assert_eq!(event["Version"], 1);
        assert_eq!(event["ID"].as_str().unwrap().len(), 36);
        assert!(event["LTime"].is_u64());
    }
    for i in 0..3 {
        let got = wait_for(TIMEOUT, "the event watch to run", || {
            let got = runs(&out(i));
            if got.len() == 2 {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        });
        assert_eq!(got[1].as_array().unwrap().len(), 1);
        assert_eq!(got[1][0]["Payload"], "djQy");
    }

    // A blocking query on node-1's list wakes on the next event.
    let (status, list) = http_json("GET", agents[1].http_addr(), "/v1/event/list", None).unwrap();
    assert_eq!(status, 200);
    let index = {
        let response = ureq::get(&format!("http://{}/v1/event/list", agents[1].http_addr()))
            .call()
            .unwrap();
        response.headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let blocked_addr = agents[1].http_addr();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let path = format!("/v1/event/list?index={index}&wait=20s");
        let (_, body) = http_json("GET", blocked_addr, &path, None).unwrap();
        (started.elapsed(), body)
    });
    std::thread::sleep(Duration::from_millis(500));

    // Filtered by service (and tag): only node-2 has `web`.
    let (status, event) = http_json(
        "PUT",
        agents[1].http_addr(),
        "/v1/event/fire/deploy?service=%5Eweb%24&tag=primary",
        Some(b"web-only"),
    )
    .unwrap();
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["ServiceFilter"], "^web$");
    let on_web = wait_for(TIMEOUT, "node-2 to list the filtered event", || {
        let events = listed(&agents[2]);
        if events.len() == 2 {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    });
    assert_eq!(on_web[1].1, "d2ViLW9ubHk=");
    let got = wait_for(TIMEOUT, "node-2's watch to run", || {
        let got = runs(&out(2));
        if got.len() == 3 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    });
    assert_eq!(got[2][0]["Payload"], "d2ViLW9ubHk=");
    // node-0 and node-1 (the firer) have no `web`: not listed, not run.
    // Another event after it shows they got past it.
    let fired = agents[2].cli(&["event", "deploy", "after"]);
    assert!(fired.status.success());
    for (i, agent) in agents.iter().enumerate().take(2) {
        let events = wait_for(TIMEOUT, "the next event", || {
            let events = listed(agent);
            if events.last().is_some_and(|(_, p)| p == "YWZ0ZXI=") {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            }
        });
        assert_eq!(
            events.len(),
            2,
            "node-{i} listed the filtered event: {events:?}"
        );
        let got = wait_for(TIMEOUT, "the watch to run", || {
            let got = runs(&out(i));
            if got.len() == 3 {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        });
        assert_eq!(got[2][0]["Payload"], "YWZ0ZXI=");
    }
    // The blocked query on node-1 woke with the event after the filtered
    // one (which node-1 did not list).
    let (waited, body) = waiter.join().unwrap();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert!(body.as_array().unwrap().len() > list.as_array().unwrap().len());

    // Bad input: refused, names what.
    let too_big = vec![b'x'; 513];
    let (status, error) = http_json(
        "PUT",
        agents[0].http_addr(),
        "/v1/event/fire/deploy",
        Some(&too_big),
    )
    .unwrap();
    assert_eq!(status, 413, "{error}");
    assert!(error["error"].as_str().unwrap().contains("payload"));
    let (status, error) = http_json(
        "PUT",
        agents[0].http_addr(),
        "/v1/event/fire/deploy?node=%28",
        None,
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().starts_with("node:"),
        "{error}"
    );

    // A late joiner lists none of the earlier events, even one still
    // being gossiped as it joins, and gets new ones.
    let fired = agents[0].cli(&["event", "deploy", "old"]);
    assert!(fired.status.success());
    let late = Agent::start(
        root.path(),
        AgentOptions {
            join: vec![agents[0].gossip_addr()],
            ..AgentOptions::named("late")
        },
    );
    late.wait_serving();
    wait_for(TIMEOUT, "the late joiner to see everyone", || {
        let members = late.members()?;
        if members.len() == 4 {
            Ok(())
        } else {
            Err(format!("{members:?}"))
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(listed(&late), vec![], "the late joiner replayed old events");
    eprintln!(
        "late joiner's event counters: {}",
        late.get("/v1/agent/self").unwrap()["Stats"]["events"]
    );
    let fired = agents[1].cli(&["event", "deploy", "new"]);
    assert!(fired.status.success());
    let event = wait_listed(&late, "deploy");
    assert_eq!(event["Payload"], "bmV3");
    assert_eq!(listed(&late).len(), 1);
}
