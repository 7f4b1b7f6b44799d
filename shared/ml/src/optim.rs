//! A fused AdamW: one pass over each parameter's storage per step, in safe code.
//!
//! candle-nn's `AdamW` builds about ten full-size temporaries per parameter and step (scaled moments,
//! square, sqrt, division, ...). Here the update is a candle in-place custom op (`InplaceOp2` on the
//! parameter with the gradient as source): the first and second moments live in plain `Vec<f32>`s
//! owned by the optimizer, and one loop reads the gradient and rewrites parameter, m and v together.

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Var};

use crate::error::{MlError, Result};

/// AdamW hyper-parameters (decoupled weight decay, as in candle-nn and PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    var: Var,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW whose update is one fused pass per parameter.
pub struct FusedAdamW {
    slots: Vec<Slot>,
    step: u64,
    params: AdamWParams,
}

/// The in-place update kernel: rewrites the parameter storage, reading the gradient and the moments.
struct AdamStep<'a> {
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    lr: f32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    scale_m: f32,
    scale_v: f32,
}

impl InplaceOp2 for AdamStep<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (s1, s2) else {
            candle_core::bail!("fused-adamw: only f32 parameters are supported");
        };
        let (Some((t0, t1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("fused-adamw: parameter and gradient must be contiguous");
        };
        let theta = &mut theta[t0..t1];
        let grad = &grad[g0..g1];
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if theta.len() != grad.len() || theta.len() != m.len() || m.len() != v.len() {
            candle_core::bail!("fused-adamw: parameter, gradient and moment lengths differ");
        }
        let (b1, b2, c1, c2) = (self.beta1, self.beta2, 1.0 - self.beta1, 1.0 - self.beta2);
        for (((p, &g), mi), vi) in theta.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
            let nm = b1 * *mi + c1 * g;
            let nv = b2 * *vi + c2 * g * g;
            *mi = nm;
            *vi = nv;
            let upd = (nm * self.scale_m) / ((nv * self.scale_v).sqrt() + self.eps);
            *p = *p * self.decay - self.lr * upd;
        }
        Ok(())
    }
}

impl FusedAdamW {
    /// An optimizer over `vars` (f32 tensors); moments start at zero.
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        check_params(&params)?;
        let slots = vars
            .into_iter()
            .map(|var| {
                let n = var.elem_count();
                Slot {
                    var,
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            })
            .collect();
        Ok(FusedAdamW { slots, step: 0, params })
    }

    /// Current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    /// Changes the learning rate (schedules).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// One AdamW step with the gradients in `grads`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_with(|t| grads.get(t).cloned())
    }

    /// One AdamW step with gradients looked up by parameter tensor (`None` leaves it alone); used
    /// by the hand-written MLP backward pass, which produces gradients without a `GradStore`.
    pub fn step_with(&mut self, grad_of: impl Fn(&candle_core::Tensor) -> Option<candle_core::Tensor>) -> Result<()> {
        self.step += 1;
        let p = &self.params;
        let t = self.step.min(i32::MAX as u64) as i32;
        let scale_m = (1.0 / (1.0 - p.beta1.powi(t))) as f32;
        let scale_v = (1.0 / (1.0 - p.beta2.powi(t))) as f32;
        for slot in self.slots.iter_mut() {
            let Some(g) = grad_of(slot.var.as_tensor()) else {
                continue;
            };
            let g = if g.is_contiguous() { g.clone() } else { g.contiguous()? };
            let op = AdamStep {
                m: RefCell::new(&mut slot.m),
                v: RefCell::new(&mut slot.v),
                lr: p.lr as f32,
                decay: (1.0 - p.lr * p.weight_decay) as f32,
                beta1: p.beta1 as f32,
                beta2: p.beta2 as f32,
                eps: p.eps as f32,
                scale_m,
                scale_v,
            };
            slot.var.as_tensor().inplace_op2(&g, &op)?;
        }
        Ok(())
    }
}

fn check_params(p: &AdamWParams) -> Result<()> {
    let ok = p.lr.is_finite()
        && p.lr > 0.0
        && (0.0..1.0).contains(&p.beta1)
        && (0.0..1.0).contains(&p.beta2)
        && p.eps.is_finite()
        && p.eps > 0.0
        && p.weight_decay.is_finite()
        && p.weight_decay >= 0.0;
    if ok {
        Ok(())
    } else {
        Err(MlError::InvalidHyperParameter(format!(
            "AdamW parameters out of range: {p:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use candle_nn::Optimizer;

    /// The fused update must match candle-nn's AdamW (the reference implementation) step for step.
    #[test]
    fn matches_candle_nn_adamw() -> Result<()> {
        let init: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.3).collect();
        let target: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let params = AdamWParams {
            lr: 0.05,
            weight_decay: 0.1,
            ..AdamWParams::default()
        };
        let a = Var::from_vec(init.clone(), (3, 4), &Device::Cpu)?;
        let b = Var::from_vec(init, (3, 4), &Device::Cpu)?;
        let tgt = Tensor::from_vec(target, (3, 4), &Device::Cpu)?;
        let mut fused = FusedAdamW::new(vec![a.clone()], params.clone())?;
        let mut plain = candle_nn::AdamW::new(
            vec![b.clone()],
            candle_nn::ParamsAdamW {
                lr: params.lr,
                beta1: params.beta1,
                beta2: params.beta2,
                eps: params.eps,
                weight_decay: params.weight_decay,
            },
        )?;
        for _ in 0..25 {
            let la = (a.as_tensor() - &tgt)?.sqr()?.sum_all()?;
            fused.step(&la.backward()?)?;
            let lb = (b.as_tensor() - &tgt)?.sqr()?.sum_all()?;
            plain.step(&lb.backward()?)?;
        }
        let va = a.flatten_all()?.to_vec1::<f32>()?;
        let vb = b.flatten_all()?.to_vec1::<f32>()?;
        for (x, y) in va.iter().zip(&vb) {
            assert!((x - y).abs() < 1e-5, "fused {x} vs candle-nn {y}");
        }
        Ok(())
    }

    #[test]
    fn rejects_bad_hyper_parameters() {
        let v = Var::from_vec(vec![1f32], 1, &Device::Cpu).map_err(MlError::from);
        let Ok(v) = v else { panic!("var") };
        for p in [
            AdamWParams {
                lr: 0.0,
                ..AdamWParams::default()
            },
            AdamWParams {
                lr: f64::NAN,
                ..AdamWParams::default()
            },
            AdamWParams {
                beta1: 1.0,
                ..AdamWParams::default()
            },
            AdamWParams {
                weight_decay: -1.0,
                ..AdamWParams::default()
            },
        ] {
            assert!(matches!(
                FusedAdamW::new(vec![v.clone()], p),
                Err(MlError::InvalidHyperParameter(_))
            ));
        }
    }
}
