//! Queries through [`Responder`] over hand-built snapshots: codes,
//! truncation, limits, health, junk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_protocol::record::{CheckRecord, CheckStatus, ServiceRecord};
use shoal_protocol::{MemberStatus, MemberView, NodeId, NodeRecord};

use super::*;

/// Where the tests' queries come from: inside the default allow-list.
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn check(status: CheckStatus) -> CheckRecord {
    CheckRecord {
        id: "c".into(),
        name: "c".into(),
        kind: "ttl".into(),
        status,
        critical: true,
        notes: String::new(),
        output: String::new(),
    }
}

fn instance(id: &str, address: &str, status: CheckStatus) -> ServiceRecord {
    ServiceRecord {
        id: id.into(),
        name: "web".into(),
        address: address.into(),
        port: 8080,
        tags: vec!["v1".into()],
        meta: BTreeMap::new(),
        checks: vec![check(status)],
    }
}

fn member(index: u8, status: MemberStatus, services: Vec<ServiceRecord>) -> MemberView {
    let id = NodeId {
        addr: format!("127.0.0.{index}:7946").parse().unwrap(),
        generation: 1,
    };
    let mut record = NodeRecord::new(id, format!("node-{index}"));
    record.datacenter = "dc1".into();
    record.services = services;
    MemberView {
        id,
        status,
        record: Some(record),
    }
}

fn responder(members: Vec<MemberView>, config: DnsConfig) -> Responder {
    Responder::over_members(config, members)
}

fn query(name: &str, kind: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(4242)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    if edns {
        let mut options = Edns::new();
        options.set_max_payload(1232);
        message.set_edns(options);
    }
    message.to_vec().unwrap()
}

fn ask(responder: &Responder, packet: &[u8], transport: Transport) -> Message {
    match responder.respond(packet, transport, LOCAL) {
        Outcome::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        _ => panic!("no reply"),
    }
}

