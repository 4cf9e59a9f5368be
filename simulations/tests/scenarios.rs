//! Small cluster scenarios that run in the normal `cargo test`. The large
//! sweeps are `cargo run --release -p shoal-simulations -- sweep`.

use shoal_simulations::scenario::{Action, Bootstrap, Scenario, TimedAction};
use shoal_simulations::{Report, run};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text).expect("valid scenario")
}

fn report_of(text: &str) -> Report {
    let (report, _) = run(scenario(text));
    println!("{report}");
    report
}

#[test]
fn a_change_reaches_every_node_of_a_joining_cluster() {
    let report = report_of(
        r#"
        name = "t-dissemination"
        seed = 3
        nodes = 40
        duration_s = 120
        bootstrap = "join"
        [network]
        loss = 0.01
        [[actions]]
        at_s = 40
        action = "change"
        node = 7
        "#,
    );
    let change = &report.dissemination[0];
    assert_eq!(change.coverage, 1.0, "seed {}: {report}", report.seed);
    assert!(change.p50.unwrap() < 2.0, "seed {}: {report}", report.seed);
}

#[test]
fn a_crashed_node_is_detected_within_twice_the_analytic_bound() {
    let report = report_of(
        r#"
        name = "t-detection"
        seed = 5
        nodes = 30
        duration_s = 90
        [[actions]]
        at_s = 20
        action = "crash"
        node = 12
        "#,
    );
    // SWIM: first probe of the dead node after e/(e-1) periods, plus one
    // period for the probe to fail, plus the suspicion timeout
    // suspicion_mult * log10(30) periods (1 s each).
    let mult = shoal_protocol::GossipConfig::default().suspicion_mult;
    let bound = std::f64::consts::E / (std::f64::consts::E - 1.0) + 1.0 + mult * 30f64.log10();
    let first = report.detection[0].first.expect("detected");
    assert!(
        first <= 2.0 * bound,
        "seed {}: {first}s > 2 x {bound}s",
        report.seed
    );
    assert!(
        report.detection[0].all.is_some(),
        "seed {}: {report}",
        report.seed
    );
}

/// Lifeguard's dynamic suspicion, on ten seeds: a node cut off alone for
/// 12 s (three times the fixed suspicion of 4 probe periods at N = 10, half
/// of Max = 24 s) suspects all nine others with nobody to confirm, so it
/// declares none of them down; the nine all confirm their suspicion of it
/// and declare it down after about Min. With the suspicion fixed
/// (`suspicion_max_mult = 1`) the lone node declares some of them down
/// (not all: local health stretches its later suspicions), and they
/// have to rejoin once the cut heals.
#[test]
fn a_lone_suspicion_lasts_max_and_confirmed_ones_min() {
    let cut = |seed: u64, max_mult: u32| {
        report_of(&format!(
            r#"
            name = "t-lone-suspicion"
            seed = {seed}
            nodes = 10
            duration_s = 60
            suspicion_max_mult = {max_mult}
            [[actions]]
            at_s = 20
            action = "partition"
            split = 1
            [[actions]]
            at_s = 32
            action = "heal"
            "#
        ))
    };
    for seed in 1..=10 {
        let dynamic = cut(seed, 6);
        assert_eq!(
            dynamic.partition_downs_by_minority, 0,
            "seed {seed}: the lone node declared others down: {dynamic}"
        );
        assert!(
            dynamic.partition_downs >= 9,
            "seed {seed}: the nine did not all declare the lone node down: {dynamic}"
        );
        assert_eq!(dynamic.false_positives, 0, "seed {seed}: {dynamic}");
        let fixed = cut(seed, 1);
        assert!(
            fixed.partition_downs_by_minority >= 1,
            "seed {seed}: with a fixed suspicion the lone node declares some: {fixed}"
        );
    }
}

