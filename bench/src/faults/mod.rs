//! False positives under the faults that cause them (issue 23, item 5):
//! N real agents of one system, a fault schedule drawn from a seed (the
//! same for Shoal and Serf), and a count of who declared whom failed.
//!
//! - `schedule`: victims, bursts and Gilbert-Elliott chains (pure);
//! - `relay`: the user-space lossy network every run's gossip crosses;
//! - `observe`: membership views, Shoal's counters, Serf's log lines;
//! - `inject`: SIGSTOP/SIGCONT bursts and the host-wide CPU hog.
//!
//! Every run, whatever its fault, sends gossip through the relay, so the
//! relay's cost is the same in every row.

mod inject;
mod observe;
pub(crate) mod relay;
mod schedule;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process;
use crate::system::{Agent, System};
pub use inject::describe;
pub use observe::{SERF_REFUTED_DEAD, SHOAL_DECLARED_DOWN};
use observe::{SerfLine, ShoalCounters, Views};
pub use schedule::GilbertElliott;

/// A fault kind, as named on the command line and in the CSV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A few agents SIGSTOPped for bursts, then SIGCONTinued.
    Stop,
    /// Gilbert-Elliott loss on every directed link.
    BurstyLoss,
    /// Loss of everything sent to a few agents, in bursts; what they
    /// send still goes out.
    OneWayLoss,
    /// Spinning threads on every core, in bursts.
    Hog,
}

impl Fault {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "stop" => Fault::Stop,
            "bursty-loss" => Fault::BurstyLoss,
            "one-way-loss" => Fault::OneWayLoss,
            "hog" => Fault::Hog,
            other => bail!("unknown fault `{other}`: stop, bursty-loss, one-way-loss or hog"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Stop => "stop",
            Fault::BurstyLoss => "bursty-loss",
            Fault::OneWayLoss => "one-way-loss",
            Fault::Hog => "hog",
        }
    }

    /// Whether the fault singles out victims (the others count as healthy).
    fn has_victims(self) -> bool {
        matches!(self, Fault::Stop | Fault::OneWayLoss)
    }
}

/// Knobs of a fault sweep; see `shoal-bench faults --help`.
#[derive(Clone, Debug)]
pub struct Options {
    pub n: usize,
    pub duration: Duration,
    pub seeds: Vec<u64>,
    /// Victims of `stop` and `one-way-loss`.
    pub victims: usize,
    pub stop_burst: RangeInclusive<Duration>,
    pub stop_gap: RangeInclusive<Duration>,
    pub deaf_burst: RangeInclusive<Duration>,
    pub deaf_gap: RangeInclusive<Duration>,
    /// Share of what is sent to a victim that is lost during its bursts.
    pub one_way_loss: f64,
    pub hog_burst: RangeInclusive<Duration>,
    pub hog_gap: RangeInclusive<Duration>,
    pub hog_threads: usize,
    pub gilbert_elliott: GilbertElliott,
    /// Poll interval of the membership views.
    pub poll: Duration,
    /// Pause between convergence and the fault.
    pub settle: Duration,
    pub work: PathBuf,
}

pub const HEADER: &str = "system,fault,seed,n,duration_s,victims,\
healthy_failed_agents,healthy_failed_views,victim_failed_agents,victim_failed_views,\
failure_events_logged,suspicions_started,refutations_healthy,refutations_victims,\
declared_dead_notices_healthy,declared_dead_notices_victims,\
relay_forwarded,relay_dropped,relay_tcp_delayed,relay_tcp_connections,relay_tcp_unknown,\
load_start,load_end";

/// The relay's address for agent `real` (127.a.b.c -> 127.(a+100).b.c).
pub(crate) fn advertised(real: SocketAddr) -> SocketAddr {
    match real.ip() {
        IpAddr::V4(ip) => {
            let [_, a, b, c] = ip.octets();
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, a + 100, b, c)), real.port())
        }
        IpAddr::V6(_) => real,
    }
}

/// The agents `fault` singles out with `seed` (none for loss on every
/// link or the host-wide hog).
pub fn victims(fault: Fault, seed: u64, options: &Options) -> Vec<usize> {
    if fault.has_victims() {
        schedule::victims(seed, options.n, options.victims)
    } else {
        Vec::new()
    }
}

const JOIN_DEADLINE: Duration = Duration::from_secs(180);

