//! The distillation loss as one fused candle op (forward and gradient in a single pass over the logits).
//!
//! loss = w_kd * T^2 * sum_i c_i KL(softmax(t_i/T) || softmax(s_i/T)) / sum_i c_i
//!      + w_ce * mean over samples with a hard label of CE(s_i, y_i)
//! where c_i is the per-sample confidence weight. Its gradient with respect to the student logits is
//! w_kd * T * c_i / sum c * (softmax(s_i/T) - softmax(t_i/T)) + w_ce / n_hard * (softmax(s_i) - onehot(y_i)),
//! computed during the forward pass and handed back by `bwd`, so training builds no temporaries for
//! the loss. Teacher training uses the same op with w_kd = 0.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};

use crate::error::{MlError, Result};
use crate::model::softmax_into;

/// Everything the loss needs besides the student logits.
#[derive(Clone, Debug)]
pub struct LossSpec {
    /// Classes per row.
    pub classes: usize,
    /// Teacher probabilities at temperature `temperature`, `n * classes` (empty when `w_kd == 0`).
    pub teacher_probs: Vec<f32>,
    /// Per-sample confidence weights (length n; empty means all 1).
    pub weights: Vec<f32>,
    /// Hard labels per sample, `None` where the sample has none (public or replayed samples).
    pub hard: Vec<Option<u32>>,
    /// Softmax temperature of the KD term.
    pub temperature: f32,
    /// Weight of the KD term.
    pub w_kd: f32,
    /// Weight of the hard-label cross-entropy term.
    pub w_ce: f32,
}

/// Loss value and gradient (d loss / d logits, `n * classes`) of one batch, in plain Rust.
pub fn loss_and_grad(logits: &[f32], spec: &LossSpec) -> Result<(f32, Vec<f32>)> {
    let c = spec.classes;
    if c == 0 || !logits.len().is_multiple_of(c) {
        return Err(MlError::InvalidInput(format!(
            "{} logits are not rows of {c}",
            logits.len()
        )));
    }
    let n = logits.len() / c;
    let use_kd = spec.w_kd != 0.0;
    if use_kd && spec.teacher_probs.len() != n * c {
        return Err(MlError::InvalidInput(format!(
            "{} teacher probabilities, expected {}",
            spec.teacher_probs.len(),
            n * c
        )));
    }
    if !spec.weights.is_empty() && spec.weights.len() != n {
        return Err(MlError::InvalidInput(format!(
            "{} confidence weights, expected {n}",
            spec.weights.len()
        )));
    }
    if !spec.hard.is_empty() && spec.hard.len() != n {
        return Err(MlError::InvalidInput(format!(
            "{} hard labels, expected {n}",
            spec.hard.len()
        )));
    }
    let t = spec.temperature;
    let weight = |i: usize| if spec.weights.is_empty() { 1.0 } else { spec.weights[i] };
    let wsum: f32 = (0..n).map(weight).sum();
    let n_hard = spec.hard.iter().filter(|h| h.is_some()).count();
    let kd_scale = if use_kd && wsum > 0.0 { spec.w_kd / wsum } else { 0.0 };
    let ce_scale = if spec.w_ce != 0.0 && n_hard > 0 {
        spec.w_ce / n_hard as f32
    } else {
        0.0
    };
    let mut grad = vec![0f32; n * c];
    let mut ps = vec![0f32; c];
    let mut loss = 0f64;
    for i in 0..n {
        let z = &logits[i * c..(i + 1) * c];
        let g = &mut grad[i * c..(i + 1) * c];
        if kd_scale != 0.0 {
            let pt = &spec.teacher_probs[i * c..(i + 1) * c];
            // log softmax(z/T) computed stably.
            let max = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = z.iter().map(|&v| ((v - max) / t).exp()).sum::<f32>().ln();
            let wi = weight(i) * kd_scale;
            let mut kl = 0f32;
            for k in 0..c {
                let log_ps = (z[k] - max) / t - lse;
                if pt[k] > 0.0 {
                    kl += pt[k] * (pt[k].ln() - log_ps);
                }
                g[k] += wi * t * (log_ps.exp() - pt[k]);
            }
            loss += (wi * t * t * kl) as f64;
        }
        if ce_scale != 0.0 {
            if let Some(y) = spec.hard.get(i).copied().flatten() {
                let y = y as usize;
                if y >= c {
                    return Err(MlError::InvalidInput(format!("label {y} of sample {i} >= classes {c}")));
                }
                softmax_into(z, 1.0, &mut ps);
                loss += (-(ps[y].max(f32::MIN_POSITIVE)).ln() * ce_scale) as f64;
                for k in 0..c {
                    g[k] += ce_scale * (ps[k] - if k == y { 1.0 } else { 0.0 });
                }
            }
        }
    }
    Ok((loss as f32, grad))
}

