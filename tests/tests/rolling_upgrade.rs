//! A rolling upgrade from the previous release (the commit in
//! `tests/compat/PREVIOUS`, built once under `target/compat`, see
//! `shoal_tests::compat`) to this build, then a rollback of one agent.
//!
//! Five agents of the previous release run a workload (KV writes,
//! overwrites, CAS, deletes, service registrations with TTL checks that
//! flip, flag changes); then each agent in turn is stopped, its binary
//! swapped, and started again on the same data dir; then one is rolled
//! back to the previous release. After every step the same workload runs
//! again through old and new agents alike, and every agent must show the
//! same membership, catalog, flags and KV, with every acknowledged write
//! in place, while no running agent is ever reported failed by another.
//!
//! Any change to a wire or disk format must keep this test green against
//! the previous release (CONTRIBUTING.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use shoal_tests::{Agent, AgentOptions, Cluster, QUICK_GOSSIP, http_json};

const AGENTS: usize = 5;
const CONVERGE_WITHIN: Duration = Duration::from_secs(90);

/// What the cluster must show: everything acknowledged so far.
#[derive(Default)]
struct Expected {
    kv: BTreeMap<String, String>,
    /// Service ID → (agent index, TTL check status).
    services: BTreeMap<String, (usize, &'static str)>,
    /// Flag → rollout percentage.
    flags: BTreeMap<String, u64>,
}

#[derive(Default, Debug)]
struct Counts {
    kv_writes: u64,
    kv_overwrites: u64,
    cas_applied: u64,
    cas_refused: u64,
    deletes: u64,
    registrations: u64,
    check_flips: u64,
    flag_changes: u64,
}

/// A small seeded generator (xorshift): the workload is the same on every
/// run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn put(agent: &Agent, path: &str, body: &str) -> Value {
    let (status, answer) = http_json("PUT", agent.http_addr(), path, Some(body.as_bytes()))
        .unwrap_or_else(|e| panic!("PUT {path} on {}: {e}", agent.name));
    assert_eq!(status, 200, "PUT {path} on {}: {answer}", agent.name);
    answer
}

fn modify_index(agent: &Agent, key: &str) -> u64 {
    agent.get(&format!("/v1/kv/{key}")).unwrap()[0]["ModifyIndex"]
        .as_u64()
        .unwrap()
}

/// One round of the workload, spread over every agent (old and new).
fn workload(
    agents: &[Agent],
    step: usize,
    rng: &mut Rng,
    expected: &mut Expected,
    counts: &mut Counts,
) {
    for j in 0..12 {
        let agent = &agents[(step + j) % AGENTS];
        let key = format!("wl/s{step}/k{j}");
        let value = format!("{}-{key}", agent.name);
        assert_eq!(agent.kv_put(&key, &value), Ok(true));
        expected.kv.insert(key, value);
        counts.kv_writes += 1;
    }
    for _ in 0..2 {
        let keys: Vec<String> = expected.kv.keys().cloned().collect();
        let key = keys[rng.below(keys.len())].clone();
        let agent = &agents[rng.below(AGENTS)];
        let value = format!("overwritten-s{step}-by-{}", agent.name);
        assert_eq!(agent.kv_put(&key, &value), Ok(true));
        expected.kv.insert(key, value);
        counts.kv_overwrites += 1;
    }
    // CAS on one agent: create, update at the current index, and a stale
    // update that must be refused.
    let agent = &agents[rng.below(AGENTS)];
    let key = format!("wl/cas/s{step}");
    assert_eq!(
        put(agent, &format!("/v1/kv/{key}?cas=0"), "created"),
        json!(true)
    );
    let index = modify_index(agent, &key);
    assert_eq!(
        put(agent, &format!("/v1/kv/{key}?cas={index}"), "swapped"),
        json!(true)
    );
    assert_eq!(
        put(agent, &format!("/v1/kv/{key}?cas={index}"), "stale"),
        json!(false)
    );
    expected.kv.insert(key, "swapped".into());
    counts.cas_applied += 2;
    counts.cas_refused += 1;
    for _ in 0..3 {
        let keys: Vec<String> = expected.kv.keys().cloned().collect();
        let key = keys[rng.below(keys.len())].clone();
        let agent = &agents[rng.below(AGENTS)];
        assert_eq!(agent.kv_delete(&key), Ok(200));
        expected.kv.remove(&key);
        counts.deletes += 1;
    }
    // A registration with a TTL check, on a different agent each step.
    let home = step % AGENTS;
    let id = format!("svc-s{step}");
    let registration = json!({
        "Name": "rolling", "ID": id, "Port": 9000 + step,
        "Check": {"CheckID": format!("ttl-s{step}"), "TTL": "10m", "Status": "passing"}
    });
    let (status, body) = agents[home].register_service(&registration).unwrap();
    assert_eq!(status, 200, "{body}");
    expected.services.insert(id, (home, "passing"));
    counts.registrations += 1;
    // Check flips through TTL updates.
    for _ in 0..2 {
        let ids: Vec<String> = expected.services.keys().cloned().collect();
        let id = ids[rng.below(ids.len())].clone();
        let (home, status) = expected.services[&id];
        let (verb, next) = if status == "passing" {
            ("fail", "critical")
        } else {
            ("pass", "passing")
        };
        let check = id.replace("svc-", "ttl-");
        put(
            &agents[home],
            &format!("/v1/agent/check/{verb}/{check}"),
            "",
        );
        expected.services.insert(id, (home, next));
        counts.check_flips += 1;
    }
    // A flag change.
    let flag = format!("rolling-{}", step % 3);
    let rollout = (step as u64 * 17) % 101;
    let agent = &agents[rng.below(AGENTS)];
    put(
        agent,
        &format!("/v1/flags/{flag}"),
        &json!({"enabled": true, "rollout_percentage": rollout}).to_string(),
    );
    expected.flags.insert(flag, rollout);
    counts.flag_changes += 1;
}

