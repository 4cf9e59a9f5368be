//! Shoal alone: how fast a local service gets an answer from its sidecar.
//! Three lookups on one agent of a 3-agent cluster ([`ENDPOINTS`]):
//! `GET /v1/health/service/web?passing` (`web` runs on all three, 2 KiB),
//! `GET /v1/kv/bench/value?raw` (2 KiB) and `GET /v1/flags/bench-flag?user=`,
//! each beside a bare axum server on the same current-thread runtime that
//! answers the very same bytes (`shoal-bench-hello`): the ceiling of this
//! machine, measured in the same run.
//!
//! Two measurements per target: the maximum rate (`wrk`, closed loop), and
//! latency at fixed rates with our own open-loop generator: request i is
//! due at `start + i / rate` and its latency counts from then (to the
//! timer's 1 ms tick), so a stall shows up in the percentiles instead of
//! silently slowing the load (wrk's coordinated omission).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::Method;

use crate::http::HttpClient;
use crate::process::{self, ChildGuard};
use crate::stats;
use crate::system::System;

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
async fn put(agent: &crate::system::Agent, path: &str, body: String) -> Result<()> {
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

/// Rounds of the maximum-rate measurement (each target once per round).
const WRK_ROUNDS: usize = 3;

pub const HEADER: &str = "target,tool,rate_target,connections,seconds,requests,errors,achieved_rps,p50_us,p99_us,p999_us,max_us,server_cpu_us_per_req,body_bytes";

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

    let mut client = HttpClient::new(first.api);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(ENDPOINTS[0].1).await?;
        if response.json()?.as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent 0 never listed 3 instances of web"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The bare server answers each endpoint with Shoal's exact bytes.
    let hello_addr: SocketAddr = "127.30.0.1:8080".parse()?;
    let mut hello_command = Command::new(&options.hello_bin);
    hello_command.arg(hello_addr.to_string());
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
        hello_command.arg(format!("/{name}={}={content_type}", file.display()));
        bodies.push(response.body.len());
    }
    let hello = ChildGuard::spawn("hello", hello_command, &options.work.join("hello.log"))?;
    let mut hello_client = HttpClient::new(hello_addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match hello_client.get("/hello").await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => return Err(error.context("hello server")),
        }
    }

    let shoal_pid = first.process.pid().context("shoal not running")?;
    let hello_pid = hello.pid().context("hello not running")?;
    let mut rows = Vec::new();
    for ((endpoint, path, _), bytes) in ENDPOINTS.iter().zip(bodies) {
        let hello_path = format!("/{endpoint}");
        let targets = [
            (format!("shoal {endpoint}"), first.api, *path, shoal_pid),
            (
                format!("same-bytes {endpoint}"),
                hello_addr,
                hello_path.as_str(),
                hello_pid,
            ),
        ];
        // Side by side: each load on Shoal, then the same load on the
        // bare server, so both see the same machine.
        // The machine may be shared: alternate the two targets over a few
        // rounds, so a burst of load elsewhere hits both alike.
        for round in 0..WRK_ROUNDS {
            eprintln!("[lookup {endpoint}] wrk, max rate, round {}", round + 1);
            for (name, addr, path, pid) in &targets {
                rows.push(wrk(options, name, *addr, path, *pid, bytes)?);
            }
        }
        for &rate in &options.rates {
            eprintln!("[lookup {endpoint}] fixed rate {rate}/s");
            for (name, addr, path, pid) in &targets {
                rows.push(fixed_rate(options, name, *addr, path, *pid, bytes, rate).await?);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let memory = process::memory(first.process.pid().context("shoal not running")?)?;
    eprintln!(
        "[lookup] shoal agent after the load: RSS {} KiB (anon {} KiB, file {} KiB)",
        memory.rss, memory.anon, memory.file
    );
    rows.push(format!(
        "shoal-rss-after-load-kib,,,,,,,,{},{},{},{},,",
        memory.rss, memory.anon, memory.file, memory.pss
    ));
    Ok(rows)
}

/// `wrk -t1 -c<connections> -d<duration> --latency`: the maximum rate.
fn wrk(
    options: &Options,
    name: &str,
    addr: SocketAddr,
    path: &str,
    pid: u32,
    bytes: usize,
) -> Result<String> {
    let cpu_before = process::cpu_ticks(pid)?;
    let output = Command::new(&options.wrk_bin)
        .args([
            "-t1",
            &format!("-c{}", options.connections),
            &format!("-d{}s", options.duration.as_secs()),
        ])
        .arg("--latency")
        .arg(format!("http://{addr}{path}"))
        .output()
        .with_context(|| format!("run {} (apt-get install wrk)", options.wrk_bin.display()))?;
    let cpu = process::ticks_to_duration(process::cpu_ticks(pid)? - cpu_before);
    let text = String::from_utf8_lossy(&output.stdout);
    std::fs::write(
        options.work.join(format!("wrk-{name}.txt")),
        text.as_bytes(),
    )?;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let rps: f64 = field("Requests/sec:")
        .context("no Requests/sec in wrk output")?
        .parse()?;
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0);
    let errors: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let p50 = field("50%").and_then(wrk_duration_us).unwrap_or(f64::NAN);
    let p99 = field("99%").and_then(wrk_duration_us).unwrap_or(f64::NAN);
    let max = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|rest| rest.split_whitespace().nth(2))
        .and_then(wrk_duration_us)
        .unwrap_or(f64::NAN);
    let cpu_per_request = cpu.as_secs_f64() * 1e6 / requests.max(1) as f64;
    Ok(format!(
        "{name},wrk,max,{},{},{requests},{errors},{rps:.0},{p50:.0},{p99:.0},,{max:.0},{cpu_per_request:.1},{bytes}",
        options.connections,
        options.duration.as_secs()
    ))
}

