// Over 800 lines: every architecture's config, validation, tensor specs, build and forward in one place (the fused model's own parts live in model/fused.rs), plus the checkpoint I/O and standardization they share.
//! Model architectures (MLP, small CNN, 1-D CNN for time series, and the fused model for tabular tasks in
//! modality blocks) in candle's idiom, with seeded init and safetensors checkpoints.
//!
//! Weights live in a `VarMap`; linear layers are named `layers.{i}.weight` ([out, in]) and
//! `layers.{i}.bias`, convolutions `convs.{i}.weight` ([out, in, 3, 3], or [out, in, kernel] for a 1-D CNN)
//! / `convs.{i}.bias`, a fused model's block encoders `encoders.{k}.*` and its attention gate `gate.*`, so
//! the quantization code can walk them by name. The input standardization
//! (`input.shift`, `input.scale`, one value per feature) is stored beside the weights so a checkpoint is
//! self-contained; it is not trained and not counted in `params()`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{MlError, Result};

mod conv1d;
mod features;
pub(crate) mod fused;
pub(crate) use conv1d::max_pool1d;
#[cfg(test)]
pub(crate) use conv1d::{bump_task, bump_teacher};
pub use conv1d::{CNN1D_DEFAULT_IN_CHANNELS, CNN1D_DEFAULT_KERNEL};
pub use features::FeatureShape;
pub use fused::{DropRate, FUSED_DEFAULT_DROPOUT};

/// Largest width/channel count accepted from a config file; bounds memory before anything is allocated.
const MAX_WIDTH: usize = 65_536;
/// Largest number of hidden layers accepted from a config file.
const MAX_DEPTH: usize = 16;
/// Name of the per-feature shift applied before the first layer.
pub const INPUT_SHIFT: &str = "input.shift";
/// Name of the per-feature scale applied after the shift.
pub const INPUT_SCALE: &str = "input.scale";

/// Architecture of a model; teachers may differ per institution, the student is shared.
///
/// TOML: `kind = "mlp"` with `hidden = [512, 256]`, `kind = "cnn"` with `channels = [16, 32]` and
/// `hidden = 128`, `kind = "cnn1d"` with `channels = [16, 32]`, `hidden = 64` and optionally
/// `in_channels` (default 1) and `kernel` (default 5), or `kind = "fused"` with `embed = 16`, `hidden = 16`,
/// `blocks = [127, 8]` and optionally `dropout` (default 0.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// Fully connected ReLU network; `hidden` lists the hidden widths (may be empty: logistic regression).
    Mlp {
        /// Widths of the hidden layers, input side first.
        hidden: Vec<usize>,
    },
    /// Square single-channel images: per entry of `channels` a 3x3 conv (padding 1), ReLU and 2x2
    /// max-pool; then a hidden linear layer and the classifier.
    Cnn {
        /// Output channels of each conv block.
        channels: Vec<usize>,
        /// Width of the hidden linear layer after the conv blocks.
        hidden: usize,
    },
    /// Time series of `in_channels` channels: a sample's `in_dim = in_channels * length` values are
    /// channel-major (value `c * length + t` is channel `c` at time `t`). Per entry of `channels` a 1-D conv
    /// of `kernel` taps (padding `kernel / 2`, same length), ReLU and a max-pool of 2 with stride 2 (floor:
    /// 25 steps pool to 12); then a hidden linear layer and the classifier.
    Cnn1d {
        /// Channels of each time step (1: a univariate series); 1 when absent.
        #[serde(default = "conv1d::default_in_channels")]
        in_channels: usize,
        /// Output channels of each conv block.
        channels: Vec<usize>,
        /// Width of the hidden linear layer after the conv blocks.
        hidden: usize,
        /// Taps of every conv kernel, odd, in 3..=15; 5 when absent.
        #[serde(default = "conv1d::default_kernel")]
        kernel: usize,
    },
    /// A tabular task in modality blocks (the task card's `[[modalities]]`): the inputs are the blocks'
    /// inputs one after the other, then one presence input per block (1 present, 0 absent). Per block an
    /// encoder (Linear to `embed`, ReLU); gated attention over the block embeddings, softmax over the
    /// blocks a row holds (Ilse et al. 2018); the weighted sum, a hidden linear layer (ReLU) and the
    /// classifier. In training each present block is dropped with probability `dropout` (never every block
    /// of a row), seeded.
    Fused {
        /// Width of each block's embedding (and of the attention gate).
        embed: usize,
        /// Width of the hidden linear layer after the fusion.
        hidden: usize,
        /// Model inputs of each block, in the card's order (`ModalityRange::width`); left out (empty), a
        /// participant fills them from its task card (`ModelConfig::with_blocks`).
        #[serde(default)]
        blocks: Vec<usize>,
        /// Modality dropout: the probability of dropping each present block of a training row; 0.2 when
        /// absent.
        #[serde(default = "fused::default_dropout")]
        dropout: DropRate,
    },
}

