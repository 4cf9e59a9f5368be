//! Three datacenters of real agents joined by a WAN pool: each has one or
//! two WAN members (`--wan`) and a plain agent. Every agent reads the
//! other datacenters' catalog, health and KV with `?dc=`, and answers
//! their names over DNS (`web.service.dc2.consul`), through a WAN member
//! of its own datacenter; writes to another datacenter are
//! refused; a WAN member killed leaves the lookups answered by the
//! others; a datacenter cut off from the rest answers 503 with the
//! reason, and its lookups recover once the cut heals.
//!
//! The WAN pool runs with quicker timings than its defaults (memberlist's
//! WAN profile: probe every 5 s, push-pull every 60 s) so that the test
//! takes a minute or two, not ten.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::dns::dig;
use shoal_tests::{Agent, AgentOptions, http_json, wait_for};

struct Federation {
    root: tempfile::TempDir,
}

impl Federation {
    /// Starts `name` in `dc`, joining the LAN pool through `lan_seed` and,
    /// when `wan` is given, the WAN pool through its seed.
    fn start(
        &self,
        name: &str,
        dc: &str,
        lan_seed: Option<&Agent>,
        wan: Option<Option<&Agent>>,
    ) -> Agent {
        self.start_with(name, dc, lan_seed, wan, "")
    }

    /// [`Federation::start`] with `config` (TOML) in the agent's config.
    fn start_with(
        &self,
        name: &str,
        dc: &str,
        lan_seed: Option<&Agent>,
        wan: Option<Option<&Agent>>,
        config: &str,
    ) -> Agent {
        let path = self.root.path().join(format!("{name}.toml"));
        let wan_timings = "[wan.gossip]\nprobe_interval = \"1s\"\nprobe_timeout = \"500ms\"\npush_pull_interval = \"5s\"\nreannounce_interval = \"2s\"\n";
        let wan_timings = if wan.is_some() { wan_timings } else { "" };
        std::fs::write(&path, format!("{config}\n{wan_timings}")).unwrap();
        let mut args = vec![
            "--datacenter".to_string(),
            dc.to_string(),
            "--fault-injection".to_string(),
            "--config".to_string(),
            path.display().to_string(),
        ];
        if let Some(seed) = wan {
            args.push("--wan".to_string());
            if let Some(seed) = seed {
                args.extend(["--join-wan".to_string(), format!("{}:8302", seed.ip)]);
            }
        }
        let agent = Agent::start(
            self.root.path(),
            AgentOptions {
                join: lan_seed
                    .map(|seed| vec![seed.gossip_addr()])
                    .unwrap_or_default(),
                args,
                ..AgentOptions::named(name)
            },
        );
        agent.wait_serving();
        agent
    }
}