/// wrk prints latencies like `63.00us`, `1.20ms`, `2.00s`.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let number: f64 = text[..split].parse().ok()?;
    let scale = match &text[split..] {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(number * scale)
}

/// Open-loop load at `rate` requests per second over `connections`
/// keep-alive connections; latency counts from each request's release
/// (at most one timer tick after its due time), whether or not a
/// connection is free to send it.
async fn fixed_rate(
    options: &Options,
    name: &str,
    addr: SocketAddr,
    path: &str,
    pid: u32,
    bytes: usize,
    rate: u32,
) -> Result<String> {
    let total = (f64::from(rate) * options.duration.as_secs_f64()) as u64;
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let due_rx = Rc::new(tokio::sync::Mutex::new(due_rx));
    let latencies = Rc::new(RefCell::new(Vec::with_capacity(total as usize)));
    let errors = Rc::new(RefCell::new(0u64));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.connections {
        let due_rx = Rc::clone(&due_rx);
        let latencies = Rc::clone(&latencies);
        let errors = Rc::clone(&errors);
        let path = path.to_string();
        workers.spawn_local(async move {
            let mut client = HttpClient::new(addr);
            loop {
                let Some(due) = due_rx.lock().await.recv().await else {
                    break;
                };
                match client
                    .request(Method::GET, &path, Bytes::new(), Duration::from_secs(5))
                    .await
                {
                    Ok(response) if response.status.is_success() => {
                        latencies
                            .borrow_mut()
                            .push(due.elapsed().as_secs_f64() * 1e6);
                    }
                    _ => *errors.borrow_mut() += 1,
                }
            }
        });
    }
    let cpu_before = process::cpu_ticks(pid)?;
    let started = Instant::now();
    // tokio's timer has a 1 ms granularity: wake once per tick and release
    // every request due by then, stamped with the release time, so the
    // timer's own lateness is not charged to the server (queueing behind a
    // busy connection still is).
    let mut released = 0u64;
    while released < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        let due_by_now = ((now - started).as_secs_f64() * f64::from(rate)) as u64;
        while released < total.min(due_by_now + 1) {
            due_tx.send(now)?;
            released += 1;
        }
    }
    drop(due_tx);
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(result)) =
        tokio::time::timeout_at(drain_deadline.into(), workers.join_next()).await
    {
        result?;
    }
    workers.abort_all();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process::ticks_to_duration(process::cpu_ticks(pid)? - cpu_before);
    let latencies = latencies.borrow();
    let errors = *errors.borrow();
    let done = latencies.len() as u64;
    Ok(format!(
        "{name},open-loop,{rate},{},{:.0},{done},{errors},{:.0},{:.0},{:.0},{:.0},{:.0},{:.1},{bytes}",
        options.connections,
        options.duration.as_secs_f64(),
        done as f64 / elapsed,
        stats::percentile(&latencies, 50.0),
        stats::percentile(&latencies, 99.0),
        stats::percentile(&latencies, 99.9),
        stats::max(&latencies),
        cpu.as_secs_f64() * 1e6 / done.max(1) as f64,
    ))
}

