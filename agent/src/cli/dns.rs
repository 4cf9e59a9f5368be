//! `shoal dns lookup NAME [TYPE]`: asks the agent's DNS interface, over
//! UDP and (when the answer is truncated) TCP, and prints the reply as
//! `dig` would: status, flags, and each section's records.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// How long to wait for the agent's reply, per try.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct DnsArgs {
    #[command(subcommand)]
    pub command: DnsCommand,
}

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Print what the agent answers for NAME (e.g. web.service.consul).
    Lookup(LookupArgs),
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The name to look up, such as web.service.consul or _web._tcp.service.consul.
    pub name: String,
    /// Record type: A, AAAA, SRV, SOA, ANY, ... [default: SRV for
    /// `_service._proto` names, else A].
    pub record_type: Option<String>,
    /// The agent's DNS address.
    #[arg(
        long,
        env = "SHOAL_DNS_ADDR",
        default_value = crate::config::DEFAULT_DNS_ADDR,
        value_name = "IP:PORT"
    )]
    pub dns_addr: String,
    /// Ask over TCP only.
    #[arg(long)]
    pub tcp: bool,
}

pub fn run(args: &DnsArgs) -> anyhow::Result<()> {
    match &args.command {
        DnsCommand::Lookup(lookup) => lookup_and_print(lookup),
    }
}

fn lookup_and_print(args: &LookupArgs) -> anyhow::Result<()> {
    let server: SocketAddr = crate::config::parse_addr("--dns-addr", &args.dns_addr, 8600)?;
    let record_type = match &args.record_type {
        Some(text) => RecordType::from_str(&text.to_ascii_uppercase())
            .ok()
            .filter(|kind| !matches!(kind, RecordType::Unknown(_)))
            .with_context(|| format!("`{text}` is not a record type (A, AAAA, SRV, ...)"))?,
        None if args.name.starts_with('_') => RecordType::SRV,
        None => RecordType::A,
    };
    let mut name = Name::from_ascii(&args.name)
        .with_context(|| format!("`{}` is not a DNS name", args.name))?;
    name.set_fqdn(true);
    let mut query = Message::new();
    query
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    query.set_edns(edns);
    let bytes = query.to_vec()?;

    let (reply, transport) = if args.tcp {
        (over_tcp(server, &bytes)?, "tcp")
    } else {
        let reply = over_udp(server, &bytes)?;
        if reply.truncated() {
            (
                over_tcp(server, &bytes)?,
                "tcp, after a truncated udp reply",
            )
        } else {
            (reply, "udp")
        }
    };
    if reply.id() != query.id() {
        bail!("the reply from {server} answers another query");
    }
    print(&reply, server, transport);
    Ok(())
}

fn over_udp(server: SocketAddr, query: &[u8]) -> anyhow::Result<Message> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.connect(server)?;
    let mut buffer = vec![0u8; 65535];
    for _ in 0..3 {
        socket.send(query)?;
        if let Ok(length) = socket.recv(&mut buffer) {
            return Ok(Message::from_vec(&buffer[..length])?);
        }
    }
    bail!("no DNS reply from {server} over UDP (is the agent running with dns_addr = {server}?)")
}

fn over_tcp(server: SocketAddr, query: &[u8]) -> anyhow::Result<Message> {
    let mut stream = TcpStream::connect_timeout(&server, TIMEOUT)
        .with_context(|| format!("cannot connect to the agent's DNS at {server} over TCP"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut framed = u16::try_from(query.len())?.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed)?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut reply)?;
    Ok(Message::from_vec(&reply)?)
}

fn print(reply: &Message, server: SocketAddr, transport: &str) {
    let mut flags = vec!["qr"];
    for (set, flag) in [
        (reply.authoritative(), "aa"),
        (reply.truncated(), "tc"),
        (reply.recursion_desired(), "rd"),
        (reply.recursion_available(), "ra"),
    ] {
        if set {
            flags.push(flag);
        }
    }
    println!(
        "status: {}, flags: {}; from {server} over {transport}",
        code_name(reply.response_code()),
        flags.join(" ")
    );
    for (title, records) in [
        ("ANSWER", reply.answers()),
        ("AUTHORITY", reply.name_servers()),
        ("ADDITIONAL", reply.additionals()),
    ] {
        if records.is_empty() {
            continue;
        }
        println!("\n;; {title} SECTION:");
        for record in records {
            println!("{record}");
        }
    }
}

/// The code as `dig` prints it.
fn code_name(code: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode;
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => other.to_string(),
    }
}
