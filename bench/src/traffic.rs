//! What each agent sends, UDP and TCP apart: a packet socket on the private
//! loopback sees every packet once on its way out, and its source address
//! says which agent sent it (every agent has an address of its own). So a
//! hotspot (one agent, a seed say, sending far more than the median one)
//! shows, for Serf as for Shoal, without either having to count.
//!
//! One exception: Serf (memberlist) dials its TCP push-pull from whatever
//! address the kernel picks, 127.0.0.1 on loopback, so the initiator's half
//! of a Serf exchange can't be told apart by address. Those bytes are
//! spread evenly over Serf's agents (each initiates push-pulls on the same
//! timer, to a random peer) and reported apart (`tcp_unattributed`).
//! Shoal dials from its own address.
//!
//! Bytes count as the loopback counters do: the IP packet, IP and UDP or
//! TCP headers included.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Bytes added to each IP packet's length. The loopback's own counters
/// (`/proc/net/dev`) count the IP packet alone (the driver strips the
/// link header before it counts), and so do we.
const LINK_HEADER: u64 = 0;
/// Both systems' gossip port in the benchmark (see `System::spawn`).
const GOSSIP_PORT: u16 = 7946;

/// Packets and bytes one address sent, by protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sent {
    pub udp_bytes: u64,
    pub udp_packets: u64,
    pub tcp_bytes: u64,
    pub tcp_packets: u64,
}

/// A running capture; [`Capture::stop`] returns what each source sent.
pub struct Capture {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<HashMap<Ipv4Addr, Sent>>>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

impl Capture {
    /// Starts counting outgoing IPv4 packets on this network namespace's
    /// loopback. Needs root (CAP_NET_RAW).
    pub fn start() -> Result<Capture> {
        // ETH_P_ALL: only such sockets see packets on their way out (a
        // socket for ETH_P_IP alone sees them only as they come back in).
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(protocol)) };
        if fd < 0 {
            bail!(
                "packet socket: {} (run as root)",
                std::io::Error::last_os_error()
            );
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: fd is a valid socket; timeout outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let thread = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || read_loop(fd, &stop, &counts))
        };
        Ok(Capture {
            stop,
            counts,
            thread: Some(thread),
            started: Instant::now(),
        })
    }

    /// Stops and returns what each source address sent, and over how long.
    pub fn stop(mut self) -> (HashMap<Ipv4Addr, Sent>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let elapsed = self.started.elapsed();
        let counts = std::mem::take(&mut *self.counts.lock().expect("capture lock"));
        (counts, elapsed)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_loop(fd: i32, stop: &AtomicBool, counts: &Mutex<HashMap<Ipv4Addr, Sent>>) {
    let mut buffer = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buffer and from are valid for the lengths given.
        let read = unsafe {
            libc::recvfrom(
                fd,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_TRUNC,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if read < 0 {
            continue; // the timeout: look at `stop` again
        }
        // Loopback shows each packet twice: going out, and coming in.
        if from.sll_pkttype != libc::PACKET_OUTGOING
            || from.sll_protocol != (libc::ETH_P_IP as u16).to_be()
        {
            continue;
        }
        let seen = (read as usize).min(buffer.len());
        if let Some((source, protocol, length)) = parse_ipv4(&buffer[..seen]) {
            let mut counts = counts.lock().expect("capture lock");
            let sent = counts.entry(source).or_default();
            let bytes = u64::from(length) + LINK_HEADER;
            match protocol {
                17 => {
                    sent.udp_bytes += bytes;
                    sent.udp_packets += 1;
                }
                6 => {
                    sent.tcp_bytes += bytes;
                    sent.tcp_packets += 1;
                }
                _ => {}
            }
        }
    }
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
}

/// Source address, protocol number and total length of an IPv4 packet
/// of the gossip: UDP from the gossip port, TCP from or to it (anti-entropy
/// / push-pull). The agents' HTTP and RPC traffic (the benchmark's own
/// queries) is left out.
fn parse_ipv4(packet: &[u8]) -> Option<(Ipv4Addr, u8, u16)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let ports = packet.get(header..header + 4)?;
    let source_port = u16::from_be_bytes([ports[0], ports[1]]);
    let destination_port = u16::from_be_bytes([ports[2], ports[3]]);
    let protocol = packet[9];
    let gossip = match protocol {
        17 => source_port == GOSSIP_PORT,
        6 => source_port == GOSSIP_PORT || destination_port == GOSSIP_PORT,
        _ => false,
    };
    if !gossip {
        return None;
    }
    let length = u16::from_be_bytes([packet[2], packet[3]]);
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((source, protocol, length))
}

/// Per-agent rates (per second) of one system, with the unattributed TCP
/// bytes spread evenly (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PerAgent {
    /// `(agent, udp B/s, udp pkt/s, tcp B/s, tcp pkt/s)`.
    pub rows: Vec<(String, f64, f64, f64, f64)>,
    /// TCP bytes and packets per second from addresses that are no agent's,
    /// before they were spread.
    pub tcp_unattributed: (f64, f64),
}

