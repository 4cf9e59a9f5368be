//! The DNS interface's budgets, crossed by real clients: TCP clients that
//! pipeline queries and never read, one address holding too many
//! connections, a recursor that is the agent itself, clients outside
//! `dns.allow_clients`, response rate limiting, and what DNS answers when
//! `acl.protect_reads` is on.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::dns::register_ttl_service;
use shoal_tests::{Agent, AgentOptions, run_agent_until_exit, unique_loopback, wait_for};

const SLOW: Duration = Duration::from_secs(30);

/// A query for `name` of type `qtype` (1 A, 33 SRV) with id `id`, RD set.
fn query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&[0, 1]);
    packet
}

/// `packet` with its 16-bit TCP length prefix.
fn framed(packet: &[u8]) -> Vec<u8> {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    framed
}

/// Reply fields the tests look at: response code, TC flag, answer count.
fn rcode(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}
fn truncated(reply: &[u8]) -> bool {
    reply[2] & 0x02 != 0
}
fn answer_count(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[6], reply[7]])
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// One query over a fresh TCP connection from `from`; the reply.
fn tcp_query(from: IpAddr, to: SocketAddr, packet: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = connect_from(from, to).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&framed(packet))
        .map_err(|e| format!("write: {e}"))?;
    let mut length = [0u8; 2];
    stream
        .read_exact(&mut length)
        .map_err(|e| format!("read length: {e}"))?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("read reply: {e}"))?;
    Ok(reply)
}

