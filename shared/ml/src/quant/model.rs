//! The deployable student: an MLP whose linear layers are stored as ggml Q8_0 (INT8), f16 or f32, with the
//! input standardization folded into the first layer and every input dimension padded to a multiple of 32
//! (Q8_0 block length). Inference picks candle's `QMatMul` or a dequantized-once f32 copy per batch size.

use std::sync::{Arc, OnceLock};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{check_features, Model, ModelConfig, INPUT_SCALE, INPUT_SHIFT};

use super::fakequant::Q8_BLOCK;

/// Which formats the layers of a student get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Every linear layer Q8_0 (8-bit weights, one f16 scale per 32; activations quantized on the fly).
    Int8,
    /// Hidden layers f16, output layer Q8_0.
    Sandwich,
    /// Every layer f16 (reference).
    F16,
    /// Every layer f32 (reference: the trained student).
    F32,
}

impl Profile {
    /// All profiles, smallest last.
    pub const ALL: [Profile; 4] = [Profile::F32, Profile::F16, Profile::Sandwich, Profile::Int8];

    /// The profile's name as used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Int8 => "int8",
            Profile::Sandwich => "sandwich",
            Profile::F16 => "f16",
            Profile::F32 => "f32",
        }
    }

    /// Format of layer `i` of `layers`.
    pub fn layer_format(self, i: usize, layers: usize) -> LayerFormat {
        match self {
            Profile::Int8 => LayerFormat::Q8_0,
            Profile::Sandwich if i + 1 == layers => LayerFormat::Q8_0,
            Profile::Sandwich | Profile::F16 => LayerFormat::F16,
            Profile::F32 => LayerFormat::F32,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Profile {
    type Err = MlError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "int8" => Ok(Profile::Int8),
            "sandwich" => Ok(Profile::Sandwich),
            "f16" => Ok(Profile::F16),
            "f32" => Ok(Profile::F32),
            other => Err(MlError::InvalidConfig(format!(
                "unknown quantization profile `{other}` (int8, sandwich, f16, f32)"
            ))),
        }
    }
}

/// Storage format of one linear layer's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerFormat {
    /// ggml Q8_0.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// IEEE half precision (computed in f32 on CPU).
    #[serde(rename = "f16")]
    F16,
    /// f32.
    #[serde(rename = "f32")]
    F32,
}

impl LayerFormat {
    pub(crate) fn ggml(self) -> GgmlDType {
        match self {
            LayerFormat::Q8_0 => GgmlDType::Q8_0,
            LayerFormat::F16 => GgmlDType::F16,
            LayerFormat::F32 => GgmlDType::F32,
        }
    }
}

/// Which kernel the layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernel {
    /// [`Kernel::RowInt8`] below the batch threshold, [`Kernel::Dequantized`] at or above it.
    Auto,
    /// Row at a time in plain Rust: Q8_0 layers as integer dot products on the Q8_0 blocks with the input
    /// quantized to Q8_0 (no dequantized copy), float layers as f32 dot products; no tensor overhead.
    RowInt8,
    /// Always candle's `QMatMul` on the Q8_0 blocks (activations quantized to Q8_0 on the fly).
    Quantized,
    /// Always an f32 matmul on weights dequantized once (and cached) from the Q8_0 blocks.
    Dequantized,
}

/// Batch size from which [`Kernel::Auto`] switches to the dequantized copy (see docs/quantization.md
/// for the measurement behind it).
pub const DEFAULT_AUTO_THRESHOLD: usize = 8;

/// Rounds `n` up to a multiple of the Q8_0 block length.
pub fn pad32(n: usize) -> usize {
    n.div_ceil(Q8_BLOCK) * Q8_BLOCK
}

/// The architecture an exported student must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// Hidden widths, input side first.
    pub hidden: Vec<usize>,
    /// Input features.
    pub in_dim: usize,
    /// Classes.
    pub classes: usize,
}

impl Arch {
    /// The MLP architecture of `cfg`; a CNN is refused (only MLP students are quantized).
    pub fn from_config(cfg: &ModelConfig, in_dim: usize, classes: usize) -> Result<Arch> {
        cfg.validate(in_dim, classes)?;
        match cfg {
            ModelConfig::Mlp { hidden } => Ok(Arch {
                hidden: hidden.clone(),
                in_dim,
                classes,
            }),
            ModelConfig::Cnn { .. } => Err(MlError::InvalidConfig(
                "quantization supports MLP students only (got a cnn config)".into(),
            )),
        }
    }

