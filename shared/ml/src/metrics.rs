//! Evaluation: the 12 metrics of a model on a test set (quality, calibration, agreement with the
//! teacher, latency, throughput) plus size, as one serde struct.

use std::time::Instant;

use candle_core::{Device, Tensor};
use fedistill_data::Dataset;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{argmax, check_features, softmax_rows, Model};
use crate::train::check_labels;

/// Number of equal-width confidence bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// The evaluation report of one model on one test set. JSON keys are the field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of samples whose argmax equals the label.
    pub accuracy: f64,
    /// Mean over classes (present in labels or predictions) of precision; 0 for a never-predicted class.
    pub precision_macro: f64,
    /// Mean over classes of recall.
    pub recall_macro: f64,
    /// Mean over classes of per-class F1.
    pub f1_macro: f64,
    /// ROC-AUC: binary (score = P(class 1)) or macro one-vs-rest; classes without positives or
    /// negatives in the test set are skipped; null when none is left.
    pub roc_auc: f64,
    /// Mean negative log-likelihood of the label (probabilities clipped to [1e-15, 1]).
    pub log_loss: f64,
    /// Expected calibration error over 15 equal-width bins of the top probability.
    pub ece: f64,
    /// Fraction of samples where the argmax equals the teacher's (null without teacher probabilities).
    pub agreement: Option<f64>,
    /// Mean KL(teacher || model) in nats at temperature 1 (null without teacher probabilities).
    pub kl_to_teacher: Option<f64>,
    /// Median latency of one forward pass at batch size 1, microseconds.
    pub latency_p50_us: f64,
    /// 99th-percentile latency at batch size 1, microseconds.
    pub latency_p99_us: f64,
    /// Samples per second at batch size 256.
    pub throughput_per_s: f64,
    /// Trainable parameters.
    pub params: usize,
    /// Bytes of the safetensors checkpoint.
    pub size_bytes: usize,
}

/// Evaluates `model` on `test`; `teacher_probs` (n * classes, temperature 1) enables agreement and KL.
pub fn evaluate(model: &Model, test: &Dataset, teacher_probs: Option<&[f32]>) -> Result<Metrics> {
    if test.dim != model.in_dim() || test.num_classes != model.classes() {
        return Err(MlError::InvalidInput(format!(
            "test set has dim {} and {} classes, model expects {} and {}",
            test.dim,
            test.num_classes,
            model.in_dim(),
            model.classes()
        )));
    }
    evaluate_slices(model, &test.features, &test.labels, test.n, teacher_probs)
}

/// `evaluate` on plain slices.
pub fn evaluate_slices(
    model: &Model,
    x: &[f32],
    labels: &[u32],
    n: usize,
    teacher_probs: Option<&[f32]>,
) -> Result<Metrics> {
    let c = model.classes();
    if n == 0 {
        return Err(MlError::InvalidInput("empty test set".into()));
    }
    check_features(x, n, model.in_dim())?;
    check_labels(labels, n, c)?;
    if let Some(tp) = teacher_probs {
        crate::distill::validate_probabilities(tp, n, c)?;
    }
    let logits = model.logits(x, n)?;
    let probs = softmax_rows(&logits, c, 1.0);
    let pred: Vec<u32> = logits.chunks_exact(c).map(|r| argmax(r) as u32).collect();
    let (precision_macro, recall_macro, f1_macro) = macro_prf(labels, &pred, c);
    let (p50, p99) = latency_us(model, x, n)?;
    Ok(Metrics {
        accuracy: accuracy(labels, &pred),
        precision_macro,
        recall_macro,
        f1_macro,
        roc_auc: roc_auc(labels, &probs, c),
        log_loss: log_loss(labels, &probs, c),
        ece: ece(labels, &probs, c, ECE_BINS),
        agreement: teacher_probs.map(|tp| agreement(tp, &logits, c)),
        kl_to_teacher: teacher_probs.map(|tp| mean_kl(tp, &logits, c)),
        latency_p50_us: p50,
        latency_p99_us: p99,
        throughput_per_s: throughput(model, x, n)?,
        params: model.params(),
        size_bytes: model.serialized_size()?,
    })
}

