//! What peers can make nodes do and hold, simulated: one forged digest
//! rumor must not start a pull storm, name churn must not grow records and
//! digests without bound, and a node that lost its store catches up on more
//! than one frame of KV data.

use shoal_simulations::metrics::Sample;
use shoal_simulations::scenario::Scenario;
use shoal_simulations::{Report, Simulation, run};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text).expect("valid scenario")
}

fn report_of(text: &str) -> (Report, Simulation) {
    let (report, sim) = run(scenario(text));
    println!("{report}");
    (report, sim)
}

/// Datagram bytes per second the whole cluster sent between two instants
/// (seconds), from the sampled time series.
fn traffic(samples: &[Sample], from_s: f64, to_s: f64) -> f64 {
    let at = |seconds: f64| {
        samples
            .iter()
            .find(|sample| sample.time as f64 >= seconds * 1e6)
            .unwrap_or_else(|| panic!("no sample at {seconds}s"))
    };
    let (start, end) = (at(from_s), at(to_s));
    (end.bytes - start.bytes) as f64 / ((end.time - start.time) as f64 / 1e6)
}

#[test]
fn one_forged_digest_rumor_starts_no_pull_storm() {
    let (report, sim) = report_of(
        r#"
        name = "t-spoofed-digest"
        seed = 17
        nodes = 10
        duration_s = 300
        sample_s = 5
        [[actions]]
        at_s = 60
        action = "spoof_digest"
        node = 3
        "#,
    );
    assert_eq!(
        report.syncs_outside, 0,
        "nodes tried to pull from the address a forged rumor named: {report}"
    );
    let before = traffic(sim.samples(), 20.0, 60.0);
    let after = traffic(sim.samples(), 240.0, 300.0);
    println!("traffic {before:.0} B/s before the forged rumor, {after:.0} B/s three minutes on");
    assert!(
        after <= before * 1.25,
        "seed {}: {after:.0} B/s after, {before:.0} B/s before",
        report.seed
    );
    // Pulls are bounded: a few per node, on top of one periodic exchange
    // per node every ~15 s.
    let periodic = 10.0 * 300.0 / 15.0;
    assert!(
        (report.sync_exchanges as f64) < periodic * 1.5 + 10.0 * 4.0,
        "seed {}: {} exchanges",
        report.seed,
        report.sync_exchanges
    );
}

#[test]
fn name_churn_keeps_records_and_digests_bounded() {
    // 60 renames over 5 minutes in a 12-node cluster that forgets down
    // members after a minute: records of gone names must go too.
    let mut text = String::from(
        r#"
        name = "t-name-churn"
        seed = 19
        nodes = 12
        duration_s = 600
        remove_down_after_s = 60
        "#,
    );
    for round in 0..60 {
        text.push_str(&format!(
            "[[actions]]\nat_s = {}\naction = \"rename\"\nnode = {}\n",
            20 + 5 * round,
            3 + round % 9
        ));
    }
    let (report, _) = report_of(&text);
    assert!(
        report.max_records <= 12 + 2,
        "seed {}: a node holds {} records after 60 renames in a 12-node cluster",
        report.seed,
        report.max_records
    );
}

#[test]
fn a_node_that_lost_its_store_catches_up_on_more_than_a_frame() {
    // 40 values of 500 KB (20 MB, over the 16 MiB frame limit), then one
    // node restarts with an empty store.
    let (report, _) = report_of(
        r#"
        name = "t-kv-catch-up"
        seed = 23
        nodes = 4
        duration_s = 120
        [[actions]]
        at_s = 5
        action = "kv_bulk"
        writes = 40
        keys = 40
        over_s = 5
        node = 0
        value_bytes = 500000
        [[actions]]
        at_s = 30
        action = "crash"
        node = 3
        [[actions]]
        at_s = 40
        action = "restart"
        node = 3
        "#,
    );
    assert_eq!(report.kv.missing_keys, 0, "{report}");
    assert_eq!(report.kv.converged, Some(true), "{report}");
    let took = report.kv.convergence_s.expect("converged");
    assert!(
        took < 20.0,
        "seed {}: {took}s after the restart",
        report.seed
    );
}
