//! Bad input changes nothing and crashes nothing: malformed datagrams,
//! broken config files, an unreachable agent.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use shoal_tests::{
    Agent, AgentOptions, Cluster, run_agent_until_exit, shoal_bin, unique_loopback, wait_for,
};

/// A tiny xorshift so the garbage is reproducible; the seed is printed.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn malformed_datagrams_change_nothing() {
    let cluster = Cluster::start(2);
    let both = [0, 1];
    let expected = vec![("node-0".to_string(), 1), ("node-1".to_string(), 1)];
    cluster.wait_members(&both, &expected, Duration::from_secs(15));
    let target = cluster.agents[0].gossip_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();

    let seed = 0x5eed_0000_0000_0001u64 ^ u64::from(std::process::id());
    eprintln!("garbage seed {seed:#x}");
    let mut garbage = Garbage(seed);
    // A real header to build on: magic, version 1, kind Swim, flags 0,
    // then the cluster id of "shoal" (FNV-1a).
    let mut header = b"SHOL\x01\x01\x00".to_vec();
    header.extend_from_slice(&fnv1a(b"shoal").to_le_bytes());

    let mut packets: Vec<Vec<u8>> = Vec::new();
    for len in [0, 1, 4, 14, 15, 16, 100, 1399, 1400] {
        packets.push(garbage.bytes(len)); // random bytes
    }
    for len in [1, 10, 200, 1300] {
        let mut packet = header.clone(); // valid envelope, garbage payload
        packet.extend(garbage.bytes(len));
        packets.push(packet);
    }
    let mut wrong_magic = header.clone();
    wrong_magic[0] = b'X';
    wrong_magic.extend(garbage.bytes(50));
    packets.push(wrong_magic);
    let mut wrong_cluster = b"SHOL\x01\x01\x00".to_vec();
    wrong_cluster.extend_from_slice(&fnv1a(b"another-cluster").to_le_bytes());
    wrong_cluster.extend(garbage.bytes(50));
    packets.push(wrong_cluster);
    let mut wrong_version = header.clone();
    wrong_version[4] = 99;
    packets.push(wrong_version);
    packets.push(header[..9].to_vec()); // truncated header
    let mut oversized = header.clone();
    oversized.extend(garbage.bytes(9000));
    packets.push(oversized);
    for _ in 0..300 {
        let len = (garbage.next() % 1500) as usize;
        let mut packet = if garbage.next().is_multiple_of(2) {
            header.clone()
        } else {
            Vec::new()
        };
        packet.extend(garbage.bytes(len));
        packets.push(packet);
    }
    for packet in &packets {
        socket.send_to(packet, target).unwrap();
    }

    // Still serving, membership unchanged, and the garbage was counted.
    wait_for(
        Duration::from_secs(10),
        "the rejected packets to be counted",
        || {
            let me = cluster.agents[0].get("/v1/agent/self")?;
            let gossip = &me["Stats"]["gossip"];
            let rejected = gossip["rejected_envelopes"].as_u64().unwrap_or(0)
                + gossip["rejected_swim"].as_u64().unwrap_or(0)
                + gossip["receive_drops"].as_u64().unwrap_or(0);
            if rejected >= 20 {
                Ok(())
            } else {
                Err(format!("{gossip}"))
            }
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    cluster.wait_members(&both, &expected, Duration::from_secs(5));
    let me = cluster.agents[0]
        .get("/health/live")
        .expect("still answering");
    assert_eq!(me["status"], "alive");
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[test]
fn bad_config_files_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            "data_dir = \"/tmp/x\"\nnot_a_setting = true\n",
            "not_a_setting",
        ),
        (
            "bad address",
            "data_dir = \"/tmp/x\"\nbind = \"here\"\n",
            "`bind`",
        ),
        (
            "bad duration",
            "data_dir = \"/tmp/x\"\n[gossip]\nprobe_interval = \"often\"\n",
            "gossip.probe_interval",
        ),
        ("syntax error", "data_dir = \"/tmp/x\nbind = 1\n", "line"),
        (
            "wrong type",
            "data_dir = \"/tmp/x\"\njoin = \"127.0.0.1:1\"\n",
            "join",
        ),
    ];
    for (what, content, expected) in cases {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, content).unwrap();
        let output = std::process::Command::new(shoal_bin())
            .args(["agent", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    // A missing file is named too.
    let output = std::process::Command::new(shoal_bin())
        .args(["agent", "--config", "/nonexistent/shoal.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/shoal.toml"));
}

#[test]
fn cli_reports_an_unreachable_agent_in_one_line() {
    let output = std::process::Command::new(shoal_bin())
        .args(["members", "--http-addr", "127.0.0.1:1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach the shoal agent"), "{stderr}");
}

/// `n` `[[services]]` blocks, each with a TTL check.
fn services_config(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[services]]\nid = \"svc-{i}\"\nname = \"svc-{i}\"\nport = {}\n\
                 [[services.checks]]\nid = \"svc-{i}-ttl\"\nttl = \"60s\"\n\n",
                10_000 + i
            )
        })
        .collect()
}

