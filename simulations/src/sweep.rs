//! The sweeps behind `simulations/README.md`: cluster size, packet loss, a
//! slow node with and without local health, and the one-hour soak. Each
//! writes `<sweep>.csv` (one report per row) and an SVG chart.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::report::Report;
use crate::scenario::{Action, NetworkSpec, Scenario, TimedAction};
use crate::{plot, run};

/// A scenario with defaults; the sweeps adjust it.
fn base(name: String, nodes: usize, duration_s: f64, seed: u64) -> Scenario {
    Scenario {
        name,
        seed,
        nodes,
        duration_s,
        bootstrap: crate::scenario::Bootstrap::Converged,
        view: 0,
        static_views: false,
        join_spread_s: 5.0,
        seeds: 3,
        anti_entropy: true,
        local_health: true,
        suspicion_max_mult: None,
        suspicion_mult: None,
        notify_down_members: false,
        remove_down_after_s: None,
        check_name: false,
        profile: Default::default(),
        max_exchanges: 0,
        sample_s: 5.0,
        traffic_from_s: 0.0,
        tombstone_grace_s: None,
        network: NetworkSpec::default(),
        actions: Vec::new(),
    }
}

fn at(at_s: f64, action: Action) -> TimedAction {
    TimedAction { at_s, action }
}

/// The size points: full views up to 1,000 nodes; at 10,000 a symmetric
/// random view of ~256 members kept static (see the README for why).
pub fn size_scenario(nodes: usize, seed: u64) -> Scenario {
    let mut scenario = base(format!("size-{nodes}"), nodes, 60.0, seed);
    if nodes > 1_000 {
        scenario.view = 256;
        scenario.static_views = true;
        scenario.anti_entropy = false;
    }
    scenario.sample_s = 10.0;
    // Three changes and a crash, far enough apart not to overlap.
    scenario.actions = vec![
        at(10.0, Action::Change { node: -1 }),
        at(15.0, Action::Crash { node: nodes / 2 }),
        at(35.0, Action::Change { node: -1 }),
        at(45.0, Action::Change { node: -1 }),
    ];
    scenario
}

/// N = 100 at the given loss for `duration_s`, with changes and one crash.
pub fn loss_scenario(loss: f64, duration_s: f64, seed: u64) -> Scenario {
    let mut scenario = base(
        format!("loss-{}", (loss * 100.0).round()),
        100,
        duration_s,
        seed,
    );
    scenario.network.loss = loss;
    scenario.actions = vec![
        at(10.0, Action::Change { node: -1 }),
        at(60.0, Action::Crash { node: 50 }),
        at(120.0, Action::Change { node: -1 }),
    ];
    scenario
}

/// A 30-node cluster where node 4 handles datagrams 2-4 s late.
pub fn slow_scenario(local_health: bool, seed: u64) -> Scenario {
    let name = format!("slow-lh-{}", if local_health { "on" } else { "off" });
    let mut scenario = base(name, 30, 600.0, seed);
    scenario.local_health = local_health;
    scenario.network.loss = 0.01;
    scenario.actions = vec![at(
        30.0,
        Action::Slow {
            node: 4,
            delay_ms: 2000.0,
            jitter_ms: 2000.0,
        },
    )];
    scenario
}

/// The faults that cause false positives in practice (issue 23), on a
/// 50-node cluster for ten virtual minutes:
///
/// - `starve`: five nodes stopped for 200-800 ms every 1-3 s (SIGSTOP
///   bursts: their timers and receives wait together, then run);
/// - `bursty`: Gilbert-Elliott loss on every link, bursts of 10 datagrams
///   on average, about 9 % lost;
/// - `oneway`: five nodes lose 30 % of what they send, nothing of what
///   they receive;
/// - `starve-loss`: `starve` with 5 % uniform loss on top;
/// - `deaf`: five nodes hear nothing for 1-6 s every 5-20 s (everything
///   sent to them is lost, what they send gets through), the real-process
///   harness's one-way loss (`shoal-bench faults`). Unlike the others,
///   these nodes can rightly be declared down: a burst longer than the
///   suspicion timeout is an outage.
///
/// `dynamic`: Lifeguard's dynamic suspicion (the default); else the
/// suspicion is fixed (`suspicion_max_mult = 1`), as before it.
pub const FAULT_KINDS: [&str; 5] = ["starve", "bursty", "oneway", "starve-loss", "deaf"];

