//! The fused model for tabular tasks in modality blocks (`ModelConfig::Fused`, issue 22 part 3): an encoder
//! per block (Linear + ReLU), gated attention over the block embeddings (Ilse, Tomczak and Welling 2018:
//! `a_k = w^T (tanh(V e_k) * sigmoid(U e_k))`, a softmax over the blocks the row holds), the weighted sum of
//! the embeddings, then a hidden layer and the classifier. A row's last inputs say which blocks it holds
//! (one presence input per block, the task card's layout: docs/data.md, "Modality blocks"); an absent block
//! gets attention exactly 0, so its inputs cannot change the output. Training drops present blocks at random
//! (modality dropout, seeded per model) so a model also works on rows that lack a block.
//!
//! The attention itself ([`gated_attention`]) is one function shared by the f32 model and the quantized
//! student, so both mask and weigh alike.

use std::sync::Mutex;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{check_features, check_widths, Model, ModelConfig, Net, INPUT_SCALE, INPUT_SHIFT, MAX_DEPTH};
use crate::error::{MlError, Result};

/// `dropout` of a `ModelConfig::Fused` that leaves it out: each present block of a training row is dropped
/// with this probability.
pub const FUSED_DEFAULT_DROPOUT: f64 = 0.2;

/// A row's presence input at or above this counts the block as present (the reader writes 1 or 0).
pub(crate) const PRESENT: f64 = 0.5;

/// The attention logit an absent block gets: its softmax weight underflows to exactly 0.
pub(crate) const MASKED_LOGIT: f32 = -1e9;

/// The probability of modality dropout, in `[0, 1)` (a plain number in TOML and JSON). Compared bit for bit,
/// so `ModelConfig` keeps its `Eq`; a validated config never holds NaN.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DropRate(pub f64);

impl PartialEq for DropRate {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for DropRate {}

impl Default for DropRate {
    fn default() -> Self {
        DropRate(FUSED_DEFAULT_DROPOUT)
    }
}

/// serde's default of `dropout`.
pub(crate) fn default_dropout() -> DropRate {
    DropRate::default()
}

/// `ModelConfig::Fused`'s checks on `in_dim` inputs; every message names the problem.
pub(crate) fn validate(embed: usize, hidden: usize, blocks: &[usize], dropout: DropRate, in_dim: usize) -> Result<()> {
    let bad = |m: String| Err(MlError::InvalidConfig(m));
    if blocks.is_empty() {
        return bad(
            "fused needs the input widths of its modality blocks (`blocks`, at least two; a participant fills \
             them from the task card's [[modalities]] when they are left out)"
                .into(),
        );
    }
    if blocks.len() < 2 || blocks.len() > MAX_DEPTH {
        return bad(format!(
            "fused needs 2..={MAX_DEPTH} modality blocks, got {}",
            blocks.len()
        ));
    }
    check_widths("block", blocks)?;
    check_widths("embed", &[embed])?;
    check_widths("hidden", &[hidden])?;
    let p = dropout.0;
    if !(p.is_finite() && (0.0..1.0).contains(&p)) {
        return bad(format!("fused dropout {p} is not a probability in [0, 1)"));
    }
    let features: usize = blocks.iter().sum();
    if features + blocks.len() != in_dim {
        return bad(format!(
            "fused blocks {blocks:?} take {features} inputs and {} presence inputs ({} in all), the data has \
             {in_dim}: the blocks must be the task card's modality blocks, in order",
            blocks.len(),
            features + blocks.len()
        ));
    }
    Ok(())
}

/// Where each block lies in a row: `(offset, width)` in order, then the first presence input.
pub(crate) fn spans(blocks: &[usize]) -> (Vec<(usize, usize)>, usize) {
    let mut at = 0;
    let spans = blocks
        .iter()
        .map(|&w| {
            let s = (at, w);
            at += w;
            s
        })
        .collect();
    (spans, at)
}

/// The tensors of a fused model after the input standardization, in a fixed order (name, dims).
pub(crate) fn tensor_specs(
    embed: usize,
    hidden: usize,
    blocks: &[usize],
    classes: usize,
    specs: &mut Vec<(String, Vec<usize>)>,
) {
    for (k, &w) in blocks.iter().enumerate() {
        specs.push((format!("encoders.{k}.weight"), vec![embed, w]));
        specs.push((format!("encoders.{k}.bias"), vec![embed]));
    }
    for g in ["v", "u"] {
        specs.push((format!("gate.{g}.weight"), vec![embed, embed]));
        specs.push((format!("gate.{g}.bias"), vec![embed]));
    }
    // No bias: a constant added to every block's logit does not change the softmax.
    specs.push(("gate.w.weight".into(), vec![1, embed]));
    specs.push(("layers.0.weight".into(), vec![hidden, embed]));
    specs.push(("layers.0.bias".into(), vec![hidden]));
    specs.push(("layers.1.weight".into(), vec![classes, hidden]));
    specs.push(("layers.1.bias".into(), vec![classes]));
}

/// The gate's tensors: `V` and `U` (`[embed, embed]` and `[embed]` each) and `w` (`[1, embed]`).
pub(crate) struct GateTensors<'a> {
    pub v: (&'a Tensor, &'a Tensor),
    pub u: (&'a Tensor, &'a Tensor),
    pub w: &'a Tensor,
}

