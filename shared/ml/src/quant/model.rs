//! The deployable student: an MLP, a CNN (2-D or 1-D) or a fused model whose weight layers are stored as
//! ggml Q8_0 (INT8), f16 or f32, every input dimension padded to a multiple of 32 (Q8_0 block length). An MLP
//! has the input standardization folded into its first layer; a CNN applies it to the raw input and stores
//! its convs as im2col matrices ([`super::conv`]); a fused model folds it into its block encoders and keeps
//! its attention gate f32 ([`super::fused`]). Inference picks the int8 row kernel, candle's `QMatMul` or a
//! dequantized-once f32 copy per batch size.

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::model::{check_features, Model};

pub use super::arch::{pad32, Arch};
use super::conv::ConvStack;
use super::fused::{FusedFront, Gate};
use super::kernel::{forward_rows, ConvRows, Front, FusedRows, RowSimd};
pub(crate) use super::layer::{float_model, FloatLayer, FloatModel, QLayer};

/// Which formats the layers of a student get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Every weight layer Q8_0 (8-bit weights, one f16 scale per 32; activations quantized on the fly); a
    /// CNN's conv blocks as their im2col matrices.
    Int8,
    /// Hidden layers (a CNN's conv blocks too) f16, output layer Q8_0.
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

    /// Format of weight layer `i` of `layers` (a CNN's conv blocks count first).
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

/// A quantized (or reference float) MLP or CNN student ready for inference.
#[derive(Debug)]
pub struct QuantizedModel {
    pub(crate) profile: Profile,
    pub(crate) arch: Arch,
    /// A CNN's standardization and conv blocks; `None` for an MLP and a fused model.
    pub(crate) conv: Option<ConvStack>,
    /// A fused model's block encoders and attention gate; `None` for every other model.
    pub(crate) fused: Option<FusedFront>,
    /// The linear layers: all of an MLP's; a CNN's or a fused model's hidden layer and classifier.
    pub(crate) layers: Vec<QLayer>,
    kernel: Kernel,
    auto_threshold: usize,
}

impl QuantizedModel {
    /// Quantizes the weight layers of an MLP or CNN student per `profile` (no calibration; see
    /// [`super::ptq::quantize`] for the calibrated path with error reports). A CNN's layers, for the
    /// profile's per-layer formats, are its conv blocks then its linear layers.
    pub fn from_model(model: &Model, profile: Profile) -> Result<QuantizedModel> {
        Self::from_float(&float_model(model)?, profile)
    }

