//! The seed corpora of the `dns` and `filter` targets, written by
//! `cargo test -p shoal-agent --test fuzz_regressions -- --ignored`: real
//! queries of every kind Shoal answers and the malformed ones a network
//! brings, and filters using every operator, selector and quoting form,
//! nested and long, valid and not.

use std::path::Path;

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::Name;
use hickory_proto::rr::RecordType::{self, A, AAAA, ANY, MX, NS, PTR, SOA, SRV, TXT};

use super::regressions;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = regressions(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), data).unwrap();
}

/// A query as `dig` sends it: recursion desired, EDNS with `payload` when
/// given.
fn query(name: &str, kind: RecordType, payload: Option<u16>) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(0x5e01)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    if let Some(payload) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// A header: id 0x5e02, `flags`, then the four section counts.
fn header(flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut out = vec![0x5e, 0x02];
    out.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// `name` in wire labels (no compression).
fn labels(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|label| !label.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

const RD: u16 = 0x0100;
/// Type and class of a question: A or SRV, IN.
const A_IN: [u8; 4] = [0, 1, 0, 1];
const SRV_IN: [u8; 4] = [0, 33, 0, 1];

/// An OPT record: `payload`, the DO bit, and a cookie option.
fn opt_with_cookie(payload: u16) -> Vec<u8> {
    let mut out = vec![0, 0, 41];
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x80, 0]);
    out.extend_from_slice(&[0, 12, 0, 10, 0, 8]);
    out.extend_from_slice(b"cookie!!");
    out
}

