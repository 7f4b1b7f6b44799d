//! One stored weight layer of a quantized student ([`QLayer`]: Q8_0 blocks, or f16/f32 weights, with the
//! copies each kernel computes with) and the f32 layers it is made from ([`float_model`]: an MLP's linear
//! layers with the standardization folded in, a CNN's (2-D or 1-D) conv blocks as im2col matrices and its
//! linear layers, a fused model's block encoders with the standardization folded in, its f32 attention gate
//! and its linear layers).

use std::sync::{Arc, OnceLock};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::error::{MlError, Result};
use crate::model::{Model, INPUT_SCALE, INPUT_SHIFT};

use super::arch::{pad32, Arch};
use super::fused::Gate;
use super::kernel::{F32Rows, Q8Tiles, RowWeights};
use super::model::LayerFormat;

/// One f32 weight layer, padded (an MLP's first with the standardization folded in; a conv block as its
/// im2col matrix): `y = x W^T + b`, `w` row-major `[out, in]`.
#[derive(Debug, Clone)]
pub(crate) struct FloatLayer {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub in_dim: usize,
    pub out_dim: usize,
}

fn lock_err() -> MlError {
    MlError::InvalidConfig("varmap lock poisoned".into())
}

fn var_values(model: &Model, name: &str) -> Result<Vec<f32>> {
    let data = model.varmap().data().lock().map_err(|_| lock_err())?;
    let v = data
        .get(name)
        .ok_or_else(|| MlError::InvalidConfig(format!("model has no tensor {name}")))?;
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// The values of tensor `name`, which must have shape `dims`.
fn var_shaped(model: &Model, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
    let data = model.varmap().data().lock().map_err(|_| lock_err())?;
    let v = data
        .get(name)
        .ok_or_else(|| MlError::InvalidConfig(format!("model has no tensor {name}")))?;
    if v.dims() != dims {
        return Err(MlError::InvalidConfig(format!(
            "tensor {name} has shape {:?}, expected {dims:?}",
            v.dims()
        )));
    }
    Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// The f32 weights of a student laid out as the quantized student stores them, before quantization.
#[derive(Debug, Clone)]
pub(crate) struct FloatModel {
    pub arch: Arch,
    /// A CNN's input standardization (shift, scale), applied to the raw input; `None` for an MLP, whose
    /// first layer has it folded in.
    pub norm: Option<(Vec<f32>, Vec<f32>)>,
    /// A fused model's attention gate (f32 in every profile); `None` for every other model.
    pub gate: Option<Gate>,
    /// Every weight layer, input side first (a CNN's conv blocks or a fused model's block encoders, then
    /// the linear layers), padded to [`Arch::padded_dims`].
    pub layers: Vec<FloatLayer>,
}

/// Reads the weight layers of a `Model`: an MLP's linear layers with the input standardization folded
/// into the first one, a CNN's conv blocks as im2col matrices (standardization kept apart) and its linear
/// layers, or a fused model's block encoders (each with its columns' standardization folded in), gate and
/// linear layers; padded to the stored dimensions of [`Arch::padded_dims`].
pub(crate) fn float_model(model: &Model) -> Result<FloatModel> {
    let arch = Arch::from_config(model.config(), model.in_dim(), model.classes())?;
    let shift = var_values(model, INPUT_SHIFT)?;
    let scale = var_values(model, INPUT_SCALE)?;
    let mut layers = Vec::new();
    let mut gate = None;
    if let Some(f) = &arch.fused {
        let (spans, presence) = crate::model::fused::spans(&f.blocks);
        if shift[presence..].iter().any(|&v| v != 0.0) || scale[presence..].iter().any(|&v| v != 1.0) {
            return Err(MlError::InvalidConfig(
                "a fused model's presence inputs must not be standardized (shift 0, scale 1)".into(),
            ));
        }
        for (k, &(at, w)) in spans.iter().enumerate() {
            let name = format!("encoders.{k}");
            let wv = var_shaped(model, &format!("{name}.weight"), &[f.embed, w])?;
            let bv = var_shaped(model, &format!("{name}.bias"), &[f.embed])?;
            layers.push(folded(
                &wv,
                &bv,
                (w, f.embed),
                (pad32(w), f.embed),
                (&shift[at..at + w], &scale[at..at + w]),
            ));
        }
        gate = Some(Gate::read(f.embed, |name, dims| var_shaped(model, name, dims))?);
    }
    let blocks = arch.blocks();
    let all_dims = arch.layer_dims();
    let all_pdims = arch.padded_dims();
    for (i, b) in blocks.iter().enumerate() {
        let w = var_shaped(model, &format!("convs.{i}.weight"), &b.kernel_dims())?;
        let bias = var_shaped(model, &format!("convs.{i}.bias"), &[b.out_ch()])?;
        let (taps, cols) = (b.in_ch() * b.taps(), b.cols());
        // [out, in, 3, 3] (or [out, in, k]) row-major is already [out, in * 9] ([out, in * k]) in im2col
        // column order.
        let mut pw = vec![0f32; b.out_ch() * cols];
        for (dst, src) in pw.chunks_exact_mut(cols).zip(w.chunks_exact(taps)) {
            dst[..taps].copy_from_slice(src);
        }
        layers.push(FloatLayer {
            w: pw,
            b: bias,
            in_dim: cols,
            out_dim: b.out_ch(),
        });
    }
    let front = arch.front_layers();
    let (dims, pdims) = (&all_dims[front..], &all_pdims[front..]);
    let fold = !arch.is_cnn() && !arch.is_fused();
    for (i, (&(inp, out), &pdim)) in dims.iter().zip(pdims).enumerate() {
        let w = var_values(model, &format!("layers.{i}.weight"))?;
        let b = var_values(model, &format!("layers.{i}.bias"))?;
        if w.len() != inp * out || b.len() != out {
            return Err(MlError::InvalidConfig(format!("layers.{i} has unexpected size")));
        }
        let identity = (&[][..], &[][..]);
        let norm = if fold && i == 0 {
            (&shift[..], &scale[..])
        } else {
            identity
        };
        layers.push(folded(&w, &b, (inp, out), pdim, norm));
    }
    let norm = arch.is_cnn().then_some((shift, scale));
    Ok(FloatModel {
        arch,
        norm,
        gate,
        layers,
    })
}

/// A linear layer `[out, inp]` zero-padded to `[pout, pin]`, with the standardization `(x - shift) * scale`
/// of its inputs folded in when `shift` and `scale` are given (empty: none): `W ((x - s) * c) = (W * c) x -
/// (W * c) s`.
fn folded(
    w: &[f32],
    b: &[f32],
    (inp, out): (usize, usize),
    (pin, pout): (usize, usize),
    (shift, scale): (&[f32], &[f32]),
) -> FloatLayer {
    let fold = !scale.is_empty();
    let mut pw = vec![0f32; pout * pin];
    let mut pb = vec![0f32; pout];
    for o in 0..out {
        let mut bias = f64::from(b[o]);
        for j in 0..inp {
            let mut v = w[o * inp + j];
            if fold {
                v *= scale[j];
                bias -= f64::from(v) * f64::from(shift[j]);
            }
            pw[o * pin + j] = v;
        }
        pb[o] = bias as f32;
    }
    FloatLayer {
        w: pw,
        b: pb,
        in_dim: pin,
        out_dim: pout,
    }
}

/// One stored linear layer.
#[derive(Debug)]
pub(crate) struct QLayer {
    pub format: LayerFormat,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Q8_0 blocks (Q8_0 layers only).
    pub q: Option<Arc<QTensor>>,
    /// f32 weights `[out, in]`: exact for f32, f16-rounded for f16; for Q8_0 the dequantized copy,
    /// made on first use by the large-batch kernel.
    pub w: OnceLock<Tensor>,
    /// f32 bias `[out]`.
    pub b: Tensor,
    /// Plain-slice copies for the row-at-a-time kernel, made on first use.
    pub rows: OnceLock<RowWeights>,
}

impl QLayer {
    /// Builds a layer of `format` from f32 weights.
    pub fn quantize(format: LayerFormat, l: &FloatLayer) -> Result<QLayer> {
        let dev = Device::Cpu;
        let w = Tensor::from_slice(&l.w, (l.out_dim, l.in_dim), &dev)?;
        let b = Tensor::from_slice(&l.b, l.out_dim, &dev)?;
        let layer = QLayer {
            format,
            in_dim: l.in_dim,
            out_dim: l.out_dim,
            q: None,
            w: OnceLock::new(),
            b,
            rows: OnceLock::new(),
        };
        Self::from_weight(layer, w)
    }

    fn from_weight(mut layer: QLayer, w: Tensor) -> Result<QLayer> {
        match layer.format {
            LayerFormat::Q8_0 => layer.q = Some(Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0)?)),
            LayerFormat::F16 => {
                let _ = layer
                    .w
                    .set(w.to_dtype(candle_core::DType::F16)?.to_dtype(candle_core::DType::F32)?);
            }
            LayerFormat::F32 => {
                let _ = layer.w.set(w);
            }
        }
        Ok(layer)
    }

    /// Builds a layer from a stored tensor (read back from a file).
    pub fn from_stored(format: LayerFormat, weight: QTensor, b: Tensor) -> Result<QLayer> {
        let (out_dim, in_dim) = weight.shape().dims2()?;
        let mut layer = QLayer {
            format,
            in_dim,
            out_dim,
            q: None,
            w: OnceLock::new(),
            b,
            rows: OnceLock::new(),
        };
        match format {
            LayerFormat::Q8_0 => layer.q = Some(Arc::new(weight)),
            LayerFormat::F16 | LayerFormat::F32 => {
                let _ = layer.w.set(weight.dequantize(&Device::Cpu)?);
            }
        }
        Ok(layer)
    }

    /// f32 weights as computed with by the dequantized kernel.
    pub fn weight_f32(&self) -> Result<&Tensor> {
        if let Some(w) = self.w.get() {
            return Ok(w);
        }
        let q = self
            .q
            .as_ref()
            .ok_or_else(|| MlError::InvalidConfig("layer without weights".into()))?;
        let w = q.dequantize(&Device::Cpu)?;
        Ok(self.w.get_or_init(|| w))
    }

    /// The stored weight as a ggml tensor (for GGUF export).
    pub fn stored_weight(&self) -> Result<QTensor> {
        match (&self.q, self.format) {
            (Some(q), _) => {
                let bytes = q.data()?.into_owned();
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(bytes),
                    &Device::Cpu,
                    GgmlDType::Q8_0,
                )?;
                Ok(QTensor::new(storage, (self.out_dim, self.in_dim))?)
            }
            (None, fmt) => Ok(QTensor::quantize(self.weight_f32()?, fmt.ggml())?),
        }
    }

    /// The weights laid out for the batch-1 kernel (made on first use).
    pub(crate) fn row_weights(&self) -> Result<&RowWeights> {
        if let Some(r) = self.rows.get() {
            return Ok(r);
        }
        let bias = self.b.to_vec1::<f32>()?;
        let r = match &self.q {
            Some(q) => RowWeights::Q8(Q8Tiles::from_ggml(&q.data()?, self.out_dim, self.in_dim, bias)?),
            None => RowWeights::F32(F32Rows {
                w: self.weight_f32()?.flatten_all()?.to_vec1::<f32>()?,
                bias,
                in_dim: self.in_dim,
                out_dim: self.out_dim,
            }),
        };
        Ok(self.rows.get_or_init(|| r))
    }

    pub(crate) fn forward(&self, x: &Tensor, quantized_kernel: bool) -> Result<Tensor> {
        let y = match (&self.q, quantized_kernel) {
            (Some(q), true) => QMatMul::QTensor(q.clone()).forward(x)?,
            _ => x.matmul(&self.weight_f32()?.t()?)?,
        };
        Ok(y.broadcast_add(&self.b)?)
    }
}
