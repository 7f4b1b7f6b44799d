//! Regression on candle: a model with one output predicts a standardized target, `(y - mean) / std` with
//! the task card's statistics. Training and distillation fit it with MSE or Huber, optionally under the
//! card's physical constraints; evaluation reports MAE, RMSE and R² in the target's units and the measured
//! violation rates (docs/ml.md, "Regression and physical constraints").
//!
//! The constraint loss follows the spirit of Gupta et al. (2019, "How to incorporate monotonicity in deep
//! networks while preserving flexibility"): for every row of a batch and every monotone feature `j` with
//! sign `s` (+1 increasing, -1 decreasing), the pair (x, x + h e_j) is penalized by
//! `relu(-s (f(x + h e_j) - f(x)) / h)`, the finite-difference slope in the wrong direction; predictions
//! outside the output bounds are penalized by the squared distance to the bound. The violation rate counts
//! the pairs whose prediction moves the wrong way by more than [`VIOLATION_TOLERANCE`].

use candle_core::{Device, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{check_features, Model};
use crate::optim::{AdamWParams, FusedAdamW};

/// A predictor of standardized values for `n` rows (the float model or its INT8 version).
pub type Predict<'a> = &'a dyn Fn(&[f32], usize) -> Result<Vec<f32>>;

/// A pair whose prediction moves the wrong way by more than this (standardized units, i.e. this many
/// target standard deviations) counts as a violation; smaller moves are rounding.
pub const VIOLATION_TOLERANCE: f32 = 1e-3;

/// The fit term of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RegressionLoss {
    /// Mean squared error.
    Mse,
    /// Huber loss with threshold `delta` (standardized units): quadratic within it, linear beyond.
    Huber {
        /// The threshold, > 0.
        delta: f32,
    },
}

/// The physical constraints of a task, in model input space and standardized target units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// `(model input, sign)`: the prediction rises with the input (sign +1) or falls (-1).
    pub monotone: Vec<(usize, f32)>,
    /// Lowest allowed standardized prediction.
    pub min: Option<f32>,
    /// Highest allowed standardized prediction.
    pub max: Option<f32>,
}

impl Constraints {
    /// Whether there is anything to penalize or measure.
    pub fn is_empty(&self) -> bool {
        self.monotone.is_empty() && self.min.is_none() && self.max.is_none()
    }
}

/// How a regressor is fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionConfig {
    /// The fit term.
    pub loss: RegressionLoss,
    /// Passes over the rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Weight of the constraint loss (0: off).
    pub constraint_weight: f32,
    /// The finite-difference step `h` of the monotone pairs, in model input units (the card's scaled
    /// features: 0.5 is half a standard deviation).
    pub step: f32,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for RegressionConfig {
    fn default() -> Self {
        RegressionConfig {
            loss: RegressionLoss::Mse,
            epochs: 60,
            batch_size: 32,
            lr: 3e-3,
            constraint_weight: 0.0,
            step: 0.5,
            seed: 0,
        }
    }
}

impl RegressionConfig {
    /// Refuses values that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::InvalidHyperParameter(m));
        if !(1..=10_000).contains(&self.epochs) || self.batch_size == 0 {
            return bad(format!(
                "regression epochs {} must be in 1..=10000 and batch_size {} at least 1",
                self.epochs, self.batch_size
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("regression lr {} must be a finite number > 0", self.lr));
        }
        if !(self.constraint_weight.is_finite() && self.constraint_weight >= 0.0) {
            return bad(format!(
                "constraint_weight {} must be a finite number >= 0",
                self.constraint_weight
            ));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return bad(format!("constraint step {} must be a finite number > 0", self.step));
        }
        if let RegressionLoss::Huber { delta } = self.loss {
            if !(delta.is_finite() && delta > 0.0) {
                return bad(format!("huber delta {delta} must be a finite number > 0"));
            }
        }
        Ok(())
    }
}

/// What a fit did: the last epoch's mean fit and constraint terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FitStats {
    /// Mean fit loss of the last epoch.
    pub fit: f32,
    /// Mean constraint loss of the last epoch (0 when off).
    pub constraint: f32,
}

/// Checks a model and data agree: one output, `n * in_dim` finite features, `n` finite targets.
fn check(model: &Model, x: &[f32], y: &[f32], n: usize) -> Result<()> {
    if model.classes() != 1 {
        return Err(MlError::InvalidInput(format!(
            "a regressor has one output, this model has {}",
            model.classes()
        )));
    }
    check_features(x, n, model.in_dim())?;
    if y.len() != n {
        return Err(MlError::InvalidInput(format!("{} targets for {n} rows", y.len())));
    }
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(MlError::InvalidInput(format!("target {i} is not finite")));
    }
    Ok(())
}