    pub(crate) fn from_float(float: &FloatModel, profile: Profile) -> Result<QuantizedModel> {
        let n = float.layers.len();
        let layers = float
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| QLayer::quantize(profile.layer_format(i, n), l))
            .collect::<Result<Vec<_>>>()?;
        Self::from_parts(
            profile,
            float.arch.clone(),
            float.norm.clone(),
            float.gate.clone(),
            layers,
        )
    }

    /// Assembles a student from its weight layers in [`FloatModel::layers`] order; `norm` is a CNN's
    /// input standardization (shift, scale) and must be there exactly when `arch` is a CNN, `gate` a fused
    /// model's attention gate, there exactly when `arch` is fused.
    pub(crate) fn from_parts(
        profile: Profile,
        arch: Arch,
        norm: Option<(Vec<f32>, Vec<f32>)>,
        gate: Option<Gate>,
        mut layers: Vec<QLayer>,
    ) -> Result<QuantizedModel> {
        let fused = match (gate, arch.is_fused()) {
            (None, false) => None,
            (Some(gate), true) if norm.is_none() => {
                let head = layers.split_off(arch.front_layers().min(layers.len()));
                let encoders = std::mem::replace(&mut layers, head);
                Some(FusedFront::new(&arch, encoders, gate)?)
            }
            _ => {
                return Err(MlError::InvalidConfig(
                    "an attention gate (and no separate standardization) belongs to a fused student only".into(),
                ))
            }
        };
        let blocks = arch.blocks();
        let conv = match norm {
            None if blocks.is_empty() => None,
            Some((shift, scale)) if !blocks.is_empty() => {
                let head = layers.split_off(blocks.len().min(layers.len()));
                let convs = std::mem::replace(&mut layers, head);
                Some(ConvStack::new(shift, scale, blocks, convs)?)
            }
            _ => {
                return Err(MlError::InvalidConfig(
                    "a separate input standardization belongs to a cnn student only".into(),
                ))
            }
        };
        Ok(QuantizedModel {
            profile,
            arch,
            conv,
            fused,
            layers,
            kernel: Kernel::Auto,
            auto_threshold: DEFAULT_AUTO_THRESHOLD,
        })
    }

    /// Every weight layer, input side first: a CNN's conv blocks (im2col) or a fused model's block
    /// encoders, then the linear layers.
    pub(crate) fn all_layers(&self) -> impl Iterator<Item = &QLayer> {
        self.conv
            .iter()
            .flat_map(|c| c.layers.iter())
            .chain(self.fused.iter().flat_map(|f| f.encoders.iter()))
            .chain(&self.layers)
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

    /// Stored parameters: every weight layer's (padded) weights and biases, and a fused model's gate.
    pub(crate) fn stored_params(&self) -> usize {
        let gate = self.fused.as_ref().map_or(0, |f| f.gate.bytes() / 4);
        gate + self
            .all_layers()
            .map(|l| l.in_dim * l.out_dim + l.out_dim)
            .sum::<usize>()
    }

    /// Storage format of each weight layer (a CNN's conv blocks or a fused model's encoders first; a fused
    /// model's attention gate is f32 in every profile and not listed).
    pub fn layer_formats(&self) -> Vec<LayerFormat> {
        self.all_layers().map(|l| l.format).collect()
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

    /// Bytes of the stored weights and biases, a CNN's f32 standardization and a fused model's f32 gate
    /// (what the exported file holds, less its header).
    pub fn weight_bytes(&self) -> usize {
        let norm =
            self.conv.as_ref().map_or(0, |c| 2 * 4 * c.in_dim()) + self.fused.as_ref().map_or(0, |f| f.gate.bytes());
        norm + self
            .all_layers()
            .map(|l| {
                let w = l.in_dim * l.out_dim;
                let wb = match l.format {
                    LayerFormat::Q8_0 => w / 32 * 34,
                    LayerFormat::F16 => w * 2,
                    LayerFormat::F32 => w * 4,
                };
                wb + l.out_dim * 4
            })
            .sum::<usize>()
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
        if let Some(f) = &self.fused {
            let weights = f.encoders.iter().map(QLayer::row_weights).collect::<Result<Vec<_>>>()?;
            let front = Front::Fused(FusedRows {
                spans: &f.spans,
                presence: f.presence,
                weights: &weights,
                gate: &f.gate,
            });
            return forward_rows(Some(&front), &layers, x, n, d, self.arch.classes, simd);
        }
        let Some(c) = &self.conv else {
            return forward_rows(None, &layers, x, n, d, self.arch.classes, simd);
        };
        let weights = c.layers.iter().map(QLayer::row_weights).collect::<Result<Vec<_>>>()?;
        let front = Front::Conv(ConvRows {
            shift: &c.shift,
            scale: &c.scale,
            blocks: &c.blocks,
            weights: &weights,
        });
        forward_rows(Some(&front), &layers, x, n, d, self.arch.classes, simd)
    }

    /// Logits through a chosen kernel (`quantized_kernel`: `QMatMul` for the Q8_0 layers).
    pub fn logits_with(&self, x: &[f32], n: usize, quantized_kernel: bool) -> Result<Vec<f32>> {
        let d = self.arch.in_dim;
        check_features(x, n, d)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(n * self.arch.classes);
        let chunk_rows = self.conv.as_ref().map_or(1024, |c| c.chunk_rows().min(1024));
        for chunk in x.chunks(chunk_rows * d) {
            let rows = chunk.len() / d;
            let t = self.input_tensor(chunk, rows)?;
            let y = self.forward_padded(&t, quantized_kernel)?;
            out.extend(y.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Raw rows as the model takes them: padded to the first layer's stored input width for an MLP, as
    /// they are for a CNN and a fused model.
    pub(crate) fn input_tensor(&self, x: &[f32], rows: usize) -> Result<Tensor> {
        let d = self.arch.in_dim;
        let pd = if self.conv.is_some() || self.fused.is_some() {
            d
        } else {
            pad32(d)
        };
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

    /// The input of the first linear layer for an [`Self::input_tensor`]: the tensor itself for an MLP, the
    /// conv blocks' features padded to 32 for a CNN (`io` as in [`ConvStack::forward`]), the fused
    /// embedding padded to 32 for a fused model (`io` as in [`FusedFront::forward`]).
    fn head_input(&self, x: &Tensor, quantized_kernel: bool, io: Option<&mut Vec<(Tensor, Tensor)>>) -> Result<Tensor> {
        let (f, flat) = match (&self.conv, &self.fused) {
            (Some(c), _) => (c.forward(x, quantized_kernel, io)?, c.flat_dim()),
            (None, Some(fu)) => (fu.forward(x, quantized_kernel, io)?, fu.embed),
            (None, None) => return Ok(x.clone()),
        };
        let padded = pad32(flat);
        Ok(if padded == flat {
            f
        } else {
            f.pad_with_zeros(1, 0, padded - flat)?
        })
    }

    /// Forward on an [`Self::input_tensor`]; returns `[rows, classes]`.
    pub(crate) fn forward_padded(&self, x: &Tensor, quantized_kernel: bool) -> Result<Tensor> {
        let mut h = self.head_input(x, quantized_kernel, None)?;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h, quantized_kernel)?;
            if i != last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    /// Per weight layer (conv blocks first), its input as it enters the weights (a conv's im2col matrix)
    /// and its output after bias, before ReLU, for an [`Self::input_tensor`]: for calibration.
    pub(crate) fn layer_io(&self, x: &Tensor, quantized_kernel: bool) -> Result<Vec<(Tensor, Tensor)>> {
        let mut io = Vec::with_capacity(self.layers.len() + self.arch.front_layers());
        let mut h = self.head_input(x, quantized_kernel, Some(&mut io))?;
        for l in &self.layers {
            let y = l.forward(&h, quantized_kernel)?;
            let next = y.relu()?;
            io.push((h, y));
            h = next;
        }
        Ok(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::quant::fakequant::Q8_BLOCK;
    use candle_core::quantized::QTensor;

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
        // A CNN's conv blocks count as hidden layers: f16, f16 (hidden linear), then the Q8_0 classifier.
        let cnn = ModelConfig::Cnn {
            channels: vec![4],
            hidden: 8,
        };
        let m = Model::new(&cnn, 784, 10, 1).expect("cnn");
        let q = QuantizedModel::from_model(&m, Profile::Sandwich).expect("quantize");
        assert_eq!(
            q.layer_formats(),
            vec![LayerFormat::F16, LayerFormat::F16, LayerFormat::Q8_0]
        );
        // conv [4, 32] f16, layers.0 [32, 4*14*14 = 784 -> 800] f16, layers.1 [10, 32] Q8_0, f32 biases,
        // and the f32 standardization (2 x 784).
        assert_eq!(
            q.weight_bytes(),
            4 * 32 * 2 + 32 * 800 * 2 + 10 * 34 + (4 + 32 + 10) * 4 + 2 * 784 * 4
        );
    }
}
