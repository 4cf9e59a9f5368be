//! The WAN listener's side of reads forwarded between datacenters (see
//! `shoal_protocol::forward` and [`crate::wan::Forwarder`]): a request
//! for our datacenter is answered by our own HTTP API, in process, as if
//! a local client had asked (a DNS question by our DNS interface's
//! rules); one for another datacenter, from a LAN agent of ours, is sent
//! on to a WAN member of the target.
//!
//! Budget: a request frame of at most [`MAX_REQUEST`] bytes within
//! [`FIRST_FRAME_DEADLINE`], opened with the cluster's key before it
//! takes one of [`MAX_FORWARDS_SERVED`] slots (past them, a 503 at once),
//! and only the reads of [`forwardable`]. After an answer, the connection
//! waits up to [`SERVED_IDLE_TIMEOUT`] for the asker's next read (which
//! then skips a handshake, a round trip across the WAN), if one of
//! [`MAX_IDLE_SERVED`] waiting places is free; else it is closed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use axum::http::{Request, header};
use shoal_protocol::envelope::Envelope;

use shoal_protocol::forward::{ForwardQuery, ForwardRequest, ForwardResponse, MAX_REQUEST};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::anti_entropy::FIRST_FRAME_DEADLINE;
use crate::api::front::Api;
use crate::dns::respond::{Outcome, Responder, Transport};
use crate::wan::{
    ATTEMPT_TIMEOUT, Forwarder, FrameError, MAX_ANSWER, SERVED_IDLE_TIMEOUT, forward_error,
    forwardable, read_frame, request_timeout, write_frame,
};

/// Forwarded requests served at once.
pub const MAX_FORWARDS_SERVED: usize = 64;
/// Connections kept open between reads, waiting for the next.
pub const MAX_IDLE_SERVED: usize = 128;

/// What answers, once the agent is up.
struct Ready {
    forwarder: Arc<Forwarder>,
    api: Api,
    /// Answers as our DNS interface does (whether or not it listens).
    dns: Responder,
}

impl Ready {
    /// Our DNS interface's reply to `packet`, as a local client that asked
    /// over TCP (`tcp`) or UDP would get it.
    fn dns(&self, packet: &[u8], tcp: bool) -> ForwardResponse {
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        match self
            .dns
            .respond(packet, transport, IpAddr::V4(Ipv4Addr::LOCALHOST))
        {
            // Failing over is for the agent first asked, not for one
            // answering for its datacenter: our own reply.
            Outcome::Reply(reply) | Outcome::Failover { local: reply, .. } => ForwardResponse {
                status: 200,
                headers: Vec::new(),
                body: reply,
            },
            Outcome::Forward(_) | Outcome::Datacenter { .. } | Outcome::Drop => {
                forward_error(400, "not a question about this datacenter's catalog")
            }
        }
    }
}

/// Serves forwarded reads on the WAN listener.
pub struct ForwardServer {
    datacenter: String,
    http_addr: std::net::SocketAddr,
    /// Set once the API is up: until then, requests get a 503.
    ready: OnceLock<Ready>,
    served: Arc<Semaphore>,
    idle: Arc<Semaphore>,
}

impl ForwardServer {
    pub fn new(datacenter: String, http_addr: std::net::SocketAddr) -> Self {
        Self {
            datacenter,
            http_addr,
            ready: OnceLock::new(),
            served: Arc::new(Semaphore::new(MAX_FORWARDS_SERVED)),
            idle: Arc::new(Semaphore::new(MAX_IDLE_SERVED)),
        }
    }

    /// Starts answering with `api` and `dns`, sending on through
    /// `forwarder`.
    pub fn ready(&self, forwarder: Arc<Forwarder>, api: Api, dns: Responder) {
        let _ = self.ready.set(Ready {
            forwarder,
            api,
            dns,
        });
    }

