//! The markdown of `lookup.csv` (see `lookup::HEADER`): the `static` runs
//! as one table (as before scenarios existed, and rows written then still
//! read as `static`), then, when the CSV has them, the other scenarios:
//! maximum rates beside the bare server with the cache's hit ratio, the
//! fixed-rate latencies, and the CPU a miss costs.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::lookup::{ENDPOINTS, MANY_INSTANCES, Scenario};
use crate::stats;

/// One row of `lookup.csv`, the fields the report reads.
#[derive(Clone, Debug)]
struct Run<'a> {
    fields: Vec<&'a str>,
    scenario: Scenario,
}

impl<'a> Run<'a> {
    fn parse(line: &'a str) -> Option<Run<'a>> {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 14 {
            return None;
        }
        let scenario = Scenario::parse(fields.get(14).copied().unwrap_or(""))?;
        Some(Run { fields, scenario })
    }

    fn target(&self) -> &str {
        self.fields[0]
    }

    fn is_wrk(&self) -> bool {
        self.fields[1] == "wrk"
    }

    fn number(&self, column: usize) -> f64 {
        self.fields
            .get(column)
            .and_then(|f| f.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn count(&self, column: usize) -> Option<u64> {
        self.fields.get(column).and_then(|f| f.parse().ok())
    }

    fn rps(&self) -> f64 {
        self.number(7)
    }

    fn cpu_per_request(&self) -> f64 {
        self.number(12)
    }

    fn seconds(&self) -> f64 {
        self.number(4)
    }

    /// (hits, misses) of the agent's cache over the run (Shoal only).
    fn cache(&self) -> Option<(u64, u64)> {
        Some((self.count(15)?, self.count(16)?))
    }

    /// (registrations, KV writes) of the churn driver over the run.
    fn churn(&self) -> Option<(u64, u64)> {
        Some((self.count(18)?, self.count(19)?))
    }
}

/// Hits over hits + misses, pooled over `runs`; `None` without counters.
fn pooled_hit_ratio<'a>(runs: impl IntoIterator<Item = &'a Run<'a>>) -> Option<f64> {
    let (hits, misses) = runs
        .into_iter()
        .filter_map(Run::cache)
        .fold((0, 0), |(h, m), (hits, misses)| (h + hits, m + misses));
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or("–".to_string(), |r| format!("{r:.3}"))
}

/// The markdown of `lookup.csv`.
pub fn render(csv: &Path) -> Result<String> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("read {}", csv.display()))?;
    let mut out = String::from(
        "| target | load | requests | achieved req/s | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | server CPU per request (µs) | body (bytes) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut notes = String::new();
    let mut runs = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.first() == Some(&"shoal-rss-after-load-kib") && f.len() >= 12 {
            notes = format!(
                "\nShoal agent's memory after all the lookup load: VmRSS {} KiB (RssAnon {} KiB, RssFile {} KiB, PSS {} KiB).\n",
                f[8], f[9], f[10], f[11]
            );
            continue;
        }
        if let Some(run) = Run::parse(line) {
            runs.push(run);
        }
    }
    for run in runs.iter().filter(|r| r.scenario == Scenario::Static) {
        let f = &run.fields;
        let load = if run.is_wrk() {
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
        if let (Some(shoal), Some(bare)) = (
            medians(&runs, &format!("shoal {endpoint}"), Scenario::Static),
            medians(&runs, &format!("same-bytes {endpoint}"), Scenario::Static),
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
    if runs.iter().any(|r| r.scenario != Scenario::Static) {
        out.push_str(&render_scenarios(&runs));
    }
    Ok(out)
}

/// Medians over the wrk rounds of `target` in `scenario`: (req/s, server
/// CPU µs per request).
fn medians(runs: &[Run], target: &str, scenario: Scenario) -> Option<(f64, f64)> {
    let rounds: Vec<&Run> = wrk_rounds(runs, target, scenario).collect();
    let rates: Vec<f64> = rounds.iter().map(|r| r.rps()).collect();
    let cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_per_request()).collect();
    (!rounds.is_empty()).then(|| (stats::median(&rates), stats::median(&cpu)))
}

fn wrk_rounds<'r, 'a>(
    runs: &'r [Run<'a>],
    target: &'r str,
    scenario: Scenario,
) -> impl Iterator<Item = &'r Run<'a>> {
    runs.iter()
        .filter(move |r| r.is_wrk() && r.target() == target && r.scenario == scenario)
}

/// The tables of the scenarios other than `static` (see `lookup`'s docs).
fn render_scenarios(runs: &[Run]) -> String {
    let mut out = String::from(
        "\n### Lookups with churn, many users, and misses\n\n\
         Maximum rate (wrk, median of the rounds), beside the same-bytes server measured in the same rounds; \
         hit ratio of the agent's lookup cache pooled over the rounds (`shoal_api_cache_hits_total` / \
         (hits + `shoal_api_cache_misses_total`), read before and after each run); churn as done by the driver.\n\n\
         | lookup | scenario | Shoal req/s | same-bytes req/s | Shoal / same-bytes | hit ratio | server CPU per request (µs) | churn: registrations/s, KV writes/s |\n\
         |---|---|---:|---:|---:|---:|---:|---|\n",
    );
    let mut endpoints: Vec<&str> = ENDPOINTS.iter().map(|(name, _, _)| *name).collect();
    let many = format!("health-{MANY_INSTANCES}");
    endpoints.push(&many);
    let max_rate_scenarios = [
        Scenario::Static,
        Scenario::Users,
        Scenario::Churn,
        Scenario::UsersChurn,
    ];
    for endpoint in &endpoints {
        for scenario in max_rate_scenarios {
            let shoal_name = format!("shoal {endpoint}");
            let (Some(shoal), Some(bare)) = (
                medians(runs, &shoal_name, scenario),
                medians(runs, &format!("same-bytes {endpoint}"), scenario),
            ) else {
                continue;
            };
            let churn = churn_rates(wrk_rounds(runs, &shoal_name, scenario));
            let _ = writeln!(
                out,
                "| {endpoint} | {} | {:.0} | {:.0} | {:.2}× | {} | {:.1} | {churn} |",
                scenario.name(),
                shoal.0,
                bare.0,
                shoal.0 / bare.0,
                ratio_text(pooled_hit_ratio(wrk_rounds(runs, &shoal_name, scenario))),
                shoal.1,
            );
        }
    }

    out.push_str(
        "\nFixed rates (open loop), the scenarios beyond `static`:\n\n\
         | target | scenario | rate (req/s) | achieved req/s | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | hit ratio | server CPU per request (µs) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for run in runs
        .iter()
        .filter(|r| !r.is_wrk() && r.scenario != Scenario::Static)
    {
        let f = &run.fields;
        let ratio = run
            .cache()
            .and_then(|(h, m)| (h + m > 0).then(|| h as f64 / (h + m) as f64));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f[0],
            run.scenario.name(),
            f[2],
            f[7],
            f[8],
            f[9],
            f[10],
            f[11],
            ratio_text(ratio),
            f[12]
        );
    }

    out.push_str(
        "\nThe CPU cost of a miss: every request a distinct URL (`&bust=N`, ignored by the handler, part of the \
         cache key), beside hits of the same answer and the same-bytes server, in the same rounds (wrk, \
         medians). CPU per miss: the agent's CPU time over the run (`/proc/PID/task/*/schedstat`) divided by \
         the misses its counter recorded.\n\n\
         | answer | body (bytes) | hit: req/s | hit: CPU per request (µs) | miss: req/s | miss: hit ratio | miss: CPU per miss (µs) | miss − hit (µs) | same-bytes req/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for endpoint in ["health", many.as_str()] {
        let shoal_name = format!("shoal {endpoint}");
        let (Some(hit), Some(miss)) = (
            medians(runs, &shoal_name, Scenario::Hit),
            medians(runs, &shoal_name, Scenario::Miss),
        ) else {
            continue;
        };
        let per_miss: Vec<f64> = wrk_rounds(runs, &shoal_name, Scenario::Miss)
            .map(|r| r.number(21))
            .collect();
        let per_miss = stats::median(&per_miss);
        let bare = medians(runs, &format!("same-bytes {endpoint}"), Scenario::Hit)
            .map_or("–".to_string(), |b| format!("{:.0}", b.0));
        let body = wrk_rounds(runs, &shoal_name, Scenario::Hit)
            .next()
            .map_or("", |r| r.fields[13]);
        let instances = if endpoint == "health" {
            "3".to_string()
        } else {
            MANY_INSTANCES.to_string()
        };
        let _ = writeln!(
            out,
            "| `{}` ({instances} instances) | {body} | {:.0} | {:.1} | {:.0} | {} | {per_miss:.1} | {:.1} | {bare} |",
            if endpoint == "health" { "web" } else { "big" },
            hit.0,
            hit.1,
            miss.0,
            ratio_text(pooled_hit_ratio(wrk_rounds(
                runs,
                &shoal_name,
                Scenario::Miss
            ))),
            per_miss - hit.1,
        );
    }
    out
}

/// Registrations and KV writes per second over `runs`, or `–`.
fn churn_rates<'a>(runs: impl Iterator<Item = &'a Run<'a>>) -> String {
    let (mut registrations, mut kv_writes, mut seconds) = (0, 0, 0.0);
    for run in runs {
        if let Some((run_registrations, run_kv_writes)) = run.churn() {
            registrations += run_registrations;
            kv_writes += run_kv_writes;
            seconds += run.seconds();
        }
    }
    if seconds <= 0.0 {
        return "–".to_string();
    }
    format!(
        "{:.1}, {:.1}",
        registrations as f64 / seconds,
        kv_writes as f64 / seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV as `lookup::run` writes it, cut to one round each.
    const CSV: &str = "\
target,tool,rate_target,connections,seconds,requests,errors,achieved_rps,p50_us,p99_us,p999_us,max_us,server_cpu_us_per_req,body_bytes,scenario,cache_hits,cache_misses,hit_ratio,churn_registrations,churn_kv_writes,churn_failures,server_cpu_us_per_miss
shoal health,wrk,max,16,10,1000000,0,100000,120,300,,6000,8.0,2107,static,1000000,0,1.0000,,,,
same-bytes health,wrk,max,16,10,1200000,0,120000,110,400,,9000,7.0,2107,static,,,,,,,
shoal health,wrk,max,16,10,900000,0,90000,130,350,,7000,9.0,2107,churn,899980,20,1.0000,10,100,0,
same-bytes health,wrk,max,16,10,1200000,0,120000,110,400,,9000,7.0,2107,churn,,,,10,100,0,
shoal health,open-loop,1000,16,10,10000,0,1000,90,200,300,900,20.0,2107,churn,9980,20,0.9980,10,100,0,
shoal health,wrk,max,16,10,1000000,0,100000,120,300,,6000,8.0,2107,hit,1000000,0,1.0000,,,,
shoal health,wrk,max,16,10,500000,0,50000,250,600,,8000,20.0,2107,miss,0,500000,0.0000,,,,20.0
same-bytes health,wrk,max,16,10,1200000,0,120000,110,400,,9000,7.0,2107,hit,,,,,,,
shoal-rss-after-load-kib,,,,,,,,4000,1000,3000,1200,,,,,,,,,,
";

    #[test]
    fn every_scenario_is_reported_with_its_ratio_and_the_static_table_stays_apart() {
        let dir = std::env::temp_dir().join(format!("lookup-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("lookup.csv");
        std::fs::write(&csv, CSV).unwrap();
        let text = render(&csv).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // The first table holds the static rows only.
        let first_table = text.split("\n\n").next().unwrap();
        assert_eq!(first_table.matches("| shoal health |").count(), 1, "{text}");
        assert!(
            text.contains("health: Shoal's maximum rate is 0.83×"),
            "{text}"
        );
        // Churned: 90,000 against 120,000 req/s, 20 misses in 900,000.
        assert!(
            text.contains("| health | churn | 90000 | 120000 | 0.75× | 1.000 | 9.0 | 1.0, 10.0 |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| shoal health | churn | 1000 | 1000 | 90 | 200 | 300 | 900 | 0.998 | 20.0 |"
            ),
            "{text}"
        );
        // A miss: 20 µs of CPU, 12 more than a hit.
        assert!(
            text.contains("| `web` (3 instances) | 2107 | 100000 | 8.0 | 50000 | 0.000 | 20.0 | 12.0 | 120000 |"),
            "{text}"
        );
        assert!(text.contains("VmRSS 4000 KiB"), "{text}");
    }

    #[test]
    fn a_csv_from_before_scenarios_renders_as_before() {
        let old = "target,tool,rate_target,connections,seconds,requests,errors,achieved_rps,p50_us,p99_us,p999_us,max_us,server_cpu_us_per_req,body_bytes\n\
                   shoal kv-raw,wrk,max,16,10,1000,0,100,1,2,,3,8.1,2048\n\
                   same-bytes kv-raw,wrk,max,16,10,1000,0,100,1,2,,3,7.7,2048\n";
        let dir = std::env::temp_dir().join(format!("lookup-report-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("lookup.csv");
        std::fs::write(&csv, old).unwrap();
        let text = render(&csv).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            text.contains("kv-raw: Shoal's maximum rate is 1.00×"),
            "{text}"
        );
        assert!(!text.contains("with churn"), "{text}");
    }
}
