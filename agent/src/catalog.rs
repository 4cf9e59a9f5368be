//! Cluster-wide catalog queries over the membership table of a snapshot:
//! which nodes are in the catalog, the instances of a service, their
//! checks and health. No JSON here (Consul's shapes are in
//! `consul_json`) and no dependency on the daemon: the queries take
//! the published `&[MemberView]`.
//!
//! A node that left is gone from the catalog; a failed node stays, with
//! Consul's `serfHealth` check critical, so its instances drop out of
//! `?passing` results at once.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::IndexedRandom;
use shoal_protocol::record::{CheckRecord, CheckStatus, Health, ServiceRecord, worst_status};
use shoal_protocol::{MemberStatus, MemberView, NodeRecord};

/// One node of the catalog: a member we have a record for, not left.
#[derive(Clone, Copy)]
pub struct CatalogNode<'a> {
    pub member: &'a MemberView,
    pub record: &'a NodeRecord,
}

impl<'a> CatalogNode<'a> {
    /// Consul's `serfHealth` node check, from the membership status.
    pub fn serf_health(&self) -> CheckRecord {
        let (status, output) = match self.member.status {
            MemberStatus::Failed => (CheckStatus::Critical, "Agent not live or unreachable"),
            _ => (CheckStatus::Passing, "Agent alive and reachable"),
        };
        CheckRecord {
            id: "serfHealth".into(),
            name: "Serf Health Status".into(),
            kind: "serf".into(),
            status,
            critical: true,
            notes: String::new(),
            output: output.into(),
        }
    }

    /// Node-level checks: serfHealth first, then the node's own.
    pub fn node_checks(&self) -> Vec<CheckRecord> {
        let mut checks = vec![self.serf_health()];
        checks.extend(self.record.checks.iter().cloned());
        checks
    }

    /// Every check that applies to `service`: the node's, then its own.
    pub fn service_checks(&self, service: &ServiceRecord) -> Vec<CheckRecord> {
        let mut checks = self.node_checks();
        checks.extend(service.checks.iter().cloned());
        checks
    }

    /// The node's gossip IP, as Consul's node `Address`.
    pub fn address(&self) -> String {
        self.member.id.addr.ip().to_string()
    }

    /// Where to reach `service`: its own address, else the node's.
    pub fn service_address(&self, service: &ServiceRecord) -> String {
        if service.address.is_empty() {
            self.address()
        } else {
            service.address.clone()
        }
    }
}

/// The nodes in the catalog, in name order.
pub fn nodes(members: &[MemberView]) -> impl Iterator<Item = CatalogNode<'_>> {
    members.iter().filter_map(|member| {
        let record = member.record.as_ref()?;
        let gone = member.status == MemberStatus::Left || record.id != member.id;
        (!gone).then_some(CatalogNode { member, record })
    })
}

/// Every instance of the service `name`: `(node, service)` pairs.
pub fn instances<'a>(
    members: &'a [MemberView],
    name: &'a str,
) -> impl Iterator<Item = (CatalogNode<'a>, &'a ServiceRecord)> {
    nodes(members).flat_map(move |node| {
        node.record
            .services
            .iter()
            .filter(move |s| s.name == name)
            .map(move |service| (node, service))
    })
}

/// Filters shared by the health and catalog service queries.
#[derive(Debug, Default, Clone)]
pub struct ServiceFilter {
    /// Only instances whose every check passes (Consul's `?passing`).
    pub passing: bool,
    /// Only instances with all of these tags (`?tag=`, repeatable).
    pub tags: Vec<String>,
    /// Only nodes with these `key:value` meta pairs (`?node-meta=`).
    pub node_meta: Vec<(String, String)>,
}

impl ServiceFilter {
    pub fn matches(&self, node: &CatalogNode<'_>, service: &ServiceRecord) -> bool {
        if !self.tags.iter().all(|tag| service.tags.contains(tag)) {
            return false;
        }
        if !has_meta(node, &self.node_meta) {
            return false;
        }
        !self.passing || worst_status(&node.service_checks(service)) == CheckStatus::Passing
    }
}

