//! The seeded random source of splits: ChaCha20 plus hand-written, fully specified sampling on
//! top of its raw `u64` stream (uniform integers, shuffles, normal, gamma, Dirichlet), using the
//! pure-Rust `libm` for transcendental functions so that the same seed yields the same split on
//! every machine, OS and `rand` release.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Deterministic random source for splitting and partitioning.
pub struct SplitRng(ChaCha20Rng);

impl SplitRng {
    /// ChaCha20 seeded by `rand_core`'s specified `seed_from_u64` (PCG32 expansion of the seed).
    pub fn new(seed: u64) -> Self {
        SplitRng(ChaCha20Rng::seed_from_u64(seed))
    }

    /// The next raw 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform integer in `0..n` (Lemire's multiply-and-reject, unbiased); `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0, "below(0) has no valid output");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in (0, 1]: 53 random bits, never zero (safe to take the log of).
    pub fn unit_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fisher-Yates shuffle, from the last element down.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// Standard normal by Box-Muller (one of the pair is used).
    pub fn std_normal(&mut self) -> f64 {
        let u1 = self.unit_open0();
        let u2 = self.unit_open0();
        (-2.0 * libm::log(u1)).sqrt() * libm::cos(2.0 * std::f64::consts::PI * u2)
    }

    /// The natural log of a Gamma(shape, 1) draw (Marsaglia-Tsang; shapes below 1 use the
    /// `Gamma(a) = Gamma(a + 1) * U^(1/a)` boost, kept in log space so tiny shapes do not underflow).
    pub fn ln_gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.unit_open0();
            return self.ln_gamma(shape + 1.0) + libm::log(u) / shape;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.std_normal();
            let t = 1.0 + c * x;
            if t <= 0.0 {
                continue;
            }
            let v = t * t * t;
            let u = self.unit_open0();
            if libm::log(u) < 0.5 * x * x + d - d * v + d * libm::log(v) {
                return libm::log(d) + libm::log(v);
            }
        }
    }

    /// A draw from the symmetric Dirichlet(alpha, ..., alpha) over `k` outcomes; `alpha > 0`.
    pub fn dirichlet(&mut self, alpha: f64, k: usize) -> Vec<f64> {
        let logs: Vec<f64> = (0..k).map(|_| self.ln_gamma(alpha)).collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logs.iter().map(|l| libm::exp(l - max)).collect();
        let sum: f64 = w.iter().sum();
        w.iter().map(|x| x / sum).collect()
    }
}

/// Splits `total` into integer parts proportional to `weights` (largest remainder; ties to the
/// lower index), summing exactly to `total`.
pub fn apportion(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() {
        return Vec::new();
    }
    let exact: Vec<f64> = weights
        .iter()
        .map(|w| {
            if sum > 0.0 {
                w / sum * total as f64
            } else {
                total as f64 / weights.len() as f64
            }
        })
        .collect();
    let mut parts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let assigned: usize = parts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Sort by descending fractional part; the stable sort keeps lower indices first on ties.
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa)
    });
    for &i in order.iter().take(total.saturating_sub(assigned)) {
        parts[i] += 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = SplitRng::new(7);
        let mut b = SplitRng::new(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, (0..4).map(|_| SplitRng::new(8).next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SplitRng::new(1);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        // Expected 10,000 each; 5 sigma of a binomial(60000, 1/6) is ~456.
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut r = SplitRng::new(3);
        let mut v: Vec<usize> = (0..1000).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..1000).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn gamma_mean_matches_shape() {
        // E[Gamma(a, 1)] = a; with 20,000 draws the standard error is sqrt(a / 20000).
        let mut r = SplitRng::new(11);
        for a in [0.3f64, 1.0, 4.5] {
            let m: f64 = (0..20_000).map(|_| r.ln_gamma(a).exp()).sum::<f64>() / 20_000.0;
            let se = (a / 20_000.0).sqrt();
            assert!((m - a).abs() < 5.0 * se, "shape {a}: mean {m}");
        }
    }

    #[test]
    fn dirichlet_sums_to_one_and_matches_reference_peak() {
        // Reference E[max component] of a symmetric Dirichlet over 10 outcomes, estimated with
        // numpy.random.default_rng(0).dirichlet([a] * 10, 200000).max(1).mean():
        // a = 0.05 -> 0.783, a = 100 -> 0.116. The standard error of our 2,000-draw mean is
        // below 0.006, so 0.03 is a 5-sigma band.
        let mut r = SplitRng::new(5);
        for (alpha, want) in [(0.05, 0.783), (100.0, 0.116)] {
            let mut peak = 0.0;
            for _ in 0..2000 {
                let p = r.dirichlet(alpha, 10);
                assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0));
                peak += p.iter().copied().fold(0.0, f64::max);
            }
            let mean = peak / 2000.0;
            assert!(
                (mean - want).abs() < 0.03,
                "alpha {alpha}: mean max {mean}, reference {want}"
            );
        }
        // Tiny alpha must not underflow to NaN (the log-space boost).
        let p = r.dirichlet(1e-4, 5);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn apportion_sums_exactly() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(apportion(7, &[0.0, 1.0]), vec![0, 7]);
        assert_eq!(apportion(5, &[0.0, 0.0]), vec![3, 2]);
        let w = [0.123, 0.456, 0.421];
        assert_eq!(apportion(1000, &w).iter().sum::<usize>(), 1000);
    }
}
