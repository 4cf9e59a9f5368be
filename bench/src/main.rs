//! `shoal-bench`: Shoal against HashiCorp Serf, side by side on loopback,
//! and the lookup latency of Shoal's HTTP API. A benchmark, not a test:
//! see "Benchmarks" in CONTRIBUTING.md and the results in docs/benchmarks.md.
//!
//! Modules:
//! - `cluster`: the head-to-head run for one system and one cluster size:
//!   join, then `footprint` (idle CPU, gossip bytes, memory), then
//!   `propagation` of a change, then failure detection;
//! - `system`: how to start and query a Shoal or a Serf agent;
//! - `serf_rpc`, `msgpack`: Serf's RPC protocol;
//! - `http`: a one-connection HTTP/1.1 client;
//! - `lookup`: the localhost lookup benchmark, static, under `churn`, with
//!   many users and all misses; `load`: its generators (wrk and an
//!   open-loop one); `cache_stats`: the agent's cache hit and miss counters;
//!   `lookup_report`: its tables;
//! - `dns`: Shoal's DNS interface beside dnsmasq (dnsperf);
//! - `process`, `netns`: child processes, `/proc` figures, loopback counters;
//! - `traffic`: what each agent sends (a packet socket on the loopback);
//! - `report`, `stats`: CSV and markdown output, percentiles; `plot`: the
//!   cluster figures against the cluster's size, as an SVG;
//! - `faults`: false positives under CPU starvation, bursty and one-way
//!   loss (through a user-space relay) and a host-wide CPU hog;
//! - `coordinates`: network coordinates' accuracy; `wan`: datacenters
//!   joined by a WAN pool (both through the relay's delays).

