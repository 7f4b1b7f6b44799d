// Over 800 lines: the GGUF and f16 safetensors writers and readers of four kinds of student (MLP, CNN, 1-D CNN, fused) and the model card; tests in export/tests.rs.
//! Export and import of deployable students (MLP, CNN, 1-D CNN or fused): GGUF for quantized profiles (int8,
//! sandwich), safetensors for float ones (f16 with metadata; f32 is the student's own checkpoint), and a
//! JSON model card beside the file. Loading checks every tensor's name, dtype and shape against the expected
//! architecture. A CNN's files also hold its input standardization (`input.shift`, `input.scale`, f32) and
//! its conv blocks (`convs.{i}.weight` / `.bias`: in GGUF the stored im2col matrix, in f16 safetensors the
//! unpadded `[out, in, 3, 3]` kernel, `[out, in, kernel]` for a 1-D CNN). A fused model's files hold its
//! block encoders (`encoders.{k}.weight` / `.bias`, standardization folded in: in GGUF `[embed,
//! pad32(width)]` in the layer's format, in f16 safetensors the unpadded `[embed, width]`) and its attention
//! gate (`gate.v.weight`, `gate.v.bias`, `gate.u.weight`, `gate.u.bias`, `gate.w.weight`), f32 in both.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{MlError, Result};
use crate::model::{Model, INPUT_SCALE, INPUT_SHIFT};

use super::arch::{Conv1dArch, FusedArch};
use super::fused::{Gate, GATE_TENSORS};
use super::model::{pad32, Arch, LayerFormat, Profile, QLayer, QuantizedModel};
use super::ptq::PtqReport;

/// `general.architecture` of our GGUF files of MLP students.
pub const GGUF_ARCH: &str = "fedistill-mlp";
/// `general.architecture` of our GGUF files of CNN students (which also carry `fedistill.channels` and
/// `fedistill.conv_layout`).
pub const GGUF_ARCH_CNN: &str = "fedistill-cnn";
/// `fedistill.conv_layout` of a CNN's GGUF: each block a 3x3 conv with padding 1 stored as its im2col
/// matrix `[out, pad32(in * 9)]` (column `c * 9 + ky * 3 + kx`), then ReLU and a 2x2 max-pool; the
/// flattened (channel, row, column) features enter `layers.0`.
pub const CONV_LAYOUT: &str = "im2col3x3_pad1_relu_maxpool2";
/// `general.architecture` of our GGUF files of 1-D CNN students (which also carry `fedistill.channels`,
/// `fedistill.in_channels`, `fedistill.kernel` and `fedistill.conv_layout`).
pub const GGUF_ARCH_CNN1D: &str = "fedistill-cnn1d";
/// `fedistill.conv_layout` of a 1-D CNN's GGUF: the input's values channel-major (`c * length + t`); each
/// block a conv of `k` taps (`fedistill.kernel`) with padding `k / 2` stored as its im2col matrix
/// `[out, pad32(in * k)]` (column `c * k + j`), then ReLU and a max-pool of 2 (floor); the flattened
/// (channel, step) features enter `layers.0`.
pub const CONV1D_LAYOUT: &str = "im2col1d_same_relu_maxpool2";
/// `general.architecture` of our GGUF files of fused students (which also carry `fedistill.embed`,
/// `fedistill.blocks` and `fedistill.fusion_layout`).
pub const GGUF_ARCH_FUSED: &str = "fedistill-fused";
/// `fedistill.fusion_layout` of a fused student's GGUF: the input is each block's values one block after the
/// other (`fedistill.blocks` wide), then one presence input per block (>= 0.5: present); each block's
/// encoder (`encoders.{k}`, `[embed, pad32(width)]`, the block's columns zero-padded) and ReLU give its
/// embedding; the gate scores each present block `gate.w . (tanh(gate.v e + b) * sigmoid(gate.u e + b))`,
/// a softmax over the present blocks weighs the embeddings, and their sum enters `layers.0`.
pub const FUSION_LAYOUT: &str = "encoders_relu_gated_attention_presence_last";
/// Version of the GGUF metadata layout (`fedistill.format_version`).
pub const FORMAT_VERSION: u32 = 1;
/// Version of the model card layout.
pub const CARD_VERSION: u32 = 1;

/// A dataset reference recorded in the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// Catalog name.
    pub name: String,
    /// Hex SHA-256 digest of the public transfer set (the calibration data).
    pub public_digest: String,
    /// Test samples the metrics were measured on.
    pub test_samples: usize,
}

