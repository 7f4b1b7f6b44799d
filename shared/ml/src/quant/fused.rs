//! The front of a quantized fused student (`ModelConfig::Fused`): its block encoders are weight layers like
//! any linear layer (Q8_0, f16 or f32 per profile, the input standardization of the block's columns folded
//! in as an MLP's first layer has it, inputs padded to the Q8_0 block), while the small attention gate
//! (`gate.v`, `gate.u`: `[embed, embed]` and `[embed]`; `gate.w`: `[1, embed]`) stays f32 in every profile:
//! it scores a handful of embeddings per row, so quantizing it would save a few KB and cost the one
//! nonlinear step where rounding moves the softmax. The presence inputs are read raw (the f32 model never
//! standardizes them), so folding is exact. The attention is the f32 model's own function
//! ([`crate::model::fused::gated_attention`]); the batch-1 kernel has its plain-Rust twin.

use candle_core::{Device, Tensor};

use crate::error::{MlError, Result};
use crate::model::fused::{gated_attention, presence, spans, GateTensors};

use super::arch::{pad32, Arch};
use super::layer::QLayer;

/// Names of the gate's tensors, in file order.
pub(crate) const GATE_TENSORS: [&str; 5] = [
    "gate.v.weight",
    "gate.v.bias",
    "gate.u.weight",
    "gate.u.bias",
    "gate.w.weight",
];

/// The attention gate of a fused model, f32: `a_k = w . (tanh(V e_k + bv) * sigmoid(U e_k + bu))`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gate {
    /// Embedding width.
    pub embed: usize,
    /// `V`, row-major `[embed, embed]`.
    pub v_w: Vec<f32>,
    /// `bv`, `[embed]`.
    pub v_b: Vec<f32>,
    /// `U`, row-major `[embed, embed]`.
    pub u_w: Vec<f32>,
    /// `bu`, `[embed]`.
    pub u_b: Vec<f32>,
    /// `w`, `[embed]` (stored `[1, embed]`).
    pub w: Vec<f32>,
}

impl Gate {
    /// The shape of gate tensor `name` (one of [`GATE_TENSORS`]) for `embed`.
    pub fn dims(name: &str, embed: usize) -> Vec<usize> {
        match name {
            "gate.v.weight" | "gate.u.weight" => vec![embed, embed],
            "gate.w.weight" => vec![1, embed],
            _ => vec![embed],
        }
    }

    /// Reads the five tensors through `get(name, dims)`, in [`GATE_TENSORS`] order.
    pub fn read(embed: usize, mut get: impl FnMut(&str, &[usize]) -> Result<Vec<f32>>) -> Result<Gate> {
        let mut v: Vec<Vec<f32>> = Vec::with_capacity(GATE_TENSORS.len());
        for name in GATE_TENSORS {
            v.push(get(name, &Gate::dims(name, embed))?);
        }
        let mut it = v.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Gate {
            embed,
            v_w: next(),
            v_b: next(),
            u_w: next(),
            u_b: next(),
            w: next(),
        })
    }

    /// `(name, dims, values)` of each tensor, in [`GATE_TENSORS`] order.
    pub fn named(&self) -> Vec<(&'static str, Vec<usize>, &[f32])> {
        let values: [&[f32]; 5] = [&self.v_w, &self.v_b, &self.u_w, &self.u_b, &self.w];
        GATE_TENSORS
            .iter()
            .zip(values)
            .map(|(&name, v)| (name, Gate::dims(name, self.embed), v))
            .collect()
    }

    /// Stored bytes (f32).
    pub fn bytes(&self) -> usize {
        4 * (self.v_w.len() + self.v_b.len() + self.u_w.len() + self.u_b.len() + self.w.len())
    }

    /// Whether every tensor has its shape for `embed` values.
    fn fits(&self) -> bool {
        let e = self.embed;
        self.named()
            .iter()
            .all(|(_, dims, v)| v.len() == dims.iter().product::<usize>())
            && self.v_w.len() == e * e
    }
}

/// A fused student's front: its block encoders and the f32 gate.
#[derive(Debug)]
pub(crate) struct FusedFront {
    /// `(offset, width)` of each block in a raw row.
    pub spans: Vec<(usize, usize)>,
    /// Index of the first presence input (one per block, in block order).
    pub presence: usize,
    /// Embedding width.
    pub embed: usize,
    /// Each block's encoder, `[embed, pad32(width)]`, the standardization folded in.
    pub encoders: Vec<QLayer>,
    /// The attention gate.
    pub gate: Gate,
    v: (Tensor, Tensor),
    u: (Tensor, Tensor),
    w: Tensor,
}

impl FusedFront {
    /// Assembles the front of `arch` (a fused architecture); every encoder must have its stored shape.
    pub fn new(arch: &Arch, encoders: Vec<QLayer>, gate: Gate) -> Result<FusedFront> {
        let f = arch
            .fused
            .as_ref()
            .ok_or_else(|| MlError::InvalidConfig("a fused front needs a fused architecture".into()))?;
        if encoders.len() != f.blocks.len() || gate.embed != f.embed || !gate.fits() {
            return Err(MlError::InvalidConfig(format!(
                "fused front: {} encoders for {} blocks, gate of width {} for embeddings of {}",
                encoders.len(),
                f.blocks.len(),
                gate.embed,
                f.embed
            )));
        }
        for (k, (l, &w)) in encoders.iter().zip(&f.blocks).enumerate() {
            if (l.out_dim, l.in_dim) != (f.embed, pad32(w)) {
                return Err(MlError::InvalidConfig(format!(
                    "encoders.{k}.weight is [{}, {}], expected [{}, {}]",
                    l.out_dim,
                    l.in_dim,
                    f.embed,
                    pad32(w)
                )));
            }
        }
        let (spans, presence) = spans(&f.blocks);
        let t = |v: &[f32], dims: &[usize]| Tensor::from_slice(v, dims, &Device::Cpu);
        let e = f.embed;
        Ok(FusedFront {
            spans,
            presence,
            embed: e,
            v: (t(&gate.v_w, &[e, e])?, t(&gate.v_b, &[e])?),
            u: (t(&gate.u_w, &[e, e])?, t(&gate.u_b, &[e])?),
            w: t(&gate.w, &[1, e])?,
            encoders,
            gate,
        })
    }

    /// The fused embedding `[n, embed]` of raw rows `x` (`[n, in_dim]`). With `io`, every encoder's input as
    /// it enters the weights (the block's columns, zero-padded) and its output before ReLU are pushed, for
    /// calibration.
    pub fn forward(
        &self,
        x: &Tensor,
        quantized_kernel: bool,
        mut io: Option<&mut Vec<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let mut es = Vec::with_capacity(self.encoders.len());
        for (enc, &(at, w)) in self.encoders.iter().zip(&self.spans) {
            let cols = x.narrow(1, at, w)?.contiguous()?;
            let cols = if enc.in_dim > w {
                cols.pad_with_zeros(1, 0, enc.in_dim - w)?
            } else {
                cols
            };
            let y = enc.forward(&cols, quantized_kernel)?;
            es.push(y.relu()?);
            if let Some(io) = io.as_deref_mut() {
                io.push((cols, y));
            }
        }
        let e = Tensor::stack(&es, 1)?;
        let present = presence(x, self.presence, self.spans.len())?;
        let gate = GateTensors {
            v: (&self.v.0, &self.v.1),
            u: (&self.u.0, &self.u.1),
            w: &self.w,
        };
        Ok(gated_attention(&e, &present, &gate)?.0)
    }
}

#[cfg(test)]
mod tests;
