//! Catalog queries over hand-built membership tables.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_protocol::NodeId;

use super::*;

fn check(id: &str, status: CheckStatus, critical: bool) -> CheckRecord {
    CheckRecord {
        id: id.into(),
        name: id.into(),
        kind: "http".into(),
        status,
        critical,
        notes: String::new(),
        output: String::new(),
    }
}

fn service(id: &str, name: &str, tags: &[&str], checks: Vec<CheckRecord>) -> ServiceRecord {
    ServiceRecord {
        id: id.into(),
        name: name.into(),
        address: String::new(),
        port: 8080,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: BTreeMap::new(),
        checks,
    }
}

fn member(index: u8, status: MemberStatus, services: Vec<ServiceRecord>) -> MemberView {
    let id = NodeId {
        addr: format!("127.0.0.{index}:7946").parse().unwrap(),
        generation: 1,
    };
    let mut record = NodeRecord::new(id, format!("node-{index}"));
    record.services = services;
    MemberView {
        id,
        status,
        record: Some(record),
    }
}

fn passing(id: &str) -> CheckRecord {
    check(id, CheckStatus::Passing, true)
}

/// node-1 healthy web, node-2 degraded web (a non-critical check fails),
/// node-3 unhealthy web, node-4 failed (serfHealth critical), node-5 left.
fn cluster() -> Vec<MemberView> {
    vec![
        member(
            1,
            MemberStatus::Alive,
            vec![service("web-1", "web", &["v1"], vec![passing("a")])],
        ),
        member(
            2,
            MemberStatus::Alive,
            vec![service(
                "web-2",
                "web",
                &["v2"],
                vec![check("b", CheckStatus::Critical, false)],
            )],
        ),
        member(
            3,
            MemberStatus::Alive,
            vec![service(
                "web-3",
                "web",
                &["v1"],
                vec![check("c", CheckStatus::Critical, true)],
            )],
        ),
        member(
            4,
            MemberStatus::Failed,
            vec![service("web-4", "web", &["v1"], vec![])],
        ),
        member(
            5,
            MemberStatus::Left,
            vec![service("web-5", "web", &["v1"], vec![])],
        ),
    ]
}

#[test]
fn left_nodes_leave_the_catalog_and_failed_ones_fail_their_instances() {
    let members = cluster();
    let names: Vec<String> = nodes(&members).map(|n| n.record.name.clone()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3", "node-4"]);
    assert_eq!(instances(&members, "web").count(), 4);
    assert_eq!(count_passing(&members, "web"), 1);
    let filter = ServiceFilter {
        tags: vec!["v1".into()],
        ..ServiceFilter::default()
    };
    let ids: Vec<&str> = matching_instances(&members, "web", &filter)
        .map(|(_, s)| s.id.as_str())
        .collect();
    assert_eq!(ids, ["web-1", "web-3", "web-4"]);
}

#[test]
fn checks_are_listed_per_node_serf_health_first() {
    let members = cluster();
    let all = all_checks(&members);
    let ids: Vec<(&str, &str)> = all
        .iter()
        .map(|c| (c.node.record.name.as_str(), c.check.id.as_str()))
        .collect();
    assert_eq!(ids[..2], [("node-1", "serfHealth"), ("node-1", "a")]);
    assert_eq!(all.len(), 4 + 3);
    let failed = all.iter().find(|c| c.node.record.name == "node-4").unwrap();
    assert_eq!(failed.check.status, CheckStatus::Critical);
    assert_eq!(service_checks(&members, "web").len(), 3);
    let tags = service_tags(&members, &[]);
    assert_eq!(
        tags["web"].iter().copied().collect::<Vec<_>>(),
        ["v1", "v2"]
    );
}

#[test]
fn pick_prefers_healthy_then_degraded_and_never_unhealthy() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut members = cluster();
    let filter = ServiceFilter::default();
    for _ in 0..20 {
        let picked = pick(&members, "web", &filter, &mut rng).unwrap();
        assert_eq!(picked.service.id, "web-1");
        assert_eq!(picked.health, Health::Healthy);
    }
    members.remove(0);
    let picked = pick(&members, "web", &filter, &mut rng).unwrap();
    assert_eq!(
        (picked.service.id.as_str(), picked.health),
        ("web-2", Health::Degraded)
    );
    members.remove(0);
    assert!(pick(&members, "web", &filter, &mut rng).is_none());
    assert!(pick(&members, "nothing", &filter, &mut rng).is_none());
}

#[test]
fn pick_spreads_over_equally_healthy_instances() {
    let members: Vec<MemberView> = (1..=4)
        .map(|i| {
            let id = format!("api-{i}");
            member(
                i,
                MemberStatus::Alive,
                vec![service(&id, "api", &[], vec![])],
            )
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(42);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..400 {
        let picked = pick(&members, "api", &ServiceFilter::default(), &mut rng).unwrap();
        *counts.entry(picked.service.id.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|&n| n > 50), "{counts:?}");
}
