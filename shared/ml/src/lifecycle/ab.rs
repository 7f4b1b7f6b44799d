//! A/B comparison of two students on the same held-out samples (paired accuracy difference, McNemar's
//! exact test, a decision at a significance level) and a shadow mode that scores a stream with both.

use serde::{Deserialize, Serialize};

use super::mcnemar::PairedCounts;
use super::LifecycleError;

/// Outcome of an A/B comparison at the chosen significance level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbDecision {
    /// A is significantly more accurate than B.
    AIsBetter,
    /// B is significantly more accurate than A.
    BIsBetter,
    /// The difference is not significant at `alpha`.
    NoSignificantDifference,
}

/// Paired comparison of two classifiers on the same labelled samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbReport {
    /// Number of paired samples.
    pub samples: u64,
    /// Accuracy of A.
    pub accuracy_a: f64,
    /// Accuracy of B.
    pub accuracy_b: f64,
    /// `accuracy_a - accuracy_b`.
    pub accuracy_difference: f64,
    /// The 2x2 table of paired outcomes.
    pub counts: PairedCounts,
    /// Two-sided exact McNemar p-value.
    pub p_value: f64,
    /// Significance level used.
    pub alpha: f64,
    /// The decision.
    pub decision: AbDecision,
    /// Fraction of samples where A and B predict different classes.
    pub disagreement: f64,
}

fn check_alpha(alpha: f64) -> Result<(), LifecycleError> {
    if alpha > 0.0 && alpha < 1.0 {
        Ok(())
    } else {
        Err(LifecycleError::BadAlpha(alpha))
    }
}

/// Compares predicted classes of A and B against the labels, pairing by sample index.
pub fn compare_predictions(
    pred_a: &[u32],
    pred_b: &[u32],
    labels: &[u32],
    alpha: f64,
) -> Result<AbReport, LifecycleError> {
    check_alpha(alpha)?;
    if pred_a.len() != labels.len() || pred_b.len() != labels.len() {
        return Err(LifecycleError::LengthMismatch {
            a: pred_a.len(),
            b: pred_b.len(),
            labels: labels.len(),
        });
    }
    if labels.is_empty() {
        return Err(LifecycleError::NoSamples);
    }
    let ca: Vec<bool> = pred_a.iter().zip(labels).map(|(p, y)| p == y).collect();
    let cb: Vec<bool> = pred_b.iter().zip(labels).map(|(p, y)| p == y).collect();
    let counts = PairedCounts::from_correctness(&ca, &cb).ok_or(LifecycleError::LengthMismatch {
        a: pred_a.len(),
        b: pred_b.len(),
        labels: labels.len(),
    })?;
    let n = counts.total();
    let disagree = pred_a.iter().zip(pred_b).filter(|(a, b)| a != b).count();
    let p = counts.mcnemar_p();
    let decision = if p < alpha && counts.only_a > counts.only_b {
        AbDecision::AIsBetter
    } else if p < alpha && counts.only_b > counts.only_a {
        AbDecision::BIsBetter
    } else {
        AbDecision::NoSignificantDifference
    };
    Ok(AbReport {
        samples: n,
        accuracy_a: (counts.both_correct + counts.only_a) as f64 / n as f64,
        accuracy_b: (counts.both_correct + counts.only_b) as f64 / n as f64,
        accuracy_difference: counts.accuracy_difference(),
        counts,
        p_value: p,
        alpha,
        decision,
        disagreement: disagree as f64 / n as f64,
    })
}

/// Index of the largest logit of each row (`classes` logits per row); ties take the first index.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<u32> {
    if classes == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0usize;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// Shadow mode: the current student serves, the candidate scores the same stream silently, and the two
/// are compared as samples arrive. Labels, when they arrive later, feed the paired accuracy table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// Samples scored by both.
    pub scored: u64,
    /// Samples where the predicted classes differ.
    pub disagreements: u64,
    /// Paired outcome table over the labelled samples seen so far.
    pub labelled: PairedCounts,
}

/// Snapshot of a shadow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Samples scored by both.
    pub scored: u64,
    /// Samples where the predicted classes differ.
    pub disagreements: u64,
    /// `disagreements / scored` (0 before any sample).
    pub disagreement_rate: f64,
    /// Labelled samples among the scored ones.
    pub labelled: u64,
    /// Paired accuracy difference (serving minus shadow) over the labelled samples.
    pub accuracy_difference: f64,
    /// McNemar's exact p-value over the labelled samples.
    pub p_value: f64,
}

