//! DP-SGD training of MLP teachers (Abadi et al. 2016): per-sample gradient clipping, Gaussian noise on the
//! clipped sum and Poisson subsampling, so the teacher, and everything computed from it, is
//! differentially private with respect to one private training sample.
//!
//! Per-sample gradient norms come without materialising per-sample gradients: for a dense layer
//! `y = W a + b`, sample i's gradient of `W` is `outer(delta_i, a_i)`, whose squared Frobenius norm is
//! `|delta_i|² |a_i|²`, plus `|delta_i|²` for the bias. Summed over layers that is sample i's full squared
//! norm; the clip factor `c_i = min(1, C / norm_i)` then scales row i of every layer's back-propagated
//! deltas before the usual `Delta^T A` product, which yields the sum of clipped per-sample gradients in
//! one matmul per layer (the backward pass itself is linear in each sample's output gradient, so
//! scaling after the pass equals clipping each sample's gradient).
//!
//! Sampling is Poisson: every step includes each private sample independently with probability
//! `q = batch / n`, which is what the accountant (`fedistill_shared::privacy::accountant`, the Sampled
//! Gaussian Mechanism of Mironov, Talwar and Zhang 2019) assumes. The noisy sum is divided by the
//! *expected* batch size `q n`, not the realised one (the realised size depends on the data). There is
//! no validation split and no early stopping: choosing the epoch by a loss on private samples would be
//! an unaccounted use of them; the last weights are kept. The input standardization is fitted on a
//! caller-given non-private set (the public transfer set) or left at the identity.

use candle_core::{DType, Device, Tensor, D};
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use fedistill_data::{DataKind, Dataset};

use crate::augment::random_shifts;
use crate::error::{MlError, Result};
use crate::model::{check_features, Model, ModelConfig};
use crate::optim::{AdamWParams, FusedAdamW};
use crate::progress::Progress;
use crate::train::{check_labels, gather_rows, TrainConfig};

/// DP-SGD settings of teacher training (the `[privacy.teacher]` table of a participant, docs/privacy.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSgdConfig {
    /// Noise standard deviation divided by `clip` (sigma).
    pub noise_multiplier: f64,
    /// L2 bound `C` of each sample's gradient (over all layers together).
    pub clip: f64,
    /// Expected batch size: each step includes each sample with probability `batch / n`.
    pub batch: usize,
}

impl DpSgdConfig {
    /// Checks the ranges: `noise_multiplier > 0`, `clip > 0` (both finite), `1 <= batch`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::InvalidHyperParameter(m));
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier > 0.0) {
            return bad(format!(
                "DP-SGD noise_multiplier must be finite and > 0, got {}",
                self.noise_multiplier
            ));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad(format!("DP-SGD clip must be finite and > 0, got {}", self.clip));
        }
        if self.batch == 0 || self.batch > 1 << 20 {
            return bad(format!("DP-SGD batch {} out of range 1..=1048576", self.batch));
        }
        Ok(())
    }

    /// Poisson sampling rate `q = batch / n` for `n` private samples (an error when `batch > n`).
    pub fn sampling_rate(&self, n: usize) -> Result<f64> {
        if n == 0 || self.batch > n {
            return Err(MlError::InvalidHyperParameter(format!(
                "DP-SGD batch {} must not exceed the {n} private samples",
                self.batch
            )));
        }
        Ok(self.batch as f64 / n as f64)
    }

    /// Optimizer steps of `epochs` epochs over `n` samples: `ceil(epochs * n / batch)` (TF Privacy's
    /// convention; one "epoch" is `1 / q` steps).
    pub fn steps(&self, epochs: usize, n: usize) -> u64 {
        ((epochs as f64 * n as f64) / self.batch.max(1) as f64).ceil() as u64
    }
}

