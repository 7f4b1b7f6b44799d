//! Teacher training: cross-entropy, fused AdamW, shuffled mini-batches, validation split with early
//! stopping and cosine learning-rate decay; seeded end to end (same seed, same weights).

use candle_core::{Device, Tensor};
use fedistill_data::{DataKind, Dataset};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::random_shifts;
use crate::error::{MlError, Result};
use crate::loss::LossSpec;
use crate::model::{argmax, check_features, Model, ModelConfig};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;
use crate::step::train_step;

/// Hyper-parameters of teacher training. TOML/JSON keys are the field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Maximum number of passes over the training part.
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Peak AdamW learning rate (decays with a cosine to 5% over `epochs`).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Stop after this many epochs without a better validation loss (0 = never stop early).
    pub patience: usize,
    /// Fraction of the samples held out for validation/early stopping (0 = none; at least 1 sample).
    pub val_fraction: f64,
    /// Seed of the weight init, the split and the batch order.
    pub seed: u64,
    /// Image datasets only: shift each training image by up to this many pixels per axis (0 = off).
    pub augment_shift: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 30,
            batch_size: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            patience: 5,
            val_fraction: 0.1,
            seed: 0,
            augment_shift: 0,
        }
    }
}

/// The ranges every training loop's settings share: epochs in 1..=100000, batch size in 1..=2^20, a finite
/// positive learning rate and a finite non-negative weight decay; the error names the field and the value.
pub(crate) fn check_optimizer(epochs: usize, batch_size: usize, lr: f64, weight_decay: f64) -> Result<()> {
    let bad = |m: String| Err(MlError::InvalidHyperParameter(m));
    if epochs == 0 || epochs > 100_000 {
        return bad(format!("epochs {epochs} out of range 1..=100000"));
    }
    if batch_size == 0 || batch_size > 1 << 20 {
        return bad(format!("batch_size {batch_size} out of range 1..=1048576"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        return bad(format!("lr must be finite and > 0, got {lr}"));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return bad(format!("weight_decay must be finite and >= 0, got {weight_decay}"));
    }
    Ok(())
}

impl TrainConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::InvalidHyperParameter(m));
        check_optimizer(self.epochs, self.batch_size, self.lr, self.weight_decay)?;
        if !(0.0..0.9).contains(&self.val_fraction) {
            return bad(format!("val_fraction must be in [0, 0.9), got {}", self.val_fraction));
        }
        Ok(())
    }
}

/// What a finished training run looked like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Epochs actually run.
    pub epochs_run: usize,
    /// Epoch (zero-based) whose weights were kept.
    pub best_epoch: usize,
    /// Validation loss of the kept weights (training loss when there is no validation split).
    pub best_val_loss: f32,
    /// Validation accuracy of the kept weights (NaN without a validation split).
    pub best_val_accuracy: f32,
    /// Mean training loss of the last epoch.
    pub last_train_loss: f32,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

/// Trains a teacher of architecture `cfg` on all of `data` (minus the validation split).
pub fn train_teacher(cfg: &ModelConfig, data: &Dataset, tc: &TrainConfig, progress: &Progress) -> Result<Model> {
    train_teacher_with_stats(
        cfg,
        &data.features,
        &data.labels,
        data.n,
        data.dim,
        data.num_classes,
        &data.kind,
        tc,
        progress,
    )
    .map(|(m, _)| m)
}

