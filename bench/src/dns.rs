//! Shoal's DNS interface beside Debian's dnsmasq, in one run, with
//! `dnsperf`: `web.service.consul` A (three instances) and SRV, answered
//! by a Shoal agent from its catalog and by dnsmasq from a hosts file
//! (`--srv-host` for SRV), which is what many Consul users put in front of
//! Consul. For each target: queries per second at saturation (dnsperf's
//! default 100 outstanding queries), then latency percentiles at a fixed
//! rate (dnsperf `-Q`, each reply's latency from `-v`), and the server's
//! CPU time per query over the saturation run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::Method;

use crate::http::HttpClient;
use crate::process::{self, ChildGuard};
use crate::stats;

pub struct Options {
    pub shoal_bin: PathBuf,
    pub dnsperf_bin: PathBuf,
    pub dnsmasq_bin: PathBuf,
    /// The fixed rate of the latency runs.
    pub rate: u32,
    pub duration: Duration,
    pub work: PathBuf,
}

pub const HEADER: &str = "server,query,saturation_qps,lost_at_saturation,cpu_us_per_query,rate_target,achieved_qps,p50_us,p99_us,p999_us,max_us,lost_at_rate";

/// Addresses far from the other benchmarks'.
const SHOAL_IP: &str = "127.31.0.1";
const DNSMASQ_IP: &str = "127.31.0.2";
const DNS_PORT: u16 = 8600;

/// The three instances both servers answer with.
const ADDRESSES: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];

pub async fn run(options: &Options) -> Result<Vec<String>> {
    let _ = std::fs::remove_dir_all(&options.work);
    std::fs::create_dir_all(&options.work)?;
    let shoal_dns: SocketAddr = format!("{SHOAL_IP}:{DNS_PORT}").parse()?;
    let dnsmasq_dns: SocketAddr = format!("{DNSMASQ_IP}:{DNS_PORT}").parse()?;
    let shoal = start_shoal(options, shoal_dns).await?;
    let dnsmasq = start_dnsmasq(options, dnsmasq_dns)?;
    for server in [shoal_dns, dnsmasq_dns] {
        wait_answering(server, 3)?;
    }
    let shoal_pid = shoal.pid().context("shoal exited")?;
    let dnsmasq_pid = dnsmasq.pid().context("dnsmasq exited")?;
    let mut rows = Vec::new();
    // Interleaved, so that both see the same background load.
    for query in ["web.service.consul A", "web.service.consul SRV"] {
        for (server, addr, pid) in [
            ("shoal", shoal_dns, shoal_pid),
            ("dnsmasq", dnsmasq_dns, dnsmasq_pid),
        ] {
            eprintln!("dns: {server} {query}");
            rows.push(measure(options, server, addr, pid, query)?);
        }
    }
    Ok(rows)
}

