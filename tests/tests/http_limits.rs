//! The HTTP API's common limits (docs/budgets.md, "HTTP API: every route"),
//! each crossed with a real agent: the URI length (414), the request head
//! size (431, past hyper's 64 KiB read buffer), a chunked body past 1 MiB (413), and the time a client gets
//! to send its head (10 s) and its body (30 s, then 408). Each refusal
//! changes nothing and the agent keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use shoal_tests::Agent;
use shoal_tests::raw::raw_request;

/// Reads what the agent sends until it closes the connection (or `limit`
/// passes); the text and how long it took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).to_string(),
        started.elapsed(),
    )
}

#[test]
fn uri_head_and_chunked_body_limits_refuse_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "limits", &[]);
    let host = agent.http_addr().to_string();

    // URI: 8 KiB accepted, one byte more refused.
    let key = |len: usize| "k".repeat(len);
    let base = "/v1/kv/?x=";
    let fits = format!("{base}{}", key(8 * 1024 - base.len()));
    let reply = raw_request(agent.http_addr(), "GET", &fits, &host, &[], b"").unwrap();
    assert_ne!(reply.status, 414, "{}", reply.body);
    let over = format!("{fits}k");
    let reply = raw_request(agent.http_addr(), "GET", &over, &host, &[], b"").unwrap();
    assert_eq!(reply.status, 414, "{}", reply.body);
    assert!(reply.error().contains("8192"), "{}", reply.body);

    // Head: hyper buffers at most 64 KiB of an unparsed head, plus what
    // its last read brought (measured: 96 KiB sent at once still parse,
    // 100 KiB do not). 128 KiB of headers is refused (431).
    let filler = "x".repeat(8 * 1024);
    let headers: Vec<(String, String)> = (0..16)
        .map(|i| (format!("X-Filler-{i}"), filler.clone()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    match raw_request(
        agent.http_addr(),
        "GET",
        "/v1/agent/self",
        &host,
        &headers,
        b"",
    ) {
        Ok(reply) => assert_eq!(reply.status, 431, "{}", reply.head),
        // The server may close before the client finished writing.
        Err(error) => assert!(error.contains("send") || error.contains("read"), "{error}"),
    }

    // A chunked body (no Content-Length) past 1 MiB: 413, nothing stored.
    let mut stream = TcpStream::connect(agent.http_addr()).unwrap();
    write!(
        stream,
        "PUT /v1/kv/chunked HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..20 {
        let sent = write!(stream, "{:x}\r\n", chunk.len())
            .and_then(|()| stream.write_all(&chunk))
            .and_then(|()| stream.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(15));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(agent.kv_get("chunked"), Ok(None));
    assert!(agent.get("/health/live").is_ok());
}

#[test]
fn clients_that_stall_are_cut_off_in_time() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "stall", &[]);
    let host = agent.http_addr().to_string();
    // Half a head: the connection is closed after about 10 s.
    let head = std::thread::spawn({
        let addr = agent.http_addr();
        move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /v1/agent/members HTTP/1.1\r\nX-Slow: ")
                .unwrap();
            read_until_closed(&mut stream, Duration::from_secs(40))
        }
    });
    // A whole head and half the body it announced: 408 after about 30 s,
    // and nothing stored.
    let mut stream = TcpStream::connect(agent.http_addr()).unwrap();
    write!(
        stream,
        "PUT /v1/kv/slow HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\nhalf"
    )
    .unwrap();
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(60));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_secs(25) && took < Duration::from_secs(50),
        "{took:?}"
    );
    assert_eq!(agent.kv_get("slow"), Ok(None));
    let (answer, took) = head.join().unwrap();
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(30),
        "the stalled head was held {took:?}: {answer}"
    );
}