fn addresses(reply: &Message) -> Vec<String> {
    let mut out: Vec<String> = reply
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn health_decides_like_the_catalog() {
    let members = vec![
        member(
            1,
            MemberStatus::Alive,
            vec![instance("a", "10.0.0.1", CheckStatus::Passing)],
        ),
        member(
            2,
            MemberStatus::Alive,
            vec![instance("b", "10.0.0.2", CheckStatus::Warning)],
        ),
        member(
            3,
            MemberStatus::Alive,
            vec![instance("c", "10.0.0.3", CheckStatus::Critical)],
        ),
        // A failed node: serfHealth critical.
        member(
            4,
            MemberStatus::Failed,
            vec![instance("d", "10.0.0.4", CheckStatus::Passing)],
        ),
    ];
    let packet = query("web.service.consul.", RecordType::A, false);
    let default = responder(members.clone(), DnsConfig::default());
    let reply = ask(&default, &packet, Transport::Udp);
    assert_eq!(reply.id(), 4242);
    assert!(reply.authoritative());
    assert_eq!(addresses(&reply), ["10.0.0.1", "10.0.0.2"]);
    let strict = responder(
        members,
        DnsConfig {
            only_passing: true,
            ..DnsConfig::default()
        },
    );
    assert_eq!(
        addresses(&ask(&strict, &packet, Transport::Udp)),
        ["10.0.0.1"]
    );
}

#[test]
fn udp_answers_are_cut_to_fit_with_tc_and_tcp_carries_all() {
    let services = (1..=60)
        .map(|i| {
            instance(
                &format!("web-{i}"),
                &format!("10.0.1.{i}"),
                CheckStatus::Passing,
            )
        })
        .collect();
    let many = responder(
        vec![member(1, MemberStatus::Alive, services)],
        DnsConfig::default(),
    );
    let classic = ask(
        &many,
        &query("web.service.consul.", RecordType::A, false),
        Transport::Udp,
    );
    assert!(classic.truncated());
    assert!((1..60).contains(&classic.answers().len()));
    let srv = ask(
        &many,
        &query("web.service.consul.", RecordType::SRV, true),
        Transport::Udp,
    );
    assert!(srv.truncated() && srv.additionals().is_empty());
    let tcp = ask(
        &many,
        &query("web.service.consul.", RecordType::SRV, false),
        Transport::Tcp,
    );
    assert!(!tcp.truncated());
    assert_eq!((tcp.answers().len(), tcp.additionals().len()), (60, 60));
    assert!(many.counters.truncated.load(Ordering::Relaxed) >= 2);

    let limited = responder(
        many.snapshot_rx.borrow().members.to_vec(),
        DnsConfig {
            udp_answer_limit: 3,
            ..DnsConfig::default()
        },
    );
    let three = ask(
        &limited,
        &query("web.service.consul.", RecordType::A, false),
        Transport::Udp,
    );
    assert_eq!(three.answers().len(), 3);
    assert!(!three.truncated());
}

#[test]
fn codes_for_unknown_outside_and_junk() {
    let members = vec![member(
        1,
        MemberStatus::Alive,
        vec![instance("a", "", CheckStatus::Passing)],
    )];
    let dns = responder(members, DnsConfig::default());
    let unknown = ask(
        &dns,
        &query("nope.service.consul.", RecordType::A, false),
        Transport::Udp,
    );
    assert_eq!(unknown.response_code(), ResponseCode::NXDomain);
    assert_eq!(unknown.name_servers()[0].record_type(), RecordType::SOA);
    let outside = ask(
        &dns,
        &query("example.com.", RecordType::A, false),
        Transport::Udp,
    );
    assert_eq!(outside.response_code(), ResponseCode::Refused);
    let node = ask(
        &dns,
        &query("node-1.node.shoal.", RecordType::A, false),
        Transport::Udp,
    );
    assert_eq!(addresses(&node), ["127.0.0.1"]);

    // A header and garbage: FORMERR with the same id; no header: nothing.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0x3f, b'x']);
    let formerr = ask(&dns, &junk, Transport::Udp);
    assert_eq!(
        (formerr.id(), formerr.response_code()),
        (0x1234, ResponseCode::FormErr)
    );
    assert!(matches!(
        dns.respond(&[1, 2, 3], Transport::Udp, LOCAL),
        Outcome::Drop
    ));
    let mut response =
        Message::from_vec(&query("web.service.consul.", RecordType::A, false)).unwrap();
    response.set_message_type(MessageType::Response);
    assert!(matches!(
        dns.respond(&response.to_vec().unwrap(), Transport::Udp, LOCAL),
        Outcome::Drop
    ));
    assert_eq!(dns.counters.malformed.load(Ordering::Relaxed), 3);
}

#[test]
fn clients_outside_the_allow_list_and_protected_catalogs_are_refused() {
    let members = vec![member(1, MemberStatus::Alive, vec![])];
    let config = DnsConfig {
        recursors: vec!["127.0.0.1:9".parse().unwrap()],
        ..DnsConfig::default()
    };
    let dns = responder(members.clone(), config);
    let stranger: IpAddr = "192.0.2.1".parse().unwrap();
    for name in ["node-1.node.consul.", "example.com."] {
        let packet = query(name, RecordType::A, false);
        let Outcome::Reply(bytes) = dns.respond(&packet, Transport::Udp, stranger) else {
            panic!("{name}: no REFUSED");
        };
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.response_code(), ResponseCode::Refused, "{name}");
        assert!(reply.answers().is_empty());
    }
    assert_eq!(dns.counters.client_refused.load(Ordering::Relaxed), 2);
    assert_eq!(dns.counters.forwarded.load(Ordering::Relaxed), 0);

    let guarded = responder(
        members,
        DnsConfig {
            protect_reads: true,
            ..DnsConfig::default()
        },
    );
    let reply = ask(
        &guarded,
        &query("node-1.node.consul.", RecordType::A, false),
        Transport::Tcp,
    );
    assert_eq!(reply.response_code(), ResponseCode::Refused);
    assert_eq!(
        guarded.counters.protected_refused.load(Ordering::Relaxed),
        1
    );
}

#[test]
fn a_rate_limited_client_gets_an_empty_truncated_reply() {
    let dns = responder(
        vec![member(1, MemberStatus::Alive, vec![])],
        DnsConfig::default(),
    );
    let packet = query("node-1.node.consul.", RecordType::A, true);
    let reply = Message::from_vec(&dns.truncated_empty(&packet).unwrap()).unwrap();
    assert!(reply.truncated());
    assert!(reply.answers().is_empty());
    assert_eq!(reply.id(), 4242);
    assert_eq!(reply.queries().len(), 1);
    assert!(dns.truncated_empty(&[1, 2, 3]).is_none());
}

/// The PTR targets of a reverse query, and its code.
fn ptr(responder: &Responder, name: &str) -> (ResponseCode, Vec<String>) {
    let reply = ask(
        responder,
        &query(name, RecordType::PTR, false),
        Transport::Udp,
    );
    let targets = reply
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::PTR(target) => Some(target.to_string()),
            _ => None,
        })
        .collect();
    (reply.response_code(), targets)
}

