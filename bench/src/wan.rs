//! Datacenters joined by a WAN pool, on real agents (issue 25): a few
//! datacenters of Shoal agents, a few WAN members in each, the WAN pool's
//! gossip and every connection between datacenters through the user-space
//! relay (no netem on these machines), which holds each datagram and TCP
//! chunk for its link's one-way delay and each new connection for the
//! round trip of its handshake. The LAN pools are not relayed.
//!
//! In order, on one cluster:
//! 1. **idle**: what each WAN member sends and receives through the relay
//!    over `--wan-idle` with no reads (the WAN pool's own gossip);
//! 2. **reads**: `--wan-reads` sequential reads from a plain agent of the
//!    first datacenter, of every datacenter (its own as the baseline):
//!    `GET /v1/health/service/web?dc=…&passing` and DNS
//!    `web.service.<dc>.consul`; latency percentiles, and the WAN traffic
//!    they caused;
//! 3. **kill**: a WAN member of the second datacenter SIGKILLed while
//!    reads of that datacenter go on: how many went unanswered, and when
//!    the WAN pool declared it failed;
//! 4. **cut**: the last datacenter's WAN members cut off from the rest
//!    for `--wan-cut`: when reads of it answer 503 and why, whether its own
//!    LAN still lists its agents alive; then healed: when its reads are
//!    answered again and when the WAN pool lists it alive again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::faults::advertised;
use crate::faults::relay::{Loss, Relay, Traffic};
use crate::http::{HttpClient, Response};
use crate::system::{Agent, System};
use crate::{process, stats};
use anyhow::{Context, Result, bail};

#[derive(Clone, Debug)]
pub struct Options {
    /// Agents per datacenter.
    pub per_dc: usize,
    /// WAN members per datacenter (its first agents).
    pub wan_per_dc: usize,
    /// Round trips between datacenters, ms (square; the diagonal: between
    /// WAN members of one datacenter).
    pub dc_rtt_ms: Vec<Vec<f64>>,
    pub reads: usize,
    pub idle: Duration,
    pub cut: Duration,
    pub work: PathBuf,
}

pub const LATENCY_HEADER: &str =
    "kind,datacenter,rtt_ms,reads,answered,p50_ms,p90_ms,p99_ms,max_ms,load";
pub const TRAFFIC_HEADER: &str = "phase,member,datacenter,seconds,sent_bytes,received_bytes,\
datagrams_sent,datagrams_received,sent_kbit_s,received_kbit_s";
pub const EVENT_HEADER: &str = "phase,event,seconds,detail";

/// The three CSVs' rows.
#[derive(Default)]
pub struct Rows {
    pub latency: Vec<String>,
    pub traffic: Vec<String>,
    pub events: Vec<String>,
}

/// Instances of `web` in each datacenter.
const WEB_INSTANCES: usize = 5;
/// How long the WAN pool may take to form, to notice a death or a heal.
const PATIENCE: Duration = Duration::from_secs(600);

fn dc_name(dc: usize) -> String {
    format!("dc{}", dc + 1)
}

struct Federation {
    system: System,
    options: Options,
    agents: Vec<Agent>,
    http: Vec<HttpClient>,
    relay: Relay,
}

impl Federation {
    fn dcs(&self) -> usize {
        self.options.dc_rtt_ms.len()
    }

    /// Global index of agent `j` of datacenter `dc`.
    fn index(&self, dc: usize, j: usize) -> usize {
        dc * self.options.per_dc + j
    }

    /// The relay's index of WAN member `j` of datacenter `dc`.
    fn relay_index(&self, dc: usize, j: usize) -> usize {
        dc * self.options.wan_per_dc + j
    }

    fn wan_name(&self, dc: usize, j: usize) -> String {
        format!("{}.{}", self.agents[self.index(dc, j)].name, dc_name(dc))
    }