/// Gated attention over block embeddings `e` (`[n, blocks, embed]`) masked by `present` (`[n, blocks]`, 1 or
/// 0, f32): the fused embedding `[n, embed]` and the attention `[n, blocks]` (each row sums to 1 over its
/// present blocks, exactly 0 on the others; a row without any block, which no reader yields, gets uniform
/// weights). Differentiable in `e` and the gate.
pub(crate) fn gated_attention(
    e: &Tensor,
    present: &Tensor,
    g: &GateTensors<'_>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (n, b, d) = e.dims3()?;
    let flat = e.reshape((n * b, d))?;
    let tv = flat.matmul(&g.v.0.t()?)?.broadcast_add(g.v.1)?.tanh()?;
    let su = candle_nn::ops::sigmoid(&flat.matmul(&g.u.0.t()?)?.broadcast_add(g.u.1)?)?;
    let a = (tv * su)?.matmul(&g.w.t()?)?.reshape((n, b))?;
    // a on present blocks, MASKED_LOGIT on absent ones (a * 0 is 0 for any finite a).
    let masked = ((a * present)? + present.affine(-f64::from(MASKED_LOGIT), f64::from(MASKED_LOGIT))?)?;
    let att = candle_nn::ops::softmax(&masked, D::Minus1)?;
    let z = att.unsqueeze(2)?.broadcast_mul(e)?.sum(1)?;
    Ok((z, att))
}

/// The presence inputs of rows `x` (`[n, in_dim]`) as `[n, blocks]` of 1.0 / 0.0.
pub(crate) fn presence(x: &Tensor, first: usize, blocks: usize) -> candle_core::Result<Tensor> {
    x.narrow(1, first, blocks)?.ge(PRESENT)?.to_dtype(DType::F32)
}

/// The network of a fused model, read from the VarBuilder.
pub(super) struct FusedNet {
    encoders: Vec<Linear>,
    spans: Vec<(usize, usize)>,
    presence: usize,
    v: (Tensor, Tensor),
    u: (Tensor, Tensor),
    w: Tensor,
    head: [Linear; 2],
    dropout: f64,
    /// Draws of modality dropout; seeded by the model's seed, advanced by every training batch.
    rng: Mutex<ChaCha8Rng>,
}

