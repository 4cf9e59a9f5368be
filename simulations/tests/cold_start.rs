//! A cold start in the simulator (`sweep::cold_start_scenario`): every
//! node started at once through one seed (a datacenter's power cycle),
//! then every node restarted at once (a fleet-wide deploy), with the
//! agent's duplicate-name check and its limit of 8 exchanges served at
//! once. Each newcomer holds its record back until an exchange completes;
//! the seed refuses most of the first ones, so refused newcomers must try
//! again soon, with another member, and then fetch the records gossip has
//! not brought yet (see `shoal_protocol::node::CATCH_UP_EXCHANGES`).

use shoal_simulations::run;
use shoal_simulations::sweep::cold_start_scenario;

/// The target of issue 23: within 2 s, at 100 and 250 nodes, on 3 seeds.
/// Before the fix, a newcomer refused by the seed waited for the periodic
/// exchange, and the last record arrived after 7.5-22.5 s.
#[test]
fn every_record_reaches_every_node_within_2_s_of_a_mass_start_or_restart() {
    for nodes in [100, 250] {
        for seed in 1..=3 {
            let (report, _) = run(cold_start_scenario(nodes, seed));
            println!("{report}");
            assert!(
                report.syncs_refused > 0,
                "N = {nodes}, seed {seed}: no exchange refused, so the limit was not exercised"
            );
            assert_eq!(report.records_complete_s.len(), 2, "{report}");
            for (what, took) in ["mass start", "mass restart"]
                .iter()
                .zip(&report.records_complete_s)
            {
                let took = took.unwrap_or(f64::INFINITY);
                assert!(
                    took <= 2.0,
                    "N = {nodes}, seed {seed}, {what}: every record everywhere after {took:.2} s"
                );
            }
        }
    }
}