    /// The WAN pool as WAN member `j` of `dc` lists it: name to status.
    async fn wan_members(&mut self, dc: usize, j: usize) -> Result<Vec<(String, u64)>> {
        let index = self.index(dc, j);
        let answer = self.http[index].get("/v1/agent/members?wan=1").await?;
        anyhow::ensure!(answer.status == 200, "members?wan=1: {}", answer.status);
        Ok(answer
            .json()?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["Name"].as_str()?.to_string(), m["Status"].as_u64()?)))
            .collect())
    }

    /// How many of `names` the first WAN member lists with a status
    /// (`/v1/agent/members`' number) that `matches`.
    async fn count_of(&mut self, names: &[String], matches: impl Fn(u64) -> bool) -> usize {
        let members = self.wan_members(0, 0).await.unwrap_or_default();
        members
            .iter()
            .filter(|(name, status)| names.contains(name) && matches(*status))
            .count()
    }

    /// Agents of `dc` that its agent `j` lists alive in its LAN pool.
    async fn lan_alive(&mut self, dc: usize, j: usize) -> Result<usize> {
        let index = self.index(dc, j);
        let answer = self.http[index].get("/v1/agent/members").await?;
        Ok(answer
            .json()?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["Status"] == 1)
            .count())
    }

    /// One read of `dc`'s `web` from agent `reader`.
    async fn read(&mut self, reader: usize, dc: usize) -> (Duration, Result<Response>) {
        let path = format!("/v1/health/service/web?dc={}&passing", dc_name(dc));
        let started = Instant::now();
        let answer = self.http[reader]
            .request(
                hyper::Method::GET,
                &path,
                bytes::Bytes::new(),
                Duration::from_secs(120),
            )
            .await;
        (started.elapsed(), answer)
    }
}

/// Whether an answer lists every instance of `web`.
fn complete(answer: &Response) -> bool {
    answer.status == 200
        && answer
            .json()
            .ok()
            .and_then(|body| body.as_array().map(Vec::len))
            == Some(WEB_INSTANCES)
}

/// Runs everything once; the CSV rows.
pub async fn run(shoal_bin: &std::path::Path, options: &Options) -> Result<Rows> {
    let dcs = options.dc_rtt_ms.len();
    anyhow::ensure!(dcs >= 3, "--dc-rtt: at least three datacenters");
    anyhow::ensure!(
        options.wan_per_dc >= 2 && options.per_dc >= options.wan_per_dc + WEB_INSTANCES,
        "--wan-members at least 2, and --dc-agents at least {WEB_INSTANCES} more"
    );
    let system = System::Shoal {
        bin: shoal_bin.to_path_buf(),
        serf_intervals: false,
    };
    let work = options.work.clone();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    // The WAN members' real WAN addresses and the relay's in front of them.
    let mut real = Vec::new();
    for dc in 0..dcs {
        for j in 0..options.wan_per_dc {
            real.push(SocketAddr::new(system.ip(dc * options.per_dc + j), 8302));
        }
    }
    let relayed: Vec<SocketAddr> = real.iter().map(|a| advertised(*a)).collect();
    let relay = Relay::start(real, &relayed).await?;
    let (wan_per_dc, matrix) = (options.wan_per_dc, options.dc_rtt_ms.clone());
    relay.set_delay(move |from, to| {
        Duration::from_secs_f64(matrix[from / wan_per_dc][to / wan_per_dc] / 2000.0)
    });

    eprintln!(
        "[wan] starting {dcs} x {} agents, {wan_per_dc} WAN members each (load {:.2})",
        options.per_dc,
        process::load_average()
    );
    let mut federation = Federation {
        system,
        options: options.clone(),
        agents: Vec::new(),
        http: Vec::new(),
        relay,
    };
    let started = Instant::now();
    for dc in 0..dcs {
        for j in 0..options.per_dc {
            let index = federation.index(dc, j);
            let mut extra = vec!["--datacenter".to_string(), dc_name(dc)];
            if j < wan_per_dc {
                let k = federation.relay_index(dc, j);
                extra.extend([
                    "--wan".to_string(),
                    "--wan-bind".to_string(),
                    SocketAddr::new(federation.system.ip(index), 8302).to_string(),
                    "--wan-advertise".to_string(),
                    relayed[k].to_string(),
                ]);
                if k > 0 {
                    extra.extend(["--join-wan".to_string(), relayed[0].to_string()]);
                }
            } else {
                // A plain agent connects to its WAN members from its own
                // address: on the relay, it stands in its datacenter.
                federation
                    .relay
                    .alias(federation.system.ip(index), federation.relay_index(dc, 0));
            }
            let seed = (j > 0).then(|| federation.agents[federation.index(dc, 0)].gossip);
            let agent = federation.system.spawn_with(index, seed, &work, &extra)?;
            federation.http.push(HttpClient::new(agent.api));
            federation.agents.push(agent);
            federation.http[index].wait_serving().await?;
            if (wan_per_dc..wan_per_dc + WEB_INSTANCES).contains(&j) {
                federation.http[index].register_web().await?;
            }
        }
    }
    // A connection from an unbound socket (the agent's probe of a silent
    // seed) is told by its process: the WAN members', in the relay's order.
    let mut pids = Vec::new();
    for dc in 0..dcs {
        for j in 0..wan_per_dc {
            let index = federation.index(dc, j);
            pids.push(federation.agents[index].process.pid().unwrap_or(0));
        }
    }
    federation.relay.set_pids(pids);

    let mut rows = Rows::default();
    form(&mut federation, &mut rows, started).await?;
    idle(&mut federation, &mut rows).await?;
    reads(&mut federation, &mut rows).await?;
    kill(&mut federation, &mut rows).await?;
    cut(&mut federation, &mut rows).await?;
    Ok(rows)
}