/// TTL checks start again at their registered status after a restart, as
/// Consul's do: the service (here, the test) reports its status again.
fn report_checks_again(agents: &[Agent], restarted: usize, expected: &Expected) {
    for (id, (home, status)) in &expected.services {
        if *home == restarted {
            let verb = if *status == "passing" { "pass" } else { "fail" };
            let check = id.replace("svc-", "ttl-");
            put(
                &agents[*home],
                &format!("/v1/agent/check/{verb}/{check}"),
                "",
            );
        }
    }
}

/// What `agent` shows differs from `expected` (the first difference).
fn difference(agent: &Agent, names: &[String], expected: &Expected) -> Result<(), String> {
    let mut members: Vec<(String, u64)> = agent.members()?;
    members.sort();
    if is_previous_release(agent) {
        // A known defect of 0.1.0 that this build can't change: restarted
        // while its peers still gossip its earlier incarnation as down, it
        // may list that incarnation, under its own name, as failed (foca
        // keeps an earlier identity at our address as down; 0.1.0's member
        // list doesn't skip it). Counted and reported, not a failure of a
        // healthy agent: that agent is the observer itself.
        members.retain(|(name, status)| !(name == &agent.name && *status == 4));
    }
    let want: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), 1)).collect();
    if members != want {
        return Err(format!("members {members:?}"));
    }
    let (status, body) = http_json("GET", agent.http_addr(), "/v1/kv/wl/?recurse", None)?;
    let mut kv = BTreeMap::new();
    if status == 200 {
        for entry in body.as_array().ok_or("KV is not a list")? {
            let value = base64::engine::general_purpose::STANDARD
                .decode(entry["Value"].as_str().unwrap_or_default())
                .map_err(|e| e.to_string())?;
            kv.insert(
                entry["Key"].as_str().unwrap_or_default().to_string(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }
    if kv != expected.kv {
        let missing: Vec<_> = expected
            .kv
            .iter()
            .filter(|(k, v)| kv.get(*k) != Some(v))
            .collect();
        let extra: Vec<_> = kv
            .keys()
            .filter(|k| !expected.kv.contains_key(*k))
            .collect();
        return Err(format!(
            "KV differs: missing or other {missing:?}, extra {extra:?}"
        ));
    }
    let health = agent.get("/v1/health/service/rolling")?;
    let mut services = BTreeMap::new();
    for entry in health.as_array().ok_or("health is not a list")? {
        let id = entry["Service"]["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let node = entry["Node"]["Node"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let status = entry["Checks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["CheckID"].as_str().is_some_and(|c| c.starts_with("ttl-")))
            .and_then(|c| c["Status"].as_str())
            .unwrap_or("none")
            .to_string();
        services.insert(id, (node, status));
    }
    let want: BTreeMap<String, (String, String)> = expected
        .services
        .iter()
        .map(|(id, (home, status))| (id.clone(), (names[*home].clone(), status.to_string())))
        .collect();
    if services != want {
        return Err(format!("catalog {services:?}, want {want:?}"));
    }
    let flags = agent.get("/v1/flags")?;
    let flags: BTreeMap<String, u64> = flags
        .as_array()
        .ok_or("flags is not a list")?
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap_or_default().to_string(),
                f["definition"]["rollout_percentage"]
                    .as_u64()
                    .unwrap_or(999),
            )
        })
        .collect();
    if flags != expected.flags {
        return Err(format!("flags {flags:?}"));
    }
    Ok(())
}

/// Whether `agent` runs the previous release.
fn is_previous_release(agent: &Agent) -> bool {
    agent
        .options
        .bin
        .as_ref()
        .is_some_and(|bin| bin.starts_with(shoal_tests::compat::compat_dir()))
}

/// Running agents some agent reports failed (Consul status 4).
fn failed_reports(agents: &[Agent], step: &str, seen: &mut BTreeSet<String>) {
    for observer in agents {
        let Ok(members) = observer.members() else {
            continue;
        };
        for (name, status) in members {
            if status == 4 && name == observer.name && is_previous_release(observer) {
                seen.insert(format!(
                    "step {step}: {name} (previous release) lists its own earlier incarnation as failed (known 0.1.0 defect, tolerated)"
                ));
            } else if status == 4 {
                seen.insert(format!(
                    "step {step}: {} reported {name} failed",
                    observer.name
                ));
            }
        }
    }
}