mod cache_stats;
mod churn;
mod cluster;
mod coordinates;
mod dns;
mod faults;
mod footprint;
mod http;
mod load;
mod lookup;
mod lookup_report;
mod msgpack;
mod netns;
mod plot;
mod process;
mod propagation;
mod report;
mod serf_rpc;
mod stats;
mod system;
mod traffic;
mod wan;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmark Shoal against Serf on loopback, and Shoal's lookup latency")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything: the cluster sweep, the lookup and DNS benchmarks, then
    /// the report.
    All {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        lookup: LookupArgs,
        #[command(flatten)]
        dns: DnsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Shoal vs Serf clusters of each size: join, footprint, propagation, detection.
    Cluster {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Shoal's health, raw KV and flag lookups under load, each beside a bare axum server answering the same bytes: on a static cluster, under churn (1 registration/s, 10 KV writes/s), with 1,000 flag users, and all misses (3 and 100 instances), with the cache's hit ratio.
    Lookup {
        #[command(flatten)]
        lookup: LookupArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Shoal's DNS interface beside dnsmasq, with dnsperf.
    Dns {
        #[command(flatten)]
        dns: DnsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// False positives of Shoal and Serf under the same fault schedule:
    /// SIGSTOP bursts, bursty and one-way loss, a host-wide CPU hog.
    Faults {
        #[command(flatten)]
        faults: FaultArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Network coordinates' accuracy: Shoal agents in three zones with
    /// round trips between them made by the relay; writes coordinates.csv
    /// and its environment into --out (not part of the markdown report).
    Coordinates {
        #[command(flatten)]
        coordinates: CoordinateArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Datacenters joined by a WAN pool, their WAN links through the
    /// relay's delays: WAN bandwidth idle and under reads, cross-datacenter
    /// read latency over HTTP and DNS, a WAN member killed, a datacenter
    /// cut off and healed; writes wan_*.csv and wan_environment.txt into
    /// --out (not part of the markdown report).
    Wan {
        #[command(flatten)]
        wan: WanArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Renders the markdown report from the CSV files in --out.
    Report {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Directory for the CSV files.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// The markdown report to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    markdown: PathBuf,
    /// Scratch directory for agent logs and data.
    #[arg(long, default_value = "/tmp/shoal-bench")]
    work: PathBuf,
    /// The shoal binary (build it with `cargo build --release -p shoal-agent`).
    #[arg(long, default_value = "target/release/shoal")]
    shoal_bin: PathBuf,
    /// Stay in the host's network namespace (no root needed; then Serf's
    /// gossip bytes cannot be measured).
    #[arg(long)]
    no_netns: bool,
}

#[derive(Args, Clone)]
struct ClusterArgs {
    /// Cluster sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    sizes: Vec<usize>,
    /// Systems, comma-separated: shoal (its defaults), shoal-serf-intervals
    /// (anti-entropy every 30 s, as Serf's push-pull, and suspicion
    /// multiplier 4, as Serf's; the rest of Shoal's defaults already match
    /// Serf's LAN profile), serf.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shoal,shoal-serf-intervals,serf"
    )]
    systems: Vec<String>,
    /// The serf binary (Debian: apt-get install serf).
    #[arg(long, default_value = "serf")]
    serf_bin: PathBuf,
    /// Propagation rounds per observation mode.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Agents SIGKILLed, one after the other, for failure detection.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Shortest idle window for CPU and gossip bytes: it lasts at least
    /// three of Serf's push-pull intervals at the cluster's scale (90 s up
    /// to 32 agents, 180 s at 50, 270 s at 100) and starts after the first.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Poll interval while waiting for a change to propagate.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    change_poll: Duration,
    /// Poll interval of membership views (join, failure detection).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    view_poll: Duration,
    /// Pause after convergence and between rounds.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Shortest pause between the join and the idle window (the join's
    /// gossip dies down); at least Serf's scaled push-pull interval + 5 s.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Go on with a sweep that --out already holds part of, for one longer
    /// than a sitting: keep the (system, size) cells its CSVs hold complete,
    /// run only the others (an interrupted cell starts over) and, with
    /// `all`, skip the lookup and DNS runs whose CSV is already there.
    /// Each part adds its own record (source, start, end, load) to
    /// environment.txt.
    #[arg(long)]
    resume: bool,
}

#[derive(Args, Clone)]
struct DnsArgs {
    /// The fixed query rate of the latency runs.
    #[arg(long, default_value_t = 10_000)]
    dns_rate: u32,
    /// Length of each dnsperf run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    dns_duration: Duration,
    #[arg(long, default_value = "dnsperf")]
    dnsperf_bin: PathBuf,
    #[arg(long, default_value = "dnsmasq")]
    dnsmasq_bin: PathBuf,
}

#[derive(Args, Clone)]
struct CoordinateArgs {
    /// Agents, dealt round-robin to the zones.
    #[arg(long = "coordinate-agents", default_value_t = 30)]
    agents: usize,
    /// Round trips between zones in ms, one row per zone, rows separated
    /// by `;` (the diagonal: inside a zone).
    #[arg(long, default_value = "1,20,80;20,1,80;80,80,1")]
    zone_rtt: String,
    /// When to measure, after the last agent started.
    #[arg(long, value_delimiter = ',', default_value = "15s,30s,60s,120s", value_parser = humantime::parse_duration)]
    at: Vec<Duration>,
    /// Runs (each starts a new cluster).
    #[arg(
        long = "coordinate-seeds",
        value_delimiter = ',',
        default_value = "1,2,3"
    )]
    seeds: Vec<u64>,
}

#[derive(Args, Clone)]
struct WanArgs {
    /// Agents per datacenter.
    #[arg(long = "dc-agents", default_value_t = 50)]
    agents: usize,
    /// WAN members per datacenter.
    #[arg(long = "wan-members", default_value_t = 3)]
    wan_members: usize,
    /// Round trips between datacenters in ms, one row per datacenter, rows
    /// separated by `;` (the diagonal: between WAN members of one).
    #[arg(long, default_value = "1,50,100;50,1,150;100,150,1")]
    dc_rtt: String,
    /// Sequential reads of each datacenter, over HTTP and over DNS.
    #[arg(long = "wan-reads", default_value_t = 300)]
    reads: usize,
    /// The idle window for the WAN pool's own traffic (three of its
    /// push-pull intervals by default).
    #[arg(long = "wan-idle", default_value = "3m", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// How long the last datacenter stays cut off.
    #[arg(long = "wan-cut", default_value = "4m", value_parser = humantime::parse_duration)]
    cut: Duration,
}

#[derive(Args, Clone)]
struct FaultArgs {
    /// Agents per cluster.
    #[arg(long, default_value_t = 50)]
    n: usize,
    /// Length of the fault phase of each run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    fault_duration: Duration,
    /// Seeds, comma-separated: each fixes the victims and the bursts, the
    /// same for every system.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Faults, comma-separated: stop, bursty-loss, one-way-loss, hog.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stop,bursty-loss,one-way-loss,hog"
    )]
    faults: Vec<String>,
    /// Systems, comma-separated: shoal, serf.
    #[arg(long, value_delimiter = ',', default_value = "shoal,serf")]
    fault_systems: Vec<String>,
    /// The serf binary.
    #[arg(long, default_value = "serf")]
    serf_bin: PathBuf,
    /// Victims of `stop` and `one-way-loss` (the other agents are healthy).
    #[arg(long, default_value_t = 3)]
    victims: usize,
    /// `stop`: how long a victim stays SIGSTOPped (MIN..MAX, uniform).
    #[arg(long, default_value = "200ms..800ms", value_parser = faults::parse_range)]
    stop_burst: std::ops::RangeInclusive<Duration>,
    /// `stop`: running time between two stops of a victim.
    #[arg(long, default_value = "1s..5s", value_parser = faults::parse_range)]
    stop_gap: std::ops::RangeInclusive<Duration>,
    /// `one-way-loss`: how long everything sent to a victim is lost.
    #[arg(long, default_value = "1s..6s", value_parser = faults::parse_range)]
    deaf_burst: std::ops::RangeInclusive<Duration>,
    /// `one-way-loss`: time between two such bursts of a victim.
    #[arg(long, default_value = "5s..20s", value_parser = faults::parse_range)]
    deaf_gap: std::ops::RangeInclusive<Duration>,
    /// `one-way-loss`: share of what is sent to a victim lost in a burst.
    #[arg(long, default_value_t = 1.0)]
    one_way_loss: f64,
    /// `hog`: how long the spinning threads run.
    #[arg(long, default_value = "2s..10s", value_parser = faults::parse_range)]
    hog_burst: std::ops::RangeInclusive<Duration>,
    /// `hog`: time between two hog bursts.
    #[arg(long, default_value = "5s..20s", value_parser = faults::parse_range)]
    hog_gap: std::ops::RangeInclusive<Duration>,
    /// `hog`: spinning threads [default: one per core].
    #[arg(long)]
    hog_threads: Option<usize>,
    /// `bursty-loss`: chance per step of a link going from good to bad.
    #[arg(long, default_value_t = 0.001)]
    ge_p: f64,
    /// `bursty-loss`: chance per step of going from bad back to good.
    #[arg(long, default_value_t = 0.02)]
    ge_r: f64,
    /// `bursty-loss`: loss rate in the good state.
    #[arg(long, default_value_t = 0.0)]
    ge_loss_good: f64,
    /// `bursty-loss`: loss rate in the bad state.
    #[arg(long, default_value_t = 1.0)]
    ge_loss_bad: f64,
    /// `bursty-loss`: the chain's step.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    ge_step: Duration,
    /// Poll interval of every agent's membership view.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    fault_poll: Duration,
    /// Pause between convergence and the fault.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    fault_settle: Duration,
}

#[derive(Args, Clone)]
struct LookupArgs {
    /// Fixed request rates (per second) for the open-loop runs.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    rates: Vec<u32>,
    /// Length of each load run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive connections of the load generators.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value = "wrk")]
    wrk_bin: PathBuf,
    /// The bare "hello" server [default: shoal-bench-hello beside this binary].
    #[arg(long)]
    hello_bin: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let common = match &cli.command {
        Cmd::All { common, .. }
        | Cmd::Cluster { common, .. }
        | Cmd::Lookup { common, .. }
        | Cmd::Dns { common, .. }
        | Cmd::Faults { common, .. }
        | Cmd::Coordinates { common, .. }
        | Cmd::Wan { common, .. }
        | Cmd::Report { common } => common.clone(),
    };
    let private_netns = !common.no_netns && !matches!(cli.command, Cmd::Report { .. });
    if private_netns {
        // First, while this is the only thread.
        netns::enter_private()?;
    }
    // One thread: every child is spawned from it (see ChildGuard).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        match cli.command {
            Cmd::All {
                cluster,
                lookup,
                dns,
                common,
            } => {
                run_cluster(&cluster, &common, private_netns).await?;
                let done = |csv: &str| cluster.resume && common.out.join(csv).exists();
                if done("lookup.csv") {
                    eprintln!("--resume: lookup.csv is there, skipping the lookup run");
                } else {
                    run_lookup(&lookup, &common).await?;
                }
                if done("dns.csv") {
                    eprintln!("--resume: dns.csv is there, skipping the DNS run");
                } else {
                    run_dns(&dns, &common).await?;
                }
                write_report(&common)
            }
            Cmd::Cluster { cluster, common } => {
                run_cluster(&cluster, &common, private_netns).await?;
                write_report(&common)
            }
            Cmd::Lookup { lookup, common } => {
                run_lookup(&lookup, &common).await?;
                write_report(&common)
            }
            Cmd::Dns { dns, common } => {
                run_dns(&dns, &common).await?;
                write_report(&common)
            }
            Cmd::Faults { faults, common } => {
                run_faults(&faults, &common).await?;
                write_report(&common)
            }
            Cmd::Coordinates {
                coordinates,
                common,
            } => run_coordinates(&coordinates, &common).await,
            Cmd::Wan { wan, common } => run_wan(&wan, &common).await,
            Cmd::Report { common } => write_report(&common),
        }
    })
}