/// Checks the constraints name inputs the model has.
fn check_constraints(model: &Model, c: &Constraints) -> Result<()> {
    if let Some((j, _)) = c.monotone.iter().find(|(j, _)| *j >= model.in_dim()) {
        return Err(MlError::InvalidInput(format!(
            "a monotone constraint names input {j}; the model has {}",
            model.in_dim()
        )));
    }
    Ok(())
}

/// The fit term of one batch: `pred` and `y` are `[b]`.
fn fit_term(pred: &Tensor, y: &Tensor, loss: RegressionLoss) -> Result<Tensor> {
    let diff = (pred - y)?;
    Ok(match loss {
        RegressionLoss::Mse => diff.sqr()?.mean_all()?,
        RegressionLoss::Huber { delta } => {
            let a = diff.abs()?;
            let quad = a.clamp(0f32, delta)?;
            let lin = (&a - &quad)?;
            ((quad.sqr()? * 0.5)? + (lin * f64::from(delta))?)?.mean_all()?
        }
    })
}

/// The constraint term of one batch of raw inputs `bx` `[b, d]` with predictions `pred` `[b]`.
fn constraint_term(model: &Model, bx: &Tensor, pred: &Tensor, c: &Constraints, step: f32) -> Result<Tensor> {
    let d = model.in_dim();
    let mut total = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
    for &(j, sign) in &c.monotone {
        let mut delta = vec![0f32; d];
        delta[j] = step;
        let shifted = bx.broadcast_add(&Tensor::from_vec(delta, (1, d), &Device::Cpu)?)?;
        let moved = model.forward(&shifted)?.squeeze(D::Minus1)?;
        let slope = ((moved - pred)? * f64::from(-sign / step))?;
        total = (total + slope.relu()?.mean_all()?)?;
    }
    if let Some(hi) = c.max {
        total = (total + (pred - f64::from(hi))?.relu()?.sqr()?.mean_all()?)?;
    }
    if let Some(lo) = c.min {
        total = (total + (pred.neg()? + f64::from(lo))?.relu()?.sqr()?.mean_all()?)?;
    }
    Ok(total)
}

/// Fits `model` (one output) to the standardized targets `y` of the `n` rows `x` (raw model inputs, the
/// card's encoding) with `cfg`'s loss, plus `cfg.constraint_weight` times the constraint loss of
/// `constraints` on the same rows. The model's input standardization is left as it is.
pub fn fit_regressor(
    model: &Model,
    x: &[f32],
    y: &[f32],
    n: usize,
    cfg: &RegressionConfig,
    constraints: &Constraints,
) -> Result<FitStats> {
    cfg.validate()?;
    check(model, x, y, n)?;
    check_constraints(model, constraints)?;
    if n == 0 {
        return Err(MlError::InvalidInput("no rows to fit".into()));
    }
    let d = model.in_dim();
    let vars = model.trainable_vars().into_iter().map(|(_, v)| v).collect();
    let mut opt = FusedAdamW::new(
        vars,
        AdamWParams {
            lr: cfg.lr,
            weight_decay: 1e-4,
            ..AdamWParams::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5E67_2E55);
    let mut order: Vec<usize> = (0..n).collect();
    let use_constraints = cfg.constraint_weight > 0.0 && !constraints.is_empty();
    let mut stats = FitStats {
        fit: f32::NAN,
        constraint: 0.0,
    };
    for _ in 0..cfg.epochs {
        order.shuffle(&mut rng);
        let (mut fit_sum, mut con_sum, mut batches) = (0f64, 0f64, 0usize);
        for batch in order.chunks(cfg.batch_size) {
            let b = batch.len();
            let mut bx = Vec::with_capacity(b * d);
            let mut by = Vec::with_capacity(b);
            for &i in batch {
                bx.extend_from_slice(&x[i * d..(i + 1) * d]);
                by.push(y[i]);
            }
            let bx = Tensor::from_vec(bx, (b, d), &Device::Cpu)?;
            let by = Tensor::from_vec(by, b, &Device::Cpu)?;
            let pred = model.forward(&bx)?.squeeze(D::Minus1)?;
            let fit = fit_term(&pred, &by, cfg.loss)?;
            let loss = if use_constraints {
                let con = constraint_term(model, &bx, &pred, constraints, cfg.step)?;
                con_sum += f64::from(con.to_scalar::<f32>()?);
                (&fit + (con * f64::from(cfg.constraint_weight))?)?
            } else {
                fit.clone()
            };
            let lv = loss.to_scalar::<f32>()?;
            if !lv.is_finite() {
                return Err(MlError::InvalidInput(
                    "the regression loss diverged (not finite): lower the learning rate".into(),
                ));
            }
            opt.step(&loss.backward()?)?;
            fit_sum += f64::from(fit.to_scalar::<f32>()?);
            batches += 1;
        }
        stats = FitStats {
            fit: (fit_sum / batches.max(1) as f64) as f32,
            constraint: (con_sum / batches.max(1) as f64) as f32,
        };
    }
    Ok(stats)
}

/// The standardized predictions of `model` for `n` rows.
pub fn predict(model: &Model, x: &[f32], n: usize) -> Result<Vec<f32>> {
    if model.classes() != 1 {
        return Err(MlError::InvalidInput(format!(
            "a regressor has one output, this model has {}",
            model.classes()
        )));
    }
    model.logits(x, n)
}

/// Error and fit of predictions against targets, in the target's units, and the constraint checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination, 1 - SSE / SST (against the targets' own mean; NaN for constant
    /// targets).
    pub r2: f64,
    /// Share of monotone pairs (row, constrained feature) whose prediction moved the wrong way (NaN
    /// without monotone constraints).
    pub violation_rate: f64,
    /// Share of rows predicted outside the output bounds (NaN without bounds).
    pub bound_violation_rate: f64,
}

