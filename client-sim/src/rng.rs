//! The simulation's one pseudo-random generator (xorshift64*): sensors, profiles, link
//! conditions and retransmission jitter draw from it. It is not for anything secret; it
//! is here because a simulation must repeat: the same seed gives the same fleet and the
//! same device, with no OS source involved.

/// xorshift64*: a 64-bit state, never zero.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

/// SplitMix64's finaliser: spreads nearby inputs (a seed and 0, 1, 2, ...) over the whole
/// state space, which xorshift alone would keep correlated for its first outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator started at `seed` as it is (made odd, so never zero): the devices'
    /// serial numbers and sensor walks of earlier versions stay what they were.
    pub(crate) fn raw(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The generator of member `index` of a family seeded with `seed` (device `i` of a
    /// profile): members are independent of each other.
    pub(crate) fn derive(seed: u64, index: u64) -> Rng {
        Rng::raw(mix(seed ^ mix(index)))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub(crate) fn signed(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }

    /// Uniform in `0..n`; 0 for `n` 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p`: never for 0 (or less), always for 1 (or more), since
    /// [`unit`](Rng::unit) is below 1.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [lo, hi]; `lo` when the range is empty.
    pub(crate) fn between(&mut self, lo: f64, hi: f64) -> f64 {
        if hi > lo {
            lo + self.unit() * (hi - lo)
        } else {
            lo
        }
    }

    /// An exponentially distributed wait with this mean: the time to the next event of a
    /// process without memory (reboots).
    pub(crate) fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - unit() is in (0, 1]: the logarithm is finite.
        -mean * (1.0 - self.unit()).ln()
    }

    /// The index of one of `weights`, each chosen in proportion to its weight; 0 for an
    /// empty list or one without a positive weight.
    pub(crate) fn weighted(&mut self, weights: impl Iterator<Item = f64> + Clone) -> usize {
        let total: f64 = weights.clone().filter(|w| *w > 0.0).sum();
        if total <= 0.0 {
            return 0;
        }
        let mut at = self.unit() * total;
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            if w <= 0.0 {
                continue;
            }
            last = i;
            if at < w {
                return i;
            }
            at -= w;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_repeat_and_members_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::derive(7, 3).next_u64(), Rng::derive(7, 4).next_u64());
        assert_ne!(Rng::derive(7, 3).next_u64(), Rng::derive(8, 3).next_u64());
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut r = Rng::raw(1);
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(7) < 7);
            let b = r.between(-3.0, 5.0);
            assert!((-3.0..=5.0).contains(&b));
            assert!(r.exponential(2.0) >= 0.0);
            assert!(!r.chance(0.0));
            assert!(r.chance(1.0));
            assert_eq!(r.weighted([0.0, 2.0, 0.0].into_iter()), 1);
        }
    }
}