/// A square matrix of round trips in ms: rows separated by `;`, values
/// by `,`.
fn parse_rtt_matrix(flag: &str, text: &str) -> Result<Vec<Vec<f64>>> {
    let matrix = text
        .split(';')
        .map(|row| {
            row.split(',')
                .map(|value| value.trim().parse::<f64>())
                .collect::<Result<Vec<f64>, _>>()
        })
        .collect::<Result<Vec<Vec<f64>>, _>>()
        .with_context(|| format!("{flag} `{text}`: not numbers"))?;
    anyhow::ensure!(
        matrix.iter().all(|row| row.len() == matrix.len()),
        "{flag} `{text}`: one row per zone, as many values as rows"
    );
    Ok(matrix)
}

async fn run_wan(args: &WanArgs, common: &Common) -> Result<()> {
    let shoal_bin = std::path::absolute(&common.shoal_bin)?;
    let options = wan::Options {
        per_dc: args.agents,
        wan_per_dc: args.wan_members,
        dc_rtt_ms: parse_rtt_matrix("--dc-rtt", &args.dc_rtt)?,
        reads: args.reads,
        idle: args.idle,
        cut: args.cut,
        work: common.work.join("wan"),
    };
    let mut environment = environment("wan", &shoal_bin, None);
    writeln!(
        environment,
        "wan: {} datacenters x {} agents, {} WAN members each, round trips (ms) {:?}, {} reads per datacenter and kind, idle {:?}, cut {:?}",
        options.dc_rtt_ms.len(),
        options.per_dc,
        options.wan_per_dc,
        options.dc_rtt_ms,
        options.reads,
        options.idle,
        options.cut
    )?;
    std::fs::create_dir_all(&common.out)?;
    let rows = wan::run(&shoal_bin, &options).await?;
    for (file, header, rows) in [
        ("wan_latency.csv", wan::LATENCY_HEADER, &rows.latency),
        ("wan_traffic.csv", wan::TRAFFIC_HEADER, &rows.traffic),
        ("wan_events.csv", wan::EVENT_HEADER, &rows.events),
    ] {
        let mut csv = format!("{header}\n");
        for row in rows {
            csv.push_str(row);
            csv.push('\n');
        }
        std::fs::write(common.out.join(file), csv)?;
    }
    finish_environment(&mut environment);
    std::fs::write(common.out.join("wan_environment.txt"), environment)?;
    Ok(())
}