impl Shadow {
    /// Records one batch: predictions of the serving student (`a`) and of the shadow candidate (`b`),
    /// with labels when known.
    pub fn handle_batch(&mut self, a: &[u32], b: &[u32], labels: Option<&[u32]>) -> Result<(), LifecycleError> {
        let lab_len = labels.map_or(a.len(), <[u32]>::len);
        if a.len() != b.len() || lab_len != a.len() {
            return Err(LifecycleError::LengthMismatch {
                a: a.len(),
                b: b.len(),
                labels: lab_len,
            });
        }
        self.scored += a.len() as u64;
        self.disagreements += a.iter().zip(b).filter(|(x, y)| x != y).count() as u64;
        if let Some(labels) = labels {
            for ((&pa, &pb), &y) in a.iter().zip(b).zip(labels) {
                match (pa == y, pb == y) {
                    (true, true) => self.labelled.both_correct += 1,
                    (true, false) => self.labelled.only_a += 1,
                    (false, true) => self.labelled.only_b += 1,
                    (false, false) => self.labelled.both_wrong += 1,
                }
            }
        }
        Ok(())
    }

    /// The current figures.
    pub fn poll_report(&self) -> ShadowReport {
        ShadowReport {
            scored: self.scored,
            disagreements: self.disagreements,
            disagreement_rate: if self.scored == 0 {
                0.0
            } else {
                self.disagreements as f64 / self.scored as f64
            },
            labelled: self.labelled.total(),
            accuracy_difference: self.labelled.accuracy_difference(),
            p_value: self.labelled.mcnemar_p(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_difference_is_detected() {
        // 100 samples: A right on all, B wrong on the first 12 -> 12 discordant pairs all for A;
        // p = 2 * 0.5^12 = 0.00048828125 (exact; also scipy.stats.binomtest(0, 12).pvalue).
        let labels: Vec<u32> = (0..100).map(|i| i % 3).collect();
        let a = labels.clone();
        let b: Vec<u32> = labels
            .iter()
            .enumerate()
            .map(|(i, &y)| if i < 12 { y + 1 } else { y })
            .collect();
        let r = compare_predictions(&a, &b, &labels, 0.05).expect("ok");
        assert_eq!(r.decision, AbDecision::AIsBetter);
        assert!((r.p_value - 0.00048828125).abs() < 1e-15);
        assert!((r.accuracy_difference - 0.12).abs() < 1e-12);
        assert!((r.disagreement - 0.12).abs() < 1e-12);
        let r = compare_predictions(&b, &a, &labels, 0.05).expect("ok");
        assert_eq!(r.decision, AbDecision::BIsBetter);
        // At alpha = 1e-4 the same evidence is not enough.
        let r = compare_predictions(&a, &b, &labels, 1e-4).expect("ok");
        assert_eq!(r.decision, AbDecision::NoSignificantDifference);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(
            compare_predictions(&[0], &[0, 1], &[0], 0.05),
            Err(LifecycleError::LengthMismatch { .. })
        ));
        assert!(matches!(
            compare_predictions(&[], &[], &[], 0.05),
            Err(LifecycleError::NoSamples)
        ));
        assert!(matches!(
            compare_predictions(&[0], &[0], &[0], 1.0),
            Err(LifecycleError::BadAlpha(_))
        ));
    }

    #[test]
    fn shadow_tracks_disagreement_over_a_stream() {
        let mut s = Shadow::default();
        s.handle_batch(&[0, 1, 2, 3], &[0, 1, 2, 0], None).expect("batch");
        s.handle_batch(&[1, 1], &[1, 2], Some(&[1, 2])).expect("batch");
        let r = s.poll_report();
        assert_eq!(r.scored, 6);
        assert_eq!(r.disagreements, 2);
        assert!((r.disagreement_rate - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.labelled, 2);
        assert_eq!(s.labelled.only_b, 1);
        assert!(s.handle_batch(&[0], &[0, 1], None).is_err());
    }

    #[test]
    fn argmax_takes_first_on_ties() {
        assert_eq!(argmax_rows(&[0.0, 2.0, 2.0, 5.0, 1.0, 0.0], 3), vec![1, 0]);
    }
}