/// Whether `node` carries every `key:value` pair (`?node-meta=`).
pub fn has_meta(node: &CatalogNode<'_>, pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .all(|(key, value)| node.record.user_tags().get(key.as_str()) == Some(&value.as_str()))
}

/// The instances of `name` that `filter` lets through.
pub fn matching_instances<'a>(
    members: &'a [MemberView],
    name: &'a str,
    filter: &'a ServiceFilter,
) -> impl Iterator<Item = (CatalogNode<'a>, &'a ServiceRecord)> {
    instances(members, name).filter(move |(node, service)| filter.matches(node, service))
}

/// Every service name with the union of its instances' tags, on the
/// nodes that carry every `node_meta` pair.
pub fn service_tags<'a>(
    members: &'a [MemberView],
    node_meta: &[(String, String)],
) -> BTreeMap<&'a str, BTreeSet<&'a str>> {
    let mut services: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for node in nodes(members).filter(|node| has_meta(node, node_meta)) {
        for service in &node.record.services {
            services
                .entry(service.name.as_str())
                .or_default()
                .extend(service.tags.iter().map(String::as_str));
        }
    }
    services
}

/// One check somewhere in the cluster: its node and, for a service check,
/// its service.
pub struct ClusterCheck<'a> {
    pub node: CatalogNode<'a>,
    pub check: CheckRecord,
    pub service: Option<&'a ServiceRecord>,
}

/// Every check in the cluster: per node, its node checks (serfHealth
/// first), then its services' checks.
pub fn all_checks(members: &[MemberView]) -> Vec<ClusterCheck<'_>> {
    let mut out = Vec::new();
    for node in nodes(members) {
        out.extend(node.node_checks().into_iter().map(|check| ClusterCheck {
            node,
            check,
            service: None,
        }));
        for service in &node.record.services {
            out.extend(service.checks.iter().map(|check| ClusterCheck {
                node,
                check: check.clone(),
                service: Some(service),
            }));
        }
    }
    out
}

/// The checks of every instance of `name` (their own, not the node's).
pub fn service_checks<'a>(members: &'a [MemberView], name: &'a str) -> Vec<ClusterCheck<'a>> {
    instances(members, name)
        .flat_map(|(node, service)| {
            service.checks.iter().map(move |check| ClusterCheck {
                node,
                check: check.clone(),
                service: Some(service),
            })
        })
        .collect()
}

/// Instances of `name` whose every check passes, cluster-wide.
pub fn count_passing(members: &[MemberView], name: &str) -> usize {
    instances(members, name)
        .filter(|(node, service)| {
            worst_status(&node.service_checks(service)) == CheckStatus::Passing
        })
        .count()
}

/// Shoal's health of one instance, serfHealth included.
pub fn instance_health(node: &CatalogNode<'_>, service: &ServiceRecord) -> Health {
    Health::of(&node.service_checks(service))
}

/// An instance chosen by [`pick`].
#[derive(Clone, Copy)]
pub struct Picked<'a> {
    pub node: CatalogNode<'a>,
    pub service: &'a ServiceRecord,
    pub health: Health,
}

/// One instance of `name` that `filter` lets through, chosen uniformly at
/// random among the healthiest: healthy ones, else degraded ones; never an
/// unhealthy one. `None` when there is no such instance.
pub fn pick<'a>(
    members: &'a [MemberView],
    name: &'a str,
    filter: &ServiceFilter,
    rng: &mut (impl Rng + ?Sized),
) -> Option<Picked<'a>> {
    let candidates: Vec<Picked<'a>> = instances(members, name)
        .filter(|(node, service)| filter.matches(node, service))
        .map(|(node, service)| Picked {
            node,
            service,
            health: instance_health(&node, service),
        })
        .filter(|picked| picked.health != Health::Unhealthy)
        .collect();
    let best = candidates.iter().map(|picked| picked.health).min()?;
    let pool: Vec<Picked<'a>> = candidates
        .into_iter()
        .filter(|picked| picked.health == best)
        .collect();
    pool.choose(rng).copied()
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