/// The faults that cause false positives in practice (SIGSTOP bursts of
/// 200-800 ms on five nodes, alone and with 5 % loss; Gilbert-Elliott
/// bursty loss; 30 % one-way loss from five nodes), 50 nodes for ten
/// virtual minutes, on ten seeds, with dynamic suspicion and with the
/// suspicion fixed:
///
/// - a node that is merely slow (stopped in bursts) is never declared
///   down, and under starvation alone nobody is;
/// - under loss, dynamic suspicion declares healthy nodes down no more
///   often than the fixed suspicion does.
///
/// Healthy nodes are declared down under loss, with either: over 60 seeds
/// (`shoal-sim sweep --only faults`, six runs from seeds 1, 11, ... 51;
/// docs/figures/issue-23/sim-faults-60-seeds/), 8 of 60 bursty runs, 1
/// one-way and 2 starve-with-loss runs had one, against 14, 3 and 4 with
/// the suspicion fixed. An earlier version of this test asserted none, on
/// ten seeds where none happened to occur.
#[test]
fn slow_nodes_are_never_declared_down_and_dynamic_suspicion_does_no_worse_under_loss() {
    use shoal_simulations::sweep::{FAULT_KINDS, fault_scenario};
    for kind in FAULT_KINDS {
        let (mut dynamic_fps, mut fixed_fps) = (0, 0);
        for seed in 1..=10 {
            let (dynamic, _) = run(fault_scenario(kind, true, seed));
            let (fixed, _) = run(fault_scenario(kind, false, seed));
            for report in [&dynamic, &fixed] {
                // A deaf node is not merely slow: see the test below.
                if kind == "deaf" {
                    break;
                }
                assert_eq!(
                    report.faulted_declared_down, 0,
                    "{kind}, seed {seed}: a merely slow node was declared down: {report}"
                );
            }
            if kind == "starve" {
                assert_eq!(
                    dynamic.false_positives, 0,
                    "{kind}, seed {seed}: healthy nodes declared down: {dynamic}"
                );
            }
            dynamic_fps += dynamic.false_positives;
            fixed_fps += fixed.false_positives;
        }
        println!(
            "{kind}: healthy nodes declared down over 10 seeds: dynamic {dynamic_fps}, fixed {fixed_fps}"
        );
        assert!(
            dynamic_fps <= fixed_fps,
            "{kind}: dynamic suspicion declared {dynamic_fps} healthy nodes down, fixed {fixed_fps}"
        );
    }
}

/// A node that hears nothing for a few seconds (everything sent to it
/// lost, what it sends delivered) learns only afterwards that it is
/// suspected. By then every peer has sent the suspicion its few times
/// and stopped: without being told again it cannot refute, and goes down
/// at the suspicion's `Min` however soon it hears again (before the fix,
/// seed 1 alone: 30 declarations of deaf nodes). Lifeguard's buddy system
/// tells it again: a member that sends anything to a member it suspects
/// adds the suspicion, and the suspect refutes at once. And a member that
/// missed the refutation (deaf itself then) and reminds at the old
/// incarnation is answered with the new one; without that, seed 2 still
/// had one deaf node declared down, at the old incarnation, by another
/// deaf node whose own probe of it failed.
#[test]
fn a_node_deaf_for_a_few_seconds_refutes_once_it_hears_again() {
    for seed in 1..=3 {
        let mut text = String::from("name = \"deaf\"\nnodes = 50\nduration_s = 300.0\n");
        text += &format!("seed = {seed}\n");
        let mut scenario = scenario(&text);
        // Bursts of 1-4 s, well inside the 6.8 s `Min` at 50 nodes.
        for (victim, node) in [10usize, 20, 30].into_iter().enumerate() {
            let mut t = 20.0 + victim as f64;
            let mut burst = 0;
            while t < 280.0 {
                let seconds = 1.0 + (burst % 4) as f64;
                scenario.actions.push(TimedAction {
                    at_s: t,
                    action: Action::Deaf { node, seconds },
                });
                t += seconds + 6.0 + (burst % 3) as f64 * 2.0;
                burst += 1;
            }
        }
        scenario.actions.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let (report, _) = run(scenario);
        assert!(
            report.datagrams_lost > 0,
            "seed {seed}: nothing was lost: {report}"
        );
        assert!(
            report.refutations > 0,
            "seed {seed}: no deaf node refuted: {report}"
        );
        assert_eq!(
            report.faulted_declared_down, 0,
            "seed {seed}: a node deaf for at most 4 s was declared down: {report}"
        );
        assert_eq!(report.false_positives, 0, "seed {seed}: {report}");
    }
}

#[test]
fn no_false_positives_at_five_percent_loss_for_thirty_minutes() {
    let report = report_of(
        r#"
        name = "t-loss"
        seed = 9
        nodes = 20
        duration_s = 1800
        sample_s = 60
        [network]
        loss = 0.05
        "#,
    );
    assert_eq!(report.false_positives, 0, "seed {}: {report}", report.seed);
    assert_eq!(report.renewals, 0, "seed {}: {report}", report.seed);
}

