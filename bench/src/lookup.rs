//! Shoal alone: how fast a local service gets an answer from its sidecar.
//! Three lookups on one agent of a 3-agent cluster ([`ENDPOINTS`]):
//! `GET /v1/health/service/web?passing` (`web` runs on all three, 2 KiB),
//! `GET /v1/kv/bench/value?raw` (2 KiB) and `GET /v1/flags/bench-flag?user=`,
//! each beside a bare axum server on the same current-thread runtime that
//! answers the very same bytes (`shoal-bench-hello`): the ceiling of this
//! machine, measured in the same run.
//!
//! Two measurements per target (`load`): the maximum rate (`wrk`, closed
//! loop), and latency at fixed rates with our own open-loop generator.
//! Each in several [`Scenario`]s, one after the other:
//! 1. `static`: one URL on a static cluster: after the first request,
//!    every lookup is a hit of the agent's lookup cache;
//! 2. `users-1000`: the flag evaluated for 1,000 distinct `?user=` values
//!    in turn (each its own cache entry);
//! 3. `churn` and `users-1000+churn`: the same while a peer registers a
//!    service once a second and writes 10 KV keys a second (`churn`): each
//!    change reaches the measured agent by gossip and invalidates its
//!    cache entries;
//! 4. `miss` beside `hit`: every request a distinct URL (`&bust=N`, which
//!    the handler ignores but the cache keys on), so every request is a
//!    miss, for `web` (3 instances) and `big` ([`MANY_INSTANCES`]): the CPU
//!    a miss costs.
//!
//! Every Shoal row carries the agent's cache hits and misses over the run
//! (`cache_stats`), and the churned rows what the churn driver did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::Method;

use crate::cache_stats::{CacheDelta, CacheReading};
use crate::churn::{Churn, ChurnCounts};
use crate::http::HttpClient;
use crate::load::{self, Load, Measured, Paths};
use crate::process::{self, ChildGuard};
use crate::system::{Agent, System};

pub struct Options {
    pub shoal_bin: PathBuf,
    pub hello_bin: PathBuf,
    pub wrk_bin: PathBuf,
    pub rates: Vec<u32>,
    pub duration: Duration,
    pub connections: usize,
    pub work: PathBuf,
}

/// The endpoints measured: name, path on Shoal, content type.
pub const ENDPOINTS: [(&str, &str, &str); 3] = [
    (
        "health",
        "/v1/health/service/web?passing",
        "application/json",
    ),
    (
        "kv-raw",
        "/v1/kv/bench/value?raw",
        "application/octet-stream",
    ),
    (
        "flags",
        "/v1/flags/bench-flag?user=u-1234",
        "application/json",
    ),
];

/// `PUT path` with `body` on `agent`, retried while it starts.
async fn put(agent: &Agent, path: &str, body: String) -> Result<()> {
    let mut client = HttpClient::new(agent.api);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = client
            .request(
                Method::PUT,
                path,
                Bytes::from(body.clone()),
                Duration::from_secs(2),
            )
            .await;
        match attempt {
            Ok(response) if response.status.is_success() => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(response) => bail!("{path} on {} answered {}", agent.name, response.status),
            Err(error) => return Err(error),
        }
    }
}

/// The flag looked up by many users: `?user=u-1` .. `u-1000`, in turn.
pub const USERS: u64 = 1000;
const FLAG_USERS_PREFIX: &str = "/v1/flags/bench-flag?user=u-";
/// Instances of `big`, the service of the many-instances miss.
pub const MANY_INSTANCES: usize = 100;
const MANY_PATH: &str = "/v1/health/service/big?passing";
/// Distinct URLs of a `miss` run: more than any run sends.
const BUST_COUNT: u64 = 1_000_000_000;

/// Rounds of the maximum-rate measurement (each target once per round).
const WRK_ROUNDS: usize = 3;

/// What the cluster does and how the URLs vary during a run (see the
/// module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Static,
    Users,
    Churn,
    UsersChurn,
    /// One URL, static cluster, measured in the same rounds as `Miss`.
    Hit,
    Miss,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Static,
        Scenario::Users,
        Scenario::Churn,
        Scenario::UsersChurn,
        Scenario::Hit,
        Scenario::Miss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Static => "static",
            Scenario::Users => "users-1000",
            Scenario::Churn => "churn",
            Scenario::UsersChurn => "users-1000+churn",
            Scenario::Hit => "hit",
            Scenario::Miss => "miss",
        }
    }

    /// The scenario of a CSV row; rows written before scenarios existed
    /// (no such column) are `static`.
    pub fn parse(text: &str) -> Option<Scenario> {
        if text.is_empty() {
            return Some(Scenario::Static);
        }
        Scenario::ALL.into_iter().find(|s| s.name() == text)
    }
}

