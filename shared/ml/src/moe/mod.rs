//! A mixture-of-experts student for continual learning: a learned softmax gate routes each sample to its
//! top-1 or top-2 experts (small MLPs), and a new task can bring a fresh expert while the old ones are frozen.
//!
//! Weights live in a `VarMap` under the model crate's naming: `gate.weight` `[E, in]` / `gate.bias` `[E]`,
//! `experts.{i}.layers.0.weight` `[hidden, in]` (and `.bias`), `experts.{i}.layers.1.weight`
//! `[classes, hidden]` (and `.bias`), and the input standardization `input.shift` / `input.scale`, fitted
//! from data and never trained. Initialization is PyTorch's default drawn from a ChaCha8 RNG seeded by the
//! caller, as for [`crate::Model`]. The experts are computed densely and masked: with the two to four small
//! experts this student has, that is one batched product per expert and no gather/scatter.
//!
//! How the selected experts are combined (docs/ml.md, "Dynamic routing for continual learning"):
//! - top-2: the gate probabilities of the two chosen experts, renormalised to sum to 1, weigh their logits;
//! - top-1: the chosen expert's logits are scaled by its gate probability, the Switch Transformer's form
//!   (Fedus et al. 2021). Renormalising over a single expert would make its weight exactly 1 and leave the
//!   gate without any gradient from the task loss, so it could only ever learn from the balancing loss.
//!
//! The training loop (distillation with replay, one task after another) is in [`train`].

mod train;

pub use train::{train_step, ContinualMoe, MoeDistillConfig, MoeStepLoss, MoeTaskStats, RouteTargets};

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{check_features, standardization, INPUT_SCALE, INPUT_SHIFT};

/// Most experts a student may hold (initially or after growing): bounds memory and the gate's width.
pub const MAX_EXPERTS: usize = 64;
/// Largest expert width accepted (as for [`crate::ModelConfig`]).
const MAX_WIDTH: usize = 65_536;

/// Shape of a mixture-of-experts student. TOML/JSON keys are the field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeConfig {
    /// Experts at construction (1..=64); [`MoeStudent::add_expert`] adds more.
    pub experts: usize,
    /// Hidden width of each expert (input -> hidden -> classes, ReLU).
    pub hidden: usize,
    /// Experts each sample is routed to: 1 or 2, at most `experts`.
    pub top_k: usize,
    /// Weight of the load-balancing loss (finite, >= 0; 0 = off).
    pub balance_weight: f32,
    /// Whether [`MoeStudent::add_expert`] freezes the experts that exist before it.
    pub freeze_old: bool,
}

impl Default for MoeConfig {
    fn default() -> Self {
        MoeConfig {
            experts: 1,
            hidden: 64,
            top_k: 1,
            balance_weight: 0.01,
            freeze_old: true,
        }
    }
}

impl MoeConfig {
    /// Checks every field's range; the error names the field and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::InvalidConfig(m));
        if self.experts == 0 || self.experts > MAX_EXPERTS {
            return bad(format!("experts {} out of range 1..={MAX_EXPERTS}", self.experts));
        }
        if self.hidden == 0 || self.hidden > MAX_WIDTH {
            return bad(format!(
                "expert hidden width {} out of range 1..={MAX_WIDTH}",
                self.hidden
            ));
        }
        if !(1..=2).contains(&self.top_k) {
            return bad(format!("top_k must be 1 or 2, got {}", self.top_k));
        }
        if self.top_k > self.experts {
            return bad(format!(
                "top_k {} is more than the {} expert(s) the student starts with",
                self.top_k, self.experts
            ));
        }
        if !(self.balance_weight.is_finite() && self.balance_weight >= 0.0) {
            return bad(format!(
                "balance_weight must be finite and >= 0, got {}",
                self.balance_weight
            ));
        }
        Ok(())
    }

    /// Trainable parameters of one expert for `in_dim` inputs and `classes` outputs.
    pub fn expert_params(&self, in_dim: usize, classes: usize) -> usize {
        self.hidden * in_dim + self.hidden + classes * self.hidden + classes
    }
}

/// One expert: input -> hidden (ReLU) -> classes.
struct Expert {
    hidden: Linear,
    out: Linear,
    /// A frozen expert is computed on detached weights and is not among the trainable variables.
    frozen: bool,
}

impl Expert {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.frozen {
            let layer = |l: &Linear, h: &Tensor| -> candle_core::Result<Tensor> {
                let z = h.matmul(&l.weight().detach().t()?)?;
                match l.bias() {
                    Some(b) => z.broadcast_add(&b.detach()),
                    None => Ok(z),
                }
            };
            layer(&self.out, &layer(&self.hidden, x)?.relu()?)
        } else {
            self.out.forward(&self.hidden.forward(x)?.relu()?)
        }
    }
}

