//! `shoal-sim`: run one scenario, or the sweeps.
//!
//! ```text
//! cargo run --release -p shoal-simulations -- run simulations/scenarios/partition.toml
//! cargo run --release -p shoal-simulations -- sweep --out simulations/results
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_simulations::{Scenario, report, sweep};

#[derive(Parser)]
#[command(about = "Deterministic cluster simulator for Shoal's protocol core")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one scenario file, prints its report and writes CSV.
    Run {
        scenario: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the scenario's local health setting.
        #[arg(long)]
        local_health: Option<bool>,
        /// Where the CSV files go.
        #[arg(long, default_value = "simulations/results")]
        out: PathBuf,
    },
    /// Runs the sweeps (or some of them) and writes CSV and SVG.
    Sweep {
        /// Sweeps to run: dissemination, detection, traffic, detect, loss,
        /// slow, faults, cold-start, hour, speed.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "dissemination,detection,traffic,detect,loss,slow,faults,cold-start,hour,speed"
        )]
        only: Vec<String>,
        /// Largest cluster size of the size sweeps.
        #[arg(long, default_value_t = 10_000)]
        max_nodes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Overrides `Min`'s multiplier (`suspicion_mult`) in every
        /// scenario: for tuning it.
        #[arg(long)]
        suspicion_mult: Option<f64>,
        #[arg(long, default_value = "simulations/results")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            scenario,
            seed,
            local_health,
            out,
        } => {
            let mut scenario = Scenario::load(&scenario)?;
            if let Some(seed) = seed {
                scenario.seed = seed;
            }
            if let Some(local_health) = local_health {
                scenario.local_health = local_health;
            }
            let started = Instant::now();
            let (report, sim) = shoal_simulations::run(scenario);
            print!("{report}");
            println!("  wall time {:.2}s", started.elapsed().as_secs_f64());
            report::write_csv(&sim, &report, &out)
                .with_context(|| format!("writing CSV into {}", out.display()))?;
            println!("  CSV written to {}/{}-*.csv", out.display(), report.name);
        }
        Command::Sweep {
            only,
            max_nodes,
            seed,
            suspicion_mult,
            out,
        } => sweep::run_sweeps(&only, max_nodes, seed, suspicion_mult, &out)?,
    }
    Ok(())
}