/// Slice-level teacher training; returns the model (best validation weights) and run statistics.
#[allow(clippy::too_many_arguments)]
pub fn train_teacher_with_stats(
    cfg: &ModelConfig,
    x: &[f32],
    labels: &[u32],
    n: usize,
    dim: usize,
    classes: usize,
    kind: &DataKind,
    tc: &TrainConfig,
    progress: &Progress,
) -> Result<(Model, TrainStats)> {
    tc.validate()?;
    cfg.validate(dim, classes)?;
    check_features(x, n, dim)?;
    check_labels(labels, n, classes)?;
    if n < 2 {
        return Err(MlError::InvalidInput(format!(
            "need at least 2 training samples, got {n}"
        )));
    }
    let per_feature_norm = matches!(kind, DataKind::Tabular);
    let image = match *kind {
        DataKind::Image { height, width } if tc.augment_shift > 0 => {
            if height * width != dim {
                return Err(MlError::InvalidInput(format!(
                    "image {height}x{width} does not match dimension {dim}"
                )));
            }
            Some((height, width))
        }
        _ => None,
    };
    let model = Model::new(cfg, dim, classes, tc.seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(tc.seed ^ 0x7EAC_4E55);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let n_val = if tc.val_fraction > 0.0 {
        ((n as f64 * tc.val_fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    let (val_idx, train_idx) = order.split_at(n_val);
    let mut train_idx = train_idx.to_vec();
    let train_x = gather_rows(x, dim, &train_idx);
    model.fit_input_normalization(&train_x, train_idx.len(), per_feature_norm)?;
    let xs = model.standardize(x, n)?;
    // The standardized value of a blank (0) pixel fills the border uncovered by a shift.
    let fill = model.standardize(&vec![0.0; dim], 1)?.first().copied().unwrap_or(0.0);
    let val_x = gather_rows(&xs, dim, val_idx);
    let val_y: Vec<u32> = val_idx.iter().map(|&i| labels[i]).collect();

    let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = FusedAdamW::new(
        vars,
        AdamWParams {
            lr: tc.lr,
            weight_decay: tc.weight_decay,
            ..AdamWParams::default()
        },
    )?;
    let mut best: Option<(f32, Vec<Tensor>)> = None;
    let mut stats = TrainStats {
        epochs_run: 0,
        best_epoch: 0,
        best_val_loss: f32::INFINITY,
        best_val_accuracy: f32::NAN,
        last_train_loss: f32::NAN,
        stopped_early: false,
    };
    let mut since_best = 0;
    let label = "teacher";
    progress.start(label, tc.epochs as u64);
    for epoch in 0..tc.epochs {
        let frac = epoch as f64 / tc.epochs as f64;
        opt.set_learning_rate(tc.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())));
        train_idx.shuffle(&mut rng);
        let mut sum = 0f64;
        let mut steps = 0usize;
        for (step, batch) in train_idx.chunks(tc.batch_size).enumerate() {
            let mut rows = gather_rows(&xs, dim, batch);
            if let Some((h, w)) = image {
                let src = rows.clone();
                random_shifts(&src, h, w, tc.augment_shift, fill, &mut rng, &mut rows);
            }
            let bx = Tensor::from_vec(rows, (batch.len(), dim), &Device::Cpu)?;
            let spec = LossSpec {
                classes,
                teacher_probs: Vec::new(),
                weights: Vec::new(),
                hard: batch.iter().map(|&i| Some(labels[i])).collect(),
                temperature: 1.0,
                w_kd: 0.0,
                w_ce: 1.0,
            };
            let lv = train_step(&model, &bx, &spec, &mut opt)?;
            if !lv.is_finite() {
                progress.finish(label, "diverged");
                return Err(MlError::Diverged { epoch, step, loss: lv });
            }
            sum += lv as f64;
            steps += 1;
        }
        stats.epochs_run = epoch + 1;
        stats.last_train_loss = (sum / steps.max(1) as f64) as f32;
        let (score, acc) = if n_val > 0 {
            eval_loss_acc(&model, &val_x, &val_y, classes)?
        } else {
            (stats.last_train_loss, f32::NAN)
        };
        if !score.is_finite() {
            progress.finish(label, "diverged");
            return Err(MlError::Diverged {
                epoch,
                step: steps,
                loss: score,
            });
        }
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            let snapshot = model
                .trainable_vars()
                .iter()
                .map(|(_, v)| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            best = Some((score, snapshot));
            stats.best_epoch = epoch;
            stats.best_val_loss = score;
            stats.best_val_accuracy = acc;
            since_best = 0;
        } else {
            since_best += 1;
        }
        progress.advance(
            label,
            epoch as u64 + 1,
            tc.epochs as u64,
            &format!(
                "train loss {:.4} val loss {score:.4} val acc {:.2}%",
                stats.last_train_loss,
                acc * 100.0
            ),
        );
        if tc.patience > 0 && since_best >= tc.patience {
            stats.stopped_early = true;
            break;
        }
    }
    if let Some((_, snapshot)) = best {
        for ((_, var), t) in model.trainable_vars().iter().zip(snapshot) {
            var.set(&t)?;
        }
    }
    progress.finish(
        label,
        &format!(
            "best epoch {} val acc {:.2}%",
            stats.best_epoch + 1,
            stats.best_val_accuracy * 100.0
        ),
    );
    Ok((model, stats))
}

/// Mean cross-entropy and accuracy of `model` on already standardized rows.
fn eval_loss_acc(model: &Model, xs: &[f32], y: &[u32], classes: usize) -> Result<(f32, f32)> {
    let n = y.len();
    let dim = model.in_dim();
    let mut loss = 0f64;
    let mut correct = 0usize;
    for (chunk, ys) in xs.chunks(1024 * dim).zip(y.chunks(1024)) {
        let t = Tensor::from_slice(chunk, (ys.len(), dim), &Device::Cpu)?;
        let logits = model.forward_standardized(&t)?.flatten_all()?.to_vec1::<f32>()?;
        for (row, &yi) in logits.chunks_exact(classes).zip(ys) {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
            loss += (lse - row[yi as usize]) as f64;
            correct += usize::from(argmax(row) == yi as usize);
        }
    }
    Ok(((loss / n as f64) as f32, correct as f32 / n as f32))
}

/// Copies the rows `idx` of a row-major matrix with `dim` columns.
pub(crate) fn gather_rows(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&x[i * dim..(i + 1) * dim]);
    }
    out
}