/// What one forward pass computed, for training and for the routing diagnostics.
pub struct MoeForward {
    /// The student's logits `[n, classes]`.
    pub logits: Tensor,
    /// The gate's softmax `[n, E]`.
    pub probs: Tensor,
    /// The weight each expert's logits got `[n, E]`: zero for the experts a sample was not routed to.
    pub weights: Tensor,
}

/// A mixture-of-experts classifier whose experts can grow with the tasks it learns.
pub struct MoeStudent {
    cfg: MoeConfig,
    in_dim: usize,
    classes: usize,
    varmap: VarMap,
    gate: Linear,
    experts: Vec<Expert>,
    shift: Tensor,
    scale: Tensor,
    /// Draws the weights of experts added later (and the gate rows they bring).
    rng: ChaCha8Rng,
}

impl std::fmt::Debug for MoeStudent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoeStudent")
            .field("cfg", &self.cfg)
            .field("in_dim", &self.in_dim)
            .field("classes", &self.classes)
            .field("experts", &self.experts.len())
            .field("params", &self.params())
            .finish()
    }
}

/// Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) values, PyTorch's default for linear weights and biases.
fn uniform(rng: &mut ChaCha8Rng, numel: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    (0..numel).map(|_| rng.random_range(-bound..bound)).collect()
}

fn expert_prefix(i: usize) -> String {
    format!("experts.{i}")
}