/// The model card written beside every exported student (`<file>.card.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card layout version.
    pub card_version: u32,
    /// Profile of the exported student.
    pub profile: Profile,
    /// File name of the weights (same directory as the card).
    pub file: String,
    /// `gguf` or `safetensors`.
    pub file_format: String,
    /// Size of the weights file.
    pub file_bytes: u64,
    /// Hex SHA-256 of the whole weights file.
    pub file_sha256: String,
    /// Hex SHA-256 over the stored tensors (see docs/quantization.md for the byte layout).
    pub weights_sha256: String,
    /// Hex `Model::weights_digest` of the f32 student it was made from.
    pub source_weights_sha256: String,
    /// Architecture.
    pub arch: Arch,
    /// Storage format of each weight layer (a CNN's conv blocks first).
    pub layer_formats: Vec<LayerFormat>,
    /// Dataset and public-set digest.
    pub dataset: Option<DatasetRef>,
    /// Training / distillation / QAT settings, as the caller recorded them.
    pub training: serde_json::Value,
    /// Metrics of the exported student on the test set (name -> value).
    pub metrics: BTreeMap<String, f64>,
    /// Calibration and per-layer quantization errors (quantized profiles).
    pub ptq: Option<PtqReport>,
}

/// Everything the card needs beyond the model itself.
#[derive(Debug, Clone, Default)]
pub struct CardInfo {
    /// Dataset reference.
    pub dataset: Option<DatasetRef>,
    /// Training settings.
    pub training: serde_json::Value,
    /// Metrics of the student being exported.
    pub metrics: BTreeMap<String, f64>,
    /// Calibration report.
    pub ptq: Option<PtqReport>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MlError + '_ {
    move |source| MlError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn ckpt(path: &Path, reason: impl Into<String>) -> MlError {
    MlError::Checkpoint {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// File extension of a profile's export.
pub fn file_extension(profile: Profile) -> &'static str {
    match profile {
        Profile::Int8 | Profile::Sandwich => "gguf",
        Profile::F16 | Profile::F32 => "safetensors",
    }
}

fn bias_qtensor(l: &QLayer) -> Result<QTensor> {
    Ok(QTensor::quantize(&l.b, GgmlDType::F32)?)
}

fn f32_qtensor(v: &[f32]) -> Result<QTensor> {
    f32_qtensor_shaped(v, &[v.len()])
}

fn f32_qtensor_shaped(v: &[f32], dims: &[usize]) -> Result<QTensor> {
    Ok(QTensor::quantize(
        &Tensor::from_slice(v, dims, &Device::Cpu)?,
        GgmlDType::F32,
    )?)
}

/// The tensors of the GGUF file in file order: a CNN's `input.shift`, `input.scale` and its conv blocks
/// (weight then bias), or a fused model's block encoders (weight then bias) and its gate, then each linear
/// layer's weight and bias.
fn stored_tensors(q: &QuantizedModel) -> Result<Vec<(String, QTensor)>> {
    let mut tensors = Vec::new();
    if let Some(f) = &q.fused {
        for (k, l) in f.encoders.iter().enumerate() {
            tensors.push((format!("encoders.{k}.weight"), l.stored_weight()?));
            tensors.push((format!("encoders.{k}.bias"), bias_qtensor(l)?));
        }
        for (name, dims, v) in f.gate.named() {
            tensors.push((name.to_string(), f32_qtensor_shaped(v, &dims)?));
        }
    }
    if let Some(c) = &q.conv {
        tensors.push((INPUT_SHIFT.to_string(), f32_qtensor(&c.shift)?));
        tensors.push((INPUT_SCALE.to_string(), f32_qtensor(&c.scale)?));
        for (i, l) in c.layers.iter().enumerate() {
            tensors.push((format!("convs.{i}.weight"), l.stored_weight()?));
            tensors.push((format!("convs.{i}.bias"), bias_qtensor(l)?));
        }
    }
    for (i, l) in q.layers.iter().enumerate() {
        tensors.push((format!("layers.{i}.weight"), l.stored_weight()?));
        tensors.push((format!("layers.{i}.bias"), bias_qtensor(l)?));
    }
    Ok(tensors)
}

/// SHA-256 over the stored tensors in file order (a CNN's standardization and conv blocks, or a fused
/// model's encoders and gate, then the linear layers; each weight then bias): the name, 0x00, the ggml dtype id as u32 LE, each dim as u64
/// LE, 0x00, then the stored bytes.
pub fn stored_weights_digest(q: &QuantizedModel) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    for (name, t) in stored_tensors(q)? {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(ggml_id(t.dtype()).to_le_bytes());
        for d in t.shape().dims() {
            h.update((*d as u64).to_le_bytes());
        }
        h.update([0u8]);
        h.update(&t.data()?);
    }
    Ok(h.finalize().into())
}

fn ggml_id(d: GgmlDType) -> u32 {
    match d {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q8_0 => 8,
        _ => u32::MAX,
    }
}

fn u64_array(v: &[usize]) -> gguf_file::Value {
    gguf_file::Value::Array(v.iter().map(|&h| gguf_file::Value::U64(h as u64)).collect())
}

/// The kinds of student a GGUF file can hold, by `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GgufKind {
    Mlp,
    Cnn,
    Cnn1d,
    Fused,
}