async fn run_coordinates(args: &CoordinateArgs, common: &Common) -> Result<()> {
    let shoal_bin = std::path::absolute(&common.shoal_bin)?;
    let zone_rtt_ms = parse_rtt_matrix("--zone-rtt", &args.zone_rtt)?;
    let options = coordinates::Options {
        n: args.agents,
        zone_rtt_ms,
        at: args.at.clone(),
        seeds: args.seeds.clone(),
        work: common.work.join("coordinates"),
    };
    let mut environment = environment("coordinates", &shoal_bin, None);
    writeln!(
        environment,
        "coordinates: {} agents, zone round trips (ms) {:?}, measured at {:?}, seeds {:?}",
        options.n, options.zone_rtt_ms, options.at, options.seeds
    )?;
    std::fs::create_dir_all(&common.out)?;
    let mut csv = format!("{}\n", coordinates::HEADER);
    for &seed in &options.seeds {
        for row in coordinates::run(&shoal_bin, seed, &options).await? {
            csv.push_str(&row);
            csv.push('\n');
        }
        std::fs::write(common.out.join("coordinates.csv"), &csv)?;
    }
    finish_environment(&mut environment);
    std::fs::write(common.out.join("coordinates_environment.txt"), environment)?;
    Ok(())
}

async fn run_cluster(args: &ClusterArgs, common: &Common, private_netns: bool) -> Result<()> {
    let shoal_bin = std::path::absolute(&common.shoal_bin)?;
    anyhow::ensure!(
        shoal_bin.exists(),
        "{} is missing: cargo build --release -p shoal-agent",
        shoal_bin.display()
    );
    let options = cluster::Options {
        rounds: args.rounds,
        kills: args.kills,
        idle: args.idle,
        change_poll: args.change_poll,
        view_poll: args.view_poll,
        settle: args.settle,
        warmup: args.warmup,
        private_netns,
        work: common.work.clone(),
    };
    let (mut report, complete) = if args.resume {
        report::Report::load_complete(&common.out)?
    } else {
        Default::default()
    };
    let serf_bin = args
        .systems
        .iter()
        .any(|system| system == "serf")
        .then_some(args.serf_bin.as_path());
    let mut environment = environment("cluster", &shoal_bin, serf_bin);
    writeln!(environment, "private network namespace: {private_netns}")?;
    writeln!(
        environment,
        "rounds: {} per observation mode; kills: {}; sizes: {:?}; systems: {:?}",
        args.rounds, args.kills, args.sizes, args.systems
    )?;
    let environment_file = common.out.join("environment.txt");
    let earlier_parts = match std::fs::read_to_string(&environment_file) {
        Ok(text) if args.resume => {
            format!("{text}\n# resumed (--resume): cells already complete {complete:?}\n")
        }
        _ => String::new(),
    };
    // Written now and again at the end, so an interrupted part leaves its record.
    std::fs::create_dir_all(&common.out)?;
    std::fs::write(&environment_file, format!("{earlier_parts}{environment}"))?;
    for &size in &args.sizes {
        for system in &args.systems {
            if complete.contains(&(system.clone(), size)) {
                eprintln!(
                    "--resume: {system} n={size} is complete in {}",
                    common.out.display()
                );
                continue;
            }
            let system = match system.as_str() {
                "shoal" | "shoal-serf-intervals" => system::System::Shoal {
                    bin: shoal_bin.clone(),
                    serf_intervals: system == "shoal-serf-intervals",
                },
                "serf" => system::System::Serf {
                    bin: args.serf_bin.clone(),
                },
                other => {
                    anyhow::bail!("unknown system `{other}`: shoal, shoal-serf-intervals or serf")
                }
            };
            cluster::run(&system, size, &options, &mut report).await?;
            // Write after every step, so an interrupted sweep keeps its figures.
            report.write(&common.out)?;
        }
    }
    finish_environment(&mut environment);
    std::fs::write(&environment_file, format!("{earlier_parts}{environment}"))?;
    Ok(())
}