/// What a DP-SGD run did: the inputs of the privacy accounting, and diagnostics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpTrainStats {
    /// Optimizer steps taken (each one a Sampled Gaussian Mechanism invocation).
    pub steps: u64,
    /// Poisson sampling rate q.
    pub sampling_rate: f64,
    /// Noise multiplier sigma.
    pub noise_multiplier: f64,
    /// Clip norm C.
    pub clip: f64,
    /// Private samples n.
    pub samples: usize,
    /// Mean realised batch size.
    pub mean_batch: f64,
    /// Fraction of per-sample gradients that were clipped (norm above C).
    pub clipped_fraction: f64,
    /// Mean per-sample training loss over the last `1 / q` steps.
    pub last_train_loss: f32,
}

/// One batch's noisy, clipped and averaged gradient, per dense layer (input side first).
#[derive(Debug)]
pub struct DpGradients {
    /// `(dW [out, in], db [out])` per layer: `(sum_i clip_i(g_i) + N(0, (sigma C)²)) / expected_batch`.
    pub layers: Vec<(Tensor, Tensor)>,
    /// Per-sample gradient L2 norms before clipping.
    pub norms: Vec<f32>,
    /// Sum of the per-sample cross-entropy losses.
    pub loss_sum: f64,
}

/// Noisy clipped gradient of the summed cross-entropy of `labels.len()` standardized rows `x` (row-major,
/// `in_dim` columns; zero rows is allowed: the result is then pure noise). `noise_std` is `sigma * C`.
#[allow(clippy::too_many_arguments)]
pub fn dp_gradients(
    layers: &[(Tensor, Tensor)],
    x: &[f32],
    labels: &[u32],
    classes: usize,
    clip: f64,
    noise_std: f64,
    expected_batch: f64,
    rng: &mut ChaCha20Rng,
) -> Result<DpGradients> {
    let rows = labels.len();
    let Some((w0, _)) = layers.first() else {
        return Err(MlError::InvalidConfig("DP-SGD needs at least one layer".into()));
    };
    let in_dim = w0.dim(1)?;
    check_features(x, rows, in_dim)?;
    check_labels(labels, rows, classes)?;
    if expected_batch.is_nan() || expected_batch <= 0.0 {
        return Err(MlError::InvalidHyperParameter(format!(
            "expected batch {expected_batch} must be > 0"
        )));
    }
    let mut clipped: Vec<(Tensor, Tensor)> = Vec::with_capacity(layers.len());
    let mut norms = Vec::new();
    let mut loss_sum = 0f64;
    if rows == 0 {
        for (w, b) in layers {
            clipped.push((w.zeros_like()?.detach(), b.zeros_like()?.detach()));
        }
    } else {
        let bx = Tensor::from_slice(x, (rows, in_dim), &Device::Cpu)?;
        let mut acts = Vec::with_capacity(layers.len());
        let mut h = bx;
        let last = layers.len() - 1;
        for (i, (w, b)) in layers.iter().enumerate() {
            let z = h.matmul(&w.detach().t()?)?.broadcast_add(&b.detach())?;
            acts.push(h);
            h = if i == last { z } else { z.relu()? };
        }
        let logits = h.flatten_all()?.to_vec1::<f32>()?;
        // Per-sample cross-entropy gradient w.r.t. the logits: softmax - onehot (not divided by the batch).
        let mut g = vec![0f32; rows * classes];
        for ((row, gi), &y) in logits
            .chunks_exact(classes)
            .zip(g.chunks_exact_mut(classes))
            .zip(labels)
        {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
            for (k, (o, &z)) in gi.iter_mut().zip(row).enumerate() {
                *o = (z - max).exp() / sum - if k == y as usize { 1.0 } else { 0.0 };
            }
            loss_sum += f64::from(sum.ln() + max - row[y as usize]);
        }
        let mut delta = Tensor::from_vec(g, (rows, classes), &Device::Cpu)?;
        // deltas[l] = d loss_i / d z_l for every sample (rows), layer l.
        let mut deltas: Vec<Tensor> = vec![delta.clone(); layers.len()];
        for l in (0..layers.len()).rev() {
            deltas[l] = delta.clone();
            if l > 0 {
                let mask = acts[l].gt(0f32)?.to_dtype(DType::F32)?;
                delta = delta.matmul(&layers[l].0.detach())?.mul(&mask)?;
            }
        }
        let mut sq = vec![0f64; rows];
        for (d, a) in deltas.iter().zip(&acts) {
            let dn = d.sqr()?.sum(D::Minus1)?.to_vec1::<f32>()?;
            let an = a.sqr()?.sum(D::Minus1)?.to_vec1::<f32>()?;
            for ((s, dv), av) in sq.iter_mut().zip(dn).zip(an) {
                *s += f64::from(dv) * (f64::from(av) + 1.0);
            }
        }
        norms = sq.iter().map(|s| s.sqrt() as f32).collect();
        let factors: Vec<f32> = sq
            .iter()
            .map(|s| {
                let n = s.sqrt();
                if n > clip {
                    (clip / n) as f32
                } else {
                    1.0
                }
            })
            .collect();
        let c = Tensor::from_vec(factors, (rows, 1), &Device::Cpu)?;
        for (d, a) in deltas.iter().zip(&acts) {
            let scaled = d.broadcast_mul(&c)?;
            clipped.push((scaled.t()?.matmul(a)?, scaled.sum(0)?));
        }
    }
    let normal = Normal::new(0.0f64, noise_std.max(0.0))
        .map_err(|e| MlError::InvalidHyperParameter(format!("noise standard deviation {noise_std}: {e}")))?;
    let mut out = Vec::with_capacity(clipped.len());
    for (dw, db) in clipped {
        out.push((
            noisy_mean(&dw, &normal, expected_batch, rng)?,
            noisy_mean(&db, &normal, expected_batch, rng)?,
        ));
    }
    Ok(DpGradients {
        layers: out,
        norms,
        loss_sum,
    })
}