/// Runs one system under one fault with one seed; returns its CSV row.
pub async fn run(system: &System, fault: Fault, seed: u64, options: &Options) -> Result<String> {
    let n = options.n;
    anyhow::ensure!(n >= 3, "--n: a cluster needs at least 3 agents");
    let label = format!("[{} {} seed={seed} n={n}]", system.name(), fault.name());
    let work = options
        .work
        .join(format!("{}-{}-{seed}", system.name(), fault.name()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let load_start = process::load_average();

    let real: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::new(system.ip(i), 7946))
        .collect();
    let advertise: Vec<SocketAddr> = real.iter().map(|a| advertised(*a)).collect();
    let relay = relay::Relay::start(real.clone(), &advertise).await?;

    eprintln!("{label} starting agents (load {load_start:.2})");
    let extra = |i: usize| -> Vec<String> {
        match system {
            System::Shoal { .. } => vec!["--advertise".into(), advertise[i].to_string()],
            System::Serf { .. } => vec![
                format!("-advertise={}", advertise[i]),
                "-log-level=info".into(),
            ],
        }
    };
    let mut agents: Vec<Agent> = vec![system.spawn_with(0, None, &work, &extra(0))?];
    let mut client = system.client(&agents[0]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.members().await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label} the seed's API never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 1..n {
        agents.push(system.spawn_with(i, Some(advertise[0]), &work, &extra(i))?);
    }
    relay.set_pids(agents.iter().filter_map(|a| a.process.pid()).collect());
    let mut views = Views::new(system, &agents);
    let started = Instant::now();
    loop {
        if views.poll(system, &agents).await == n {
            break;
        }
        for agent in &mut agents {
            if agent.process.exited() {
                bail!(
                    "{label} {} exited; see its log in {}",
                    agent.name,
                    work.display()
                );
            }
        }
        if started.elapsed() > JOIN_DEADLINE {
            bail!(
                "{label} the cluster did not converge through the relay within {JOIN_DEADLINE:?}"
            );
        }
        tokio::time::sleep(options.poll).await;
    }
    eprintln!(
        "{label} converged through the relay in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(options.settle).await;
    if !views.declarations.is_empty() {
        eprintln!(
            "{label} {} failed listings before the fault (counted apart)",
            views.declarations.len()
        );
    }
    views.declarations.clear();

    // Baselines: counters now, and where each log ends.
    let before = shoal_counters(system, &agents).await;
    let log_offsets: Vec<u64> = agents
        .iter()
        .map(|a| crate::system::log_len(&work, &a.name))
        .collect();

    let victims = victims(fault, seed, options);
    eprintln!(
        "{label} fault for {:?}; victims {victims:?}",
        options.duration
    );
    let fault_started = Instant::now();
    let injection = inject::start(fault, seed, &victims, &agents, &relay, options)?;
    while fault_started.elapsed() < options.duration {
        let next = Instant::now() + options.poll;
        views.poll(system, &agents).await;
        tokio::time::sleep_until(next.into()).await;
    }
    let counters = relay.counters();
    let relay_figures = [
        counters.forwarded.get(),
        counters.dropped.get(),
        counters.tcp_delayed.get(),
        counters.unknown_source.get(),
        counters.send_errors.get(),
        counters.tcp_connections.get(),
        counters.tcp_unknown_source.get(),
    ];
    drop(injection);
    relay.set_loss(relay::Loss::None);
    // Continued agents answer again before their counters are read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = shoal_counters(system, &agents).await;
    let load_end = process::load_average();

    let victim_set: HashSet<usize> = victims.iter().copied().collect();
    let is_victim = |i: usize| victim_set.contains(&i);
    let mut failed_agents = BTreeSet::new();
    let (mut healthy_views, mut victim_views) = (0, 0);
    for &(_, subject) in &views.declarations {
        failed_agents.insert(subject);
        if is_victim(subject) {
            victim_views += 1;
        } else {
            healthy_views += 1;
        }
    }
    let index_of = |name: &str| agents.iter().position(|a| a.name == name);
    let mut failure_events = 0.0;
    let mut suspicions = 0.0;
    let mut refutations = [0.0, 0.0];
    let mut dead_notices = [0.0, 0.0];
    for (i, agent) in agents.iter().enumerate() {
        let slot = usize::from(is_victim(i));
        let log = crate::system::read_log_from(&work, &agent.name, log_offsets[i]);
        match system {
            System::Shoal { .. } => {
                let delta = after[i].minus(before[i]);
                failure_events += delta.members_down;
                suspicions += delta.probes_failed;
                refutations[slot] += delta.refutations;
                let notices = log.matches(SHOAL_DECLARED_DOWN).count();
                dead_notices[slot] += notices as f64;
                if notices > 0 {
                    failed_agents.insert(i);
                }
            }
            System::Serf { .. } => {
                for line in log.lines().filter_map(observe::parse_serf_line) {
                    match line {
                        SerfLine::Suspected(_) => suspicions += 1.0,
                        SerfLine::MemberFailed(subject) => {
                            failure_events += 1.0;
                            if let Some(subject) = index_of(&subject) {
                                failed_agents.insert(subject);
                            }
                        }
                        SerfLine::RefutedSuspect => refutations[slot] += 1.0,
                        SerfLine::RefutedDead => {
                            dead_notices[slot] += 1.0;
                            failed_agents.insert(i);
                        }
                        SerfLine::SuspicionTimedOut(_) => {}
                    }
                }
            }
        }
    }
    let healthy_failed = failed_agents.iter().filter(|&&i| !is_victim(i)).count();
    let victims_failed = failed_agents.len() - healthy_failed;
    let [
        forwarded,
        dropped,
        tcp_delayed,
        unknown_sources,
        send_errors,
        tcp_connections,
        tcp_unknown,
    ] = relay_figures;
    eprintln!(
        "{label} healthy agents declared failed: {healthy_failed}; victims: {victims_failed}; \
         suspicions {suspicions}; refutations {refutations:?}; relay dropped {dropped} of {} \
         (unknown sources {unknown_sources}, send errors {send_errors}); TCP connections \
         {tcp_connections}, {tcp_unknown} from an unknown agent, {tcp_delayed} chunks delayed",
        dropped + forwarded,
    );
    let row = format!(
        "{},{},{seed},{n},{},{},{healthy_failed},{healthy_views},{victims_failed},{victim_views},\
         {failure_events},{suspicions},{},{},{},{},{forwarded},{dropped},{tcp_delayed},\
         {tcp_connections},{tcp_unknown},{load_start:.2},{load_end:.2}",
        system.name(),
        fault.name(),
        options.duration.as_secs(),
        victims.len(),
        refutations[0],
        refutations[1],
        dead_notices[0],
        dead_notices[1],
    );
    drop(agents);
    drop(relay);
    Ok(row)
}

/// Every Shoal agent's counters (zeros for Serf, or an agent that does
/// not answer).
async fn shoal_counters(system: &System, agents: &[Agent]) -> Vec<ShoalCounters> {
    let mut out = Vec::new();
    for agent in agents {
        let counters = match system {
            System::Shoal { .. } => {
                let mut http = crate::http::HttpClient::new(agent.api);
                match http.get("/v1/agent/metrics?format=prometheus").await {
                    Ok(response) => ShoalCounters::parse(&String::from_utf8_lossy(&response.body)),
                    Err(error) => {
                        eprintln!("  {}: no metrics ({error:#})", agent.name);
                        ShoalCounters::default()
                    }
                }
            }
            System::Serf { .. } => ShoalCounters::default(),
        };
        out.push(counters);
    }
    out
}

/// Parses `MIN..MAX` (humantime durations) into a range.
pub fn parse_range(text: &str) -> Result<RangeInclusive<Duration>, String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a range: write MIN..MAX, e.g. 200ms..800ms"))?;
    let parse = |part: &str| {
        humantime::parse_duration(part.trim()).map_err(|e| format!("`{part}` in `{text}`: {e}"))
    };
    let (low, high) = (parse(low)?, parse(high)?);
    if low > high || high.is_zero() {
        return Err(format!(
            "`{text}`: MIN must not exceed MAX, and MAX must be above 0"
        ));
    }
    Ok(low..=high)
}

