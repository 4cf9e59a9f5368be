//! Answers for names in our domains, from the catalog of one snapshot.
//! Which instances are answered is the catalog's call
//! ([`crate::catalog::ServiceFilter`] and `worst_status`, as
//! `/v1/health/service` decides), not re-derived here.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use shoal_protocol::MemberView;
use shoal_protocol::record::{CheckStatus, ServiceRecord, worst_status};

use super::names::{Lookup, hex_ip};
use super::skipped::SkippedServices;
use crate::catalog::{self, CatalogNode, ServiceFilter};
use crate::config::DnsConfig;
use crate::coordinates::Near;
use crate::registry::service::served_by_dns;

/// One answer record and the record that resolves its target, if any
/// (an SRV target's address, for the additional section).
#[derive(Clone, Debug)]
pub struct Entry {
    pub record: Record,
    pub additional: Option<Record>,
}

/// What to answer, before encoding (and truncating).
#[derive(Clone, Debug)]
pub struct Answer {
    pub code: ResponseCode,
    pub entries: Vec<Entry>,
    /// The SOA, for NXDOMAIN and empty answers.
    pub authority: Vec<Record>,
}

/// What an answer is built from.
pub struct Context<'a> {
    pub config: &'a DnsConfig,
    /// This agent's datacenter: SRV targets of nodes without one.
    pub datacenter: &'a str,
    pub members: &'a [MemberView],
    /// The domain the question was asked under (`consul` or the alternative).
    pub domain: &'a str,
    /// Services with names DNS can't serve, logged once each.
    pub skipped: &'a SkippedServices,
    /// Estimated round trips from this agent (`dns.near_first`, when it
    /// has a coordinate): a service's instances nearest first.
    pub near: Option<&'a Near>,
}

