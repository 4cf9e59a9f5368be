//! The fault schedules, as pure functions of a seed: which agents are
//! victims, when their bursts start and how long they last, and the
//! Gilbert-Elliott loss chains. Nothing here reads a clock or touches a
//! process, so the same seed gives Shoal and Serf the same schedule.

use std::ops::RangeInclusive;
use std::time::Duration;

/// SplitMix64: a tiny generator whose output is fixed by its definition.
/// `rand`'s `StdRng` is allowed to change between releases, and a seed
/// written in a results file must give the same schedule years later.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one part of a schedule (`stream`), independent of
    /// the others drawn from the same seed.
    pub fn derived(seed: u64, stream: &[u64]) -> Self {
        let mut state = seed;
        for part in stream {
            state = Self(state ^ part.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
        }
        Self(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `range`, to the millisecond.
    pub fn duration(&mut self, range: &RangeInclusive<Duration>) -> Duration {
        let (low, high) = (range.start().as_millis(), range.end().as_millis());
        let span = high.saturating_sub(low) as u64 + 1;
        Duration::from_millis((low as u64) + self.next_u64() % span)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `count` distinct agents out of `1..n` (never agent 0, the seed the
/// others joined through), drawn from `seed`.
pub fn victims(seed: u64, n: usize, count: usize) -> Vec<usize> {
    let mut rng = SplitMix64::derived(seed, &[1]);
    let mut pool: Vec<usize> = (1..n).collect();
    let count = count.min(pool.len());
    for i in 0..count {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    let mut chosen = pool[..count].to_vec();
    chosen.sort_unstable();
    chosen
}

/// One burst of a fault: from `start` (after the fault phase began) for `length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub start: Duration,
    pub length: Duration,
}

impl Burst {
    pub fn contains(&self, at: Duration) -> bool {
        at >= self.start && at < self.start + self.length
    }
}

/// Bursts inside `[0, total)` for one target (`stream` names it: a fault
/// kind and a victim), each after a gap drawn from `gap`, lasting a time
/// drawn from `burst` (cut at `total`).
pub fn bursts(
    seed: u64,
    stream: &[u64],
    total: Duration,
    burst: &RangeInclusive<Duration>,
    gap: &RangeInclusive<Duration>,
) -> Vec<Burst> {
    let mut rng = SplitMix64::derived(seed, stream);
    let mut at = Duration::ZERO;
    let mut out = Vec::new();
    loop {
        at += rng.duration(gap);
        let length = rng.duration(burst);
        if at >= total {
            return out;
        }
        out.push(Burst {
            start: at,
            length: length.min(total - at),
        });
        at += length;
    }
}

/// Gilbert-Elliott loss: a good and a bad state, each with its own loss
/// rate, and per-step chances of moving between them (netem's `gemodel
/// p r 1-h 1-k`, with a step of time rather than a packet, so that a link's
/// bad spells fall at the same moments whichever system's packets cross it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Chance per step of going from good to bad.
    pub p: f64,
    /// Chance per step of going from bad to good.
    pub r: f64,
    /// Loss rate in the good state (netem's 1-k).
    pub loss_good: f64,
    /// Loss rate in the bad state (netem's 1-h).
    pub loss_bad: f64,
    /// Length of a step.
    pub step: Duration,
}

impl GilbertElliott {
    /// The long-run loss rate: the stationary share of each state times
    /// its loss rate, pi_bad = p / (p + r).
    pub fn mean_loss(&self) -> f64 {
        let bad = self.p / (self.p + self.r);
        (1.0 - bad) * self.loss_good + bad * self.loss_bad
    }

    /// Mean length of a bad spell (1/r steps); `None` when it never ends.
    pub fn mean_bad_spell(&self) -> Option<Duration> {
        (self.r > 0.0).then(|| self.step.mul_f64(1.0 / self.r))
    }
}

/// One link's chain. The state is a function of time alone (sojourns are
/// drawn from the link's own generator); whether a packet is lost inside
/// a state is drawn from a second generator.
#[derive(Clone, Debug)]
pub struct Chain {
    model: GilbertElliott,
    states: SplitMix64,
    losses: SplitMix64,
    bad: bool,
    /// The step at which the current state ends.
    until: u64,
}

impl Chain {
    /// Starts in the stationary distribution, so a short run sees the
    /// long-run loss rate from its first second.
    pub fn new(model: GilbertElliott, seed: u64, stream: &[u64]) -> Self {
        let mut states = SplitMix64::derived(seed, stream);
        let losses = SplitMix64::derived(seed ^ 0x5EED, stream);
        let bad = states.unit() < model.p / (model.p + model.r);
        let mut chain = Self {
            model,
            states,
            losses,
            bad,
            until: 0,
        };
        chain.until = chain.sojourn();
        chain
    }

    /// Steps spent in the current state: geometric with the chance of
    /// leaving per step, at least 1.
    fn sojourn(&mut self) -> u64 {
        let leave = if self.bad { self.model.r } else { self.model.p };
        if leave >= 1.0 {
            return 1;
        }
        if leave <= 0.0 {
            return u64::MAX;
        }
        let u = 1.0 - self.states.unit(); // in (0, 1]
        ((u.ln() / (1.0 - leave).ln()).floor() as u64).saturating_add(1)
    }

    /// Whether the chain is in the bad state at `step`; steps must not go
    /// backwards.
    pub fn bad_at(&mut self, step: u64) -> bool {
        while step >= self.until {
            self.bad = !self.bad;
            self.until = self.until.saturating_add(self.sojourn());
        }
        self.bad
    }

    /// Whether a packet crossing the link at `at` (since the start) is lost.
    pub fn lose(&mut self, at: Duration) -> bool {
        let step = (at.as_nanos() / self.model.step.as_nanos().max(1)) as u64;
        let rate = if self.bad_at(step) {
            self.model.loss_bad
        } else {
            self.model.loss_good
        };
        self.losses.unit() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_chains_long_run_loss_matches_the_formula() {
        for (model_seed, model) in [
            (
                1,
                GilbertElliott {
                    p: 0.001,
                    r: 0.02,
                    loss_good: 0.0,
                    loss_bad: 1.0,
                    step: MS(10),
                },
            ),
            (
                2,
                GilbertElliott {
                    p: 0.05,
                    r: 0.2,
                    loss_good: 0.01,
                    loss_bad: 0.6,
                    step: MS(10),
                },
            ),
        ] {
            let mut chain = Chain::new(model, model_seed, &[7]);
            let packets = 2_000_000u64;
            let lost = (0..packets).filter(|i| chain.lose(MS(*i))).count() as f64;
            let measured = lost / packets as f64;
            let expected = model.mean_loss();
            assert!(
                (measured - expected).abs() < 0.1 * expected,
                "seed {model_seed}: measured {measured:.4}, formula {expected:.4}"
            );
        }
    }

    #[test]
    fn bad_spells_last_one_over_r_steps_on_average() {
        let model = GilbertElliott {
            p: 0.01,
            r: 0.1,
            loss_good: 0.0,
            loss_bad: 1.0,
            step: MS(10),
        };
        let mut chain = Chain::new(model, 3, &[]);
        let (mut spells, mut bad_steps, mut was_bad) = (0u64, 0u64, false);
        for step in 0..1_000_000 {
            let bad = chain.bad_at(step);
            if bad {
                bad_steps += 1;
                spells += u64::from(!was_bad);
            }
            was_bad = bad;
        }
        let mean = bad_steps as f64 / spells as f64;
        assert!((mean - 10.0).abs() < 1.0, "mean bad spell {mean} steps");
        assert_eq!(model.mean_bad_spell(), Some(MS(100)));
        // r = 0: once bad, always bad.
        let stuck = GilbertElliott {
            p: 1.0,
            r: 0.0,
            ..model
        };
        let mut chain = Chain::new(stuck, 3, &[]);
        assert!((0..10_000).all(|step| chain.bad_at(step)));
    }

    #[test]
    fn a_seed_fixes_the_schedule_and_another_seed_changes_it() {
        let total = Duration::from_secs(600);
        let (burst, gap) = (MS(200)..=MS(800), MS(1_000)..=MS(5_000));
        let a = bursts(42, &[1, 3], total, &burst, &gap);
        assert_eq!(a, bursts(42, &[1, 3], total, &burst, &gap));
        assert_ne!(a, bursts(43, &[1, 3], total, &burst, &gap));
        assert_ne!(a, bursts(42, &[1, 4], total, &burst, &gap));
        assert!(a.len() > 100, "{} bursts in 10 minutes", a.len());
        for pair in a.windows(2) {
            let gap_between = pair[1].start - (pair[0].start + pair[0].length);
            assert!(gap.contains(&gap_between), "{gap_between:?}");
        }
        assert!(a.iter().all(|b| burst.contains(&b.length)));
        assert!(a.iter().all(|b| b.start + b.length <= total));

        assert_eq!(victims(42, 50, 3), victims(42, 50, 3));
        assert_ne!(victims(42, 50, 3), victims(43, 50, 3));
        let chosen = victims(7, 50, 3);
        assert_eq!(chosen.len(), 3);
        assert!(chosen.iter().all(|v| (1..50).contains(v)), "{chosen:?}");
        assert!(chosen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(victims(7, 3, 10), vec![1, 2]);

        // The chain's states depend on time alone, not on who asks.
        let model = GilbertElliott {
            p: 0.01,
            r: 0.1,
            loss_good: 0.0,
            loss_bad: 1.0,
            step: MS(10),
        };
        let mut every = Chain::new(model, 9, &[2, 5]);
        let mut sparse = Chain::new(model, 9, &[2, 5]);
        let dense: Vec<bool> = (0..10_000).map(|s| every.bad_at(s)).collect();
        for step in (0..10_000).step_by(97) {
            assert_eq!(sparse.bad_at(step), dense[step as usize]);
        }
    }
}
