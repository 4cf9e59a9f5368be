//! Wire versions between real agents (docs/upgrading.md): every agent
//! advertises the range it speaks (record tag `wire`), speaks the highest
//! version both sides know, refuses a peer outside its range with one log
//! line per peer per minute, and skips what a newer agent adds (rumor
//! kinds, appended fields). Versions 1 and 2 exist (2 adds the network
//! coordinate on acks): a build pretends to be older (only 1) or newer
//! (3) through the test-only `SHOAL_TEST_WIRE_MAX` / `SHOAL_TEST_WIRE_MIN`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shoal_protocol::NodeId;
use shoal_protocol::kv::KvEntry;
use shoal_protocol::rumor::Rumor;
use shoal_tests::{Agent, AgentOptions, Cluster, unique_loopback, wait_for};

fn gossip_stats(agent: &Agent) -> Value {
    agent.get("/v1/agent/self").unwrap()["Stats"]["gossip"].clone()
}

fn received_in(agent: &Agent, version: &str) -> u64 {
    gossip_stats(agent)["received_datagrams_by_wire_version"][version]
        .as_u64()
        .unwrap_or(0)
}

fn pretends_to_speak(min: u8, max: u8) -> Vec<(String, String)> {
    vec![
        ("SHOAL_TEST_WIRE_MIN".into(), min.to_string()),
        ("SHOAL_TEST_WIRE_MAX".into(), max.to_string()),
    ]
}

