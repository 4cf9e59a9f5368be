//! The DNS server: a UDP loop and a TCP accept loop on one address, run as
//! tasks of the agent's runtime beside the HTTP API. The core loop has a
//! thread of its own, so a flood of queries takes turns with API requests,
//! never with failure detection. Answers are read from the snapshot
//! channel, never from the loop.
//!
//! Limits: UDP packets are answered one at a time as they come (an answer
//! takes microseconds, and a UDP send never waits on the client), at most
//! `MAX_FORWARDS` forwarded at once, and past `dns.rate_limit` per
//! client prefix dropped or answered empty with TC ([`super::rate`]).
//! TCP has its own budgets ([`super::tcp`]). Clients outside
//! `dns.allow_clients` get REFUSED on both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::DnsCounters;
use super::forward::{failover, forward, to_datacenter};
use super::rate::{RateLimit, Verdict};
use super::respond::{Outcome, Responder, Transport};
use super::tcp::tcp_loop;
use crate::config::{DnsConfig, reaches_itself};

/// Forwarded UDP queries in flight at once; more get SERVFAIL at once.
const MAX_FORWARDS: usize = 256;

/// The DNS sockets, bound (blocking std sockets, handed to the DNS task).
pub struct DnsListeners {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

impl DnsListeners {
    /// Binds UDP and TCP on `dns.addr` (the same port for both, also when
    /// port 0 asks for any). `Ok(None)` when DNS is off, or when the
    /// default address is taken (another agent on this host): then the
    /// agent runs without DNS and says so; a configured one is an error.
    pub fn bind(config: &DnsConfig) -> anyhow::Result<Option<Self>> {
        let Some(addr) = config.addr else {
            return Ok(None);
        };
        match Self::bind_both(addr) {
            Ok(listeners) => {
                // Port 0 is only known now.
                let bound = listeners.local_addr()?;
                if let Some(recursor) = config.recursors.iter().find(|r| reaches_itself(**r, bound))
                {
                    anyhow::bail!(
                        "config key `dns.recursors`: {recursor} is this agent itself (DNS bound to {bound}): it would forward its own questions to itself in a loop"
                    );
                }
                Ok(Some(listeners))
            }
            Err(error) if !config.addr_configured => {
                tracing::warn!(
                    %addr, %error,
                    "DNS interface off: its default address is taken (set dns_addr, or `off`)"
                );
                Ok(None)
            }
            Err(error) => Err(error).with_context(|| {
                format!("cannot bind the DNS interface to {addr} (config key `dns_addr`)")
            }),
        }
    }

