//! A cold start with real processes: many agents started at the same
//! moment (a datacenter power cycle, a fleet-wide deploy) must see each
//! other by name, with their services, within seconds.
//!
//! Each newcomer holds its record back until one anti-entropy exchange has
//! shown it the cluster's record of its name (the duplicate-name check).
//! Started together, 50 newcomers open their first exchange with the seed
//! at once; the seed serves 8 at a time and closes the rest, so those
//! newcomers must try again soon, with another member, not wait for the
//! periodic exchange (15 s, jittered) as they once did, when every agent
//! listed many others under their address, without services, for ~20 s.

use std::time::{Duration, Instant};

use shoal_tests::{AgentOptions, Cluster, wait_for};

const AGENTS: usize = 50;

/// Generous for 50 debug agents on a loaded 2-core machine; the target
/// (2 s, release agents) is measured by `shoal-bench cold-start`.
const BOUND: Duration = Duration::from_secs(8);

/// Every agent lists all `AGENTS` by name and all their `web` instances.
fn wait_everyone_sees_everyone(cluster: &Cluster, started: Instant, what: &str) -> Duration {
    let names: std::collections::BTreeSet<String> =
        (0..AGENTS).map(|i| format!("node-{i}")).collect();
    for agent in &cluster.agents {
        let left = BOUND.saturating_sub(started.elapsed());
        wait_for(
            left,
            &format!(
                "{} to list every agent by name with its service ({what})",
                agent.name
            ),
            || {
                let members = agent.members()?;
                let listed: std::collections::BTreeSet<String> =
                    members.into_iter().map(|(name, _)| name).collect();
                if listed != names {
                    let missing: Vec<_> = names.difference(&listed).collect();
                    return Err(format!(
                        "{} of {AGENTS} listed by name at +{:.1}s; missing {missing:?}",
                        names.intersection(&listed).count(),
                        started.elapsed().as_secs_f64()
                    ));
                }
                let instances = agent.get("/v1/catalog/service/web")?;
                let count = instances.as_array().map_or(0, Vec::len);
                if count != AGENTS {
                    return Err(format!("{count} of {AGENTS} `web` instances"));
                }
                Ok(())
            },
        );
    }
    started.elapsed()
}

#[test]
fn fifty_agents_started_together_see_each_other_by_name_within_seconds_and_again_after_a_mass_restart()
 {
    let root = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut cluster = Cluster::start_with(AGENTS, |i| {
        let dir = root.path().join(format!("conf-{i}"));
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(
            dir.join("web.toml"),
            format!("[service]\nname = \"web\"\nport = {}\n", 8000 + i),
        )
        .expect("service file");
        AgentOptions {
            args: vec![
                "--config-dir".into(),
                dir.display().to_string(),
                "--log-level".into(),
                "info".into(),
            ],
            ..AgentOptions::default()
        }
    });
    let took = wait_everyone_sees_everyone(&cluster, started, "cold start");
    eprintln!("{AGENTS} agents started together: everyone listed by everyone in {took:?}");

    // Every agent killed, then all restarted at once with their data dirs.
    for agent in &mut cluster.agents {
        agent.kill();
    }
    let started = Instant::now();
    for agent in &mut cluster.agents {
        agent.restart();
    }
    let took = wait_everyone_sees_everyone(&cluster, started, "mass restart");
    eprintln!("{AGENTS} agents restarted together: everyone listed by everyone in {took:?}");
}
