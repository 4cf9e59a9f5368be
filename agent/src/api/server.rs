//! Serves the HTTP API with connection limits that `axum::serve` lacks.
//!
//! - At most [`MAX_CONNECTIONS`] connections at once. One more is answered
//!   with a 503 JSON error and closed at once, so a flood can neither
//!   exhaust file descriptors nor queue without bound.
//! - A client must send a whole request head within [`HEADER_READ_TIMEOUT`]
//!   of the connection becoming ready for one; hyper's timer also runs
//!   while a keep-alive connection waits for its next request, so the same
//!   bound is the idle keep-alive timeout. A slow-loris client that never
//!   finishes its head is dropped then, and never delays anyone else: every
//!   connection is its own task.
//! - Request heads are limited to [`MAX_HEAD`] bytes and 100 headers
//!   (431 from hyper); URIs and bodies are limited by `api::guard`.
//! - On shutdown the listener closes, and each connection finishes the
//!   request it is serving (so `PUT /v1/agent/leave` gets its answer)
//!   before closing; stragglers are cut after [`SHUTDOWN_GRACE`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

use crate::api::front::Api;
use crate::metrics::{Counters, Exposition, load};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most HTTP connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Time allowed to send a request head, and to stay idle between requests
/// on a keep-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long open connections get to finish after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Counters of the HTTP server, all monotonic.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections refused because [`MAX_CONNECTIONS`] were open.
    pub refused_connections: AtomicU64,
}

impl Counters for HttpCounters {
    fn prefix(&self) -> &'static str {
        "shoal_http_"
    }

    fn visit(&self, out: &mut Exposition) {
        out.counter(
            "shoal_http_refused_connections_total",
            "HTTP connections answered 503 and closed at once: 512 were open.",
            load(&self.refused_connections),
        );
    }
}

/// The body of the answer to a connection over the limit.
const OVER_LIMIT: &str =
    r#"{"error":"too many open connections to this agent; try again shortly"}"#;

/// Serves `api` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    counters: Arc<HttpCounters>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
    {
        tracing::warn!(
            %addr,
            "the HTTP API listens on a non-loopback address (http_addr): anyone who can reach it can use the API; set acl.token to require a token for writes"
        );
    }
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors, usually: back off rather than spin.
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let refused = counters.refused_connections.fetch_add(1, Ordering::Relaxed);
            if refused.is_power_of_two() {
                tracing::warn!(%peer, refused = refused + 1, "too many HTTP connections; refusing");
            }
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = api.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                        Ok(result) => result,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
}

/// Answers a connection over the limit with a complete 503 response (so
/// clients report a clear error rather than a reset) and closes it, without
/// waiting on the client: the write goes into an empty socket buffer.
fn refuse(stream: TcpStream) {
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{OVER_LIMIT}",
        OVER_LIMIT.len()
    );
    let _ = stream.try_write(response.as_bytes());
}