impl GgufKind {
    fn of(arch: &Arch) -> GgufKind {
        match (arch.is_fused(), arch.is_cnn(), arch.conv1d.is_some()) {
            (true, _, _) => GgufKind::Fused,
            (false, false, _) => GgufKind::Mlp,
            (false, true, false) => GgufKind::Cnn,
            (false, true, true) => GgufKind::Cnn1d,
        }
    }

    fn name(self) -> &'static str {
        match self {
            GgufKind::Mlp => GGUF_ARCH,
            GgufKind::Cnn => GGUF_ARCH_CNN,
            GgufKind::Cnn1d => GGUF_ARCH_CNN1D,
            GgufKind::Fused => GGUF_ARCH_FUSED,
        }
    }

    fn parse(name: Option<&str>) -> Option<GgufKind> {
        [GgufKind::Mlp, GgufKind::Cnn, GgufKind::Cnn1d, GgufKind::Fused]
            .into_iter()
            .find(|k| Some(k.name()) == name)
    }

    /// `fedistill.conv_layout` of a CNN (`None` for an MLP and a fused model).
    fn layout(self) -> Option<&'static str> {
        match self {
            GgufKind::Mlp | GgufKind::Fused => None,
            GgufKind::Cnn => Some(CONV_LAYOUT),
            GgufKind::Cnn1d => Some(CONV1D_LAYOUT),
        }
    }

    /// Whether the file holds the input standardization (`input.shift`, `input.scale`): a CNN's.
    fn has_norm(self) -> bool {
        matches!(self, GgufKind::Cnn | GgufKind::Cnn1d)
    }
}

/// Serializes a quantized profile to GGUF bytes.
pub fn to_gguf(q: &QuantizedModel) -> Result<Vec<u8>> {
    let tensors = stored_tensors(q)?;
    let kind = GgufKind::of(&q.arch);
    let cnn = kind.has_norm();
    let arch = gguf_file::Value::String(kind.name().into());
    let version = gguf_file::Value::U32(FORMAT_VERSION);
    let profile = gguf_file::Value::String(q.profile.name().into());
    let in_dim = gguf_file::Value::U64(q.arch.in_dim as u64);
    let classes = gguf_file::Value::U64(q.arch.classes as u64);
    let hidden = u64_array(&q.arch.hidden);
    let channels = u64_array(&q.arch.channels);
    let layout = gguf_file::Value::String(kind.layout().unwrap_or_default().into());
    let conv1d = q.arch.conv1d.map(|c| {
        (
            gguf_file::Value::U64(c.in_channels as u64),
            gguf_file::Value::U64(c.kernel as u64),
        )
    });
    let fused = q.arch.fused.as_ref().map(|f| {
        (
            gguf_file::Value::U64(f.embed as u64),
            u64_array(&f.blocks),
            gguf_file::Value::String(FUSION_LAYOUT.into()),
        )
    });
    let mut metadata: Vec<(&str, &gguf_file::Value)> = vec![
        ("general.architecture", &arch),
        ("fedistill.format_version", &version),
        ("fedistill.profile", &profile),
        ("fedistill.in_dim", &in_dim),
        ("fedistill.classes", &classes),
        ("fedistill.hidden", &hidden),
    ];
    if cnn {
        metadata.push(("fedistill.channels", &channels));
        metadata.push(("fedistill.conv_layout", &layout));
    }
    if let (GgufKind::Cnn1d, Some((in_channels, kernel))) = (kind, &conv1d) {
        metadata.push(("fedistill.in_channels", in_channels));
        metadata.push(("fedistill.kernel", kernel));
    }
    if let (GgufKind::Fused, Some((embed, blocks, layout))) = (kind, &fused) {
        metadata.push(("fedistill.embed", embed));
        metadata.push(("fedistill.blocks", blocks));
        metadata.push(("fedistill.fusion_layout", layout));
    }
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut cur = Cursor::new(Vec::new());
    gguf_file::write(&mut cur, &metadata, &refs)?;
    Ok(cur.into_inner())
}

