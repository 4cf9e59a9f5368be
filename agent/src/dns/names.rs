//! Consul's DNS names, parsed: what a query name asks for. Pure functions
//! over lower-cased labels; no snapshot, no sockets.
//!
//! Under a domain `D` (`consul` or the alternative):
//!
//! - `[<tag>.]<service>.service[.<dc>].D`
//! - `_<service>._<tag or tcp>.service[.<dc>].D` (RFC 2782; `_tcp` and
//!   `_udp` mean no tag)
//! - `<node>.node[.<dc>].D`
//! - `<hex ip>.addr[.<dc>].D` (8 hex digits for IPv4, 32 for IPv6)
//! - `D` itself (SOA, NS)
//!
//! and, outside them, reverse names (`in-addr.arpa`, `ip6.arpa`): PTR
//! lookups of node and service addresses ([`reverse_ip`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a name in one of our domains asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Service {
        name: String,
        tag: Option<String>,
        datacenter: Option<String>,
    },
    Node {
        name: String,
        datacenter: Option<String>,
    },
    Addr {
        ip: IpAddr,
    },
    /// The domain's apex.
    Apex,
    /// In our domain, but no name we answer: NXDOMAIN.
    Unknown,
}

impl Lookup {
    /// The datacenter the name asks about, when it names one.
    pub fn datacenter(&self) -> Option<&str> {
        match self {
            Lookup::Service { datacenter, .. } | Lookup::Node { datacenter, .. } => {
                datacenter.as_deref()
            }
            Lookup::Addr { .. } | Lookup::Apex | Lookup::Unknown => None,
        }
    }
}

/// A query name, placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed<'a> {
    /// Under `domain` (one of ours, as configured).
    Ours { domain: &'a str, lookup: Lookup },
    /// Not under any of our domains.
    Outside,
}

/// Places `qname` (any case, with or without the trailing dot) under one
/// of `domains` (lower case, no trailing dot).
pub fn place<'a>(qname: &str, domains: &[&'a str]) -> Placed<'a> {
    let qname = qname.trim_end_matches('.').to_ascii_lowercase();
    for &domain in domains {
        let rest = if qname == domain {
            Some("")
        } else {
            qname
                .strip_suffix(domain)
                .and_then(|rest| rest.strip_suffix('.'))
        };
        if let Some(rest) = rest {
            let labels: Vec<&str> = if rest.is_empty() {
                Vec::new()
            } else {
                rest.split('.').collect()
            };
            return Placed::Ours {
                domain,
                lookup: lookup(&labels),
            };
        }
    }
    Placed::Outside
}

/// Reads the labels left of the domain, right to left, as Consul does.
fn lookup(labels: &[&str]) -> Lookup {
    if labels.is_empty() {
        return Lookup::Apex;
    }
    // The kind label is the last one, or the one before a datacenter.
    let kind_at = |at: usize| labels.get(at).copied();
    let (kind_index, datacenter) = match (kind_at(labels.len() - 1), labels.len()) {
        (Some("service" | "node" | "addr"), _) => (labels.len() - 1, None),
        (_, n) if n >= 2 && matches!(kind_at(n - 2), Some("service" | "node" | "addr")) => {
            (n - 2, Some(labels[n - 1].to_string()))
        }
        _ => return Lookup::Unknown,
    };
    let before = &labels[..kind_index];
    match (labels[kind_index], before) {
        ("service", [service]) if !service.is_empty() => Lookup::Service {
            name: service.to_string(),
            tag: None,
            datacenter,
        },
        ("service", [first, second]) => {
            if let (Some(service), Some(protocol)) =
                (first.strip_prefix('_'), second.strip_prefix('_'))
            {
                let tag = (!matches!(protocol, "tcp" | "udp")).then(|| protocol.to_string());
                Lookup::Service {
                    name: service.to_string(),
                    tag,
                    datacenter,
                }
            } else {
                Lookup::Service {
                    name: second.to_string(),
                    tag: Some(first.to_string()),
                    datacenter,
                }
            }
        }
        ("node", [node]) => Lookup::Node {
            name: node.to_string(),
            datacenter,
        },
        ("addr", [hex]) => match parse_hex_ip(hex) {
            Some(ip) => Lookup::Addr { ip },
            None => Lookup::Unknown,
        },
        _ => Lookup::Unknown,
    }
}

