//! A small seeded generator (SplitMix64): the campaign's every random
//! choice comes from one, so a seed replays the same schedule of faults
//! and operations (timings still vary with the machine).

/// SplitMix64: tiny, fast and good enough for picking test actions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for a named part of the campaign (a worker,
    /// the fault scheduler), so one part's choices don't shift another's.
    pub fn derive(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`; `low` when the range is empty.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }

    /// An index into a slice of `len` items (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.range(0, len as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// Picks an item by weight: `choices` are `(weight, item)` pairs.
    pub fn weighted<T: Copy>(&mut self, choices: &[(u64, T)]) -> T {
        let total: u64 = choices.iter().map(|(weight, _)| weight).sum();
        let mut pick = self.range(0, total.max(1));
        for &(weight, item) in choices {
            if pick < weight {
                return item;
            }
            pick -= weight;
        }
        choices[choices.len() - 1].1
    }

    /// A duration in milliseconds, uniform in `[low_ms, high_ms)`.
    pub fn millis(&mut self, low_ms: u64, high_ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(self.range(low_ms, high_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::derive(7, 1).next_u64(), Rng::derive(7, 2).next_u64());
    }

    #[test]
    fn range_and_weighted_stay_in_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let n = rng.range(3, 9);
            assert!((3..9).contains(&n));
            let pick = rng.weighted(&[(1, 'a'), (0, 'b'), (3, 'c')]);
            assert!(pick == 'a' || pick == 'c');
        }
    }
}