/// Writes the rows so far (after every run, so an interrupted sweep keeps them).
pub fn write_csv(path: &Path, rows: &[String]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// The markdown table of `faults.csv`: one row per system, fault and seed.
pub fn render(csv: &Path) -> Result<String> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("read {}", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let picks = [
        ("fault", "fault"),
        ("seed", "seed"),
        ("system", "system"),
        ("N", "n"),
        ("minutes", "duration_s"),
        ("victims", "victims"),
        ("healthy agents declared failed", "healthy_failed_agents"),
        (
            "healthy: (observer, agent) failed listings",
            "healthy_failed_views",
        ),
        ("victims declared failed", "victim_failed_agents"),
        ("failure events logged", "failure_events_logged"),
        ("suspicions started", "suspicions_started"),
        ("refutations (healthy / victims)", "refutations_healthy"),
        ("relay: dropped / forwarded", "relay_dropped"),
        ("load (start / end)", "load_start"),
    ];
    let mut out = String::from("| ");
    for (title, _) in &picks {
        write!(out, "{title} | ")?;
    }
    out.push_str("\n|");
    for _ in &picks {
        out.push_str("---|");
    }
    out.push('\n');
    let mut rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Vec<String>| (r.get(1).cloned(), r.get(2).cloned(), r.first().cloned());
        key(a).cmp(&key(b))
    });
    for row in rows {
        let get = |name: &str| {
            column(name)
                .and_then(|i| row.get(i))
                .map_or("", String::as_str)
                .to_string()
        };
        out.push_str("| ");
        for (_, key) in &picks {
            let cell = match *key {
                "duration_s" => format!("{:.1}", get(key).parse::<f64>().unwrap_or(0.0) / 60.0),
                "refutations_healthy" => {
                    format!("{} / {}", get(key), get("refutations_victims"))
                }
                "relay_dropped" => format!("{} / {}", get(key), get("relay_forwarded")),
                "load_start" => format!("{} / {}", get(key), get("load_end")),
                _ => get(key),
            };
            write!(out, "{cell} | ")?;
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(
            parse_range("200ms..800ms").unwrap(),
            Duration::from_millis(200)..=Duration::from_millis(800)
        );
        assert!(parse_range("800ms").unwrap_err().contains("MIN..MAX"));
        assert!(parse_range("1s..200ms").unwrap_err().contains("MIN"));
        assert!(parse_range("1s..soon").unwrap_err().contains("`soon`"));
    }

    #[test]
    fn the_relay_address_is_the_agents_own_shifted_by_100() {
        let real: SocketAddr = "127.20.0.7:7946".parse().unwrap();
        assert_eq!(advertised(real), "127.120.0.7:7946".parse().unwrap());
    }
}