/// A config file may register as many services as a node record carries
/// (`state::MAX_SERVICES`, 256), as the API may: 256 start and are served;
/// with 257 the agent refuses to start as for any bad config (exit 2),
/// naming the file, the key and the limit.
#[test]
fn services_from_a_config_file_past_the_record_limit_stop_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let full = Agent::start(
        root.path(),
        AgentOptions {
            name: "full".into(),
            ..AgentOptions::with_config_file(
                &root.path().join("full.toml"),
                &services_config(256),
                &[],
            )
        },
    );
    full.wait_serving();
    // The configured services are published with the loop's first
    // snapshot, just after the API is up.
    wait_for(Duration::from_secs(20), "256 services served", || {
        let count = full
            .get("/v1/agent/services")?
            .as_object()
            .map_or(0, |services| services.len());
        (count == 256)
            .then_some(())
            .ok_or(format!("{count} services"))
    });

    let (code, stderr) = run_agent_until_exit(root.path(), "over", &services_config(257));
    eprintln!("{code:?}: {stderr}");
    assert_eq!(
        code,
        Some(2),
        "an agent with 257 configured services: {stderr}"
    );
    assert!(
        stderr.contains("over.toml") && stderr.contains("`services`") && stderr.contains("256"),
        "the error names the file, the key and the limit: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Kernel drops on the UDP socket bound to `addr` (the last column of
/// `/proc/net/udp`).
fn kernel_udp_drops(addr: std::net::SocketAddr) -> u64 {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("IPv4 only");
    };
    let [a, b, c, d] = ip.octets();
    let local = format!("{d:02X}{c:02X}{b:02X}{a:02X}:{:04X}", addr.port());
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
        .and_then(|line| line.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no socket {local} in /proc/net/udp"))
}

/// The gossip counters `names` of `agent`, once two reads 1.5 s apart agree
/// (the loop publishes them every second).
fn settled_gossip_counters(agent: &Agent, names: [&str; 2]) -> [u64; 2] {
    let read = || {
        let me = agent.get("/v1/agent/self").unwrap();
        names.map(|name| me["Stats"]["gossip"][name].as_u64().unwrap())
    };
    let mut last = read();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the counters {names:?} kept moving: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(1500));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// What happens to datagrams that arrive while the core loop cannot take
/// them: the agent is stopped (SIGSTOP) while 2,000 arrive. Every one is
/// accounted for: the kernel's socket buffer (212,992 bytes by default,
/// about 256 small datagrams) keeps what fits and drops the rest (counted
/// in `/proc/net/udp`); the agent handles what was kept once resumed, and
/// `receive_drops` (the 1,024-datagram queue to the loop, `DATAGRAM_QUEUE`)
/// counts any the queue had no room for. With a default buffer the kernel
/// drops first and the queue is never full.
#[test]
fn datagrams_arriving_while_the_agent_is_stopped_are_all_accounted_for() {
    const SENT: u64 = 2000;
    let cluster = Cluster::start(1);
    let agent = &cluster.agents[0];
    agent.wait_serving();
    let counters = ["received_datagrams", "receive_drops"];
    let [handled_before, queue_drops_before] = settled_gossip_counters(agent, counters);
    let kernel_before = kernel_udp_drops(agent.gossip_addr());

    let pid = agent.pid().expect("running") as libc::pid_t;
    let socket = UdpSocket::bind((unique_loopback(), 0)).unwrap();
    let garbage = [0x5au8; 60];
    // SAFETY: signals to the agent process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let sent: u64 = (0..SENT)
        .map(|_| u64::from(socket.send_to(&garbage, agent.gossip_addr()).is_ok()))
        .sum();
    let kernel_dropped = kernel_udp_drops(agent.gossip_addr()) - kernel_before;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(sent, SENT);

    let [handled_after, queue_drops_after] = settled_gossip_counters(agent, counters);
    let handled = handled_after - handled_before;
    let queue_dropped = queue_drops_after - queue_drops_before;
    eprintln!(
        "{SENT} datagrams to a stopped agent: {kernel_dropped} dropped by the kernel, \
         {queue_dropped} by the queue (receive_drops), {handled} handled"
    );
    assert_eq!(
        kernel_dropped + queue_dropped + handled,
        SENT,
        "datagrams unaccounted for"
    );
    assert!(handled > 0, "nothing reached the agent once resumed");
    agent.wait_serving();
}