/// `(t + noise) / expected_batch`, noise drawn coordinate-wise (f64 Ziggurat normal over ChaCha20).
fn noisy_mean(t: &Tensor, normal: &Normal<f64>, expected_batch: f64, rng: &mut ChaCha20Rng) -> Result<Tensor> {
    let mut v = t.flatten_all()?.to_vec1::<f32>()?;
    let inv = 1.0 / expected_batch;
    if normal.std_dev() > 0.0 {
        for x in v.iter_mut() {
            *x = ((f64::from(*x) + normal.sample(rng)) * inv) as f32;
        }
    } else {
        for x in v.iter_mut() {
            *x = (f64::from(*x) * inv) as f32;
        }
    }
    Ok(Tensor::from_vec(v, t.shape(), t.device())?)
}

/// Applies one DP-SGD step to `model` (an MLP) on standardized rows `x` with `labels`; returns the step's
/// gradients' diagnostics (norms, loss).
#[allow(clippy::too_many_arguments)]
pub fn dp_step(
    model: &Model,
    x: &[f32],
    labels: &[u32],
    dp: &DpSgdConfig,
    expected_batch: f64,
    opt: &mut FusedAdamW,
    rng: &mut ChaCha20Rng,
) -> Result<DpGradients> {
    let layers = model.mlp_layers().ok_or_else(not_mlp)?;
    let g = dp_gradients(
        &layers,
        x,
        labels,
        model.classes(),
        dp.clip,
        dp.noise_multiplier * dp.clip,
        expected_batch,
        rng,
    )?;
    let ids: Vec<(candle_core::TensorId, Tensor)> = layers
        .iter()
        .zip(&g.layers)
        .flat_map(|((w, b), (dw, db))| [(w.id(), dw.clone()), (b.id(), db.clone())])
        .collect();
    opt.step_with(|t| ids.iter().find(|(id, _)| *id == t.id()).map(|(_, g)| g.clone()))?;
    Ok(g)
}

fn not_mlp() -> MlError {
    MlError::InvalidConfig(
        "DP-SGD training supports MLP teachers only (per-sample clipping of convolutions is not implemented); \
         use `kind = \"mlp\"` for the teacher or switch DP-SGD off"
            .into(),
    )
}

