//! Gossip encryption with real processes: an agent with another key (or
//! none) can neither join nor inject anything, and a key rotation across
//! the cluster causes no membership flap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shoal_tests::{Agent, AgentOptions, Cluster, http_json, wait_for};

const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

fn with_key(key: &'static str) -> impl Fn(usize) -> AgentOptions {
    move |_| AgentOptions {
        args: vec!["--encrypt".into(), key.into()],
        ..AgentOptions::default()
    }
}

fn keyring(agent: &Agent) -> Result<(Vec<String>, Vec<String>), String> {
    let ring = agent.get("/v1/operator/keyring")?;
    let names = |field: &str| {
        let mut keys: Vec<String> = ring[0][field]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    Ok((names("Keys"), names("PrimaryKeys")))
}

#[test]
fn agents_without_the_key_cannot_join_or_inject() {
    let cluster = Cluster::start_with(3, with_key(KEY_A));
    cluster.wait_all_alive(Duration::from_secs(20));
    let seed = cluster.agents[0].gossip_addr();
    let strangers = [
        Agent::start(
            cluster.root.path(),
            AgentOptions {
                name: "wrong-key".into(),
                join: vec![seed],
                args: vec!["--encrypt".into(), KEY_B.into()],
                ..AgentOptions::default()
            },
        ),
        Agent::start(
            cluster.root.path(),
            AgentOptions {
                name: "no-key".into(),
                join: vec![seed],
                ..AgentOptions::default()
            },
        ),
    ];
    for stranger in &strangers {
        wait_for(Duration::from_secs(15), "the stranger to serve", || {
            stranger.get("/v1/agent/self").map(|_| ())
        });
        // It tries to inject a service and a KV entry.
        let registration = json!({"Name": "evil", "Port": 6666});
        http_json(
            "PUT",
            stranger.http_addr(),
            "/v1/agent/service/register",
            Some(registration.to_string().as_bytes()),
        )
        .unwrap();
        assert_eq!(stranger.kv_put("injected", "yes"), Ok(true));
    }
    // Give gossip and several anti-entropy rounds every chance.
    std::thread::sleep(Duration::from_secs(8));
    for agent in &cluster.agents {
        let mut names: Vec<String> = agent
            .members()
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["node-0", "node-1", "node-2"],
            "{} sees {names:?}",
            agent.name
        );
        assert_eq!(agent.kv_get("injected"), Ok(None));
        assert_eq!(agent.get("/v1/catalog/service/evil").unwrap(), json!([]));
        let gossip = &agent.get("/v1/agent/self").unwrap()["Stats"]["gossip"];
        assert!(
            gossip["rejected_envelopes"].as_u64().unwrap() > 0 || agent.name != "node-0",
            "{gossip}"
        );
    }
    for stranger in &strangers {
        let members = stranger.members().unwrap();
        assert_eq!(members.len(), 1, "{} sees {members:?}", stranger.name);
    }
}

#[test]
fn key_rotation_causes_no_membership_flap() {
    // No token: keyring changes need the operator's opt-in.
    let cluster = Arc::new(Cluster::start_with(3, |i| {
        let mut options = with_key(KEY_A)(i);
        options
            .args
            .push("--acl-allow-unauthenticated-keyring".into());
        options
    }));
    cluster.wait_all_alive(Duration::from_secs(20));

    // Watch every agent's membership for the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let flaps = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (cluster, stop, flaps) = (cluster.clone(), stop.clone(), flaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for agent in &cluster.agents {
                    if let Ok(members) = agent.members()
                        && (members.len() != 3 || members.iter().any(|(_, status)| *status != 1))
                    {
                        flaps
                            .lock()
                            .unwrap()
                            .push(format!("{}: {members:?}", agent.name));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let operate = |method: &str, key: &str| {
        let body = json!({ "Key": key }).to_string();
        let (status, answer) = http_json(
            method,
            cluster.agents[0].http_addr(),
            "/v1/operator/keyring",
            Some(body.as_bytes()),
        )
        .unwrap();
        assert_eq!(status, 200, "{method}: {answer}");
    };
    let expect_everywhere = |keys: &[&str], primary: &str| {
        let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        keys.sort();
        for agent in &cluster.agents {
            wait_for(
                Duration::from_secs(15),
                &format!("{} to hold {keys:?}", agent.name),
                || {
                    let ring = keyring(agent)?;
                    if ring == (keys.clone(), vec![primary.to_string()]) {
                        Ok(())
                    } else {
                        Err(format!("{ring:?}"))
                    }
                },
            );
        }
    };

    operate("POST", KEY_B);
    expect_everywhere(&[KEY_A, KEY_B], KEY_A);
    operate("PUT", KEY_B);
    expect_everywhere(&[KEY_A, KEY_B], KEY_B);
    operate("DELETE", KEY_A);
    expect_everywhere(&[KEY_B], KEY_B);
    // Keep watching a while on the new key alone.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let flaps = flaps.lock().unwrap();
    assert!(
        flaps.is_empty(),
        "membership flapped during the rotation: {flaps:?}"
    );

    // A newcomer with only the new key joins; one with only the old key can't.
    let seed = cluster.agents[1].gossip_addr();
    let fresh = Agent::start(
        cluster.root.path(),
        AgentOptions {
            name: "fresh".into(),
            join: vec![seed],
            args: vec!["--encrypt".into(), KEY_B.into()],
            ..AgentOptions::default()
        },
    );
    wait_for(Duration::from_secs(20), "the newcomer to join", || {
        let members = fresh.members()?;
        if members.len() == 4 && members.iter().all(|(_, s)| *s == 1) {
            Ok(())
        } else {
            Err(format!("{members:?}"))
        }
    });
    // The keyring operations refuse bad input.
    let (status, answer) = http_json(
        "PUT",
        cluster.agents[0].http_addr(),
        "/v1/operator/keyring",
        Some(br#"{"Key": "not-a-key"}"#),
    )
    .unwrap();
    assert_eq!(status, 400, "{answer}");
    let (status, _) = http_json(
        "GET",
        cluster.agents[0].http_addr(),
        "/v1/kv/_shoal/keyring",
        None,
    )
    .unwrap();
    assert_eq!(status, 403, "the keyring is not readable through /v1/kv");
}
