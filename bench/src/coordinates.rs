//! Network coordinates' accuracy on real agents (issue 25): N Shoal agents
//! in three zones, their gossip through the user-space relay (no netem on
//! these machines), which holds each datagram for its link's one-way
//! delay. At fixed times after the agents start, it reads every
//! coordinate from one agent and every agent's `?near=_agent` answer:
//!
//! - the relative error of each pair's estimate against the round trip the
//!   relay really applied (both directions' mean held time; tokio's timers
//!   round each delay up to the millisecond, so this is not the configured
//!   one), median and 90th percentile over all pairs;
//! - the share of agents whose first answer from another node is in their
//!   own zone.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::faults::{advertised, relay::Relay};
use crate::http::HttpClient;
use crate::system::{Agent, System};
use crate::{process, stats};

#[derive(Clone, Debug)]
pub struct Options {
    pub n: usize,
    /// Round trips between zones, ms (square; the diagonal inside a zone).
    pub zone_rtt_ms: Vec<Vec<f64>>,
    /// When to measure, after the last agent started.
    pub at: Vec<Duration>,
    pub seeds: Vec<u64>,
    pub work: PathBuf,
}

pub const HEADER: &str = "seed,n,zones,at_s,pairs,median_relative_error,p90_relative_error,\
same_zone_first,agents_answering,load";

/// Zone of agent `i`: agents are dealt round-robin.
fn zone(i: usize, zones: usize) -> usize {
    i % zones
}

/// Runs one seed (the seed only names the run and the work directory:
/// agents are dealt to zones the same way every time); returns its CSV
/// rows, one per measurement time.
pub async fn run(shoal_bin: &std::path::Path, seed: u64, options: &Options) -> Result<Vec<String>> {
    let n = options.n;
    let zones = options.zone_rtt_ms.len();
    anyhow::ensure!(
        zones >= 1 && n >= 2 * zones,
        "--n: at least two agents per zone"
    );
    let system = System::Shoal {
        bin: shoal_bin.to_path_buf(),
        serf_intervals: false,
    };
    let label = format!("[coordinates seed={seed} n={n}]");
    let work = options.work.join(format!("coordinates-{seed}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let real: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::new(system.ip(i), 7946))
        .collect();
    let advertise: Vec<SocketAddr> = real.iter().map(|a| advertised(*a)).collect();
    let relay = Relay::start(real.clone(), &advertise).await?;
    let matrix = options.zone_rtt_ms.clone();
    relay.set_delay(move |from, to| {
        Duration::from_secs_f64(matrix[zone(from, zones)][zone(to, zones)] / 2000.0)
    });

    eprintln!(
        "{label} starting agents (load {:.2})",
        process::load_average()
    );
    let extra = |i: usize| vec!["--advertise".to_string(), advertise[i].to_string()];
    let mut agents: Vec<Agent> = vec![system.spawn_with(0, None, &work, &extra(0))?];
    let mut http: Vec<HttpClient> = vec![HttpClient::new(agents[0].api)];
    http[0].wait_serving().await.context(label.clone())?;
    for i in 1..n {
        agents.push(system.spawn_with(i, Some(advertise[0]), &work, &extra(i))?);
        http.push(HttpClient::new(agents[i].api));
    }
    let started = Instant::now();
    for client in &mut http {
        client.wait_serving().await.context(label.clone())?;
        client.register_web().await.context(label.clone())?;
    }

    let mut rows = Vec::new();
    for &at in &options.at {
        tokio::time::sleep_until((started + at).into()).await;
        for agent in &mut agents {
            if agent.process.exited() {
                bail!("{label} {} exited; see {}", agent.name, work.display());
            }
        }
        let nodes = http[0].get("/v1/coordinate/nodes").await?.json()?;
        let coordinates = parse_coordinates(&nodes, &agents)?;
        let mut errors = Vec::new();
        for a in 0..n {
            for b in (a + 1)..n {
                let (Some(ca), Some(cb)) = (&coordinates[a], &coordinates[b]) else {
                    continue;
                };
                let (Some(ab), Some(ba)) = (relay.applied_delay(a, b), relay.applied_delay(b, a))
                else {
                    continue;
                };
                let truth = (ab + ba).as_secs_f64();
                let estimate = ca.distance_to(cb).as_secs_f64();
                errors.push((estimate - truth).abs() / truth);
            }
        }
        let (mut same_zone, mut answering) = (0usize, 0usize);
        for (i, client) in http.iter_mut().enumerate() {
            let Ok(answer) = client.get("/v1/health/service/web?near=_agent").await else {
                continue;
            };
            let Ok(entries) = answer.json() else {
                continue;
            };
            let first_other = entries.as_array().into_iter().flatten().find_map(|entry| {
                let node = entry["Node"]["Node"].as_str()?;
                let index = agents.iter().position(|agent| agent.name == node)?;
                (index != i).then_some(index)
            });
            if let Some(other) = first_other {
                answering += 1;
                if zone(other, zones) == zone(i, zones) {
                    same_zone += 1;
                }
            }
        }
        let row = format!(
            "{seed},{n},{zones},{:.0},{},{:.4},{:.4},{:.4},{answering},{:.2}",
            at.as_secs_f64(),
            errors.len(),
            stats::median(&errors),
            stats::percentile(&errors, 90.0),
            same_zone as f64 / answering.max(1) as f64,
            process::load_average()
        );
        eprintln!("{label} at {at:?}: {row}");
        rows.push(row);
    }
    let mut delays = String::new();
    for from in 0..zones {
        for to in 0..zones {
            let (a, b) = (from, if from == to { to + zones } else { to });
            if let Some(applied) = relay.applied_delay(a, b) {
                let _ = write!(
                    delays,
                    " zone {from}->{to}: {:.2} ms;",
                    applied.as_secs_f64() * 1000.0
                );
            }
        }
    }
    eprintln!("{label} one-way delays the relay applied:{delays}");
    Ok(rows)
}

/// Each agent's coordinate from a `/v1/coordinate/nodes` answer, by index.
fn parse_coordinates(
    nodes: &Value,
    agents: &[Agent],
) -> Result<Vec<Option<shoal_protocol::coordinate::Coordinate>>> {
    use shoal_protocol::coordinate::{Coordinate, CoordinateConfig};
    let mut by_index = vec![None; agents.len()];
    for entry in nodes.as_array().context("coordinate/nodes is not a list")? {
        let Some(index) = agents
            .iter()
            .position(|agent| Some(agent.name.as_str()) == entry["Node"].as_str())
        else {
            continue;
        };
        let coord = &entry["Coord"];
        let mut coordinate = Coordinate::new(&CoordinateConfig::default());
        for (component, value) in coordinate
            .vec
            .iter_mut()
            .zip(coord["Vec"].as_array().context("Vec")?)
        {
            *component = value.as_f64().context("Vec component")?;
        }
        coordinate.error = coord["Error"].as_f64().context("Error")?;
        coordinate.adjustment = coord["Adjustment"].as_f64().context("Adjustment")?;
        coordinate.height = coord["Height"].as_f64().context("Height")?;
        by_index[index] = Some(coordinate);
    }
    Ok(by_index)
}
