//! The DNS interface, asked with `dig` (Debian's dnsutils) as any client
//! would: Consul's names answered from the catalog of an agent that holds
//! none of the instances itself.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::dns::{Dig, dig, register_ttl_service, set_ttl};
use shoal_tests::{Agent, AgentOptions, Cluster, wait_for};

const SLOW: Duration = Duration::from_secs(30);

/// Waits until `name`'s A answer on `agent` is exactly `expected`.
fn wait_a(agent: &Agent, name: &str, expected: &[&str]) -> Dig {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    wait_for(SLOW, &format!("{name} A = {expected:?}"), || {
        let reply = dig(agent.dns_addr(), name, "A", &[])?;
        if reply.answers("A") == expected {
            Ok(reply)
        } else {
            Err(format!("{} {:?}", reply.status, reply.answers("A")))
        }
    })
}

fn srv_ports(reply: &Dig) -> Vec<u16> {
    let mut ports: Vec<u16> = reply
        .answers("SRV")
        .iter()
        .map(|data| data.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    ports.sort();
    ports
}

fn expect_status(agent: &Agent, name: &str, kind: &str, status: &str) -> Dig {
    let reply = dig(agent.dns_addr(), name, kind, &[]).unwrap();
    assert_eq!(reply.status, status, "{name} {kind}: {}", reply.text);
    reply
}

#[test]
fn consul_names_answer_the_passing_instances_of_other_agents() {
    let cluster = Cluster::start(3);
    cluster.wait_all_alive(SLOW);
    let [asked, one, two] = [&cluster.agents[0], &cluster.agents[1], &cluster.agents[2]];
    register_ttl_service(
        one,
        "web",
        "web-1",
        Some("10.1.0.1"),
        8001,
        &["v1"],
        "passing",
    );
    register_ttl_service(
        one,
        "web",
        "web-2",
        Some("10.1.0.2"),
        8002,
        &["v2"],
        "passing",
    );
    register_ttl_service(two, "web", "web-3", None, 8003, &["v2"], "passing");
    register_ttl_service(
        two,
        "web",
        "web-4",
        Some("10.1.0.4"),
        8004,
        &["v2"],
        "critical",
    );
    register_ttl_service(two, "web", "web-5", Some("10.1.0.5"), 8005, &[], "warning");
    let node_two = two.ip.to_string();
    let healthy = ["10.1.0.1", "10.1.0.2", "10.1.0.5", node_two.as_str()];
    let a = wait_a(asked, "web.service.consul", &healthy);
    assert!(a.flags.contains(&"aa".to_string()), "{}", a.text);
    wait_a(asked, "WEB.service.shoal.", &healthy);
    wait_a(asked, "web.service.dc1.consul", &healthy);
    wait_a(asked, "v2.web.service.consul", &["10.1.0.2", &node_two]);
    wait_a(asked, "v1.web.service.consul", &["10.1.0.1"]);

    // SRV, plain and RFC 2782: ports of the healthy instances, targets
    // resolved in the additional section.
    for name in ["web.service.consul", "_web._tcp.service.consul"] {
        let srv = dig(asked.dns_addr(), name, "SRV", &[]).unwrap();
        assert_eq!(srv_ports(&srv), [8001, 8002, 8003, 8005], "{}", srv.text);
        let targets: BTreeSet<String> = srv
            .answers("SRV")
            .iter()
            .map(|data| data.split_whitespace().nth(3).unwrap().to_string())
            .collect();
        let resolved: BTreeSet<String> = srv.additional.iter().map(|r| r.0.clone()).collect();
        assert_eq!(targets, resolved, "{}", srv.text);
        assert!(
            targets.contains("node-2.node.dc1.consul.")
                && targets.contains("0a010001.addr.dc1.consul."),
            "{}",
            srv.text
        );
    }
    let tagged = dig(asked.dns_addr(), "_web._v2.service.consul", "SRV", &[]).unwrap();
    assert_eq!(srv_ports(&tagged), [8002, 8003], "{}", tagged.text);
    // The SRV target names resolve on their own too.
    wait_a(asked, "0a010001.addr.dc1.consul", &["10.1.0.1"]);

    // only_passing is off: the warning instance is in, the critical one never.
    assert!(!a.answers("A").contains(&"10.1.0.4".to_string()));

    // Nodes.
    wait_a(asked, "node-1.node.consul", &[&one.ip.to_string()]);
    wait_a(asked, "node-2.node.dc1.shoal", &[&node_two]);

    // Unknown names: NXDOMAIN with our SOA; other domains: REFUSED.
    for name in [
        "nope.service.consul",
        "nope.node.consul",
        "web.service.dc9.consul",
        "x.y.consul",
    ] {
        let reply = expect_status(asked, name, "A", "NXDOMAIN");
        assert_eq!(reply.authority.len(), 1, "{}", reply.text);
        assert_eq!(reply.authority[0].1, "SOA", "{}", reply.text);
        assert!(
            reply.authority[0].2.starts_with("ns.consul."),
            "{}",
            reply.text
        );
    }
    expect_status(asked, "example.com", "A", "REFUSED");
    let nodata = expect_status(asked, "web.service.consul", "MX", "NOERROR");
    assert!(nodata.answer.is_empty() && nodata.authority.len() == 1);

    // The CLI prints what the agent answers.
    let output = asked.cli(&[
        "dns",
        "lookup",
        "_web._tcp.service.consul",
        "--dns-addr",
        &asked.dns_addr().to_string(),
    ]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(printed.starts_with("status: NOERROR"), "{printed}");
    for port in ["8001", "8002", "8003", "8005"] {
        assert!(printed.contains(&format!(" {port} ")), "{printed}");
    }

    check_failure_leaves_the_answers_at_once(asked, one);
    sixty_instances_truncate_over_udp_and_come_whole_over_tcp(asked, two);
}

/// A failing check takes its instance out of the answers as soon as the
/// asked agent knows it (its HTTP API shows it critical): both read the
/// same snapshot.
fn check_failure_leaves_the_answers_at_once(asked: &Agent, owner: &Agent) {
    set_ttl(owner, "web-1", "fail");
    let critical_seen = wait_for(SLOW, "web-1 critical on the asked agent", || {
        let health = asked.get("/v1/health/service/web")?;
        let critical = health.as_array().unwrap().iter().any(|entry| {
            entry["Service"]["ID"] == "web-1"
                && entry["Checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|check| check["Status"] == "critical")
        });
        if critical {
            Ok(Instant::now())
        } else {
            Err("still passing".into())
        }
    });
    let gone_after = wait_for(SLOW, "web-1 out of the DNS answers", || {
        let reply = dig(asked.dns_addr(), "web.service.consul", "A", &[])?;
        if reply.answers("A").contains(&"10.1.0.1".to_string()) {
            Err(reply.text)
        } else {
            Ok(critical_seen.elapsed())
        }
    });
    eprintln!("web-1 left the DNS answers {gone_after:?} after the HTTP API showed it critical");
    assert!(gone_after < Duration::from_secs(1), "{gone_after:?}");
    set_ttl(owner, "web-1", "pass");
}

fn sixty_instances_truncate_over_udp_and_come_whole_over_tcp(asked: &Agent, owner: &Agent) {
    for i in 1..=60u16 {
        let address = format!("10.2.0.{i}");
        let id = format!("many-{i}");
        register_ttl_service(owner, "many", &id, Some(&address), 9000 + i, &[], "passing");
    }
    wait_for(SLOW, "60 instances over TCP", || {
        let reply = dig(asked.dns_addr(), "many.service.consul", "A", &["+tcp"])?;
        let count = reply.answers("A").len();
        if count == 60 && !reply.flags.contains(&"tc".to_string()) {
            Ok(())
        } else {
            Err(format!("{count} answers"))
        }
    });
    // Classic UDP (512 bytes): truncated, with what fits.
    let udp = dig(
        asked.dns_addr(),
        "many.service.consul",
        "A",
        &["+noedns", "+ignore"],
    )
    .unwrap();
    assert!(udp.flags.contains(&"tc".to_string()), "{}", udp.text);
    assert!(
        (1..60).contains(&udp.answers("A").len()),
        "{} answers",
        udp.answers("A").len()
    );
    // EDNS (dig offers 1232 bytes): 60 SRV records don't fit either...
    let srv = dig(asked.dns_addr(), "many.service.consul", "SRV", &["+ignore"]).unwrap();
    assert!(srv.flags.contains(&"tc".to_string()), "{}", srv.text);
    // ...and dig, left to itself, retries over TCP and gets them all.
    let whole = dig(asked.dns_addr(), "_many._tcp.service.consul", "SRV", &[]).unwrap();
    assert_eq!(whole.answers("SRV").len(), 60, "{}", whole.text);
    assert_eq!(whole.additional.len(), 60, "{}", whole.text);
}

fn dns_stats(agent: &Agent) -> Value {
    agent.get("/v1/agent/self").unwrap()["Stats"]["dns"].clone()
}

/// Deterministic junk, so that a failure can be replayed.
fn junk(seed: &mut u64, length: usize) -> Vec<u8> {
    (0..length)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[test]
fn malformed_packets_and_idle_connections_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    let options = AgentOptions::with_config_file(
        &config,
        "[dns]\nmax_tcp_connections = 4\ntcp_idle_timeout = \"1s\"\n",
        &[],
    );
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "lonely".into(),
            ..options
        },
    );
    agent.wait_serving();
    register_ttl_service(&agent, "web", "web-1", Some("10.3.0.1"), 80, &[], "passing");
    wait_a(&agent, "web.service.consul", &["10.3.0.1"]);

    let socket = UdpSocket::bind((agent.ip, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let seed = 0x5eed_d15e_u64;
    eprintln!("junk seed {seed:#x}");
    let mut state = seed;
    let mut packets: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x12],
        vec![0xab, 0xcd, 0x01],
        // A header that promises a question and has none.
        vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
        // A question whose label runs past the end.
        vec![
            0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, b'w', b'e',
        ],
        // A compression pointer to itself.
        vec![
            0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1,
        ],
    ];
    for length in [5, 12, 40, 300, 1400] {
        for _ in 0..20 {
            packets.push(junk(&mut state, length));
        }
    }
    let mut buffer = [0u8; 4096];
    let mut replies = 0;
    for packet in &packets {
        socket.send_to(packet, agent.dns_addr()).unwrap();
        if let Ok(length) = socket.recv(&mut buffer) {
            replies += 1;
            // Whatever comes back answers that packet's id.
            assert!(length >= 12 && buffer[..2] == packet[..2], "{packet:?}");
        }
    }
    eprintln!("{} junk packets, {replies} replies", packets.len());
    // Junk over TCP: a length prefix and garbage, then a length that lies.
    for junk_stream in [junk(&mut state, 200), vec![0xff, 0xff, 1, 2, 3]] {
        let mut stream = TcpStream::connect(agent.dns_addr()).unwrap();
        stream.write_all(&junk_stream).unwrap();
    }
    // Those two wait for the rest of their message until the idle timeout.
    std::thread::sleep(Duration::from_millis(1500));

    // Still answering, and the junk is counted.
    wait_a(&agent, "web.service.consul", &["10.3.0.1"]);
    let stats = dns_stats(&agent);
    let malformed = stats["malformed"].as_u64().unwrap();
    assert!(malformed >= 6, "{stats}");
    assert!(
        stats["responses"]["FORMERR"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert!(stats["queries"]["A"].as_u64().unwrap() >= 1, "{stats}");

    // TCP: at most 4 connections at once; idle ones are closed.
    let started = Instant::now();
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(agent.dns_addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(agent.dns_addr()).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        extra.read(&mut byte).unwrap_or(0),
        0,
        "the 5th connection stays open"
    );
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(stream.read(&mut byte).unwrap_or(0), 0);
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
    let stats = dns_stats(&agent);
    assert!(stats["tcp_rejected"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["tcp_idle_closed"].as_u64().unwrap() >= 4, "{stats}");
    // Answers over TCP again once the idle ones are gone.
    let reply = dig(agent.dns_addr(), "web.service.consul", "A", &["+tcp"]).unwrap();
    assert_eq!(reply.answers("A"), ["10.3.0.1"], "{}", reply.text);
}

#[test]
fn names_outside_the_domains_go_to_the_recursors_in_order() {
    let root = tempfile::tempdir().unwrap();
    let upstream_config = root.path().join("upstream.toml");
    let upstream = Agent::start(
        root.path(),
        AgentOptions {
            name: "upstream".into(),
            ..AgentOptions::with_config_file(
                &upstream_config,
                "[dns]\ndomain = \"other\"\nalt_domain = \"\"\n",
                &[],
            )
        },
    );
    upstream.wait_serving();
    register_ttl_service(
        &upstream,
        "db",
        "db-1",
        Some("10.4.0.1"),
        5432,
        &[],
        "passing",
    );
    wait_a(&upstream, "db.service.other", &["10.4.0.1"]);

    // The first recursor is a closed port; the second answers.
    let dead = std::net::SocketAddr::new(upstream.ip, 9);
    let config = root.path().join("forwarder.toml");
    let forwarder = Agent::start(
        root.path(),
        AgentOptions {
            name: "forwarder".into(),
            ..AgentOptions::with_config_file(
                &config,
                &format!(
                    "[dns]\nrecursors = [\"{dead}\", \"{}\"]\nrecursor_timeout = \"500ms\"\n",
                    upstream.dns_addr()
                ),
                &[],
            )
        },
    );
    forwarder.wait_serving();
    let udp = wait_a(&forwarder, "db.service.other", &["10.4.0.1"]);
    assert!(udp.flags.contains(&"ra".to_string()), "{}", udp.text);
    let tcp = dig(forwarder.dns_addr(), "db.service.other", "A", &["+tcp"]).unwrap();
    assert_eq!(tcp.answers("A"), ["10.4.0.1"], "{}", tcp.text);
    // The upstream's own refusal comes back as it is.
    expect_status(&forwarder, "example.com", "A", "REFUSED");
    // Our own domain is never forwarded.
    expect_status(&forwarder, "db.service.consul", "A", "NXDOMAIN");
    let stats = dns_stats(&forwarder);
    assert!(stats["forwarded"].as_u64().unwrap() >= 3, "{stats}");
}