/// The fused op: forward returns the scalar loss and caches the gradient for `bwd`.
struct FusedLoss {
    spec: Arc<LossSpec>,
    grad: Mutex<Option<Vec<f32>>>,
}

impl CustomOp1 for FusedLoss {
    fn name(&self) -> &'static str {
        "fused-kd-loss"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fused-kd-loss: logits must be f32");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused-kd-loss: logits must be contiguous");
        };
        let (loss, grad) =
            loss_and_grad(&data[a..b], &self.spec).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        if let Ok(mut g) = self.grad.lock() {
            *g = Some(grad);
        }
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let cached = self.grad.lock().ok().and_then(|mut g| g.take());
        let grad = match cached {
            Some(g) => g,
            None => {
                let logits = arg.flatten_all()?.to_vec1::<f32>()?;
                loss_and_grad(&logits, &self.spec)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                    .1
            }
        };
        let g = Tensor::from_vec(grad, arg.shape(), arg.device())?;
        Ok(Some(g.broadcast_mul(grad_res)?))
    }
}

/// Applies the fused loss to student logits `[n, classes]`; the result is a scalar tensor that
/// back-propagates into the logits.
pub fn fused_loss(logits: &Tensor, spec: LossSpec) -> Result<Tensor> {
    let logits = if logits.is_contiguous() {
        logits.clone()
    } else {
        logits.contiguous()?
    };
    let op = FusedLoss {
        spec: Arc::new(spec),
        grad: Mutex::new(None),
    };
    Ok(logits.apply_op1(op)?)
}

