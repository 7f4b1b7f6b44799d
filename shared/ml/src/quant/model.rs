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
use super::kernel::{forward_rows, F32Rows, Q8Tiles, RowSimd, RowWeights};

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
    /// Runs on AVX2 where the CPU has it, on the baseline target elsewhere ([`RowSimd`]).
    RowInt8,
    /// Always candle's `QMatMul` on the Q8_0 blocks (activations quantized to Q8_0 on the fly).
    Quantized,
    /// Always an f32 matmul on weights dequantized once (and cached) from the Q8_0 blocks.
    Dequantized,
}

/// Batch size from which [`Kernel::Auto`] switches to the dequantized copy (see docs/quantization.md
/// for the measurement behind it: since the AVX2 row kernel, the row kernel wins up to batch 32).
pub const DEFAULT_AUTO_THRESHOLD: usize = 32;

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
    fn row_weights(&self) -> Result<&RowWeights> {
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

    /// The row-at-a-time kernel ([`Kernel::RowInt8`]) on the fastest instruction set of this CPU
    /// ([`RowSimd::detect`]).
    pub fn logits_rows(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.logits_rows_simd(x, n, RowSimd::detect())
    }

    /// The row-at-a-time kernel on a chosen instruction set (every one gives bit-identical logits; an
    /// instruction set this CPU lacks is an error).
    pub fn logits_rows_simd(&self, x: &[f32], n: usize, simd: RowSimd) -> Result<Vec<f32>> {
        let d = self.arch.in_dim;
        check_features(x, n, d)?;
        let layers = self
            .layers
            .iter()
            .map(QLayer::row_weights)
            .collect::<Result<Vec<_>>>()?;
        forward_rows(&layers, x, n, d, self.arch.classes, simd)
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

    /// The row kernel's arithmetic written the plain way, on the stored ggml bytes and candle's own Q8_0
    /// quantization of each layer's input: per output, blocks in order, `acc += (dw * dx) * dot`.
    fn reference_rows_int8(q: &QuantizedModel, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for row in x.chunks_exact(q.in_dim()).take(n) {
            let mut h = row.to_vec();
            h.resize(pad32(row.len()), 0.0);
            for (i, l) in q.layers.iter().enumerate() {
                let w = l.q.as_ref().expect("a Q8_0 layer").data().expect("bytes").into_owned();
                let t = Tensor::from_slice(&h, (1, h.len()), &Device::Cpu).expect("tensor");
                let xq = QTensor::quantize(&t, GgmlDType::Q8_0).expect("quantize");
                let xq = xq.data().expect("bytes").into_owned();
                let blocks = l.in_dim / Q8_BLOCK;
                let scale = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                let mut y = Vec::new();
                for (o, bias) in l.b.to_vec1::<f32>().expect("bias").iter().enumerate() {
                    let mut acc = 0f32;
                    for k in 0..blocks {
                        let (wb, xb) = (&w[(o * blocks + k) * 34..][..34], &xq[k * 34..][..34]);
                        let dot: i32 = wb[2..]
                            .iter()
                            .zip(&xb[2..])
                            .map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8))
                            .sum();
                        acc += scale(wb) * scale(xb) * dot as f32;
                    }
                    y.push(if i + 1 < q.layers.len() {
                        (acc + bias).max(0.0)
                    } else {
                        acc + bias
                    });
                }
                h = y;
            }
            out.extend_from_slice(&h[..q.classes()]);
        }
        out
    }

    #[test]
    fn row_kernel_gives_the_same_logits_on_every_instruction_set() {
        use rand::{Rng, SeedableRng};
        // Odd sizes: inputs padded to 32 (50 -> 64, 800 -> 800, 33 -> 64), hidden widths padded, output
        // rows not a multiple of the 8-row tile; raw (unstandardized) inputs of both signs, and zeros.
        let cases: [(&[usize], usize, usize, Profile); 5] = [
            (&[40, 20], 50, 3, Profile::Int8),
            (&[128], 784, 10, Profile::Int8),
            (&[7], 33, 2, Profile::Int8),
            (&[64, 32], 784, 10, Profile::Sandwich),
            (&[40, 20], 50, 3, Profile::F32),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let best = RowSimd::detect();
        for (seed, &(hidden, d, c, profile)) in cases.iter().enumerate() {
            let cfg = ModelConfig::Mlp {
                hidden: hidden.to_vec(),
            };
            let m = Model::new(&cfg, d, c, seed as u64).expect("model");
            let n = 9;
            let mut x: Vec<f32> = (0..n * d).map(|_| rng.random_range(-4.0f32..4.0)).collect();
            x[..d].fill(0.0);
            let q = QuantizedModel::from_model(&m, profile).expect("quantize");
            let portable = q.logits_rows_simd(&x, n, RowSimd::Portable).expect("portable");
            let fast = q.logits_rows_simd(&x, n, best).expect("fast");
            assert_eq!(portable.len(), n * c);
            // Same operations in the same order on every instruction set: equal to the bit.
            for (i, (a, b)) in portable.iter().zip(&fast).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{profile} {hidden:?} logit {i}: {a} vs {b} ({best})"
                );
            }
            assert_eq!(q.logits_rows(&x, n).expect("rows"), fast);
            if profile == Profile::Int8 {
                // Not merely self-consistent: the very numbers of the plain per-block computation.
                let want = reference_rows_int8(&q, &x, n);
                for (a, b) in portable.iter().zip(&want) {
                    assert_eq!(a.to_bits(), b.to_bits(), "{hidden:?}: {a} vs reference {b}");
                }
            }
            // And what candle computes on the same blocks, up to summation order.
            let reference = q.logits_with(&x, n, profile != Profile::F32).expect("candle");
            for (a, b) in portable.iter().zip(&reference) {
                assert!(
                    (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                    "{profile} {hidden:?}: {a} vs {b}"
                );
            }
        }
        if !RowSimd::Avx2.is_available() {
            let cfg = ModelConfig::Mlp { hidden: vec![8] };
            let q = QuantizedModel::from_model(&Model::new(&cfg, 4, 2, 1).expect("model"), Profile::Int8)
                .expect("quantize");
            assert!(q.logits_rows_simd(&[0.0; 4], 1, RowSimd::Avx2).is_err());
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
