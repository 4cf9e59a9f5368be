//! A user-space lossy network: there is no netem on the machines this runs
//! on, so every agent binds its gossip socket on one address and
//! advertises another, where this relay listens (UDP and TCP) and forwards
//! to the real one, dropping what the loss model says.
//!
//! A datagram from agent `i` to agent `j` arrives at `j`'s advertised
//! socket from `i`'s real address, and leaves through `i`'s advertised
//! socket to `j`'s real address: `j` sees it come from `i`'s advertised
//! address, as without the relay, so a reply to the source (memberlist)
//! and a reply to the member's advertised address (foca) both come back
//! through the relay. TCP connections come from an unbound socket (so from
//! 127.0.0.1): the relay finds the agent that opened one by the process
//! holding its socket (see [`connecting_agent`]), so loss on a link and
//! loss into a victim apply to TCP as to UDP.
//!
//! With [`Relay::set_delay`], every datagram and every TCP chunk is held
//! for its link's one-way delay, and a new TCP connection is first held
//! for the link's round trip (the handshake the loopback skipped).
//! [`Loss::Cut`] cuts a group of agents off from the rest, both ways.
//!
//! Forwarding costs CPU in this process (a recv and a send per datagram),
//! on the same cores as the agents.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::schedule::{Burst, Chain, GilbertElliott, SplitMix64};

/// What the relay drops.
pub enum Loss {
    None,
    /// Every directed link `(from, to)` has its own Gilbert-Elliott chain.
    Bursty {
        model: GilbertElliott,
        seed: u64,
        links: HashMap<(usize, usize), Chain>,
        connections: u64,
    },
    /// Everything into a victim during its bursts is lost with `rate`;
    /// what it sends goes out.
    IntoVictims {
        windows: HashMap<usize, Vec<Burst>>,
        rate: f64,
        rng: SplitMix64,
    },
    /// Everything between the group and the other agents is lost, both
    /// ways: a partition.
    Cut(std::collections::HashSet<usize>),
}

/// Loss on one direction of one TCP connection.
enum StreamLoss {
    None,
    /// Every segment (a connection across a cut).
    All,
    Chain(Chain),
    Into {
        windows: Vec<Burst>,
        rate: f64,
        rng: SplitMix64,
    },
}

impl StreamLoss {
    fn lose(&mut self, at: Duration) -> bool {
        match self {
            StreamLoss::None => false,
            StreamLoss::All => true,
            StreamLoss::Chain(chain) => chain.lose(at),
            StreamLoss::Into { windows, rate, rng } => {
                windows.iter().any(|w| w.contains(at)) && rng.unit() < *rate
            }
        }
    }
}

impl Loss {
    /// Whether a datagram from agent `from` to agent `to` at `at` is lost.
    fn datagram(&mut self, from: usize, to: usize, at: Duration) -> bool {
        match self {
            Loss::None => false,
            Loss::Bursty {
                model, seed, links, ..
            } => links
                .entry((from, to))
                .or_insert_with(|| Chain::new(*model, *seed, &[2, from as u64, to as u64]))
                .lose(at),
            Loss::IntoVictims {
                windows, rate, rng, ..
            } => {
                windows
                    .get(&to)
                    .is_some_and(|bursts| bursts.iter().any(|b| b.contains(at)))
                    && rng.unit() < *rate
            }
            Loss::Cut(group) => group.contains(&from) != group.contains(&to),
        }
    }

    /// Loss for a new TCP connection from agent `from` (when it could be
    /// told) to agent `to`: `(into to, back into from)`. A link's chain is
    /// copied, so the connection's bad spells are the link's.
    fn tcp(&mut self, from: Option<usize>, to: usize) -> (StreamLoss, StreamLoss) {
        match self {
            Loss::None => (StreamLoss::None, StreamLoss::None),
            Loss::Bursty {
                model,
                seed,
                links,
                connections,
            } => {
                *connections += 1;
                let mut chain = |link: Option<(usize, usize)>, direction: u64| {
                    StreamLoss::Chain(match link {
                        Some((a, b)) => links
                            .entry((a, b))
                            .or_insert_with(|| Chain::new(*model, *seed, &[2, a as u64, b as u64]))
                            .clone(),
                        None => Chain::new(*model, *seed, &[3, to as u64, *connections, direction]),
                    })
                };
                (
                    chain(from.map(|from| (from, to)), 0),
                    chain(from.map(|from| (to, from)), 1),
                )
            }
            Loss::IntoVictims { windows, rate, rng } => {
                let mut into = |agent: Option<usize>| match agent.and_then(|a| windows.get(&a)) {
                    Some(bursts) => StreamLoss::Into {
                        windows: bursts.clone(),
                        rate: *rate,
                        rng: SplitMix64::new(rng.next_u64()),
                    },
                    None => StreamLoss::None,
                };
                (into(Some(to)), into(from))
            }
            Loss::Cut(group) => match from {
                Some(from) if group.contains(&from) != group.contains(&to) => {
                    (StreamLoss::All, StreamLoss::All)
                }
                _ => (StreamLoss::None, StreamLoss::None),
            },
        }
    }
}

