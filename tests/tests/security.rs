//! HTTP API hardening with real processes: the API token guards writes
//! (and, optionally, reads), oversized bodies are refused, and a client that
//! never finishes its request does not delay anyone else.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_tests::{Agent, http_json, wait_for};

const TOKEN: &str = "s3cr3t-token";

/// `method path` with an optional header and body; returns the status.
fn request(
    agent: &Agent,
    method: &str,
    path: &str,
    header: Option<(&str, &str)>,
    body: &[u8],
) -> u16 {
    let url = format!("http://{}{path}", agent.http_addr());
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build();
    let client: ureq::Agent = config.into();
    let response = match method {
        "GET" => {
            let mut r = client.get(&url);
            if let Some((k, v)) = header {
                r = r.header(k, v);
            }
            r.call()
        }
        _ => {
            let mut r = client.put(&url);
            if let Some((k, v)) = header {
                r = r.header(k, v);
            }
            r.send(body)
        }
    };
    response.unwrap().status().as_u16()
}

#[test]
fn the_token_guards_writes_and_nothing_changes_without_it() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "guarded", &["--acl-token", TOKEN]);
    let registration = json!({"Name": "web", "Port": 80}).to_string();

    // No token, a wrong token: 403 JSON, and nothing changed.
    for header in [None, Some(("X-Consul-Token", "wrong"))] {
        assert_eq!(request(&agent, "PUT", "/v1/kv/k", header, b"v"), 403);
        assert_eq!(
            request(
                &agent,
                "PUT",
                "/v1/agent/service/register",
                header,
                registration.as_bytes()
            ),
            403
        );
    }
    let (status, body) = http_json("PUT", agent.http_addr(), "/v1/kv/k", Some(b"v")).unwrap();
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(agent.kv_get("k"), Ok(None));
    assert_eq!(agent.get("/v1/agent/services").unwrap(), json!({}));
    // The leave endpoint is a write too: the agent keeps running.
    assert_eq!(request(&agent, "PUT", "/v1/agent/leave", None, b""), 403);

    // The right token, each of Consul's three ways.
    assert_eq!(
        request(
            &agent,
            "PUT",
            "/v1/kv/a",
            Some(("X-Consul-Token", TOKEN)),
            b"1"
        ),
        200
    );
    assert_eq!(
        request(
            &agent,
            "PUT",
            "/v1/kv/b",
            Some(("Authorization", &format!("Bearer {TOKEN}"))),
            b"2"
        ),
        200
    );
    assert_eq!(
        request(
            &agent,
            "PUT",
            &format!("/v1/kv/c?token={TOKEN}"),
            None,
            b"3"
        ),
        200
    );
    assert_eq!(agent.kv_get("a"), Ok(Some("1".into())));
    // Reads need no token unless protect_reads is on.
    assert_eq!(request(&agent, "GET", "/v1/kv/a", None, b""), 200);

    let strict = Agent::start_serving(
        root.path(),
        "strict",
        &["--acl-token", TOKEN, "--acl-protect-reads"],
    );
    assert_eq!(request(&strict, "GET", "/v1/agent/members", None, b""), 403);
    assert_eq!(
        request(
            &strict,
            "GET",
            "/v1/agent/members",
            Some(("X-Consul-Token", TOKEN)),
            b""
        ),
        200
    );
    // Orchestrator probes stay open.
    assert_eq!(request(&strict, "GET", "/health/live", None, b""), 200);
}

#[test]
fn oversized_bodies_are_refused_and_slow_clients_delay_no_one() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "limits", &[]);
    // A 2 MiB body is refused from its Content-Length, before it is sent
    // (the server may close the connection without reading it, so the raw
    // response is read rather than trusting a client library's write).
    let mut stream = TcpStream::connect(agent.http_addr()).unwrap();
    stream
        .write_all(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
        .unwrap();
    let _ = stream.write_all(&vec![b'x'; 64 * 1024]);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 64];
    let read = std::io::Read::read(&mut stream, &mut head).unwrap();
    let status_line = String::from_utf8_lossy(&head[..read]).to_string();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    drop(stream);
    assert_eq!(agent.kv_get("big"), Ok(None));

    // Several clients send half a request head and stall.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(agent.http_addr()).unwrap();
        stream
            .write_all(b"GET /v1/agent/members HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        stalled.push(stream);
    }
    for _ in 0..10 {
        let started = Instant::now();
        assert!(agent.get("/v1/agent/members").is_ok());
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a normal request took {took:?}"
        );
    }
    drop(stalled);
    assert!(agent.get("/health/live").is_ok());
}

#[test]
fn a_flood_of_connections_is_capped_and_the_agent_survives() {
    use std::io::Read;
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "flood", &[]);
    // More idle connections than the cap (512): the ones over it get a
    // 503 JSON answer and are closed at once.
    let mut held = Vec::new();
    for _ in 0..600 {
        match TcpStream::connect(agent.http_addr()) {
            Ok(stream) => held.push(stream),
            Err(error) => panic!("connect failed: {error}"),
        }
    }
    let mut refused = 0u64;
    for stream in held.iter_mut().rev().take(60) {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut head = [0u8; 256];
        if let Ok(read) = stream.read(&mut head) {
            let text = String::from_utf8_lossy(&head[..read]);
            if text.starts_with("HTTP/1.1 503") && text.contains("too many open connections") {
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 50,
        "only {refused} of the last 60 connections got a 503"
    );
    drop(held);
    // Once the flood is gone, the agent serves as before.
    wait_for(Duration::from_secs(10), "the agent to serve again", || {
        agent.get("/v1/agent/members").map(|_| ())
    });
    assert_eq!(agent.kv_put("after-flood", "ok"), Ok(true));
    // The refusals are counted where an operator looks: `/metrics` and
    // `Stats.http` of `/v1/agent/self`, from the same counter.
    let (status, body) = http_json("GET", agent.http_addr(), "/metrics", None).unwrap();
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().expect("a text body");
    let scraped = text
        .lines()
        .find_map(|line| line.strip_prefix("shoal_http_refused_connections_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no shoal_http_refused_connections_total in\n{text}"));
    assert!(scraped >= refused, "{scraped} counted, {refused} seen");
    let stats = agent.get("/v1/agent/self").unwrap()["Stats"]["http"].clone();
    assert!(
        stats["refused_connections"].as_u64() >= Some(scraped),
        "{stats}"
    );
}
