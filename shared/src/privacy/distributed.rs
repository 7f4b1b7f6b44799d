//! The privacy of a secure round's sum when every participant adds a share of the noise (the distributed
//! discrete Gaussian of Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
//! Learning with Secure Aggregation", ICML 2021, Theorem 1 with Proposition 14's bound on the divergence of a
//! sum of discrete Gaussians from one).
//!
//! Each of the `n` participants adds independent discrete Gaussian noise of variance `sigma2` (fixed-point
//! units) to each of its `d` values before masking; the coordinator sees only the sum, which carries the
//! noise of every survivor. With at least `survivors` honest survivors the sum satisfies `rho`-zCDP
//! (`epsilon^2 / 2`-concentrated DP) with respect to one participant changing one released row, whose L2
//! sensitivity is `l2` (fixed-point units):
//!
//! `epsilon = min( sqrt(l2^2 / (k sigma2) + tau d / 2), l2 / sqrt(k sigma2) + tau sqrt(d) )`,
//! `tau = 10 sum_{j=1}^{k-1} exp(-2 pi^2 sigma2 j / (j + 1))`, `k` = survivors.
//!
//! `tau` is negligible once `sigma2` is more than a few units (it is about `exp(-pi^2 sigma2)`), so the
//! guarantee is that of a Gaussian of the survivors' total variance.

/// zCDP `rho` of one round's sum: `k` survivors each adding discrete Gaussian noise of variance `sigma2` to
/// each of `d` values, for a change of one participant's row of L2 norm at most `l2` (all in the same
/// fixed-point units). Infinite when there is no noise.
pub fn distributed_gaussian_rho(sigma2: f64, survivors: usize, l2: f64, d: usize) -> f64 {
    if sigma2 <= 0.0 || survivors == 0 {
        return f64::INFINITY;
    }
    let k = survivors as f64;
    let tau: f64 = 10.0
        * (1..survivors)
            .map(|j| {
                let j = j as f64;
                (-2.0 * std::f64::consts::PI.powi(2) * sigma2 * j / (j + 1.0)).exp()
            })
            .sum::<f64>();
    let d = d as f64;
    let a = (l2 * l2 / (k * sigma2) + tau * d / 2.0).sqrt();
    let b = l2 / (k * sigma2).sqrt() + tau * d.sqrt();
    let eps = a.min(b);
    eps * eps / 2.0
}

/// The L2 sensitivity of one released probability row in fixed point with `frac_bits` fractional bits:
/// replacing a row moves it by at most `sqrt(2)` (two distributions differ by at most 2 in L1 and sqrt(2) in
/// L2), times the scale; under the sample-weighted rule the row is scaled by the participant's samples too.
pub fn row_l2_sensitivity(frac_bits: u32, weight: f64) -> f64 {
    std::f64::consts::SQRT_2 * (1u64 << frac_bits) as f64 * weight.max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_large_noise_it_is_the_gaussian_of_the_survivors_total_variance() {
        // tau vanishes: rho = l2^2 / (2 k sigma2), the Gaussian mechanism's zCDP.
        let (sigma2, k, l2) = (1e6, 5, 1000.0);
        let rho = distributed_gaussian_rho(sigma2, k, l2, 10);
        let gaussian = l2 * l2 / (2.0 * k as f64 * sigma2);
        assert!((rho - gaussian).abs() <= 1e-12 * gaussian, "{rho} vs {gaussian}");
        // More survivors, more noise in the sum, less privacy loss.
        assert!(distributed_gaussian_rho(sigma2, 10, l2, 10) < rho);
    }

    #[test]
    fn tiny_noise_pays_the_sum_divergence_term_and_no_noise_gives_no_guarantee() {
        let with_tau = distributed_gaussian_rho(0.05, 5, 1.0, 100);
        let gaussian = 1.0 / (2.0 * 5.0 * 0.05);
        assert!(with_tau > gaussian, "tau adds to the loss: {with_tau} vs {gaussian}");
        assert!(distributed_gaussian_rho(0.0, 5, 1.0, 10).is_infinite());
        assert!(distributed_gaussian_rho(1.0, 0, 1.0, 10).is_infinite());
    }

    #[test]
    fn the_row_sensitivity_is_sqrt_two_in_fixed_point() {
        assert!((row_l2_sensitivity(24, 1.0) - std::f64::consts::SQRT_2 * 16_777_216.0).abs() < 1e-6);
        assert!((row_l2_sensitivity(0, 100.0) - 100.0 * std::f64::consts::SQRT_2).abs() < 1e-9);
    }
}
