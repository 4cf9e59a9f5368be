//! Propagation of a node-level change: made on one agent, watched for on
//! every other agent through its own API.

use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::cluster::{CHANGE_DEADLINE, Options, stagger};
use crate::stats::ms;
use crate::system::{Agent, Client, System};

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Shoal's blocking queries: each agent answers the moment it knows.
    Block,
    /// Polling every `change_poll`, the same way for both systems.
    Poll,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Block => "blocking query",
            Mode::Poll => "polling",
        }
    }

    pub fn phase(self) -> &'static str {
        match self {
            Mode::Block => "prop_block",
            Mode::Poll => "prop_poll",
        }
    }
}

/// How long every watcher has to open its query before the change is made:
/// 10 s, and 30 ms per agent above 333 (at 1,000 agents on two cores, one
/// agent can take seconds to answer its first query).
fn arm_deadline(size: usize) -> Duration {
    Duration::from_secs(10).max(Duration::from_millis(30) * size as u32)
}

/// One propagation round: arms a watcher on every agent but the origin,
/// makes the change on the origin, and returns each watcher's latency (ms).
pub async fn propagate(
    system: &System,
    agents: &[Agent],
    round: usize,
    mode: Mode,
    options: &Options,
) -> Result<Vec<(String, f64)>> {
    let size = agents.len();
    let origin = 1 + round % (size - 1);
    let origin_name = Rc::new(agents[origin].name.clone());
    let deadline = Instant::now() + CHANGE_DEADLINE;
    let (armed_tx, mut armed_rx) = tokio::sync::mpsc::channel::<()>(size);
    let mut watchers = JoinSet::new();
    for (index, agent) in agents
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != origin)
    {
        let mut client = system.client(agent);
        let agent_name = agent.name.clone();
        let origin_name = Rc::clone(&origin_name);
        let armed_tx = armed_tx.clone();
        let interval = options.change_poll;
        watchers.spawn_local(async move {
            let seen = match mode {
                Mode::Block => watch_blocking(&mut client, round, deadline, armed_tx).await,
                Mode::Poll => {
                    // Arm with a first poll, so the connection is open.
                    let _ = client.poll_change(&origin_name, round).await;
                    let _ = armed_tx.send(()).await;
                    let mut next = Instant::now() + stagger(interval, index, size);
                    loop {
                        tokio::time::sleep_until(next.into()).await;
                        if next > deadline {
                            break None;
                        }
                        if let Ok(true) = client.poll_change(&origin_name, round).await {
                            break Some(Instant::now());
                        }
                        next += interval;
                    }
                }
            };
            (agent_name, seen)
        });
    }
    drop(armed_tx);
    let allowed = arm_deadline(size);
    let armed_by = Instant::now() + allowed;
    for armed in 0..size - 1 {
        tokio::time::timeout_at(armed_by.into(), armed_rx.recv())
            .await
            .with_context(|| {
                format!("{armed} of {} watchers armed within {allowed:?}", size - 1)
            })?;
    }
    let mut origin_client = system.client(&agents[origin]);
    let started = Instant::now();
    origin_client.make_change(round).await?;
    let mut seen = Vec::new();
    while let Some(result) = watchers.join_next().await {
        let (agent, at) = result?;
        if let Some(at) = at {
            seen.push((agent, ms(at.saturating_duration_since(started))));
        } else {
            eprintln!("  {agent} did not see round {round} within {CHANGE_DEADLINE:?}");
        }
    }
    Ok(seen)
}

async fn watch_blocking(
    client: &mut Client,
    round: usize,
    deadline: Instant,
    armed_tx: tokio::sync::mpsc::Sender<()>,
) -> Option<Instant> {
    let mut index = loop {
        match client.block_change(round, 0, Duration::ZERO).await {
            Ok((index, _)) => break index,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return None,
        }
    };
    let _ = armed_tx.send(()).await;
    while Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match client.block_change(round, index, wait).await {
            Ok((_, true)) => return Some(Instant::now()),
            Ok((new_index, false)) => index = new_index,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_get_longer_to_arm_above_333_agents() {
        assert_eq!(arm_deadline(10), Duration::from_secs(10));
        assert_eq!(arm_deadline(333), Duration::from_secs(10));
        assert_eq!(arm_deadline(1_000), Duration::from_secs(30));
    }
}