#[test]
fn reverse_names_point_to_nodes_then_services_v4_and_v6() {
    let mut v6_node = member(2, MemberStatus::Alive, Vec::new());
    let v6: std::net::SocketAddr = "[fd00::2]:7946".parse().unwrap();
    v6_node.id.addr = v6;
    let record = v6_node.record.as_mut().unwrap();
    record.id.addr = v6;
    let mut v6_service = instance("api-1", "fd00::99", CheckStatus::Passing);
    v6_service.name = "api".into();
    let mut hidden = instance("qw-1", "10.0.0.9", CheckStatus::Passing);
    hidden.name = "queue_worker".into();
    record.services = vec![v6_service, hidden];
    let members = vec![
        member(
            1,
            MemberStatus::Alive,
            vec![instance("a", "10.0.0.1", CheckStatus::Critical)],
        ),
        v6_node,
    ];
    let dns = responder(members, DnsConfig::default());
    let ok = ResponseCode::NoError;
    assert_eq!(
        ptr(&dns, "1.0.0.127.in-addr.arpa."),
        (ok, vec!["node-1.node.dc1.consul.".to_string()])
    );
    let nibbles = |ip: &str| {
        let ip: std::net::Ipv6Addr = ip.parse().unwrap();
        let hex = format!("{:032x}", u128::from(ip));
        let reversed: Vec<String> = hex.chars().rev().map(String::from).collect();
        format!("{}.ip6.arpa.", reversed.join("."))
    };
    assert_eq!(
        ptr(&dns, &nibbles("fd00::2")),
        (ok, vec!["node-2.node.dc1.consul.".to_string()])
    );
    // Services by their own address, whatever their health (as Consul).
    assert_eq!(
        ptr(&dns, "1.0.0.10.in-addr.arpa."),
        (ok, vec!["web.service.consul.".to_string()])
    );
    assert_eq!(
        ptr(&dns, &nibbles("fd00::99")),
        (ok, vec!["api.service.consul.".to_string()])
    );
    // A name DNS can't serve, and addresses we don't know: not ours.
    for unknown in ["9.0.0.10.in-addr.arpa.", "1.2.0.192.in-addr.arpa."] {
        assert_eq!(ptr(&dns, unknown), (ResponseCode::Refused, vec![]));
    }
    // Behind acl.protect_reads without dns.serve_with_protect_reads, the
    // catalog is not revealed through reverse names either.
    let protected = responder(
        vec![member(1, MemberStatus::Alive, Vec::new())],
        DnsConfig {
            protect_reads: true,
            ..DnsConfig::default()
        },
    );
    assert_eq!(
        ptr(&protected, "1.0.0.127.in-addr.arpa."),
        (ResponseCode::Refused, vec![])
    );
}

/// `dns.near_first`: a service's instances nearest this agent first (by the
/// coordinates the core loop publishes), instances without a coordinate
/// last; off (the default), the order is random.
#[test]
fn near_first_answers_nearest_instances_first() {
    use shoal_protocol::coordinate::{Coordinate, CoordinateConfig};
    let at = |ms: f64| {
        let mut coordinate = Coordinate::new(&CoordinateConfig::default());
        coordinate.vec[0] = ms / 1000.0;
        coordinate
    };
    let members: Vec<MemberView> = (1..=5)
        .map(|i| {
            let address = format!("10.0.0.{i}");
            member(
                i,
                MemberStatus::Alive,
                vec![instance(&format!("w{i}"), &address, CheckStatus::Passing)],
            )
        })
        .collect();
    // node-1 is this agent; node-3 has no coordinate.
    let coordinates = crate::coordinates::NodeCoordinates::new(
        "node-1".into(),
        vec![
            ("node-1".into(), at(0.0)),
            ("node-2".into(), at(40.0)),
            ("node-4".into(), at(2.0)),
            ("node-5".into(), at(15.0)),
        ],
    );
    let in_order = |reply: &Message| -> Vec<String> {
        reply
            .answers()
            .iter()
            .filter_map(|record| match record.data() {
                RData::A(a) => Some(a.to_string()),
                _ => None,
            })
            .collect()
    };
    let packet = query("web.service.consul.", RecordType::A, false);
    let mut near = responder(
        members.clone(),
        DnsConfig {
            near_first: true,
            ..DnsConfig::default()
        },
    );
    let (_status_tx, status_rx) = watch::channel(Arc::new(CoreCounters {
        coordinates: Arc::new(coordinates.clone()),
        ..CoreCounters::default()
    }));
    near.status_rx = status_rx.clone();
    for _ in 0..5 {
        assert_eq!(
            in_order(&ask(&near, &packet, Transport::Udp)),
            ["10.0.0.1", "10.0.0.4", "10.0.0.5", "10.0.0.2", "10.0.0.3"]
        );
    }
    // Off, the same coordinates don't order anything: some answer of 40
    // differs from the nearest-first order.
    let mut random = responder(members, DnsConfig::default());
    random.status_rx = status_rx;
    let orders: BTreeSet<Vec<String>> = (0..40)
        .map(|_| in_order(&ask(&random, &packet, Transport::Udp)))
        .collect();
    assert!(orders.len() > 1, "{orders:?}");
}