/// Serializes an f16 profile to safetensors bytes: unpadded weights as F16 (a CNN's conv kernels as
/// `[out, in, 3, 3]`, a 1-D CNN's as `[out, in, kernel]`, a fused model's encoders as `[embed, width]`),
/// biases, a CNN's standardization and a fused model's gate as F32, and metadata.
pub fn to_f16_safetensors(q: &QuantizedModel) -> Result<Vec<u8>> {
    use safetensors::Dtype::{F16, F32};
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let f16_bytes = |t: &Tensor| -> Result<Vec<u8>> {
        Ok(t.to_dtype(DType::F16)?
            .flatten_all()?
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect())
    };
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    if let Some(c) = &q.conv {
        owned.push((INPUT_SHIFT.into(), F32, vec![c.in_dim()], f32_bytes(&c.shift)));
        owned.push((INPUT_SCALE.into(), F32, vec![c.in_dim()], f32_bytes(&c.scale)));
        for (i, (l, b)) in c.layers.iter().zip(&c.blocks).enumerate() {
            let w = l.weight_f32()?.narrow(1, 0, b.in_ch() * b.taps())?;
            owned.push((format!("convs.{i}.weight"), F16, b.kernel_dims(), f16_bytes(&w)?));
            let bias = f32_bytes(&l.b.to_vec1::<f32>()?);
            owned.push((format!("convs.{i}.bias"), F32, vec![b.out_ch()], bias));
        }
    }
    if let Some(f) = &q.fused {
        for (k, (l, &(_, w))) in f.encoders.iter().zip(&f.spans).enumerate() {
            let wt = l.weight_f32()?.narrow(1, 0, w)?;
            owned.push((format!("encoders.{k}.weight"), F16, vec![f.embed, w], f16_bytes(&wt)?));
            let bias = f32_bytes(&l.b.to_vec1::<f32>()?);
            owned.push((format!("encoders.{k}.bias"), F32, vec![f.embed], bias));
        }
        for (name, dims, v) in f.gate.named() {
            owned.push((name.to_string(), F32, dims, f32_bytes(v)));
        }
    }
    let dims = &q.arch.layer_dims()[q.arch.front_layers()..];
    for (i, (l, &(inp, out))) in q.layers.iter().zip(dims).enumerate() {
        let w = l.weight_f32()?.narrow(0, 0, out)?.narrow(1, 0, inp)?;
        owned.push((format!("layers.{i}.weight"), F16, vec![out, inp], f16_bytes(&w)?));
        let b = l.b.narrow(0, 0, out)?;
        owned.push((
            format!("layers.{i}.bias"),
            F32,
            vec![out],
            f32_bytes(&b.to_vec1::<f32>()?),
        ));
    }
    let mut views = Vec::new();
    for (name, dt, shape, bytes) in &owned {
        let v = safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
            .map_err(|e| MlError::InvalidConfig(format!("safetensors view of {name}: {e}")))?;
        views.push((name.clone(), v));
    }
    let meta = std::collections::HashMap::from([
        ("fedistill.profile".to_string(), "f16".to_string()),
        ("fedistill.format_version".to_string(), FORMAT_VERSION.to_string()),
        (
            "fedistill.arch".to_string(),
            serde_json::to_string(&q.arch).unwrap_or_default(),
        ),
    ]);
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| MlError::InvalidConfig(format!("safetensors serialization: {e}")))
}

/// The exported bytes of `q` (`source` is the f32 student, required for the f32 profile).
pub fn export_bytes(q: &QuantizedModel, source: Option<&Model>) -> Result<Vec<u8>> {
    match q.profile {
        Profile::Int8 | Profile::Sandwich => to_gguf(q),
        Profile::F16 => to_f16_safetensors(q),
        Profile::F32 => source
            .ok_or_else(|| MlError::InvalidConfig("exporting the f32 profile needs the f32 student".into()))?
            .to_safetensors(),
    }
}

