//! Quantization-aware training: fine-tunes an f32 MLP or CNN student with its weights (and optionally its
//! layer inputs, a conv block's im2col rows) fake-quantized to Q8_0 in the forward pass and straight-through
//! gradients in the backward pass, so that the exported INT8 student loses less accuracy than plain
//! post-training quantization.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{check_features, Model, INPUT_SCALE, INPUT_SHIFT};

use super::conv::{im2col_block, input_maps, relu_pool_block};
use super::fakequant::fake_quant;
use super::model::Arch;

/// QAT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QatConfig {
    /// Passes over the training samples.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// AdamW learning rate (small: this is fine-tuning).
    pub lr: f64,
    /// Fake-quantize each layer's input too, as `QMatMul` quantizes activations to Q8_0.
    pub quantize_activations: bool,
    /// Seed of the shuffling.
    pub seed: u64,
}

impl Default for QatConfig {
    fn default() -> Self {
        QatConfig {
            epochs: 3,
            batch_size: 64,
            lr: 1e-4,
            quantize_activations: true,
            seed: 17,
        }
    }
}

impl QatConfig {
    fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > 1000 {
            return Err(MlError::InvalidHyperParameter(format!(
                "qat epochs {} outside 1..=1000",
                self.epochs
            )));
        }
        if self.batch_size == 0 {
            return Err(MlError::InvalidHyperParameter("qat batch_size must be >= 1".into()));
        }
        if !(self.lr > 0.0 && self.lr < 1.0) {
            return Err(MlError::InvalidHyperParameter(format!(
                "qat lr {} outside (0, 1)",
                self.lr
            )));
        }
        Ok(())
    }
}

/// What QAT fits to.
#[derive(Debug, Clone, Copy)]
pub enum QatTargets<'a> {
    /// Hard labels (cross-entropy).
    Labels(&'a [u32]),
    /// Soft labels, `n * classes` probabilities (soft cross-entropy, e.g. the federation's aggregate).
    Probs(&'a [f32]),
}

/// Loss per epoch of a QAT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QatStats {
    /// Mean training loss of each epoch (with fake quantization).
    pub epoch_loss: Vec<f32>,
}

/// The architecture of a student QAT can train: an MLP or a CNN; a fused student is refused (it is quantized
/// after training only).
fn qat_arch(model: &Model) -> Result<Arch> {
    let arch = Arch::from_config(model.config(), model.in_dim(), model.classes())?;
    if arch.is_fused() {
        return Err(MlError::InvalidConfig(
            "quantization-aware training covers MLP and CNN students; a fused student is quantized after \
             training (post-training quantization)"
                .into(),
        ));
    }
    Ok(arch)
}

/// The forward pass of the int8 student, expressed on the f32 variables of `model`: weights are
/// fake-quantized (an MLP's first layer with the input standardization folded in, exactly as export folds
/// it; a CNN's conv blocks as their `[out, in * 9]` (1-D: `[out, in * kernel]`) im2col matrices, after
/// standardizing the input as the exported CNN does).
///
/// A fused student is refused: it is quantized after training ([`super::ptq::quantize`]) only.
pub fn fake_quant_forward(model: &Model, x: &Tensor, quantize_activations: bool) -> Result<Tensor> {
    let arch = qat_arch(model)?;
    let n_layers = arch.hidden.len() + 1;
    let fold = !arch.is_cnn();
    let data = model
        .varmap()
        .data()
        .lock()
        .map_err(|_| MlError::InvalidConfig("varmap lock poisoned".into()))?;
    let get = |name: &str| -> Result<Tensor> {
        data.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| MlError::InvalidConfig(format!("model has no tensor {name}")))
    };
    let shift = get(INPUT_SHIFT)?;
    let scale = get(INPUT_SCALE)?;
    let mut h = x.clone();
    let blocks = arch.blocks();
    if let Some(first) = blocks.first() {
        let n = x.dim(0)?;
        h = input_maps(&h.broadcast_sub(&shift)?.broadcast_mul(&scale)?, first)?;
        for (i, blk) in blocks.iter().enumerate() {
            let taps = blk.in_ch() * blk.taps();
            let w = get(&format!("convs.{i}.weight"))?.reshape((blk.out_ch(), taps))?;
            let b = get(&format!("convs.{i}.bias"))?;
            // Unpadded columns: the short last Q8_0 block rounds as the zero-padded stored one.
            let cols = im2col_block(&h, blk, taps)?;
            let cols = if quantize_activations { fake_quant(&cols)? } else { cols };
            let y = cols.matmul(&fake_quant(&w)?.t()?)?.broadcast_add(&b)?;
            h = relu_pool_block(&y, n, blk)?;
        }
        h = h.flatten_from(1)?;
    }
    for i in 0..n_layers {
        let mut w = get(&format!("layers.{i}.weight"))?;
        let mut b = get(&format!("layers.{i}.bias"))?;
        if fold && i == 0 {
            w = w.broadcast_mul(&scale.unsqueeze(0)?)?;
            b = (b - w.matmul(&shift.unsqueeze(1)?)?.squeeze(1)?)?;
        }
        let wq = fake_quant(&w)?;
        let hq = if quantize_activations { fake_quant(&h)? } else { h };
        h = hq.matmul(&wq.t()?)?.broadcast_add(&b)?;
        if i + 1 != n_layers {
            h = h.relu()?;
        }
    }
    Ok(h)
}