pub fn fault_scenario(kind: &str, dynamic: bool, seed: u64) -> Scenario {
    use rand::{RngExt, SeedableRng};
    let name = format!(
        "faults-{kind}-{}",
        if dynamic { "dynamic" } else { "fixed" }
    );
    let mut scenario = base(name, 50, 600.0, seed);
    if !dynamic {
        scenario.suspicion_max_mult = Some(1);
    }
    let faulted = [10, 20, 30, 40, 45];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5354_4152);
    let mut stop_bursts = |actions: &mut Vec<TimedAction>| {
        for &node in &faulted {
            let mut t = 30.0 + rng.random_range(0.0..3.0);
            while t < 570.0 {
                let seconds = rng.random_range(0.2..0.8);
                actions.push(at(t, Action::Pause { node, seconds }));
                t += seconds + rng.random_range(1.0..3.0);
            }
        }
    };
    match kind {
        "starve" => stop_bursts(&mut scenario.actions),
        "starve-loss" => {
            scenario.network.loss = 0.05;
            stop_bursts(&mut scenario.actions);
        }
        "bursty" => scenario.actions.push(at(
            30.0,
            Action::BurstyLoss {
                enter: 0.01,
                leave: 0.1,
                loss_in_burst: 1.0,
            },
        )),
        "oneway" => {
            for &from in &faulted {
                for to in (0..50).filter(|&to| to != from) {
                    scenario.actions.push(at(
                        30.0,
                        Action::LinkLoss {
                            from,
                            to,
                            loss: 0.3,
                        },
                    ));
                }
            }
        }
        "deaf" => {
            for &node in &faulted {
                let mut t = 30.0 + rng.random_range(0.0..5.0);
                while t < 570.0 {
                    let seconds = rng.random_range(1.0..6.0);
                    scenario.actions.push(at(t, Action::Deaf { node, seconds }));
                    t += seconds + rng.random_range(5.0..20.0);
                }
            }
        }
        other => panic!("unknown fault kind `{other}`"),
    }
    scenario.actions.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    scenario
}

/// A cold start (issue 23): `nodes` started together through one seed (a
/// datacenter's power cycle), then all restarted at once at 30 s (a
/// fleet-wide deploy), with the agent's duplicate-name check and its
/// limit of 8 exchanges served at once. The report's `records_complete_s`
/// says, for each, when every node held every node's current record.
pub fn cold_start_scenario(nodes: usize, seed: u64) -> Scenario {
    let mut scenario = base(format!("cold-start-{nodes}"), nodes, 50.0, seed);
    scenario.bootstrap = crate::scenario::Bootstrap::Join;
    scenario.join_spread_s = 0.2;
    scenario.seeds = 1;
    scenario.check_name = true;
    scenario.max_exchanges = 8;
    scenario.sample_s = 1.0;
    scenario.actions.push(at(30.0, Action::MassRestart));
    scenario
}

/// An idle cluster of `nodes` (3 seeds) for ten virtual minutes after a
/// ten-minute join: what each agent sends when nothing happens, seeds
/// included.
pub fn traffic_scenario(nodes: usize, seed: u64) -> Scenario {
    let mut scenario = base(format!("traffic-{nodes}"), nodes, 1200.0, seed);
    // Joined through the seeds, as real agents are; measured once the
    // join has settled (records spread by anti-entropy here: simulated
    // nodes skip the name check, after which an agent gossips its record).
    scenario.bootstrap = crate::scenario::Bootstrap::Join;
    scenario.traffic_from_s = 600.0;
    scenario.sample_s = 60.0;
    scenario
}

/// `kills` crashes one after the other, 30 s apart, each victim restarted
/// 15 s after its crash (so small clusters keep their size).
pub fn detect_scenario(nodes: usize, kills: usize, seed: u64) -> Scenario {
    let mut scenario = base(
        format!("detect-{nodes}"),
        nodes,
        30.0 * (kills as f64 + 1.0),
        seed,
    );
    let half = nodes / 2;
    scenario.actions = (0..kills)
        .flat_map(|kill| {
            let node = half + kill % (nodes - half);
            let at_s = 20.0 + 30.0 * kill as f64;
            [
                at(at_s, Action::Crash { node }),
                at(at_s + 15.0, Action::Restart { node }),
            ]
        })
        .collect();
    scenario
}