impl ModelConfig {
    /// Checks that the architecture can be built for `in_dim` features and `classes` classes.
    pub fn validate(&self, in_dim: usize, classes: usize) -> Result<()> {
        if in_dim == 0 || in_dim > 1 << 24 {
            return Err(MlError::InvalidConfig(format!(
                "input dimension {in_dim} out of range 1..=16777216"
            )));
        }
        // One output is a regressor (`crate::regression`); a classifier has at least two classes.
        if !(1..=MAX_WIDTH).contains(&classes) {
            return Err(MlError::InvalidConfig(format!(
                "number of outputs {classes} out of range 1..={MAX_WIDTH} (1: a regressor, else classes)"
            )));
        }
        match self {
            ModelConfig::Mlp { hidden } => {
                if hidden.len() > MAX_DEPTH {
                    return Err(MlError::InvalidConfig(format!(
                        "{} hidden layers, at most {MAX_DEPTH}",
                        hidden.len()
                    )));
                }
                check_widths("hidden", hidden)
            }
            ModelConfig::Cnn { channels, hidden } => {
                if channels.is_empty() || channels.len() > 4 {
                    return Err(MlError::InvalidConfig(format!(
                        "cnn needs 1..=4 conv blocks, got {}",
                        channels.len()
                    )));
                }
                check_widths("channels", channels)?;
                check_widths("hidden", &[*hidden])?;
                let side = image_side(in_dim).ok_or_else(|| {
                    MlError::InvalidConfig(format!(
                        "cnn needs a square single-channel image, {in_dim} is not a square"
                    ))
                })?;
                let div = 1usize << channels.len();
                if side % div != 0 {
                    return Err(MlError::InvalidConfig(format!(
                        "cnn with {} pooling blocks needs an image side divisible by {div}, got {side}",
                        channels.len()
                    )));
                }
                Ok(())
            }
            ModelConfig::Cnn1d {
                in_channels,
                channels,
                hidden,
                kernel,
            } => conv1d::validate(*in_channels, channels, *hidden, *kernel, in_dim),
            ModelConfig::Fused {
                embed,
                hidden,
                blocks,
                dropout,
            } => fused::validate(*embed, *hidden, blocks, *dropout, in_dim),
        }
    }
}

fn check_widths(what: &str, widths: &[usize]) -> Result<()> {
    for &w in widths {
        if w == 0 || w > MAX_WIDTH {
            return Err(MlError::InvalidConfig(format!(
                "{what} width {w} out of range 1..={MAX_WIDTH}"
            )));
        }
    }
    Ok(())
}

fn image_side(in_dim: usize) -> Option<usize> {
    let side = (in_dim as f64).sqrt().round() as usize;
    (side * side == in_dim).then_some(side)
}