/// Two agents as built (1 to 2) and one that speaks only 1, as 0.1.0
/// does: the two use 2 between themselves and 1 with the third,
/// everything converges both ways, and network coordinates, which only
/// version 2 carries, pass between the two newer agents only.
#[test]
fn agents_speak_the_highest_wire_version_both_know() {
    let cluster = Cluster::start_with(3, |i| AgentOptions {
        env: if i < 2 {
            Vec::new()
        } else {
            pretends_to_speak(1, 1)
        },
        ..AgentOptions::default()
    });
    cluster.wait_all_alive(Duration::from_secs(30));
    let [newer, other_newer, older] = &cluster.agents[..] else {
        unreachable!()
    };
    // Each advertises its range; the older agent reads the newer's.
    assert_eq!(gossip_stats(newer)["wire_versions"], "1-2");
    assert_eq!(gossip_stats(older)["wire_versions"], "1-1");
    let tags_seen_by_older = wait_for(Duration::from_secs(20), "the records to spread", || {
        let members = older.get("/v1/agent/members")?;
        let tag = |name: &str| {
            members
                .as_array()
                .and_then(|all| all.iter().find(|m| m["Name"] == name))
                .map(|m| m["Tags"]["wire"].clone())
        };
        match (tag("node-0"), tag("node-2")) {
            (Some(a), Some(b)) if a.is_string() && b.is_string() => Ok((a, b)),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(tags_seen_by_older, ("1-2".into(), "1-1".into()));
    // KV both ways across the version boundary.
    assert_eq!(newer.kv_put("from/newer", "a"), Ok(true));
    assert_eq!(older.kv_put("from/older", "b"), Ok(true));
    for agent in &cluster.agents {
        agent.wait_kv("from/newer", Some("a"), Duration::from_secs(20));
        agent.wait_kv("from/older", Some("b"), Duration::from_secs(20));
    }
    // The two newer agents talk version 2; the older one hears only 1.
    wait_for(
        Duration::from_secs(20),
        "version 2 between the newer agents",
        || {
            let (two, one) = (received_in(newer, "2"), received_in(newer, "1"));
            let (peer_two, peer_one) =
                (received_in(other_newer, "2"), received_in(other_newer, "1"));
            if two > 0 && one > 0 && peer_two > 0 && peer_one > 0 {
                Ok(())
            } else {
                Err(format!(
                    "node-0 got v2 {two}, v1 {one}; node-1 got v2 {peer_two}, v1 {peer_one}"
                ))
            }
        },
    );
    let stats = gossip_stats(older);
    assert!(
        stats["received_datagrams_by_wire_version"]["1"]
            .as_u64()
            .unwrap()
            > 0,
        "{stats}"
    );
    assert!(
        stats["received_datagrams_by_wire_version"]["2"].is_null(),
        "{stats}"
    );
    assert_eq!(stats["rejected_wire_version"], 0, "{stats}");
    assert!(!older.log().contains("refusing a peer"), "{}", older.log());

    // Each newer agent learns the other's coordinate from its acks, and
    // never the older one's (its acks carry none).
    let held = |agent: &Agent| -> Result<Vec<String>, String> {
        let nodes = agent.get("/v1/coordinate/nodes")?;
        Ok(nodes
            .as_array()
            .ok_or("not a list")?
            .iter()
            .filter_map(|entry| entry["Node"].as_str().map(str::to_string))
            .collect())
    };
    wait_for(
        Duration::from_secs(30),
        "coordinates between the newer agents",
        || {
            let (a, b) = (held(newer)?, held(other_newer)?);
            if a == ["node-0", "node-1"] && b == ["node-0", "node-1"] {
                Ok(())
            } else {
                Err(format!("node-0 holds {a:?}, node-1 holds {b:?}"))
            }
        },
    );
    assert_eq!(
        held(older).unwrap(),
        ["node-2"],
        "the older agent receives none"
    );
}

/// An agent that speaks only version 3 is refused by one that speaks 1 to
/// 2: counted, logged once naming both versions (not once per packet), and
/// neither crashes.
#[test]
fn a_peer_outside_the_range_is_refused_with_one_log_line() {
    let root = tempfile::tempdir().unwrap();
    let older = Agent::start(root.path(), AgentOptions::named("older"));
    older.wait_serving();
    let newer = Agent::start(
        root.path(),
        AgentOptions {
            join: vec![older.gossip_addr()],
            env: pretends_to_speak(3, 3),
            ..AgentOptions::named("only-three")
        },
    );
    newer.wait_serving();
    let rejected = wait_for(Duration::from_secs(30), "several refused datagrams", || {
        let rejected = gossip_stats(&older)["rejected_wire_version"]
            .as_u64()
            .unwrap();
        if rejected >= 3 {
            Ok(rejected)
        } else {
            Err(format!("{rejected}"))
        }
    });
    let line = "refusing a peer that speaks wire version 3: this agent speaks wire versions 1 to 2";
    let log = older.log();
    assert_eq!(
        log.matches(line).count(),
        1,
        "{rejected} refused; log:\n{log}"
    );
    assert!(
        log.contains(&newer.ip.to_string()),
        "the line names the peer: {log}"
    );
    // Refused, not joined; both still serve.
    let names: Vec<String> = older.members().unwrap().into_iter().map(|m| m.0).collect();
    assert_eq!(names, vec!["older".to_string()]);
    assert!(newer.get("/health/live").is_ok() && older.get("/health/live").is_ok());
}

/// What a newer agent may add to a rumor, sent on real UDP: a rumor of a
/// kind this build doesn't know is skipped (counted) and the rest of the
/// packet is still read; a known rumor with fields appended is applied.
#[test]
fn unknown_rumor_kinds_and_appended_fields_are_skipped() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), AgentOptions::named("target"));
    agent.wait_serving();
    let generation = agent.get("/v1/agent/self").unwrap()["Stats"]["agent"]["generation"]
        .as_u64()
        .unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let entry = |key: &str| KvEntry {
        key: key.into(),
        value: b"v".to_vec(),
        flags: 0,
        time: shoal_protocol::clock::ntp64(now),
        writer: "newer-peer".into(),
        deleted: false,
    };
    // A rumor kind far past the known ones (bincode: the variant index as a
    // varint, then its fields).
    let mut unknown = vec![200u8];
    unknown.extend_from_slice(b"a field only a newer agent reads");
    let mut appended = shoal_protocol::codec::encode(&Rumor::Kv(entry("future/appended")));
    appended.extend_from_slice(&[7, 7, 7]);
    let plain = shoal_protocol::codec::encode(&Rumor::Kv(entry("future/after-unknown")));

    let datagram = shoal_tests::broadcast_datagram(
        NodeId {
            addr: agent.gossip_addr(),
            generation,
        },
        &[&unknown, &appended, &plain],
    );
    let socket = UdpSocket::bind(SocketAddr::new(unique_loopback(), 0)).unwrap();
    socket.send_to(&datagram, agent.gossip_addr()).unwrap();

    agent.wait_kv("future/appended", Some("v"), Duration::from_secs(10));
    agent.wait_kv("future/after-unknown", Some("v"), Duration::from_secs(10));
    let stats = gossip_stats(&agent);
    assert_eq!(stats["skipped_unknown_rumors"], 1, "{stats}");
    assert_eq!(stats["rejected_swim"], 0, "{stats}");
}
