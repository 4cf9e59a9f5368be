//! DNS over TCP: length-prefixed queries on connections that may carry
//! many (pipelined), with these budgets:
//!
//! - `dns.max_tcp_connections` in all and `dns.max_tcp_connections_per_client`
//!   from one client address (an IPv6 client: its /64);
//! - a connection that keeps the server waiting, its client sending no
//!   query or not reading a reply, for `dns.tcp_idle_timeout` is closed;
//! - at a cap, a new connection takes the place of the one that has kept
//!   the server waiting longest, if that has lasted [`EVICTABLE_AFTER`],
//!   else of the one answered the most queries, if more than
//!   [`EVICTABLE_ANSWERED`] (counted `tcp_evicted`); when there is none,
//!   the new one is closed at once (`tcp_rejected`,
//!   `tcp_client_rejected`). Clients that pipeline queries and never read
//!   their replies hold every slot otherwise, for as long as they like,
//!   and nobody else is answered over TCP; a client that asks one or a
//!   few questions is never the one closed.
//!
//! A connection that waits on us (a forwarded query) is not waiting on
//! its client: it is never the one closed to make room.
//!
//! Pipelined queries are answered one per turn ([`tokio::task::yield_now`]
//! after each), and a connection's send buffer is kept small
//! ([`SEND_BUFFER`]): a client that sends thousands of queries and reads
//! nothing gets a few dozen answered before its connection waits on it,
//! instead of taking the DNS task's time for all of them while others
//! wait their turn.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::DnsCounters;
use super::forward::{failover, forward, to_datacenter};
use super::respond::{Outcome, Responder, Transport};

/// How long a connection must have kept the server waiting before a new
/// one may take its place at a cap: a well-behaved client sends its query
/// and reads its reply within milliseconds.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Answers after which a connection may make room for a new one even
/// while it is not waiting on its client: a client that pipelines this
/// many has had its share (and can connect again).
pub const EVICTABLE_ANSWERED: u64 = 32;

/// Bytes of replies the kernel holds for one connection (besides what the
/// client's receive buffer holds): several of the largest usual answers.
/// Larger replies (up to 64 KiB) still go out, as the client reads.
pub const SEND_BUFFER: usize = 32 * 1024;

/// `waiting_since` of a connection that is working on a query.
const BUSY: u64 = u64::MAX;

/// One open connection, as the table sees it.
#[derive(Debug)]
struct Connection {
    /// The client's address, or its /64 (see [`client_of`]).
    client: IpAddr,
    /// Microseconds since the table's start when it began waiting on its
    /// client, or [`BUSY`].
    waiting_since: AtomicU64,
    /// Queries answered on it.
    answered: AtomicU64,
    /// Cancelled to close it (making room for a newer one).
    close: CancellationToken,
}

/// Why a new connection was closed at once.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Full,
    ClientFull,
}

/// Every open connection. Locked on accept and close only.
struct Connections {
    started: Instant,
    max: usize,
    max_per_client: usize,
    open: Mutex<(u64, HashMap<u64, Arc<Connection>>)>,
}

impl Connections {
    fn new(max: usize, max_per_client: usize) -> Self {
        Self {
            started: Instant::now(),
            max,
            max_per_client,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(BUSY - 1)
    }

    /// Admits a connection from `client`, closing the one that has kept
    /// the server waiting longest when a cap is reached; its id and state.
    fn admit(
        &self,
        client: IpAddr,
        counters: &DnsCounters,
    ) -> Result<(u64, Arc<Connection>), Refusal> {
        let client = client_of(client);
        let now = self.now();
        let evictable_before =
            now.saturating_sub(u64::try_from(EVICTABLE_AFTER.as_micros()).unwrap_or(0));
        let mut guard = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (next_id, open) = &mut *guard;
        let from_client = open.values().filter(|c| c.client == client).count();
        let scope = if from_client >= self.max_per_client {
            Some((Refusal::ClientFull, true))
        } else if open.len() >= self.max {
            Some((Refusal::Full, false))
        } else {
            None
        };
        if let Some((refusal, same_client)) = scope {
            let candidates = || {
                open.iter()
                    .filter(move |(_, c)| !same_client || c.client == client)
            };
            let waited_longest = candidates()
                .map(|(id, c)| (*id, c.waiting_since.load(Ordering::Relaxed)))
                .filter(|(_, since)| *since < evictable_before)
                .min_by_key(|(_, since)| *since);
            let answered_most = || {
                candidates()
                    .filter(|(_, c)| c.waiting_since.load(Ordering::Relaxed) != BUSY)
                    .map(|(id, c)| (*id, c.answered.load(Ordering::Relaxed)))
                    .filter(|(_, answered)| *answered > EVICTABLE_ANSWERED)
                    .max_by_key(|(_, answered)| *answered)
            };
            let Some((victim, _)) = waited_longest.or_else(answered_most) else {
                return Err(refusal);
            };
            if let Some(connection) = open.remove(&victim) {
                connection.close.cancel();
                DnsCounters::add(&counters.tcp_evicted);
            }
        }
        *next_id += 1;
        let connection = Arc::new(Connection {
            client,
            waiting_since: AtomicU64::new(now),
            answered: AtomicU64::new(0),
            close: CancellationToken::new(),
        });
        open.insert(*next_id, connection.clone());
        Ok((*next_id, connection))
    }

    fn remove(&self, id: u64) {
        let mut guard = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        guard.1.remove(&id);
    }
}

pub async fn tcp_loop(listener: TcpListener, responder: Arc<Responder>, stop: CancellationToken) {
    let config = &responder.config;
    let connections = Arc::new(Connections::new(
        config.max_tcp_connections,
        config.max_tcp_connections_per_client,
    ));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, from)) = accepted else {
            // Out of file descriptors, most likely: don't spin on it.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let client = from.ip().to_canonical();
        let (id, connection) = match connections.admit(client, &responder.counters) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                DnsCounters::add(match refusal {
                    Refusal::Full => &responder.counters.tcp_rejected,
                    Refusal::ClientFull => &responder.counters.tcp_client_rejected,
                });
                continue;
            }
        };
        let (responder, stop, connections) = (responder.clone(), stop.clone(), connections.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection.close.cancelled() => {}
                _ = handle_connection(stream, client, &responder, &connection, &connections) => {}
            }
            connections.remove(id);
        });
    }
}