async fn run_faults(args: &FaultArgs, common: &Common) -> Result<()> {
    let shoal_bin = std::path::absolute(&common.shoal_bin)?;
    anyhow::ensure!(
        shoal_bin.exists(),
        "{} is missing: cargo build --release -p shoal-agent",
        shoal_bin.display()
    );
    for (flag, value) in [
        ("--ge-p", args.ge_p),
        ("--ge-r", args.ge_r),
        ("--ge-loss-good", args.ge_loss_good),
        ("--ge-loss-bad", args.ge_loss_bad),
        ("--one-way-loss", args.one_way_loss),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&value),
            "{flag} {value}: must be a probability in [0, 1]"
        );
    }
    anyhow::ensure!(
        args.ge_p + args.ge_r > 0.0 && !args.ge_step.is_zero(),
        "--ge-p/--ge-r: one must be above 0; --ge-step above 0"
    );
    let faults = args
        .faults
        .iter()
        .map(|f| faults::Fault::parse(f))
        .collect::<Result<Vec<_>>>()?;
    let systems = args
        .fault_systems
        .iter()
        .map(|name| match name.as_str() {
            "shoal" => Ok(system::System::Shoal {
                bin: shoal_bin.clone(),
                serf_intervals: false,
            }),
            "serf" => Ok(system::System::Serf {
                bin: args.serf_bin.clone(),
            }),
            other => anyhow::bail!("--fault-systems: unknown system `{other}`: shoal or serf"),
        })
        .collect::<Result<Vec<_>>>()?;
    let options = faults::Options {
        n: args.n,
        duration: args.fault_duration,
        seeds: args.seeds.clone(),
        victims: args.victims,
        stop_burst: args.stop_burst.clone(),
        stop_gap: args.stop_gap.clone(),
        deaf_burst: args.deaf_burst.clone(),
        deaf_gap: args.deaf_gap.clone(),
        one_way_loss: args.one_way_loss,
        hog_burst: args.hog_burst.clone(),
        hog_gap: args.hog_gap.clone(),
        hog_threads: args
            .hog_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        gilbert_elliott: faults::GilbertElliott {
            p: args.ge_p,
            r: args.ge_r,
            loss_good: args.ge_loss_good,
            loss_bad: args.ge_loss_bad,
            step: args.ge_step,
        },
        poll: args.fault_poll,
        settle: args.fault_settle,
        work: common.work.join("faults"),
    };
    let serf_bin = systems
        .iter()
        .any(|s| matches!(s, system::System::Serf { .. }))
        .then_some(args.serf_bin.as_path());
    let mut environment = environment("faults", &shoal_bin, serf_bin);
    writeln!(
        environment,
        "faults: n {}, {:?} per run, seeds {:?}, faults {:?}, systems {:?}, hog threads {}",
        options.n,
        options.duration,
        options.seeds,
        args.faults,
        args.fault_systems,
        options.hog_threads
    )?;
    let csv = common.out.join("faults.csv");
    let mut rows = Vec::new();
    for &seed in &options.seeds {
        for &fault in &faults {
            let victims = faults::victims(fault, seed, &options);
            writeln!(
                environment,
                "schedule {} seed {seed}: victims {victims:?}; {}",
                fault.name(),
                faults::describe(fault, seed, &victims, &options)
            )?;
            for system in &systems {
                rows.push(faults::run(system, fault, seed, &options).await?);
                faults::write_csv(&csv, &rows)?;
            }
        }
    }
    finish_environment(&mut environment);
    std::fs::write(common.out.join("faults_environment.txt"), environment)?;
    Ok(())
}

