//! Network coordinates in the simulator: three zones with round trips of
//! 1 ms inside a zone, 20 ms between zones 0 and 1 and 80 ms to zone 2
//! (issue 25's layout). Every node's coordinate comes from the round trips
//! of its own probes and its peers' published coordinates, as in the
//! agent; after one virtual minute the estimates must be within 15 % of
//! the true round trips (median over all pairs) and each node's nearest
//! other node by estimate in its own zone (at least 95 % of nodes).

use shoal_simulations::{Scenario, run};

#[test]
fn coordinates_converge_within_a_minute_in_three_zones() {
    for seed in 1..=3 {
        let text = format!(
            r#"
            name = "coordinates"
            seed = {seed}
            nodes = 60
            duration_s = 60.0
            [network]
            spread_ms = 0.0
            jitter_ms = 0.2
            zone_rtt_ms = [[1.0, 20.0, 80.0], [20.0, 1.0, 80.0], [80.0, 80.0, 1.0]]
            "#
        );
        let (report, sim) = run(Scenario::parse(&text).expect("valid scenario"));
        let accuracy = sim.coordinate_accuracy();
        println!("seed {seed}: {accuracy:?}");
        assert_eq!(report.false_positives, 0, "seed {seed}: {report}");
        assert!(
            accuracy.median_relative_error <= 0.15,
            "seed {seed}: median relative error {accuracy:?}"
        );
        assert!(
            accuracy.nearest_in_zone >= 0.95,
            "seed {seed}: nearest node in the same zone {accuracy:?}"
        );
    }
}

#[test]
fn a_zone_matrix_that_is_not_square_is_refused() {
    let error = Scenario::parse(
        r#"
        name = "bad"
        nodes = 4
        duration_s = 10.0
        [network]
        zone_rtt_ms = [[1.0, 2.0], [2.0]]
        "#,
    )
    .unwrap_err();
    assert!(error.to_string().contains("network.zone_rtt_ms"), "{error}");
}