/// The address a reverse name asks for: `d.c.b.a.in-addr.arpa` (four
/// decimal labels) or `ip6.arpa` under 32 hex nibbles, any case, with or
/// without the trailing dot. `None` for anything else, partial zones
/// (`10.in-addr.arpa`) included.
pub fn reverse_ip(qname: &str) -> Option<IpAddr> {
    let qname = qname.trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = qname.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = rest
            .split('.')
            .map(|label| {
                let plain = !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit());
                plain.then(|| label.parse::<u8>().ok()).flatten()
            })
            .collect::<Option<_>>()?;
        let [d, c, b, a] = octets.as_slice() else {
            return None;
        };
        return Some(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)));
    }
    let rest = qname.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 || nibbles.iter().any(|nibble| nibble.len() != 1) {
        return None;
    }
    let hex: String = nibbles.into_iter().rev().collect();
    u128::from_str_radix(&hex, 16)
        .ok()
        .map(|bits| IpAddr::V6(Ipv6Addr::from(bits)))
}

/// `7f000001` → 127.0.0.1; 32 hex digits → an IPv6 address.
fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|bits| IpAddr::V4(Ipv4Addr::from(bits))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|bits| IpAddr::V6(Ipv6Addr::from(bits))),
        _ => None,
    }
}

/// The `.addr.` label of `ip` (the inverse of `parse_hex_ip`).
pub fn hex_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAINS: [&str; 2] = ["consul", "shoal"];

    fn ours(qname: &str) -> Lookup {
        match place(qname, &DOMAINS) {
            Placed::Ours { lookup, .. } => lookup,
            Placed::Outside => panic!("{qname} placed outside"),
        }
    }

    fn service(name: &str, tag: Option<&str>, dc: Option<&str>) -> Lookup {
        Lookup::Service {
            name: name.into(),
            tag: tag.map(Into::into),
            datacenter: dc.map(Into::into),
        }
    }

    #[test]
    fn consul_forms() {
        assert_eq!(ours("web.service.consul."), service("web", None, None));
        assert_eq!(ours("WEB.Service.CONSUL"), service("web", None, None));
        assert_eq!(
            ours("v2.web.service.shoal."),
            service("web", Some("v2"), None)
        );
        assert_eq!(
            ours("web.service.dc1.consul."),
            service("web", None, Some("dc1"))
        );
        assert_eq!(
            ours("v2.web.service.dc1.consul."),
            service("web", Some("v2"), Some("dc1"))
        );
        assert_eq!(
            ours("_web._tcp.service.consul."),
            service("web", None, None)
        );
        assert_eq!(
            ours("_web._v2.service.dc2.consul."),
            service("web", Some("v2"), Some("dc2"))
        );
        assert_eq!(
            ours("n1.node.consul."),
            Lookup::Node {
                name: "n1".into(),
                datacenter: None
            }
        );
        assert_eq!(
            ours("n1.node.dc1.consul."),
            Lookup::Node {
                name: "n1".into(),
                datacenter: Some("dc1".into())
            }
        );
        assert_eq!(
            ours("7f000001.addr.dc1.consul."),
            Lookup::Addr {
                ip: "127.0.0.1".parse().unwrap()
            }
        );
        assert_eq!(ours("consul."), Lookup::Apex);
        for unknown in [
            "x.consul.",
            "service.consul.",
            "a.b.c.service.consul.",
            "zz.addr.consul.",
            "a.b.node.consul.",
            "web.query.consul.",
        ] {
            assert_eq!(ours(unknown), Lookup::Unknown, "{unknown}");
        }
    }

    #[test]
    fn other_names_are_outside() {
        for outside in ["example.com.", "consul.example.", "notconsul.", "."] {
            assert_eq!(place(outside, &DOMAINS), Placed::Outside, "{outside}");
        }
    }

    #[test]
    fn reverse_names_give_their_address() {
        let v4 = |name: &str| reverse_ip(name).map(|ip| ip.to_string());
        assert_eq!(v4("7.8.9.10.in-addr.arpa.").as_deref(), Some("10.9.8.7"));
        assert_eq!(v4("1.0.0.127.IN-ADDR.ARPA").as_deref(), Some("127.0.0.1"));
        let v6 = "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(v4(v6).as_deref(), Some("fd00::7"));
        for other in [
            "10.in-addr.arpa.",
            "9.8.7.in-addr.arpa.",
            "1.2.3.4.5.in-addr.arpa.",
            "256.0.0.10.in-addr.arpa.",
            "+1.0.0.10.in-addr.arpa.",
            "a.0.0.10.in-addr.arpa.",
            "0.d.f.ip6.arpa.",
            "web.service.consul.",
            "in-addr.arpa.",
        ] {
            assert_eq!(reverse_ip(other), None, "{other}");
        }
        let long = v6.replacen("7.", "77.", 1);
        assert_eq!(reverse_ip(&long), None);
    }

    #[test]
    fn hex_addresses_round_trip() {
        for ip in ["10.1.2.3", "::1", "2001:db8::42"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_hex_ip(&hex_ip(ip)), Some(ip));
        }
    }
}
