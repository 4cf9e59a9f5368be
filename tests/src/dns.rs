//! Helpers for the DNS tests: `dig` against an agent, and services with a
//! TTL check whose status the test sets.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::json;

use crate::{Agent, http_json};

/// What `dig` printed, read back.
#[derive(Debug)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, ...
    pub status: String,
    /// Header flags: `qr`, `aa`, `tc`, ...
    pub flags: Vec<String>,
    /// Records per section: `(name, type, data)`.
    pub answer: Vec<(String, String, String)>,
    pub authority: Vec<(String, String, String)>,
    pub additional: Vec<(String, String, String)>,
    /// The whole output, for failure messages.
    pub text: String,
}

impl Dig {
    /// The data of the answer's records of `kind`, sorted.
    pub fn answers(&self, kind: &str) -> Vec<String> {
        let mut data: Vec<String> = self
            .answer
            .iter()
            .filter(|(_, k, _)| k == kind)
            .map(|(_, _, data)| data.clone())
            .collect();
        data.sort();
        data
    }
}

/// Runs `dig @server -p port name type <extra>` and parses its output.
pub fn dig(server: SocketAddr, name: &str, kind: &str, extra: &[&str]) -> Result<Dig, String> {
    let output = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args([name, kind, "+time=2", "+tries=2"])
        .args(extra)
        .output()
        .map_err(|error| format!("cannot run dig (apt-get install dnsutils): {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse(&text).ok_or_else(|| format!("dig printed no reply: {text}"))
}

fn parse(text: &str) -> Option<Dig> {
    let header = text.lines().find(|line| line.contains("->>HEADER<<-"))?;
    let status = header
        .split("status: ")
        .nth(1)?
        .split(',')
        .next()?
        .to_string();
    let flags_line = text.lines().find(|line| line.starts_with(";; flags:"))?;
    let flags = flags_line
        .trim_start_matches(";; flags:")
        .split(';')
        .next()?
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut dig = Dig {
        status,
        flags,
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        text: text.to_string(),
    };
    let mut section = None;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            section = Some(0);
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = Some(1);
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = Some(2);
        } else if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                section = None;
            }
        } else if let Some(which) = section {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 5 {
                let record = (
                    fields[0].to_string(),
                    fields[3].to_string(),
                    fields[4..].join(" "),
                );
                match which {
                    0 => dig.answer.push(record),
                    1 => dig.authority.push(record),
                    _ => dig.additional.push(record),
                }
            }
        }
    }
    Some(dig)
}

/// Registers service `id` of `name` on `agent` with a TTL check
/// `ttl-<id>` that starts `status`.
pub fn register_ttl_service(
    agent: &Agent,
    name: &str,
    id: &str,
    address: Option<&str>,
    port: u16,
    tags: &[&str],
    status: &str,
) {
    let mut registration = json!({
        "Name": name, "ID": id, "Port": port, "Tags": tags,
        "Check": {"CheckID": format!("ttl-{id}"), "TTL": "600s", "Status": status}
    });
    if let Some(address) = address {
        registration["Address"] = json!(address);
    }
    let (code, body) = http_json(
        "PUT",
        agent.http_addr(),
        "/v1/agent/service/register",
        Some(registration.to_string().as_bytes()),
    )
    .expect("register a service");
    assert_eq!(code, 200, "registering {id}: {body}");
}

/// Sets the TTL check of service `id` to `pass` or `fail`.
pub fn set_ttl(agent: &Agent, id: &str, verb: &str) {
    let path = format!("/v1/agent/check/{verb}/ttl-{id}");
    let (code, body) = http_json("PUT", agent.http_addr(), &path, None).expect("set a TTL check");
    assert_eq!(code, 200, "{path}: {body}");
}

/// A raw query for `web.service.consul A` (id 0x0101, recursion desired).
pub fn web_a_query() -> Vec<u8> {
    let mut packet = vec![1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["web", "service", "consul"] {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// Floods `target` with `query` from a socket of its own, `in_flight`
/// queries at a time, until `stop` is set; counts the answers in
/// `answered`. Each round waits at most 50 ms per missing answer.
pub fn flood_udp(
    target: SocketAddr,
    query: &[u8],
    in_flight: usize,
    stop: &std::sync::atomic::AtomicBool,
    answered: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering;
    let socket = std::net::UdpSocket::bind((target.ip(), 0)).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..in_flight {
            let _ = socket.send_to(query, target);
        }
        for _ in 0..in_flight {
            if socket.recv(&mut buffer).is_err() {
                break;
            }
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
