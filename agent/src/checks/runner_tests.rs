use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::checks::CheckStatus::{Critical, Passing, Warning};
use crate::registry::keys::normalize;

fn check(value: Value) -> CheckDefinition {
    CheckDefinition::parse(&normalize(value), "Check", None, "test").unwrap()
}

fn no_dependencies() -> DependencyLookup {
    Arc::new(|_| 0)
}

/// A one-connection-at-a-time HTTP server answering every request with
/// `status_line` and a small body; returns its address.
async fn http_server(status_line: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let body = "service says hi";
            let response = format!(
                "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    address
}

async fn http_probe(status_line: &'static str) -> ProbeResult {
    let address = http_server(status_line).await;
    let definition = check(json!({"HTTP": format!("http://{address}/health"), "Interval": "1s"}));
    probe(&definition, no_dependencies()).await
}

#[tokio::test]
async fn http_status_codes_map_to_check_status() {
    let ok = http_probe("200 OK").await;
    assert_eq!(ok.status, Passing, "{}", ok.output);
    assert!(
        ok.output.starts_with("HTTP GET http://127.0.0.1:"),
        "{}",
        ok.output
    );
    assert!(
        ok.output
            .ends_with("/health: 200 OK Output: service says hi"),
        "{}",
        ok.output
    );
    let busy = http_probe("429 Too Many Requests").await;
    assert_eq!(busy.status, Warning, "{}", busy.output);
    let broken = http_probe("500 Internal Server Error").await;
    assert_eq!(broken.status, Critical, "{}", broken.output);
    assert!(
        broken.output.contains("500 Internal Server Error"),
        "{}",
        broken.output
    );
}

#[tokio::test]
async fn an_http_body_that_never_ends_is_cut_to_the_output_limit() {
    // 200 and then a body streamed forever: the probe keeps its first
    // 4 KiB and is done, well within its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "y".repeat(64 * 1024));
        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    let definition = check(json!({
        "HTTP": format!("http://{address}/health"),
        "Interval": "30s",
        "Timeout": "20s",
    }));
    let started = std::time::Instant::now();
    let result = probe(&definition, no_dependencies()).await;
    assert_eq!(result.status, Passing, "{}", &result.output[..200]);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The whole output, status line included, is held to the limit.
    assert_eq!(result.output.len(), crate::checks::OUTPUT_LIMIT);
    let body = result.output.split("Output: ").nth(1).unwrap();
    assert!(body.len() > 4000 && body.bytes().all(|b| b == b'y'));
}

#[tokio::test]
async fn http_connection_refused_is_critical_with_the_reason() {
    let address = closed_port().await;
    let definition = check(json!({"HTTP": format!("http://{address}/"), "Interval": "1s"}));
    let result = probe(&definition, no_dependencies()).await;
    assert_eq!(result.status, Critical);
    assert!(
        result.output.to_lowercase().contains("refused"),
        "{}",
        result.output
    );
}

#[tokio::test]
async fn http_server_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let definition = check(json!({
        "HTTP": format!("http://{address}/"), "Interval": "1s", "Timeout": "200ms"
    }));
    let result = probe(&definition, no_dependencies()).await;
    assert_eq!(result.status, Critical);
    assert_eq!(result.output, "http check timed out after 200ms");
    drop(listener);
}

#[tokio::test]
async fn a_timed_out_http_probe_closes_its_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let definition = check(json!({
        "HTTP": format!("http://{address}/"), "Interval": "1s", "Timeout": "200ms"
    }));
    let probe_task = tokio::spawn(async move { probe(&definition, no_dependencies()).await });
    let (mut stream, _) = listener.accept().await.unwrap();
    assert_eq!(probe_task.await.unwrap().status, Critical);
    // Never answered: once the probe gave up, the connection must go (no
    // socket left behind per hung check).
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after the timeout");
}

/// An address nothing listens on (bound, then closed).
async fn closed_port() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn tcp_connects_or_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let open = probe(
        &check(json!({"TCP": address.to_string(), "Interval": "1s"})),
        no_dependencies(),
    )
    .await;
    assert_eq!(open.status, Passing);
    assert_eq!(open.output, format!("TCP connect {address}: Success"));

    let closed = closed_port().await;
    let result = probe(
        &check(json!({"TCP": closed.to_string(), "Interval": "1s"})),
        no_dependencies(),
    )
    .await;
    assert_eq!(result.status, Critical);
    assert!(
        result
            .output
            .starts_with(&format!("TCP connect {closed}: ")),
        "{}",
        result.output
    );
}

async fn exec(args: &[&str]) -> ProbeResult {
    let definition = check(json!({"Args": args, "Interval": "1s", "Timeout": "300ms"}));
    probe(&definition, no_dependencies()).await
}

