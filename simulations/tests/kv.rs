//! The replicated KV store in the simulator: writes through `Node::write_kv`
//! spread by rumors and by the agent's own anti-entropy step function
//! (`Node::sync_open` / `Node::on_sync`), across partitions and loss.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_simulations::scenario::{Action, Scenario, TimedAction};
use shoal_simulations::{Report, run};

fn scenario_file(name: &str) -> Scenario {
    let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::load(path.as_ref()).expect("valid scenario")
}

fn report_of(scenario: Scenario) -> Report {
    let (report, _) = run(scenario);
    println!("{report}");
    report
}

/// Every healthy node ends with the last-writer-wins map of every
/// accepted write: nothing acknowledged is lost, nothing superseded wins.
fn assert_converged(report: &Report) {
    assert!(
        report.kv.writes > 0,
        "seed {}: no writes: {report}",
        report.seed
    );
    assert_eq!(
        report.kv.missing_keys, 0,
        "seed {}: keys missing: {report}",
        report.seed
    );
    assert_eq!(
        report.kv.converged,
        Some(true),
        "seed {}: {report}",
        report.seed
    );
    assert!(
        report.kv.convergence_s.is_some(),
        "seed {}: convergence never timed: {report}",
        report.seed
    );
}

#[test]
fn kv_writes_on_both_sides_of_a_partition_converge_after_the_heal() {
    let report = report_of(scenario_file("kv-partition"));
    assert_converged(&report);
    assert_eq!(report.kv.writes, 504, "every write was made: {report}");
    assert!(
        report.partition_downs > 0,
        "the partition was noticed: {report}"
    );
    let after_heal = report.kv.convergence_s.expect("converged");
    assert!(after_heal < 60.0, "seed {}: {after_heal}s", report.seed);
}

#[test]
fn bulk_kv_writes_under_ten_percent_loss_converge() {
    let report = report_of(scenario_file("kv-loss"));
    assert_converged(&report);
    assert_eq!(report.kv.writes, 2000, "every write was made: {report}");
    assert!(report.datagrams_lost > 0, "loss was applied: {report}");
}

#[test]
fn without_anti_entropy_a_partition_leaves_writes_behind() {
    // The check can fail: rumors alone do not carry writes made during a
    // partition to the other side (they are long gone when it heals).
    let mut scenario = scenario_file("kv-partition");
    scenario.anti_entropy = false;
    let report = report_of(scenario);
    assert_eq!(report.kv.converged, Some(false), "{report}");
    assert!(report.kv.missing_keys > 0, "{report}");
}

/// A cluster of 4 to 8 nodes split at random between 5 and 15 s, for a
/// time drawn from `lasting` seconds: its size, when the split begins and
/// ends, and the two actions.
fn random_split(
    rng: &mut StdRng,
    lasting: std::ops::Range<f64>,
) -> (usize, f64, f64, Vec<TimedAction>) {
    let nodes = rng.random_range(4..9);
    let split = rng.random_range(1..nodes);
    let partition_at = rng.random_range(5.0..15.0);
    let heal_at = partition_at + rng.random_range(lasting);
    let actions = vec![
        TimedAction {
            at_s: partition_at,
            action: Action::Partition { split },
        },
        TimedAction {
            at_s: heal_at,
            action: Action::Heal,
        },
    ];
    (nodes, partition_at, heal_at, actions)
}

/// A small cluster, a partition at a random split, random writes on random
/// nodes before, during and after it: `seed` decides everything.
fn random_partition(seed: u64) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let (nodes, _, heal_at, mut actions) = random_split(&mut rng, 10.0..40.0);
    for _ in 0..rng.random_range(1..5) {
        let at_s = rng.random_range(1.0..heal_at + 10.0);
        actions.push(TimedAction {
            at_s,
            action: Action::KvBulk {
                writes: rng.random_range(1..40),
                keys: rng.random_range(1..12),
                over_s: rng.random_range(0.0..10.0),
                node: -1,
                prefix: "prop/".into(),
                value_bytes: 8,
                deletes: 0.0,
            },
        });
    }
    for _ in 0..rng.random_range(0..4) {
        // Single writes on chosen nodes, some to the bulk writes' keys.
        actions.push(TimedAction {
            at_s: rng.random_range(1.0..heal_at),
            action: Action::KvWrite {
                node: rng.random_range(0..nodes as i64),
                key: format!("prop/{}", rng.random_range(0..12)),
                value: format!("single {}", rng.random::<u32>()),
            },
        });
    }
    let text = format!(
        "name = \"kv-property-{seed}\"\nseed = {seed}\nnodes = {nodes}\nduration_s = {}\nsample_s = 30\n[network]\nloss = 0.02\n",
        heal_at + 120.0
    );
    let mut scenario = Scenario::parse(&text).expect("valid scenario");
    scenario.actions = actions;
    scenario.validate().expect("valid actions");
    scenario
}