async fn run_lookup(args: &LookupArgs, common: &Common) -> Result<()> {
    let options = lookup::Options {
        shoal_bin: std::path::absolute(&common.shoal_bin)?,
        hello_bin: args
            .hello_bin
            .clone()
            .unwrap_or_else(lookup::default_hello_bin),
        wrk_bin: args.wrk_bin.clone(),
        rates: args.rates.clone(),
        duration: args.duration,
        connections: args.connections,
        work: common.work.join("lookup"),
    };
    let mut environment = environment("lookup", &options.shoal_bin, None);
    let rows = lookup::run(&options).await?;
    let mut text = format!("{}\n", lookup::HEADER);
    for row in rows {
        text.push_str(&row);
        text.push('\n');
    }
    std::fs::create_dir_all(&common.out)?;
    std::fs::write(common.out.join("lookup.csv"), text)?;
    finish_environment(&mut environment);
    std::fs::write(common.out.join("lookup_environment.txt"), environment)?;
    Ok(())
}

async fn run_dns(args: &DnsArgs, common: &Common) -> Result<()> {
    let options = dns::Options {
        shoal_bin: std::path::absolute(&common.shoal_bin)?,
        dnsperf_bin: args.dnsperf_bin.clone(),
        dnsmasq_bin: args.dnsmasq_bin.clone(),
        rate: args.dns_rate,
        duration: args.dns_duration,
        work: common.work.join("dns"),
    };
    let mut environment = environment("dns", &options.shoal_bin, None);
    let rows = dns::run(&options).await?;
    finish_environment(&mut environment);
    let mut text = format!("{}\n", dns::HEADER);
    for row in rows {
        text.push_str(&row);
        text.push('\n');
    }
    std::fs::create_dir_all(&common.out)?;
    std::fs::write(common.out.join("dns.csv"), text)?;
    std::fs::write(common.out.join("dns_environment.txt"), environment)?;
    Ok(())
}