    fn bind_both(addr: SocketAddr) -> std::io::Result<Self> {
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok(Self { udp, tcp })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Serves DNS as a task of the calling runtime (the agent's, where the
/// HTTP API runs); the returned future completes when the server has
/// stopped (after `stop` is cancelled). Not a thread of its own: the core
/// loop has one already, so queries only ever take turns with API
/// requests, and a second thread and runtime cost resident memory (28 kB
/// of an idle agent's ~1.2 MB of RssAnon, measured in
/// docs/figures/issue-23/memory-profile-6fb02a3/) for no gain in isolation.
pub fn spawn(
    listeners: DnsListeners,
    responder: Responder,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    serve(listeners, Arc::new(responder), stop)
}

/// What the operator should know about who can ask: logged at start.
/// Warnings first (`true`), then notes.
pub fn exposure_notes(config: &DnsConfig, addr: SocketAddr) -> Vec<(bool, String)> {
    let mut notes = Vec::new();
    if !addr.ip().is_loopback() {
        let networks: Vec<String> = config
            .allow_clients
            .iter()
            .map(ToString::to_string)
            .collect();
        notes.push((
            true,
            format!(
                "the DNS interface listens on a non-loopback address (dns_addr {addr}): it answers clients in dns.allow_clients ({}), UDP answers limited to dns.rate_limit = {} a second per client prefix{}",
                networks.join(", "),
                config.rate_limit,
                if config.recursors.is_empty() {
                    String::new()
                } else {
                    " and forwards their other names to dns.recursors".to_string()
                },
            ),
        ));
    }
    if config.protect_reads {
        notes.push(if config.serve_with_protect_reads {
            (
                true,
                "acl.protect_reads is on and dns.serve_with_protect_reads = true: DNS answers catalog names (services, nodes) without a token".to_string(),
            )
        } else {
            (
                false,
                "acl.protect_reads is on: DNS answers REFUSED for catalog names, as it carries no token (dns.serve_with_protect_reads = true answers them)".to_string(),
            )
        });
    }
    notes
}

async fn serve(listeners: DnsListeners, responder: Arc<Responder>, stop: CancellationToken) {
    if let Ok(addr) = listeners.local_addr() {
        for (warning, note) in exposure_notes(&responder.config, addr) {
            if warning {
                tracing::warn!("{note}");
            } else {
                tracing::info!("{note}");
            }
        }
    }
    let (udp, tcp) = match (
        UdpSocket::from_std(listeners.udp),
        TcpListener::from_std(listeners.tcp),
    ) {
        (Ok(udp), Ok(tcp)) => (udp, tcp),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot use the DNS sockets; DNS is off");
            return;
        }
    };
    tokio::join!(
        udp_loop(Arc::new(udp), responder.clone(), stop.clone()),
        tcp_loop(tcp, responder, stop),
    );
}

/// Answers UDP queries in arrival order; forwarded ones go to a task each.
async fn udp_loop(socket: Arc<UdpSocket>, responder: Arc<Responder>, stop: CancellationToken) {
    let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
    let mut rate_limit = RateLimit::new(responder.config.rate_limit, Instant::now());
    let mut buffer = vec![0u8; 65535];
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let Ok((length, from)) = received else {
            continue;
        };
        let packet = &buffer[..length];
        match rate_limit.check(from.ip(), Instant::now()) {
            Verdict::Answer => {}
            Verdict::Slip => {
                DnsCounters::add(&responder.counters.rate_limited);
                if let Some(reply) = responder.truncated_empty(packet) {
                    DnsCounters::add(&responder.counters.rate_limit_truncated);
                    let _ = socket.send_to(&reply, from).await;
                }
                continue;
            }
            Verdict::Drop => {
                DnsCounters::add(&responder.counters.rate_limited);
                continue;
            }
        }
        match responder.respond(packet, Transport::Udp, from.ip()) {
            Outcome::Reply(reply) => {
                let _ = socket.send_to(&reply, from).await;
            }
            Outcome::Forward(query) => {
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    DnsCounters::add(&responder.counters.forward_failures);
                    if let Some(reply) = super::respond::servfail(&query) {
                        let _ = socket.send_to(&reply, from).await;
                    }
                    continue;
                };
                let (socket, responder) = (socket.clone(), responder.clone());
                tokio::spawn(async move {
                    let config = &responder.config;
                    if let Some(reply) = forward(
                        &query,
                        &config.recursors,
                        config.recursor_timeout,
                        Transport::Udp,
                        &responder.counters,
                    )
                    .await
                    {
                        let _ = socket.send_to(&reply, from).await;
                    }
                    drop(permit);
                });
            }
            Outcome::Datacenter { datacenter, query } => {
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    if let Some(reply) = super::respond::servfail(&query) {
                        DnsCounters::add(&responder.counters.servfail);
                        let _ = socket.send_to(&reply, from).await;
                    }
                    continue;
                };
                let (socket, responder) = (socket.clone(), responder.clone());
                tokio::spawn(async move {
                    if let Some(reply) =
                        to_datacenter(&responder, datacenter, &query, Transport::Udp).await
                    {
                        let _ = socket.send_to(&reply, from).await;
                    }
                    drop(permit);
                });
            }
            Outcome::Failover {
                datacenters,
                query,
                local,
            } => {
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    let _ = socket.send_to(&local, from).await;
                    continue;
                };
                let (socket, responder) = (socket.clone(), responder.clone());
                tokio::spawn(async move {
                    let reply =
                        failover(&responder, &datacenters, &query, local, Transport::Udp).await;
                    let _ = socket.send_to(&reply, from).await;
                    drop(permit);
                });
            }
            Outcome::Drop => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_bind_and_protect_reads_are_told_at_start() {
        let loopback = DnsConfig::default();
        assert!(exposure_notes(&loopback, "127.0.0.1:8600".parse().unwrap()).is_empty());
        let wide = DnsConfig {
            addr: Some("0.0.0.0:8600".parse().unwrap()),
            rate_limit: 100,
            ..DnsConfig::default()
        };
        let notes = exposure_notes(&wide, "0.0.0.0:8600".parse().unwrap());
        assert_eq!(notes.len(), 1);
        assert!(notes[0].0, "a warning");
        assert!(notes[0].1.contains("non-loopback") && notes[0].1.contains("dns.allow_clients"));
        for (serve, warning) in [(false, false), (true, true)] {
            let guarded = DnsConfig {
                protect_reads: true,
                serve_with_protect_reads: serve,
                ..DnsConfig::default()
            };
            let notes = exposure_notes(&guarded, "127.0.0.1:8600".parse().unwrap());
            assert_eq!(notes.len(), 1);
            assert_eq!(notes[0].0, warning);
            assert!(notes[0].1.contains("dns.serve_with_protect_reads"));
        }
    }
}