pub const HEADER: &str = "target,tool,rate_target,connections,seconds,requests,errors,achieved_rps,p50_us,p99_us,p999_us,max_us,server_cpu_us_per_req,body_bytes,scenario,cache_hits,cache_misses,hit_ratio,churn_registrations,churn_kv_writes,churn_failures,server_cpu_us_per_miss";

/// One CSV row (see [`HEADER`]). `cache`: the agent's cache over the run
/// (Shoal only); `churn`: what the churn driver did meanwhile. CPU per
/// miss only where every request was meant to miss.
fn row(
    target: &str,
    measured: &Measured,
    body_bytes: usize,
    scenario: Scenario,
    cache: Option<CacheDelta>,
    churn: Option<ChurnCounts>,
) -> String {
    let m = measured;
    let optional = |value: Option<f64>, decimals: usize| {
        value.map_or(String::new(), |v| format!("{v:.decimals$}"))
    };
    let cpu_per_miss = cache
        .filter(|cache| scenario == Scenario::Miss && cache.misses > 0)
        .map(|cache| m.server_cpu.as_secs_f64() * 1e6 / cache.misses as f64);
    let (hits, misses) = cache.map_or((String::new(), String::new()), |c| {
        (c.hits.to_string(), c.misses.to_string())
    });
    let (registrations, kv_writes, failures) =
        churn.map_or((String::new(), String::new(), String::new()), |c| {
            (
                c.registrations.to_string(),
                c.kv_writes.to_string(),
                c.failures.to_string(),
            )
        });
    format!(
        "{target},{},{},{},{:.0},{},{},{:.0},{:.0},{:.0},{},{:.0},{:.1},{body_bytes},{},{hits},{misses},{},{registrations},{kv_writes},{failures},{}",
        m.tool,
        m.rate_target.map_or("max".to_string(), |r| r.to_string()),
        m.connections,
        m.seconds,
        m.requests,
        m.errors,
        m.achieved_rps,
        m.p50_us,
        m.p99_us,
        optional(m.p999_us, 0),
        m.max_us,
        m.cpu_us_per_request(),
        scenario.name(),
        optional(cache.and_then(|c| c.hit_ratio()), 4),
        optional(cpu_per_miss, 1),
    )
}

/// One server under load.
struct Target {
    name: String,
    addr: SocketAddr,
    pid: u32,
    /// Shoal's API, whose cache counters are read around each run.
    cache_api: Option<SocketAddr>,
}

/// A server under load and the URLs it is asked for.
struct Leg<'a> {
    target: &'a Target,
    paths: Paths,
    body_bytes: usize,
}

#[derive(Clone, Copy)]
enum Tool {
    MaxRate,
    FixedRate(u32),
}

/// Runs loads and collects their rows.
struct Runner<'a> {
    options: &'a Options,
    /// Running while the churned scenarios are measured.
    churn: Option<Churn>,
    rows: Vec<String>,
    /// Numbers wrk's output files, so every run's is kept.
    runs: usize,
}

