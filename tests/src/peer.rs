//! Talking to an agent's gossip port as a peer (or an attacker posing as
//! one) would: TCP connections from a loopback address of the test's
//! choice, and anti-entropy frames sealed as agents seal them.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use shoal_protocol::anti_entropy::SyncMessage;
use shoal_protocol::codec;
use shoal_protocol::envelope::{Envelope, PayloadKind, cluster_id};

use crate::unique_loopback;

/// A fresh IPv4 loopback address (see [`unique_loopback`]).
pub fn loopback_v4() -> Ipv4Addr {
    match unique_loopback() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => unreachable!("loopback addresses are IPv4"),
    }
}

/// A TCP connection from `from` (a loopback address of the test's choice)
/// to `to`: how an attacker on another host would look.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let IpAddr::V4(to_ip) = to.ip() else {
        panic!("IPv4 only");
    };
    let address = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by `stream`, which
    // closes it on every path; the addresses live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = address(from, 0);
        if libc::bind(fd, (&raw const local).cast(), length) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = address(to_ip, to.port());
        if libc::connect(fd, (&raw const remote).cast(), length) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// The envelope of a test cluster without `encrypt` (cluster name
/// `shoal`): what a peer seals its frames with.
pub fn plaintext_envelope() -> Envelope {
    Envelope::new(cluster_id("shoal"))
}

/// Writes one anti-entropy frame (a 4-byte big-endian length, then the
/// sealed message), as `agent/src/daemon/anti_entropy.rs` does.
pub fn write_sync_frame(
    stream: &mut TcpStream,
    envelope: &Envelope,
    message: &SyncMessage,
) -> std::io::Result<()> {
    let packet = envelope.seal(PayloadKind::Sync, &codec::encode(message), [7; 24]);
    let mut frame = Vec::with_capacity(4 + packet.len());
    frame.extend_from_slice(&(packet.len() as u32).to_be_bytes());
    frame.extend_from_slice(&packet);
    stream.write_all(&frame)
}

/// Reads one anti-entropy frame and opens it. `Ok(None)`: the agent
/// closed the connection (EOF or reset) before a whole frame.
pub fn read_sync_frame(
    stream: &mut TcpStream,
    envelope: &Envelope,
) -> Result<Option<SyncMessage>, String> {
    let mut length = [0u8; 4];
    if let Err(error) = stream.read_exact(&mut length) {
        return closed_or(error);
    }
    let mut packet = vec![0u8; u32::from_be_bytes(length) as usize];
    if let Err(error) = stream.read_exact(&mut packet) {
        return closed_or(error);
    }
    let opened = envelope
        .open(&packet)
        .map_err(|error| format!("bad envelope: {error}"))?;
    if opened.kind != PayloadKind::Sync {
        return Err(format!("a {:?} envelope on the sync port", opened.kind));
    }
    codec::decode_frame(&opened.payload)
        .map(Some)
        .map_err(|error| format!("undecodable: {error}"))
}

/// `Ok(None)` when `error` says the peer closed the connection.
fn closed_or(error: std::io::Error) -> Result<Option<SyncMessage>, String> {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    match error.kind() {
        UnexpectedEof | ConnectionReset | ConnectionAborted => Ok(None),
        _ => Err(format!("reading a frame: {error}")),
    }
}