/// Trains an MLP teacher on `data` with DP-SGD for `tc.epochs` epochs (`ceil(epochs * n / dp.batch)` Poisson
/// steps; `tc.batch_size`, `tc.val_fraction` and `tc.patience` are not used), AdamW with `tc.lr` and
/// `tc.weight_decay` under the usual cosine schedule. `normalize_on` (a non-private set, e.g. the public
/// transfer set) fits the input standardization; `None` keeps the identity. `rng` drives the sampling,
/// the noise and the augmentation: seed it from the OS for a real release.
pub fn train_teacher_dp(
    cfg: &ModelConfig,
    data: &Dataset,
    tc: &TrainConfig,
    dp: &DpSgdConfig,
    normalize_on: Option<&Dataset>,
    rng: &mut ChaCha20Rng,
    progress: &Progress,
) -> Result<(Model, DpTrainStats)> {
    tc.validate()?;
    dp.validate()?;
    if !matches!(cfg, ModelConfig::Mlp { .. }) {
        return Err(not_mlp());
    }
    let (n, dim, classes) = (data.n, data.dim, data.num_classes);
    cfg.validate(dim, classes)?;
    check_features(&data.features, n, dim)?;
    check_labels(&data.labels, n, classes)?;
    let q = dp.sampling_rate(n)?;
    let steps = dp.steps(tc.epochs, n);
    let model = Model::new(cfg, dim, classes, tc.seed)?;
    let per_feature = matches!(data.kind, DataKind::Tabular);
    if let Some(src) = normalize_on {
        if src.dim != dim {
            return Err(MlError::InvalidInput(format!(
                "normalization set has dimension {}, the private data {dim}",
                src.dim
            )));
        }
        model.fit_input_normalization(&src.features, src.n, per_feature)?;
    }
    let image = match data.kind {
        DataKind::Image { height, width } if tc.augment_shift > 0 && height * width == dim => Some((height, width)),
        _ => None,
    };
    let xs = model.standardize(&data.features, n)?;
    let fill = model.standardize(&vec![0.0; dim], 1)?.first().copied().unwrap_or(0.0);
    let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = FusedAdamW::new(
        vars,
        AdamWParams {
            lr: tc.lr,
            weight_decay: tc.weight_decay,
            ..AdamWParams::default()
        },
    )?;
    let expected = q * n as f64;
    let per_epoch = (1.0 / q).ceil().max(1.0) as u64;
    let label = "teacher (DP-SGD)";
    // Progress counts epoch equivalents (1 / q steps each), like normal training.
    let epochs_total = steps.div_ceil(per_epoch);
    progress.start(label, epochs_total);
    let (mut seen, mut clipped) = (0u64, 0u64);
    let mut window: std::collections::VecDeque<(f64, usize)> = std::collections::VecDeque::new();
    for step in 0..steps {
        let frac = step as f64 / steps as f64;
        opt.set_learning_rate(tc.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())));
        let batch: Vec<usize> = (0..n).filter(|_| rng.random::<f64>() < q).collect();
        let mut rows = gather_rows(&xs, dim, &batch);
        if let Some((h, w)) = image {
            let src = rows.clone();
            random_shifts(&src, h, w, tc.augment_shift, fill, rng, &mut rows);
        }
        let ys: Vec<u32> = batch.iter().map(|&i| data.labels[i]).collect();
        let g = dp_step(&model, &rows, &ys, dp, expected, &mut opt, rng)?;
        if !g.loss_sum.is_finite() {
            progress.finish(label, "diverged");
            return Err(MlError::Diverged {
                epoch: (step / per_epoch) as usize,
                step: (step % per_epoch) as usize,
                loss: g.loss_sum as f32,
            });
        }
        seen += batch.len() as u64;
        clipped += g.norms.iter().filter(|&&v| f64::from(v) > dp.clip).count() as u64;
        window.push_back((g.loss_sum, batch.len()));
        if window.len() as u64 > per_epoch {
            window.pop_front();
        }
        if (step + 1) % per_epoch == 0 || step + 1 == steps {
            progress.advance(
                label,
                (step + 1).div_ceil(per_epoch),
                epochs_total,
                &format!("step {}/{steps} train loss {:.4}", step + 1, window_loss(&window)),
            );
        }
    }
    let stats = DpTrainStats {
        steps,
        sampling_rate: q,
        noise_multiplier: dp.noise_multiplier,
        clip: dp.clip,
        samples: n,
        mean_batch: seen as f64 / steps.max(1) as f64,
        clipped_fraction: clipped as f64 / seen.max(1) as f64,
        last_train_loss: window_loss(&window),
    };
    progress.finish(
        label,
        &format!("{steps} steps, q = {q:.4}, sigma = {}", dp.noise_multiplier),
    );
    Ok((model, stats))
}

