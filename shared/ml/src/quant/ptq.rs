//! Post-training quantization with a calibration pass: activation ranges per layer, per-layer weight and
//! output errors on the calibration samples, and optional bias correction (the mean output shift a
//! quantized layer introduces on calibration data is added back to its bias; for a conv block, the mean
//! over samples and positions, per output channel).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{check_features, Model};

use super::model::{float_model, FloatLayer, LayerFormat, Profile, QLayer, QuantizedModel};

/// Calibration samples a CNN is calibrated on at most (the first ones): its conv blocks' inputs are im2col
/// matrices of `side * side` rows per sample, so this bounds them (28x28 images, one block: 6.4 M values).
pub const CNN_CALIBRATION_SAMPLES: usize = 256;

/// Options of [`quantize`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PtqOptions {
    /// Add the per-channel mean output error on the calibration set back to each quantized layer's bias.
    pub bias_correction: bool,
}

impl Default for PtqOptions {
    fn default() -> Self {
        PtqOptions { bias_correction: true }
    }
}

/// Calibration figures and quantization error of one weight layer (a linear layer, or a conv block as its
/// im2col matrix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Tensor name of the weights (`layers.{i}.weight`, or `convs.{i}.weight`).
    pub name: String,
    /// Storage format.
    pub format: LayerFormat,
    /// Stored `[out, in]` (padded; a conv block's `[out_ch, pad32(in_ch * 9)]`).
    pub shape: [usize; 2],
    /// Largest |activation| entering the layer on the calibration set (f32 model; a conv block's im2col
    /// rows).
    pub input_abs_max: f32,
    /// 99.9th percentile of |activation| entering the layer.
    pub input_abs_p999: f32,
    /// Largest |output| of the layer (before ReLU).
    pub output_abs_max: f32,
    /// `||W - deq(Q(W))|| / ||W||`.
    pub weight_rel_l2: f64,
    /// `||y_f32 - y_q|| / ||y_f32||` of this layer alone on the f32 model's inputs (int8 kernel).
    pub output_rel_l2: f64,
    /// Same after bias correction (equal to `output_rel_l2` when it is off).
    pub output_rel_l2_corrected: f64,
}

