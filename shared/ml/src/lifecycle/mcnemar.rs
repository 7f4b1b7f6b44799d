//! McNemar's exact test for two classifiers scored on the same samples: the paired statistic the A/B
//! comparison and the shadow mode report, computed here without a statistics dependency.

use serde::{Deserialize, Serialize};

/// The 2x2 table of paired outcomes of classifiers A and B on the same samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PairedCounts {
    /// Samples both classifiers got right.
    pub both_correct: u64,
    /// Samples only A got right (the discordant pairs favouring A).
    pub only_a: u64,
    /// Samples only B got right (the discordant pairs favouring B).
    pub only_b: u64,
    /// Samples both classifiers got wrong.
    pub both_wrong: u64,
}

impl PairedCounts {
    /// Tallies the table from per-sample correctness of A and B; `None` when the lengths differ.
    pub fn from_correctness(a: &[bool], b: &[bool]) -> Option<Self> {
        if a.len() != b.len() {
            return None;
        }
        let mut c = Self::default();
        for (&ra, &rb) in a.iter().zip(b) {
            match (ra, rb) {
                (true, true) => c.both_correct += 1,
                (true, false) => c.only_a += 1,
                (false, true) => c.only_b += 1,
                (false, false) => c.both_wrong += 1,
            }
        }
        Some(c)
    }

    /// Number of paired samples.
    pub fn total(&self) -> u64 {
        self.both_correct + self.only_a + self.only_b + self.both_wrong
    }

    /// Accuracy of A minus accuracy of B (0 when there are no samples).
    pub fn accuracy_difference(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return 0.0;
        }
        (self.only_a as f64 - self.only_b as f64) / n as f64
    }

    /// Two-sided exact McNemar p-value (see [`mcnemar_exact_p`]).
    pub fn mcnemar_p(&self) -> f64 {
        mcnemar_exact_p(self.only_a, self.only_b)
    }
}

/// Two-sided exact McNemar p-value for `b` and `c` discordant pairs.
///
/// Under H0 (both classifiers equally accurate) `b ~ Binomial(b + c, 1/2)`; the two-sided p-value of
/// the binomial test with p = 1/2 is `min(1, 2 * P(X <= min(b, c)))`, which is what
/// `scipy.stats.binomtest(b, b + c, 0.5).pvalue` returns because the null distribution is symmetric.
/// The tail is summed in log space so that tens of thousands of discordant pairs neither overflow nor
/// underflow to a wrong answer.
pub fn mcnemar_exact_p(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    if 2 * k == n {
        return 1.0;
    }
    let nf = n as f64;
    let mut log_term = nf * 0.5f64.ln(); // log P(X = 0)
    let mut logs = Vec::with_capacity(k as usize + 1);
    logs.push(log_term);
    for i in 0..k {
        let i = i as f64;
        log_term += (nf - i).ln() - (i + 1.0).ln();
        logs.push(log_term);
    }
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    let tail = (max + sum.ln()).exp();
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-300) || (a - b).abs() < 1e-15
    }

    #[test]
    fn matches_scipy_binomtest() {
        // Expected values computed once with SciPy 1.17.1:
        //   from scipy.stats import binomtest; binomtest(b, b + c, 0.5).pvalue
        let cases: &[(u64, u64, f64)] = &[
            (0, 1, 1.0),
            (1, 9, 0.021484375),
            (3, 12, 0.03515625),
            (10, 10, 1.0),
            (7, 2, 0.1796875),
            (30, 52, SCIPY_30_52),
            (480, 560, SCIPY_480_560),
            (0, 40, SCIPY_0_40),
        ];
        for &(b, c, want) in cases {
            let got = mcnemar_exact_p(b, c);
            assert!(close(got, want), "b={b} c={c}: got {got:e}, scipy {want:e}");
            assert!(close(mcnemar_exact_p(c, b), want), "symmetry b={b} c={c}");
        }
    }

    // Values from scipy.stats.binomtest (SciPy 1.17.1), printed with repr().
    const SCIPY_30_52: f64 = 0.0198269158458416;
    const SCIPY_480_560: f64 = 0.014259079095385853;
    const SCIPY_0_40: f64 = 1.8189894035458565e-12;

    #[test]
    fn no_discordant_pairs_is_no_evidence() {
        assert_eq!(mcnemar_exact_p(0, 0), 1.0);
    }

    #[test]
    fn counts_from_correctness() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, false, false];
        let c = PairedCounts::from_correctness(&a, &b).expect("same length");
        assert_eq!(
            c,
            PairedCounts {
                both_correct: 1,
                only_a: 2,
                only_b: 1,
                both_wrong: 1
            }
        );
        assert!((c.accuracy_difference() - 0.2).abs() < 1e-12);
        assert!(PairedCounts::from_correctness(&a, &b[..4]).is_none());
    }
}