fn window_loss(w: &std::collections::VecDeque<(f64, usize)>) -> f32 {
    let (l, c) = w.iter().fold((0f64, 0usize), |(a, b), (l, c)| (a + l, b + c));
    (l / c.max(1) as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{fused_loss, LossSpec};
    use crate::step::train_step;
    use fedistill_data::{load, LoadOptions};
    use rand::SeedableRng;

    fn tiny() -> Result<(Model, Vec<f32>, Vec<u32>)> {
        let m = Model::new(&ModelConfig::Mlp { hidden: vec![6, 5] }, 4, 3, 2)?;
        let x: Vec<f32> = (0..28).map(|i| ((i * 37 % 11) as f32 - 5.0) / 2.0).collect();
        Ok((m, x, vec![0, 2, 1, 1, 0, 2, 0]))
    }

    fn flat(layers: &[(Tensor, Tensor)]) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        for (w, b) in layers {
            v.extend(w.flatten_all()?.to_vec1::<f32>()?);
            v.extend(b.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(v)
    }

    /// Sample i's gradient of its own cross-entropy, by candle's autograd (an independent path).
    fn autograd_per_sample(m: &Model, x: &[f32], y: u32) -> Result<Vec<f32>> {
        let t = Tensor::from_slice(x, (1, 4), &Device::Cpu)?;
        let spec = LossSpec {
            classes: 3,
            teacher_probs: Vec::new(),
            weights: Vec::new(),
            hard: vec![Some(y)],
            temperature: 1.0,
            w_kd: 0.0,
            w_ce: 1.0,
        };
        let loss = fused_loss(&m.forward_standardized(&t)?, spec)?;
        let grads = loss.backward()?;
        let mut v = Vec::new();
        for (w, b) in m.mlp_layers().unwrap_or_default() {
            for p in [w, b] {
                let g = grads
                    .get(&p)
                    .ok_or_else(|| MlError::InvalidInput("no gradient".into()))?;
                v.extend(g.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(v)
    }

    /// The clipped sum equals the sum of explicitly clipped per-sample gradients (each computed alone
    /// with autograd), so every sample contributes at most C in L2; the norms are the true ones.
    #[test]
    fn clipping_bounds_each_samples_contribution() -> Result<()> {
        let (m, x, y) = tiny()?;
        let layers = m.mlp_layers().unwrap_or_default();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let per: Vec<Vec<f32>> = (0..7)
            .map(|i| autograd_per_sample(&m, &x[i * 4..(i + 1) * 4], y[i]))
            .collect::<Result<_>>()?;
        let norms: Vec<f64> = per
            .iter()
            .map(|g| g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
            .collect();
        let clip = 0.5 * norms.iter().cloned().fold(f64::INFINITY, f64::min).max(1e-3);
        let g = dp_gradients(&layers, &x, &y, 3, clip, 0.0, 1.0, &mut rng)?;
        for (ours, want) in g.norms.iter().zip(&norms) {
            assert!(
                (f64::from(*ours) - want).abs() < 1e-4 * want.max(1.0),
                "{ours} vs {want}"
            );
        }
        let mut expect = vec![0f64; per[0].len()];
        for (gi, ni) in per.iter().zip(&norms) {
            let c = (clip / ni).min(1.0);
            let contrib: f64 = gi.iter().map(|v| (f64::from(*v) * c).powi(2)).sum::<f64>().sqrt();
            assert!(
                contrib <= clip * (1.0 + 1e-6),
                "contribution {contrib} above C = {clip}"
            );
            for (e, v) in expect.iter_mut().zip(gi) {
                *e += f64::from(*v) * c;
            }
        }
        for (a, b) in flat(&g.layers)?.iter().zip(&expect) {
            assert!((f64::from(*a) - b).abs() < 1e-4, "{a} vs {b}");
        }
        // A sample alone, whatever its data, moves the clipped sum by at most C.
        let one = dp_gradients(&layers, &x[..4], &y[..1], 3, clip, 0.0, 1.0, &mut rng)?;
        let n1: f64 = flat(&one.layers)?
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(n1 <= clip * (1.0 + 1e-5), "{n1}");
        Ok(())
    }

    /// sigma = 0 and a huge C make DP-SGD's update the plain mean-gradient step on the same batch.
    #[test]
    fn without_noise_and_clipping_it_is_a_plain_step() -> Result<()> {
        let (a, x, y) = tiny()?;
        let (b, _, _) = tiny()?;
        let p = AdamWParams {
            lr: 0.01,
            ..AdamWParams::default()
        };
        let mut oa = FusedAdamW::new(a.trainable_vars().into_iter().map(|(_, v)| v).collect(), p.clone())?;
        let mut ob = FusedAdamW::new(b.trainable_vars().into_iter().map(|(_, v)| v).collect(), p)?;
        let dp = DpSgdConfig {
            noise_multiplier: 0.0,
            clip: 1e9,
            batch: 7,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        dp_step(&a, &x, &y, &dp, 7.0, &mut oa, &mut rng)?;
        let spec = LossSpec {
            classes: 3,
            teacher_probs: Vec::new(),
            weights: Vec::new(),
            hard: y.iter().map(|&v| Some(v)).collect(),
            temperature: 1.0,
            w_kd: 0.0,
            w_ce: 1.0,
        };
        train_step(&b, &Tensor::from_slice(&x, (7, 4), &Device::Cpu)?, &spec, &mut ob)?;
        for ((n, va), (_, vb)) in a.trainable_vars().iter().zip(b.trainable_vars().iter()) {
            let (pa, pb) = (va.flatten_all()?.to_vec1::<f32>()?, vb.flatten_all()?.to_vec1::<f32>()?);
            for (u, v) in pa.iter().zip(&pb) {
                assert!((u - v).abs() < 1e-6, "{n}: {u} vs {v}");
            }
        }
        Ok(())
    }

    /// On an empty Poisson batch the gradient is pure noise: its standard deviation over all coordinates
    /// must be sigma * C / B (here 1.5 * 0.8 / 10 = 0.12), and its mean 0. With ~60 coordinates per draw
    /// and 50 draws (3000 values) the relative standard error of the sd is about 1.3%; we allow 5%.
    #[test]
    fn noise_has_standard_deviation_sigma_c_over_b() -> Result<()> {
        let (m, _, _) = tiny()?;
        let layers = m.mlp_layers().unwrap_or_default();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut all = Vec::new();
        for _ in 0..50 {
            let g = dp_gradients(&layers, &[], &[], 3, 0.8, 1.5 * 0.8, 10.0, &mut rng)?;
            all.extend(flat(&g.layers)?.into_iter().map(f64::from));
        }
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let sd = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!((sd - 0.12).abs() < 0.05 * 0.12, "sd {sd}");
        assert!(mean.abs() < 4.0 * 0.12 / n.sqrt(), "mean {mean}");
        // The same seed gives the same noise; another seed another.
        let a = dp_gradients(&layers, &[], &[], 3, 0.8, 1.2, 10.0, &mut ChaCha20Rng::seed_from_u64(4))?;
        let b = dp_gradients(&layers, &[], &[], 3, 0.8, 1.2, 10.0, &mut ChaCha20Rng::seed_from_u64(4))?;
        let c = dp_gradients(&layers, &[], &[], 3, 0.8, 1.2, 10.0, &mut ChaCha20Rng::seed_from_u64(5))?;
        assert_eq!(flat(&a.layers)?, flat(&b.layers)?);
        assert_ne!(flat(&a.layers)?, flat(&c.layers)?);
        Ok(())
    }

    /// MNIST-10k, 3000 private samples, sigma = 1, C = 1, expected batch 100, 8 epochs (240 steps):
    /// the teacher still learns (test accuracy well above the 10% of chance).
    #[test]
    fn dp_teacher_learns_mnist() -> Result<()> {
        let ds = load("mnist-10k", &LoadOptions::default()).map_err(|e| MlError::InvalidInput(e.to_string()))?;
        // The file is ordered by class: shuffle (seeded) before splitting.
        let mut idx: Vec<usize> = (0..ds.n).collect();
        rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut ChaCha20Rng::seed_from_u64(0));
        let train = ds.subset(&idx[..3000]);
        let public = ds.subset(&idx[3000..5000]);
        let test = ds.subset(&idx[8000..]);
        let tc = TrainConfig {
            epochs: 8,
            lr: 2e-3,
            seed: 1,
            ..TrainConfig::default()
        };
        let dp = DpSgdConfig {
            noise_multiplier: 1.0,
            clip: 1.0,
            batch: 100,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let cfg = ModelConfig::Mlp { hidden: vec![64] };
        let (m, st) = train_teacher_dp(&cfg, &train, &tc, &dp, Some(&public), &mut rng, &Progress::hidden())?;
        assert_eq!(st.steps, 240);
        assert!((st.mean_batch - 100.0).abs() < 5.0, "{}", st.mean_batch);
        let acc = crate::metrics::evaluate(&m, &test, None)?.accuracy;
        assert!(acc > 0.6, "DP-SGD teacher accuracy {acc}");
        Ok(())
    }

    #[test]
    fn refuses_bad_settings_and_cnn_teachers() {
        let ds = Dataset {
            name: "t".into(),
            features: vec![0.0; 16 * 4],
            labels: vec![0, 1, 0, 1],
            n: 4,
            dim: 16,
            num_classes: 2,
            kind: DataKind::Image { height: 4, width: 4 },
            class_names: vec!["a".into(), "b".into()],
            targets: Vec::new(),
        };
        let tc = TrainConfig {
            epochs: 1,
            ..TrainConfig::default()
        };
        let ok = DpSgdConfig {
            noise_multiplier: 1.0,
            clip: 1.0,
            batch: 2,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let p = Progress::hidden();
        let mlp = ModelConfig::Mlp { hidden: vec![3] };
        let cases = [
            (
                DpSgdConfig {
                    noise_multiplier: 0.0,
                    ..ok.clone()
                },
                "noise_multiplier",
            ),
            (
                DpSgdConfig {
                    noise_multiplier: -1.0,
                    ..ok.clone()
                },
                "noise_multiplier",
            ),
            (
                DpSgdConfig {
                    clip: 0.0,
                    ..ok.clone()
                },
                "clip",
            ),
            (DpSgdConfig { batch: 0, ..ok.clone() }, "batch"),
            (
                DpSgdConfig { batch: 5, ..ok.clone() },
                "must not exceed the 4 private samples",
            ),
        ];
        for (dp, needle) in cases {
            let e = train_teacher_dp(&mlp, &ds, &tc, &dp, None, &mut rng, &p)
                .err()
                .map(|e| e.to_string());
            assert!(e.as_deref().is_some_and(|e| e.contains(needle)), "{dp:?}: {e:?}");
        }
        let cnn = ModelConfig::Cnn {
            channels: vec![2],
            hidden: 3,
        };
        let e = train_teacher_dp(&cnn, &ds, &tc, &ok, None, &mut rng, &p)
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("MLP teachers only")), "{e:?}");
        assert!(train_teacher_dp(&mlp, &ds, &tc, &ok, None, &mut rng, &p).is_ok());
    }
}
