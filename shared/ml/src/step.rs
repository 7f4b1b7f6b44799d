//! One optimizer step of training or distillation, with a hand-written backward pass for MLPs.
//!
//! candle's autograd computes the gradient of every matmul operand (also the input batch, which
//! needs none), and materializes each gradient as `zeros_like + add` plus transposes; for an MLP
//! that is several full-size temporaries per layer. Here the MLP gradient is computed directly:
//! dW = g^T h (already [out, in]), db = column sums, g <- (g W) * relu'(h) only below the top layer,
//! with the loss gradient coming from the fused loss in plain Rust. CNNs use candle's autograd.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, D};

use crate::error::{MlError, Result};
use crate::loss::{fused_loss, loss_and_grad, LossSpec};
use crate::model::Model;
use crate::optim::FusedAdamW;

/// g * (h > 0) in one pass: the ReLU backward with the layer's output `h`.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(g), CpuStorage::F32(h)) = (s1, s2) else {
            candle_core::bail!("relu-backward: f32 only");
        };
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("relu-backward: contiguous inputs only");
        };
        let out: Vec<f32> = g[a0..a1]
            .iter()
            .zip(&h[b0..b1])
            .map(|(&g, &h)| if h > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// The hyper-parameter ranges shared by the configs that drive [`train_step`] over shuffled batches
/// (teacher refresh, FedAvg local update): `epochs` within `epochs_ok` and `batch_size` at least 1, else
/// `counts_msg()`; `lr` finite and > 0 and `coef` (the config's second coefficient: weight decay, KD
/// weight) finite and >= 0, else `rates_msg()`. Both errors are [`MlError::InvalidHyperParameter`].
pub(crate) fn check_step_ranges(
    epochs: usize,
    epochs_ok: std::ops::RangeInclusive<usize>,
    batch_size: usize,
    (lr, coef): (f64, f64),
    counts_msg: impl FnOnce() -> String,
    rates_msg: impl FnOnce() -> String,
) -> Result<()> {
    if !epochs_ok.contains(&epochs) || batch_size == 0 {
        return Err(MlError::InvalidHyperParameter(counts_msg()));
    }
    if !(lr > 0.0 && lr.is_finite() && coef >= 0.0 && coef.is_finite()) {
        return Err(MlError::InvalidHyperParameter(rates_msg()));
    }
    Ok(())
}

/// Tests of the configs checked with [`check_step_ranges`]: the message of an
/// [`MlError::InvalidHyperParameter`]; panics on anything else.
#[cfg(test)]
pub(crate) fn invalid_hyper_parameter(r: Result<()>) -> String {
    match r {
        Err(MlError::InvalidHyperParameter(m)) => m,
        other => panic!("not an InvalidHyperParameter: {other:?}"),
    }
}

/// Runs forward, loss, backward and the optimizer on a standardized batch; returns the loss value
/// (not finite = the caller reports divergence; the weights are then left unchanged). A fused model sees
/// the batch after modality dropout (`Model::training_batch`): teacher training, refresh, distillation and
/// FedAvg all step here.
pub fn train_step(model: &Model, bx: &Tensor, spec: &LossSpec, opt: &mut FusedAdamW) -> Result<f32> {
    match model.mlp_layers() {
        Some(layers) => mlp_step(&layers, bx, spec, opt),
        None => {
            let logits = model.forward_standardized(&model.training_batch(bx)?)?;
            let loss = fused_loss(&logits, spec.clone())?;
            let lv = loss.to_scalar::<f32>()?;
            if lv.is_finite() {
                opt.step(&loss.backward()?)?;
            }
            Ok(lv)
        }
    }
}

fn mlp_step(layers: &[(Tensor, Tensor)], bx: &Tensor, spec: &LossSpec, opt: &mut FusedAdamW) -> Result<f32> {
    // Forward on detached weights: no autograd graph is built.
    let mut acts = Vec::with_capacity(layers.len());
    let mut h = bx.clone();
    let last = layers.len() - 1;
    for (i, (w, b)) in layers.iter().enumerate() {
        let z = h.matmul(&w.detach().t()?)?.broadcast_add(&b.detach())?;
        acts.push(h);
        h = if i == last { z } else { z.relu()? };
    }
    let logits = h.flatten_all()?.to_vec1::<f32>()?;
    let (loss, grad) = loss_and_grad(&logits, spec)?;
    if !loss.is_finite() {
        return Ok(loss);
    }
    let mut g = Tensor::from_vec(grad, h.shape(), h.device())?;
    let mut grads: Vec<(candle_core::TensorId, Tensor)> = Vec::with_capacity(2 * layers.len());
    for i in (0..layers.len()).rev() {
        let (w, b) = &layers[i];
        let a = &acts[i];
        grads.push((w.id(), g.t()?.matmul(a)?));
        grads.push((b.id(), g.sum(D::Minus2)?));
        if i > 0 {
            let gh = g.matmul(&w.detach())?;
            g = gh.apply_op2_no_bwd(a, &ReluBackward)?;
        }
    }
    opt.step_with(|t| grads.iter().find(|(id, _)| *id == t.id()).map(|(_, g)| g.clone()))?;
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::optim::AdamWParams;
    use candle_core::Device;

    /// The hand-written MLP backward must equal candle's autograd: one AdamW step from the same init
    /// through both paths gives the same weights.
    #[test]
    fn mlp_backward_matches_autograd() -> Result<()> {
        let cfg = ModelConfig::Mlp { hidden: vec![6, 5] };
        let a = Model::new(&cfg, 4, 3, 2)?;
        let b = Model::new(&cfg, 4, 3, 2)?;
        let x: Vec<f32> = (0..28).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let bx = Tensor::from_vec(x, (7, 4), &Device::Cpu)?;
        let spec = LossSpec {
            classes: 3,
            teacher_probs: crate::model::softmax_rows(&(0..21).map(|i| (i % 5) as f32).collect::<Vec<_>>(), 3, 2.0),
            weights: vec![1.0, 0.5, 0.2, 1.0, 0.9, 0.3, 0.7],
            hard: vec![Some(0), None, Some(2), Some(1), None, None, Some(0)],
            temperature: 2.0,
            w_kd: 0.8,
            w_ce: 0.4,
        };
        let p = AdamWParams {
            lr: 0.01,
            ..AdamWParams::default()
        };
        let mut oa = FusedAdamW::new(a.trainable_vars().into_iter().map(|(_, v)| v).collect(), p.clone())?;
        let mut ob = FusedAdamW::new(b.trainable_vars().into_iter().map(|(_, v)| v).collect(), p)?;
        let layers = a.mlp_layers().map(|l| l.len());
        assert_eq!(layers, Some(3));
        let la = train_step(&a, &bx, &spec, &mut oa)?;
        // Autograd path on b.
        let logits = b.forward_standardized(&bx)?;
        let loss = fused_loss(&logits, spec.clone())?;
        let lb = loss.to_scalar::<f32>()?;
        ob.step(&loss.backward()?)?;
        assert!((la - lb).abs() < 1e-6);
        for ((na, va), (_, vb)) in a.trainable_vars().iter().zip(b.trainable_vars().iter()) {
            let (xa, xb) = (va.flatten_all()?.to_vec1::<f32>()?, vb.flatten_all()?.to_vec1::<f32>()?);
            for (p, q) in xa.iter().zip(&xb) {
                assert!((p - q).abs() < 1e-6, "{na}: {p} vs {q}");
            }
        }
        Ok(())
    }

    /// Runs [`check_step_ranges`] with epochs allowed in 1..=10 and labelled messages.
    fn ranges(epochs: usize, batch: usize, lr: f64, coef: f64) -> std::result::Result<(), String> {
        check_step_ranges(epochs, 1..=10, batch, (lr, coef), || "counts".into(), || "rates".into())
            .map_err(|e| invalid_hyper_parameter(Err(e)))
    }

    /// Each bound of the shared range check, on both sides: the edges pass, one step past them fails
    /// with the message of the group (counts or rates) the field belongs to.
    #[test]
    fn step_ranges_accept_the_edges_and_name_the_group_of_a_bad_field() {
        assert_eq!(ranges(1, 1, 1e-9, 0.0), Ok(()));
        assert_eq!(ranges(10, 1 << 20, 10.0, 1e9), Ok(()));
        assert_eq!(ranges(0, 8, 1e-3, 0.1), Err("counts".into()));
        assert_eq!(ranges(11, 8, 1e-3, 0.1), Err("counts".into()));
        assert_eq!(ranges(5, 0, 1e-3, 0.1), Err("counts".into()));
        for lr in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
            assert_eq!(ranges(5, 8, lr, 0.1), Err("rates".into()), "lr {lr}");
        }
        for coef in [-1e-9, f64::NAN, f64::INFINITY] {
            assert_eq!(ranges(5, 8, 1e-3, coef), Err("rates".into()), "coef {coef}");
        }
        // The counts are checked first.
        assert_eq!(ranges(0, 8, f64::NAN, 0.1), Err("counts".into()));
    }
}