impl FusedNet {
    /// Builds the network for `blocks` (validated), its dropout generator seeded with `seed`.
    pub(super) fn build(
        embed: usize,
        hidden: usize,
        blocks: &[usize],
        dropout: DropRate,
        classes: usize,
        vb: &VarBuilder,
        seed: u64,
    ) -> Result<FusedNet> {
        let linear = |vb: VarBuilder, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear::new(vb.get((out, inp), "weight")?, Some(vb.get(out, "bias")?)))
        };
        let encoders = blocks
            .iter()
            .enumerate()
            .map(|(k, &w)| linear(vb.pp("encoders").pp(k.to_string()), embed, w))
            .collect::<Result<Vec<_>>>()?;
        let gate = vb.pp("gate");
        let pair = |g: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                gate.pp(g).get((embed, embed), "weight")?,
                gate.pp(g).get(embed, "bias")?,
            ))
        };
        let (spans, presence) = spans(blocks);
        Ok(FusedNet {
            encoders,
            spans,
            presence,
            v: pair("v")?,
            u: pair("u")?,
            w: gate.pp("w").get((1, embed), "weight")?,
            head: [
                linear(vb.pp("layers").pp("0"), hidden, embed)?,
                linear(vb.pp("layers").pp("1"), classes, hidden)?,
            ],
            dropout: dropout.0,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x00D0_0D0D_0A7E_5EED)),
        })
    }

    /// The fused embedding `[n, embed]` and the attention `[n, blocks]` of standardized rows `x`.
    pub(super) fn embed(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let es = self
            .encoders
            .iter()
            .zip(&self.spans)
            .map(|(enc, &(at, w))| enc.forward(&x.narrow(1, at, w)?.contiguous()?)?.relu())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let e = Tensor::stack(&es, 1)?;
        let present = presence(x, self.presence, self.spans.len())?;
        let gate = GateTensors {
            v: (&self.v.0, &self.v.1),
            u: (&self.u.0, &self.u.1),
            w: &self.w,
        };
        gated_attention(&e, &present, &gate)
    }

    /// Logits of standardized rows; with `feats`, the fused embedding and the hidden activation are kept.
    pub(super) fn forward(&self, x: &Tensor, feats: Option<&mut Vec<Tensor>>) -> candle_core::Result<Tensor> {
        let (z, _) = self.embed(x)?;
        let h = self.head[0].forward(&z)?.relu()?;
        if let Some(f) = feats {
            f.push(z);
            f.push(h.clone());
        }
        self.head[1].forward(&h)
    }

    /// Modality dropout of a standardized training batch `[n, in_dim]`: in each row holding two or more
    /// blocks, each present block is dropped (its presence input set to 0) with the configured probability;
    /// when every one was drawn, one of them, chosen uniformly, is kept. The batch itself when the
    /// probability is 0.
    pub(super) fn drop_blocks(&self, x: &Tensor) -> Result<Tensor> {
        if self.dropout == 0.0 {
            return Ok(x.clone());
        }
        let (n, d) = x.dims2()?;
        let blocks = self.spans.len();
        if d != self.presence + blocks {
            return Err(MlError::InvalidInput(format!(
                "a batch of {d} features for a fused model of {} inputs",
                self.presence + blocks
            )));
        }
        let mut v = x.flatten_all()?.to_vec1::<f32>()?;
        let mut rng = self
            .rng
            .lock()
            .map_err(|_| MlError::InvalidConfig("modality dropout generator lock poisoned".into()))?;
        for row in v.chunks_exact_mut(d) {
            let flags = &mut row[self.presence..self.presence + blocks];
            let present: Vec<usize> = (0..blocks).filter(|&k| f64::from(flags[k]) >= PRESENT).collect();
            if present.len() < 2 {
                continue;
            }
            let mut drop: Vec<bool> = present.iter().map(|_| rng.random_bool(self.dropout)).collect();
            if drop.iter().all(|&d| d) {
                let keep = rng.random_range(0..drop.len());
                drop[keep] = false;
            }
            for (&k, _) in present.iter().zip(&drop).filter(|(_, &d)| d) {
                flags[k] = 0.0;
            }
        }
        Ok(Tensor::from_vec(v, (n, d), x.device())?)
    }

    /// The presence inputs' indices.
    pub(super) fn presence_inputs(&self) -> std::ops::Range<usize> {
        self.presence..self.presence + self.spans.len()
    }

    /// Each block's input range.
    pub(super) fn block_inputs(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.spans.iter().map(|&(at, w)| at..at + w)
    }
}

impl ModelConfig {
    /// A fused config without `blocks` with these block widths (the task card's modality blocks, in order);
    /// every other config, and a fused one that names its blocks, as it is.
    pub fn with_blocks(self, widths: &[usize]) -> ModelConfig {
        match self {
            ModelConfig::Fused {
                embed,
                hidden,
                blocks,
                dropout,
            } if blocks.is_empty() => ModelConfig::Fused {
                embed,
                hidden,
                blocks: widths.to_vec(),
                dropout,
            },
            other => other,
        }
    }
}

impl Model {
    /// What a training step feeds the network for a standardized batch `[n, in_dim]`: for a fused model the
    /// batch after modality dropout (the model's seeded generator advances), for every other model the batch
    /// itself.
    pub fn training_batch(&self, x: &Tensor) -> Result<Tensor> {
        match &self.net {
            Net::Fused(f) => f.drop_blocks(x),
            _ => Ok(x.clone()),
        }
    }

