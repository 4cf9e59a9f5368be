//! Names outside our domains, sent to `dns.recursors` in order: the first
//! reply wins; each recursor gets `dns.recursor_timeout`. A client that
//! asked over UDP is forwarded over UDP (a truncated reply goes back as it
//! is, and the client retries over TCP), a TCP client over TCP.
//!
//! Names in another datacenter (`web.service.dc2.consul`) go there
//! through the WAN pool ([`to_datacenter`]) and are answered by an agent
//! of that datacenter as its DNS interface would; SERVFAIL when none
//! answers.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use shoal_protocol::forward::{ForwardQuery, ForwardRequest};

use super::DnsCounters;
use super::respond::{Responder, Transport, servfail};

/// Forwards `query` to each recursor in turn; SERVFAIL when none answers.
pub async fn forward(
    query: &[u8],
    recursors: &[SocketAddr],
    timeout: Duration,
    transport: Transport,
    counters: &DnsCounters,
) -> Option<Vec<u8>> {
    for &recursor in recursors {
        let exchange = async {
            match transport {
                Transport::Udp => over_udp(query, recursor).await,
                Transport::Tcp => over_tcp(query, recursor).await,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            // The reply must answer this query (same id).
            Ok(Ok(mut reply)) if reply.len() >= 12 && reply[..2] == query[..2] => {
                // We recursed for the client: say so (RA), whatever the
                // recursor's own flag.
                reply[3] |= 0x80;
                return Some(reply);
            }
            Ok(Ok(_)) => tracing::debug!(%recursor, "recursor sent a reply to another query"),
            Ok(Err(error)) => tracing::debug!(%recursor, %error, "recursor failed"),
            Err(_) => tracing::debug!(%recursor, "recursor timed out"),
        }
    }
    counters.forward_failures.fetch_add(1, Ordering::Relaxed);
    counters.servfail.fetch_add(1, Ordering::Relaxed);
    servfail(query)
}

async fn over_udp(query: &[u8], recursor: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if recursor.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(recursor).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; 65535];
    let length = socket.recv(&mut buffer).await?;
    buffer.truncate(length);
    Ok(buffer)
}

async fn over_tcp(query: &[u8], recursor: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(recursor).await?;
    let length = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let length = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(length)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// Sends `query`, a question about datacenter `datacenter`, there through
/// the WAN pool; its reply, or SERVFAIL when no agent of it answered.
pub async fn to_datacenter(
    responder: &Responder,
    datacenter: String,
    query: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let forwarder = responder.forwarder.as_ref()?;
    let request = dns_request(&datacenter, query, transport);
    match forwarder.send(request, crate::wan::ATTEMPT_TIMEOUT).await {
        // The reply must answer this query (same id).
        Ok(answer)
            if answer.status == 200
                && answer.body.len() >= 12
                && answer.body[..2] == query[..2] =>
        {
            Some(answer.body)
        }
        Ok(answer) => {
            tracing::debug!(%datacenter, status = answer.status, "no DNS answer from datacenter");
            responder.counters.servfail.fetch_add(1, Ordering::Relaxed);
            servfail(query)
        }
        Err(error) => {
            tracing::debug!(%datacenter, %error, "no DNS answer from datacenter");
            responder.counters.servfail.fetch_add(1, Ordering::Relaxed);
            servfail(query)
        }
    }
}

/// `query`, about a service our datacenter has no instance of, asked of
/// each of `datacenters` in turn (`dns.failover`): the first reply that
/// answers it (NOERROR, with records), else `local`, our own reply.
pub async fn failover(
    responder: &Responder,
    datacenters: &[String],
    query: &[u8],
    local: Vec<u8>,
    transport: Transport,
) -> Vec<u8> {
    let Some(forwarder) = responder.forwarder.as_ref() else {
        return local;
    };
    for datacenter in datacenters {
        let request = dns_request(datacenter, query, transport);
        match forwarder.send(request, crate::wan::ATTEMPT_TIMEOUT).await {
            Ok(answer) if answer.status == 200 && answers(&answer.body, query) => {
                responder.counters.failovers.fetch_add(1, Ordering::Relaxed);
                return answer.body;
            }
            Ok(answer) => {
                tracing::debug!(%datacenter, status = answer.status, "failover: no instance there");
            }
            Err(error) => tracing::debug!(%datacenter, %error, "failover: no answer"),
        }
    }
    local
}

/// `query`, as it arrived over `transport`, for `datacenter`.
fn dns_request(datacenter: &str, query: &[u8], transport: Transport) -> ForwardRequest {
    ForwardRequest {
        datacenter: datacenter.to_string(),
        query: ForwardQuery::Dns {
            packet: query.to_vec(),
            tcp: transport == Transport::Tcp,
        },
        hops: 0,
    }
}

/// Whether `reply` answers `query` (same id) with NOERROR and at least
/// one record.
fn answers(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= 12
        && query.len() >= 2
        && reply[..2] == query[..2]
        && reply[3] & 0x0f == 0
        && u16::from_be_bytes([reply[6], reply[7]]) > 0
}
