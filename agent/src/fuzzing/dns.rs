//! The DNS query path: a packet from anyone on the network, read by
//! `hickory-proto`, placed by `dns::names`, answered from a catalog and
//! encoded (with truncation) by `dns::respond`. The same packet goes through
//! every door a client can reach: UDP and TCP, from an allowed client and
//! from a refused one, the rate limiter's empty TC reply and the SERVFAIL
//! of a failed forward, under two configurations.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use shoal_protocol::record::{CheckRecord, CheckStatus, ServiceRecord};
use shoal_protocol::{MemberStatus, MemberView, NodeId, NodeRecord};

use crate::config::DnsConfig;
use crate::dns::respond::{Outcome, Responder, Transport, servfail};

/// Inside the default `dns.allow_clients` (loopback).
const ALLOWED: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Outside it (TEST-NET-3): answered REFUSED.
const REFUSED: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
/// The largest UDP reply `dns::respond` offers (its EDNS payload).
const MAX_UDP_REPLY: usize = 4096;

/// Answers `data` as a DNS query every way the server can.
pub fn dns(data: &[u8]) {
    for responder in responders() {
        for (transport, client) in [
            (Transport::Udp, ALLOWED),
            (Transport::Tcp, ALLOWED),
            (Transport::Udp, REFUSED),
        ] {
            if let Outcome::Reply(reply) = responder.respond(data, transport, client) {
                check_reply(data, &reply, transport);
            }
        }
        if let Some(reply) = responder.truncated_empty(data) {
            check_reply(data, &reply, Transport::Udp);
        }
    }
    if let Some(reply) = servfail(data) {
        check_reply(data, &reply, Transport::Tcp);
    }
}

/// What any reply must be: a response a client can read, to the query's
/// id, within what the transport carries.
fn check_reply(query: &[u8], reply: &[u8], transport: Transport) {
    let limit = match transport {
        Transport::Udp => MAX_UDP_REPLY,
        Transport::Tcp => usize::from(u16::MAX),
    };
    assert!(
        reply.len() <= limit,
        "a {transport:?} reply of {} bytes",
        reply.len()
    );
    let message = Message::from_vec(reply).expect("our reply decodes");
    assert_eq!(message.message_type(), MessageType::Response);
    assert_eq!(message.id().to_be_bytes(), query[..2], "the query's id");
}

/// The default configuration (domains `consul` and `shoal`, no recursors),
/// and one with recursors, one domain, only passing instances and a UDP
/// answer limit of 3.
fn responders() -> &'static [Responder; 2] {
    static RESPONDERS: OnceLock<[Responder; 2]> = OnceLock::new();
    RESPONDERS.get_or_init(|| {
        let variant = DnsConfig {
            domain: "cluster.internal".into(),
            alt_domain: None,
            only_passing: true,
            udp_answer_limit: 3,
            recursors: vec!["127.0.0.1:53".parse().expect("an address")],
            ..DnsConfig::default()
        };
        [responder(DnsConfig::default()), responder(variant)]
    })
}

fn responder(config: DnsConfig) -> Responder {
    Responder::over_members(config, catalog())
}

/// Four nodes (IPv4 and IPv6, alive, failed, one not yet known), with
/// instances of `web` in every health, one with an IPv6 address, enough
/// of them to be truncated over UDP, a service on the node's address and
/// one DNS can't serve (`_` in its name).
fn catalog() -> Vec<MemberView> {
    let service = |id: String, name: &str, address: &str, status: CheckStatus| ServiceRecord {
        id: id.clone(),
        name: name.into(),
        address: address.into(),
        port: 8080,
        tags: vec!["v1".into(), format!("id-{id}")],
        meta: BTreeMap::from([("team".into(), "pay".into())]),
        checks: vec![CheckRecord {
            id: format!("{id}-check"),
            name: "http".into(),
            kind: "http".into(),
            status,
            critical: true,
            notes: String::new(),
            output: String::new(),
        }],
    };
    let node = |addr: &str, name: &str, status: MemberStatus, services: Vec<ServiceRecord>| {
        let id = NodeId::seed(addr.parse().expect("a socket address"));
        let record = NodeRecord {
            datacenter: "dc1".into(),
            services,
            ..NodeRecord::new(id, name)
        };
        let record = Some(record);
        MemberView { id, status, record }
    };
    let many: Vec<ServiceRecord> = (0..40)
        .map(|i| {
            service(
                format!("web-{i}"),
                "web",
                &format!("10.0.1.{i}"),
                CheckStatus::Passing,
            )
        })
        .collect();
    let mut unknown = node("127.0.0.9:7946", "node-9", MemberStatus::Alive, Vec::new());
    unknown.record = None;
    vec![
        node(
            "127.0.0.1:7946",
            "node-1",
            MemberStatus::Alive,
            vec![
                service("web-a".into(), "web", "10.0.0.1", CheckStatus::Passing),
                service("web-b".into(), "web", "10.0.0.2", CheckStatus::Warning),
                service("web-c".into(), "web", "10.0.0.3", CheckStatus::Critical),
                service("web-6".into(), "web", "fd00::6", CheckStatus::Passing),
                service("db-1".into(), "db", "", CheckStatus::Passing),
                service("odd-1".into(), "odd_name", "10.0.0.9", CheckStatus::Passing),
            ],
        ),
        node("[::1]:7946", "node-2", MemberStatus::Alive, many),
        node(
            "127.0.0.3:7946",
            "node-3",
            MemberStatus::Failed,
            vec![service(
                "web-f".into(),
                "web",
                "10.0.0.4",
                CheckStatus::Passing,
            )],
        ),
        unknown,
    ]
}