/// The markdown table of `lookup.csv`.
pub fn render(csv: &Path) -> Result<String> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("read {}", csv.display()))?;
    let mut out = String::from(
        "| target | load | requests | achieved req/s | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | server CPU per request (µs) | body (bytes) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut notes = String::new();
    let mut max_rates: Vec<(String, f64, f64)> = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 14 {
            continue;
        }
        if f[1] == "wrk" {
            max_rates.push((
                f[0].to_string(),
                f[7].parse().unwrap_or(f64::NAN),
                f[12].parse().unwrap_or(f64::NAN),
            ));
        }
        if f[0] == "shoal-rss-after-load-kib" {
            notes = format!(
                "\nShoal agent's memory after all the lookup load: VmRSS {} KiB (RssAnon {} KiB, RssFile {} KiB, PSS {} KiB).\n",
                f[8], f[9], f[10], f[11]
            );
            continue;
        }
        let load = if f[1] == "wrk" {
            format!("wrk, {} connections, max rate", f[3])
        } else {
            format!("open loop {} req/s, {} connections", f[2], f[3])
        };
        let dash = |s: &str| {
            if s.is_empty() {
                "–".to_string()
            } else {
                s.to_string()
            }
        };
        out.push_str(&format!(
            "| {} | {load} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f[0],
            f[5],
            f[7],
            f[8],
            f[9],
            dash(f[10]),
            f[11],
            f[12],
            f[13]
        ));
    }
    for (endpoint, _, _) in ENDPOINTS {
        // Medians over the rounds: (req/s, server CPU µs per request).
        let medians = |name: String| {
            let runs: Vec<&(String, f64, f64)> = max_rates
                .iter()
                .filter(|(target, ..)| *target == name)
                .collect();
            let rates: Vec<f64> = runs.iter().map(|run| run.1).collect();
            let cpu: Vec<f64> = runs.iter().map(|run| run.2).collect();
            (!runs.is_empty()).then(|| (stats::median(&rates), stats::median(&cpu)))
        };
        if let (Some(shoal), Some(bare)) = (
            medians(format!("shoal {endpoint}")),
            medians(format!("same-bytes {endpoint}")),
        ) {
            out.push_str(&format!(
                "\n- {endpoint}: Shoal's maximum rate is {:.2}× the same-bytes server's (median of the rounds: {:.0} vs {:.0} req/s); server CPU {:.1} vs {:.1} µs per request.",
                shoal.0 / bare.0,
                shoal.0,
                bare.0,
                shoal.1,
                bare.1
            ));
        }
    }
    out.push('\n');
    out.push_str(&notes);
    Ok(out)
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
    fn parses_wrk_durations() {
        assert_eq!(wrk_duration_us("63.00us"), Some(63.0));
        assert_eq!(wrk_duration_us("1.20ms"), Some(1200.0));
        assert_eq!(wrk_duration_us("2.00s"), Some(2e6));
        assert_eq!(wrk_duration_us("x"), None);
    }
}