    /// `(in, out)` of each linear layer, unpadded.
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        let mut dims = Vec::with_capacity(self.hidden.len() + 1);
        let mut prev = self.in_dim;
        for &h in &self.hidden {
            dims.push((prev, h));
            prev = h;
        }
        dims.push((prev, self.classes));
        dims
    }

    /// `(in, out)` of each linear layer as stored: inputs padded to 32, hidden outputs padded to match.
    pub fn padded_dims(&self) -> Vec<(usize, usize)> {
        let dims = self.layer_dims();
        let last = dims.len() - 1;
        dims.iter()
            .enumerate()
            .map(|(i, &(inp, out))| (pad32(inp), if i == last { out } else { pad32(out) }))
            .collect()
    }
}

/// One f32 linear layer, padded, standardization folded: `y = x W^T + b`, `w` row-major `[out, in]`.
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

/// Reads the linear layers of an MLP `Model`, folds the input standardization into the first layer and
/// pads to the stored dimensions of [`Arch::padded_dims`].
pub(crate) fn float_layers(model: &Model) -> Result<(Arch, Vec<FloatLayer>)> {
    let arch = Arch::from_config(model.config(), model.in_dim(), model.classes())?;
    let shift = var_values(model, INPUT_SHIFT)?;
    let scale = var_values(model, INPUT_SCALE)?;
    let dims = arch.layer_dims();
    let pdims = arch.padded_dims();
    let mut layers = Vec::with_capacity(dims.len());
    for (i, (&(inp, out), &(pin, pout))) in dims.iter().zip(&pdims).enumerate() {
        let w = var_values(model, &format!("layers.{i}.weight"))?;
        let b = var_values(model, &format!("layers.{i}.bias"))?;
        if w.len() != inp * out || b.len() != out {
            return Err(MlError::InvalidConfig(format!("layers.{i} has unexpected size")));
        }
        let mut pw = vec![0f32; pout * pin];
        let mut pb = vec![0f32; pout];
        for o in 0..out {
            let mut bias = f64::from(b[o]);
            for j in 0..inp {
                let mut v = w[o * inp + j];
                if i == 0 {
                    // W ((x - s) * c) = (W * c) x - (W * c) s
                    v *= scale[j];
                    bias -= f64::from(v) * f64::from(shift[j]);
                }
                pw[o * pin + j] = v;
            }
            pb[o] = bias as f32;
        }
        layers.push(FloatLayer {
            w: pw,
            b: pb,
            in_dim: pin,
            out_dim: pout,
        });
    }
    Ok((arch, layers))
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

/// Weights of one layer laid out for [`QLayer::gemv`].
#[derive(Debug)]
pub(crate) enum RowWeights {
    /// Q8_0 blocks split into scales (`out * in / 32`, f16 widened to f32) and int8 values (`out * in`).
    Q8 { d: Vec<f32>, qs: Vec<i8>, bias: Vec<f32> },
    /// f32 (or f16-rounded) weights, row-major `[out, in]`.
    F32 { w: Vec<f32>, bias: Vec<f32> },
}

/// Bytes of one Q8_0 block: an f16 scale and 32 int8 values.
const Q8_BLOCK_BYTES: usize = 34;

/// Quantizes one row to Q8_0 exactly as candle's `BlockQ8_0::from_float` (scale rounded to f16).
fn quantize_row_q8(x: &[f32], d: &mut Vec<f32>, q: &mut Vec<i8>) {
    d.clear();
    q.clear();
    for block in x.chunks(Q8_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        d.push(half::f16::from_f32(scale).to_f32());
        q.extend(block.iter().map(|v| (v * inv).round() as i8));
    }
}

/// Integer dot product of two 32-value blocks.
fn dot_block_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

/// f32 dot product with 8 independent partial sums (lets the compiler use SIMD lanes).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += xa[i] * xb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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

    fn row_weights(&self) -> Result<&RowWeights> {
        if let Some(r) = self.rows.get() {
            return Ok(r);
        }
        let bias = self.b.to_vec1::<f32>()?;
        let r = match &self.q {
            Some(q) => {
                let data = q.data()?;
                let blocks = self.out_dim * self.in_dim / Q8_BLOCK;
                if data.len() != blocks * Q8_BLOCK_BYTES {
                    return Err(MlError::InvalidConfig(format!(
                        "Q8_0 tensor holds {} bytes, expected {}",
                        data.len(),
                        blocks * Q8_BLOCK_BYTES
                    )));
                }
                let mut d = Vec::with_capacity(blocks);
                let mut qs = Vec::with_capacity(self.out_dim * self.in_dim);
                for blk in data.chunks_exact(Q8_BLOCK_BYTES) {
                    d.push(half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
                    qs.extend(blk[2..].iter().map(|&b| i8::from_le_bytes([b])));
                }
                RowWeights::Q8 { d, qs, bias }
            }
            None => RowWeights::F32 {
                w: self.weight_f32()?.flatten_all()?.to_vec1::<f32>()?,
                bias,
            },
        };
        Ok(self.rows.get_or_init(|| r))
    }

    /// One row through the layer in plain Rust: for Q8_0 the input is quantized to Q8_0 and every block
    /// product is an integer dot product scaled by both f16 scales (what candle's `vec_dot_q8_0_q8_0`
    /// computes, summed in a different order); f32/f16 layers use an f32 dot product.
    fn gemv(&self, x: &[f32], out: &mut Vec<f32>, xd: &mut Vec<f32>, xq: &mut Vec<i8>) -> Result<()> {
        out.clear();
        match self.row_weights()? {
            RowWeights::Q8 { d, qs, bias } => {
                quantize_row_q8(x, xd, xq);
                let blocks = self.in_dim / Q8_BLOCK;
                for ((wq, wd), b) in qs.chunks_exact(self.in_dim).zip(d.chunks_exact(blocks)).zip(bias) {
                    let mut acc = 0f32;
                    for (((wb, xb), dw), dx) in wq
                        .chunks_exact(Q8_BLOCK)
                        .zip(xq.chunks_exact(Q8_BLOCK))
                        .zip(wd)
                        .zip(xd.iter())
                    {
                        acc += dw * dx * dot_block_i8(wb, xb) as f32;
                    }
                    out.push(acc + b);
                }
            }
            RowWeights::F32 { w, bias } => {
                for (row, b) in w.chunks_exact(self.in_dim).zip(bias) {
                    out.push(dot_f32(row, x) + b);
                }
            }
        }
        Ok(())
    }

    fn forward(&self, x: &Tensor, quantized_kernel: bool) -> Result<Tensor> {
        let y = match (&self.q, quantized_kernel) {
            (Some(q), true) => QMatMul::QTensor(q.clone()).forward(x)?,
            _ => x.matmul(&self.weight_f32()?.t()?)?,
        };
        Ok(y.broadcast_add(&self.b)?)
    }
}

/// A quantized (or reference float) MLP student ready for inference.
#[derive(Debug)]
pub struct QuantizedModel {
    pub(crate) profile: Profile,
    pub(crate) arch: Arch,
    pub(crate) layers: Vec<QLayer>,
    kernel: Kernel,
    auto_threshold: usize,
}

impl QuantizedModel {
    /// Quantizes the layers of an MLP student per `profile` (no calibration; see
    /// [`super::ptq::quantize`] for the calibrated path with error reports).
    pub fn from_model(model: &Model, profile: Profile) -> Result<QuantizedModel> {
        let (arch, float) = float_layers(model)?;
        Self::from_float_layers(arch, &float, profile)
    }

    pub(crate) fn from_float_layers(arch: Arch, float: &[FloatLayer], profile: Profile) -> Result<QuantizedModel> {
        let n = float.len();
        let layers = float
            .iter()
            .enumerate()
            .map(|(i, l)| QLayer::quantize(profile.layer_format(i, n), l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_layers(profile, arch, layers))
    }

    pub(crate) fn from_layers(profile: Profile, arch: Arch, layers: Vec<QLayer>) -> QuantizedModel {
        QuantizedModel {
            profile,
            arch,
            layers,
            kernel: Kernel::Auto,
            auto_threshold: DEFAULT_AUTO_THRESHOLD,
        }
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The architecture (unpadded).
    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// Input features per sample.
    pub fn in_dim(&self) -> usize {
        self.arch.in_dim
    }

    /// Classes (logits per sample).
    pub fn classes(&self) -> usize {
        self.arch.classes
    }

    /// Storage format of each layer.
    pub fn layer_formats(&self) -> Vec<LayerFormat> {
        self.layers.iter().map(|l| l.format).collect()
    }

    /// Selects the kernel of the Q8_0 layers (default [`Kernel::Auto`]).
    pub fn set_kernel(&mut self, kernel: Kernel) {
        self.kernel = kernel;
    }

    /// The kernel setting.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Sets the batch size from which [`Kernel::Auto`] uses the dequantized copy.
    pub fn set_auto_threshold(&mut self, batch: usize) {
        self.auto_threshold = batch.max(1);
    }

    /// The kernel a batch of `n` rows runs on with the current setting (never `Auto`).
    pub fn kernel_for(&self, n: usize) -> Kernel {
        match self.kernel {
            Kernel::Auto if n < self.auto_threshold => Kernel::RowInt8,
            Kernel::Auto => Kernel::Dequantized,
            k => k,
        }
    }

    /// Bytes of the stored weights and biases (what the exported file holds, less its header).
    pub fn weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let w = l.in_dim * l.out_dim;
                let wb = match l.format {
                    LayerFormat::Q8_0 => w / 32 * 34,
                    LayerFormat::F16 => w * 2,
                    LayerFormat::F32 => w * 4,
                };
                wb + l.out_dim * 4
            })
            .sum()
    }

    /// Logits for `n` samples of raw features (row-major `n * in_dim`): `n * classes` values.
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.logits_kernel(x, n, self.kernel_for(n))
    }

    /// Logits through a chosen kernel (`Auto` resolves by batch size).
    pub fn logits_kernel(&self, x: &[f32], n: usize, kernel: Kernel) -> Result<Vec<f32>> {
        match kernel {
            Kernel::Auto => self.logits_kernel(x, n, self.kernel_for(n)),
            Kernel::RowInt8 => self.logits_rows(x, n),
            Kernel::Quantized => self.logits_with(x, n, true),
            Kernel::Dequantized => self.logits_with(x, n, false),
        }
    }

    /// The row-at-a-time kernel ([`Kernel::RowInt8`]).
    pub fn logits_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let d = self.arch.in_dim;
        check_features(x, n, d)?;
        let mut out = Vec::with_capacity(n * self.arch.classes);
        let mut h = vec![0f32; pad32(d)];
        let mut y = Vec::new();
        let (mut xd, mut xq) = (Vec::new(), Vec::new());
        let last = self.layers.len() - 1;
        for row in x.chunks_exact(d.max(1)).take(n) {
            h.clear();
            h.extend_from_slice(row);
            h.resize(pad32(d), 0.0);
            for (i, l) in self.layers.iter().enumerate() {
                l.gemv(&h, &mut y, &mut xd, &mut xq)?;
                if i != last {
                    for v in y.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
                std::mem::swap(&mut h, &mut y);
            }
            out.extend_from_slice(&h[..self.arch.classes]);
        }
        Ok(out)
    }

    /// Logits through a chosen kernel (`quantized_kernel`: `QMatMul` for the Q8_0 layers).
    pub fn logits_with(&self, x: &[f32], n: usize, quantized_kernel: bool) -> Result<Vec<f32>> {
        let d = self.arch.in_dim;
        check_features(x, n, d)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(n * self.arch.classes);
        for chunk in x.chunks(1024 * d) {
            let rows = chunk.len() / d;
            let t = self.input_tensor(chunk, rows)?;
            let y = self.forward_padded(&t, quantized_kernel)?;
            out.extend(y.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Pads raw rows to the first layer's stored input width.
    pub(crate) fn input_tensor(&self, x: &[f32], rows: usize) -> Result<Tensor> {
        let d = self.arch.in_dim;
        let pd = pad32(d);
        let t = if pd == d {
            Tensor::from_slice(x, (rows, d), &Device::Cpu)?
        } else {
            let mut p = vec![0f32; rows * pd];
            for (dst, src) in p.chunks_exact_mut(pd).zip(x.chunks_exact(d)) {
                dst[..d].copy_from_slice(src);
            }
            Tensor::from_vec(p, (rows, pd), &Device::Cpu)?
        };
        Ok(t)
    }

    /// Forward on padded input; returns `[rows, classes]`.
    pub(crate) fn forward_padded(&self, x: &Tensor, quantized_kernel: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h, quantized_kernel)?;
            if i != last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Per-layer outputs (after bias, before ReLU) for padded input, for calibration.
    pub(crate) fn layer_outputs(&self, x: &Tensor, quantized_kernel: bool) -> Result<Vec<Tensor>> {
        let mut h = x.clone();
        let mut outs = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let y = l.forward(&h, quantized_kernel)?;
            h = y.relu()?;
            outs.push(y);
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn inputs(n: usize, d: usize) -> Vec<f32> {
        (0..n * d).map(|i| ((i * 7919) % 256) as f32 / 255.0).collect()
    }

    #[test]
    fn f32_profile_reproduces_the_model() {
        // Folding the standardization and padding must not change the function: compared with the
        // candle forward of the same weights.
        let cfg = ModelConfig::Mlp { hidden: vec![40, 20] };
        let m = Model::new(&cfg, 50, 3, 7).expect("model");
        let x = inputs(16, 50);
        m.fit_input_normalization(&x, 16, true).expect("norm");
        let q = QuantizedModel::from_model(&m, Profile::F32).expect("quantize");
        let want = m.logits(&x, 16).expect("logits");
        let got = q.logits(&x, 16).expect("logits");
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(q.arch().padded_dims(), vec![(64, 64), (64, 32), (32, 3)]);
        let rows = q.logits_rows(&x, 16).expect("rows");
        for (a, b) in want.iter().zip(&rows) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn int8_kernels_agree_and_stay_close_to_f32() {
        let cfg = ModelConfig::Mlp { hidden: vec![64] };
        let m = Model::new(&cfg, 784, 10, 3).expect("model");
        let x = inputs(32, 784);
        let q = QuantizedModel::from_model(&m, Profile::Int8).expect("quantize");
        assert_eq!(q.layer_formats(), vec![LayerFormat::Q8_0, LayerFormat::Q8_0]);
        let f = m.logits(&x, 32).expect("f32");
        let a = q.logits_with(&x, 32, true).expect("qmatmul");
        let b = q.logits_with(&x, 32, false).expect("dequantized");
        let rel = |u: &[f32], v: &[f32]| {
            let num: f32 = u.iter().zip(v).map(|(p, q)| (p - q).powi(2)).sum();
            let den: f32 = v.iter().map(|p| p * p).sum();
            (num / den).sqrt()
        };
        // Q8_0 keeps about 2 significant digits per weight: the logits stay within a few percent.
        assert!(rel(&a, &f) < 0.05, "qmatmul rel err {}", rel(&a, &f));
        assert!(rel(&b, &f) < 0.05, "dequantized rel err {}", rel(&b, &f));
        assert!(rel(&a, &b) < 0.05);
        assert_eq!(
            (q.kernel_for(1), q.kernel_for(128)),
            (Kernel::RowInt8, Kernel::Dequantized)
        );
        // The row kernel computes what QMatMul computes (W8A8 on the same blocks), up to summation order.
        let r = q.logits_rows(&x, 32).expect("rows");
        for (u, v) in r.iter().zip(&a) {
            assert!((u - v).abs() < 1e-3 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }

    #[test]
    fn sandwich_layout_and_size() {
        let cfg = ModelConfig::Mlp { hidden: vec![64, 32] };
        let m = Model::new(&cfg, 784, 10, 1).expect("model");
        let q = QuantizedModel::from_model(&m, Profile::Sandwich).expect("quantize");
        assert_eq!(
            q.layer_formats(),
            vec![LayerFormat::F16, LayerFormat::F16, LayerFormat::Q8_0]
        );
        // 800*64*2 + 64*32*2 + 32*10/32*34 weights, plus f32 biases.
        assert_eq!(
            q.weight_bytes(),
            800 * 64 * 2 + 64 * 32 * 2 + 10 * 34 + (64 + 32 + 10) * 4
        );
        assert!("int9".parse::<Profile>().is_err());
        let cnn = ModelConfig::Cnn {
            channels: vec![4],
            hidden: 8,
        };
        let m = Model::new(&cnn, 784, 10, 1).expect("cnn");
        assert!(matches!(
            QuantizedModel::from_model(&m, Profile::Int8),
            Err(MlError::InvalidConfig(_))
        ));
    }
}