/// Where a run's figures come from, written beside its CSV before it
/// starts (then [`finish_environment`]): the exact command, the source
/// (git commit, and whether the tree had uncommitted changes), the
/// binaries, the machine, and the load average before and after, so no
/// figure needs an adjective about the machine.
fn environment(run_name: &str, shoal_bin: &Path, serf_bin: Option<&Path>) -> String {
    let run = |program: &str, args: &[&str]| -> String {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let shoal_bin_text = shoal_bin.display().to_string();
    let commit = run("git", &["rev-parse", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty());
    let source = match (commit.is_empty(), dirty) {
        (true, _) | (_, Err(_)) => "unknown (not run from a git checkout)".to_string(),
        (false, Ok(true)) => format!("{commit} with uncommitted changes"),
        (false, Ok(false)) => format!("{commit} (clean)"),
    };
    let serf = serf_bin.map_or_else(
        || "not used".to_string(),
        |bin| run(&bin.display().to_string(), &["version"]),
    );
    format!(
        "{run_name} run: {}\nsource: {source}\nstart: {}\nload average at start: {}\n\
         kernel: {}\ncpus: {} x {cpu}\nmemory: {}\nshoal: {} sha256 {}\nserf: {serf}\n",
        std::env::args().collect::<Vec<_>>().join(" "),
        run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        run("uname", &["-r"]),
        std::thread::available_parallelism().map_or(0, usize::from),
        run("sh", &["-c", "grep MemTotal /proc/meminfo"]),
        // `shoal version`: the release and the commit it was built from.
        std::process::Command::new(shoal_bin)
            .arg("version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .lines()
                .take(2)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        run("sha256sum", &[&shoal_bin_text])
            .split_whitespace()
            .next()
            .unwrap_or(""),
    )
}

/// Appends the end time and the load average after the run.
fn finish_environment(environment: &mut String) {
    let end = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        environment,
        "end: {end}\nload average at end: {}",
        load.trim()
    );
}

/// `path` as seen from `base` when it lies under it (the markdown links
/// the plot beside the CSVs), else as given.
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base).unwrap_or(path).to_path_buf()
}