/// Serves length-prefixed queries on one connection until the client
/// closes it, an I/O error, or `dns.tcp_idle_timeout` waiting on the
/// client (for a query, or to read a reply).
async fn handle_connection(
    mut stream: TcpStream,
    client: IpAddr,
    responder: &Responder,
    connection: &Connection,
    connections: &Connections,
) {
    let idle = responder.config.tcp_idle_timeout;
    let counters = &responder.counters;
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
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
                DnsCounters::add(&counters.tcp_idle_closed);
                return;
            }
        };
        connection.waiting_since.store(BUSY, Ordering::Relaxed);
        connection.answered.fetch_add(1, Ordering::Relaxed);
        let reply = match responder.respond(&query, Transport::Tcp, client) {
            Outcome::Reply(reply) => reply,
            Outcome::Forward(query) => {
                let config = &responder.config;
                match forward(
                    &query,
                    &config.recursors,
                    config.recursor_timeout,
                    Transport::Tcp,
                    counters,
                )
                .await
                {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Outcome::Datacenter { datacenter, query } => {
                match to_datacenter(responder, datacenter, &query, Transport::Tcp).await {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Outcome::Failover {
                datacenters,
                query,
                local,
            } => failover(responder, &datacenters, &query, local, Transport::Tcp).await,
            // Not DNS: the stream can't be trusted to be framed.
            Outcome::Drop => return,
        };
        let Ok(length) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&reply);
        // From here on the client is who we wait for: to read this reply,
        // then to send its next query.
        connection
            .waiting_since
            .store(connections.now(), Ordering::Relaxed);
        match tokio::time::timeout(idle, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                DnsCounters::add(&counters.tcp_unread_closed);
                return;
            }
        }
        // One query per turn: other connections, and the accept loop,
        // are not kept waiting by a client that pipelines many.
        tokio::task::yield_now().await;
    }
}

/// Who a connection's client is, for `dns.max_tcp_connections_per_client`:
/// its IPv4 address, or the /64 of its IPv6 address (one host's interface
/// holds a whole /64, and could open each connection from another address
/// of it). TCP can't be spoofed, so no wider prefix is needed.
fn client_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => address,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let counters = DnsCounters::default();
        let table = Connections::new(10, 2);
        let addr = |text: &str| -> IpAddr { text.parse().unwrap() };
        assert!(table.admit(addr("2001:db8:0:1::1"), &counters).is_ok());
        assert!(table.admit(addr("2001:db8:0:1::2"), &counters).is_ok());
        assert_eq!(
            table
                .admit(addr("2001:db8:0:1:ffff::3"), &counters)
                .unwrap_err(),
            Refusal::ClientFull,
            "a third address of the same /64"
        );
        assert!(table.admit(addr("2001:db8:0:2::1"), &counters).is_ok());
        // IPv4 clients stay one address each.
        assert!(table.admit(addr("127.0.0.1"), &counters).is_ok());
        assert!(table.admit(addr("127.0.0.2"), &counters).is_ok());
        assert!(table.admit(addr("127.0.0.2"), &counters).is_ok());
    }

    #[test]
    fn at_a_cap_the_longest_waiting_connection_makes_room() {
        let counters = DnsCounters::default();
        let table = Connections::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let (_, first) = table.admit(a, &counters).unwrap();
        let (_, second) = table.admit(a, &counters).unwrap();
        // Fresh ones are never closed: the third from `a` is refused.
        assert_eq!(table.admit(a, &counters).unwrap_err(), Refusal::ClientFull);
        let (_, third) = table.admit(b, &counters).unwrap();
        assert_eq!(table.admit(b, &counters).unwrap_err(), Refusal::Full);
        // `second` has waited long enough, `first` is busy: `second` goes.
        first.waiting_since.store(BUSY, Ordering::Relaxed);
        second.waiting_since.store(0, Ordering::Relaxed);
        std::thread::sleep(EVICTABLE_AFTER + Duration::from_millis(10));
        third.waiting_since.store(table.now(), Ordering::Relaxed);
        assert!(table.admit(b, &counters).is_ok());
        assert!(second.close.is_cancelled());
        assert!(!first.close.is_cancelled() && !third.close.is_cancelled());
        assert_eq!(counters.tcp_evicted.load(Ordering::Relaxed), 1);
        // Nobody has waited on its client for long now, but one pipelined
        // many queries.
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(table.admit(c, &counters).unwrap_err(), Refusal::Full);
        first
            .answered
            .store(EVICTABLE_ANSWERED + 1, Ordering::Relaxed);
        // Not while it waits on a forwarded query: it waits on us.
        assert_eq!(table.admit(c, &counters).unwrap_err(), Refusal::Full);
        first.waiting_since.store(table.now(), Ordering::Relaxed);
        assert!(table.admit(c, &counters).is_ok());
        assert!(first.close.is_cancelled());
    }
}