#[test]
fn the_cluster_converges_after_a_partition_heals() {
    let report = report_of(
        r#"
        name = "t-partition"
        seed = 13
        nodes = 20
        duration_s = 240
        [[actions]]
        at_s = 20
        action = "partition"
        split = 10
        [[actions]]
        at_s = 80
        action = "heal"
        "#,
    );
    assert!(
        report.partition_downs > 0,
        "the partition was noticed: {report}"
    );
    let heal = report.heal_convergence_s.expect("converged after the heal");
    assert!(heal < 120.0, "seed {}: {heal}s", report.seed);
}

/// Campaign seed 788339484: an agent cut off alone for a minute while
/// every other agent restarted. With dynamic suspicion the lone agent
/// still held the others alive when the cut healed (nobody confirmed its
/// suspicions), so it kept probing identities they had left behind, which
/// foca drops unread; and the restarted agents either did not know it or
/// held it as down (learned from a peer) without telling it. It was taken
/// back only by the next anti-entropy exchange: 5.5-15.2 s after the heal
/// on these seeds, 21 s in the campaign. Now an agent that receives a
/// datagram for an earlier identity of its own announces itself to the
/// sender, and a member learned as down is told so like one seen going
/// down.
#[test]
fn a_member_everyone_learned_as_down_is_told_and_taken_back_after_the_heal() {
    for seed in 1..=5 {
        let report = report_of(&format!(
            r#"
            name = "t-learned-down"
            seed = {seed}
            nodes = 5
            duration_s = 100
            [[actions]]
            at_s = 20
            action = "partition"
            split = 1
            [[actions]]
            at_s = 28
            action = "crash"
            node = 1
            [[actions]]
            at_s = 29
            action = "restart"
            node = 1
            [[actions]]
            at_s = 30
            action = "crash"
            node = 2
            [[actions]]
            at_s = 31
            action = "restart"
            node = 2
            [[actions]]
            at_s = 32
            action = "crash"
            node = 3
            [[actions]]
            at_s = 33
            action = "restart"
            node = 3
            [[actions]]
            at_s = 34
            action = "crash"
            node = 4
            [[actions]]
            at_s = 35
            action = "restart"
            node = 4
            [[actions]]
            at_s = 40
            action = "heal"
            "#
        ));
        let heal = report
            .heal_convergence_s
            .unwrap_or_else(|| panic!("seed {seed}: never converged after the heal: {report}"));
        assert!(heal < 5.0, "seed {seed}: {heal}s after the heal: {report}");
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let text = r#"
        name = "t-determinism"
        seed = 21
        nodes = 15
        duration_s = 60
        [network]
        loss = 0.05
        [[actions]]
        at_s = 10
        action = "change"
        node = -1
        [[actions]]
        at_s = 20
        action = "pause"
        node = 3
        seconds = 4
        [[actions]]
        at_s = 30
        action = "crash"
        node = 4
        [[actions]]
        at_s = 45
        action = "restart"
        node = 4
        "#;
    assert_eq!(report_of(text), report_of(text));
    let mut other = scenario(text);
    other.seed = 22;
    assert_ne!(run(other).0.events, report_of(text).events);
}

#[test]
fn turn_undead_regression_healthy_nodes_never_rejoin_under_loss() {
    // foca 2.0.0 sends TurnUndead from the suspect->down timer even after a
    // refutation; with notify_down_members on, healthy nodes rejoin.
    let text = r#"
        name = "t-turn-undead"
        seed = 4
        nodes = 20
        duration_s = 600
        [network]
        loss = 0.1
        "#;
    let report = report_of(text);
    assert_eq!(report.renewals, 0, "seed {}: {report}", report.seed);
    let mut defect = scenario(text);
    defect.notify_down_members = true;
    let (defect, _) = run(defect);
    println!("{defect}");
    assert!(
        defect.renewals > 0,
        "the defect shows with TurnUndead on: {defect}"
    );
}

#[test]
fn scenario_files_parse() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")).unwrap() {
        let path = entry.unwrap().path();
        let scenario = Scenario::load(&path).unwrap();
        assert!(scenario.bootstrap == Bootstrap::Converged || scenario.nodes <= 1_000);
        let _ = scenario
            .actions
            .iter()
            .filter(|a| matches!(a.action, Action::Heal))
            .count();
    }
}