/// Writes `q` to `dir/<stem>.<ext>` and its card to `dir/<stem>.<ext>.card.json`; returns the card.
pub fn export_student(
    q: &QuantizedModel,
    source: &Model,
    dir: &Path,
    stem: &str,
    info: &CardInfo,
) -> Result<(PathBuf, ModelCard)> {
    let bytes = export_bytes(q, Some(source))?;
    let file = format!("{stem}.{}", file_extension(q.profile));
    let path = dir.join(&file);
    std::fs::write(&path, &bytes).map_err(io_err(&path))?;
    let weights = match q.profile {
        Profile::F32 => source.weights_digest(),
        _ => stored_weights_digest(q)?,
    };
    let card = ModelCard {
        card_version: CARD_VERSION,
        profile: q.profile,
        file: file.clone(),
        file_format: file_extension(q.profile).into(),
        file_bytes: bytes.len() as u64,
        file_sha256: hex::encode(Sha256::digest(&bytes)),
        weights_sha256: hex::encode(weights),
        source_weights_sha256: hex::encode(source.weights_digest()),
        arch: q.arch.clone(),
        layer_formats: q.layer_formats(),
        dataset: info.dataset.clone(),
        training: info.training.clone(),
        metrics: info.metrics.clone(),
        ptq: info.ptq.clone(),
    };
    let card_path = dir.join(format!("{file}.card.json"));
    let json = serde_json::to_vec_pretty(&card).map_err(|e| MlError::InvalidConfig(format!("card: {e}")))?;
    std::fs::write(&card_path, json).map_err(io_err(&card_path))?;
    Ok((path, card))
}

/// Loads an exported student from `path`, checking it against `expected`: a GGUF (int8, sandwich), an
/// f16 safetensors written by [`to_f16_safetensors`], or an f32 student checkpoint (`Model::save`).
pub fn load_student(path: &Path, expected: &Arch) -> Result<QuantizedModel> {
    expected.validate()?;
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.starts_with(b"GGUF") {
        return from_gguf(&bytes, expected).map_err(|e| relabel(e, path));
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ckpt(path, format!("neither GGUF nor safetensors ({e})")))?;
    let profile = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("fedistill.profile").cloned());
    match profile.as_deref() {
        Some("f16") => from_f16_safetensors(&bytes, expected).map_err(|e| relabel(e, path)),
        Some(other) => Err(ckpt(path, format!("safetensors file of unsupported profile `{other}`"))),
        None => {
            let cfg = expected.model_config()?;
            let m = Model::load(&cfg, expected.in_dim, expected.classes, path)?;
            QuantizedModel::from_model(&m, Profile::F32)
        }
    }
}

/// The architecture recorded in an exported student: GGUF metadata, the f16 safetensors metadata, or the
/// model card beside the file (`<file>.card.json`); `None` when none of them says (a bare f32 checkpoint).
pub fn recorded_arch(path: &Path) -> Result<Option<Arch>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.starts_with(b"GGUF") {
        let content = gguf_file::Content::read(&mut Cursor::new(&bytes[..]))
            .map_err(|e| ckpt(path, format!("not a readable GGUF file: {e}")))?;
        let get = |k: &str| {
            content
                .metadata
                .get(k)
                .and_then(|v| v.to_u64().ok())
                .map(|v| v as usize)
        };
        let hidden = content
            .metadata
            .get("fedistill.hidden")
            .and_then(|v| v.to_vec().ok())
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.to_u64().ok())
                    .map(|x| x as usize)
                    .collect::<Vec<_>>()
            });
        let channels = content
            .metadata
            .get("fedistill.channels")
            .and_then(|v| v.to_vec().ok())
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.to_u64().ok())
                    .map(|x| x as usize)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let name = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok());
        let kind = GgufKind::parse(name.map(String::as_str));
        let conv1d = if kind == Some(GgufKind::Cnn1d) {
            match (get("fedistill.in_channels"), get("fedistill.kernel")) {
                (Some(in_channels), Some(kernel)) => Some(Conv1dArch { in_channels, kernel }),
                _ => return Err(ckpt(path, "GGUF of a cnn1d lacks fedistill.in_channels / kernel")),
            }
        } else {
            None
        };
        let fused = if kind == Some(GgufKind::Fused) {
            match (get("fedistill.embed"), meta_usizes(&content, "fedistill.blocks")) {
                (Some(embed), Ok(blocks)) => Some(FusedArch { embed, blocks }),
                _ => return Err(ckpt(path, "GGUF of a fused student lacks fedistill.embed / blocks")),
            }
        } else {
            None
        };
        return match (hidden, get("fedistill.in_dim"), get("fedistill.classes")) {
            (Some(hidden), Some(in_dim), Some(classes)) => Ok(Some(Arch {
                hidden,
                in_dim,
                classes,
                channels,
                conv1d,
                fused,
            })),
            _ => Err(ckpt(path, "GGUF metadata lacks fedistill.hidden / in_dim / classes")),
        };
    }
    if let Ok((_, meta)) = safetensors::SafeTensors::read_metadata(&bytes) {
        if let Some(a) = meta.metadata().as_ref().and_then(|m| m.get("fedistill.arch")) {
            let arch = serde_json::from_str(a).map_err(|e| ckpt(path, format!("bad fedistill.arch metadata: {e}")))?;
            return Ok(Some(arch));
        }
    }
    let mut card_name = path.as_os_str().to_owned();
    card_name.push(".card.json");
    let card_path = PathBuf::from(card_name);
    match std::fs::read(&card_path) {
        Ok(b) => {
            let card: ModelCard =
                serde_json::from_slice(&b).map_err(|e| ckpt(&card_path, format!("bad model card: {e}")))?;
            Ok(Some(card.arch))
        }
        Err(_) => Ok(None),
    }
}