/// What the relay did, for the results file.
#[derive(Default)]
pub struct Counters {
    pub forwarded: Cell<u64>,
    pub dropped: Cell<u64>,
    /// Datagrams from an address that is no agent's (should stay 0).
    pub unknown_source: Cell<u64>,
    pub send_errors: Cell<u64>,
    pub tcp_connections: Cell<u64>,
    /// TCP connections whose opener could not be told (should stay 0).
    pub tcp_unknown_source: Cell<u64>,
    /// TCP chunks held back for a retransmission timeout (or more).
    pub tcp_delayed: Cell<u64>,
}

/// Bytes one agent sent and received through the relay: UDP payloads
/// and their datagrams, TCP payloads (headers not counted).
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
}

fn bump(cell: &Cell<u64>) {
    cell.set(cell.get() + 1);
}

/// One-way delay of the link from one agent to another.
type LinkDelay = dyn Fn(usize, usize) -> Duration;

struct Shared {
    real: Vec<SocketAddr>,
    sockets: Vec<UdpSocket>,
    /// Agents by address: their own, and aliases (see [`Relay::alias`]).
    by_ip: RefCell<HashMap<IpAddr, usize>>,
    traffic: RefCell<Vec<Traffic>>,
    loss: RefCell<Loss>,
    /// Agent processes, to tell who opened a TCP connection.
    pids: RefCell<Vec<u32>>,
    /// The fault phase's start: loss windows count from it.
    started: Cell<Instant>,
    counters: Counters,
    /// One-way delay of each directed link `(from, to)`, when set (see
    /// [`Relay::set_delay`]), and what was applied: total µs and count.
    delay: RefCell<Option<Rc<LinkDelay>>>,
    applied: RefCell<HashMap<(usize, usize), (u64, u64)>>,
}