#[tokio::test]
async fn exec_exit_codes_map_to_check_status() {
    assert_eq!(exec(&["true"]).await.status, Passing);
    let warning = exec(&["sh", "-c", "echo out; echo err >&2; exit 1"]).await;
    assert_eq!(warning.status, Warning);
    assert_eq!(warning.output, "out\nerr\n");
    let critical = exec(&["sh", "-c", "exit 3"]).await;
    assert_eq!(critical.status, Critical);
    assert_eq!(critical.output, "`sh` exited with status 3");
}

#[tokio::test]
async fn exec_output_is_capped() {
    let result = exec(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"]).await;
    assert_eq!(result.status, Passing);
    assert_eq!(result.output.len(), crate::checks::OUTPUT_LIMIT);
}

#[tokio::test]
async fn exec_is_killed_at_the_timeout() {
    let started = std::time::Instant::now();
    let result = exec(&["sleep", "5"]).await;
    assert_eq!(result.status, Critical);
    assert_eq!(result.output, "exec check timed out after 300ms");
    // A shell whose child holds the pipes: the whole group goes.
    let result = exec(&["sh", "-c", "sleep 5; echo never"]).await;
    assert_eq!(result.status, Critical);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn exec_with_a_missing_binary_is_critical_not_a_panic() {
    let result = exec(&["/no/such"]).await;
    assert_eq!(result.status, Critical);
    assert!(
        result
            .output
            .starts_with("exec check: cannot run `/no/such`: No such file or directory"),
        "{}",
        result.output
    );
}

#[tokio::test]
async fn dependency_counts_passing_instances() {
    let definition =
        check(json!({"Dependency": {"Service": "db", "MinPassing": 2}, "Interval": "1s"}));
    let lookup: DependencyLookup = Arc::new(|service| if service == "db" { 1 } else { 0 });
    let result = probe(&definition, lookup).await;
    assert_eq!(result.status, Critical);
    assert_eq!(result.output, "1 passing instance of `db` (need 2)");
    let result = probe(&definition, Arc::new(|_| 3)).await;
    assert_eq!(result.status, Passing);
}

#[tokio::test]
async fn system_checks_name_what_they_measured() {
    for (value, prefix) in [
        (json!({"Memory": {"Critical": 100}}), "Memory used "),
        (
            json!({"Disk": {"Path": "/", "Warning": 99.9}}),
            "Disk used ",
        ),
        (json!({"Load": {"Critical": 1000}}), "Load average "),
        (json!({"Cpu": {"Critical": 100}}), "CPU used "),
    ] {
        let mut value = value;
        value["Interval"] = json!("1s");
        let result = probe(&check(value), no_dependencies()).await;
        assert!(result.output.starts_with(prefix), "{}", result.output);
        assert!(
            result.output.contains(" at "),
            "levels shown: {}",
            result.output
        );
    }
    let missing =
        check(json!({"Disk": {"Path": "/no/such/dir", "Critical": 90}, "Interval": "1s"}));
    let result = probe(&missing, no_dependencies()).await;
    assert_eq!(result.status, Critical);
    assert!(
        result.output.contains("cannot read /no/such/dir"),
        "{}",
        result.output
    );
}

#[tokio::test]
async fn the_runner_reports_every_interval_until_cancelled() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let definition = Arc::new(check(
        json!({"TCP": address.to_string(), "Interval": "100ms"}),
    ));
    let (results_tx, mut results_rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = spawn_check(definition, results_tx, no_dependencies(), cancel.clone());
    for _ in 0..3 {
        let report = tokio::time::timeout(Duration::from_secs(2), results_rx.recv())
            .await
            .expect("a result every interval")
            .unwrap();
        assert_eq!(report.check_id, "test");
        assert_eq!(report.result.status, Passing);
        assert!(report.duration < Duration::from_millis(100));
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops when cancelled")
        .unwrap();
}

#[tokio::test]
async fn a_full_channel_drops_results_instead_of_blocking() {
    let definition = Arc::new(check(
        json!({"Dependency": {"Service": "db"}, "Interval": "100ms"}),
    ));
    let (results_tx, mut results_rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let before = dropped_results();
    let task = spawn_check(definition, results_tx, no_dependencies(), cancel.clone());
    tokio::time::timeout(Duration::from_secs(2), async {
        while dropped_results() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("results dropped while nobody reads");
    assert!(results_rx.recv().await.is_some());
    // Closing the receiver ends the task too.
    drop(results_rx);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops when the receiver is gone")
        .unwrap();
}

#[tokio::test]
async fn ttl_checks_have_no_runner() {
    let definition = Arc::new(check(json!({"TTL": "10s"})));
    let (results_tx, _results_rx) = mpsc::channel(1);
    let task = spawn_check(
        definition,
        results_tx,
        no_dependencies(),
        CancellationToken::new(),
    );
    tokio::time::timeout(Duration::from_millis(100), task)
        .await
        .expect("returns at once")
        .unwrap();
}