/// Fraction of equal entries.
pub fn accuracy(labels: &[u32], pred: &[u32]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    labels.iter().zip(pred).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64
}

/// Macro precision, recall and F1 over the classes that occur in `labels` or `pred` (sklearn's
/// default label set, zero_division = 0).
pub fn macro_prf(labels: &[u32], pred: &[u32], classes: usize) -> (f64, f64, f64) {
    let mut tp = vec![0usize; classes];
    let mut fp = vec![0usize; classes];
    let mut fn_ = vec![0usize; classes];
    for (&y, &p) in labels.iter().zip(pred) {
        let (y, p) = (y as usize, p as usize);
        if y == p {
            tp[y] += 1;
        } else {
            fp[p] += 1;
            fn_[y] += 1;
        }
    }
    let (mut ps, mut rs, mut fs, mut k) = (0.0, 0.0, 0.0, 0usize);
    for j in 0..classes {
        if tp[j] + fp[j] + fn_[j] == 0 {
            continue;
        }
        let p = if tp[j] + fp[j] > 0 {
            tp[j] as f64 / (tp[j] + fp[j]) as f64
        } else {
            0.0
        };
        let r = if tp[j] + fn_[j] > 0 {
            tp[j] as f64 / (tp[j] + fn_[j]) as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
        ps += p;
        rs += r;
        fs += f;
        k += 1;
    }
    let k = k.max(1) as f64;
    (ps / k, rs / k, fs / k)
}

/// Area under the ROC curve of `scores` for binary `positive` flags (Mann-Whitney U, ties count 1/2);
/// None when one side is empty.
pub fn binary_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Average ranks over tie groups.
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// ROC-AUC: binary with P(class 1) as score, else the macro mean of one-vs-rest AUCs.
pub fn roc_auc(labels: &[u32], probs: &[f32], classes: usize) -> f64 {
    let col = |k: usize| -> Vec<f64> { probs.chunks_exact(classes).map(|r| r[k] as f64).collect() };
    if classes == 2 {
        let pos: Vec<bool> = labels.iter().map(|&y| y == 1).collect();
        return binary_auc(&col(1), &pos).unwrap_or(f64::NAN);
    }
    let aucs: Vec<f64> = (0..classes)
        .filter_map(|k| {
            let pos: Vec<bool> = labels.iter().map(|&y| y as usize == k).collect();
            binary_auc(&col(k), &pos)
        })
        .collect();
    if aucs.is_empty() {
        f64::NAN
    } else {
        aucs.iter().sum::<f64>() / aucs.len() as f64
    }
}

/// Mean of -ln(p[label]) with p clipped to [1e-15, 1].
pub fn log_loss(labels: &[u32], probs: &[f32], classes: usize) -> f64 {
    let s: f64 = labels
        .iter()
        .zip(probs.chunks_exact(classes))
        .map(|(&y, r)| -(r[y as usize] as f64).clamp(1e-15, 1.0).ln())
        .sum();
    s / labels.len().max(1) as f64
}

/// Expected calibration error: bins (i/B, (i+1)/B] of the top probability, weighted |accuracy - confidence|.
pub fn ece(labels: &[u32], probs: &[f32], classes: usize, bins: usize) -> f64 {
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut correct = vec![0f64; bins];
    for (&y, r) in labels.iter().zip(probs.chunks_exact(classes)) {
        let p = argmax(r);
        let c = r[p] as f64;
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[b] += 1;
        conf[b] += c;
        correct[b] += f64::from(u8::from(p == y as usize));
    }
    let n = labels.len().max(1) as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (correct[b] - conf[b]).abs() / n)
        .sum()
}

/// Fraction of rows where argmax(teacher probabilities) == argmax(model logits).
pub fn agreement(teacher_probs: &[f32], logits: &[f32], classes: usize) -> f64 {
    let rows = teacher_probs.chunks_exact(classes).zip(logits.chunks_exact(classes));
    let n = logits.len() / classes.max(1);
    rows.filter(|(t, s)| argmax(t) == argmax(s)).count() as f64 / n.max(1) as f64
}

