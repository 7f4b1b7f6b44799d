//! Stage 2's loss: Jacobian matching (Srinivas and Fleuret 2018).
//!
//! The exact form, used when the student is an MLP: per sample, the gradient with respect to the raw inputs
//! of the probability (at the stage's temperature) of the class the teacher ranks first, for the teacher and
//! for the student, each normalised to unit length over the inputs, and the squared distance between the two.
//! The teacher's gradient is computed by candle's backprop ([`input_gradient`]: the inputs become a variable,
//! one backward pass; any architecture). The student's must itself be differentiated during training, and
//! candle 0.11 detaches every gradient during backprop (second-order derivatives are out of its scope; only a
//! process-wide `CANDLE_GRAD_DO_NOT_DETACH` variable changes that, for every backward pass of the process). So
//! for an MLP student the backward pass is written out in candle operations ([`mlp_input_gradient`]: the
//! transposed weights applied in reverse order, through the detached ReLU masks): the same numbers as candle's
//! backprop (a unit test checks them against it), and an ordinary first-order function of the weights, which
//! candle's autograd then trains.
//!
//! The fallback, for a convolutional or fused student: each sample gets a seeded random unit direction `v` and
//! the directional derivative is taken by a central difference, `J v ~ (f(x + eps v) - f(x - eps v)) / (2 eps)`:
//! for the student an ordinary function of its parameters (first-order backprop through two forward passes),
//! for the teacher a constant. The loss compares the two directions after normalising each over the classes.

use candle_core::{DType, Device, Tensor, Var, D};
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
    Ok(through(plus, of)?
        .sub(&through(minus, of)?)?
        .affine(1.0 / (2.0 * epsilon as f64), 0.0)?)
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

/// The model's output through `of`: the logits, or the softmax at the temperature.
fn through(logits: &Tensor, of: JacobianOf) -> Result<Tensor> {
    Ok(match of {
        JacobianOf::Logits => logits.clone(),
        JacobianOf::Softmax { temperature } => {
            crate::model::check_temperature(temperature)?;
            candle_nn::ops::softmax(&logits.affine(1.0 / temperature as f64, 0.0)?, D::Minus1)?
        }
    })
}

fn check_weights(model: &Model, x: &Tensor, u: &Tensor) -> Result<()> {
    let n = x.dim(0)?;
    if x.dims() != [n, model.in_dim()] || u.dims() != [n, model.classes()] {
        return Err(MlError::InvalidInput(format!(
            "inputs {:?} and output weights {:?} do not fit a model of {} inputs and {} classes",
            x.dims(),
            u.dims(),
            model.in_dim(),
            model.classes()
        )));
    }
    Ok(())
}

/// By candle's backprop: the gradient with respect to the raw inputs `x` `[n, in_dim]` of
/// `sum_k u_k g_k(x)` per sample, where `g` is the model's output through `of` and `u` `[n, classes]` weighs
/// the outputs (one-hot: one class's gradient). `[n, in_dim]`, detached: a constant (the teacher's side).
/// Any architecture.
pub fn input_gradient(model: &Model, x: &Tensor, u: &Tensor, of: JacobianOf) -> Result<Tensor> {
    check_weights(model, x, u)?;
    let xv = Var::from_tensor(&x.detach().to_dtype(DType::F32)?)?;
    let out = through(&model.forward(xv.as_tensor())?, of)?;
    let grads = out.mul(&u.detach())?.sum_all()?.backward()?;
    let g = grads
        .get(xv.as_tensor())
        .ok_or_else(|| MlError::InvalidInput("the output does not depend on the inputs".into()))?;
    Ok(g.detach())
}

/// For an MLP: the same gradient as [`input_gradient`], computed by the backward pass written out in candle
/// operations: `delta = dg/dz` at the logits (`u`, or `p * (u - <p, u>) / T` through the softmax), then
/// `delta <- (delta W_l) * 1[pre-activation_{l-1} > 0]` down the layers (the masks detached: a ReLU's
/// derivative is 0 almost everywhere), then times the input scale. The result stays attached to the weights,
/// so first-order autograd through it trains the model's input gradients. `None` for a non-MLP.
pub fn mlp_input_gradient(model: &Model, x: &Tensor, u: &Tensor, of: JacobianOf) -> Result<Option<Tensor>> {
    let Some(layers) = model.mlp_layers() else {
        return Ok(None);
    };
    check_weights(model, x, u)?;
    let (shift, scale) = model.input_standardization();
    let mut h = x.broadcast_sub(shift)?.broadcast_mul(scale)?;
    let mut masks = Vec::with_capacity(layers.len());
    let last = layers.len() - 1;
    for (i, (w, b)) in layers.iter().enumerate() {
        let z = h.matmul(&w.t()?)?.broadcast_add(b)?;
        if i == last {
            h = z;
        } else {
            masks.push(z.gt(0.0)?.to_dtype(DType::F32)?.detach());
            h = z.relu()?;
        }
    }
    let mut delta = match of {
        JacobianOf::Logits => u.clone(),
        JacobianOf::Softmax { temperature } => {
            let p = through(&h, of)?;
            let pu = p.mul(u)?.sum_keepdim(D::Minus1)?;
            p.mul(&u.broadcast_sub(&pu)?)?.affine(1.0 / temperature as f64, 0.0)?
        }
    };
    for (i, (w, _)) in layers.iter().enumerate().rev() {
        delta = delta.matmul(w)?;
        if i > 0 {
            delta = delta.mul(&masks[i - 1])?;
        }
    }
    Ok(Some(delta.broadcast_mul(scale)?))
}

/// One-hot rows `[rows.len(), classes]` of the class each given row of `logits` (row-major, `classes` wide)
/// ranks first: the output whose input gradient stage 2 matches.
pub(crate) fn top_class_onehot(logits: &[f32], classes: usize, rows: &[usize]) -> Result<Tensor> {
    let mut u = vec![0f32; rows.len() * classes];
    for (k, &r) in rows.iter().enumerate() {
        let row = &logits[r * classes..(r + 1) * classes];
        let top = row
            .iter()
            .enumerate()
            .fold(0, |best, (c, v)| if *v > row[best] { c } else { best });
        u[k * classes + top] = 1.0;
    }
    Ok(Tensor::from_vec(u, (rows.len(), classes), &Device::Cpu)?)
}
