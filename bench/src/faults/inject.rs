//! Carrying out a fault schedule: SIGSTOP/SIGCONT bursts on victims,
//! spinning threads on every core, or loss handed to the relay. Dropping
//! the [`Injection`] ends the fault (victims continued, threads stopped).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

use super::relay::{Loss, Relay};
use super::schedule::{self, SplitMix64};
use super::{Fault, Options};
use crate::system::Agent;

/// Schedule streams, so that each fault kind draws its own bursts.
const STREAM_STOP: u64 = 10;
const STREAM_DEAF: u64 = 11;
const STREAM_HOG: u64 = 12;

pub struct Injection {
    task: Option<JoinHandle<()>>,
    stopped: Vec<i32>,
    spinning: Arc<AtomicBool>,
}

impl Drop for Injection {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        for &pid in &self.stopped {
            signal(pid, libc::SIGCONT);
        }
        self.spinning.store(false, Ordering::Relaxed);
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe {
        libc::kill(pid, signal);
    }
}

pub fn start(
    fault: Fault,
    seed: u64,
    victims: &[usize],
    agents: &[Agent],
    relay: &Relay,
    options: &Options,
) -> Result<Injection> {
    let total = options.duration;
    let mut injection = Injection {
        task: None,
        stopped: Vec::new(),
        spinning: Arc::new(AtomicBool::new(false)),
    };
    // Every fault sets the relay's loss (none for stop and hog), which
    // also starts its counters afresh for the fault phase.
    match fault {
        Fault::Stop => {
            relay.set_loss(Loss::None);
            let mut events = Vec::new();
            for &victim in victims {
                let pid = agents[victim]
                    .process
                    .pid()
                    .with_context(|| format!("{} has no pid", agents[victim].name))?
                    as i32;
                injection.stopped.push(pid);
                let bursts = schedule::bursts(
                    seed,
                    &[STREAM_STOP, victim as u64],
                    total,
                    &options.stop_burst,
                    &options.stop_gap,
                );
                for burst in bursts {
                    events.push((burst.start, pid, libc::SIGSTOP));
                    events.push((burst.start + burst.length, pid, libc::SIGCONT));
                }
            }
            events.sort_by_key(|&(at, pid, _)| (at, pid));
            let started = Instant::now();
            injection.task = Some(tokio::task::spawn_local(async move {
                for (at, pid, sig) in events {
                    tokio::time::sleep_until((started + at).into()).await;
                    signal(pid, sig);
                }
            }));
        }
        Fault::OneWayLoss => {
            let windows: HashMap<usize, Vec<schedule::Burst>> = victims
                .iter()
                .map(|&victim| {
                    let bursts = schedule::bursts(
                        seed,
                        &[STREAM_DEAF, victim as u64],
                        total,
                        &options.deaf_burst,
                        &options.deaf_gap,
                    );
                    (victim, bursts)
                })
                .collect();
            relay.set_loss(Loss::IntoVictims {
                windows,
                rate: options.one_way_loss,
                rng: SplitMix64::derived(seed, &[STREAM_DEAF]),
            });
        }
        Fault::BurstyLoss => {
            relay.set_loss(Loss::Bursty {
                model: options.gilbert_elliott,
                seed,
                links: HashMap::new(),
                connections: 0,
            });
        }
        Fault::Hog => {
            relay.set_loss(Loss::None);
            let bursts = schedule::bursts(
                seed,
                &[STREAM_HOG],
                total,
                &options.hog_burst,
                &options.hog_gap,
            );
            let spinning = Arc::clone(&injection.spinning);
            let threads = options.hog_threads;
            let started = Instant::now();
            injection.task = Some(tokio::task::spawn_local(async move {
                for burst in bursts {
                    tokio::time::sleep_until((started + burst.start).into()).await;
                    spinning.store(true, Ordering::Relaxed);
                    for _ in 0..threads {
                        let spinning = Arc::clone(&spinning);
                        std::thread::spawn(move || spin(&spinning));
                    }
                    tokio::time::sleep(burst.length).await;
                    spinning.store(false, Ordering::Relaxed);
                }
            }));
        }
    }
    Ok(injection)
}

/// Burns CPU at normal priority until `spinning` goes false.
fn spin(spinning: &AtomicBool) {
    let mut x = 0u64;
    while spinning.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// The fault time of a run's schedule that falls on victims or the host,
/// for the environment file: bursts and their total length per target.
pub fn describe(fault: Fault, seed: u64, victims: &[usize], options: &Options) -> String {
    let summary = |stream: &[u64], burst, gap| {
        let bursts = schedule::bursts(seed, stream, options.duration, burst, gap);
        let time: Duration = bursts.iter().map(|b| b.length).sum();
        format!("{} bursts, {:.1} s", bursts.len(), time.as_secs_f64())
    };
    let per_victim = |stream: u64, burst, gap| {
        victims
            .iter()
            .map(|&v| format!("agent {v}: {}", summary(&[stream, v as u64], burst, gap)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match fault {
        Fault::Stop => per_victim(STREAM_STOP, &options.stop_burst, &options.stop_gap),
        Fault::OneWayLoss => per_victim(STREAM_DEAF, &options.deaf_burst, &options.deaf_gap),
        Fault::Hog => format!(
            "host: {}",
            summary(&[STREAM_HOG], &options.hog_burst, &options.hog_gap)
        ),
        Fault::BurstyLoss => {
            let model = options.gilbert_elliott;
            format!(
                "every link: Gilbert-Elliott {model:?}, long-run loss {:.2}%, mean bad spell {}",
                100.0 * model.mean_loss(),
                model
                    .mean_bad_spell()
                    .map_or("endless".to_string(), |d| format!("{d:?}"))
            )
        }
    }
}