impl Context<'_> {
    /// Answers `lookup` for the question `qname`/`qtype`.
    pub fn answer(&self, qname: &Name, qtype: RecordType, lookup: &Lookup) -> Answer {
        let entries = match lookup {
            Lookup::Service {
                name,
                tag,
                datacenter,
            } => self.service(qname, qtype, name, tag.as_deref(), datacenter.as_deref()),
            Lookup::Node { name, datacenter } => self.node(qname, qtype, name, datacenter),
            Lookup::Addr { ip } => Some(address_entries(qname, qtype, *ip, self.node_ttl())),
            Lookup::Apex if qtype == RecordType::SOA => {
                return Answer {
                    code: ResponseCode::NoError,
                    entries: vec![Entry {
                        record: self.soa(),
                        additional: None,
                    }],
                    authority: Vec::new(),
                };
            }
            Lookup::Apex => Some(Vec::new()),
            Lookup::Unknown => None,
        };
        match entries {
            Some(entries) if !entries.is_empty() => Answer {
                code: ResponseCode::NoError,
                entries,
                authority: Vec::new(),
            },
            // The name exists, but has no record of this type.
            Some(_) => self.negative(ResponseCode::NoError),
            None => self.negative(ResponseCode::NXDomain),
        }
    }

    fn negative(&self, code: ResponseCode) -> Answer {
        Answer {
            code,
            entries: Vec::new(),
            authority: vec![self.soa()],
        }
    }

    /// `None`: no instance to answer with (NXDOMAIN, as Consul).
    fn service(
        &self,
        qname: &Name,
        qtype: RecordType,
        name: &str,
        tag: Option<&str>,
        datacenter: Option<&str>,
    ) -> Option<Vec<Entry>> {
        if !served_by_dns(name) {
            if catalog::instances(self.members, name).next().is_some() {
                self.skipped.note(name);
            }
            return None;
        }
        let filter = ServiceFilter {
            passing: self.config.only_passing,
            ..ServiceFilter::default()
        };
        let mut instances: Vec<(CatalogNode<'_>, &ServiceRecord)> =
            catalog::matching_instances(self.members, name, &filter)
                // Warning instances are answered unless only_passing; a
                // critical check (serfHealth of a failed node included)
                // takes an instance out, as in Consul.
                .filter(|(node, service)| {
                    worst_status(&node.service_checks(service)) != CheckStatus::Critical
                })
                .filter(|(_, service)| {
                    tag.is_none_or(|tag| service.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
                })
                .filter(|(node, _)| {
                    datacenter.is_none_or(|dc| self.node_datacenter(node).eq_ignore_ascii_case(dc))
                })
                .collect();
        if instances.is_empty() {
            return None;
        }
        // Random order (as Consul), or nearest first: the sort is stable,
        // so instances at one distance, or without a coordinate (last),
        // stay shuffled.
        instances.shuffle(&mut rand::rng());
        if let Some(near) = self.near {
            near.sort(&mut instances, |(node, _)| node.record.name.as_str());
        }
        let ttl = ttl(self.config.service_ttl);
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for (node, service) in instances {
            let address = node.service_address(service);
            if qtype == RecordType::SRV {
                if let Some(entry) = self.srv_entry(qname, &node, service, &address) {
                    entries.push(entry);
                }
                continue;
            }
            if !seen.insert(address.clone()) {
                continue;
            }
            match address.parse::<IpAddr>() {
                Ok(ip) => entries.extend(address_entries(qname, qtype, ip, ttl)),
                Err(_) if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                    // An instance registered with a host name: a CNAME to it.
                    if let Ok(target) = fqdn(&address) {
                        entries.push(Entry {
                            record: Record::from_rdata(
                                qname.clone(),
                                ttl,
                                RData::CNAME(CNAME(target)),
                            ),
                            additional: None,
                        });
                    }
                }
                Err(_) => {}
            }
        }
        Some(entries)
    }

    /// SRV to the instance's port; the target is its own address's name
    /// (`<hex>.addr.<dc>.<domain>`, or a host name as registered) or its
    /// node's (`<node>.node.<dc>.<domain>`), with the address beside it.
    fn srv_entry(
        &self,
        qname: &Name,
        node: &CatalogNode<'_>,
        service: &ServiceRecord,
        address: &str,
    ) -> Option<Entry> {
        let datacenter = self.node_datacenter(node);
        let (target, ip) = match (service.address.is_empty(), address.parse::<IpAddr>()) {
            (true, ip) => (
                fqdn(&format!(
                    "{}.node.{datacenter}.{}",
                    node.record.name, self.domain
                ))
                .ok()?,
                ip.ok(),
            ),
            (false, Ok(ip)) => (
                fqdn(&format!("{}.addr.{datacenter}.{}", hex_ip(ip), self.domain)).ok()?,
                Some(ip),
            ),
            (false, Err(_)) => (fqdn(address).ok()?, None),
        };
        let srv = SRV::new(1, 1, service.port, target.clone());
        Some(Entry {
            record: Record::from_rdata(
                qname.clone(),
                ttl(self.config.service_ttl),
                RData::SRV(srv),
            ),
            additional: ip.map(|ip| address_record(target, ip, ttl(self.config.service_ttl))),
        })
    }

    fn node(
        &self,
        qname: &Name,
        qtype: RecordType,
        name: &str,
        datacenter: &Option<String>,
    ) -> Option<Vec<Entry>> {
        let node = catalog::nodes(self.members).find(|node| {
            node.record.name.eq_ignore_ascii_case(name)
                && datacenter
                    .as_deref()
                    .is_none_or(|dc| self.node_datacenter(node).eq_ignore_ascii_case(dc))
        })?;
        let ip = node.member.id.addr.ip();
        Some(address_entries(qname, qtype, ip, self.node_ttl()))
    }

    /// A reverse lookup of `ip`, as Consul answers it: the first node
    /// whose address it is (`<node>.node.<dc>.<domain>`), else the first
    /// service registered with it as its own address
    /// (`<service>.service.<domain>`). `None` when no node or service has
    /// it: the name is not ours (the caller forwards or refuses it).
    pub fn reverse(&self, qname: &Name, qtype: RecordType, ip: IpAddr) -> Option<Answer> {
        let target = self.reverse_target(ip)?;
        let entries = if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            let ttl = ttl(target.1);
            vec![Entry {
                record: Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(target.0))),
                additional: None,
            }]
        } else {
            Vec::new()
        };
        // Not our zone: no SOA of ours in an empty answer.
        Some(Answer {
            code: ResponseCode::NoError,
            entries,
            authority: Vec::new(),
        })
    }

    /// The name `ip` points to, with the TTL of its kind.
    fn reverse_target(&self, ip: IpAddr) -> Option<(Name, Duration)> {
        let nodes = || catalog::nodes(self.members);
        if let Some(node) = nodes().find(|node| node.member.id.addr.ip() == ip) {
            let datacenter = self.node_datacenter(&node);
            let name = format!("{}.node.{datacenter}.{}", node.record.name, self.domain);
            if let Ok(name) = fqdn(&name) {
                return Some((name, self.config.node_ttl));
            }
        }
        for node in nodes() {
            let own_address = |service: &&ServiceRecord| {
                !service.address.is_empty() && service.address.parse::<IpAddr>().ok() == Some(ip)
            };
            for service in node.record.services.iter().filter(own_address) {
                if !served_by_dns(&service.name) {
                    self.skipped.note(&service.name);
                    continue;
                }
                if let Ok(name) = fqdn(&format!("{}.service.{}", service.name, self.domain)) {
                    return Some((name, self.config.service_ttl));
                }
            }
        }
        None
    }

    fn node_datacenter<'n>(&'n self, node: &CatalogNode<'n>) -> &'n str {
        if node.record.datacenter.is_empty() {
            self.datacenter
        } else {
            &node.record.datacenter
        }
    }

    fn node_ttl(&self) -> u32 {
        ttl(self.config.node_ttl)
    }

    /// The SOA of our domain: in NXDOMAIN and empty answers, its minimum
    /// (0) says not to cache them.
    fn soa(&self) -> Record {
        let apex = fqdn(self.domain).unwrap_or_else(|_| Name::root());
        let in_domain = |label: &str| fqdn(&format!("{label}.{}", self.domain)).unwrap_or_default();
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() as u32)
            .unwrap_or(1);
        let soa = SOA::new(
            in_domain("ns"),
            in_domain("hostmaster"),
            serial,
            3600,
            600,
            86400,
            0,
        );
        Record::from_rdata(apex, 0, RData::SOA(soa))
    }
}

/// An A or AAAA entry for `ip`, if `qtype` asks for its family.
fn address_entries(qname: &Name, qtype: RecordType, ip: IpAddr, ttl: u32) -> Vec<Entry> {
    let wanted = match ip {
        IpAddr::V4(_) => matches!(qtype, RecordType::A | RecordType::ANY),
        IpAddr::V6(_) => matches!(qtype, RecordType::AAAA | RecordType::ANY),
    };
    if !wanted {
        return Vec::new();
    }
    vec![Entry {
        record: address_record(qname.clone(), ip, ttl),
        additional: None,
    }]
}

fn address_record(name: Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, rdata)
}

/// A fully qualified name from text without the trailing dot.
fn fqdn(text: &str) -> Result<Name, hickory_proto::ProtoError> {
    let mut name = Name::from_ascii(text)?;
    name.set_fqdn(true);
    Ok(name)
}

fn ttl(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}
