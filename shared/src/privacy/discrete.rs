//! Exact sampler of the discrete Gaussian over the integers (Canonne, Kamath, Steinke 2020, Algorithm 3).
//!
//! Why not Box-Muller on floats: a floating-point Gaussian has gaps and a biased tail whose pattern can
//! leak the noiseless value (Mironov 2012). This sampler only uses integer arithmetic on uniform random
//! bits, so its output distribution is exactly `P[x] ∝ exp(-x² / (2 σ²))` for the rational `σ²` it is given.
//! `σ²` is an integer here: callers round the variance they want *up*, which only adds noise.

use rand::RngCore;

/// Uniform integer in `[0, n)` by rejection on the smallest power of two covering `n` (exact, no modulo bias).
fn uniform_below<R: RngCore + ?Sized>(rng: &mut R, n: u128) -> u128 {
    debug_assert!(n > 0, "uniform_below(0) has no valid output");
    if n == 1 {
        return 0;
    }
    let bits = 128 - (n - 1).leading_zeros();
    loop {
        let hi = u128::from(rng.next_u64());
        let lo = u128::from(rng.next_u64());
        let v = ((hi << 64) | lo) >> (128 - bits);
        if v < n {
            return v;
        }
    }
}

/// Bernoulli(`num / den`) for `0 <= num <= den`, `den > 0`.
fn bernoulli<R: RngCore + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    uniform_below(rng, den) < num
}

/// Bernoulli(exp(-num/den)) for `num / den` in [0, 1] (CKS Algorithm 1, first part).
fn bernoulli_exp_unit<R: RngCore + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let mut k: u128 = 1;
    loop {
        // Bernoulli(gamma / k); den * k cannot overflow for the k reached in practice (P[k > 60] < 1/60!).
        let Some(d) = den.checked_mul(k) else { return k % 2 == 1 };
        if !bernoulli(rng, num, d) {
            return k % 2 == 1;
        }
        k += 1;
    }
}

/// Bernoulli(exp(-num/den)) for any `num / den >= 0` (CKS Algorithm 1).
pub(crate) fn bernoulli_exp<R: RngCore + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let whole = num / den;
    for _ in 0..whole {
        if !bernoulli_exp_unit(rng, 1, 1) {
            return false;
        }
    }
    bernoulli_exp_unit(rng, num - whole * den, den)
}

/// The discrete Gaussian `N_Z(0, sigma2)` with an integer variance parameter `sigma2 >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    sigma2: u128,
    t: u128,
}

impl DiscreteGaussian {
    /// Largest variance parameter accepted: keeps every intermediate product inside `u128`.
    pub const MAX_SIGMA2: u128 = 1 << 60;

    /// A sampler with variance parameter `sigma2` (clamped to [1, MAX_SIGMA2]).
    pub fn new(sigma2: u128) -> Self {
        let sigma2 = sigma2.clamp(1, Self::MAX_SIGMA2);
        // t = floor(sigma) + 1, with an exact integer square root.
        let mut s = (sigma2 as f64).sqrt() as u128;
        while s * s > sigma2 {
            s -= 1;
        }
        while (s + 1) * (s + 1) <= sigma2 {
            s += 1;
        }
        DiscreteGaussian { sigma2, t: s + 1 }
    }

    /// The variance parameter.
    pub fn sigma2(&self) -> u128 {
        self.sigma2
    }