/// The WAN members `agent` lists alive, sorted.
fn wan_alive(agent: &Agent) -> Result<Vec<String>, String> {
    let (status, body) = http_json("GET", agent.http_addr(), "/v1/agent/members?wan=1", None)?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let mut names: Vec<String> = body
        .as_array()
        .into_iter()
        .flatten()
        .filter(|member| member["Status"] == 1)
        .filter_map(|member| member["Name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

/// The nodes `agent` lists as passing instances of `service` in `dc`.
fn passing_nodes(agent: &Agent, service: &str, dc: &str) -> Result<Vec<String>, String> {
    let path = format!("/v1/health/service/{service}?passing&dc={dc}");
    let (status, body) = http_json("GET", agent.http_addr(), &path, None)?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let mut nodes: Vec<String> = body
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["Node"]["Node"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    Ok(nodes)
}

fn block(agent: &Agent, ips: &[&Agent]) {
    let list: Vec<String> = ips.iter().map(|agent| agent.ip.to_string()).collect();
    let path = format!("/v1/shoal/fault?block={}", list.join(","));
    let (status, body) = http_json("PUT", agent.http_addr(), &path, None).unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn three_datacenters_read_each_other_through_the_wan_pool() {
    let federation = Federation {
        root: tempfile::tempdir().unwrap(),
    };
    let started = Instant::now();
    // dc1: two WAN members and a plain agent.
    let a1 = federation.start("a1", "dc1", None, Some(None));
    let a2 = federation.start("a2", "dc1", Some(&a1), Some(Some(&a1)));
    // a3 asks dc2, then dc3, for a service dc1 has no instance of (DNS).
    let a3 = federation.start_with(
        "a3",
        "dc1",
        Some(&a1),
        None,
        "[dns]\nfailover = [\"dc2\", \"dc3\"]\n",
    );
    // dc2: one WAN member.
    let b1 = federation.start("b1", "dc2", None, Some(Some(&a1)));
    let b2 = federation.start("b2", "dc2", Some(&b1), None);
    let b3 = federation.start("b3", "dc2", Some(&b1), None);
    // dc3: two WAN members, the second joining through dc2.
    let c1 = federation.start("c1", "dc3", None, Some(Some(&a1)));
    let c2 = federation.start("c2", "dc3", Some(&c1), Some(Some(&b1)));
    let c3 = federation.start("c3", "dc3", Some(&c1), None);
    let wan_members = ["a1.dc1", "a2.dc1", "b1.dc2", "c1.dc3", "c2.dc3"];
    for member in [&a1, &a2, &b1, &c1, &c2] {
        wait_for(Duration::from_secs(60), "the WAN pool to form", || {
            let alive = wan_alive(member)?;
            (alive == wan_members)
                .then_some(())
                .ok_or(format!("{} lists {alive:?}", member.name))
        });
    }
    println!("WAN pool of 5 formed in {:?}", started.elapsed());

    // `shoal members -wan` on a WAN member; a plain agent says who is one.
    let output = a1.cli(&["members", "-wan"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    for member in wan_members {
        assert!(table.contains(member), "{table}");
    }
    let (status, body) = http_json("GET", a3.http_addr(), "/v1/agent/members?wan=1", None).unwrap();
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not a WAN member") && error.contains("a1"),
        "{body}"
    );

    // Data in dc2 and dc3, written there.
    for (agent, service) in [(&b3, "web"), (&c3, "web"), (&c2, "db")] {
        let (status, body) = agent
            .register_service(&json!({"Name": service, "Port": 8080}))
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(b2.kv_put("cfg/pool", "two"), Ok(true));
    assert_eq!(c1.kv_put("cfg/pool", "three"), Ok(true));
    assert_eq!(a2.kv_put("cfg/pool", "one"), Ok(true));

    // Every agent of dc1, WAN member or not, reads dc2 and dc3.
    for reader in [&a3, &a1] {
        wait_for(Duration::from_secs(30), "web in dc2 and dc3", || {
            let two = passing_nodes(reader, "web", "dc2")?;
            let three = passing_nodes(reader, "web", "dc3")?;
            (two == ["b3"] && three == ["c3"])
                .then_some(())
                .ok_or(format!("dc2 {two:?}, dc3 {three:?}"))
        });
    }
    // dc3 reads dc2, and dc2 reads dc1's KV.
    assert_eq!(passing_nodes(&c3, "web", "dc2").unwrap(), ["b3"]);
    wait_for(Duration::from_secs(30), "dc1's KV from dc2", || {
        let (status, body) = http_json("GET", b3.http_addr(), "/v1/kv/cfg/pool?dc=dc1", None)?;
        // base64("one")
        (status == 200 && body[0]["Value"] == "b25l")
            .then_some(())
            .ok_or(format!("{status}: {body}"))
    });
    wait_for(Duration::from_secs(30), "dc3's KV from dc1", || {
        let (status, body) = http_json("GET", a3.http_addr(), "/v1/kv/cfg/pool?dc=dc3", None)?;
        // base64("three")
        (status == 200 && body[0]["Value"] == "dGhyZWU=")
            .then_some(())
            .ok_or(format!("{status}: {body}"))
    });
    // DNS too, over UDP and TCP: names in another datacenter are answered
    // there; SRV targets name the node in its own datacenter.
    for extra in [&[][..], &["+tcp"][..]] {
        let reply = dig(a3.dns_addr(), "web.service.dc2.consul", "A", extra).unwrap();
        assert_eq!(reply.status, "NOERROR", "{}", reply.text);
        assert_eq!(reply.answers("A"), [b3.ip.to_string()], "{}", reply.text);
    }
    let srv = dig(a3.dns_addr(), "_db._tcp.service.dc3.consul", "SRV", &[]).unwrap();
    let targets = srv.answers("SRV");
    assert_eq!(targets.len(), 1, "{}", srv.text);
    assert!(targets[0].ends_with("c2.node.dc3.consul."), "{}", srv.text);
    let node = dig(a3.dns_addr(), "b2.node.dc2.consul", "A", &[]).unwrap();
    assert_eq!(node.answers("A"), [b2.ip.to_string()], "{}", node.text);
    let missing = dig(a3.dns_addr(), "nothing.service.dc2.consul", "A", &[]).unwrap();
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.text);
    let unknown = dig(a3.dns_addr(), "web.service.dc9.consul", "A", &[]).unwrap();
    assert_eq!(unknown.status, "SERVFAIL", "{}", unknown.text);
    // dns.failover: dc1 has no web and no db; a3 asks dc2 first (web is
    // there), then dc3 (db is only there), over UDP and TCP. a1, without
    // failover, answers from dc1 alone.
    for extra in [&[][..], &["+tcp"][..]] {
        let web = dig(a3.dns_addr(), "web.service.consul", "A", extra).unwrap();
        assert_eq!(web.answers("A"), [b3.ip.to_string()], "{}", web.text);
        let db = dig(a3.dns_addr(), "db.service.consul", "A", extra).unwrap();
        assert_eq!(db.answers("A"), [c2.ip.to_string()], "{}", db.text);
    }
    let nothing = dig(a3.dns_addr(), "nothing.service.consul", "A", &[]).unwrap();
    assert_eq!(nothing.status, "NXDOMAIN", "nowhere: {}", nothing.text);
    let home = dig(a1.dns_addr(), "db.service.consul", "A", &[]).unwrap();
    assert_eq!(home.status, "NXDOMAIN", "no failover on a1: {}", home.text);
    let (_, me) = http_json("GET", a3.http_addr(), "/v1/agent/self", None).unwrap();
    assert_eq!(me["Stats"]["dns"]["failovers"], 4, "{}", me["Stats"]["dns"]);
    // Counted: reads sent by a plain agent, served by WAN members, and the
    // WAN pool's live members.
    let (_, plain) = http_json("GET", a3.http_addr(), "/v1/agent/self", None).unwrap();
    let sent = plain["Stats"]["wan"]["reads_sent"]
        .as_u64()
        .unwrap_or_default();
    assert!(sent >= 5, "{}", plain["Stats"]["wan"]);
    let unanswered = plain["Stats"]["wan"]["reads_unanswered"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        (1..sent).contains(&unanswered),
        "dc9's at least: {}",
        plain["Stats"]["wan"]
    );
    let served: u64 = [&b1, &c1, &c2]
        .iter()
        .map(|member| {
            let (_, me) = http_json("GET", member.http_addr(), "/v1/agent/self", None).unwrap();
            assert_eq!(
                me["Stats"]["wan"]["members_alive"], 5,
                "{}",
                me["Stats"]["wan"]
            );
            me["Stats"]["wan"]["reads_served"]
                .as_u64()
                .unwrap_or_default()
        })
        .sum();
    assert!(
        served >= 4,
        "served by dc2's and dc3's WAN members: {served}"
    );
    // Connections are kept between reads, so a read skips the handshake
    // (a round trip across the WAN): eight reads of dc3 from b2 open at
    // most one connection from b2 to b1 (dc2's only WAN member) and one
    // from b1 to each of dc3's two.
    let wan_stat = |agent: &Agent, key: &str| {
        let (_, me) = http_json("GET", agent.http_addr(), "/v1/agent/self", None).unwrap();
        me["Stats"]["wan"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {}", me["Stats"]["wan"]))
    };
    let opened = |agent: &Agent| wan_stat(agent, "connections_opened");
    let (b2_before, b1_before) = (opened(&b2), opened(&b1));
    let served_before = wan_stat(&b1, "reads_served");
    for _ in 0..8 {
        assert_eq!(
            passing_nodes(&b2, "web", "dc3").unwrap(),
            ["c3"],
            "dc3 read from b2"
        );
    }
    assert!(wan_stat(&b1, "reads_served") >= served_before + 8);
    // A datacenter's name in another case is the same datacenter: on b2,
    // `?dc=DC2` reads from b2's own catalog (nothing sent) and writes.
    let sent_before = wan_stat(&b2, "reads_sent");
    let (status, body) =
        http_json("GET", b2.http_addr(), "/v1/health/service/web?dc=DC2", None).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["Node"]["Node"], "b3", "{body}");
    assert_eq!(wan_stat(&b2, "reads_sent"), sent_before, "sent nowhere");
    let (status, body) = http_json(
        "PUT",
        b2.http_addr(),
        "/v1/kv/cfg/case?dc=DC2",
        Some(b"two"),
    )
    .unwrap();
    assert_eq!(status, 200, "a write to our own datacenter: {body}");
    assert!(
        opened(&b2) - b2_before <= 1,
        "b2 opened {} connections for 8 reads",
        opened(&b2) - b2_before
    );
    assert!(
        opened(&b1) - b1_before <= 2,
        "b1 opened {} connections for 8 reads",
        opened(&b1) - b1_before
    );
    // The catalog of another datacenter: its nodes, with their datacenter.
    let (status, body) =
        http_json("GET", a3.http_addr(), "/v1/catalog/nodes?dc=dc2", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let datacenters: Vec<&Value> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|node| &node["Datacenter"])
        .collect();
    assert_eq!(datacenters.len(), 3, "{body}");
    assert!(datacenters.iter().all(|dc| *dc == "dc2"), "{body}");
    // The datacenters, ours first, on a WAN member and on a plain agent.
    for reader in [&a1, &a3, &b2] {
        let (status, body) =
            http_json("GET", reader.http_addr(), "/v1/catalog/datacenters", None).unwrap();
        assert_eq!(status, 200, "{body}");
        let mut list: Vec<String> = serde_json::from_value(body.clone()).unwrap();
        let ours = list.remove(0);
        list.sort();
        let mut expected = vec!["dc1", "dc2", "dc3"];
        expected.retain(|dc| *dc != ours);
        assert_eq!(list, expected, "{} lists {body}", reader.name);
    }

    // Writes stay home: refused, saying why, and nothing is written.
    let (status, body) = http_json(
        "PUT",
        a3.http_addr(),
        "/v1/kv/cfg/pool?dc=dc2",
        Some(b"hijack"),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("owns its data"),
        "{body}"
    );
    assert_eq!(b2.kv_get("cfg/pool"), Ok(Some("two".to_string())));
    // An unknown datacenter: 503 with the reason.
    let (status, body) = http_json("GET", a3.http_addr(), "/v1/kv/cfg/pool?dc=dc9", None).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("dc9"),
        "{body}"
    );

    // Partial connectivity: a2 (dc1) and b1 (dc2) can't reach each other,
    // but both reach the rest. b1 stays alive in a2's view (probed
    // through others), and every read of dc2 from dc1 is answered, through
    // a1 when a2 can't pass it on.
    block(&a2, &[&b1]);
    block(&b1, &[&a2]);
    for round in 0..30 {
        let nodes = passing_nodes(&a3, "web", "dc2")
            .unwrap_or_else(|error| panic!("lookup {round} with a2 and b1 apart: {error}"));
        assert_eq!(nodes, ["b3"], "lookup {round}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        wan_alive(&a2).unwrap(),
        wan_members,
        "a2's view after 9 s apart from b1"
    );
    block(&a2, &[]);
    block(&b1, &[]);

    // A WAN member of dc3 and one of dc1 killed: every lookup is still
    // answered, through the others.
    let (mut c1, mut a1) = (c1, a1);
    c1.kill();
    a1.kill();
    for round in 0..20 {
        let nodes = passing_nodes(&a3, "web", "dc3")
            .unwrap_or_else(|error| panic!("lookup {round} after the kills: {error}"));
        assert_eq!(nodes, ["c3"], "lookup {round}");
    }
    // The WAN pool replaces them on its own: the dead are declared failed.
    for member in [&a2, &b1, &c2] {
        wait_for(
            Duration::from_secs(60),
            "the dead WAN members to fail",
            || {
                let alive = wan_alive(member)?;
                (alive == ["a2.dc1", "b1.dc2", "c2.dc3"])
                    .then_some(())
                    .ok_or(format!("{} lists {alive:?}", member.name))
            },
        );
    }

    // dc2 cut off from the other datacenters (its WAN member from theirs,
    // both ways): dc1's lookups of dc2 answer 503 with the reason at once;
    // once the WAN pool declared dc2's member failed, the reason says no
    // live WAN member of dc2 is left; dc2's own agents stay alive in their
    // LAN pool; and the lookups recover on heal.
    let others = [&a2, &a3, &c2, &c3];
    block(&b1, &others);
    for other in others {
        block(other, &[&b1]);
    }
    let refused = |reason: &str| -> Result<(), String> {
        match http_json("GET", a3.http_addr(), "/v1/health/service/web?dc=dc2", None) {
            Ok((503, body)) if body["error"].as_str().unwrap_or_default().contains(reason) => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    };
    wait_for(Duration::from_secs(10), "dc2's lookups to fail", || {
        refused("dc2")
    });
    let cut = Instant::now();
    wait_for(
        Duration::from_secs(90),
        "dc2's WAN member to be declared failed",
        || {
            let alive = wan_alive(&a2)?;
            (alive == ["a2.dc1", "c2.dc3"])
                .then_some(())
                .ok_or(format!("a2 lists {alive:?}"))
        },
    );
    let declared = cut.elapsed();
    refused("no live WAN member of datacenter `dc2`").unwrap();
    let members = b2.members().unwrap();
    assert!(
        members.iter().all(|(_, status)| *status == 1),
        "dc2's LAN pool: {members:?}"
    );
    for other in others {
        block(other, &[]);
    }
    block(&b1, &[]);
    let healed = Instant::now();
    wait_for(Duration::from_secs(90), "dc2's lookups to recover", || {
        passing_nodes(&a3, "web", "dc2")
            .and_then(|nodes| (nodes == ["b3"]).then_some(()).ok_or(format!("{nodes:?}")))
    });
    println!(
        "cut: dc2's WAN member declared failed after {declared:?}; healed: lookups answered again after {:?}",
        healed.elapsed()
    );
}

/// A KV entry gossiped in the WAN pool is refused: in particular one for
/// `_shoal/keyring`, which in a LAN pool carries the cluster's keys. The
/// WAN pool shares the LAN pool's keyring, so such an entry from any
/// datacenter would otherwise replace the keys of every WAN member and cut
/// it off from its own datacenter.
#[test]
fn a_keyring_entry_gossiped_in_the_wan_pool_changes_no_key() {
    use shoal_protocol::kv::KvEntry;
    use shoal_protocol::rumor::Rumor;
    let root = tempfile::tempdir().unwrap();
    let member = Agent::start(
        root.path(),
        AgentOptions {
            args: vec!["--wan".into(), "--acl-allow-unauthenticated-keyring".into()],
            ..AgentOptions::named("w1")
        },
    );
    member.wait_serving();
    let peer = Agent::start(root.path(), AgentOptions::joining("p1", &member));
    peer.wait_serving();
    wait_for(Duration::from_secs(20), "the LAN pair", || {
        let members = member.members()?;
        (members.len() == 2)
            .then_some(())
            .ok_or(format!("{members:?}"))
    });
    let (status, wan) =
        http_json("GET", member.http_addr(), "/v1/agent/members?wan=1", None).unwrap();
    assert_eq!(status, 200, "{wan}");
    let generation = wan[0]["Generation"]
        .as_u64()
        .expect("the WAN identity's generation");
    let wan_addr = std::net::SocketAddr::new(member.ip, 8302);
    // 32 bytes of 7, base64.
    let forged = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let entry = KvEntry {
        key: "_shoal/keyring".into(),
        value: format!("{{\"primary\":\"{forged}\",\"keys\":[\"{forged}\"]}}").into_bytes(),
        flags: 0,
        time: 1,
        writer: "mallory".into(),
        deleted: false,
    };
    let to = shoal_protocol::NodeId {
        addr: wan_addr,
        generation,
    };
    let datagram = shoal_tests::broadcast_datagram_in(
        "shoal/wan",
        to,
        &[&shoal_protocol::codec::encode(&Rumor::Kv(entry))],
    );
    let socket = std::net::UdpSocket::bind((shoal_tests::unique_loopback(), 0)).unwrap();
    for _ in 0..3 {
        socket.send_to(&datagram, wan_addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (status, keyring) =
        http_json("GET", member.http_addr(), "/v1/operator/keyring", None).unwrap();
    assert_eq!(status, 200, "{keyring}");
    assert!(
        !keyring.to_string().contains(forged),
        "the WAN pool changed the keys: {keyring}"
    );
    // The LAN pool still hears its peer: its traffic is as it was.
    wait_for(Duration::from_secs(10), "the LAN peer alive", || {
        let members = peer.members()?;
        members
            .iter()
            .all(|(_, status)| *status == 1)
            .then_some(())
            .ok_or(format!("{members:?}"))
    });
    assert!(
        !member.log().contains("gossip keyring updated"),
        "{}",
        member.log()
    );
}