/// What [`quantize`] did and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PtqReport {
    /// Profile applied.
    pub profile: Profile,
    /// Calibration samples used (a CNN: at most [`CNN_CALIBRATION_SAMPLES`]).
    pub calibration_samples: usize,
    /// Whether bias correction was applied.
    pub bias_correction: bool,
    /// Per-layer figures, input side first.
    pub layers: Vec<LayerReport>,
    /// `||logits_f32 - logits_q|| / ||logits_f32||` on the calibration set (int8 kernel).
    pub logits_rel_l2: f64,
    /// Fraction of calibration samples whose argmax equals the f32 student's.
    pub top1_agreement: f64,
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn abs_stats(v: &[f32]) -> (f32, f32) {
    let mut a: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    a.sort_by(f32::total_cmp);
    let max = a.last().copied().unwrap_or(0.0);
    let idx = ((a.len() as f64 * 0.999).ceil() as usize)
        .saturating_sub(1)
        .min(a.len().saturating_sub(1));
    (max, a.get(idx).copied().unwrap_or(0.0))
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn argmax_rows(v: &[f32], c: usize) -> Vec<usize> {
    v.chunks_exact(c).map(crate::model::argmax).collect()
}

/// Quantizes an MLP or CNN student per `profile`, calibrating on `calib` (`n_calib` rows of raw features;
/// a CNN on the first [`CNN_CALIBRATION_SAMPLES`] of them).
pub fn quantize(
    model: &Model,
    profile: Profile,
    calib: &[f32],
    n_calib: usize,
    opts: &PtqOptions,
) -> Result<(QuantizedModel, PtqReport)> {
    check_features(calib, n_calib, model.in_dim())?;
    if n_calib == 0 {
        return Err(MlError::InvalidInput("calibration needs at least one sample".into()));
    }
    let float = float_model(model)?;
    let n_calib = if float.arch.is_cnn() {
        n_calib.min(CNN_CALIBRATION_SAMPLES)
    } else {
        n_calib
    };
    let reference = QuantizedModel::from_float(&float, Profile::F32)?;
    let x = reference.input_tensor(&calib[..n_calib * model.in_dim()], n_calib)?;
    // Input and output of every layer in the f32 model: (x, y_0), (relu(y_0), y_1), ...
    let ref_io = reference.layer_io(&x, false)?;
    let n_layers = float.layers.len();
    let n_front = float.arch.front_layers();
    let front_name = if float.arch.is_fused() { "encoders" } else { "convs" };
    let mut layers = Vec::with_capacity(n_layers);
    let mut reports = Vec::with_capacity(n_layers);
    for (i, (fl, (inp, y))) in float.layers.iter().zip(&ref_io).enumerate() {
        let format = profile.layer_format(i, n_layers);
        let mut q = QLayer::quantize(format, fl)?;
        let wq = to_vec(q.weight_f32()?)?;
        let weight_rel_l2 = rel_l2(&fl.w, &wq);
        let y_ref = to_vec(y)?;
        let y_q = to_vec(&q_forward(&q, inp)?)?;
        let output_rel_l2 = rel_l2(&y_ref, &y_q);
        let mut corrected = output_rel_l2;
        if opts.bias_correction && format != LayerFormat::F32 {
            // Rows of the layer's output: samples, times positions for a conv block.
            let rows = y_ref.len() / fl.out_dim.max(1);
            q = bias_correct(q, fl, &y_ref, &y_q, rows)?;
            corrected = rel_l2(&y_ref, &to_vec(&q_forward(&q, inp)?)?);
        }
        let (input_abs_max, input_abs_p999) = abs_stats(&to_vec(inp)?);
        let (output_abs_max, _) = abs_stats(&y_ref);
        reports.push(LayerReport {
            name: if i < n_front {
                format!("{front_name}.{i}.weight")
            } else {
                format!("layers.{}.weight", i - n_front)
            },
            format,
            shape: [fl.out_dim, fl.in_dim],
            input_abs_max,
            input_abs_p999,
            output_abs_max,
            weight_rel_l2,
            output_rel_l2,
            output_rel_l2_corrected: corrected,
        });
        layers.push(q);
    }
    let qm = QuantizedModel::from_parts(
        profile,
        float.arch.clone(),
        float.norm.clone(),
        float.gate.clone(),
        layers,
    )?;
    let c = qm.classes();
    let lf = to_vec(&reference.forward_padded(&x, false)?)?;
    let lq = to_vec(&qm.forward_padded(&x, true)?)?;
    let agree = argmax_rows(&lf, c)
        .iter()
        .zip(argmax_rows(&lq, c))
        .filter(|(a, b)| **a == *b)
        .count();
    let report = PtqReport {
        profile,
        calibration_samples: n_calib,
        bias_correction: opts.bias_correction,
        layers: reports,
        logits_rel_l2: rel_l2(&lf, &lq),
        top1_agreement: agree as f64 / n_calib as f64,
    };
    Ok((qm, report))
}

/// A layer's output through the int8 kernel (`QMatMul` for Q8_0 layers).
fn q_forward(q: &QLayer, x: &Tensor) -> Result<Tensor> {
    let y = match &q.q {
        Some(qt) => candle_core::Module::forward(&candle_core::quantized::QMatMul::QTensor(qt.clone()), x)?,
        None => x.matmul(&q.weight_f32()?.t()?)?,
    };
    Ok(y.broadcast_add(&q.b)?)
}

fn bias_correct(q: QLayer, fl: &FloatLayer, y_ref: &[f32], y_q: &[f32], n: usize) -> Result<QLayer> {
    let out = fl.out_dim;
    let mut shift = vec![0f64; out];
    for (r, s) in y_ref.chunks_exact(out).zip(y_q.chunks_exact(out)) {
        for j in 0..out {
            shift[j] += f64::from(r[j]) - f64::from(s[j]);
        }
    }
    let b = to_vec(&q.b)?;
    let nb: Vec<f32> = b
        .iter()
        .zip(&shift)
        .map(|(b, s)| (f64::from(*b) + s / n as f64) as f32)
        .collect();
    // The row-kernel copy (if any) holds the old bias: start it afresh.
    Ok(QLayer {
        b: Tensor::from_vec(nb, out, &Device::Cpu)?,
        rows: std::sync::OnceLock::new(),
        ..q
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    #[test]
    fn calibration_reports_every_layer_and_bias_correction_helps() {
        let cfg = ModelConfig::Mlp { hidden: vec![64, 32] };
        let m = Model::new(&cfg, 100, 4, 11).expect("model");
        let n = 64;
        let x: Vec<f32> = (0..n * 100).map(|i| ((i * 131) % 97) as f32 / 97.0).collect();
        let (q0, r0) = quantize(&m, Profile::Int8, &x, n, &PtqOptions { bias_correction: false }).expect("ptq");
        let (q1, r1) = quantize(&m, Profile::Int8, &x, n, &PtqOptions::default()).expect("ptq");
        assert_eq!(r1.layers.len(), 3);
        assert_eq!(r1.layers[0].shape, [64, 128]);
        for l in &r1.layers {
            assert!(l.weight_rel_l2 > 0.0 && l.weight_rel_l2 < 0.02, "{l:?}");
            // Correction removes the mean error on the calibration data, so it cannot increase the L2.
            assert!(l.output_rel_l2_corrected <= l.output_rel_l2 + 1e-9, "{l:?}");
        }
        assert_eq!(r0.layers[2].output_rel_l2, r0.layers[2].output_rel_l2_corrected);
        assert!(r1.top1_agreement > 0.9);
        assert!(q0.logits(&x, n).is_ok() && q1.logits(&x, n).is_ok());
        assert!(matches!(
            quantize(&m, Profile::Int8, &x, 0, &PtqOptions::default()),
            Err(MlError::InvalidInput(_))
        ));
    }
}