async fn start_shoal(options: &Options, dns: SocketAddr) -> Result<ChildGuard> {
    let data_dir = options.work.join("shoal");
    std::fs::create_dir_all(&data_dir)?;
    let api: SocketAddr = format!("{SHOAL_IP}:8500").parse()?;
    let mut command = Command::new(&options.shoal_bin);
    command
        .arg("agent")
        .args(["--node", "dns-bench"])
        .args(["--bind", &format!("{SHOAL_IP}:7946")])
        .args(["--http-addr", &api.to_string()])
        .args(["--dns-addr", &dns.to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--log-level", "warn"])
        .env_remove("RUST_LOG")
        .env_remove("SHOAL_CONFIG")
        .env_remove("SHOAL_JOIN");
    let agent = ChildGuard::spawn("shoal", command, &options.work.join("shoal.log"))?;
    let mut client = HttpClient::new(api);
    for (index, address) in ADDRESSES.iter().enumerate() {
        let body = serde_json::json!({
            "Name": "web", "ID": format!("web-{index}"), "Address": address, "Port": 8080,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = client
                .request(
                    Method::PUT,
                    "/v1/agent/service/register",
                    Bytes::from(body.to_string()),
                    Duration::from_secs(2),
                )
                .await;
            match attempt {
                Ok(response) if response.status.is_success() => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(response) => bail!("register answered {}", response.status),
                Err(error) => return Err(error),
            }
        }
    }
    Ok(agent)
}

fn start_dnsmasq(options: &Options, dns: SocketAddr) -> Result<ChildGuard> {
    let hosts = options.work.join("hosts");
    let lines: String = ADDRESSES
        .iter()
        .map(|address| format!("{address} web.service.consul\n"))
        .collect();
    std::fs::write(&hosts, lines)?;
    let mut command = Command::new(&options.dnsmasq_bin);
    command
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--listen-address={}", dns.ip()))
        .arg("--bind-interfaces")
        .arg(format!("--port={}", dns.port()))
        .arg("--cache-size=1000");
    for index in 0..ADDRESSES.len() {
        command.arg(format!(
            "--srv-host=web.service.consul,node-{index}.node.dc1.consul,8080,1,1"
        ));
    }
    ChildGuard::spawn("dnsmasq", command, &options.work.join("dnsmasq.log"))
}

/// Waits until `server` answers `web.service.consul` with `count` records.
fn wait_answering(server: SocketAddr, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = Command::new("dig")
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string()])
            .args(["web.service.consul", "A", "+short", "+time=1", "+tries=1"])
            .output()
            .context("run dig (apt-get install dnsutils)")?;
        let answers = String::from_utf8_lossy(&output.stdout).lines().count();
        if answers == count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{server} never answered {count} records (last: {answers})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saturation, then the fixed rate; one CSV row.
fn measure(
    options: &Options,
    server: &str,
    addr: SocketAddr,
    pid: u32,
    query: &str,
) -> Result<String> {
    let queries = options.work.join("queries.txt");
    std::fs::write(&queries, format!("{query}\n"))?;
    let seconds = options.duration.as_secs().max(1).to_string();

    let cpu_before = process::cpu_ns(pid)?;
    let saturation = dnsperf(options, addr, &queries, &["-l", &seconds])?;
    let cpu_after = process::cpu_ns(pid)?;
    let completed = saturation.completed.max(1);
    let cpu_us_per_query = (cpu_after - cpu_before) as f64 / 1000.0 / completed as f64;

    let rate = options.rate.to_string();
    let fixed = dnsperf(
        options,
        addr,
        &queries,
        &["-l", &seconds, "-Q", &rate, "-v"],
    )?;
    let mut latencies = fixed.latencies_us.clone();
    latencies.sort_by(f64::total_cmp);
    Ok(format!(
        "{server},{query},{:.0},{},{cpu_us_per_query:.2},{},{:.0},{:.0},{:.0},{:.0},{:.0},{}",
        saturation.qps,
        saturation.lost,
        options.rate,
        fixed.qps,
        stats::percentile(&latencies, 50.0),
        stats::percentile(&latencies, 99.0),
        stats::percentile(&latencies, 99.9),
        stats::max(&latencies),
        fixed.lost,
    ))
}

struct Run {
    qps: f64,
    completed: u64,
    lost: u64,
    latencies_us: Vec<f64>,
}

fn dnsperf(options: &Options, addr: SocketAddr, queries: &Path, extra: &[&str]) -> Result<Run> {
    let output = Command::new(&options.dnsperf_bin)
        .args(["-s", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(extra)
        .output()
        .context("run dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |label: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
    };
    let (Some(qps), Some(completed), Some(lost)) = (
        field("Queries per second:"),
        field("Queries completed:"),
        field("Queries lost:"),
    ) else {
        bail!("dnsperf printed no statistics: {text}");
    };
    let latencies_us = text
        .lines()
        .filter(|line| line.starts_with("> "))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .map(|seconds| seconds * 1e6)
        .collect();
    Ok(Run {
        qps,
        completed: completed as u64,
        lost: lost as u64,
        latencies_us,
    })
}

/// The markdown table of `dns.csv`.
pub fn render(csv: &Path) -> Result<String> {
    let text = std::fs::read_to_string(csv)?;
    let mut lines = text.lines();
    lines.next();
    let mut out = String::from(
        "| server | query | QPS at saturation | CPU µs/query | at | p50 µs | p99 µs | p99.9 µs | max µs | lost |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 12 {
            continue;
        }
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} qps | {} | {} | {} | {} | {} |\n",
            f[0], f[1], f[2], f[4], f[6], f[7], f[8], f[9], f[10], f[11]
        ));
    }
    Ok(out)
}