impl Runner<'_> {
    async fn measure(&mut self, leg: &Leg<'_>, scenario: Scenario, tool: Tool) -> Result<()> {
        let options = self.options;
        let load = Load {
            wrk_bin: &options.wrk_bin,
            duration: options.duration,
            connections: options.connections,
            work: &options.work,
        };
        let target = leg.target;
        let cache_before = match target.cache_api {
            Some(api) => Some(CacheReading::read(api).await?),
            None => None,
        };
        let churn_before = self.churn.as_ref().map(Churn::counts);
        self.runs += 1;
        let measured = match tool {
            Tool::MaxRate => {
                let name = format!("{:03}-{}-{}", self.runs, target.name, scenario.name());
                load::wrk(&load, &name, target.addr, &leg.paths, target.pid)?
            }
            Tool::FixedRate(rate) => {
                load::fixed_rate(&load, target.addr, &leg.paths, target.pid, rate).await?
            }
        };
        let cache = match (target.cache_api, cache_before) {
            (Some(api), Some(before)) => Some(CacheReading::read(api).await?.since(&before)),
            _ => None,
        };
        let churn = self
            .churn
            .as_ref()
            .zip(churn_before)
            .map(|(churn, before)| churn.counts().since(&before));
        self.rows.push(row(
            &target.name,
            &measured,
            leg.body_bytes,
            scenario,
            cache,
            churn,
        ));
        Ok(())
    }

    /// Shoal and the bare server side by side: each load on one, then the
    /// same load on the other, so both see the same machine; the maximum
    /// rate over a few alternating rounds, so a burst of load elsewhere
    /// hits both alike.
    async fn side_by_side(&mut self, legs: [&Leg<'_>; 2], scenario: Scenario) -> Result<()> {
        for round in 0..WRK_ROUNDS {
            eprintln!(
                "[lookup {} {}] wrk, max rate, round {}",
                legs[0].target.name,
                scenario.name(),
                round + 1
            );
            for leg in legs {
                self.measure(leg, scenario, Tool::MaxRate).await?;
            }
        }
        for &rate in &self.options.rates {
            eprintln!(
                "[lookup {} {}] fixed rate {rate}/s",
                legs[0].target.name,
                scenario.name()
            );
            for leg in legs {
                self.measure(leg, scenario, Tool::FixedRate(rate)).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Ok(())
    }
}

/// Runs the lookup benchmark and returns CSV rows (see [`HEADER`]).
pub async fn run(options: &Options) -> Result<Vec<String>> {
    let _ = std::fs::remove_dir_all(&options.work);
    std::fs::create_dir_all(&options.work)?;
    let system = System::Shoal {
        bin: options.shoal_bin.clone(),
        serf_intervals: false,
    };
    // Indexes far from the cluster runs' so addresses never overlap.
    let first = system.spawn(200, None, &options.work)?;
    let others = [
        system.spawn(201, Some(first.gossip), &options.work)?,
        system.spawn(202, Some(first.gossip), &options.work)?,
    ];
    let mut agents = vec![&first];
    agents.extend(others.iter());
    for (index, agent) in agents.iter().enumerate() {
        let body = serde_json::json!({ "Name": "web", "ID": format!("web-{index}"), "Port": 8080, "Tags": ["v1"] });
        put(agent, "/v1/agent/service/register", body.to_string()).await?;
    }
    // A 2 KiB value (about the size of the health answer) and a flag.
    let value: String = (0..2048).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    put(&first, "/v1/kv/bench/value", value).await?;
    let flag = serde_json::json!({ "enabled": true, "rollout_percentage": 50 });
    put(&first, "/v1/flags/bench-flag", flag.to_string()).await?;
    wait_for_instances(&first, ENDPOINTS[0].1, 3).await?;

    // The bare server answers each endpoint with Shoal's exact bytes.
    let mut client = HttpClient::new(first.api);
    let mut routes = Vec::new();
    let mut bodies = Vec::new();
    for (name, path, content_type) in ENDPOINTS {
        let response = client.get(path).await?;
        anyhow::ensure!(
            response.status.is_success(),
            "{path} answered {}",
            response.status
        );
        let file = options.work.join(format!("body-{name}"));
        std::fs::write(&file, &response.body)?;
        routes.push(format!("/{name}={}={content_type}", file.display()));
        bodies.push(response.body.len());
    }
    let hello_addr: SocketAddr = "127.30.0.1:8080".parse()?;
    let hello = start_hello(options, hello_addr, &routes, "hello").await?;

    let shoal_pid = first.process.pid().context("shoal not running")?;
    let hello_pid = hello.pid().context("hello not running")?;
    let shoal_target = |endpoint: &str| Target {
        name: format!("shoal {endpoint}"),
        addr: first.api,
        pid: shoal_pid,
        cache_api: Some(first.api),
    };
    let hello_target = |endpoint: &str, addr: SocketAddr, pid: u32| Target {
        name: format!("same-bytes {endpoint}"),
        addr,
        pid,
        cache_api: None,
    };
    let mut runner = Runner {
        options,
        churn: None,
        rows: Vec::new(),
        runs: 0,
    };
    // (targets, legs) of each endpoint with one URL.
    let one_url: Vec<(Target, Target, String, usize)> = ENDPOINTS
        .iter()
        .zip(&bodies)
        .map(|((endpoint, _, _), &bytes)| {
            (
                shoal_target(endpoint),
                hello_target(endpoint, hello_addr, hello_pid),
                format!("/{endpoint}"),
                bytes,
            )
        })
        .collect();
    let flags_bytes = bodies[2];
    let (flags_shoal, flags_hello) = (
        shoal_target("flags"),
        hello_target("flags", hello_addr, hello_pid),
    );
    let users = [
        Leg {
            target: &flags_shoal,
            paths: Paths::Rotating {
                prefix: FLAG_USERS_PREFIX.into(),
                count: USERS,
            },
            body_bytes: flags_bytes,
        },
        Leg {
            target: &flags_hello,
            paths: Paths::Rotating {
                prefix: "/flags?user=u-".into(),
                count: USERS,
            },
            body_bytes: flags_bytes,
        },
    ];

    // 1. One URL, static cluster: all hits (the figures as before).
    for ((_, path, _), (shoal, hello, hello_path, bytes)) in ENDPOINTS.iter().zip(&one_url) {
        let legs = one_url_legs(shoal, path, hello, hello_path, *bytes);
        runner
            .side_by_side([&legs[0], &legs[1]], Scenario::Static)
            .await?;
    }
    // 2. 1,000 users of one flag.
    runner
        .side_by_side([&users[0], &users[1]], Scenario::Users)
        .await?;
    // 3. The same under churn, driven on a peer.
    runner.churn = Some(Churn::start(others[0].api)?);
    // A few changes first, so the first run starts in the steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for ((_, path, _), (shoal, hello, hello_path, bytes)) in ENDPOINTS.iter().zip(&one_url) {
        let legs = one_url_legs(shoal, path, hello, hello_path, *bytes);
        runner
            .side_by_side([&legs[0], &legs[1]], Scenario::Churn)
            .await?;
    }
    runner
        .side_by_side([&users[0], &users[1]], Scenario::UsersChurn)
        .await?;
    let churned = runner.churn.take().context("churn running")?.stop()?;
    eprintln!("[lookup] churn over the churned runs: {churned:?}");
    anyhow::ensure!(
        churned.registrations > 0 && churned.kv_writes > 0,
        "the churn driver changed nothing ({churned:?}): see the agents' logs in {}",
        options.work.display()
    );

    // 4. Misses: 3 instances (`web`) and MANY_INSTANCES (`big`).
    for i in 0..MANY_INSTANCES {
        let body = serde_json::json!({ "Name": "big", "ID": format!("big-{i}"), "Port": 9000 + i, "Tags": ["v1"] });
        put(
            agents[i % agents.len()],
            "/v1/agent/service/register",
            body.to_string(),
        )
        .await?;
    }
    wait_for_instances(&first, MANY_PATH, MANY_INSTANCES).await?;
    let many = client.get(MANY_PATH).await?;
    let file = options.work.join("body-health-100");
    std::fs::write(&file, &many.body)?;
    let hello_many_addr: SocketAddr = "127.30.0.2:8080".parse()?;
    let hello_many = start_hello(
        options,
        hello_many_addr,
        &[format!("/health-100={}=application/json", file.display())],
        "hello-many",
    )
    .await?;
    let many_name = format!("health-{MANY_INSTANCES}");
    let (many_shoal, many_hello) = (
        shoal_target(&many_name),
        hello_target(
            &many_name,
            hello_many_addr,
            hello_many.pid().context("hello not running")?,
        ),
    );
    let misses = [
        (
            &one_url[0].0,
            ENDPOINTS[0].1,
            &one_url[0].1,
            "/health",
            bodies[0],
        ),
        (
            &many_shoal,
            MANY_PATH,
            &many_hello,
            "/health-100",
            many.body.len(),
        ),
    ];
    for (shoal, path, hello, hello_path, bytes) in misses {
        let [hit, same_bytes] = one_url_legs(shoal, path, hello, hello_path, bytes);
        let miss = Leg {
            target: shoal,
            paths: Paths::Rotating {
                prefix: format!("{path}&bust="),
                count: BUST_COUNT,
            },
            body_bytes: bytes,
        };
        for round in 0..WRK_ROUNDS {
            eprintln!(
                "[lookup {} hit/miss] wrk, max rate, round {}",
                shoal.name,
                round + 1
            );
            runner.measure(&hit, Scenario::Hit, Tool::MaxRate).await?;
            runner.measure(&miss, Scenario::Miss, Tool::MaxRate).await?;
            runner
                .measure(&same_bytes, Scenario::Hit, Tool::MaxRate)
                .await?;
        }
    }

    let mut rows = runner.rows;
    let memory = process::memory(shoal_pid)?;
    eprintln!(
        "[lookup] shoal agent after the load: RSS {} KiB (anon {} KiB, file {} KiB)",
        memory.rss, memory.anon, memory.file
    );
    rows.push(format!(
        "shoal-rss-after-load-kib,,,,,,,,{},{},{},{},,,,,,,,,,",
        memory.rss, memory.anon, memory.file, memory.pss
    ));
    Ok(rows)
}

/// Shoal asked for `path`, the bare server for `hello_path`: the same bytes.
fn one_url_legs<'a>(
    shoal: &'a Target,
    path: &str,
    hello: &'a Target,
    hello_path: &str,
    body_bytes: usize,
) -> [Leg<'a>; 2] {
    [
        Leg {
            target: shoal,
            paths: Paths::One(path.to_string()),
            body_bytes,
        },
        Leg {
            target: hello,
            paths: Paths::One(hello_path.to_string()),
            body_bytes,
        },
    ]
}