fn write_report(common: &Common) -> Result<()> {
    let out = &common.out;
    let mut text = String::from("# Benchmarks\n\n");
    text.push_str("<!-- Generated by `shoal-bench report` from the CSV files in docs/benchmarks/; edit docs/benchmarks/notes.md instead. -->\n\n");
    let summary = out.join("cluster_summary.csv");
    if summary.exists() {
        text.push_str("## Shoal vs Serf, same machine, same run\n\n");
        text.push_str(&report::render_cluster(&summary)?);
        if let Some(svg) = plot::scaling_svg(&report::load_summary(&summary)?) {
            std::fs::write(out.join("scaling.svg"), svg)?;
            let link = relative_to(out, common.markdown.parent().unwrap_or(Path::new("")));
            let _ = writeln!(
                text,
                "\n![Each figure against the number of agents, one line per system]({})\n",
                link.join("scaling.svg").display()
            );
        }
    }
    let lookup_csv = out.join("lookup.csv");
    if lookup_csv.exists() {
        text.push_str("## Lookup latency (Shoal alone)\n\n");
        text.push_str(&lookup_report::render(&lookup_csv)?);
        text.push('\n');
    }
    let dns_csv = out.join("dns.csv");
    if dns_csv.exists() {
        text.push_str("## DNS: Shoal beside dnsmasq (dnsperf, loopback)\n\n");
        text.push_str(&dns::render(&dns_csv)?);
        text.push('\n');
        if let Ok(notes) = std::fs::read_to_string(out.join("dns_notes.md")) {
            text.push_str(&notes);
            text.push('\n');
        }
    }
    let faults_csv = out.join("faults.csv");
    if faults_csv.exists() {
        text.push_str("## False positives under faults, Shoal beside Serf\n\n");
        text.push_str(&faults::render(&faults_csv)?);
        text.push('\n');
    }
    if let Ok(notes) = std::fs::read_to_string(out.join("notes.md")) {
        text.push_str("## How it is measured, findings, and what would close the gaps\n\n");
        text.push_str(&notes);
        text.push('\n');
    }
    for file in [
        "environment.txt",
        "lookup_environment.txt",
        "dns_environment.txt",
        "faults_environment.txt",
    ] {
        if let Ok(environment) = std::fs::read_to_string(out.join(file)) {
            writeln!(text, "### {file}\n\n```\n{}```\n", environment)?;
        }
    }
    std::fs::write(&common.markdown, text)
        .with_context(|| format!("write {}", common.markdown.display()))?;
    eprintln!("wrote {}", common.markdown.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_records_its_command_source_machine_and_load() {
        let mut text = environment("lookup", Path::new("/bin/true"), None);
        finish_environment(&mut text);
        for field in [
            "lookup run: ",
            "source: ",
            "start: ",
            "load average at start: ",
            "kernel: ",
            "cpus: ",
            "serf: not used",
            "end: ",
            "load average at end: ",
        ] {
            assert!(text.contains(field), "no `{field}` in:\n{text}");
        }
        // Run from this checkout: the commit is named.
        let source = text.lines().find(|l| l.starts_with("source: ")).unwrap();
        assert!(!source.contains("unknown"), "{source}");
    }
}