/// Waits for every WAN member to list the whole WAN pool alive and for a
/// plain agent of the first datacenter to read every datacenter.
async fn form(federation: &mut Federation, rows: &mut Rows, started: Instant) -> Result<()> {
    let (dcs, wan_per_dc) = (federation.dcs(), federation.options.wan_per_dc);
    let pool = dcs * wan_per_dc;
    let deadline = Instant::now() + PATIENCE;
    for dc in 0..dcs {
        for j in 0..wan_per_dc {
            loop {
                let alive = federation
                    .wan_members(dc, j)
                    .await
                    .map(|members| members.iter().filter(|(_, s)| *s == 1).count())
                    .unwrap_or(0);
                if alive == pool {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "[wan] {} lists {alive} of {pool} WAN members alive",
                        federation.wan_name(dc, j)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let formed = started.elapsed();
    let reader = federation.index(0, wan_per_dc);
    for dc in 0..dcs {
        loop {
            let (_, answer) = federation.read(reader, dc).await;
            if answer.as_ref().is_ok_and(complete) {
                break;
            }
            if Instant::now() > deadline {
                let answer = match &answer {
                    Ok(answer) => format!(
                        "{}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ),
                    Err(error) => format!("{error:#}"),
                };
                bail!("[wan] {} never read {}: {answer}", dc_name(0), dc_name(dc));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let readable = started.elapsed();
    eprintln!(
        "[wan] WAN pool of {pool} formed {formed:.1?} after the first start; every datacenter readable at {readable:.1?}"
    );
    rows.events.push(format!(
        "form,wan_pool_alive,{:.1},{pool} WAN members listed alive by every WAN member",
        formed.as_secs_f64()
    ));
    rows.events.push(format!(
        "form,every_dc_readable,{:.1},a plain agent of dc1 reads all {WEB_INSTANCES} instances of web in every datacenter",
        readable.as_secs_f64()
    ));
    Ok(())
}

/// The traffic rows of one phase: each WAN member's bytes through the relay.
fn traffic_rows(
    federation: &Federation,
    phase: &str,
    traffic: &[Traffic],
    seconds: f64,
) -> Vec<String> {
    let wan_per_dc = federation.options.wan_per_dc;
    traffic
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let (dc, j) = (k / wan_per_dc, k % wan_per_dc);
            format!(
                "{phase},{},{},{seconds:.1},{},{},{},{},{:.2},{:.2}",
                federation.wan_name(dc, j),
                dc_name(dc),
                t.sent,
                t.received,
                t.datagrams_sent,
                t.datagrams_received,
                t.sent as f64 * 8.0 / 1000.0 / seconds,
                t.received as f64 * 8.0 / 1000.0 / seconds,
            )
        })
        .collect()
}

async fn idle(federation: &mut Federation, rows: &mut Rows) -> Result<()> {
    let window = federation.options.idle;
    eprintln!(
        "[wan] idle for {window:?} (load {:.2})",
        process::load_average()
    );
    federation.relay.take_traffic();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let traffic = federation.relay.take_traffic();
    let seconds = started.elapsed().as_secs_f64();
    let sent: Vec<f64> = traffic
        .iter()
        .map(|t| t.sent as f64 * 8.0 / 1000.0 / seconds)
        .collect();
    eprintln!(
        "[wan] idle: each WAN member sends {:.2} to {:.2} kbit/s (median {:.2})",
        stats::min(&sent),
        stats::max(&sent),
        stats::median(&sent)
    );
    rows.traffic
        .extend(traffic_rows(federation, "idle", &traffic, seconds));
    Ok(())
}

async fn reads(federation: &mut Federation, rows: &mut Rows) -> Result<()> {
    let (dcs, count) = (federation.dcs(), federation.options.reads);
    let reader = federation.index(0, federation.options.wan_per_dc);
    let dns = SocketAddr::new(federation.system.ip(reader), 8600);
    federation.relay.take_traffic();
    let started = Instant::now();
    for dc in 0..dcs {
        let rtt = federation.options.dc_rtt_ms[0][dc];
        let mut latencies = Vec::new();
        for _ in 0..count {
            let (took, answer) = federation.read(reader, dc).await;
            if answer.as_ref().is_ok_and(complete) {
                latencies.push(stats::ms(took));
            }
        }
        rows.latency
            .push(latency_row("http", dc, rtt, count, &latencies));
        let mut latencies = Vec::new();
        let name = format!("web.service.{}.consul", dc_name(dc));
        for id in 0..count {
            let started = Instant::now();
            if dns_query(dns, id as u16, &name).await == Some(WEB_INSTANCES) {
                latencies.push(stats::ms(started.elapsed()));
            }
        }
        rows.latency
            .push(latency_row("dns", dc, rtt, count, &latencies));
    }
    let traffic = federation.relay.take_traffic();
    rows.traffic.extend(traffic_rows(
        federation,
        "reads",
        &traffic,
        started.elapsed().as_secs_f64(),
    ));
    Ok(())
}

fn latency_row(kind: &str, dc: usize, rtt: f64, reads: usize, latencies: &[f64]) -> String {
    let row = format!(
        "{kind},{},{rtt},{reads},{},{:.2},{:.2},{:.2},{:.2},{:.2}",
        dc_name(dc),
        latencies.len(),
        stats::median(latencies),
        stats::percentile(latencies, 90.0),
        stats::percentile(latencies, 99.0),
        stats::max(latencies),
        process::load_average()
    );
    eprintln!("[wan] reads: {row}");
    row
}

/// Asks `server` for `name`'s A records; how many came back (None: no
/// answer, or not NOERROR).
async fn dns_query(server: SocketAddr, id: u16, name: &str) -> Option<usize> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    // Recursion desired; one question.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    // The root; type A, class IN.
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&query, server).await.ok()?;
    let mut answer = [0u8; 4096];
    let exchange = async {
        loop {
            let (length, _) = socket.recv_from(&mut answer).await.ok()?;
            if length >= 12 && answer[..2] == id.to_be_bytes() {
                return Some(length);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .ok()??;
    let rcode = answer[3] & 0x0f;
    (rcode == 0).then(|| usize::from(u16::from_be_bytes([answer[6], answer[7]])))
}

/// SIGKILLs WAN member 1 of the second datacenter, reads that datacenter
/// meanwhile, and waits for the WAN pool to declare the member failed.
async fn kill(federation: &mut Federation, rows: &mut Rows) -> Result<()> {
    let reader = federation.index(0, federation.options.wan_per_dc);
    let victim = federation.index(1, 1);
    let victim_name = federation.wan_name(1, 1);
    eprintln!(
        "[wan] kill {victim_name} (load {:.2})",
        process::load_average()
    );
    federation.agents[victim].process.kill();
    let killed = Instant::now();
    let (mut reads, mut answered, mut slowest) = (0usize, 0usize, Duration::ZERO);
    let mut failed_at = None;
    while killed.elapsed() < Duration::from_secs(60) || failed_at.is_none() {
        if killed.elapsed() < Duration::from_secs(60) {
            let (took, answer) = federation.read(reader, 1).await;
            reads += 1;
            answered += usize::from(answer.as_ref().is_ok_and(complete));
            slowest = slowest.max(took);
        }
        if failed_at.is_none() {
            let members = federation.wan_members(0, 0).await.unwrap_or_default();
            if members
                .iter()
                .any(|(name, status)| *name == victim_name && *status != 1)
            {
                failed_at = Some(killed.elapsed());
            }
        }
        anyhow::ensure!(
            killed.elapsed() < PATIENCE,
            "[wan] {victim_name} never declared failed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed_at = failed_at.expect("the loop ends with it");
    eprintln!(
        "[wan] kill: {answered} of {reads} reads of dc2 answered in the minute after (slowest {slowest:.2?}); declared failed after {failed_at:.1?}"
    );
    rows.events.push(format!(
        "kill,reads_answered,60.0,{answered} of {reads} reads of dc2 answered in full; slowest {:.0} ms",
        stats::ms(slowest)
    ));
    rows.events.push(format!(
        "kill,declared_failed,{:.1},{victim_name} not alive on {}",
        failed_at.as_secs_f64(),
        federation.wan_name(0, 0)
    ));
    Ok(())
}

/// Cuts the last datacenter's WAN members off, then heals the cut.
async fn cut(federation: &mut Federation, rows: &mut Rows) -> Result<()> {
    let (dcs, wan_per_dc, per_dc) = (
        federation.dcs(),
        federation.options.wan_per_dc,
        federation.options.per_dc,
    );
    let target = dcs - 1;
    let reader = federation.index(0, wan_per_dc);
    let group: HashSet<usize> = (0..wan_per_dc)
        .map(|j| federation.relay_index(target, j))
        .collect();
    let names: Vec<String> = (0..wan_per_dc)
        .map(|j| federation.wan_name(target, j))
        .collect();
    eprintln!(
        "[wan] cut {} off for {:?} (load {:.2})",
        dc_name(target),
        federation.options.cut,
        process::load_average()
    );
    federation.relay.set_loss(Loss::Cut(group));
    let cut_at = Instant::now();
    let (mut first_503, mut all_failed) = (None, None);
    let mut slowest_read = Duration::ZERO;
    while cut_at.elapsed() < federation.options.cut {
        let (took, answer) = federation.read(reader, target).await;
        slowest_read = slowest_read.max(took);
        if first_503.is_none()
            && let Ok(answer) = &answer
            && answer.status == 503
        {
            let reason = answer
                .json()
                .ok()
                .and_then(|body| body["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
            first_503 = Some((cut_at.elapsed(), took, reason));
        }
        if all_failed.is_none()
            && federation.count_of(&names, |status| status != 1).await == names.len()
        {
            all_failed = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let lan_alive = federation.lan_alive(target, 0).await?;
    let (first_503_at, first_503_took, reason) = first_503.context(format!(
        "[wan] reads of {} never answered 503 during the cut",
        dc_name(target)
    ))?;
    eprintln!(
        "[wan] cut: first 503 after {first_503_at:.1?} (it took {first_503_took:.1?}): {reason}; all of {} declared failed after {all_failed:.1?}; its LAN lists {lan_alive} of {per_dc} alive",
        dc_name(target)
    );
    rows.events.push(format!(
        "cut,first_503,{:.1},took {:.0} ms: {}",
        first_503_at.as_secs_f64(),
        stats::ms(first_503_took),
        reason.replace(',', ";")
    ));
    rows.events.push(format!(
        "cut,wan_members_failed,{},every WAN member of {} not alive on {}",
        all_failed.map_or("never".to_string(), |t| format!("{:.1}", t.as_secs_f64())),
        dc_name(target),
        federation.wan_name(0, 0)
    ));
    rows.events.push(format!(
        "cut,slowest_read,{:.1},the slowest read of {} during the cut",
        slowest_read.as_secs_f64(),
        dc_name(target)
    ));
    rows.events.push(format!(
        "cut,lan_alive,{:.1},{lan_alive} of {per_dc} agents alive in {}'s own LAN at the end of the cut",
        cut_at.elapsed().as_secs_f64(),
        dc_name(target)
    ));

    federation.relay.set_loss(Loss::None);
    let healed = Instant::now();
    eprintln!("[wan] heal (load {:.2})", process::load_average());
    let (mut readable, mut rejoined) = (None, None);
    while readable.is_none() || rejoined.is_none() {
        anyhow::ensure!(
            healed.elapsed() < PATIENCE,
            "[wan] {} not back within {PATIENCE:?} of the heal",
            dc_name(target)
        );
        if readable.is_none() {
            let (_, answer) = federation.read(reader, target).await;
            if answer.as_ref().is_ok_and(complete) {
                readable = Some(healed.elapsed());
            }
        }
        if rejoined.is_none()
            && federation.count_of(&names, |status| status == 1).await == names.len()
        {
            rejoined = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (readable, rejoined) = (readable.expect("loop"), rejoined.expect("loop"));
    eprintln!(
        "[wan] heal: {} readable again after {readable:.1?}, its WAN members alive again after {rejoined:.1?}",
        dc_name(target)
    );
    rows.events.push(format!(
        "heal,readable,{:.1},a read of {} answered in full",
        readable.as_secs_f64(),
        dc_name(target)
    ));
    rows.events.push(format!(
        "heal,wan_members_alive,{:.1},every WAN member of {} alive again on {}",
        rejoined.as_secs_f64(),
        dc_name(target),
        federation.wan_name(0, 0)
    ));
    Ok(())
}