/// Fine-tunes a copy of `model` with fake quantization; the input is `n` rows of raw features.
pub fn qat_finetune(
    model: &Model,
    x: &[f32],
    n: usize,
    targets: QatTargets<'_>,
    cfg: &QatConfig,
) -> Result<(Model, QatStats)> {
    cfg.validate()?;
    qat_arch(model)?;
    let d = model.in_dim();
    let c = model.classes();
    check_features(x, n, d)?;
    if n == 0 {
        return Err(MlError::InvalidInput("QAT needs at least one sample".into()));
    }
    match targets {
        QatTargets::Labels(l) => crate::train::check_labels(l, n, c)?,
        QatTargets::Probs(p) => crate::distill::validate_probabilities(p, n, c)?,
    }
    let student = Model::new(model.config(), d, c, 0)?;
    student.copy_weights_from(model)?;
    let vars: Vec<candle_core::Var> = student.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let dev = Device::Cpu;
    let mut stats = QatStats {
        epoch_loss: Vec::with_capacity(cfg.epochs),
    };
    for epoch in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let mut total = 0f64;
        let mut batches = 0usize;
        for (step, idx) in order.chunks(cfg.batch_size).enumerate() {
            let mut bx = Vec::with_capacity(idx.len() * d);
            for &i in idx {
                bx.extend_from_slice(&x[i * d..(i + 1) * d]);
            }
            let xt = Tensor::from_vec(bx, (idx.len(), d), &dev)?;
            let logits = fake_quant_forward(&student, &xt, cfg.quantize_activations)?;
            let loss = match targets {
                QatTargets::Labels(l) => {
                    let y: Vec<u32> = idx.iter().map(|&i| l[i]).collect();
                    candle_nn::loss::cross_entropy(&logits, &Tensor::from_vec(y, idx.len(), &dev)?)?
                }
                QatTargets::Probs(p) => {
                    let mut by = Vec::with_capacity(idx.len() * c);
                    for &i in idx {
                        by.extend_from_slice(&p[i * c..(i + 1) * c]);
                    }
                    let pt = Tensor::from_vec(by, (idx.len(), c), &dev)?;
                    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                    (pt * logp)?.sum(D::Minus1)?.mean_all()?.neg()?
                }
            };
            let lv = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(MlError::Diverged { epoch, step, loss: lv });
            }
            opt.backward_step(&loss)?;
            total += f64::from(lv);
            batches += 1;
        }
        stats.epoch_loss.push((total / batches.max(1) as f64) as f32);
    }
    Ok((student, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::quant::{Profile, QuantizedModel};

    #[test]
    fn fake_quant_forward_matches_the_exported_int8_student() {
        // The QAT forward (unpadded, standardization folded on the fly) must compute what the exported
        // int8 student computes with QMatMul; both quantize weights and activations to Q8_0.
        let cfg = ModelConfig::Mlp { hidden: vec![40] };
        let m = Model::new(&cfg, 70, 4, 9).expect("model");
        let x: Vec<f32> = (0..8 * 70).map(|i| ((i * 13) % 29) as f32 / 29.0).collect();
        m.fit_input_normalization(&x, 8, false).expect("norm");
        let xt = Tensor::from_slice(&x, (8, 70), &Device::Cpu).expect("t");
        let fq: Vec<f32> = fake_quant_forward(&m, &xt, true)
            .expect("fq")
            .flatten_all()
            .expect("f")
            .to_vec1()
            .expect("v");
        let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
        let got = q.logits_with(&x, 8, true).expect("logits");
        for (a, b) in fq.iter().zip(&got) {
            assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn qat_lowers_the_quantized_loss_and_is_seeded() {
        let cfg = ModelConfig::Mlp { hidden: vec![16] };
        let m = Model::new(&cfg, 32, 3, 2).expect("model");
        let n = 96;
        let x: Vec<f32> = (0..n * 32).map(|i| ((i * 7) % 23) as f32 / 23.0 - 0.5).collect();
        let y: Vec<u32> = (0..n)
            .map(|i| (x[i * 32] > 0.0) as u32 + (x[i * 32 + 1] > 0.2) as u32)
            .collect();
        let qc = QatConfig {
            epochs: 5,
            lr: 1e-2,
            ..QatConfig::default()
        };
        let (a, sa) = qat_finetune(&m, &x, n, QatTargets::Labels(&y), &qc).expect("qat");
        let (b, _) = qat_finetune(&m, &x, n, QatTargets::Labels(&y), &qc).expect("qat");
        assert!(sa.epoch_loss.last() < sa.epoch_loss.first(), "{:?}", sa.epoch_loss);
        assert_eq!(a.weights_digest(), b.weights_digest());
        assert_ne!(a.weights_digest(), m.weights_digest());
        let bad = QatConfig {
            epochs: 0,
            ..QatConfig::default()
        };
        assert!(matches!(
            qat_finetune(&m, &x, n, QatTargets::Labels(&y), &bad),
            Err(MlError::InvalidHyperParameter(_))
        ));
    }

    #[test]
    fn cnn_fake_quant_forward_matches_the_exported_int8_student() {
        // Two blocks (im2col widths 9 and 36, stored padded to 32 and 64) and a per-pixel standardization:
        // the QAT forward quantizes what the exported CNN quantizes, unpadded.
        let cfg = ModelConfig::Cnn {
            channels: vec![3, 4],
            hidden: 10,
        };
        let m = Model::new(&cfg, 64, 3, 4).expect("model");
        let x: Vec<f32> = (0..6 * 64).map(|i| ((i * 17) % 31) as f32 / 31.0).collect();
        m.fit_input_normalization(&x, 6, true).expect("norm");
        let xt = Tensor::from_slice(&x, (6, 64), &Device::Cpu).expect("t");
        for (activations, kernel) in [(true, true), (false, false)] {
            let fq: Vec<f32> = fake_quant_forward(&m, &xt, activations)
                .expect("fq")
                .flatten_all()
                .expect("f")
                .to_vec1()
                .expect("v");
            let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
            // With activations: W8A8 as QMatMul computes; without: the dequantized weights.
            let got = q.logits_with(&x, 6, kernel).expect("logits");
            for (a, b) in fq.iter().zip(&got) {
                assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        // And QAT trains it: the loss goes down.
        let y: Vec<u32> = (0..6).map(|i| i % 3).collect();
        let qc = QatConfig {
            epochs: 4,
            batch_size: 3,
            lr: 1e-2,
            ..QatConfig::default()
        };
        let (tuned, stats) = qat_finetune(&m, &x, 6, QatTargets::Labels(&y), &qc).expect("qat");
        assert!(
            stats.epoch_loss.last() < stats.epoch_loss.first(),
            "{:?}",
            stats.epoch_loss
        );
        assert_ne!(tuned.weights_digest(), m.weights_digest());
    }
}