fn relabel(e: MlError, path: &Path) -> MlError {
    match e {
        MlError::Checkpoint { reason, .. } => ckpt(path, reason),
        MlError::Candle(c) => ckpt(path, c.to_string()),
        other => other,
    }
}

fn mem(reason: impl Into<String>) -> MlError {
    MlError::Checkpoint {
        path: "<memory>".into(),
        reason: reason.into(),
    }
}

fn meta_u64(c: &gguf_file::Content, key: &str) -> Result<u64> {
    c.metadata
        .get(key)
        .and_then(|v| v.to_u64().ok())
        .ok_or_else(|| mem(format!("GGUF metadata {key} missing or not an integer")))
}

fn meta_usizes(c: &gguf_file::Content, key: &str) -> Result<Vec<usize>> {
    match c.metadata.get(key).map(|v| v.to_vec()) {
        Some(Ok(v)) => Ok(v
            .iter()
            .map(|x| x.to_u64().map(|x| x as usize))
            .collect::<candle_core::Result<_>>()?),
        _ => Err(mem(format!("GGUF metadata {key} missing"))),
    }
}

/// Parses GGUF bytes written by [`to_gguf`].
pub fn from_gguf(bytes: &[u8], expected: &Arch) -> Result<QuantizedModel> {
    let mut cur = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut cur).map_err(|e| mem(format!("not a readable GGUF file: {e}")))?;
    let arch_name = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok());
    let Some(kind) = GgufKind::parse(arch_name.map(String::as_str)) else {
        return Err(mem(format!(
            "GGUF general.architecture is {arch_name:?}, expected {GGUF_ARCH}, {GGUF_ARCH_CNN}, {GGUF_ARCH_CNN1D} \
             or {GGUF_ARCH_FUSED}"
        )));
    };
    let cnn = kind.has_norm();
    let version = meta_u64(&content, "fedistill.format_version")?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(mem(format!(
            "GGUF format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let profile: Profile = content
        .metadata
        .get("fedistill.profile")
        .and_then(|v| v.to_string().ok())
        .ok_or_else(|| mem("GGUF metadata fedistill.profile missing"))?
        .parse()?;
    let channels = match kind.layout() {
        Some(want) => {
            let layout = content
                .metadata
                .get("fedistill.conv_layout")
                .and_then(|v| v.to_string().ok());
            if layout.map(String::as_str) != Some(want) {
                return Err(mem(format!(
                    "GGUF fedistill.conv_layout is {layout:?}, this build reads {want} for {}",
                    kind.name()
                )));
            }
            meta_usizes(&content, "fedistill.channels")?
        }
        None => Vec::new(),
    };
    let conv1d = match kind {
        GgufKind::Cnn1d => Some(Conv1dArch {
            in_channels: meta_u64(&content, "fedistill.in_channels")? as usize,
            kernel: meta_u64(&content, "fedistill.kernel")? as usize,
        }),
        _ => None,
    };
    let fused = match kind {
        GgufKind::Fused => {
            let layout = content
                .metadata
                .get("fedistill.fusion_layout")
                .and_then(|v| v.to_string().ok());
            if layout.map(String::as_str) != Some(FUSION_LAYOUT) {
                return Err(mem(format!(
                    "GGUF fedistill.fusion_layout is {layout:?}, this build reads {FUSION_LAYOUT}"
                )));
            }
            Some(FusedArch {
                embed: meta_u64(&content, "fedistill.embed")? as usize,
                blocks: meta_usizes(&content, "fedistill.blocks")?,
            })
        }
        _ => None,
    };
    let arch = Arch {
        hidden: meta_usizes(&content, "fedistill.hidden")?,
        in_dim: meta_u64(&content, "fedistill.in_dim")? as usize,
        classes: meta_u64(&content, "fedistill.classes")? as usize,
        channels,
        conv1d,
        fused,
    };
    if cnn && !arch.is_cnn() {
        return Err(mem("GGUF of a cnn lists no fedistill.channels"));
    }
    if &arch != expected {
        return Err(mem(format!(
            "wrong architecture: file has {arch:?}, expected {expected:?}"
        )));
    }
    arch.validate()?;
    let pdims = arch.padded_dims();
    let n = pdims.len();
    let front = arch.front_layers();
    let front_name = if arch.is_fused() { "encoders" } else { "convs" };
    let norm = if cnn {
        let d = arch.in_dim;
        Some((
            read_f32(&content, &mut cur, INPUT_SHIFT, d)?,
            read_f32(&content, &mut cur, INPUT_SCALE, d)?,
        ))
    } else {
        None
    };
    let mut layers = Vec::with_capacity(n);
    for (i, &(pin, pout)) in pdims.iter().enumerate() {
        let format = profile.layer_format(i, n);
        let name = if i < front {
            format!("{front_name}.{i}")
        } else {
            format!("layers.{}", i - front)
        };
        let (wname, bname) = (format!("{name}.weight"), format!("{name}.bias"));
        let w = read_tensor(&content, &mut cur, &wname, format.ggml(), &[pout, pin])?;
        let b = read_tensor(&content, &mut cur, &bname, GgmlDType::F32, &[pout])?;
        let b = b.dequantize(&Device::Cpu)?;
        check_finite(&b, &bname)?;
        let layer = QLayer::from_stored(format, w, b)?;
        check_finite(layer.weight_f32()?, &wname)?;
        layers.push(layer);
    }
    let gate = match &arch.fused {
        Some(f) => Some(Gate::read(f.embed, |name, dims| {
            let t = read_tensor(&content, &mut cur, name, GgmlDType::F32, dims)?.dequantize(&Device::Cpu)?;
            check_finite(&t, name)?;
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        })?),
        None => None,
    };
    let count = 2 * n + if cnn { 2 } else { 0 } + if gate.is_some() { GATE_TENSORS.len() } else { 0 };
    if content.tensor_infos.len() != count {
        return Err(mem(format!("{} tensors, expected {count}", content.tensor_infos.len())));
    }
    QuantizedModel::from_parts(profile, arch, norm, gate, layers)
}

/// An f32 vector tensor of `len` finite values.
fn read_f32(content: &gguf_file::Content, cur: &mut Cursor<&[u8]>, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = read_tensor(content, cur, name, GgmlDType::F32, &[len])?.dequantize(&Device::Cpu)?;
    check_finite(&t, name)?;
    Ok(t.to_vec1::<f32>()?)
}

fn check_finite(t: &Tensor, name: &str) -> Result<()> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(mem(format!("tensor {name} holds NaN or Inf")));
    }
    Ok(())
}