/// The running relay; its tasks stop when it is dropped.
pub struct Relay {
    shared: Rc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Relay {
    /// Listens on every `advertised[i]` and forwards to `real[i]`.
    pub async fn start(real: Vec<SocketAddr>, advertised: &[SocketAddr]) -> Result<Self> {
        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        for addr in advertised {
            sockets.push(
                UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("relay: bind UDP {addr}"))?,
            );
            listeners.push(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("relay: bind TCP {addr}"))?,
            );
        }
        let shared = Rc::new(Shared {
            by_ip: RefCell::new(real.iter().enumerate().map(|(i, a)| (a.ip(), i)).collect()),
            traffic: RefCell::new(vec![Traffic::default(); real.len()]),
            real,
            sockets,
            loss: RefCell::new(Loss::None),
            pids: RefCell::new(Vec::new()),
            started: Cell::new(Instant::now()),
            counters: Counters::default(),
            delay: RefCell::new(None),
            applied: RefCell::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        for (to, listener) in listeners.into_iter().enumerate() {
            tasks.push(tokio::task::spawn_local(forward_datagrams(
                Rc::clone(&shared),
                to,
            )));
            tasks.push(tokio::task::spawn_local(accept_streams(
                Rc::clone(&shared),
                to,
                listener,
            )));
        }
        Ok(Self { shared, tasks })
    }

    /// From now on, drop what `loss` says; its windows and the counters
    /// count from now.
    pub fn set_loss(&self, loss: Loss) {
        self.shared.started.set(Instant::now());
        let counters = &self.shared.counters;
        for counter in [
            &counters.forwarded,
            &counters.dropped,
            &counters.unknown_source,
            &counters.send_errors,
            &counters.tcp_connections,
            &counters.tcp_unknown_source,
            &counters.tcp_delayed,
        ] {
            counter.set(0);
        }
        *self.shared.loss.borrow_mut() = loss;
    }

    /// From now on, hold each datagram and TCP chunk from agent `from` to
    /// agent `to` for `delay(from, to)` (zones with round trips between
    /// them), and a new connection for the round trip before it is passed
    /// on. Tokio's timers round a delay up to the millisecond:
    /// [`Relay::applied_delay`] says what was really applied to datagrams.
    pub fn set_delay(&self, delay: impl Fn(usize, usize) -> Duration + 'static) {
        *self.shared.delay.borrow_mut() = Some(Rc::new(delay));
        self.shared.applied.borrow_mut().clear();
    }

    /// The mean one-way delay the relay applied to datagrams from `from`
    /// to `to` (receive to send), if any crossed that link.
    pub fn applied_delay(&self, from: usize, to: usize) -> Option<Duration> {
        let applied = self.shared.applied.borrow();
        let (total, count) = applied.get(&(from, to)).copied()?;
        (count > 0).then(|| Duration::from_micros(total / count))
    }

    /// The agents' process ids, by index (see [`connecting_agent`]).
    pub fn set_pids(&self, pids: Vec<u32>) {
        *self.shared.pids.borrow_mut() = pids;
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Counts what comes from `ip` (a process that is not one of the
    /// relayed agents, for example one that only connects to them) as
    /// agent `index`'s: its delays, its loss, its traffic.
    pub fn alias(&self, ip: IpAddr, index: usize) {
        self.shared.by_ip.borrow_mut().insert(ip, index);
    }

    /// What each agent sent and received through the relay since the last
    /// call (or the start), by index.
    pub fn take_traffic(&self) -> Vec<Traffic> {
        let mut traffic = self.shared.traffic.borrow_mut();
        let taken = traffic.clone();
        traffic.fill(Traffic::default());
        taken
    }
}

/// Adds `bytes` from agent `from` to agent `to` (when known) to the
/// traffic counters; `datagram` when they were one.
fn count_traffic(
    shared: &Shared,
    (from, to): (Option<usize>, Option<usize>),
    bytes: usize,
    datagram: bool,
) {
    let mut traffic = shared.traffic.borrow_mut();
    let datagrams = u64::from(datagram);
    if let Some(from) = from {
        traffic[from].sent += bytes as u64;
        traffic[from].datagrams_sent += datagrams;
    }
    if let Some(to) = to {
        traffic[to].received += bytes as u64;
        traffic[to].datagrams_received += datagrams;
    }
}

/// The one-way delay from agent `from` (when known) to agent `to`.
fn link_delay(shared: &Shared, from: Option<usize>, to: usize) -> Duration {
    match (from, shared.delay.borrow().as_ref()) {
        (Some(from), Some(delay)) => delay(from, to),
        _ => Duration::ZERO,
    }
}

async fn forward_datagrams(shared: Rc<Shared>, to: usize) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let Ok((length, from)) = shared.sockets[to].recv_from(&mut buffer).await else {
            continue;
        };
        let counters = &shared.counters;
        let Some(from_agent) = shared.by_ip.borrow().get(&from.ip()).copied() else {
            bump(&counters.unknown_source);
            continue;
        };
        let at = shared.started.get().elapsed();
        if shared.loss.borrow_mut().datagram(from_agent, to, at) {
            bump(&counters.dropped);
            continue;
        }
        let delay = shared
            .delay
            .borrow()
            .as_ref()
            .map(|delay| delay(from_agent, to));
        match delay {
            Some(delay) => {
                let received = Instant::now();
                let bytes = buffer[..length].to_vec();
                let shared = Rc::clone(&shared);
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(delay).await;
                    let held = received.elapsed().as_micros() as u64;
                    let mut applied = shared.applied.borrow_mut();
                    let link = applied.entry((from_agent, to)).or_default();
                    link.0 += held;
                    link.1 += 1;
                    drop(applied);
                    send(&shared, from_agent, to, &bytes);
                });
            }
            None => send(&shared, from_agent, to, &buffer[..length]),
        }
    }
}

/// Sends a datagram from agent `from`'s advertised socket to agent `to`.
fn send(shared: &Shared, from: usize, to: usize, bytes: &[u8]) {
    match shared.sockets[from].try_send_to(bytes, shared.real[to]) {
        Ok(_) => {
            bump(&shared.counters.forwarded);
            count_traffic(shared, (Some(from), Some(to)), bytes.len(), true);
        }
        Err(_) => bump(&shared.counters.send_errors),
    }
}

