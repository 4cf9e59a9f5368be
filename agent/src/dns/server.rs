//! The DNS server: a UDP loop and a TCP accept loop on one address, run on
//! a thread of their own with its own single-threaded runtime. The agent's
//! runtime is single-threaded too: sharing it, a flood of queries would
//! take turns with the gossip loop; on its own thread it only competes for
//! a core, and the gossip loop never waits on it. Answers are read from the
//! snapshot channel, never from the loop.
//!
//! Limits: UDP packets are answered one at a time as they come (an answer
//! takes microseconds); TCP connections are capped
//! (`dns.max_tcp_connections`, more are closed at once, counted), closed
//! after `dns.tcp_idle_timeout` without a complete query, and a query
//! longer than a DNS message can be is refused by the 16-bit framing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::forward::forward;
use super::respond::{Outcome, Responder, Transport};
use crate::config::DnsConfig;

/// Forwarded UDP queries in flight at once; more get SERVFAIL at once.
const MAX_FORWARDS: usize = 256;

/// The DNS sockets, bound (blocking std sockets, handed to the DNS thread).
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
            Ok(listeners) => Ok(Some(listeners)),
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

/// Starts the DNS thread; the returned future completes when it has
/// stopped (after `stop` is cancelled).
pub fn spawn(
    listeners: DnsListeners,
    responder: Responder,
    stop: CancellationToken,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("shoal-dns".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start the DNS runtime; DNS is off");
                    return;
                }
            };
            runtime.block_on(serve(listeners, Arc::new(responder), stop));
            drop(done_tx);
        })
        .context("cannot start the DNS thread")?;
    Ok(async move {
        let _ = done_rx.await;
    })
}

async fn serve(listeners: DnsListeners, responder: Arc<Responder>, stop: CancellationToken) {
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
        match responder.respond(&buffer[..length], Transport::Udp) {
            Outcome::Reply(reply) => {
                let _ = socket.send_to(&reply, from).await;
            }
            Outcome::Forward(query) => {
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    responder
                        .counters
                        .forward_failures
                        .fetch_add(1, Ordering::Relaxed);
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
            Outcome::Drop => {}
        }
    }
}

async fn tcp_loop(listener: TcpListener, responder: Arc<Responder>, stop: CancellationToken) {
    let connections = Arc::new(Semaphore::new(responder.config.max_tcp_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            responder
                .counters
                .tcp_rejected
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (responder, stop) = (responder.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = handle_connection(stream, &responder) => {}
            }
            drop(permit);
        });
    }
}

/// Serves length-prefixed queries on one connection until the client
/// closes it, an I/O error, or `dns.tcp_idle_timeout` without a query.
async fn handle_connection(mut stream: TcpStream, responder: &Responder) {
    let idle = responder.config.tcp_idle_timeout;
    let _ = stream.set_nodelay(true);
    loop {
        let read_query = async {
            let length = stream.read_u16().await?;
            let mut query = vec![0u8; usize::from(length)];
            stream.read_exact(&mut query).await?;
            Ok::<_, std::io::Error>(query)
        };
        let query = match tokio::time::timeout(idle, read_query).await {
            Ok(Ok(query)) => query,
            Ok(Err(_)) => return,
            Err(_) => {
                responder
                    .counters
                    .tcp_idle_closed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let reply = match responder.respond(&query, Transport::Tcp) {
            Outcome::Reply(reply) => reply,
            Outcome::Forward(query) => {
                let config = &responder.config;
                match forward(
                    &query,
                    &config.recursors,
                    config.recursor_timeout,
                    Transport::Tcp,
                    &responder.counters,
                )
                .await
                {
                    Some(reply) => reply,
                    None => return,
                }
            }
            // Not DNS: the stream can't be trusted to be framed.
            Outcome::Drop => return,
        };
        let Ok(length) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