impl RegressionMetrics {
    /// The metrics as named values (`mae`, `rmse`, `r2`, `violation_rate`, `bound_violation_rate`; NaN
    /// ones left out), the names the degradation guard and the round reports use.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, f64> {
        [
            ("mae", self.mae),
            ("rmse", self.rmse),
            ("r2", self.r2),
            ("violation_rate", self.violation_rate),
            ("bound_violation_rate", self.bound_violation_rate),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// MAE, RMSE and R² of `pred` (target units) against `targets`.
pub fn error_metrics(pred: &[f64], targets: &[f32]) -> (f64, f64, f64) {
    let n = pred.len().min(targets.len());
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = targets.iter().map(|&t| f64::from(t)).sum::<f64>() / n as f64;
    let (mut abs, mut sse, mut sst) = (0.0, 0.0, 0.0);
    for (&p, &t) in pred.iter().zip(targets) {
        let t = f64::from(t);
        abs += (p - t).abs();
        sse += (p - t) * (p - t);
        sst += (t - mean) * (t - mean);
    }
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { f64::NAN };
    (abs / n as f64, (sse / n as f64).sqrt(), r2)
}

/// The share of monotone pairs `(x, x + step e_j)` over the `n` rows `x` whose prediction by `predict`
/// (standardized) moves against the constraint's sign by more than [`VIOLATION_TOLERANCE`]; NaN without
/// monotone constraints. `predict` may be the float model or its INT8 version.
pub fn violation_rate(
    predict: Predict<'_>,
    x: &[f32],
    n: usize,
    dim: usize,
    c: &Constraints,
    step: f32,
) -> Result<f64> {
    if c.monotone.is_empty() || n == 0 {
        return Ok(f64::NAN);
    }
    check_features(x, n, dim)?;
    let base = predict(x, n)?;
    let mut violations = 0usize;
    for &(j, sign) in &c.monotone {
        if j >= dim {
            return Err(MlError::InvalidInput(format!(
                "a monotone constraint names input {j}; rows have {dim}"
            )));
        }
        let mut shifted = x.to_vec();
        shifted.chunks_exact_mut(dim).for_each(|r| r[j] += step);
        let moved = predict(&shifted, n)?;
        violations += base
            .iter()
            .zip(&moved)
            .filter(|(b, m)| sign * (*m - *b) < -VIOLATION_TOLERANCE)
            .count();
    }
    Ok(violations as f64 / (n * c.monotone.len()) as f64)
}

/// The share of standardized predictions outside the bounds (NaN without bounds).
pub fn bound_violation_rate(pred: &[f32], c: &Constraints) -> f64 {
    if (c.min.is_none() && c.max.is_none()) || pred.is_empty() {
        return f64::NAN;
    }
    let out = pred
        .iter()
        .filter(|&&p| {
            c.min.is_some_and(|lo| p < lo - VIOLATION_TOLERANCE) || c.max.is_some_and(|hi| p > hi + VIOLATION_TOLERANCE)
        })
        .count();
    out as f64 / pred.len() as f64
}

/// Every metric of a predictor on `n` rows with targets in their units; `unstandardize` maps a
/// standardized prediction back (`z * std + mean`).
pub fn regression_metrics(
    predict: Predict<'_>,
    x: &[f32],
    targets: &[f32],
    dim: usize,
    unstandardize: &dyn Fn(f32) -> f64,
    c: &Constraints,
    step: f32,
) -> Result<RegressionMetrics> {
    let n = targets.len();
    let z = predict(x, n)?;
    let pred: Vec<f64> = z.iter().map(|&v| unstandardize(v)).collect();
    let (mae, rmse, r2) = error_metrics(&pred, targets);
    Ok(RegressionMetrics {
        mae,
        rmse,
        r2,
        violation_rate: violation_rate(predict, x, n, dim, c, step)?,
        bound_violation_rate: bound_violation_rate(&z, c),
    })
}

#[cfg(test)]
mod tests;
