//! Aggregation rules that turn verified soft-label contributions into the round's consensus.
//!
//! Every rule is deterministic given the contributions in participant-id order (the caller sorts them), so
//! an auditor recomputes the coordinator's aggregate bit for bit from the logged payloads.

use super::softlabels::{validate_distributions, SoftLabelError};
pub use crate::wire::enums::{AggregationRule, RuleError};

/// One verified contribution, already decoded to probabilities.
#[derive(Debug, Clone, Copy)]
pub struct ContributionView<'a> {
    /// `rows * classes` probabilities.
    pub probabilities: &'a [f32],
    /// The contributor's private sample count (used by `SampleWeighted`).
    pub samples: u64,
}

/// Why aggregation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// No contribution to aggregate.
    #[error("no contributions to aggregate")]
    Empty,
    /// The rule name is not known.
    #[error("unknown aggregation rule {0:?} (expected mean, sample_weighted, confidence_weighted, era[:T], median, trimmed_mean[:F])")]
    UnknownRule(String),
    /// A rule parameter is out of range.
    #[error("invalid aggregation parameter: {0}")]
    BadParameter(String),
    /// A contribution is not a valid set of distributions of the expected shape.
    #[error("contribution {index}: {source}")]
    Invalid {
        /// Position of the contribution.
        index: usize,
        /// What is wrong with it.
        source: SoftLabelError,
    },
}

impl From<RuleError> for AggregateError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::UnknownRule(s) => AggregateError::UnknownRule(s),
            RuleError::BadParameter(s) => AggregateError::BadParameter(s),
        }
    }
}

/// Aggregates `contributions` (each `rows * classes` probabilities) with `rule`.
pub fn aggregate(
    rule: AggregationRule,
    contributions: &[ContributionView<'_>],
    rows: usize,
    classes: usize,
) -> Result<Vec<f32>, AggregateError> {
    rule.validate()?;
    if classes == 1 {
        check_rule_for_values(rule)?;
    }
    if contributions.is_empty() {
        return Err(AggregateError::Empty);
    }
    for (index, c) in contributions.iter().enumerate() {
        validate_distributions(c.probabilities, rows, classes)
            .map_err(|source| AggregateError::Invalid { index, source })?;
    }
    let m = contributions.len();
    let mut out = vec![0.0f32; rows * classes];
    match rule {
        AggregationRule::Mean | AggregationRule::Era { .. } | AggregationRule::SampleWeighted => {
            let weights: Vec<f64> = match rule {
                AggregationRule::SampleWeighted => {
                    let total: u64 = contributions.iter().map(|c| c.samples).sum();
                    if total == 0 {
                        vec![1.0 / m as f64; m]
                    } else {
                        contributions.iter().map(|c| c.samples as f64 / total as f64).collect()
                    }
                }
                _ => vec![1.0 / m as f64; m],
            };
            for (i, o) in out.iter_mut().enumerate() {
                let s: f64 = contributions
                    .iter()
                    .zip(&weights)
                    .map(|(c, w)| f64::from(c.probabilities[i]) * w)
                    .sum();
                *o = s as f32;
            }
            if let AggregationRule::Era { temperature } = rule {
                for r in out.chunks_exact_mut(classes) {
                    softmax_in_place(r, temperature);
                }
            }
        }
        AggregationRule::ConfidenceWeighted => {
            for row in 0..rows {
                let range = row * classes..(row + 1) * classes;
                let conf: Vec<f64> = contributions
                    .iter()
                    .map(|c| c.probabilities[range.clone()].iter().fold(0.0f32, |a, &b| a.max(b)) as f64)
                    .collect();
                let total: f64 = conf.iter().sum();
                for k in range {
                    let s: f64 = contributions
                        .iter()
                        .zip(&conf)
                        .map(|(c, w)| f64::from(c.probabilities[k]) * w / total)
                        .sum();
                    out[k] = s as f32;
                }
            }
        }
        AggregationRule::Median | AggregationRule::TrimmedMean { .. } => {
            let trim = match rule {
                AggregationRule::TrimmedMean { trim } => ((m as f32) * trim).floor() as usize,
                _ => 0,
            };
            let mut column = Vec::with_capacity(m);
            for (i, o) in out.iter_mut().enumerate() {
                column.clear();
                column.extend(contributions.iter().map(|c| c.probabilities[i]));
                column.sort_by(f32::total_cmp);
                *o = match rule {
                    AggregationRule::Median => {
                        if m % 2 == 1 {
                            column[m / 2]
                        } else {
                            ((f64::from(column[m / 2 - 1]) + f64::from(column[m / 2])) / 2.0) as f32
                        }
                    }
                    _ => {
                        let kept = &column[trim..m - trim];
                        (kept.iter().map(|&v| f64::from(v)).sum::<f64>() / kept.len() as f64) as f32
                    }
                };
            }
            if classes > 1 {
                renormalise(&mut out, classes);
            }
        }
    }
    Ok(out)
}

/// Refuses the rules that only make sense for class probabilities when the task has one output (a
/// regression task, whose soft labels are real values): confidence weighting (the largest probability of
/// a row) and ERA (a softmax over the classes).
pub fn check_rule_for_values(rule: AggregationRule) -> Result<(), AggregateError> {
    match rule {
        AggregationRule::ConfidenceWeighted | AggregationRule::Era { .. } => {
            Err(AggregateError::BadParameter(format!(
                "rule {} needs class probabilities; a regression task's soft labels are real values: use mean, \
             sample_weighted, median or trimmed_mean",
                rule.name()
            )))
        }
        _ => Ok(()),
    }
}

/// Numerically stable softmax of `r / temperature`, in place.
fn softmax_in_place(r: &mut [f32], temperature: f32) {
    let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in r.iter_mut() {
        let e = (f64::from((*v - max) / temperature)).exp();
        *v = e as f32;
        sum += e;
    }
    r.iter_mut().for_each(|v| *v = (f64::from(*v) / sum) as f32);
}

/// The targets a participant refreshes its teacher from, given the consensus `rule` produced: the
/// consensus itself, except for ERA, whose sharpening is undone (the mean it sharpened is recovered), so
/// that the sharpening reaches the student once instead of compounding through the teachers round after
/// round (docs/benchmarks.md, "Why ERA hurts with the teacher refresh").
pub fn refresh_targets(rule: AggregationRule, consensus: &[f32], classes: usize) -> std::borrow::Cow<'_, [f32]> {
    match rule {
        AggregationRule::Era { temperature } => std::borrow::Cow::Owned(unsharpen_era(consensus, classes, temperature)),
        _ => std::borrow::Cow::Borrowed(consensus),
    }
}

