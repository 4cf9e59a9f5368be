//! The WAN pool in the simulator (issue 25): three datacenters with three
//! WAN members each, round trips of 50, 100 and 150 ms between them (1 ms
//! inside one), 1 % loss on every datagram, with the WAN pool's timings
//! (`profile = "wan"`). Only the WAN pool is simulated: each datacenter's
//! LAN pool (50 agents in the issue's layout) is a foca instance of its
//! own that the WAN pool never sees, and a LAN agent's read goes to any
//! live WAN member of its datacenter. A read from datacenter A to B is
//! answered when some live WAN member of A holds alive, and reaches, a
//! live WAN member of B (`zone_routes`).
//!
//! Over a virtual hour no WAN member is declared failed and every
//! datacenter reaches every other; a datacenter cut off for five minutes
//! is unreachable from the others while cut, and reachable again within
//! two WAN push-pull intervals (120 s) of the heal.

use shoal_simulations::{Scenario, run};

fn scenario(seed: u64, duration_s: f64, actions: &str) -> Scenario {
    let text = format!(
        r#"
        name = "wan-3dc"
        seed = {seed}
        nodes = 9
        duration_s = {duration_s}
        profile = "wan"
        sample_s = 5.0
        [network]
        loss = 0.01
        spread_ms = 2.0
        jitter_ms = 5.0
        zone_rtt_ms = [[1.0, 50.0, 150.0], [50.0, 1.0, 100.0], [150.0, 100.0, 1.0]]
        {actions}
        "#
    );
    Scenario::parse(&text).expect("valid scenario")
}

#[test]
fn an_hour_of_wan_gossip_at_one_percent_loss_declares_nobody_failed() {
    for seed in 1..=5 {
        let (report, sim) = run(scenario(seed, 3600.0, ""));
        // Datagrams and anti-entropy exchanges, both ways counted once (as
        // sent), per WAN member.
        let sync_per_node_s = report.sync_bytes as f64 / (9.0 * 3600.0);
        let bytes_per_node_s = report.bytes_per_node_s + sync_per_node_s;
        println!(
            "seed {seed}: false positives {}, suspicions {}, refutations {}, {:.0} bytes/s per WAN member sent ({:.0} of them anti-entropy)",
            report.false_positives,
            report.suspicions,
            report.refutations,
            bytes_per_node_s,
            sync_per_node_s
        );
        assert_eq!(report.false_positives, 0, "seed {seed}: {report}");
        assert_eq!(report.renewals, 0, "seed {seed}: {report}");
        let unrouted: Vec<(f64, f64)> = sim
            .zone_routes()
            .into_iter()
            .filter(|&(time, share)| time >= 30.0 && share < 1.0)
            .collect();
        assert!(
            unrouted.is_empty(),
            "seed {seed}: datacenters without a route at {unrouted:?}"
        );
        // Issue 25's target: at most 50 kbit/s per WAN member.
        assert!(
            bytes_per_node_s * 8.0 <= 50_000.0,
            "seed {seed}: {bytes_per_node_s} bytes/s per WAN member"
        );
    }
}

#[test]
fn a_datacenter_cut_off_is_unreachable_then_reachable_within_two_push_pulls() {
    for seed in 1..=5 {
        let actions = r#"
        [[actions]]
        at_s = 600.0
        action = "isolate_zone"
        zone = 2
        [[actions]]
        at_s = 900.0
        action = "heal"
        "#;
        let (report, sim) = run(scenario(seed, 1500.0, actions));
        let routes = sim.zone_routes();
        // While cut: only dc0 <-> dc1 (2 of the 6 ordered pairs).
        let during: Vec<f64> = routes
            .iter()
            .filter(|&&(time, _)| time > 600.0 && time < 900.0)
            .map(|&(_, share)| share)
            .collect();
        assert!(
            during.iter().all(|share| (share - 2.0 / 6.0).abs() < 1e-9),
            "seed {seed}: {during:?}"
        );
        let recovered = routes
            .iter()
            .filter(|&&(time, _)| time >= 900.0)
            .find(|&&(_, share)| share == 1.0)
            .map(|&(time, _)| time - 900.0);
        println!(
            "seed {seed}: routes back {recovered:?} s after the heal; partition downs {}, false positives {}",
            report.partition_downs, report.false_positives
        );
        let recovered = recovered.unwrap_or_else(|| panic!("seed {seed}: no route back: {report}"));
        assert!(recovered <= 120.0, "seed {seed}: {recovered} s");
        assert_eq!(report.false_positives, 0, "seed {seed}: {report}");
        // The WAN pool saw the cut: the cut-off members were declared failed.
        assert!(report.partition_downs > 0, "seed {seed}: {report}");
    }
}

#[test]
fn a_zone_to_isolate_must_exist() {
    let error = Scenario::parse(
        r#"
        name = "bad"
        nodes = 4
        duration_s = 10.0
        [network]
        zone_rtt_ms = [[1.0, 2.0], [2.0, 1.0]]
        [[actions]]
        at_s = 1.0
        action = "isolate_zone"
        zone = 2
        "#,
    )
    .unwrap_err();
    assert!(error.to_string().contains("actions[0].zone"), "{error}");
}