/// Waits until `agent` answers `path` with `count` instances.
async fn wait_for_instances(agent: &Agent, path: &str, count: usize) -> Result<()> {
    let mut client = HttpClient::new(agent.api);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(path).await?;
        if response.json()?.as_array().map_or(0, Vec::len) == count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} never listed {count} instances at {path}",
            agent.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `shoal-bench-hello` on `addr` with `routes` (`/NAME=FILE=TYPE`)
/// and waits until it answers.
async fn start_hello(
    options: &Options,
    addr: SocketAddr,
    routes: &[String],
    name: &str,
) -> Result<ChildGuard> {
    let mut command = Command::new(&options.hello_bin);
    command.arg(addr.to_string()).args(routes);
    let hello = ChildGuard::spawn(name, command, &options.work.join(format!("{name}.log")))?;
    let mut client = HttpClient::new(addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get("/hello").await {
            Ok(_) => return Ok(hello),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => return Err(error.context(format!("{name} server"))),
        }
    }
}

/// `shoal-bench-hello` next to this executable.
pub fn default_hello_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("shoal-bench-hello")))
        .unwrap_or_else(|| PathBuf::from("shoal-bench-hello"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_every_column_and_cpu_per_miss_only_for_misses() {
        let measured = Measured {
            tool: "wrk",
            rate_target: None,
            connections: 16,
            seconds: 10.0,
            requests: 100_000,
            errors: 0,
            achieved_rps: 10_000.0,
            p50_us: 100.0,
            p99_us: 900.0,
            p999_us: None,
            max_us: 5000.0,
            server_cpu: Duration::from_secs(2),
        };
        let cache = CacheDelta {
            hits: 0,
            misses: 100_000,
        };
        let columns = HEADER.split(',').count();
        let miss = row(
            "shoal health",
            &measured,
            1936,
            Scenario::Miss,
            Some(cache),
            None,
        );
        let fields: Vec<&str> = miss.split(',').collect();
        assert_eq!(fields.len(), columns, "{miss}");
        // 2 s of CPU over 100,000 misses.
        assert_eq!(fields[columns - 1], "20.0");
        assert_eq!(fields[17], "0.0000");
        let churn = ChurnCounts {
            registrations: 10,
            deregistrations: 10,
            kv_writes: 100,
            failures: 0,
        };
        let churned = row(
            "shoal kv-raw",
            &measured,
            2048,
            Scenario::Churn,
            Some(cache),
            Some(churn),
        );
        let fields: Vec<&str> = churned.split(',').collect();
        assert_eq!(fields.len(), columns);
        assert_eq!(
            &fields[14..],
            ["churn", "0", "100000", "0.0000", "10", "100", "0", ""]
        );
        let bare = row(
            "same-bytes kv-raw",
            &measured,
            2048,
            Scenario::Churn,
            None,
            Some(churn),
        );
        assert_eq!(bare.split(',').count(), columns);
        for scenario in Scenario::ALL {
            assert_eq!(Scenario::parse(scenario.name()), Some(scenario));
        }
        assert_eq!(Scenario::parse(""), Some(Scenario::Static));
        assert_eq!(Scenario::parse("stormy"), None);
    }
}