/// Inverts ERA's `softmax(mean / T)` row by row: `mean_i = T ln(era_i) + (1 - T sum_j ln(era_j)) / classes`
/// (the constant fixed by the mean summing to one). Entries a lossy encoding zeroed are floored at the
/// smallest positive f32 before the logarithm; negative results are clamped to 0 and the row renormalised.
pub fn unsharpen_era(consensus: &[f32], classes: usize, temperature: f32) -> Vec<f32> {
    let t = f64::from(temperature);
    let mut out = Vec::with_capacity(consensus.len());
    for row in consensus.chunks_exact(classes.max(1)) {
        let logs: Vec<f64> = row.iter().map(|&p| f64::from(p.max(f32::MIN_POSITIVE)).ln()).collect();
        let c = (1.0 - t * logs.iter().sum::<f64>()) / classes as f64;
        out.extend(logs.iter().map(|l| (t * l + c).max(0.0) as f32));
    }
    renormalise(&mut out, classes.max(1));
    out
}

/// Rescales every row to sum to one (a uniform row if it summed to zero).
fn renormalise(p: &mut [f32], classes: usize) {
    for r in p.chunks_exact_mut(classes) {
        let sum: f64 = r.iter().map(|&v| f64::from(v)).sum();
        if sum > 0.0 {
            r.iter_mut().for_each(|v| *v = (f64::from(*v) / sum) as f32);
        } else {
            r.iter_mut().for_each(|v| *v = 1.0 / classes as f32);
        }
    }
}