impl MoeStudent {
    /// A student with `cfg.experts` experts, weights drawn from a ChaCha8 RNG seeded with `seed`, identity
    /// input standardization. The configuration and the dimensions are checked before anything is allocated.
    pub fn new(cfg: &MoeConfig, in_dim: usize, classes: usize, seed: u64) -> Result<MoeStudent> {
        cfg.validate()?;
        if in_dim == 0 || in_dim > 1 << 24 {
            return Err(MlError::InvalidConfig(format!(
                "input dimension {in_dim} out of range 1..=16777216"
            )));
        }
        if !(2..=MAX_WIDTH).contains(&classes) {
            return Err(MlError::InvalidConfig(format!(
                "number of classes {classes} out of range 2..={MAX_WIDTH}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let varmap = VarMap::new();
        let e = cfg.experts;
        let mut values: Vec<(String, Tensor)> = vec![
            (INPUT_SHIFT.into(), Tensor::zeros(in_dim, DType::F32, &Device::Cpu)?),
            (INPUT_SCALE.into(), Tensor::ones(in_dim, DType::F32, &Device::Cpu)?),
            (
                "gate.weight".into(),
                Tensor::from_vec(uniform(&mut rng, e * in_dim, in_dim), (e, in_dim), &Device::Cpu)?,
            ),
            (
                "gate.bias".into(),
                Tensor::from_vec(uniform(&mut rng, e, in_dim), e, &Device::Cpu)?,
            ),
        ];
        for i in 0..e {
            values.extend(expert_tensors(cfg, in_dim, classes, i, &mut rng)?);
        }
        insert_vars(&varmap, values)?;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let gate = linear(&vb.pp("gate"), in_dim, e)?;
        let experts = (0..e)
            .map(|i| build_expert(&vb, cfg, in_dim, classes, i))
            .collect::<Result<Vec<_>>>()?;
        let shift = vb.get(in_dim, INPUT_SHIFT)?;
        let scale = vb.get(in_dim, INPUT_SCALE)?;
        Ok(MoeStudent {
            cfg: cfg.clone(),
            in_dim,
            classes,
            varmap,
            gate,
            experts,
            shift,
            scale,
            rng,
        })
    }

    /// The configuration it was built with (`experts` is the count at construction; see [`Self::experts`]).
    pub fn config(&self) -> &MoeConfig {
        &self.cfg
    }

    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Experts held now.
    pub fn experts(&self) -> usize {
        self.experts.len()
    }

    /// Whether expert `i` is frozen (`false` for an index out of range).
    pub fn is_frozen(&self, i: usize) -> bool {
        self.experts.get(i).is_some_and(|e| e.frozen)
    }

    /// The weights, by name (see the module doc).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The variables training updates (gate and unfrozen experts, not the input standardization), sorted
    /// by name.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let frozen: Vec<String> = (0..self.experts.len())
            .filter(|&i| self.experts[i].frozen)
            .map(|i| format!("{}.", expert_prefix(i)))
            .collect();
        self.vars_where(|k| !k.starts_with("input.") && !frozen.iter().any(|p| k.starts_with(p)))
    }

    fn vars_where(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Var)> {
        let mut vars: Vec<(String, Var)> = match self.varmap.data().lock() {
            Ok(d) => d
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// All weights and biases (frozen ones included, the input standardization not).
    pub fn params(&self) -> usize {
        self.vars_where(|k| !k.starts_with("input."))
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Parameters training updates now.
    pub fn trainable_params(&self) -> usize {
        self.trainable_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Adds a fresh expert (drawn from the student's own seeded RNG) and the gate row that routes to it; when
    /// the configuration says `freeze_old`, every expert that existed before stops training. The gate keeps
    /// its old rows and stays trainable. Returns the new expert's index.
    pub fn add_expert(&mut self) -> Result<usize> {
        let e = self.experts.len();
        if e >= MAX_EXPERTS {
            return Err(MlError::InvalidConfig(format!(
                "cannot add an expert: already {e}, at most {MAX_EXPERTS}"
            )));
        }
        let (d, c) = (self.in_dim, self.classes);
        let old_w = self.gate.weight().flatten_all()?.to_vec1::<f32>()?;
        let old_b = match self.gate.bias() {
            Some(b) => b.to_vec1::<f32>()?,
            None => vec![0.0; e],
        };
        let mut w = old_w;
        w.extend(uniform(&mut self.rng, d, d));
        let mut b = old_b;
        b.extend(uniform(&mut self.rng, 1, d));
        let mut values = vec![
            (
                "gate.weight".to_string(),
                Tensor::from_vec(w, (e + 1, d), &Device::Cpu)?,
            ),
            ("gate.bias".to_string(), Tensor::from_vec(b, e + 1, &Device::Cpu)?),
        ];
        values.extend(expert_tensors(&self.cfg, d, c, e, &mut self.rng)?);
        // Replacing the gate's two entries gives it new variables of the new shape (an optimizer built
        // before holds the old ones, which is why `ContinualMoe` builds one per task).
        insert_vars(&self.varmap, values)?;
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &Device::Cpu);
        self.gate = linear(&vb.pp("gate"), d, e + 1)?;
        let expert = build_expert(&vb, &self.cfg, d, c, e)?;
        if self.cfg.freeze_old {
            for old in &mut self.experts {
                old.frozen = true;
            }
        }
        self.experts.push(expert);
        Ok(e)
    }

    /// Sets the input standardization from samples (per feature, or one global mean/std for images).
    pub fn fit_input_normalization(&self, x: &[f32], n: usize, per_feature: bool) -> Result<()> {
        check_features(x, n, self.in_dim)?;
        let (shift, scale) = standardization(x, n, self.in_dim, per_feature);
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| MlError::InvalidConfig("varmap lock poisoned".into()))?;
        for (name, values) in [(INPUT_SHIFT, shift), (INPUT_SCALE, scale)] {
            let var = data
                .get(name)
                .ok_or_else(|| MlError::InvalidConfig(format!("student has no tensor {name}")))?;
            var.set(&Tensor::from_vec(values, self.in_dim, &Device::Cpu)?)?;
        }
        Ok(())
    }

    /// Applies the stored standardization to raw features (row-major `n * in_dim`).
    pub fn standardize(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        check_features(x, n, self.in_dim)?;
        let shift = self.shift.to_vec1::<f32>()?;
        let scale = self.scale.to_vec1::<f32>()?;
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(self.in_dim) {
            for ((v, s), c) in row.iter_mut().zip(&shift).zip(&scale) {
                *v = (*v - s) * c;
            }
        }
        Ok(out)
    }

    /// Forward pass on standardized inputs `[n, in_dim]`: logits, gate probabilities and the weight each
    /// expert got (see the module doc for how top-1 and top-2 combine).
    pub fn forward_standardized(&self, x: &Tensor) -> Result<MoeForward> {
        // `softmax` composed of differentiable ops: candle-nn's fused `softmax_last_dim` has no backward, and the
        // gate would silently never learn.
        let probs = candle_nn::ops::softmax(&self.gate.forward(x)?, D::Minus1)?;
        let (n, e) = probs.dims2()?;
        let p = probs.flatten_all()?.to_vec1::<f32>()?;
        let mut mask = vec![0f32; n * e];
        for (row, m) in p.chunks_exact(e).zip(mask.chunks_exact_mut(e)) {
            for i in top_k_indices(row, self.cfg.top_k) {
                m[i] = 1.0;
            }
        }
        let mask = Tensor::from_vec(mask, (n, e), x.device())?;
        let chosen = (&probs * &mask)?;
        let weights = if self.cfg.top_k == 1 {
            chosen
        } else {
            chosen.broadcast_div(&chosen.sum_keepdim(D::Minus1)?)?
        };
        let outs = self
            .experts
            .iter()
            .map(|ex| ex.forward(x))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stacked = Tensor::stack(&outs, 1)?; // [n, E, classes]
        let logits = stacked.broadcast_mul(&weights.unsqueeze(2)?)?.sum(1)?;
        Ok(MoeForward { logits, probs, weights })
    }

    /// Forward pass on raw features `[n, in_dim]` (standardization included).
    pub fn forward_raw(&self, x: &Tensor) -> Result<MoeForward> {
        let x = x.broadcast_sub(&self.shift)?.broadcast_mul(&self.scale)?;
        self.forward_standardized(&x)
    }

    /// Logits and routing weights for `n` samples of raw features, in chunks that bound the activations:
    /// (`n * classes` logits, `n * E` weights).
    pub fn logits_and_routing(&self, x: &[f32], n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        check_features(x, n, self.in_dim)?;
        let mut logits = Vec::with_capacity(n * self.classes);
        let mut weights = Vec::with_capacity(n * self.experts.len());
        for chunk in x.chunks(1024 * self.in_dim) {
            let rows = chunk.len() / self.in_dim;
            let t = Tensor::from_slice(chunk, (rows, self.in_dim), &Device::Cpu)?;
            let out = self.forward_raw(&t)?;
            logits.extend(out.logits.flatten_all()?.to_vec1::<f32>()?);
            weights.extend(out.weights.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((logits, weights))
    }

    /// Logits for `n` samples of raw features (`n * classes` values).
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        Ok(self.logits_and_routing(x, n)?.0)
    }

    /// Each sample's first-choice expert (the largest gate probability; the lowest index on ties).
    pub fn assignments(&self, x: &[f32], n: usize) -> Result<Vec<usize>> {
        let (_, w) = self.logits_and_routing(x, n)?;
        Ok(w.chunks_exact(self.experts.len()).map(crate::model::argmax).collect())
    }
}

/// candle's `Module`: raw features `[n, in_dim]` to logits `[n, classes]`.
impl Module for MoeStudent {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_raw(xs)
            .map(|o| o.logits)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// The indices of the `k` largest values of a row, largest first (lower index first on ties).
fn top_k_indices(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// The Switch Transformer's load-balancing loss of one batch (Fedus et al. 2021, eq. 4):
/// `E * sum_i f_i * P_i`, where `f_i` is the fraction of the batch whose first-choice expert is `i` (a
/// count, no gradient) and `P_i` the mean gate probability of expert `i` (differentiable). It is 1 when the
/// routing is balanced and the probabilities are uniform, and grows to `E * P_i` when every sample goes to
/// expert `i`. `probs` is the gate's softmax `[n, E]`; the result is a scalar tensor.
pub fn load_balancing_loss(probs: &Tensor) -> Result<Tensor> {
    let (n, e) = probs.dims2()?;
    if n == 0 || e == 0 {
        return Err(MlError::InvalidInput(format!(
            "load-balancing loss of an empty batch ({n} samples, {e} experts)"
        )));
    }
    let p = probs.flatten_all()?.to_vec1::<f32>()?;
    let mut f = vec![0f32; e];
    for row in p.chunks_exact(e) {
        f[crate::model::argmax(row)] += 1.0 / n as f32;
    }
    let f = Tensor::from_vec(f, e, probs.device())?;
    let mean_p = probs.mean(0)?;
    Ok(((mean_p * f)?.sum_all()? * e as f64)?)
}

fn insert_vars(varmap: &VarMap, values: Vec<(String, Tensor)>) -> Result<()> {
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| MlError::InvalidConfig("varmap lock poisoned".into()))?;
    for (name, t) in values {
        data.insert(name, Var::from_tensor(&t)?);
    }
    Ok(())
}

/// The four tensors of expert `i`, freshly drawn.
fn expert_tensors(
    cfg: &MoeConfig,
    in_dim: usize,
    classes: usize,
    i: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<(String, Tensor)>> {
    let h = cfg.hidden;
    let p = expert_prefix(i);
    let t = |v: Vec<f32>, dims: &[usize]| Tensor::from_vec(v, dims, &Device::Cpu);
    Ok(vec![
        (
            format!("{p}.layers.0.weight"),
            t(uniform(rng, h * in_dim, in_dim), &[h, in_dim])?,
        ),
        (format!("{p}.layers.0.bias"), t(uniform(rng, h, in_dim), &[h])?),
        (
            format!("{p}.layers.1.weight"),
            t(uniform(rng, classes * h, h), &[classes, h])?,
        ),
        (format!("{p}.layers.1.bias"), t(uniform(rng, classes, h), &[classes])?),
    ])
}

fn linear(vb: &VarBuilder, inp: usize, out: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?)))
}

fn build_expert(vb: &VarBuilder, cfg: &MoeConfig, in_dim: usize, classes: usize, i: usize) -> Result<Expert> {
    let vb = vb.pp("experts").pp(i.to_string()).pp("layers");
    Ok(Expert {
        hidden: linear(&vb.pp("0"), in_dim, cfg.hidden)?,
        out: linear(&vb.pp("1"), cfg.hidden, classes)?,
        frozen: false,
    })
}

#[cfg(test)]
mod tests;
