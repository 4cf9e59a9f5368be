//! The two load generators of the lookup benchmark, and what one run of
//! either measured:
//! - [`wrk`]: the maximum rate (`wrk -t1`, closed loop); with
//!   [`Paths::Rotating`], through a Lua script that rotates the request
//!   path ([`ROTATE_LUA`]);
//! - [`fixed_rate`]: our open-loop generator: request i is due at
//!   `start + i / rate` and its latency counts from then (to the timer's
//!   1 ms tick), so a stall shows up in the percentiles instead of
//!   silently slowing the load (wrk's coordinated omission).
//!
//! Server CPU is the sum of the server's `/proc/PID/task/*/schedstat` run
//! times over the run (nanoseconds, every thread), read just before the
//! load starts and just after it ends.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::Method;

use crate::http::HttpClient;
use crate::process;
use crate::stats;

/// The URLs (path and query) a run asks for, in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Paths {
    /// The same one every time.
    One(String),
    /// `prefix` followed by 1, 2, ... `count`, then 1 again: `count`
    /// distinct URLs (each a cache entry of its own on the agent).
    Rotating { prefix: String, count: u64 },
}

impl Paths {
    /// The URL of request `i` (from 0).
    pub fn nth(&self, i: u64) -> Cow<'_, str> {
        match self {
            Paths::One(path) => Cow::Borrowed(path),
            Paths::Rotating { prefix, count } => {
                Cow::Owned(format!("{prefix}{}", i % count.max(&1) + 1))
            }
        }
    }
}

/// wrk's request path, rotated as [`Paths::Rotating`] does; its arguments
/// (after `--`) are the prefix and the count. One Lua state per wrk thread
/// (`-t1`: one), so the rotation is exact.
pub const ROTATE_LUA: &str = r#"-- Written by shoal-bench (bench/src/load.rs): rotates the request path
-- over `count` distinct values, prefix .. 1, prefix .. 2, ...
local prefix, count, i = "/", 1, 0
function init(args)
  prefix = args[1]
  count = tonumber(args[2])
end
function request()
  i = i % count + 1
  return wrk.format("GET", prefix .. i)
end
"#;

/// One run's figures.
#[derive(Clone, Debug)]
pub struct Measured {
    /// `wrk` or `open-loop`.
    pub tool: &'static str,
    /// The open loop's fixed rate; `None` for wrk's maximum.
    pub rate_target: Option<u32>,
    pub connections: usize,
    pub seconds: f64,
    /// Requests answered (wrk: non-2xx included; the open loop: 2xx only).
    pub requests: u64,
    pub errors: u64,
    pub achieved_rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Only the open loop has it (wrk prints up to p99).
    pub p999_us: Option<f64>,
    pub max_us: f64,
    /// The server's CPU time over the run.
    pub server_cpu: Duration,
}

impl Measured {
    pub fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// What a run needs besides its target.
pub struct Load<'a> {
    pub wrk_bin: &'a Path,
    pub duration: Duration,
    pub connections: usize,
    /// Where wrk's output (`wrk-<name>.txt`) and the Lua script go.
    pub work: &'a Path,
}

/// `wrk -t1 -c<connections> -d<duration> --latency`: the maximum rate.
/// wrk's own output is kept as `wrk-<name>.txt` in the work directory
/// (`name` made file-safe), the last run of a name overwriting earlier ones.
pub fn wrk(load: &Load, name: &str, addr: SocketAddr, paths: &Paths, pid: u32) -> Result<Measured> {
    let mut command = Command::new(load.wrk_bin);
    command
        .args([
            "-t1",
            &format!("-c{}", load.connections),
            &format!("-d{}s", load.duration.as_secs()),
        ])
        .arg("--latency");
    match paths {
        Paths::One(path) => {
            command.arg(format!("http://{addr}{path}"));
        }
        Paths::Rotating { prefix, count } => {
            let script = load.work.join("rotate.lua");
            std::fs::write(&script, ROTATE_LUA)?;
            command
                .arg("-s")
                .arg(&script)
                .arg(format!("http://{addr}/"))
                .args(["--", prefix, &count.to_string()]);
        }
    }
    let cpu_before = process::cpu_ns(pid)?;
    let output = command
        .output()
        .with_context(|| format!("run {} (apt-get install wrk)", load.wrk_bin.display()))?;
    let server_cpu = Duration::from_nanos(process::cpu_ns(pid)?.saturating_sub(cpu_before));
    let text = String::from_utf8_lossy(&output.stdout);
    let file_name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::fs::write(
        load.work.join(format!("wrk-{file_name}.txt")),
        text.as_bytes(),
    )?;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed = parse_wrk(&text)?;
    Ok(Measured {
        tool: "wrk",
        rate_target: None,
        connections: load.connections,
        seconds: load.duration.as_secs_f64(),
        // As wrk counts them (non-2xx included, also in `errors`).
        requests: parsed.requests,
        errors: parsed.errors,
        achieved_rps: parsed.rps,
        p50_us: parsed.p50_us,
        p99_us: parsed.p99_us,
        p999_us: None,
        max_us: parsed.max_us,
        server_cpu,
    })
}