pub fn write_dns_seeds() {
    let normal: &[(&str, &str, RecordType, Option<u16>)] = &[
        ("a-service", "web.service.consul.", A, None),
        ("a-service-edns", "web.service.consul.", A, Some(1232)),
        (
            "aaaa-service-alt-domain",
            "web.service.shoal.",
            AAAA,
            Some(1232),
        ),
        ("a-service-any-case", "WEB.Service.CONSUL.", A, None),
        ("a-service-tag", "id-web-a.web.service.consul.", A, None),
        ("a-service-dc", "web.service.dc1.consul.", A, None),
        ("a-service-unknown", "nope.service.consul.", A, None),
        ("a-service-underscore", "odd_name.service.consul.", A, None),
        (
            "a-service-other-domain",
            "web.service.cluster.internal.",
            A,
            None,
        ),
        (
            "a-service-small-payload",
            "web.service.consul.",
            A,
            Some(100),
        ),
        ("srv-rfc2782", "_web._tcp.service.consul.", SRV, Some(4096)),
        ("srv-rfc2782-tag", "_web._v1.service.dc1.consul.", SRV, None),
        ("srv-tag-dc", "v1.web.service.dc1.consul.", SRV, None),
        ("srv-node-address", "db.service.consul.", SRV, None),
        ("a-node", "node-1.node.consul.", A, None),
        ("aaaa-node-dc", "node-2.node.dc1.consul.", AAAA, None),
        ("txt-node", "node-1.node.consul.", TXT, None),
        ("any-service", "web.service.consul.", ANY, None),
        ("mx-service", "web.service.consul.", MX, None),
        ("soa-apex", "consul.", SOA, None),
        ("ns-apex-alt", "shoal.", NS, None),
        ("a-addr-v4", "7f000001.addr.consul.", A, None),
        (
            "aaaa-addr-v6",
            "fd000000000000000000000000000006.addr.dc1.consul.",
            AAAA,
            None,
        ),
        ("a-unknown-kind", "web.query.consul.", A, None),
        ("ptr-v4", "1.0.0.10.in-addr.arpa.", PTR, None),
        (
            "ptr-v6",
            "6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            PTR,
            None,
        ),
        ("ptr-partial-zone", "10.in-addr.arpa.", PTR, None),
        ("a-outside", "example.com.", A, Some(1232)),
        ("a-root", ".", NS, None),
    ];
    for (file, name, kind, payload) in normal {
        write(
            "dns",
            &format!("seed-{file}"),
            &query(name, *kind, *payload),
        );
    }
    let long_label = "a".repeat(63);
    let long_name = format!(
        "{long_label}.{long_label}.{long_label}.{}.consul.",
        "b".repeat(54)
    );
    write("dns", "seed-a-longest-name", &query(&long_name, A, None));

    // EDNS by hand: the DO bit and a cookie option; a version 1.
    let mut cookie = header(RD, [1, 0, 0, 1]);
    cookie.extend(labels("web.service.consul"));
    cookie.extend(SRV_IN);
    cookie.extend(opt_with_cookie(4096));
    write("dns", "seed-srv-edns-do-cookie", &cookie);
    let mut version = cookie.clone();
    let ttl_at = version.len() - 12 - 6;
    version[ttl_at + 1] = 1;
    write("dns", "seed-edns-version-1", &version);
    let mut two_opts = header(RD, [1, 0, 0, 2]);
    two_opts.extend(labels("web.service.consul"));
    two_opts.extend(A_IN);
    two_opts.extend(opt_with_cookie(1232));
    two_opts.extend(opt_with_cookie(512));
    write("dns", "seed-edns-twice", &two_opts);

    // Compression: an answer section in a query whose name points at the
    // question (offset 12); a second question pointing at the first; a
    // pointer to itself; one past the end; a label then a pointer.
    let mut answered = header(RD, [1, 1, 0, 0]);
    answered.extend(labels("web.service.consul"));
    answered.extend(A_IN);
    answered.extend([0xc0, 12]);
    answered.extend(A_IN);
    answered.extend([0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    write("dns", "seed-compressed-answer", &answered);
    let mut two = header(RD, [2, 0, 0, 0]);
    two.extend(labels("web.service.consul"));
    two.extend(A_IN);
    two.extend([2, b'v', b'1', 0xc0, 12]);
    two.extend(SRV_IN);
    write("dns", "seed-compressed-second-question", &two);
    let mut prefixed = header(RD, [1, 1, 0, 0]);
    prefixed.extend(labels("consul"));
    prefixed.extend(A_IN);
    let pointer_at = prefixed.len();
    prefixed.extend([7, b's', b'e', b'r', b'v', b'i', b'c', b'e', 0xc0, 12]);
    prefixed.extend(A_IN);
    prefixed.extend([0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    // And a record whose name points at that compressed name.
    prefixed[5] = 1;
    prefixed[7] = 2;
    prefixed.extend([0xc0, pointer_at as u8]);
    prefixed.extend(A_IN);
    prefixed.extend([0, 0, 0, 60, 0, 4, 10, 0, 0, 2]);
    write("dns", "seed-compressed-chain", &prefixed);
    let mut looped = header(RD, [1, 0, 0, 0]);
    looped.extend([0xc0, 12]);
    looped.extend(A_IN);
    write("dns", "seed-compressed-loop", &looped);
    let mut forward = header(RD, [1, 0, 0, 0]);
    forward.extend([3, b'w', b'e', b'b', 0xc0, 0xff]);
    forward.extend(A_IN);
    write("dns", "seed-compressed-past-end", &forward);

    // Truncated packets.
    let whole = query("web.service.consul.", SRV, Some(1232));
    write("dns", "seed-truncated-header", &whole[..11]);
    write("dns", "seed-truncated-after-header", &whole[..12]);
    write("dns", "seed-truncated-in-name", &whole[..20]);
    write("dns", "seed-truncated-before-type", &whole[..12 + 20]);
    write("dns", "seed-truncated-in-opt", &whole[..whole.len() - 3]);
    write("dns", "seed-empty", b"");
    let mut long_label_claim = header(RD, [1, 0, 0, 0]);
    long_label_claim.extend([63, b'x']);
    write("dns", "seed-truncated-label", &long_label_claim);

    // Not a plain query: a response, other opcodes, no question, a flood
    // of questions (each a pointer to the first).
    let mut response = whole.clone();
    response[2] |= 0x80;
    write("dns", "seed-response", &response);
    for (name, opcode) in [("notify", OpCode::Notify), ("update", OpCode::Update)] {
        let mut message = Message::from_vec(&whole).unwrap();
        message.set_op_code(opcode);
        write(
            "dns",
            &format!("seed-opcode-{name}"),
            &message.to_vec().unwrap(),
        );
    }
    write("dns", "seed-no-question", &header(RD, [0, 0, 0, 0]));
    let mut many = header(RD, [200, 0, 0, 0]);
    many.extend(labels("web.service.consul"));
    many.extend(A_IN);
    for _ in 1..200 {
        many.extend([0xc0, 12]);
        many.extend(A_IN);
    }
    write("dns", "seed-many-questions", &many);
}

pub fn write_filter_seeds() {
    let filters: &[(&str, &str)] = &[
        ("equal", "Service.Service == web"),
        ("not-equal", "Service.Port != 8080"),
        ("equal-quoted", "Node.Node == \"node-1\""),
        ("equal-raw", "Service.ID == `web-1`"),
        ("equal-bool", "Checks.Critical == true"),
        ("equal-negative", "Service.Port == -1.5"),
        ("contains", "Service.Tags contains v1"),
        ("not-contains", "Service.Tags not contains \"v2\""),
        ("in", "v1 in Service.Tags"),
        ("not-in", "\"v2\" not in Service.Tags"),
        ("in-number", "8080 in Service.Tags"),
        ("in-map", "team in Service.Meta"),
        ("matches", "Service.Service matches \"^web-[0-9]+$\""),
        ("not-matches", "Node.Node not matches `^db`"),
        ("is-empty", "Service.Tags is empty"),
        ("is-not-empty", "Node.Meta is not empty"),
        ("meta-dotted", "Service.Meta.team == pay"),
        ("meta-index", "Service.Meta[\"team name\"] == pay"),
        ("meta-index-raw", "Node.Meta[ `k` ] != v"),
        ("list-index", "Checks.0.Status == passing"),
        ("json-pointer", "\"/Service/Tags\" contains v1"),
        ("json-pointer-escapes", "\"/Service/Meta/a~1b~0c\" == x"),
        (
            "tagged-addresses",
            "Service.TaggedAddresses.lan.Address == \"127.0.0.1\"",
        ),
        ("node-selector", "Node == n"),
        (
            "checks-status",
            "Checks.Status == critical or Checks.Status == warning",
        ),
        (
            "and-or-not",
            "not (Service.Service == web and Service.Port == 1) or Node.Node != n",
        ),
        ("not-not", "not not Service.Tags is empty"),
        (
            "escapes",
            "Service.Service == \"a\\\"b\\\\c\\n\\t\\r\\a\\b\\f\\v\\x41\\u00e9\\U0001F600\"",
        ),
        ("bare-dash", "Service.ID == web-1"),
        ("whitespace", "\tService.Service\r\n==\n web "),
        ("unicode-value", "Service.Service == \"ünïcödé\""),
        // Refused, with a position.
        ("empty", ""),
        ("only-space", "   "),
        ("unterminated", "Service.Service == \"web"),
        ("bad-escape", "Service.Service == \"\\q\""),
        ("short-hex-escape", "Service.Service == \"\\u12\""),
        ("surrogate-escape", "Service.Service == \"\\ud800\""),
        ("bad-number", "Service.Port == 1.2."),
        ("number-then-word", "Service.Port == 12abc"),
        ("bad-character", "Service.Service = web"),
        ("bare-index", "Service.Meta[team] == pay"),
        ("unclosed-index", "Service.Meta[\"team\" == pay"),
        ("unclosed-paren", "(Service.Service == web"),
        ("extra-paren", "Service.Service == web)"),
        ("missing-operator", "Service.Service web"),
        ("missing-value", "Service.Service =="),
        ("not-equal-negated", "Service.Service not == web"),
        ("is-what", "Service.Tags is full"),
        ("unknown-selector", "Service.Nope == x"),
        ("wrong-kind", "Service.Tags == x"),
        ("number-not-number", "Service.Port == abc"),
        ("matches-number", "Service.Port matches 1"),
        ("bad-regex", "Service.Service matches \"(\""),
        ("regex-too-large", "Service.Service matches \"\\\\w{20}\""),
        ("dangling-and", "Service.Service == web and"),
        ("keyword-alone", "and"),
    ];
    for (file, text) in filters {
        write("filter", &format!("seed-{file}"), text.as_bytes());
    }
    // Nesting: at the limit (64), past it, and deep `not`s.
    let nested = |depth: usize| {
        format!(
            "{}Service.Service == web{}",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    write("filter", "seed-nested-64", nested(64).as_bytes());
    write("filter", "seed-nested-65", nested(65).as_bytes());
    write(
        "filter",
        "seed-not-65",
        format!("{}Service.Tags is empty", "not ".repeat(65)).as_bytes(),
    );
    // Long: 32 regexes (the most), 33, and long chains of `and`/`or`.
    let regexes = |count: usize| vec!["Service.Service matches \"^w.b$\""; count].join(" or ");
    write("filter", "seed-regexes-32", regexes(32).as_bytes());
    write("filter", "seed-regexes-33", regexes(33).as_bytes());
    let chain = vec!["Service.Tags contains v1"; 500].join(" and ");
    write("filter", "seed-long-and", chain.as_bytes());
    let chain = vec!["Node.Node == n"; 1000].join(" or ");
    write("filter", "seed-long-or", chain.as_bytes());
    write(
        "filter",
        "seed-long-value",
        format!("Service.Service == \"{}\"", "w".repeat(10_000)).as_bytes(),
    );
    write(
        "filter",
        "seed-long-selector",
        format!("Service.Meta.{} is empty", "k".repeat(10_000)).as_bytes(),
    );
}
