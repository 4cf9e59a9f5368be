//! Running a watch's handler once: a program with the JSON on stdin, or an
//! HTTP request with the JSON as body. Both are bounded by the watch's
//! timeout; a program that outlives it is killed with everything it
//! started.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::checks::OUTPUT_LIMIT;
use crate::command::Program;
use crate::config::WatchHandler;

/// Runs `handler` with `body`; `Err` says why the run failed (with the
/// program's output, cut to 4 KiB). `index` is the snapshot index, passed
/// as `CONSUL_INDEX` (and `SHOAL_INDEX`) as Consul does.
pub async fn run_handler(
    handler: &WatchHandler,
    body: &[u8],
    index: u64,
    timeout: Duration,
) -> Result<(), String> {
    let run = async {
        match handler {
            WatchHandler::Exec(args) => run_program(args, body, index).await,
            WatchHandler::Http {
                url,
                method,
                headers,
            } => post(url, method, headers, body, index, timeout).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "did not finish within {} (killed)",
            humantime::format_duration(timeout)
        )),
    }
}

/// Runs the program (no shell) with `body` on stdin. Dropping the future
/// (the timeout) kills its process group.
pub async fn run_program(args: &[String], body: &[u8], index: u64) -> Result<(), String> {
    let mut input = body.to_vec();
    input.push(b'\n');
    let program = Program::new(args)
        .env("CONSUL_INDEX", index.to_string())
        .env("SHOAL_INDEX", index.to_string())
        .stdin(&input);
    let name = program.name();
    let finished = program.run().await.map_err(|error| error.to_string())?;
    if finished.status.success() {
        if !finished.stdout.is_empty() {
            tracing::debug!(program = name, output = %String::from_utf8_lossy(&finished.stdout), "watch handler output");
        }
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&finished.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&finished.stderr));
    Err(format!("`{name}` {}: {}", finished.status, output.trim()))
}

async fn post(
    url: &str,
    method: &str,
    headers: &std::collections::BTreeMap<String, String>,
    body: &[u8],
    index: u64,
    timeout: Duration,
) -> Result<(), String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).map_err(|error| error.to_string())?)
        .uri(url)
        .header("Content-Type", "application/json")
        .header("X-Consul-Index", index.to_string())
        .header("User-Agent", concat!("shoal/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|error| format!("invalid request: {error}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("{method} {url}: {error}"))?;
    let status = response.status();
    // Read (and drop) the start of the answer so the connection closes
    // cleanly; no more, so an answer that never ends neither holds the
    // handler nor grows in memory.
    let _ = crate::checks::http::read_prefix(response.into_body(), OUTPUT_LIMIT).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{method} {url} answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_handler_past_its_timeout_is_killed_and_its_output_capped() {
        let program =
            |script: &str| WatchHandler::Exec(vec!["sh".into(), "-c".into(), script.into()]);
        let started = Instant::now();
        let error = run_handler(&program("sleep 30"), b"[]", 1, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            error.contains("did not finish within 300ms (killed)"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let error = run_handler(
            &program("head -c 10000000 /dev/zero | tr '\\0' x; exit 3"),
            b"[]",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
        assert!(error.len() < 2 * OUTPUT_LIMIT, "kept {} bytes", error.len());
    }

    #[tokio::test]
    async fn an_http_handler_whose_answer_never_ends_is_not_held() {
        // A server that answers 200 and then streams its body forever.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
            while stream.write_all(chunk.as_bytes()).is_ok() {}
        });
        let handler = WatchHandler::Http {
            url: format!("http://{addr}/hook"),
            method: "POST".into(),
            headers: Default::default(),
        };
        let started = Instant::now();
        let outcome = run_handler(&handler, b"[]", 1, Duration::from_secs(20)).await;
        assert_eq!(outcome, Ok(()));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the handler was held {:?} by an endless answer",
            started.elapsed()
        );
    }
}