/// What each of `agents` (name, address) sent over `elapsed`.
pub fn per_agent(
    counts: &HashMap<Ipv4Addr, Sent>,
    agents: &[(String, Ipv4Addr)],
    elapsed: Duration,
) -> PerAgent {
    let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let ours: std::collections::HashSet<Ipv4Addr> = agents.iter().map(|(_, ip)| *ip).collect();
    // Another system's agents are not in this capture's window, but the
    // unattributed sources are what nobody bound: 127.0.0.1 and the like.
    let (mut tcp_bytes, mut tcp_packets) = (0u64, 0u64);
    for (ip, sent) in counts {
        if !ours.contains(ip) && !is_agent_range(*ip) {
            tcp_bytes += sent.tcp_bytes;
            tcp_packets += sent.tcp_packets;
        }
    }
    let share = |total: u64| total as f64 / agents.len().max(1) as f64 / seconds;
    let rows = agents
        .iter()
        .map(|(name, ip)| {
            let sent = counts.get(ip).copied().unwrap_or_default();
            (
                name.clone(),
                sent.udp_bytes as f64 / seconds,
                sent.udp_packets as f64 / seconds,
                sent.tcp_bytes as f64 / seconds + share(tcp_bytes),
                sent.tcp_packets as f64 / seconds + share(tcp_packets),
            )
        })
        .collect();
    PerAgent {
        rows,
        tcp_unattributed: (tcp_bytes as f64 / seconds, tcp_packets as f64 / seconds),
    }
}

/// The benchmark's agent addresses: 127.10.0.0/16 (Shoal), 127.20.0.0/16
/// (Serf); see `System::ip`.
fn is_agent_range(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 127 && (b == 10 || b == 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_source_protocol_and_length() {
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&28u16.to_be_bytes());
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[127, 10, 0, 3]);
        packet[20..22].copy_from_slice(&GOSSIP_PORT.to_be_bytes());
        assert_eq!(
            parse_ipv4(&packet),
            Some((Ipv4Addr::new(127, 10, 0, 3), 17, 28))
        );
        assert_eq!(parse_ipv4(&packet[..10]), None);
        // An HTTP answer (from port 8500) is no gossip.
        packet[9] = 6;
        packet[20..22].copy_from_slice(&8500u16.to_be_bytes());
        assert_eq!(parse_ipv4(&packet), None);
        packet[22..24].copy_from_slice(&GOSSIP_PORT.to_be_bytes());
        assert!(parse_ipv4(&packet).is_some(), "TCP to the gossip port");
    }

    #[test]
    fn unattributed_tcp_is_spread_evenly() {
        let a = Ipv4Addr::new(127, 20, 0, 1);
        let b = Ipv4Addr::new(127, 20, 0, 2);
        let mut counts = HashMap::new();
        counts.insert(
            a,
            Sent {
                udp_bytes: 100,
                udp_packets: 1,
                ..Sent::default()
            },
        );
        counts.insert(
            Ipv4Addr::LOCALHOST,
            Sent {
                tcp_bytes: 40,
                tcp_packets: 4,
                ..Sent::default()
            },
        );
        let agents = [("a".to_string(), a), ("b".to_string(), b)];
        let rates = per_agent(&counts, &agents, Duration::from_secs(2));
        assert_eq!(rates.rows[0], ("a".into(), 50.0, 0.5, 10.0, 1.0));
        assert_eq!(rates.rows[1], ("b".into(), 0.0, 0.0, 10.0, 1.0));
        assert_eq!(rates.tcp_unattributed, (20.0, 2.0));
    }
}