/// Mean over rows of KL(teacher || softmax(logits)) in nats, computed with a stable log-softmax.
pub fn mean_kl(teacher_probs: &[f32], logits: &[f32], classes: usize) -> f64 {
    let mut total = 0f64;
    let mut rows = 0usize;
    for (t, s) in teacher_probs.chunks_exact(classes).zip(logits.chunks_exact(classes)) {
        let max = s.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let lse = s.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        total += t
            .iter()
            .zip(s)
            .filter(|(&p, _)| p > 0.0)
            .map(|(&p, &z)| p as f64 * ((p as f64).ln() - (z as f64 - lse)))
            .sum::<f64>();
        rows += 1;
    }
    // KL is non-negative; a model compared with itself can land a rounding error below 0.
    (total / rows.max(1) as f64).max(0.0)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Batch-1 latency p50/p99 (µs) over up to 200 samples after 10 warm-up passes.
fn latency_us(model: &Model, x: &[f32], n: usize) -> Result<(f64, f64)> {
    let d = model.in_dim();
    let m = n.min(200);
    let mut times = Vec::with_capacity(m);
    for i in 0..(m + 10) {
        let row = &x[(i % m) * d..(i % m + 1) * d];
        let t0 = Instant::now();
        let t = Tensor::from_slice(row, (1, d), &Device::Cpu)?;
        let out = model.forward(&t)?;
        let _ = out.to_vec2::<f32>()?;
        if i >= 10 {
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
}

/// Samples/s at batch 256 (rows cycled from the test set), over at least 4 batches and 50 ms.
fn throughput(model: &Model, x: &[f32], n: usize) -> Result<f64> {
    let d = model.in_dim();
    let batch: Vec<f32> = (0..256)
        .flat_map(|i| x[(i % n) * d..(i % n + 1) * d].iter().copied())
        .collect();
    let t = Tensor::from_vec(batch, (256, d), &Device::Cpu)?;
    let _ = model.forward(&t)?.to_vec2::<f32>()?;
    let start = Instant::now();
    let mut done = 0usize;
    while done < 4 * 256 || start.elapsed().as_secs_f64() < 0.05 {
        let _ = model.forward(&t)?.to_vec2::<f32>()?;
        done += 256;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    // Fixture shared by the metric tests. Expected values were computed once with python3,
    // numpy 2.4.6 and scikit-learn 1.9.1 (accuracy_score, precision_recall_fscore_support(average=
    // 'macro', zero_division=0), roc_auc_score(multi_class='ovr', average='macro'), log_loss); ECE,
    // agreement and KL with numpy by their definitions (15 bins (lo, hi], KL with log-softmax of ln P).
    const Y: [u32; 8] = [0, 1, 2, 2, 1, 0, 2, 1];
    const P: [f32; 24] = [
        0.7, 0.2, 0.1, 0.1, 0.6, 0.3, 0.2, 0.2, 0.6, 0.3, 0.4, 0.3, 0.25, 0.5, 0.25, 0.4, 0.35, 0.25, 0.05, 0.15, 0.8,
        0.5, 0.3, 0.2,
    ];
    const T: [f32; 24] = [
        0.6, 0.3, 0.1, 0.2, 0.5, 0.3, 0.1, 0.1, 0.8, 0.2, 0.2, 0.6, 0.3, 0.4, 0.3, 0.5, 0.25, 0.25, 0.1, 0.1, 0.8, 0.2,
        0.6, 0.2,
    ];

    fn pred() -> Vec<u32> {
        P.chunks(3).map(|r| argmax(r) as u32).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn accuracy_matches_sklearn() {
        close(accuracy(&Y, &pred()), 0.75);
    }

    #[test]
    fn macro_precision_recall_f1_match_sklearn() {
        let (p, r, f) = macro_prf(&Y, &pred(), 3);
        close(p, 0.777_777_777_777_777_7);
        close(r, 0.777_777_777_777_777_7);
        close(f, 0.755_555_555_555_555_5);
    }

    #[test]
    fn macro_prf_never_predicted_class_counts_zero() {
        // Hand-computed: class 1 never predicted -> precision 0 (sklearn zero_division=0),
        // class 0: P=2/3 R=1; class 1: P=0 R=0 -> macro P = 1/3, R = 1/2, F1 = (0.8 + 0)/2.
        let (p, r, f) = macro_prf(&[0, 0, 1], &[0, 0, 0], 2);
        close(p, 1.0 / 3.0);
        close(r, 0.5);
        close(f, 0.4);
    }

    #[test]
    fn roc_auc_ovr_macro_matches_sklearn() {
        close(roc_auc(&Y, &P, 3), 0.916_666_666_666_666_6);
    }

    #[test]
    fn binary_roc_auc_with_ties_matches_sklearn() {
        // roc_auc_score([0,1,1,0,1,0], [0.2,0.8,0.4,0.4,0.9,0.1]) = 0.9444444444 (one tie 0.4/0.4).
        let labels = [0u32, 1, 1, 0, 1, 0];
        let s = [0.2f32, 0.8, 0.4, 0.4, 0.9, 0.1];
        let probs: Vec<f32> = s.iter().flat_map(|&p| [1.0 - p, p]).collect();
        close(roc_auc(&labels, &probs, 2), 0.944_444_444_444_444_4);
        assert!(binary_auc(&[0.1, 0.2], &[true, true]).is_none());
    }

    #[test]
    fn log_loss_matches_sklearn() {
        assert!((log_loss(&Y, &P, 3) - 0.702_356_636_519_094_5).abs() < 1e-6);
    }

    #[test]
    fn ece_matches_numpy() {
        assert!((ece(&Y, &P, 3, ECE_BINS) - 0.187_499_992_549_419_4).abs() < 1e-6);
        // Hand-computed: perfectly confident and right -> 0.
        assert_eq!(ece(&[0, 1], &[1.0, 0.0, 0.0, 1.0], 2, ECE_BINS), 0.0);
    }

    #[test]
    fn agreement_and_kl_match_numpy() {
        let logits: Vec<f32> = P.iter().map(|p| p.ln()).collect();
        close(agreement(&T, &logits, 3), 0.75);
        assert!((mean_kl(&T, &logits, 3) - 0.084_160_928_680_716_85).abs() < 1e-6);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn evaluate_reports_sizes_and_timings() -> Result<()> {
        let model = Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 3, 2, 1)?;
        let x: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<u32> = (0..10).map(|i| i % 2).collect();
        let probs = model.probabilities(&x, 10, 1.0)?;
        let m = evaluate_slices(&model, &x, &y, 10, Some(&probs))?;
        // 3*4+4 + 4*2+2 = 26 parameters (hand count).
        assert_eq!(m.params, 26);
        assert_eq!(m.size_bytes, model.to_safetensors()?.len());
        assert_eq!(m.agreement, Some(1.0));
        assert!(m.kl_to_teacher.is_some_and(|k| k.abs() < 1e-6));
        assert!(m.latency_p50_us > 0.0 && m.latency_p99_us >= m.latency_p50_us);
        assert!(m.throughput_per_s > 0.0);
        let json = serde_json::to_value(&m).map_err(|e| MlError::InvalidInput(e.to_string()))?;
        for key in [
            "accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "roc_auc",
            "log_loss",
            "ece",
            "agreement",
            "kl_to_teacher",
            "latency_p50_us",
            "latency_p99_us",
            "throughput_per_s",
            "params",
            "size_bytes",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        Ok(())
    }

    #[test]
    fn evaluate_rejects_bad_teacher_probabilities_and_labels() -> Result<()> {
        let model = Model::new(&ModelConfig::Mlp { hidden: vec![] }, 2, 2, 1)?;
        let x = [0.0f32, 1.0, 1.0, 0.0];
        let bad = [0.5f32, 0.6, 0.5, 0.5];
        assert!(matches!(
            evaluate_slices(&model, &x, &[0, 1], 2, Some(&bad)),
            Err(MlError::InvalidProbabilities(_))
        ));
        assert!(matches!(
            evaluate_slices(&model, &x, &[0, 2], 2, None),
            Err(MlError::InvalidInput(_))
        ));
        assert!(matches!(
            evaluate_slices(&model, &x, &[0], 2, None),
            Err(MlError::InvalidInput(_))
        ));
        Ok(())
    }
}