#[test]
fn property_every_acknowledged_write_survives_a_partition() {
    for seed in 0..40 {
        let scenario = random_partition(seed);
        let (report, _) = run(scenario);
        if report.kv.writes == 0 {
            continue;
        }
        if report.kv.converged != Some(true) || report.kv.missing_keys != 0 {
            panic!("seed {seed} (random_partition({seed})): {report}");
        }
    }
}

/// Issue 20: both halves of a partition four times longer than the grace
/// write and delete, and collect their tombstones while split: after the
/// heal, every node serves the winner of every write and delete.
#[test]
fn a_partition_longer_than_the_tombstone_grace_loses_no_write() {
    let report = report_of(scenario_file("kv-long-partition"));
    assert_converged(&report);
    assert!(
        report.kv.collected > 0,
        "tombstones were collected: {report}"
    );
}

/// A small cluster split at random for 3 to 5 tombstone graces, random
/// writes and deletes on both sides before, during and after it, the
/// tombstones collected while split: `seed` decides everything.
fn random_long_partition(seed: u64) -> Scenario {
    const GRACE_S: f64 = 20.0;
    let mut rng = StdRng::seed_from_u64(seed);
    let (nodes, partition_at, heal_at, mut actions) =
        random_split(&mut rng, 3.0 * GRACE_S..5.0 * GRACE_S);
    for _ in 0..rng.random_range(2..6) {
        actions.push(TimedAction {
            at_s: rng.random_range(1.0..heal_at + 10.0),
            action: Action::KvBulk {
                writes: rng.random_range(1..40),
                keys: rng.random_range(1..12),
                over_s: rng.random_range(0.0..20.0),
                node: -1,
                prefix: "long/".into(),
                value_bytes: 8,
                deletes: rng.random_range(0.0..0.5),
            },
        });
    }
    // Writes on one side and deletes on the other while split, to keys of
    // their own and to the bulk keys.
    for _ in 0..rng.random_range(1..6) {
        let at_s = rng.random_range(partition_at + 1.0..heal_at - GRACE_S);
        let node = rng.random_range(0..nodes as i64);
        let key = format!("long/{}", rng.random_range(0..16));
        let action = if rng.random::<bool>() {
            Action::KvDelete { node, key }
        } else {
            Action::KvWrite {
                node,
                key,
                value: format!("single {}", rng.random::<u32>()),
            }
        };
        actions.push(TimedAction { at_s, action });
    }
    let text = format!(
        "name = \"kv-long-partition-{seed}\"\nseed = {seed}\nnodes = {nodes}\nduration_s = {}\n\
         sample_s = 30\ntombstone_grace_s = {GRACE_S}\n[network]\nloss = 0.02\n",
        heal_at + 150.0
    );
    let mut scenario = Scenario::parse(&text).expect("valid scenario");
    scenario.actions = actions;
    scenario.validate().expect("valid actions");
    scenario
}

#[test]
fn property_no_acknowledged_write_is_lost_to_a_partition_longer_than_the_grace() {
    let mut collected = 0;
    for seed in 0..20 {
        let (report, _) = run(random_long_partition(seed));
        if report.kv.writes == 0 {
            continue;
        }
        collected += report.kv.collected;
        if report.kv.converged != Some(true) || report.kv.missing_keys != 0 {
            panic!("seed {seed} (random_long_partition({seed})): {report}");
        }
    }
    assert!(collected > 0, "no tombstone was ever collected");
}
