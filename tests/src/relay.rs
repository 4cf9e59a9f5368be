//! A lossy relay in front of an agent, for fault-injection tests.
//!
//! The agent binds its real address and advertises the relay's; peers send
//! their datagrams and TCP connections to the relay, which forwards them to
//! the agent, dropping each datagram with the configured probability (a
//! seeded xorshift, so runs are repeatable). TCP is passed through: it is
//! reliable anyway. The agent's replies go straight to the other agents'
//! relays, so every datagram crosses exactly one relay.
//!
//! [`Relay::start_delayed`] delays each datagram instead, by its source:
//! zones with round trips of their own between them (no netem here).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters and knobs shared with the relay's threads.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Drop probability in parts per million.
    loss_ppm: AtomicU32,
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    stop: AtomicBool,
}

pub struct Relay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Relays `listen` to `target`, dropping `loss` (0.0 to 1.0) of the
    /// datagrams; `seed` drives the drops.
    pub fn start(listen: SocketAddr, target: SocketAddr, loss: f64, seed: u64) -> Relay {
        let stats = Arc::new(RelayStats::default());
        stats.loss_ppm.store(
            (loss.clamp(0.0, 1.0) * 1_000_000.0) as u32,
            Ordering::Relaxed,
        );
        let udp = UdpSocket::bind(listen).expect("bind relay UDP");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let udp_stats = stats.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut rng = seed | 1;
            let mut buffer = vec![0u8; 65536];
            while !udp_stats.stop.load(Ordering::Relaxed) {
                let Ok((length, _from)) = udp.recv_from(&mut buffer) else {
                    continue;
                };
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if (rng % 1_000_000) < u64::from(udp_stats.loss_ppm.load(Ordering::Relaxed)) {
                    udp_stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if udp.send_to(&buffer[..length], target).is_ok() {
                    udp_stats.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let tcp_thread = Self::pass_tcp(listen, target, stats.clone());
        Relay {
            addr: listen,
            stats,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// Relays `listen` to `target`, holding each datagram for
    /// `delay_from(source)` (the sender's real address) before it goes on;
    /// TCP passes through at once.
    pub fn start_delayed(
        listen: SocketAddr,
        target: SocketAddr,
        delay_from: impl Fn(SocketAddr) -> Duration + Send + 'static,
    ) -> Relay {
        let stats = Arc::new(RelayStats::default());
        let udp = UdpSocket::bind(listen).expect("bind relay UDP");
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let sender = udp.try_clone().expect("clone relay socket");
        let (queue_tx, queue_rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        let udp_stats = stats.clone();
        let receive = std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65536];
            while !udp_stats.stop.load(Ordering::Relaxed) {
                let Ok((length, from)) = udp.recv_from(&mut buffer) else {
                    continue;
                };
                let due = Instant::now() + delay_from(from);
                if queue_tx.send((due, buffer[..length].to_vec())).is_err() {
                    break;
                }
            }
        });
        let send_stats = stats.clone();
        let send = std::thread::spawn(move || {
            // Earliest due first; the sequence keeps equal deadlines in order.
            let mut pending: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
            let mut sequence = 0u64;
            while !send_stats.stop.load(Ordering::Relaxed) {
                let wait = pending
                    .peek()
                    .map_or(Duration::from_millis(100), |Reverse(next)| {
                        next.0.saturating_duration_since(Instant::now())
                    });
                match queue_rx.recv_timeout(wait) {
                    Ok((due, bytes)) => {
                        sequence += 1;
                        pending.push(Reverse((due, sequence, bytes)));
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                let now = Instant::now();
                while pending.peek().is_some_and(|Reverse(next)| next.0 <= now) {
                    let Reverse((_, _, bytes)) = pending.pop().expect("peeked");
                    if sender.send_to(&bytes, target).is_ok() {
                        send_stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let tcp_thread = Self::pass_tcp(listen, target, stats.clone());
        Relay {
            addr: listen,
            stats,
            threads: vec![receive, send, tcp_thread],
        }
    }

    /// Accepts TCP connections on `listen` and pipes each to `target`.
    fn pass_tcp(listen: SocketAddr, target: SocketAddr, stats: Arc<RelayStats>) -> JoinHandle<()> {
        let tcp = TcpListener::bind(listen).expect("bind relay TCP");
        tcp.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stats.stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((inbound, _)) => {
                        let _ = inbound.set_nonblocking(false);
                        if let Ok(outbound) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        {
                            pipe(inbound, outbound);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    }

    pub fn set_loss(&self, loss: f64) {
        self.stats.loss_ppm.store(
            (loss.clamp(0.0, 1.0) * 1_000_000.0) as u32,
            Ordering::Relaxed,
        );
    }
}

/// Copies both ways until either side closes (threads end with the
/// connection; anti-entropy connections are short-lived).
fn pipe(inbound: TcpStream, outbound: TcpStream) {
    let timeout = Some(Duration::from_secs(15));
    for stream in [&inbound, &outbound] {
        let _ = stream.set_read_timeout(timeout);
    }
    let (mut in_read, mut out_write) =
        (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
    let (mut out_read, mut in_write) = (outbound, inbound);
    std::thread::spawn(move || copy(&mut in_read, &mut out_write));
    std::thread::spawn(move || copy(&mut out_read, &mut in_write));
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buffer = [0u8; 16384];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stats.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