/// Mean L1 distance per row between a contribution and the consensus: the anomaly score of a contributor.
pub fn distance_to_consensus(contribution: &[f32], consensus: &[f32], classes: usize) -> f64 {
    let rows = contribution.len() / classes.max(1);
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = contribution
        .iter()
        .zip(consensus)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum();
    total / rows as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(p: &[f32], samples: u64) -> ContributionView<'_> {
        ContributionView {
            probabilities: p,
            samples,
        }
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    // Expected values below were computed by hand from the definitions.
    const A: [f32; 2] = [0.9, 0.1];
    const B: [f32; 2] = [0.5, 0.5];
    const C: [f32; 2] = [0.1, 0.9];

    #[test]
    fn mean_and_sample_weighted() {
        let mean = aggregate(AggregationRule::Mean, &[view(&A, 1), view(&B, 1)], 1, 2).unwrap();
        assert!(close(&mean, &[0.7, 0.3]));
        // Weights 3/4 and 1/4: 0.9*0.75 + 0.5*0.25 = 0.8.
        let w = aggregate(AggregationRule::SampleWeighted, &[view(&A, 300), view(&B, 100)], 1, 2).unwrap();
        assert!(close(&w, &[0.8, 0.2]));
    }

    /// ERA's sharpening undone: the mean comes back from the sharpened rows (exact up to f32 rounding, and
    /// within 1e-3 after the consensus travelled as f16); the other rules' targets are the consensus itself.
    #[test]
    fn era_is_unsharpened_for_the_refresh() {
        let rows: [&[f32]; 3] = [&[0.9, 0.1, 0.0], &[0.4, 0.35, 0.25], &[0.2, 0.3, 0.5]];
        let other: [&[f32]; 3] = [&[0.5, 0.3, 0.2], &[0.1, 0.6, 0.3], &[0.3, 0.3, 0.4]];
        let flat = |r: [&[f32]; 3]| r.concat();
        let (a, b) = (flat(rows), flat(other));
        let rule = AggregationRule::Era { temperature: 0.1 };
        let mean = aggregate(AggregationRule::Mean, &[view(&a, 1), view(&b, 1)], 3, 3).unwrap();
        let era = aggregate(rule, &[view(&a, 1), view(&b, 1)], 3, 3).unwrap();
        assert!(!close(&era, &mean), "ERA sharpens");
        let back = refresh_targets(rule, &era, 3);
        assert!(
            back.iter().zip(&mean).all(|(x, y)| (x - y).abs() < 1e-5),
            "{back:?} vs {mean:?}"
        );
        let f16: Vec<f32> = era.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let back16 = unsharpen_era(&f16, 3, 0.1);
        assert!(
            back16.iter().zip(&mean).all(|(x, y)| (x - y).abs() < 1e-3),
            "{back16:?}"
        );
        // A zeroed entry (top-k) gives a row that still sums to one, with no NaN.
        let zeroed = unsharpen_era(&[1.0, 0.0, 0.0], 3, 0.1);
        assert!(zeroed.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert!((zeroed.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(matches!(
            refresh_targets(AggregationRule::Mean, &mean, 3),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn confidence_weighted_favours_the_confident() {
        // Confidences 0.9 and 0.5: (0.9*0.9 + 0.5*0.5) / 1.4 = 0.757142...
        let c = aggregate(AggregationRule::ConfidenceWeighted, &[view(&A, 1), view(&B, 1)], 1, 2).unwrap();
        assert!(close(&c, &[1.06 / 1.4, 0.34 / 1.4]));
    }

    #[test]
    fn era_sharpens_the_mean() {
        // mean = (0.7, 0.3); softmax((0.7, 0.3) / 0.1) = (e^4 / (e^4 + 1), 1 / (e^4 + 1)).
        let e = aggregate(
            AggregationRule::Era { temperature: 0.1 },
            &[view(&A, 1), view(&B, 1)],
            1,
            2,
        )
        .unwrap();
        let e4 = 4f32.exp();
        assert!(close(&e, &[e4 / (e4 + 1.0), 1.0 / (e4 + 1.0)]));
    }

    #[test]
    fn median_and_trimmed_mean_resist_an_outlier() {
        let poison = [0.0f32, 1.0];
        let views = [view(&A, 1), view(&A, 1), view(&B, 1), view(&A, 1), view(&poison, 1)];
        let med = aggregate(AggregationRule::Median, &views, 1, 2).unwrap();
        assert!(close(&med, &[0.9, 0.1]));
        // Columns sorted: (0, .5, .9, .9, .9) -> trim 1 each end -> (.5, .9, .9) mean .7666; (.1,.1,.1,.5,1) -> (.1,.1,.5) .2333.
        let tm = aggregate(AggregationRule::TrimmedMean { trim: 0.2 }, &views, 1, 2).unwrap();
        assert!(close(&tm, &[2.3 / 3.0, 0.7 / 3.0]));
        let mean = aggregate(AggregationRule::Mean, &views, 1, 2).unwrap();
        assert!(mean[0] < 0.65, "the mean is dragged by the outlier: {mean:?}");
        // Even count median: average of the middle two.
        let even = aggregate(AggregationRule::Median, &[view(&A, 1), view(&C, 1)], 1, 2).unwrap();
        assert!(close(&even, &[0.5, 0.5]));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(aggregate(AggregationRule::Mean, &[], 1, 2), Err(AggregateError::Empty));
        let nan = [f32::NAN, 1.0];
        assert!(matches!(
            aggregate(AggregationRule::Mean, &[view(&A, 1), view(&nan, 1)], 1, 2),
            Err(AggregateError::Invalid { index: 1, .. })
        ));
        let short = [1.0f32];
        assert!(matches!(
            aggregate(AggregationRule::Median, &[view(&short, 1)], 1, 2),
            Err(AggregateError::Invalid { index: 0, .. })
        ));
        assert!(AggregationRule::parse("trimmed_mean:0.5").is_err());
        assert!(AggregationRule::parse("era:0").is_err());
        assert!(AggregationRule::parse("avg").is_err());
    }

    #[test]
    fn aggregation_is_deterministic() {
        let views = [view(&A, 3), view(&B, 5), view(&C, 7)];
        for r in [
            AggregationRule::Mean,
            AggregationRule::ConfidenceWeighted,
            AggregationRule::Median,
        ] {
            let a = aggregate(r, &views, 1, 2).unwrap();
            let b = aggregate(r, &views, 1, 2).unwrap();
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    /// One output = a regression task: rows are real values (negative ones too), aggregated without
    /// renormalisation; median and trimmed mean resist one insider's lie; the probability-only rules and
    /// encodings are refused with a reason, and values travel through f32 and f16 and back.
    #[test]
    fn regression_values_aggregate_as_numbers() {
        use crate::protocol::softlabels::{decode, encode, Encoding, SoftLabelError, VALUE_LIMIT};
        let a = [-1.5f32, 0.25, 2.0];
        let b = [-0.5f32, 0.75, 1.0];
        let liar = [900.0f32, -900.0, 900.0];
        let mean = aggregate(AggregationRule::Mean, &[view(&a, 1), view(&b, 1)], 3, 1).unwrap();
        assert!(close(&mean, &[-1.0, 0.5, 1.5]), "{mean:?}");
        let w = aggregate(AggregationRule::SampleWeighted, &[view(&a, 3), view(&b, 1)], 3, 1).unwrap();
        assert!(close(&w, &[-1.25, 0.375, 1.75]), "{w:?}");
        let med = aggregate(
            AggregationRule::Median,
            &[view(&a, 1), view(&b, 1), view(&liar, 1)],
            3,
            1,
        )
        .unwrap();
        assert!(close(&med, &[-0.5, 0.25, 2.0]), "{med:?}");
        let t = aggregate(
            AggregationRule::TrimmedMean { trim: 0.34 },
            &[view(&a, 1), view(&b, 1), view(&liar, 1)],
            3,
            1,
        )
        .unwrap();
        assert!(
            close(&t, &med),
            "one trimmed from each end of three is the median: {t:?}"
        );
        for rule in [
            AggregationRule::ConfidenceWeighted,
            AggregationRule::Era { temperature: 0.5 },
        ] {
            let e = aggregate(rule, &[view(&a, 1)], 3, 1).unwrap_err().to_string();
            assert!(e.contains("regression") && e.contains("real values"), "{e}");
        }
        // Validation: finite values within the limit.
        let bad = [0.0, VALUE_LIMIT * 2.0, 0.0];
        assert!(matches!(
            aggregate(AggregationRule::Mean, &[view(&bad, 1)], 3, 1),
            Err(AggregateError::Invalid {
                source: SoftLabelError::ValueOutOfRange { row: 1, .. },
                ..
            })
        ));
        let nan = [0.0, f32::NAN, 0.0];
        assert!(encode(&nan, 3, 1, Encoding::F32).is_err());
        // Encodings: f32 exact, f16 close; probability encodings refused for values.
        let bytes = encode(&a, 3, 1, Encoding::F32).unwrap();
        assert_eq!(decode(&bytes, 3, 1, Encoding::F32).unwrap(), a.to_vec());
        let half = decode(&encode(&a, 3, 1, Encoding::F16).unwrap(), 3, 1, Encoding::F16).unwrap();
        assert!(close(&half, &a));
        for enc in [
            Encoding::Int8,
            Encoding::Argmax,
            Encoding::TopK { k: 1 },
            Encoding::QTopK { k: 1 },
        ] {
            let e = encode(&a, 3, 1, enc).unwrap_err();
            assert!(matches!(e, SoftLabelError::NotForValues { .. }), "{enc:?}: {e}");
            assert!(decode(&[0u8; 64], 3, 1, enc).is_err());
        }
        // A received f32 payload beyond the limit is refused at decoding.
        let far: Vec<u8> = [1.0f32, -5000.0, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(matches!(
            decode(&far, 3, 1, Encoding::F32),
            Err(SoftLabelError::ValueOutOfRange { row: 1, .. })
        ));
    }
}