/// Runs the named sweeps and writes their CSV and SVG into `out`.
pub fn run_sweeps(
    only: &[String],
    max_nodes: usize,
    seed: u64,
    suspicion_mult: Option<f64>,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let wants = |name: &str| only.iter().any(|o| o == name);
    if wants("dissemination") || wants("detection") || wants("speed") {
        let sizes: Vec<usize> = [10, 100, 1_000, 10_000]
            .into_iter()
            .filter(|&n| n <= max_nodes)
            .collect();
        let reports = run_all(
            suspicion_mult,
            sizes.iter().map(|&n| size_scenario(n, seed)),
        );
        write_rows(out, "size", &reports)?;
        plot::size_chart(&reports, &out.join("size.svg"))?;
    }
    if wants("traffic") {
        let reports = run_all(
            suspicion_mult,
            [10, 50, 100, 250]
                .into_iter()
                .filter(|&n| n <= max_nodes)
                .map(|n| traffic_scenario(n, seed)),
        );
        write_rows(out, "traffic", &reports)?;
    }
    if wants("detect") {
        let reports = run_all(
            suspicion_mult,
            [10, 50, 100]
                .into_iter()
                .filter(|&n| n <= max_nodes)
                .map(|n| detect_scenario(n, 10, seed)),
        );
        write_rows(out, "detect", &reports)?;
    }
    if wants("loss") {
        let reports = run_all(
            suspicion_mult,
            [0.0, 0.01, 0.05, 0.10, 0.20]
                .into_iter()
                .map(|loss| loss_scenario(loss, 600.0, seed)),
        );
        write_rows(out, "loss", &reports)?;
        plot::loss_chart(&reports, &out.join("loss.svg"))?;
    }
    if wants("slow") {
        let reports = run_all(
            suspicion_mult,
            (0..3).flat_map(|offset| {
                [true, false]
                    .into_iter()
                    .map(move |lh| slow_scenario(lh, seed + offset))
            }),
        );
        write_rows(out, "slow", &reports)?;
        plot::slow_chart(&reports, &out.join("slow.svg"))?;
    }
    if wants("faults") {
        // Ten seeds from `seed`, each fault with and without dynamic
        // suspicion: counts per seed, not only a mean.
        let reports = run_all(
            suspicion_mult,
            (0..10).flat_map(|offset| {
                FAULT_KINDS.into_iter().flat_map(move |kind| {
                    [true, false]
                        .into_iter()
                        .map(move |dynamic| fault_scenario(kind, dynamic, seed + offset))
                })
            }),
        );
        write_rows(out, "faults", &reports)?;
    }
    if wants("cold-start") {
        let reports = run_all(
            suspicion_mult,
            (0..10).flat_map(|offset| {
                [20, 100, 250, 1_000]
                    .into_iter()
                    .filter(|&nodes| nodes <= max_nodes)
                    .map(move |nodes| cold_start_scenario(nodes, seed + offset))
            }),
        );
        write_rows(out, "cold-start", &reports)?;
    }
    if wants("hour") {
        let mut scenario = loss_scenario(0.05, 3_600.0, seed);
        scenario.name = "hour-loss-5".into();
        let reports = run_all(suspicion_mult, [scenario].into_iter());
        write_rows(out, "hour", &reports)?;
    }
    Ok(())
}

/// Runs each scenario, with `Min`'s multiplier overridden when given.
fn run_all(
    suspicion_mult: Option<f64>,
    scenarios: impl Iterator<Item = Scenario>,
) -> Vec<(Report, f64)> {
    scenarios
        .map(|mut scenario| {
            if suspicion_mult.is_some() {
                scenario.suspicion_mult = suspicion_mult;
            }
            let started = Instant::now();
            let (report, _) = run(scenario);
            let wall = started.elapsed().as_secs_f64();
            print!("{report}");
            println!("  wall time {wall:.2}s\n");
            (report, wall)
        })
        .collect()
}

fn write_rows(out: &Path, name: &str, reports: &[(Report, f64)]) -> anyhow::Result<()> {
    let path = out.join(format!("{name}.csv"));
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{},wall_s", Report::CSV_HEADER)?;
    for (report, wall) in reports {
        writeln!(file, "{},{wall:.2}", report.csv_row())?;
    }
    Ok(())
}
