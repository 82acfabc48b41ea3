//! A small, portable, seedable random number generator for everything that must draw the same
//! numbers on every platform and thread count (ShapesWorld, augmentation, k-means seeding,
//! curation sampling).
//!
//! ShapesWorld promises the same bytes for the same seed on every platform and for any number of
//! worker threads, so every sample draws from its own generator, seeded from (seed, split,
//! index), and only integer arithmetic and IEEE-exact float operations are used.

/// SplitMix64 (Steele et al., 2014): 64 bits of state, full period, passes BigCrush.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one item of a stream, decorrelated from its neighbours.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Self {
        let mut r = Self(seed ^ 0x9e37_79b9_7f4a_7c15);
        let a = r.next_u64() ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        let mut r = Self(a);
        let b = r.next_u64() ^ index.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7);
        Self(b)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (`n > 0`), without modulo bias worth mentioning for small `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }

    /// Uniform in `[0, 1)` with 24 bits (exactly representable in f32).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sequence_and_ranges() {
        // SplitMix64 reference values for seed 0 (from the original paper's C code).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut r = Rng::new(7);
        let mut counts = [0usize; 5];
        for _ in 0..10_000 {
            counts[r.below(5)] += 1;
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(
            counts.iter().all(|&c| (1800..2200).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(
            Rng::for_item(1, 0, 5).next_u64(),
            Rng::for_item(1, 0, 6).next_u64()
        );
        assert_ne!(
            Rng::for_item(1, 0, 5).next_u64(),
            Rng::for_item(1, 1, 5).next_u64()
        );
    }
}
