//! A lossy relay in front of an agent, for fault-injection tests.
//!
//! The agent binds its real address and advertises the relay's; peers send
//! their datagrams and TCP connections to the relay, which forwards them to
//! the agent, dropping each datagram with the configured probability (a
//! seeded xorshift, so runs are repeatable). TCP is passed through: it is
//! reliable anyway. The agent's replies go straight to the other agents'
//! relays, so every datagram crosses exactly one relay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
        let tcp = TcpListener::bind(listen).expect("bind relay TCP");
        tcp.set_nonblocking(true).unwrap();
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
        let tcp_stats = stats.clone();
        let tcp_thread = std::thread::spawn(move || {
            while !tcp_stats.stop.load(Ordering::Relaxed) {
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
        });
        Relay {
            addr: listen,
            stats,
            threads: vec![udp_thread, tcp_thread],
        }
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