/// Waits until every agent shows `expected`; returns how long it took.
fn converge(
    agents: &[Agent],
    expected: &Expected,
    step: &str,
    failures: &mut BTreeSet<String>,
) -> Duration {
    let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < CONVERGE_WITHIN {
        failed_reports(agents, step, failures);
        match agents.iter().try_for_each(|agent| {
            difference(agent, &names, expected).map_err(|e| format!("{}: {e}", agent.name))
        }) {
            Ok(()) => return started.elapsed(),
            Err(error) => last = error,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for agent in agents {
        let log = agent.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("DEBUG") && !l.contains("TRACE"))
            .collect();
        eprintln!(
            "--- {} (last lines but debug)\n{}",
            agent.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    panic!("step {step} did not converge in {CONVERGE_WITHIN:?}; last observed: {last}");
}

fn stop(agent: &mut Agent) {
    agent.signal(libc::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(30)).is_some(),
        "{} did not stop",
        agent.name
    );
}

fn version_line(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin)
        .arg("version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        text.lines().next().unwrap_or_default().to_string()
    } else {
        "(no `shoal version`: the previous release)".to_string()
    }
}

#[test]
fn the_previous_release_upgrades_one_agent_at_a_time_and_rolls_back() {
    let old = shoal_tests::compat::previous_release();
    let new = shoal_tests::shoal_bin().to_path_buf();
    eprintln!(
        "previous release {}: {}\nthis build: {}",
        shoal_tests::compat::previous_commit(),
        version_line(&old),
        version_line(&new)
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("quick.toml");
    std::fs::write(&config, QUICK_GOSSIP).unwrap();
    let mut cluster = Cluster::start_with(AGENTS, |_| AgentOptions {
        args: vec!["--config".into(), config.display().to_string()],
        bin: Some(old.clone()),
        ..AgentOptions::default()
    });
    // Dropped (killed) before the cluster's directory.
    let mut agents = std::mem::take(&mut cluster.agents);
    for agent in &agents {
        agent.wait_serving();
    }

    let mut rng = Rng(0x5eed_0022);
    let mut expected = Expected::default();
    let mut counts = Counts::default();
    let mut failures = BTreeSet::new();

    let mut run_step = |agents: &[Agent],
                        step: usize,
                        label: String,
                        expected: &mut Expected,
                        counts: &mut Counts,
                        failures: &mut BTreeSet<String>| {
        workload(agents, step, &mut rng, expected, counts);
        let took = converge(agents, expected, &label, failures);
        let binaries: String = agents
            .iter()
            .map(|a| {
                if a.options.bin.as_deref() == Some(old.as_path()) {
                    'o'
                } else {
                    'N'
                }
            })
            .collect();
        eprintln!(
            "step {step} [{binaries}] {label}: converged in {:.1} s",
            took.as_secs_f64()
        );
    };

    run_step(
        &agents,
        0,
        "all previous release".into(),
        &mut expected,
        &mut counts,
        &mut failures,
    );
    let mut step = 1;
    for i in 0..AGENTS {
        stop(&mut agents[i]);
        agents[i].options.bin = Some(new.clone());
        agents[i].restart();
        agents[i].wait_serving();
        // The previous release's data dir (unmarked) is marked format 1,
        // its backup gone.
        let dir = &agents[i].data_dir;
        assert_eq!(std::fs::read_to_string(dir.join("FORMAT")).unwrap(), "1\n");
        assert!(!dir.join(".migration").exists());
        report_checks_again(&agents, i, &expected);
        run_step(
            &agents,
            step,
            format!("node-{i} upgraded"),
            &mut expected,
            &mut counts,
            &mut failures,
        );
        step += 1;
    }
    // Roll one back: the previous release on the data dir this build wrote.
    let back = AGENTS - 1;
    stop(&mut agents[back]);
    agents[back].options.bin = Some(old.clone());
    agents[back].restart();
    agents[back].wait_serving();
    report_checks_again(&agents, back, &expected);
    run_step(
        &agents,
        step,
        format!("node-{back} rolled back"),
        &mut expected,
        &mut counts,
        &mut failures,
    );

    // Every acknowledged write is still there, on every agent (converge
    // compared the whole KV, catalog and flags; this is the count).
    let lost: usize = agents
        .iter()
        .map(|agent| {
            expected
                .kv
                .iter()
                .filter(|(key, value)| agent.kv_get(key).ok().flatten().as_ref() != Some(*value))
                .count()
        })
        .sum();
    eprintln!(
        "workload: {counts:?}; live keys at the end: {}",
        expected.kv.len()
    );
    eprintln!(
        "acknowledged writes lost: {lost}; failed reports of running agents: {}",
        failures.len()
    );
    assert_eq!(lost, 0);
    let tolerated: Vec<&String> = failures
        .iter()
        .filter(|f| f.contains("tolerated"))
        .collect();
    eprintln!("tolerated self-reports of the previous release: {tolerated:#?}");
    let real: Vec<&String> = failures
        .iter()
        .filter(|f| !f.contains("tolerated"))
        .collect();
    assert!(real.is_empty(), "{real:#?}");
}