fn read_tensor(
    content: &gguf_file::Content,
    cur: &mut Cursor<&[u8]>,
    name: &str,
    dtype: GgmlDType,
    dims: &[usize],
) -> Result<QTensor> {
    let info = content
        .tensor_infos
        .get(name)
        .ok_or_else(|| mem(format!("missing tensor {name}")))?;
    if info.ggml_dtype != dtype {
        return Err(mem(format!(
            "tensor {name} has dtype {:?}, expected {dtype:?}",
            info.ggml_dtype
        )));
    }
    if info.shape.dims() != dims {
        return Err(mem(format!(
            "tensor {name} has shape {:?}, expected {dims:?}",
            info.shape.dims()
        )));
    }
    content
        .tensor(cur, name, &Device::Cpu)
        .map_err(|e| mem(format!("tensor {name}: {e}")))
}

/// The values of a safetensors tensor that must have `dtype` (F16 or F32) and shape `dims`, all finite.
fn st_values(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    dtype: safetensors::Dtype,
    dims: &[usize],
) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| mem(format!("missing tensor {name}")))?;
    if t.dtype() != dtype {
        return Err(mem(format!(
            "tensor {name} has dtype {:?}, expected {dtype:?}",
            t.dtype()
        )));
    }
    if t.shape() != dims {
        return Err(mem(format!(
            "tensor {name} has shape {:?}, expected {dims:?}",
            t.shape()
        )));
    }
    let v: Vec<f32> = match dtype {
        safetensors::Dtype::F16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    if v.iter().any(|x| !x.is_finite()) {
        return Err(mem(format!("tensor {name} holds NaN or Inf")));
    }
    Ok(v)
}

