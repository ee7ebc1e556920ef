//! The workspace's one pseudo-random generator: [`SplitMix64`].
//!
//! The engine draws client-id randomness and reconnect jitter from it, the simulation its
//! faults and schedules, the demo its message plan, tests their cases. Every one of them
//! replays from a seed, and committed snapshots and recorded seeds depend on the exact
//! sequences, so the algorithm and every helper here are frozen: changing a constant or the
//! way a helper draws changes every run recorded with it.
//!
//! Not for cryptography.

/// The increment of splitmix64's state (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A seeded pseudo-random generator (splitmix64): its whole output is determined by the seed,
/// bit for bit on every platform, without depending on a `rand` version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// A number in `0..n` (0 when `n` is 0), by multiply-shift: the bias is below 2^-32 for
    /// small `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `next_u64() % n` (0 when `n` is 0): slightly biased for large `n`, and kept because
    /// seeds recorded with it must replay the same cases.
    pub fn modulo(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// A float uniform in `[0, 1)`, from 53 random bits.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`. Draws nothing when `p <= 0` or `p >= 1`, so a caller
    /// whose probability is off does not consume randomness.
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.unit() < p
    }

    /// An independent generator seeded from this one's next output.
    pub fn fork(&mut self) -> SplitMix64 {
        SplitMix64::new(self.next_u64())
    }
}

/// splitmix64's finalizer: spreads every input bit over the output. Stable: client id tags
/// are made with it and checked by later builds.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes two numbers into a well-spread seed (one splitmix64 round over their combination),
/// e.g. a run's seed and a device's index into that device's seed.
pub fn mix(a: u64, b: u64) -> u64 {
    SplitMix64::new(a ^ b.rotate_left(32) ^ 0xD6E8_FEB8_6659_FD93).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_sequence() {
        // The first outputs of splitmix64 seeded with 0 (Vigna's reference implementation).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.modulo(0), 0);
        for _ in 0..1000 {
            assert!(rng.below(10) < 10);
            assert!(rng.modulo(10) < 10);
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
