//! SplitMix64: the one RNG every backend reproduces bit for bit (k-means++ seeding, synthetic
//! data, parameter init). Small, fast, and trivially portable to CUDA and WGSL.

#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`; `n > 0`.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller; one of the pair is dropped for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The SplitMix64 finaliser: a good 64-bit hash.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derive a stream seed from a base seed and a tuple of coordinates (user, group, depth, ...).
pub fn derive_seed(base: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix64(base ^ 0x5EED_5EED_5EED_5EED), |acc, &p| derive_seed_extend(acc, p))
}

/// One more coordinate on a derived seed: `derive_seed(b, [x.., p]) ==
/// derive_seed_extend(derive_seed(b, [x..]), p)`. Lets a device finish a seed (the clustering
/// tree's depth) from a prefix the host derived.
#[inline]
pub fn derive_seed_extend(acc: u64, part: u64) -> u64 {
    mix64(acc ^ mix64(part.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn splitmix_known_values() {
        // Reference values of SplitMix64 seeded with 1234567 (Vigna's reference implementation).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
    #[test]
    fn uniform_in_range() {
        let mut r = SplitMix64::new(7);
        for _ in 0..10_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(r.below(13) < 13);
        }
    }
}