/// An f16 layer from unpadded `[out, inp]` weights and `[out]` bias, zero-padded to `[pout, pin]`.
fn f16_layer(wv: &[f32], bv: &[f32], (inp, out): (usize, usize), (pin, pout): (usize, usize)) -> Result<QLayer> {
    let mut pw = vec![0f32; pout * pin];
    for o in 0..out {
        pw[o * pin..o * pin + inp].copy_from_slice(&wv[o * inp..(o + 1) * inp]);
    }
    let mut pb = vec![0f32; pout];
    pb[..out].copy_from_slice(bv);
    let wq = QTensor::quantize(&Tensor::from_vec(pw, (pout, pin), &Device::Cpu)?, GgmlDType::F16)?;
    QLayer::from_stored(LayerFormat::F16, wq, Tensor::from_vec(pb, pout, &Device::Cpu)?)
}

/// Parses f16 safetensors bytes written by [`to_f16_safetensors`].
pub fn from_f16_safetensors(bytes: &[u8], expected: &Arch) -> Result<QuantizedModel> {
    use safetensors::Dtype::{F16, F32};
    expected.validate()?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| mem(format!("not safetensors: {e}")))?;
    let dims = expected.layer_dims();
    let pdims = expected.padded_dims();
    let blocks = expected.blocks();
    let count = 2 * dims.len()
        + if expected.is_cnn() { 2 } else { 0 }
        + if expected.is_fused() { GATE_TENSORS.len() } else { 0 };
    if st.len() != count {
        return Err(mem(format!(
            "{} tensors, expected {count} (wrong architecture?)",
            st.len()
        )));
    }
    let norm = if expected.is_cnn() {
        let d = [expected.in_dim];
        Some((
            st_values(&st, INPUT_SHIFT, F32, &d)?,
            st_values(&st, INPUT_SCALE, F32, &d)?,
        ))
    } else {
        None
    };
    let mut layers = Vec::with_capacity(dims.len());
    for (i, b) in blocks.iter().enumerate() {
        let w = st_values(&st, &format!("convs.{i}.weight"), F16, &b.kernel_dims())?;
        let bias = st_values(&st, &format!("convs.{i}.bias"), F32, &[b.out_ch()])?;
        let taps = b.in_ch() * b.taps();
        layers.push(f16_layer(&w, &bias, (taps, b.out_ch()), (pad32(taps), b.out_ch()))?);
    }
    let mut gate = None;
    if let Some(f) = &expected.fused {
        for (k, &w) in f.blocks.iter().enumerate() {
            let wv = st_values(&st, &format!("encoders.{k}.weight"), F16, &[f.embed, w])?;
            let bv = st_values(&st, &format!("encoders.{k}.bias"), F32, &[f.embed])?;
            layers.push(f16_layer(&wv, &bv, (w, f.embed), (pad32(w), f.embed))?);
        }
        gate = Some(Gate::read(f.embed, |name, dims| st_values(&st, name, F32, dims))?);
    }
    let front = expected.front_layers();
    let linear = dims[front..].iter().zip(&pdims[front..]);
    for (i, (&(inp, out), &pdim)) in linear.enumerate() {
        let w = st_values(&st, &format!("layers.{i}.weight"), F16, &[out, inp])?;
        let b = st_values(&st, &format!("layers.{i}.bias"), F32, &[out])?;
        layers.push(f16_layer(&w, &b, (inp, out), pdim)?);
    }
    QuantizedModel::from_parts(Profile::F16, expected.clone(), norm, gate, layers)
}

#[cfg(test)]
mod tests;
