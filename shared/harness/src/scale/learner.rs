//! The scale suite's learner: deterministic synthetic soft labels and no student, so that the bench
//! measures the protocol (the real participant driver and lifecycle against the real coordinator) and
//! not the model.

use std::collections::BTreeMap;

use fedistill_participant::{Distilled, Learner, LearnerSummary};
use fedistill_shared::crypto::{Digest, RoundId};

use super::CLAIMED_SAMPLES;

/// A learner without a model: labels are a fixed function of (participant, sample, class).
pub(super) struct SyntheticLearner {
    index: usize,
    public_digest: Digest,
    public_len: u64,
    classes: usize,
    /// Every public row's labels, computed once when the node starts (so a round costs a copy, not the
    /// synthetic labels' arithmetic, which is the bench's and not the protocol's).
    table: Vec<f32>,
    /// The labels of the last round this node labelled, to compare the consensus with.
    last_labels: Vec<f32>,
}

impl SyntheticLearner {
    pub(super) fn new(index: usize, public_digest: Digest, public_len: u64, classes: usize) -> Self {
        let ids: Vec<u64> = (0..public_len).collect();
        SyntheticLearner {
            index,
            public_digest,
            public_len,
            classes,
            table: synthetic_labels(index, &ids, classes),
            last_labels: Vec::new(),
        }
    }
}

impl Learner for SyntheticLearner {
    fn public_digest(&self) -> Digest {
        self.public_digest
    }

    fn public_len(&self) -> u64 {
        self.public_len
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn private_samples(&self) -> u64 {
        CLAIMED_SAMPLES
    }

    fn label(&mut self, _round: RoundId, ids: &[u64], _temperature: f32) -> anyhow::Result<Vec<f32>> {
        let c = self.classes;
        self.last_labels.clear();
        for &id in ids {
            match self.table.get(id as usize * c..(id as usize + 1) * c) {
                Some(row) => self.last_labels.extend_from_slice(row),
                None => self.last_labels.extend(synthetic_labels(self.index, &[id], c)),
            }
        }
        Ok(self.last_labels.clone())
    }

    /// No student: the "accuracy" reported is how often the consensus agrees with this node's own labels.
    fn distill(
        &mut self,
        _round: RoundId,
        _ids: &[u64],
        consensus: &[f32],
        _total_rounds: u64,
        _rule: fedistill_shared::protocol::AggregationRule,
        _serving: &BTreeMap<String, f64>,
    ) -> anyhow::Result<Distilled> {
        let classes = self.classes.max(1);
        let agree = consensus
            .chunks_exact(classes)
            .zip(self.last_labels.chunks_exact(classes))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        let rows = (consensus.len() / classes).max(1);
        let bytes: Vec<u8> = consensus.iter().flat_map(|p| p.to_le_bytes()).collect();
        let metrics = BTreeMap::from([("accuracy".to_string(), agree as f64 / rows as f64)]);
        Ok(Distilled {
            // No validation or test rows either: the one figure stands for both.
            test_metrics: metrics.clone(),
            metrics,
            int8_accuracy: 0.0,
            test_int8_accuracy: 0.0,
            int8_bytes: 0,
            accepted: true,
            guard_reason: "synthetic participant (bench scale): no student".into(),
            student_digest: Digest::of(&bytes),
            consensus_accuracy: 0.0,
            phases: Vec::new(),
            personalized_accuracy: None,
        })
    }

    fn summary(&self) -> LearnerSummary {
        LearnerSummary::default()
    }
}

/// Deterministic synthetic soft labels: for each sample a probability row peaked on `sample % classes`,
/// with per-participant noise from a fixed hash of (participant, sample, class), normalised with a softmax.
/// Written without a buffer per row: the bench measures the protocol, and a learner's labelling time is not
/// part of it.
fn synthetic_labels(participant: usize, sample_ids: &[u64], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(sample_ids.len() * classes);
    for &s in sample_ids {
        let target = (s % classes as u64) as usize;
        let start = out.len();
        // Logits are in [0, 1) plus 2 on the target, so the largest is the target's: subtract it before exp.
        let mut sum = 0.0f32;
        let mut peak = 0.0f32;
        for c in 0..classes {
            let h = splitmix64(((participant as u64) << 40) ^ (s << 8) ^ c as u64);
            let noise = (h >> 40) as f32 / (1u64 << 24) as f32;
            let logit = if c == target { 2.0 + noise } else { noise };
            if c == target {
                peak = logit;
            }
            out.push(logit);
        }
        for v in &mut out[start..] {
            *v = (*v - peak).exp();
            sum += *v;
        }
        for v in &mut out[start..] {
            *v /= sum;
        }
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_shared::protocol::{softlabels, Encoding};

    #[test]
    fn synthetic_labels_are_deterministic_distributions() {
        let ids = [0u64, 7, 13, 8999];
        let a = synthetic_labels(3, &ids, 10);
        assert_eq!(a, synthetic_labels(3, &ids, 10));
        assert_ne!(a, synthetic_labels(4, &ids, 10), "participants differ");
        for (row, &id) in a.chunks_exact(10).zip(&ids) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{sum}");
            // The peak (logit 2 + noise in [0, 1)) beats every other class (noise in [0, 1)).
            assert_eq!(argmax(row), (id % 10) as usize);
        }
        // The protocol's own validator accepts them.
        softlabels::encode(&a, ids.len(), 10, Encoding::F32).expect("valid soft labels");
    }

    #[test]
    fn agreement_with_own_labels_is_the_reported_accuracy() {
        let mut l = SyntheticLearner::new(1, Digest([7; 32]), 100, 4);
        let ids = [1u64, 2, 3, 4];
        let mine = l.label(RoundId(1), &ids, 2.0).expect("labels");
        // The consensus agrees on the first two rows and disagrees on the last two.
        let mut consensus = mine.clone();
        for row in consensus.chunks_exact_mut(4).skip(2) {
            row.rotate_left(1);
        }
        let d = l
            .distill(
                RoundId(1),
                &ids,
                &consensus,
                3,
                fedistill_shared::protocol::AggregationRule::Mean,
                &BTreeMap::new(),
            )
            .expect("distil");
        assert_eq!(d.metrics["accuracy"], 0.5);
        assert!(d.accepted);
    }

    #[test]
    fn labels_from_the_table_are_the_synthetic_labels() {
        let mut l = SyntheticLearner::new(2, Digest([7; 32]), 50, 3);
        let ids = [49u64, 0, 7, 7];
        assert_eq!(
            l.label(RoundId(1), &ids, 2.0).expect("labels"),
            synthetic_labels(2, &ids, 3)
        );
        // A row beyond the public set (never asked by a validated opening) is computed, not refused.
        assert_eq!(
            l.label(RoundId(2), &[60], 2.0).expect("labels"),
            synthetic_labels(2, &[60], 3)
        );
    }
}
