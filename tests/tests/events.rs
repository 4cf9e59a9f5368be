//! User events with real processes: an event fired on one agent of three is
//! listed on the others and runs their `event` watch with the payload; a
//! service filter reaches only the agents that have the service; a
//! blocking query on the list wakes on a new event; bad input is refused;
//! an agent that joins later doesn't replay old events. The budgets: fires
//! past `[events] fire_rate` get 429, a flood keeps memory bounded (the
//! gossip backlog drops its oldest events), and an event time far ahead
//! from a peer is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_protocol::event::UserEvent;
use shoal_protocol::rumor::Rumor;
use shoal_tests::recorder::{recorded as runs, recorder};
use shoal_tests::{Agent, AgentOptions, Cluster, http_json, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

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
    let late = Agent::start(root.path(), AgentOptions::joining("late", &agents[0]));
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

/// Fires `name` on `agent` with `payload`; the status and body.
fn fire(agent: &Agent, name: &str, payload: &[u8]) -> (u16, Value) {
    http_json(
        "PUT",
        agent.http_addr(),
        &format!("/v1/event/fire/{name}"),
        Some(payload),
    )
    .unwrap()
}

/// `Stats.events.<counter>` of `/v1/agent/self`.
fn event_stat(agent: &Agent, counter: &str) -> u64 {
    agent.get("/v1/agent/self").unwrap()["Stats"]["events"][counter]
        .as_u64()
        .unwrap_or_else(|| panic!("Stats.events.{counter} missing"))
}

/// The value of the sample `series` in `/metrics`.
fn metric(agent: &Agent, series: &str) -> Option<f64> {
    let (status, body) = http_json("GET", agent.http_addr(), "/metrics", None).unwrap();
    assert_eq!(status, 200, "{body}");
    body.as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Anonymous resident memory of a process (`RssAnon`: what it really
/// holds, unlike `VmRSS`, which code pages dropped and faulted back move),
/// in KiB.
fn rss_kib(agent: &Agent) -> u64 {
    let pid = agent.pid().expect("a running agent");
    shoal_tests::proc_status_kib(pid, "RssAnon").expect("RssAnon")
}

/// Fires past `[events] fire_burst` answer 429 naming the limit; the
/// bucket refills at `fire_rate`.
#[test]
fn fires_past_the_rate_limit_are_refused_with_429() {
    let root = tempfile::tempdir().unwrap();
    let config = "[events]\nfire_rate = 1.0\nfire_burst = 3\n";
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "node-0".into(),
            ..AgentOptions::with_config_file(&root.path().join("node-0.toml"), config, &[])
        },
    );
    agent.wait_serving();
    let answers: Vec<(u16, Value)> = (0..10).map(|_| fire(&agent, "deploy", b"x")).collect();
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    // The burst, and at most one more token refilled meanwhile.
    assert!((3..=4).contains(&accepted), "{answers:?}");
    let (status, refused) = answers.last().unwrap();
    assert_eq!(*status, 429, "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("events.fire_rate") && message.contains("events.fire_burst"),
        "{message}"
    );
    assert!(event_stat(&agent, "rate_limited") >= 6);
    wait_for(
        TIMEOUT,
        "the rate-limit counter in /metrics",
        || match metric(&agent, "shoal_events_rate_limited_total") {
            Some(count) if count >= 6.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Refused fires changed nothing: only the accepted ones are listed.
    assert_eq!(listed(&agent).len(), accepted);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = fire(&agent, "deploy", b"later");
    assert_eq!(status, 200, "{body}");
}

/// A flood of events (the rate limit raised out of the way) keeps both
/// agents' memory bounded: the gossip backlog keeps at most
/// `EVENT_BACKLOG` events, dropping the oldest (counted), and the newest
/// still reach the peer.
#[test]
fn an_event_flood_keeps_memory_bounded_and_drops_the_oldest_backlog() {
    const FLOOD: usize = 20_000;
    const THREADS: usize = 4;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    let cluster = Cluster::start_with(2, |i| {
        let path = dir.join(format!("agent-{i}.toml"));
        let config = "[events]\nfire_rate = 1000000.0\nfire_burst = 1000000\n";
        AgentOptions::with_config_file(&path, config, &[])
    });
    cluster.wait_all_alive(TIMEOUT);
    let agents = &cluster.agents;
    let payload = vec![b'p'; 512];
    let flood = |count: usize| {
        let addr = agents[0].http_addr();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let payload = payload.clone();
                std::thread::spawn(move || {
                    for _ in 0..count / THREADS {
                        let (status, body) =
                            http_json("PUT", addr, "/v1/event/fire/deploy", Some(&payload))
                                .unwrap();
                        assert_eq!(status, 200, "{body}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    };
    // Warm up: the backlogs fill to their cap, the allocator settles.
    flood(2_000);
    std::thread::sleep(Duration::from_secs(2));
    let before = [rss_kib(&agents[0]), rss_kib(&agents[1])];
    let started = Instant::now();
    flood(FLOOD);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = [rss_kib(&agents[0]), rss_kib(&agents[1])];
    let growth: Vec<i64> = (0..2).map(|i| after[i] as i64 - before[i] as i64).collect();
    eprintln!(
        "event flood: {FLOOD} events of 512 B in {took:?}; RssAnon firing agent {} -> {} KiB \
         ({:+} KiB), peer {} -> {} KiB ({:+} KiB)",
        before[0], after[0], growth[0], before[1], after[1], growth[1]
    );
    for (i, grown) in growth.iter().enumerate() {
        assert!(
            *grown < 8 * 1024,
            "node-{i} grew by {grown} KiB under the flood"
        );
    }
    let dropped = event_stat(&agents[0], "backlog_dropped");
    eprintln!(
        "backlog drops: firing agent {dropped}, peer {}",
        event_stat(&agents[1], "backlog_dropped")
    );
    assert!(
        dropped > 0,
        "the firing agent's backlog never reached its cap"
    );
    wait_for(TIMEOUT, "the backlog drops in /metrics", || {
        match metric(&agents[0], "shoal_events_backlog_dropped_total") {
            Some(count) if count > 0.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The newest event still reaches the peer.
    let (status, body) = fire(&agents[0], "last", b"newest");
    assert_eq!(status, 200, "{body}");
    let event = wait_listed(&agents[1], "last");
    assert_eq!(event["Payload"], "bmV3ZXN0");
}

/// An event whose Lamport time is far ahead of the agent's (`u64::MAX -
/// 1`) is refused and counted: it does not move the event clock, so the
/// next fires keep small, increasing times and never wrap.
#[test]
fn an_event_time_far_ahead_is_refused_and_the_clock_never_wraps() {
    let cluster = Cluster::start(2);
    cluster.wait_all_alive(TIMEOUT);
    let target = &cluster.agents[0];
    let (status, first) = fire(target, "deploy", b"one");
    assert_eq!(status, 200, "{first}");
    let me = target.get("/v1/agent/self").unwrap();
    let generation = me["Stats"]["agent"]["generation"].as_u64().unwrap();
    let to = shoal_protocol::NodeId {
        addr: target.gossip_addr(),
        generation,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let evil = UserEvent {
        id: [0xee; 16],
        name: "evil".into(),
        payload: b"top".to_vec(),
        node_filter: String::new(),
        service_filter: String::new(),
        tag_filter: String::new(),
        ltime: u64::MAX - 1,
        time: shoal_protocol::clock::ntp64(now),
    };
    let socket = std::net::UdpSocket::bind((shoal_tests::unique_loopback(), 0)).unwrap();
    socket
        .send_to(
            &shoal_tests::rumor_datagram(to, &Rumor::Event(evil)),
            target.gossip_addr(),
        )
        .unwrap();
    // Refused (counted), or (the defect) taken and listed.
    wait_for(TIMEOUT, "the event from the future to be handled", || {
        let refused = target.get("/v1/agent/self")?["Stats"]["events"]["refused_ltime"].as_u64();
        let taken = listed(target).iter().any(|(name, _)| name == "evil");
        match (refused, taken) {
            (Some(1..), _) | (_, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let names: Vec<String> = listed(target).into_iter().map(|(name, _)| name).collect();
    assert!(!names.contains(&"evil".to_string()), "taken: {names:?}");
    assert_eq!(event_stat(target, "refused_ltime"), 1);
    let mut times = vec![first["LTime"].as_u64().unwrap()];
    for payload in [&b"two"[..], b"three"] {
        let (status, body) = fire(target, "deploy", payload);
        assert_eq!(status, 200, "{body}");
        times.push(body["LTime"].as_u64().unwrap());
    }
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
    assert!(times[2] < 1 << 20, "the clock jumped: {times:?}");
    for agent in &cluster.agents {
        let names: Vec<String> = listed(agent).into_iter().map(|(name, _)| name).collect();
        assert!(!names.contains(&"evil".to_string()), "{names:?}");
    }
    // The peer got the later events with their small times.
    let event = wait_for(TIMEOUT, "node-1 to list the third event", || {
        let list = cluster.agents[1].get("/v1/event/list?name=deploy")?;
        match list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["Payload"] == "dGhyZWU=")
        {
            Some(event) => Ok(event.clone()),
            None => Err(list.to_string()),
        }
    });
    assert_eq!(event["LTime"].as_u64(), Some(times[2]));
}