    /// A fused model's attention over its modality blocks for `n` rows of raw features: `n * blocks`
    /// weights, each row summing to 1 over the blocks it holds and 0 on the others; an error for any other
    /// model.
    pub fn modality_attention(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let Net::Fused(f) = &self.net else {
            return Err(MlError::InvalidConfig(
                "modality attention belongs to a fused model only".into(),
            ));
        };
        check_features(x, n, self.in_dim)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let t = Tensor::from_slice(x, (n, self.in_dim), &Device::Cpu)?;
        let t = t.broadcast_sub(&self.shift)?.broadcast_mul(&self.scale)?;
        Ok(f.embed(&t)?.1.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// A fused model's standardization: each block's columns fitted (per feature or globally) on the rows that
/// hold the block, identity for a block no row holds and for the presence inputs.
pub(super) fn standardization(f: &FusedNet, x: &[f32], n: usize, d: usize, per_feature: bool) -> (Vec<f32>, Vec<f32>) {
    let (mut shift, mut scale) = (vec![0f32; d], vec![1f32; d]);
    let presence = f.presence_inputs();
    for (k, cols) in f.block_inputs().enumerate() {
        let flag = presence.start + k;
        let w = cols.len();
        let rows: Vec<f32> = x
            .chunks_exact(d)
            .take(n)
            .filter(|r| f64::from(r[flag]) >= PRESENT)
            .flat_map(|r| r[cols.clone()].iter().copied())
            .collect();
        let (s, c) = super::standardization(&rows, rows.len() / w.max(1), w, per_feature);
        shift[cols.clone()].copy_from_slice(&s);
        scale[cols].copy_from_slice(&c);
    }
    (shift, scale)
}

/// For a fused `cfg`, refuses checkpoint tensors whose standardization touches a presence input (those are
/// read as they are: shift 0, scale 1); the problem, for the caller to name the file.
pub(super) fn check_presence_identity(
    cfg: &ModelConfig,
    values: &std::collections::HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    let ModelConfig::Fused { blocks, .. } = cfg else {
        return Ok(());
    };
    let first = spans(blocks).1;
    for (name, want) in [(INPUT_SHIFT, 0.0), (INPUT_SCALE, 1.0)] {
        let v = values
            .get(name)
            .ok_or_else(|| format!("missing tensor {name}"))?
            .to_vec1::<f32>()
            .map_err(|e| format!("tensor {name}: {e}"))?;
        if v.get(first..).is_some_and(|p| p.iter().any(|&x| x != want)) {
            return Err(format!(
                "tensor {name} changes the presence inputs (values {first}..): they must stay {want}"
            ));
        }
    }
    Ok(())
}

/// A seeded two-class task in two blocks for the fused model's tests: block A of `wa` inputs and block B of
/// `wb`, each of which alone tells the class (the class shifts the first two inputs of block A by
/// `+-separation.0` and those of block B by `+-separation.1`, everything else is N(0, 1) noise), followed by
/// the two presence inputs (1, 1). Returns (features, labels), `n * (wa + wb + 2)` values.
#[cfg(test)]
pub(crate) fn two_block_task(
    n: usize,
    wa: usize,
    wb: usize,
    separation: (f32, f32),
    seed: u64,
) -> (Vec<f32>, Vec<u32>) {
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * (wa + wb + 2));
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.random_range(0..2u32);
        let sign = if class == 1 { 1.0 } else { -1.0 };
        for (w, sep) in [(wa, separation.0), (wb, separation.1)] {
            for j in 0..w {
                let noise: f32 = StandardNormal.sample(&mut rng);
                x.push(noise + if j < 2 { sign * sep } else { 0.0 });
            }
        }
        x.extend([1.0, 1.0]);
        y.push(class);
    }
    (x, y)
}

/// `x` (rows of `wa + wb + 2`) with block B absent in every row: its inputs 0 and its presence input 0.
#[cfg(test)]
pub(crate) fn without_block_b(x: &[f32], wa: usize, wb: usize) -> Vec<f32> {
    let d = wa + wb + 2;
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(d) {
        row[wa..wa + wb].fill(0.0);
        row[d - 1] = 0.0;
    }
    out
}

#[cfg(test)]
mod tests;