/// The shape of every tensor of an architecture, in a fixed order (name, dims).
fn tensor_specs(cfg: &ModelConfig, in_dim: usize, classes: usize) -> Vec<(String, Vec<usize>)> {
    let mut specs = vec![
        (INPUT_SHIFT.to_string(), vec![in_dim]),
        (INPUT_SCALE.to_string(), vec![in_dim]),
    ];
    let linear = |specs: &mut Vec<(String, Vec<usize>)>, i: usize, inp: usize, out: usize| {
        specs.push((format!("layers.{i}.weight"), vec![out, inp]));
        specs.push((format!("layers.{i}.bias"), vec![out]));
    };
    match cfg {
        ModelConfig::Mlp { hidden } => {
            let mut prev = in_dim;
            for (i, &h) in hidden.iter().enumerate() {
                linear(&mut specs, i, prev, h);
                prev = h;
            }
            linear(&mut specs, hidden.len(), prev, classes);
        }
        ModelConfig::Cnn { channels, hidden } => {
            let mut side = image_side(in_dim).unwrap_or(1);
            let mut prev = 1;
            for (i, &c) in channels.iter().enumerate() {
                specs.push((format!("convs.{i}.weight"), vec![c, prev, 3, 3]));
                specs.push((format!("convs.{i}.bias"), vec![c]));
                prev = c;
                side /= 2;
            }
            linear(&mut specs, 0, prev * side * side, *hidden);
            linear(&mut specs, 1, *hidden, classes);
        }
        ModelConfig::Cnn1d {
            in_channels,
            channels,
            hidden,
            kernel,
        } => {
            let mut prev = *in_channels;
            for (i, &c) in channels.iter().enumerate() {
                specs.push((format!("convs.{i}.weight"), vec![c, prev, *kernel]));
                specs.push((format!("convs.{i}.bias"), vec![c]));
                prev = c;
            }
            let len = conv1d::pooled_lengths(in_dim, *in_channels, channels.len())
                .last()
                .copied()
                .unwrap_or(0);
            linear(&mut specs, 0, prev * len, *hidden);
            linear(&mut specs, 1, *hidden, classes);
        }
        ModelConfig::Fused {
            embed, hidden, blocks, ..
        } => fused::tensor_specs(*embed, *hidden, blocks, classes, &mut specs),
    }
    specs
}

/// The network built from the VarMap; forward expects already standardized input.
enum Net {
    Mlp(Vec<Linear>),
    Cnn {
        convs: Vec<Conv2d>,
        side: usize,
        head: Vec<Linear>,
    },
    Cnn1d {
        convs: conv1d::Conv1dStack,
        head: Vec<Linear>,
    },
    /// Boxed: its gate tensors and dropout generator make it several times larger than the other variants.
    Fused(Box<fused::FusedNet>),
}