/// One query over UDP from `from`; the reply.
fn udp_query(from: IpAddr, to: SocketAddr, packet: &[u8]) -> Result<Vec<u8>, String> {
    let socket = UdpSocket::bind((from, 0)).map_err(|e| format!("bind: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .send_to(packet, to)
        .map_err(|e| format!("send: {e}"))?;
    let mut buffer = vec![0u8; 4096];
    let length = socket.recv(&mut buffer).map_err(|e| format!("recv: {e}"))?;
    buffer.truncate(length);
    Ok(buffer)
}

fn dns_stats(agent: &Agent) -> Value {
    agent.get("/v1/agent/self").unwrap()["Stats"]["dns"].clone()
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

fn start_with_config(root: &std::path::Path, name: &str, config: &str) -> Agent {
    let path = root.join(format!("{name}.toml"));
    Agent::start(
        root,
        AgentOptions {
            name: name.into(),
            ..AgentOptions::with_config_file(&path, config, &[])
        },
    )
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// The review's repro: 130 connections, each pipelining 3,000 SRV queries
/// with large answers and never reading, reconnecting whenever closed.
/// Every TCP query of a well-behaved client, from a fresh address or from
/// one of the flooders' own, is still answered within seconds.
#[test]
fn non_reading_pipelining_clients_do_not_starve_tcp_queries() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start(root.path(), AgentOptions::named("busy"));
    agent.wait_serving();
    // 30 instances: an SRV answer is a few KB, so a client that doesn't
    // read fills the socket buffers quickly and the server's writes block.
    for i in 0..30u16 {
        register_ttl_service(
            &agent,
            "billing",
            &format!("billing-{i}"),
            Some(&format!("10.5.0.{}", i + 1)),
            5000 + i,
            &[],
            "passing",
        );
    }
    let target = agent.dns_addr();
    let srv = query("billing.service.consul", 33, 7);
    wait_for(SLOW, "30 SRV answers over TCP", || {
        let reply = tcp_query(unique_loopback(), target, &srv)?;
        match answer_count(&reply) {
            30 => Ok(()),
            other => Err(format!("{other} answers")),
        }
    });

    let one = framed(&srv);
    let burst: Vec<u8> = one.repeat(3000);
    let stop = Arc::new(AtomicBool::new(false));
    let sources: Vec<IpAddr> = (0..10).map(|_| unique_loopback()).collect();
    let flooders: Vec<_> = sources
        .iter()
        .map(|&source| {
            let (stop, burst, one) = (stop.clone(), burst.clone(), one.clone());
            std::thread::spawn(move || {
                let mut connections: Vec<Option<(TcpStream, usize)>> =
                    (0..13).map(|_| None).collect();
                let mut opened = 0u64;
                // Bounded: at most 300 rounds of ~100 ms.
                for _ in 0..300 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    for slot in connections.iter_mut() {
                        if slot.is_none()
                            && let Ok(stream) = connect_from(source, target)
                        {
                            stream.set_nonblocking(true).unwrap();
                            opened += 1;
                            *slot = Some((stream, 0));
                        }
                        // Push more of the burst; never read.
                        let Some((stream, sent)) = slot else { continue };
                        let chunk = if *sent < burst.len() {
                            &burst[*sent..]
                        } else {
                            &one[..]
                        };
                        match stream.write(chunk) {
                            Ok(written) => *sent += written,
                            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                            Err(_) => *slot = None,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                opened
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(3));
    let mut took = Vec::new();
    for i in 0..12u16 {
        // Half from a fresh address, half from a flooder's own.
        let from = if i % 2 == 0 {
            unique_loopback()
        } else {
            sources[usize::from(i) % sources.len()]
        };
        let started = Instant::now();
        let reply = tcp_query(from, target, &query("billing.service.consul", 33, 100 + i));
        let elapsed = started.elapsed();
        let reply = reply.unwrap_or_else(|error| {
            panic!(
                "query {i} from {from} failed after {elapsed:?}: {error}; stats {}",
                dns_stats(&agent)
            )
        });
        assert_eq!(rcode(&reply), 0);
        assert_eq!(answer_count(&reply), 30);
        took.push(elapsed);
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::Relaxed);
    let opened: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    let stats = dns_stats(&agent);
    eprintln!("legitimate queries took {took:?}; flooders opened {opened} connections; {stats}");
    let slowest = took.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(5), "{took:?}");
    assert!(opened >= 130, "{opened}");
    assert!(counter(&stats, "tcp_evicted") >= 1, "{stats}");
}

/// One client address holds at most `dns.max_tcp_connections_per_client`:
/// past it a new one is closed at once, unless one of its connections has
/// kept the server waiting, which is closed instead.
#[test]
fn one_address_holds_at_most_its_share_of_tcp_connections() {
    let root = tempfile::tempdir().unwrap();
    let agent = start_with_config(
        root.path(),
        "capped",
        "[dns]\nmax_tcp_connections_per_client = 4\ntcp_idle_timeout = \"20s\"\n",
    );
    agent.wait_serving();
    let (greedy, other) = (unique_loopback(), unique_loopback());
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(greedy, agent.dns_addr()).unwrap())
        .collect();
    let mut fifth = connect_from(greedy, agent.dns_addr()).unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut fifth, Duration::from_secs(5)),
        "the 5th connection from one address stays open"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    for stream in &mut held {
        assert!(!closed_within(stream, Duration::from_millis(200)));
    }
    // Another address is not affected.
    let node = query("capped.node.consul", 1, 9);
    let reply = tcp_query(other, agent.dns_addr(), &node).unwrap();
    assert_eq!((rcode(&reply), answer_count(&reply)), (0, 1));
    let stats = dns_stats(&agent);
    assert!(counter(&stats, "tcp_client_rejected") >= 1, "{stats}");

    // Once the held ones have kept the server waiting for a while, a new
    // query from the same address takes the place of the oldest.
    std::thread::sleep(Duration::from_millis(2500));
    let reply = tcp_query(greedy, agent.dns_addr(), &node).unwrap();
    assert_eq!((rcode(&reply), answer_count(&reply)), (0, 1));
    assert!(closed_within(&mut held[0], Duration::from_secs(5)));
    let stats = dns_stats(&agent);
    assert!(counter(&stats, "tcp_evicted") >= 1, "{stats}");
}

/// A client that does not read its replies is dropped after
/// `dns.tcp_idle_timeout`, even with nobody else waiting.
#[test]
fn a_client_that_does_not_read_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let agent = start_with_config(root.path(), "unread", "[dns]\ntcp_idle_timeout = \"2s\"\n");
    agent.wait_serving();
    for i in 0..30u16 {
        register_ttl_service(
            &agent,
            "big",
            &format!("big-{i}"),
            Some(&format!("10.6.0.{}", i + 1)),
            6000 + i,
            &[],
            "passing",
        );
    }
    let srv = query("big.service.consul", 33, 5);
    wait_for(SLOW, "30 SRV answers", || {
        let reply = tcp_query(unique_loopback(), agent.dns_addr(), &srv)?;
        (answer_count(&reply) == 30)
            .then_some(())
            .ok_or_else(|| "fewer".to_string())
    });
    let mut stream = connect_from(unique_loopback(), agent.dns_addr()).unwrap();
    stream.set_nonblocking(true).unwrap();
    let burst = framed(&srv).repeat(5000);
    let mut sent = 0;
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(20) {
        match stream.write(&burst[sent.min(burst.len() - 1)..]) {
            Ok(written) => sent += written,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = dns_stats(&agent);
    assert!(closed, "still open after {:?}: {stats}", started.elapsed());
    assert!(counter(&stats, "tcp_unread_closed") >= 1, "{stats}");
}

/// A recursor that is the agent's own DNS address would forward its own
/// questions to itself in a loop: refused when the config is read (the
/// wildcard cases are unit tests of `config::dns`: binding a wildcard
/// address is off limits here).
#[test]
fn a_recursor_that_is_the_agent_itself_is_refused_at_load() {
    let root = tempfile::tempdir().unwrap();
    let ip = unique_loopback();
    for (name, dns_addr, recursor) in [
        ("same", format!("{ip}:18653"), format!("{ip}:18653")),
        ("default-port", format!("{ip}:53"), ip.to_string()),
    ] {
        let config = format!("dns_addr = \"{dns_addr}\"\n[dns]\nrecursors = [\"{recursor}\"]\n");
        let (code, output) = run_agent_until_exit(root.path(), name, &config);
        assert!(
            matches!(code, Some(c) if c != 0),
            "{name}: {code:?} {output}"
        );
        assert!(
            output.contains("dns.recursors") && output.contains("itself"),
            "{name}: {output}"
        );
    }

    // On reload the running config stays.
    let path = root.path().join("reloaded.toml");
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "reloaded".into(),
            ..AgentOptions::with_config_file(&path, "[dns]\nonly_passing = false\n", &[])
        },
    );
    agent.wait_serving();
    std::fs::write(
        &path,
        format!("[dns]\nrecursors = [\"{}\"]\n", agent.dns_addr()),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    wait_for(SLOW, "the reload error naming dns.recursors", || {
        let body = agent.get("/v1/agent/self")?;
        match body["Config"]["ReloadError"].as_str() {
            Some(error) if error.contains("dns.recursors") => Ok(()),
            _ => Err(body["Stats"]["reload"].to_string()),
        }
    });
    let reply = udp_query(
        unique_loopback(),
        agent.dns_addr(),
        &query("reloaded.node.consul", 1, 3),
    )
    .unwrap();
    assert_eq!((rcode(&reply), answer_count(&reply)), (0, 1));
}

/// `dns.allow_clients`: others get REFUSED, over UDP and TCP, for our names
/// and for forwarded ones alike.
#[test]
fn clients_outside_the_allow_list_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let allowed = unique_loopback();
    let agent = start_with_config(
        root.path(),
        "picky",
        &format!(
            "[dns]\nallow_clients = [\"{allowed}/32\"]\nrecursors = [\"127.0.0.1:9\"]\nrecursor_timeout = \"200ms\"\n"
        ),
    );
    agent.wait_serving();
    let stranger = unique_loopback();
    let node = query("picky.node.consul", 1, 11);
    let outside = query("example.com", 1, 12);
    for packet in [&node, &outside] {
        let udp = UdpSocket::bind((stranger, 0)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        udp.send_to(packet, agent.dns_addr()).unwrap();
        let mut buffer = [0u8; 512];
        let length = udp.recv(&mut buffer).unwrap();
        assert_eq!(rcode(&buffer[..length]), 5, "REFUSED over UDP");
        assert_eq!(answer_count(&buffer[..length]), 0);
        let reply = tcp_query(stranger, agent.dns_addr(), packet).unwrap();
        assert_eq!(rcode(&reply), 5, "REFUSED over TCP");
    }
    for reply in [
        udp_query(allowed, agent.dns_addr(), &node).unwrap(),
        tcp_query(allowed, agent.dns_addr(), &node).unwrap(),
    ] {
        assert_eq!((rcode(&reply), answer_count(&reply)), (0, 1));
    }
    let stats = dns_stats(&agent);
    assert!(counter(&stats, "client_refused") >= 4, "{stats}");
    assert_eq!(counter(&stats, "forwarded"), 0, "{stats}");
}

/// Response rate limiting: past `dns.rate_limit` answers a second to one
/// client prefix, UDP answers are dropped or sent empty with TC set (the
/// client retries over TCP, which is not limited).
#[test]
fn udp_answers_past_the_rate_limit_are_dropped_or_truncated() {
    let root = tempfile::tempdir().unwrap();
    let agent = start_with_config(root.path(), "limited", "[dns]\nrate_limit = 5\n");
    agent.wait_serving();
    let socket = UdpSocket::bind((unique_loopback(), 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (mut full, mut tc, mut sent) = (0, 0, 0);
    let started = Instant::now();
    for i in 0..100u16 {
        socket
            .send_to(&query("limited.node.consul", 1, i), agent.dns_addr())
            .unwrap();
        sent += 1;
    }
    let mut buffer = [0u8; 512];
    while let Ok(length) = socket.recv(&mut buffer) {
        let reply = &buffer[..length];
        if truncated(reply) {
            assert_eq!(answer_count(reply), 0);
            tc += 1;
        } else {
            assert_eq!(answer_count(reply), 1);
            full += 1;
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    eprintln!("{sent} sent: {full} answered, {tc} truncated in ~{seconds}s");
    assert!(full >= 1 && full <= 5 * (seconds + 1), "{full} answered");
    assert!(tc >= 10, "{tc} truncated");
    assert!(full + tc < sent, "nothing was dropped");
    let stats = dns_stats(&agent);
    assert!(counter(&stats, "rate_limited") >= 90, "{stats}");
    // TCP is not limited.
    let reply = tcp_query(
        unique_loopback(),
        agent.dns_addr(),
        &query("limited.node.consul", 1, 1),
    )
    .unwrap();
    assert_eq!(answer_count(&reply), 1);
}

/// With `acl.protect_reads`, the catalog is not readable over DNS (which
/// carries no token) unless `dns.serve_with_protect_reads` says so; names
/// outside the domains are unaffected; the choice is logged at start.
#[test]
fn protect_reads_refuses_catalog_names_over_dns_unless_told_otherwise() {
    let root = tempfile::tempdir().unwrap();
    let acl = "[acl]\ntoken = \"s3cret-token-1234\"\nprotect_reads = true\n";
    let guarded = start_with_config(root.path(), "guarded", acl);
    let open = start_with_config(
        root.path(),
        "open",
        &format!("{acl}[dns]\nserve_with_protect_reads = true\n"),
    );
    guarded.wait_serving();
    open.wait_serving();
    let from = unique_loopback();
    let guarded_node = query("guarded.node.consul", 1, 21);
    for reply in [
        udp_query(from, guarded.dns_addr(), &guarded_node).unwrap(),
        tcp_query(from, guarded.dns_addr(), &guarded_node).unwrap(),
    ] {
        assert_eq!((rcode(&reply), answer_count(&reply)), (5, 0), "REFUSED");
    }
    let open_node = query("open.node.consul", 1, 22);
    let reply = udp_query(from, open.dns_addr(), &open_node).unwrap();
    assert_eq!((rcode(&reply), answer_count(&reply)), (0, 1));
    assert!(counter(&dns_stats_with_token(&guarded), "protected_refused") >= 2);
    assert!(
        guarded.log().contains("dns.serve_with_protect_reads"),
        "{}",
        guarded.log()
    );
    assert!(
        open.log().contains("dns.serve_with_protect_reads"),
        "{}",
        open.log()
    );
}

/// `Stats.dns` of an agent whose API wants its token for reads.
fn dns_stats_with_token(agent: &Agent) -> Value {
    agent.get("/v1/agent/self?token=s3cret-token-1234").unwrap()["Stats"]["dns"].clone()
}

/// At most 256 UDP queries are forwarded at once (`MAX_FORWARDS`): with a
/// recursor that never answers, the 256 first wait for it and the rest get
/// SERVFAIL at once; once the 256 time out, forwarding works again.
#[test]
fn udp_queries_past_256_forwards_in_flight_get_servfail_at_once() {
    const QUERIES: u16 = 300;
    const IN_FLIGHT: u16 = 256;
    let root = tempfile::tempdir().unwrap();
    // A recursor that reads every query and never answers.
    let recursor = UdpSocket::bind((unique_loopback(), 0)).unwrap();
    let agent = start_with_config(
        root.path(),
        "forwarder",
        &format!(
            "[dns]\nrecursors = [\"{}\"]\nrecursor_timeout = \"15s\"\n",
            recursor.local_addr().unwrap()
        ),
    );
    agent.wait_serving();
    let client = UdpSocket::bind((unique_loopback(), 0)).unwrap();
    let send = |i: u16| {
        client
            .send_to(&query(&format!("q{i}.example.com"), 1, i), agent.dns_addr())
            .unwrap();
    };
    // The first 256, paced by what the recursor receives (so that no
    // query waits in the agent's socket buffer, which a loaded machine
    // could overflow): all forwarded, none answered.
    recursor
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sent = Instant::now();
    let mut buffer = [0u8; 512];
    let mut forwarded = 0;
    for batch in (0..IN_FLIGHT).collect::<Vec<_>>().chunks(32) {
        for &i in batch {
            send(i);
        }
        let target = batch[batch.len() - 1] + 1;
        while forwarded < target && sent.elapsed() < Duration::from_secs(10) {
            if recursor.recv(&mut buffer).is_ok() {
                forwarded += 1;
            }
        }
    }
    assert_eq!(forwarded, IN_FLIGHT, "queries that reached the recursor");
    // Past the limit: answered at once (well inside the 15 s recursor
    // timeout), all SERVFAIL.
    for i in IN_FLIGHT..QUERIES {
        send(i);
    }
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut early = Vec::new();
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_secs(3) {
        if let Ok(length) = client.recv(&mut buffer) {
            early.push((
                u16::from_be_bytes([buffer[0], buffer[1]]),
                rcode(&buffer[..length]),
            ));
        }
    }
    eprintln!("answered at once: {} of {QUERIES}", early.len());
    assert_eq!(
        early.len(),
        usize::from(QUERIES - IN_FLIGHT),
        "queries answered before the recursor timeout"
    );
    assert!(
        early.iter().all(|&(_, code)| code == 2),
        "not all SERVFAIL: {early:?}"
    );
    assert!(
        early.iter().all(|&(id, _)| id >= IN_FLIGHT),
        "a query within the first 256 was refused: {early:?}"
    );
    let stats = dns_stats(&agent);
    assert_eq!(
        counter(&stats, "forward_failures"),
        u64::from(QUERIES - IN_FLIGHT),
        "{stats}"
    );
    // And no more reached the recursor.
    while recursor.recv(&mut buffer).is_ok() {
        forwarded += 1;
    }
    assert_eq!(forwarded, IN_FLIGHT, "queries that reached the recursor");

    // The 256 time out (SERVFAIL, no recursor answered) and free their
    // slots: a new query is forwarded again.
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut late = 0;
    while sent.elapsed() < Duration::from_secs(40) && late < IN_FLIGHT {
        if let Ok(length) = client.recv(&mut buffer) {
            assert_eq!(rcode(&buffer[..length]), 2, "a timed-out forward");
            late += 1;
        }
    }
    assert_eq!(
        late, IN_FLIGHT,
        "forwards that ended at the recursor timeout"
    );
    client
        .send_to(&query("again.example.com", 1, 999), agent.dns_addr())
        .unwrap();
    recursor
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let length = recursor
        .recv(&mut buffer)
        .expect("the next query is forwarded");
    assert!(length > 12);
}