/// The same loss composed from stock candle ops (log_softmax, sums): the baseline of the benchmark
/// and an independent implementation for the tests. `teacher_probs` is `[n, c]`, `weights` `[n]`.
pub fn composed_kd_loss(
    logits: &Tensor,
    teacher_probs: &Tensor,
    weights: &Tensor,
    temperature: f64,
    w_kd: f64,
) -> Result<Tensor> {
    let log_ps = candle_nn::ops::log_softmax(&(logits / temperature)?, D::Minus1)?;
    let log_pt = teacher_probs.clamp(1e-30f32, 1f32)?.log()?;
    let kl = (teacher_probs * (log_pt - log_ps)?)?.sum(D::Minus1)?;
    let wsum = weights.sum_all()?;
    let kd = (kl * weights)?.sum_all()?.broadcast_div(&wsum)?;
    Ok((kd * (w_kd * temperature * temperature))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn spec(tp: Vec<f32>, weights: Vec<f32>, hard: Vec<Option<u32>>, t: f32, w_kd: f32, w_ce: f32) -> LossSpec {
        LossSpec {
            classes: 3,
            teacher_probs: tp,
            weights,
            hard,
            temperature: t,
            w_kd,
            w_ce,
        }
    }

    /// Expected values computed once with python3 + numpy (float64):
    /// s = [[1,2,0.5],[0,-1,3]], t = [[2,1,0],[0.5,0.5,2]], T = 2, w = [0.8, 0.3]
    /// pt = softmax(t/T); ps = softmax(s/T); kl_i = sum pt*(log pt - log ps)
    /// kd = T^2 * sum(w*kl)/sum(w) = 0.4429449117 ; grad = T*w_i/sum(w)*(ps-pt) =
    /// [[-0.31232644,0.25284128,0.05948516],[-0.04289655,-0.07814818,0.12104473]]
    #[test]
    fn kd_loss_and_gradient_match_numpy() -> Result<()> {
        let s = vec![1.0, 2.0, 0.5, 0.0, -1.0, 3.0];
        let t_logits = vec![2.0, 1.0, 0.0, 0.5, 0.5, 2.0];
        let pt = crate::model::softmax_rows(&t_logits, 3, 2.0);
        let sp = spec(pt, vec![0.8, 0.3], vec![], 2.0, 1.0, 0.0);
        let (loss, grad) = loss_and_grad(&s, &sp)?;
        assert!((loss - 0.442_944_9).abs() < 1e-5, "loss {loss}");
        let expect = [
            -0.312_326_4,
            0.252_841_3,
            0.059_485_2,
            -0.042_896_6,
            -0.078_148_2,
            0.121_044_7,
        ];
        for (g, e) in grad.iter().zip(expect) {
            assert!((g - e).abs() < 1e-5, "grad {g} vs {e}");
        }
        Ok(())
    }

    /// Hard-label CE: expected from numpy: s as above, y = [1, 2], w_ce = 1:
    /// mean(-log softmax(s)[y]) = 0.2651263439 ; grad row 0 = (softmax(s0) - e1)/2.
    #[test]
    fn ce_term_matches_numpy() -> Result<()> {
        let s = vec![1.0, 2.0, 0.5, 0.0, -1.0, 3.0];
        let sp = spec(vec![], vec![], vec![Some(1), Some(2)], 1.0, 0.0, 1.0);
        let (loss, grad) = loss_and_grad(&s, &sp)?;
        assert!((loss - 0.265_126_3).abs() < 1e-5, "loss {loss}");
        let p0 = crate::model::softmax_rows(&s[..3], 3, 1.0);
        assert!((grad[1] - (p0[1] - 1.0) / 2.0).abs() < 1e-6);
        Ok(())
    }

    /// The fused op's backward equals autodiff through the composed candle ops and a finite difference.
    #[test]
    fn fused_gradient_matches_autodiff_and_finite_difference() -> Result<()> {
        let s = vec![0.3f32, -1.2, 2.0, 0.7, 0.1, -0.4];
        let pt = vec![0.2f32, 0.5, 0.3, 0.6, 0.3, 0.1];
        let w = vec![1.0f32, 0.5];
        let dev = Device::Cpu;
        let v = Var::from_vec(s.clone(), (2, 3), &dev)?;
        let loss = fused_loss(v.as_tensor(), spec(pt.clone(), w.clone(), vec![], 3.0, 0.7, 0.0))?;
        let g1 = loss
            .backward()?
            .get(v.as_tensor())
            .map(|g| g.flatten_all())
            .transpose()?;
        let g1 = g1.map(|g| g.to_vec1::<f32>()).transpose()?.unwrap_or_default();
        let pt_t = Tensor::from_vec(pt.clone(), (2, 3), &dev)?;
        let w_t = Tensor::from_vec(w.clone(), 2, &dev)?;
        let reference = composed_kd_loss(v.as_tensor(), &pt_t, &w_t, 3.0, 0.7)?;
        assert!((reference.to_scalar::<f32>()? - loss.to_scalar::<f32>()?).abs() < 1e-5);
        let g2 = reference
            .backward()?
            .get(v.as_tensor())
            .map(|g| g.flatten_all())
            .transpose()?;
        let g2 = g2.map(|g| g.to_vec1::<f32>()).transpose()?.unwrap_or_default();
        assert_eq!(g1.len(), 6);
        for (a, b) in g1.iter().zip(&g2) {
            assert!((a - b).abs() < 1e-5, "fused {a} vs autodiff {b}");
        }
        let sp = spec(pt, w, vec![], 3.0, 0.7, 0.0);
        for k in 0..6 {
            let h = 1e-2f32;
            let mut plus = s.clone();
            plus[k] += h;
            let mut minus = s.clone();
            minus[k] -= h;
            let fd = (loss_and_grad(&plus, &sp)?.0 - loss_and_grad(&minus, &sp)?.0) / (2.0 * h);
            assert!((fd - g1[k]).abs() < 2e-3, "finite difference {fd} vs {}", g1[k]);
        }
        Ok(())
    }

    #[test]
    fn zero_teacher_probability_contributes_no_kl() -> Result<()> {
        let s = vec![0.0f32, 0.0, 0.0];
        let sp = LossSpec {
            classes: 3,
            teacher_probs: vec![0.5, 0.5, 0.0],
            weights: vec![],
            hard: vec![],
            temperature: 1.0,
            w_kd: 1.0,
            w_ce: 0.0,
        };
        let (loss, grad) = loss_and_grad(&s, &sp)?;
        // KL([.5,.5,0] || uniform) = ln(3/2)
        assert!((loss - 1.5f32.ln()).abs() < 1e-6);
        assert!(grad.iter().all(|g| g.is_finite()));
        Ok(())
    }
}