    /// Serves one connection whose first frame is a forwarded request,
    /// and the requests that follow on it while it is kept open.
    pub async fn serve(
        &self,
        mut stream: TcpStream,
        envelope: &Envelope,
    ) -> Result<(), FrameError> {
        stream.set_nodelay(true)?;
        loop {
            self.serve_one(&mut stream, envelope).await?;
            let Ok(_waiting) = self.idle.clone().try_acquire_owned() else {
                break;
            };
            let mut byte = [0u8; 1];
            match tokio::time::timeout(SERVED_IDLE_TIMEOUT, stream.peek(&mut byte)).await {
                Ok(Ok(1..)) => {}
                // Closed by the asker, or no next read in time.
                _ => break,
            }
        }
        stream.shutdown().await?;
        Ok(())
    }

    /// Serves one request: it is read (and opened: it is sealed with the
    /// cluster's key) before it takes one of the slots.
    async fn serve_one(
        &self,
        stream: &mut TcpStream,
        envelope: &Envelope,
    ) -> Result<(), FrameError> {
        let request: ForwardRequest = tokio::time::timeout(
            FIRST_FRAME_DEADLINE,
            read_frame(stream, envelope, MAX_REQUEST),
        )
        .await
        .map_err(|_| {
            FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request did not arrive in time",
            ))
        })??;
        let Some(ready) = self.ready.get() else {
            write_frame(
                stream,
                envelope,
                &forward_error(503, "this agent is starting; retry"),
            )
            .await?;
            return Ok(());
        };
        let Ok(_permit) = self.served.clone().try_acquire_owned() else {
            ready
                .forwarder
                .counters
                .reads_busy
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let busy = forward_error(
                503,
                &format!(
                    "{MAX_FORWARDS_SERVED} forwarded reads are being served here already; retry"
                ),
            );
            write_frame(stream, envelope, &busy).await?;
            return Ok(());
        };
        ready
            .forwarder
            .counters
            .reads_served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = self.answer(ready, request).await;
        write_frame(stream, envelope, &response).await?;
        Ok(())
    }

    async fn answer(&self, ready: &Ready, request: ForwardRequest) -> ForwardResponse {
        if let ForwardQuery::Http { path, .. } = &request.query
            && !forwardable(path)
        {
            return forward_error(
                403,
                &format!("`{path}` is not a read that is forwarded between datacenters"),
            );
        }
        if request.datacenter.eq_ignore_ascii_case(&self.datacenter) {
            return match &request.query {
                ForwardQuery::Http { path, token } => {
                    self.local(&ready.api, path, token.as_deref()).await
                }
                ForwardQuery::Dns { packet, tcp } => ready.dns(packet, *tcp),
            };
        }
        let forwarder = &ready.forwarder;
        let timeout = match &request.query {
            ForwardQuery::Http { path, .. } => request_timeout(path),
            ForwardQuery::Dns { .. } => ATTEMPT_TIMEOUT,
        };
        match forwarder.forward(request, timeout).await {
            Ok(response) => response,
            Err(error) => forward_error(503, &error.to_string()),
        }
    }

    /// Our own API's answer to a read of `path`, as a local client
    /// presenting `token` would get it.
    async fn local(&self, api: &Api, path: &str, token: Option<&str>) -> ForwardResponse {
        let mut builder = Request::get(path).header(header::HOST, self.http_addr.to_string());
        if let Some(token) = token {
            builder = builder.header("x-consul-token", token);
        }
        let Ok(http) = builder.body(axum::body::Body::empty()) else {
            return forward_error(400, &format!("`{path}` is not a request URI"));
        };
        let response = api.call(http).await.unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        let body = match axum::body::to_bytes(body, MAX_ANSWER).await {
            Ok(body) => body.to_vec(),
            // The target's own answer, not a failed route: asking another
            // agent would give the same.
            Err(_) => {
                return ForwardResponse::error(
                    502,
                    &format!("the answer is larger than {MAX_ANSWER} bytes, the most forwarded"),
                );
            }
        };
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| {
                *name == header::CONTENT_TYPE || name.as_str().starts_with("x-consul-")
            })
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        ForwardResponse {
            status: parts.status.as_u16(),
            headers,
            body,
        }
    }
}