async fn accept_streams(shared: Rc<Shared>, to: usize, listener: TcpListener) {
    loop {
        let Ok((inbound, peer)) = listener.accept().await else {
            continue;
        };
        bump(&shared.counters.tcp_connections);
        // An agent that binds its outgoing connections is known by its
        // address; one that does not (memberlist), by its process.
        let known = shared.by_ip.borrow().get(&peer.ip()).copied();
        let from = known.or_else(|| connecting_agent(peer, &shared.pids.borrow()));
        if from.is_none() {
            bump(&shared.counters.tcp_unknown_source);
        }
        let (into, out_of) = shared.loss.borrow_mut().tcp(from, to);
        tokio::task::spawn_local(relay_stream(
            Rc::clone(&shared),
            (from, to),
            inbound,
            into,
            out_of,
        ));
    }
}

/// The index of the agent (by its pid in `pids`) that holds the socket
/// whose local address is `peer`: the connection's inode from this
/// namespace's `/proc/self/net/tcp`, then the process with a descriptor
/// on it. A few hundred `readlink`s per connection, which are rare
/// (anti-entropy, push-pull, memberlist's fallback probes).
fn connecting_agent(peer: SocketAddr, pids: &[u32]) -> Option<usize> {
    let IpAddr::V4(ip) = peer.ip() else {
        return None;
    };
    // `/proc/net/tcp` writes an IPv4 address as the hex of its
    // native-endian u32, then the port in hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        peer.port()
    );
    let table = std::fs::read_to_string("/proc/self/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()))
            .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
            .flatten()
    })?;
    pids.iter().position(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.as_os_str() == inode.as_str())
            })
        })
    })
}

/// Linux's first retransmission timeouts: 1 s for a SYN, 200 ms for data.
const SYN_TIMEOUT: Duration = Duration::from_secs(1);
const DATA_TIMEOUT: Duration = Duration::from_millis(200);
/// Retransmissions before the relay gives up on a connection (the kernel
/// tries longer, but every agent's own timeout has fired by then).
const RETRIES: u32 = 6;

/// One direction of a relayed connection: from agent `.0` (when known)
/// to agent `.1`.
type Direction = (Option<usize>, usize);

/// Forwards one connection from agent `from` (when known) to agent `to`;
/// a lost segment costs its retransmission timeout (doubling), as TCP
/// would spend it, instead of the bytes.
async fn relay_stream(
    shared: Rc<Shared>,
    (from, to): Direction,
    inbound: TcpStream,
    mut into: StreamLoss,
    out_of: StreamLoss,
) {
    if !wait_out_losses(&shared, &mut into, SYN_TIMEOUT).await {
        return;
    }
    let there = link_delay(&shared, from, to);
    let back = from.map_or(Duration::ZERO, |from| link_delay(&shared, Some(to), from));
    // The handshake's round trip, which the loopback connection skipped.
    tokio::time::sleep(there + back).await;
    let Ok(outbound) = TcpStream::connect(shared.real[to]).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let back_direction = (Some(to), from);
    tokio::join!(
        copy_lossy(
            Rc::clone(&shared),
            (from, Some(to)),
            there,
            in_read,
            out_write,
            into
        ),
        copy_lossy(
            Rc::clone(&shared),
            back_direction,
            back,
            out_read,
            in_write,
            out_of
        ),
    );
}

/// Waits one retransmission timeout per loss drawn, doubling; false when
/// the connection should be given up.
async fn wait_out_losses(shared: &Shared, loss: &mut StreamLoss, first: Duration) -> bool {
    let mut timeout = first;
    for _ in 0..RETRIES {
        if !loss.lose(shared.started.get().elapsed()) {
            return true;
        }
        bump(&shared.counters.tcp_delayed);
        tokio::time::sleep(timeout).await;
        timeout *= 2;
    }
    false
}

/// Copies one direction of a connection, each chunk held for `delay`
/// after it was read (chunks in flight overlap, as on a long link).
async fn copy_lossy(
    shared: Rc<Shared>,
    (from, to): (Option<usize>, Option<usize>),
    delay: Duration,
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut loss: StreamLoss,
) {
    let (chunks, mut in_flight) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let length = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(length) => length,
            };
            if !wait_out_losses(&shared, &mut loss, DATA_TIMEOUT).await {
                break;
            }
            count_traffic(&shared, (from, to), length, false);
            let due = Instant::now() + delay;
            if chunks.send((due, buffer[..length].to_vec())).is_err() {
                break;
            }
        }
        drop(chunks);
    };
    let write = async {
        while let Some((due, chunk)) = in_flight.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    tokio::join!(read, write);
}