    /// One sample (CKS Algorithm 3: a discrete Laplace proposal with scale t, then rejection).
    pub fn sample<R: RngCore + ?Sized>(&self, rng: &mut R) -> i64 {
        let (s2, t) = (self.sigma2, self.t);
        loop {
            let u = uniform_below(rng, t);
            if !bernoulli_exp(rng, u, t) {
                continue;
            }
            let mut v: u128 = 0;
            while bernoulli_exp(rng, 1, 1) {
                v += 1;
            }
            let x = u + t * v;
            let negative = bernoulli(rng, 1, 2);
            if negative && x == 0 {
                continue;
            }
            // Accept with probability exp(-(x - s2/t)^2 / (2 s2)) = exp(-(x t - s2)^2 / (2 s2 t^2)).
            let diff = (x * t).abs_diff(s2);
            let (Some(num), Some(den)) = (diff.checked_mul(diff), (2 * s2).checked_mul(t * t)) else {
                continue; // a proposal this far out has acceptance probability ~0; redraw
            };
            if bernoulli_exp(rng, num, den) {
                let x = i64::try_from(x).unwrap_or(i64::MAX);
                return if negative { -x } else { x };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Exact pmf of N_Z(0, s2) by direct summation (the tail beyond 40 sigma is below f64 resolution).
    fn pmf(s2: f64) -> (Vec<f64>, i64) {
        let lim = (40.0 * s2.sqrt()).ceil() as i64 + 2;
        let w: Vec<f64> = (-lim..=lim).map(|x| (-(x * x) as f64 / (2.0 * s2)).exp()).collect();
        let z: f64 = w.iter().sum();
        (w.into_iter().map(|v| v / z).collect(), lim)
    }

    #[test]
    fn bernoulli_exp_matches_its_probability() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for (num, den) in [(1u128, 2u128), (1, 1), (5, 2), (0, 3)] {
            let n = 200_000;
            let hits = (0..n).filter(|_| bernoulli_exp(&mut rng, num, den)).count() as f64 / n as f64;
            let p = (-(num as f64) / den as f64).exp();
            // 5 standard errors of a binomial proportion.
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((hits - p).abs() <= 5.0 * se + 1e-12, "{num}/{den}: {hits} vs {p}");
        }
    }

    #[test]
    fn samples_follow_the_discrete_gaussian() {
        // Chi-square goodness of fit against the exact pmf, for a small and a large variance.
        for (s2, seed) in [(2u128, 3u64), (400, 4)] {
            let g = DiscreteGaussian::new(s2);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let n = 30_000usize;
            let samples: Vec<i64> = (0..n).map(|_| g.sample(&mut rng)).collect();
            let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
            let var = samples.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            // The discrete Gaussian's variance is below sigma^2 by less than 1e-6 for sigma^2 >= 1 here.
            assert!(mean.abs() < 5.0 * (s2 as f64 / n as f64).sqrt(), "mean {mean}");
            assert!((var / s2 as f64 - 1.0).abs() < 0.03, "variance {var} vs {s2}");
            let (p, lim) = pmf(s2 as f64);
            // Bins: each integer with expected count >= 20, the two tails pooled.
            let mut counts = vec![0usize; p.len()];
            for &x in &samples {
                counts[(x + lim) as usize] += 1;
            }
            let (mut chi2, mut dof, mut tail_obs, mut tail_exp) = (0.0, 0usize, 0.0, 0.0);
            for (c, q) in counts.iter().zip(&p) {
                let e = q * n as f64;
                if e >= 20.0 {
                    chi2 += (*c as f64 - e).powi(2) / e;
                    dof += 1;
                } else {
                    tail_obs += *c as f64;
                    tail_exp += e;
                }
            }
            chi2 += (tail_obs - tail_exp).powi(2) / tail_exp.max(1e-9);
            // Wilson-Hilferty upper 0.1% quantile of chi-square with `dof` degrees of freedom.
            let k = dof as f64;
            let crit = k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3);
            assert!(chi2 < crit, "sigma2 {s2}: chi2 {chi2} over {dof} bins exceeds {crit}");
        }
    }

    #[test]
    fn huge_variance_does_not_overflow() {
        let g = DiscreteGaussian::new(DiscreteGaussian::MAX_SIGMA2);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let s = (DiscreteGaussian::MAX_SIGMA2 as f64).sqrt();
        for _ in 0..200 {
            assert!((g.sample(&mut rng) as f64).abs() < 10.0 * s);
        }
        assert_eq!(DiscreteGaussian::new(0).sigma2(), 1);
    }
}