/// What `wrk --latency` printed.
#[derive(Debug, PartialEq)]
struct WrkOutput {
    requests: u64,
    errors: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn parse_wrk(text: &str) -> Result<WrkOutput> {
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
    Ok(WrkOutput {
        requests,
        errors,
        rps,
        p50_us: field("50%").and_then(wrk_duration_us).unwrap_or(f64::NAN),
        p99_us: field("99%").and_then(wrk_duration_us).unwrap_or(f64::NAN),
        max_us: text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Latency"))
            .and_then(|rest| rest.split_whitespace().nth(2))
            .and_then(wrk_duration_us)
            .unwrap_or(f64::NAN),
    })
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
pub async fn fixed_rate(
    load: &Load<'_>,
    addr: SocketAddr,
    paths: &Paths,
    pid: u32,
    rate: u32,
) -> Result<Measured> {
    let total = (f64::from(rate) * load.duration.as_secs_f64()) as u64;
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, u64)>();
    let due_rx = Rc::new(tokio::sync::Mutex::new(due_rx));
    let latencies = Rc::new(RefCell::new(Vec::with_capacity(total as usize)));
    let errors = Rc::new(RefCell::new(0u64));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..load.connections {
        let due_rx = Rc::clone(&due_rx);
        let latencies = Rc::clone(&latencies);
        let errors = Rc::clone(&errors);
        let paths = paths.clone();
        workers.spawn_local(async move {
            let mut client = HttpClient::new(addr);
            loop {
                let Some((due, i)) = due_rx.lock().await.recv().await else {
                    break;
                };
                match client
                    .request(
                        Method::GET,
                        &paths.nth(i),
                        Bytes::new(),
                        Duration::from_secs(5),
                    )
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
    let cpu_before = process::cpu_ns(pid)?;
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
            due_tx.send((now, released))?;
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
    let server_cpu = Duration::from_nanos(process::cpu_ns(pid)?.saturating_sub(cpu_before));
    let latencies = latencies.borrow();
    let errors = *errors.borrow();
    let done = latencies.len() as u64;
    Ok(Measured {
        tool: "open-loop",
        rate_target: Some(rate),
        connections: load.connections,
        seconds: load.duration.as_secs_f64(),
        requests: done,
        errors,
        achieved_rps: done as f64 / elapsed,
        p50_us: stats::percentile(&latencies, 50.0),
        p99_us: stats::percentile(&latencies, 99.0),
        p999_us: Some(stats::percentile(&latencies, 99.9)),
        max_us: stats::max(&latencies),
        server_cpu,
    })
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

    #[test]
    fn parses_wrk_output() {
        let text = "\
Running 10s test @ http://127.30.0.1:8080/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.53us  120.11us   4.21ms   90.00%
    Req/Sec    38.11k     1.20k   40.00k    70.00%
  Latency Distribution
     50%  398.00us
     75%  450.00us
     90%  520.00us
     99%    1.10ms
  379201 requests in 10.00s, 800.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  37918.21
Transfer/sec:     80.00MB
";
        assert_eq!(
            parse_wrk(text).unwrap(),
            WrkOutput {
                requests: 379_201,
                errors: 3,
                rps: 37918.21,
                p50_us: 398.0,
                p99_us: 1100.0,
                max_us: 4210.0,
            }
        );
        assert!(parse_wrk("wrk: connection refused").is_err());
    }

    #[test]
    fn rotating_paths_visit_each_url_once_per_turn() {
        let paths = Paths::Rotating {
            prefix: "/v1/flags/f?user=u-".into(),
            count: 1000,
        };
        assert_eq!(paths.nth(0), "/v1/flags/f?user=u-1");
        assert_eq!(paths.nth(999), "/v1/flags/f?user=u-1000");
        assert_eq!(paths.nth(1000), "/v1/flags/f?user=u-1");
        let distinct: std::collections::HashSet<String> =
            (0..5000).map(|i| paths.nth(i).into_owned()).collect();
        assert_eq!(distinct.len(), 1000);
        assert_eq!(Paths::One("/a".into()).nth(7), "/a");
    }
}