impl Net {
    /// The network of `cfg` on the VarBuilder's tensors; `seed` seeds what training draws inside the
    /// network (a fused model's modality dropout).
    fn build(cfg: &ModelConfig, in_dim: usize, classes: usize, vb: &VarBuilder, seed: u64) -> Result<Net> {
        let layer = |i: usize, inp: usize, out: usize| -> Result<Linear> {
            let vb = vb.pp("layers").pp(i.to_string());
            let w = vb.get((out, inp), "weight")?;
            let b = vb.get(out, "bias")?;
            Ok(Linear::new(w, Some(b)))
        };
        Ok(match cfg {
            ModelConfig::Mlp { hidden } => {
                let mut layers = Vec::new();
                let mut prev = in_dim;
                for (i, &h) in hidden.iter().enumerate() {
                    layers.push(layer(i, prev, h)?);
                    prev = h;
                }
                layers.push(layer(hidden.len(), prev, classes)?);
                Net::Mlp(layers)
            }
            ModelConfig::Cnn { channels, hidden } => {
                let side =
                    image_side(in_dim).ok_or_else(|| MlError::InvalidConfig("cnn input is not square".into()))?;
                let mut convs = Vec::new();
                let mut prev = 1;
                let mut s = side;
                for (i, &c) in channels.iter().enumerate() {
                    let vbc = vb.pp("convs").pp(i.to_string());
                    let w = vbc.get((c, prev, 3, 3), "weight")?;
                    let b = vbc.get(c, "bias")?;
                    let conv_cfg = Conv2dConfig {
                        padding: 1,
                        ..Default::default()
                    };
                    convs.push(Conv2d::new(w, Some(b), conv_cfg));
                    prev = c;
                    s /= 2;
                }
                let head = vec![layer(0, prev * s * s, *hidden)?, layer(1, *hidden, classes)?];
                Net::Cnn { convs, side, head }
            }
            ModelConfig::Cnn1d {
                in_channels,
                channels,
                hidden,
                kernel,
            } => {
                let (convs, flat) = conv1d::Conv1dStack::build(*in_channels, channels, *kernel, in_dim, vb)?;
                let head = vec![layer(0, flat, *hidden)?, layer(1, *hidden, classes)?];
                Net::Cnn1d { convs, head }
            }
            ModelConfig::Fused {
                embed,
                hidden,
                blocks,
                dropout,
            } => Net::Fused(Box::new(fused::FusedNet::build(
                *embed, *hidden, blocks, *dropout, classes, vb, seed,
            )?)),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Net::Mlp(layers) => {
                let mut h = x.clone();
                let last = layers.len() - 1;
                for (i, l) in layers.iter().enumerate() {
                    h = l.forward(&h)?;
                    if i != last {
                        h = h.relu()?;
                    }
                }
                Ok(h)
            }
            Net::Cnn { convs, side, head } => {
                let n = x.dim(0)?;
                let mut h = x.reshape((n, 1, *side, *side))?;
                for c in convs {
                    h = c.forward(&h)?.relu()?.max_pool2d(2)?;
                }
                let h = h.flatten_from(1)?;
                let h = head[0].forward(&h)?.relu()?;
                head[1].forward(&h)
            }
            Net::Cnn1d { convs, head } => {
                let h = convs.forward(x, None)?.flatten_from(1)?;
                let h = head[0].forward(&h)?.relu()?;
                head[1].forward(&h)
            }
            Net::Fused(f) => f.forward(x, None),
        }
    }
}

/// A classifier: architecture, weights (in a `VarMap`), input dimension and number of classes.
pub struct Model {
    cfg: ModelConfig,
    in_dim: usize,
    classes: usize,
    varmap: VarMap,
    net: Net,
    shift: Tensor,
    scale: Tensor,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("cfg", &self.cfg)
            .field("in_dim", &self.in_dim)
            .field("classes", &self.classes)
            .field("params", &self.params())
            .finish()
    }
}

impl Model {
    /// Builds a model with weights drawn from a ChaCha8 RNG seeded with `seed` (PyTorch's default
    /// uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases), identity input standardization.
    pub fn new(cfg: &ModelConfig, in_dim: usize, classes: usize, seed: u64) -> Result<Model> {
        cfg.validate(in_dim, classes)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = HashMap::new();
        let specs = tensor_specs(cfg, in_dim, classes);
        let dims_of: HashMap<String, Vec<usize>> = specs.iter().cloned().collect();
        for (name, dims) in specs {
            let numel: usize = dims.iter().product();
            let data: Vec<f32> = if name == INPUT_SHIFT {
                vec![0.0; numel]
            } else if name == INPUT_SCALE {
                vec![1.0; numel]
            } else {
                let weight_dims = name
                    .strip_suffix(".bias")
                    .and_then(|p| dims_of.get(&format!("{p}.weight")));
                let fan_in = fan_in(weight_dims.unwrap_or(&dims));
                let bound = 1.0 / (fan_in as f32).sqrt();
                (0..numel).map(|_| rng.random_range(-bound..bound)).collect()
            };
            values.insert(name, Tensor::from_vec(data, dims, &Device::Cpu)?);
        }
        Self::from_tensors(cfg, in_dim, classes, values, seed)
    }