/// Checks `n` labels, each below `classes`.
pub fn check_labels(labels: &[u32], n: usize, classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(MlError::InvalidInput(format!(
            "{} labels for {n} samples",
            labels.len()
        )));
    }
    if let Some((i, y)) = labels.iter().enumerate().find(|(_, &y)| y as usize >= classes) {
        return Err(MlError::InvalidInput(format!(
            "label {y} of sample {i} is not below the {classes} classes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedistill_data::{load, LoadOptions};

    fn digits() -> Dataset {
        match load("digits", &LoadOptions::default()) {
            Ok(d) => d,
            Err(e) => panic!("embedded digits dataset must load: {e}"),
        }
    }

    fn quick() -> TrainConfig {
        TrainConfig {
            epochs: 4,
            batch_size: 64,
            lr: 3e-3,
            seed: 5,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn teacher_learns_digits_and_is_deterministic() -> Result<()> {
        let ds = digits();
        let (train_idx, test_idx): (Vec<usize>, Vec<usize>) = (0..ds.n).partition(|i| i % 5 != 0);
        let tr = ds.subset(&train_idx);
        let te = ds.subset(&test_idx);
        let cfg = ModelConfig::Mlp { hidden: vec![32] };
        let a = train_teacher(&cfg, &tr, &quick(), &Progress::hidden())?;
        let b = train_teacher(&cfg, &tr, &quick(), &Progress::hidden())?;
        assert_eq!(
            a.weights_digest(),
            b.weights_digest(),
            "same seed must give the same weights"
        );
        let c = train_teacher(&cfg, &tr, &TrainConfig { seed: 6, ..quick() }, &Progress::hidden())?;
        assert_ne!(a.weights_digest(), c.weights_digest());
        let m = crate::metrics::evaluate(&a, &te, None)?;
        assert!(m.accuracy > 0.85, "accuracy {}", m.accuracy);
        Ok(())
    }

    #[test]
    fn bad_hyper_parameters_are_rejected_before_training() {
        let ds = digits();
        let cfg = ModelConfig::Mlp { hidden: vec![8] };
        for tc in [
            TrainConfig { epochs: 0, ..quick() },
            TrainConfig {
                batch_size: 0,
                ..quick()
            },
            TrainConfig { lr: 0.0, ..quick() },
            TrainConfig {
                lr: f64::NAN,
                ..quick()
            },
            TrainConfig {
                weight_decay: -0.1,
                ..quick()
            },
            TrainConfig {
                val_fraction: 0.95,
                ..quick()
            },
        ] {
            let r = train_teacher(&cfg, &ds, &tc, &Progress::hidden());
            assert!(matches!(r, Err(MlError::InvalidHyperParameter(_))), "{tc:?}");
        }
        let bad = ModelConfig::Mlp { hidden: vec![0] };
        assert!(matches!(
            train_teacher(&bad, &ds, &quick(), &Progress::hidden()),
            Err(MlError::InvalidConfig(_))
        ));
    }

    #[test]
    fn bad_labels_and_features_are_rejected() {
        let cfg = ModelConfig::Mlp { hidden: vec![4] };
        let x = vec![0.0f32; 8];
        let kind = DataKind::Tabular;
        let p = Progress::hidden();
        let r = train_teacher_with_stats(&cfg, &x, &[0, 1, 2, 0], 4, 2, 2, &kind, &quick(), &p);
        assert!(matches!(r, Err(MlError::InvalidInput(_))));
        let r = train_teacher_with_stats(&cfg, &x, &[0, 1, 1], 4, 2, 2, &kind, &quick(), &p);
        assert!(matches!(r, Err(MlError::InvalidInput(_))));
        let mut xn = x.clone();
        xn[3] = f32::NAN;
        let r = train_teacher_with_stats(&cfg, &xn, &[0, 1, 1, 0], 4, 2, 2, &kind, &quick(), &p);
        assert!(matches!(r, Err(MlError::InvalidInput(_))));
    }

    #[test]
    fn diverging_run_names_epoch_and_step() {
        let ds = digits();
        let cfg = ModelConfig::Mlp { hidden: vec![16] };
        let tc = TrainConfig {
            lr: 1e30,
            weight_decay: 0.0,
            ..quick()
        };
        match train_teacher(&cfg, &ds, &tc, &Progress::hidden()) {
            Err(e @ MlError::Diverged { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("epoch 0") && msg.contains("step"), "{msg}");
            }
            other => panic!("expected divergence, got {other:?}"),
        }
    }
}
