//! Stage 2's loss: Jacobian matching (Srinivas and Fleuret 2018) in directional finite-difference form.
//!
//! candle 0.11 detaches every gradient during backprop (second-order derivatives are out of its scope; only a
//! process-wide `CANDLE_GRAD_DO_NOT_DETACH` variable changes that, for every backward pass of the process),
//! and the project's fused loss and MLP backward are first-order only. So instead of differentiating an
//! input-gradient, each sample gets a seeded random unit direction `v` and the directional derivative is
//! taken by a central difference, `J v ~ (f(x + eps v) - f(x - eps v)) / (2 eps)`: for the student it is an
//! ordinary function of its parameters (first-order backprop through two forward passes), for the teacher a
//! constant. The loss compares the two directions after normalising each to unit length.

use candle_core::{Device, Tensor, D};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{MlError, Result};
use crate::model::Model;

/// Norm below which a directional derivative counts as zero: its normalised form is then (nearly) the zero
/// vector, so a sample on which the teacher is flat in direction `v` adds a constant, not a gradient. Well
/// above the f32 rounding of a central difference of probabilities at the default epsilon (about 1e-6).
pub const JV_NORM_FLOOR: f64 = 1e-5;

/// Which output of the network is differentiated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JacobianOf {
    /// The raw logits (tests; a linear model's directional derivative is then exactly `W v`).
    Logits,
    /// The softmax at this temperature: what distillation matches, and what stage 2 uses.
    Softmax {
        /// Softmax temperature (> 0).
        temperature: f32,
    },
}

/// `n` seeded random unit directions in `d` dimensions (row-major `n * d`): Gaussian draws normalised per
/// row, so every direction on the sphere is equally likely.
pub fn unit_directions<R: Rng>(rng: &mut R, n: usize, d: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n {
        let row: Vec<f64> = (0..d).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        v.extend(row.iter().map(|x| (x / norm) as f32));
    }
    v
}

/// The central-difference directional derivative `(f(x + eps v) - f(x - eps v)) / (2 eps)` of the model's
/// output for raw inputs `x` `[n, in_dim]` along directions `v` `[n, in_dim]` (both in raw feature units):
/// `[n, classes]`. Differentiable in the model's parameters through candle's autograd (one forward pass
/// over both perturbed batches).
pub fn directional_jacobian(model: &Model, x: &Tensor, v: &Tensor, epsilon: f32, of: JacobianOf) -> Result<Tensor> {
    let n = x.dim(0)?;
    let out = model.forward(&perturbed(x, v, epsilon)?)?;
    difference(&out.narrow(0, 0, n)?, &out.narrow(0, n, n)?, epsilon, of)
}

/// `[x + eps v; x - eps v]` (`[2n, in_dim]`), after checking epsilon and the shapes.
pub(crate) fn perturbed(x: &Tensor, v: &Tensor, epsilon: f32) -> Result<Tensor> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(MlError::InvalidConfig(format!(
            "finite-difference epsilon must be finite and > 0, got {epsilon}"
        )));
    }
    if x.dims() != v.dims() {
        return Err(MlError::InvalidInput(format!(
            "directions {:?} do not match the inputs {:?}",
            v.dims(),
            x.dims()
        )));
    }
    let step = v.affine(epsilon as f64, 0.0)?;
    Ok(Tensor::cat(&[&x.add(&step)?, &x.sub(&step)?], 0)?)
}

/// The central difference of the outputs at `x + eps v` (`plus`) and `x - eps v` (`minus`), through `of`.
pub(crate) fn difference(plus: &Tensor, minus: &Tensor, epsilon: f32, of: JacobianOf) -> Result<Tensor> {
    let (plus, minus) = match of {
        JacobianOf::Logits => (plus.clone(), minus.clone()),
        JacobianOf::Softmax { temperature } => {
            crate::model::check_temperature(temperature)?;
            let t = temperature as f64;
            (
                candle_nn::ops::softmax(&plus.affine(1.0 / t, 0.0)?, D::Minus1)?,
                candle_nn::ops::softmax(&minus.affine(1.0 / t, 0.0)?, D::Minus1)?,
            )
        }
    };
    Ok(plus.sub(&minus)?.affine(1.0 / (2.0 * epsilon as f64), 0.0)?)
}

/// Each row divided by its L2 norm (rows of norm well below [`JV_NORM_FLOOR`] shrink towards zero).
fn normalize_rows(j: &Tensor) -> Result<Tensor> {
    let norm = j
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .affine(1.0, JV_NORM_FLOOR * JV_NORM_FLOOR)?
        .sqrt()?;
    Ok(j.broadcast_div(&norm)?)
}

/// The Jacobian-matching loss of a batch: the mean over samples of
/// `|| Jt v / ||Jt v|| - Js v / ||Js v|| ||^2` (in [0, 4]; 0 when the two derivatives point the same way).
pub fn jacobian_matching_loss(student_jv: &Tensor, teacher_jv: &Tensor) -> Result<Tensor> {
    if student_jv.dims() != teacher_jv.dims() {
        return Err(MlError::InvalidInput(format!(
            "student directional derivatives {:?} vs teacher {:?}",
            student_jv.dims(),
            teacher_jv.dims()
        )));
    }
    let diff = normalize_rows(teacher_jv)?.sub(&normalize_rows(student_jv)?)?;
    Ok(diff.sqr()?.sum(D::Minus1)?.mean_all()?)
}

/// Directions for a batch of `n` raw samples of `d` features, as a tensor.
pub(crate) fn directions_tensor<R: Rng>(rng: &mut R, n: usize, d: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(unit_directions(rng, n, d), (n, d), &Device::Cpu)?)
}