    /// A model of `cfg` on `values`; `seed` seeds the draws of its training (a fused model's modality
    /// dropout).
    fn from_tensors(
        cfg: &ModelConfig,
        in_dim: usize,
        classes: usize,
        values: HashMap<String, Tensor>,
        seed: u64,
    ) -> Result<Model> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| MlError::InvalidConfig("varmap lock poisoned".into()))?;
            for (name, t) in values {
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = Net::build(cfg, in_dim, classes, &vb, seed)?;
        let shift = vb.get(in_dim, INPUT_SHIFT)?;
        let scale = vb.get(in_dim, INPUT_SCALE)?;
        Ok(Model {
            cfg: cfg.clone(),
            in_dim,
            classes,
            varmap,
            net,
            shift,
            scale,
        })
    }

    /// Input dimension (features per sample).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Number of classes (logits per sample).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The weights, by name (see the module doc for the naming scheme).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Trainable tensors (everything but the input standardization), sorted by name for determinism.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut vars: Vec<(String, Var)> = match self.varmap.data().lock() {
            Ok(d) => d
                .iter()
                .filter(|(k, _)| !k.starts_with("input."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Number of trainable parameters (weights and biases; not the input standardization).
    pub fn params(&self) -> usize {
        self.trainable_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Sets the input standardization from samples: `(x - mean) / std`, per feature when
    /// `per_feature` (tabular data), else one global mean/std (images). A zero std maps to scale 1.
    ///
    /// A fused model reads its presence inputs as they are (shift 0, scale 1 whatever the data), and fits
    /// each block's statistics on the rows that hold the block (identity where none does).
    pub fn fit_input_normalization(&self, x: &[f32], n: usize, per_feature: bool) -> Result<()> {
        check_features(x, n, self.in_dim)?;
        let d = self.in_dim;
        let (shift, scale) = match &self.net {
            Net::Fused(f) => fused::standardization(f, x, n, d, per_feature),
            _ => standardization(x, n, d, per_feature),
        };
        self.set_var(INPUT_SHIFT, Tensor::from_vec(shift, d, &Device::Cpu)?)?;
        self.set_var(INPUT_SCALE, Tensor::from_vec(scale, d, &Device::Cpu)?)?;
        Ok(())
    }

    /// True when the input standardization is still the identity (never fitted or loaded).
    pub fn normalization_is_identity(&self) -> Result<bool> {
        let shift = self.shift.flatten_all()?.to_vec1::<f32>()?;
        let scale = self.scale.flatten_all()?.to_vec1::<f32>()?;
        Ok(shift.iter().all(|&v| v == 0.0) && scale.iter().all(|&v| v == 1.0))
    }

    fn set_var(&self, name: &str, value: Tensor) -> Result<()> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| MlError::InvalidConfig("varmap lock poisoned".into()))?;
        let var = data
            .get(name)
            .ok_or_else(|| MlError::InvalidConfig(format!("model has no tensor {name}")))?;
        var.set(&value)?;
        Ok(())
    }

    /// Applies the stored standardization to raw features, in plain Rust (used to prepare whole
    /// training sets once instead of per batch).
    pub fn standardize(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        check_features(x, n, self.in_dim)?;
        let shift = self.shift.to_vec1::<f32>()?;
        let scale = self.scale.to_vec1::<f32>()?;
        let d = self.in_dim;
        let mut out = x.to_vec();
        for row in out.chunks_exact_mut(d) {
            for ((v, s), c) in row.iter_mut().zip(&shift).zip(&scale) {
                *v = (*v - s) * c;
            }
        }
        Ok(out)
    }

    /// For an MLP, each linear layer's (weight [out, in], bias [out]) tensors, input side first
    /// (the same tensors as the `VarMap`'s variables); `None` for a CNN (2-D or 1-D).
    pub fn mlp_layers(&self) -> Option<Vec<(Tensor, Tensor)>> {
        match &self.net {
            Net::Mlp(layers) => layers
                .iter()
                .map(|l| l.bias().map(|b| (l.weight().clone(), b.clone())))
                .collect(),
            Net::Cnn { .. } | Net::Cnn1d { .. } | Net::Fused(_) => None,
        }
    }

    /// Forward pass on a tensor of already standardized inputs `[n, in_dim]`: logits `[n, classes]`.
    pub fn forward_standardized(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward(x)?)
    }

    /// Forward pass on a tensor of raw inputs `[n, in_dim]`: logits `[n, classes]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.broadcast_sub(&self.shift)?.broadcast_mul(&self.scale)?;
        self.forward_standardized(&x)
    }

    /// Logits for `n` samples of raw features (row-major `n * in_dim`); returns `n * classes` values.
    pub fn logits(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        check_features(x, n, self.in_dim)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(n * self.classes);
        // Bounded chunks keep the activations of large transfer sets in memory.
        for chunk in x.chunks(1024 * self.in_dim) {
            let rows = chunk.len() / self.in_dim;
            let t = Tensor::from_slice(chunk, (rows, self.in_dim), &Device::Cpu)?;
            let logits = self.forward(&t)?;
            out.extend(logits.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Softmax of logits / `temperature` for `n` samples; `n * classes` values, rows sum to 1.
    pub fn probabilities(&self, x: &[f32], n: usize, temperature: f32) -> Result<Vec<f32>> {
        check_temperature(temperature)?;
        let logits = self.logits(x, n)?;
        Ok(softmax_rows(&logits, self.classes, temperature))
    }

    /// The safetensors bytes of all tensors (sorted by name), exactly as `save` writes them.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let tensors = self.named_tensors()?;
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in tensors {
            let dims = t.dims().to_vec();
            let bytes: Vec<u8> = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            owned.push((name, dims, bytes));
        }
        let mut views = Vec::new();
        for (name, dims, bytes) in &owned {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims.clone(), bytes)
                .map_err(|e| MlError::InvalidConfig(format!("safetensors view of {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        safetensors::tensor::serialize(views, None)
            .map_err(|e| MlError::InvalidConfig(format!("safetensors serialization: {e}")))
    }

    fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| MlError::InvalidConfig("varmap lock poisoned".into()))?;
        let mut v: Vec<(String, Tensor)> = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Size in bytes of the safetensors checkpoint.
    pub fn serialized_size(&self) -> Result<usize> {
        Ok(self.to_safetensors()?.len())
    }

    /// Writes all tensors (weights and input standardization) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|source| MlError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Loads a checkpoint written by `save` for the given architecture; every expected tensor must be
    /// present with its exact shape, as f32, with finite values.
    pub fn load(cfg: &ModelConfig, in_dim: usize, classes: usize, path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path).map_err(|source| MlError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_safetensors(cfg, in_dim, classes, &bytes).map_err(|e| match e {
            MlError::Checkpoint { reason, .. } => MlError::Checkpoint {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Same as `load`, from bytes in memory.
    pub fn from_safetensors(cfg: &ModelConfig, in_dim: usize, classes: usize, bytes: &[u8]) -> Result<Model> {
        cfg.validate(in_dim, classes)?;
        let bad = |reason: String| MlError::Checkpoint {
            path: "<memory>".into(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let mut values = HashMap::new();
        for (name, dims) in tensor_specs(cfg, in_dim, classes) {
            let view = st.tensor(&name).map_err(|_| bad(format!("missing tensor {name}")))?;
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!("tensor {name} has dtype {:?}, expected F32", view.dtype())));
            }
            if view.shape() != dims.as_slice() {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, expected {dims:?}",
                    view.shape()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if data.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("tensor {name} holds NaN or Inf")));
            }
            values.insert(name, Tensor::from_vec(data, dims, &Device::Cpu)?);
        }
        if st.len() != values.len() {
            return Err(bad(format!("{} tensors, expected {}", st.len(), values.len())));
        }
        fused::check_presence_identity(cfg, &values).map_err(bad)?;
        // What training draws inside a loaded model (modality dropout) is seeded by the checkpoint's bytes.
        let seed = u64::from_le_bytes(
            Sha256::digest(bytes)[..8]
                .try_into()
                .expect("a SHA-256 digest is longer than 8 bytes"),
        );
        Self::from_tensors(cfg, in_dim, classes, values, seed)
    }

    /// SHA-256 over every tensor in name order: name, 0x00, dims (u64 LE each), 0x00, f32 LE values.
    pub fn weights_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        if let Ok(tensors) = self.named_tensors() {
            for (name, t) in tensors {
                h.update(name.as_bytes());
                h.update([0u8]);
                for d in t.dims() {
                    h.update((*d as u64).to_le_bytes());
                }
                h.update([0u8]);
                if let Ok(v) = t.flatten_all().and_then(|t| t.to_vec1::<f32>()) {
                    for x in v {
                        h.update(x.to_le_bytes());
                    }
                }
            }
        }
        let out = h.finalize();
        let mut d = [0u8; 32];
        d.copy_from_slice(&out);
        d
    }

    /// Copies all weights from `other` (same architecture and shapes).
    pub fn copy_weights_from(&self, other: &Model) -> Result<()> {
        for (name, t) in other.named_tensors()? {
            self.set_var(&name, t.copy()?)?;
        }
        Ok(())
    }
}

/// candle's `Module`: raw features `[n, in_dim]` to logits `[n, classes]` (standardization included).
impl Module for Model {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let x = xs.broadcast_sub(&self.shift)?.broadcast_mul(&self.scale)?;
        self.net.forward(&x)
    }
}

/// Fan-in of a weight shaped [out, in, ...] (biases use their weight's), as PyTorch's default init does.
fn fan_in(weight_dims: &[usize]) -> usize {
    weight_dims.iter().skip(1).product::<usize>().max(1)
}

/// Mean/std standardization parameters (shift, scale) for row-major `x` of `n` rows and `d` columns.
pub(crate) fn standardization(x: &[f32], n: usize, d: usize, per_feature: bool) -> (Vec<f32>, Vec<f32>) {
    if n == 0 {
        return (vec![0.0; d], vec![1.0; d]);
    }
    if per_feature {
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for row in x.chunks_exact(d) {
            for j in 0..d {
                mean[j] += row[j] as f64;
                sq[j] += (row[j] as f64) * (row[j] as f64);
            }
        }
        let mut shift = Vec::with_capacity(d);
        let mut scale = Vec::with_capacity(d);
        for j in 0..d {
            let m = mean[j] / n as f64;
            let var = (sq[j] / n as f64 - m * m).max(0.0);
            let sd = var.sqrt();
            shift.push(m as f32);
            scale.push(if sd > 1e-8 { (1.0 / sd) as f32 } else { 1.0 });
        }
        (shift, scale)
    } else {
        let total = (n * d) as f64;
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / total;
        let var = (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / total).max(0.0);
        let sd = var.sqrt();
        let s = if sd > 1e-8 { (1.0 / sd) as f32 } else { 1.0 };
        (vec![m as f32; d], vec![s; d])
    }
}

/// Checks a feature buffer: `n * dim` finite values.
pub fn check_features(x: &[f32], n: usize, dim: usize) -> Result<()> {
    if n.checked_mul(dim) != Some(x.len()) {
        return Err(MlError::InvalidInput(format!(
            "features hold {} values, expected n * dim = {n} * {dim}",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(MlError::InvalidInput(format!(
            "feature value at sample {}, column {} is {} (NaN or Inf)",
            i / dim.max(1),
            i % dim.max(1),
            x[i]
        )));
    }
    Ok(())
}

/// Checks that a temperature is finite and positive.
pub fn check_temperature(t: f32) -> Result<()> {
    if !(t.is_finite() && t > 0.0) {
        return Err(MlError::InvalidHyperParameter(format!(
            "temperature must be finite and > 0, got {t}"
        )));
    }
    Ok(())
}

/// Row-wise softmax of `logits / t` (rows of `classes` values); `-inf` logits give probability 0.
pub fn softmax_rows(logits: &[f32], classes: usize, t: f32) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    for (row, o) in logits.chunks_exact(classes).zip(out.chunks_exact_mut(classes)) {
        softmax_into(row, t, o);
    }
    out
}

/// Softmax of one row of logits divided by `t`, written into `out`.
pub(crate) fn softmax_into(row: &[f32], t: f32, out: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0f32;
    for (o, &z) in out.iter_mut().zip(row) {
        let e = if z == f32::NEG_INFINITY {
            0.0
        } else {
            ((z - max) / t).exp()
        };
        *o = e;
        sum += e;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Index of the largest value of a row (first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Helper for tests and callers holding a candle tensor: row-wise argmax of a `[n, c]` tensor.
pub fn argmax_tensor(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

#[cfg(test)]
mod tests;
