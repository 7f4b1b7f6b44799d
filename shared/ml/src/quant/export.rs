//! Export and import of deployable students: GGUF for quantized profiles (int8, sandwich), safetensors
//! for float ones (f16 with metadata; f32 is the student's own checkpoint), and a JSON model card beside
//! the file. Loading checks every tensor's name, dtype and shape against the expected architecture.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{MlError, Result};
use crate::model::{Model, ModelConfig};

use super::model::{Arch, LayerFormat, Profile, QLayer, QuantizedModel};
use super::ptq::PtqReport;

/// `general.architecture` of our GGUF files.
pub const GGUF_ARCH: &str = "fedistill-mlp";
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
    /// Storage format of each linear layer.
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

/// SHA-256 over the stored tensors in layer order: for each weight then bias, the name, 0x00, the ggml
/// dtype id as u32 LE, each dim as u64 LE, 0x00, then the stored bytes.
pub fn stored_weights_digest(q: &QuantizedModel) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    for (i, l) in q.layers.iter().enumerate() {
        let w = l.stored_weight()?;
        let b = bias_qtensor(l)?;
        for (name, t) in [(format!("layers.{i}.weight"), &w), (format!("layers.{i}.bias"), &b)] {
            h.update(name.as_bytes());
            h.update([0u8]);
            h.update(ggml_id(t.dtype()).to_le_bytes());
            for d in t.shape().dims() {
                h.update((*d as u64).to_le_bytes());
            }
            h.update([0u8]);
            h.update(&t.data()?);
        }
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

/// Serializes a quantized profile to GGUF bytes.
pub fn to_gguf(q: &QuantizedModel) -> Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(2 * q.layers.len());
    for (i, l) in q.layers.iter().enumerate() {
        tensors.push((format!("layers.{i}.weight"), l.stored_weight()?));
        tensors.push((format!("layers.{i}.bias"), bias_qtensor(l)?));
    }
    let arch = gguf_file::Value::String(GGUF_ARCH.into());
    let version = gguf_file::Value::U32(FORMAT_VERSION);
    let profile = gguf_file::Value::String(q.profile.name().into());
    let in_dim = gguf_file::Value::U64(q.arch.in_dim as u64);
    let classes = gguf_file::Value::U64(q.arch.classes as u64);
    let hidden = gguf_file::Value::Array(q.arch.hidden.iter().map(|&h| gguf_file::Value::U64(h as u64)).collect());
    let metadata: Vec<(&str, &gguf_file::Value)> = vec![
        ("general.architecture", &arch),
        ("fedistill.format_version", &version),
        ("fedistill.profile", &profile),
        ("fedistill.in_dim", &in_dim),
        ("fedistill.classes", &classes),
        ("fedistill.hidden", &hidden),
    ];
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut cur = Cursor::new(Vec::new());
    gguf_file::write(&mut cur, &metadata, &refs)?;
    Ok(cur.into_inner())
}

/// Serializes an f16 profile to safetensors bytes (unpadded weights as F16, biases as F32, metadata).
pub fn to_f16_safetensors(q: &QuantizedModel) -> Result<Vec<u8>> {
    let dims = q.arch.layer_dims();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, (l, &(inp, out))) in q.layers.iter().zip(&dims).enumerate() {
        let w = l
            .weight_f32()?
            .narrow(0, 0, out)?
            .narrow(1, 0, inp)?
            .to_dtype(DType::F16)?;
        let wb: Vec<u8> = w
            .flatten_all()?
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        owned.push((
            format!("layers.{i}.weight"),
            safetensors::Dtype::F16,
            vec![out, inp],
            wb,
        ));
        let b = l.b.narrow(0, 0, out)?;
        let bb: Vec<u8> = b.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((format!("layers.{i}.bias"), safetensors::Dtype::F32, vec![out], bb));
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
            let cfg = ModelConfig::Mlp {
                hidden: expected.hidden.clone(),
            };
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
        return match (hidden, get("fedistill.in_dim"), get("fedistill.classes")) {
            (Some(hidden), Some(in_dim), Some(classes)) => Ok(Some(Arch {
                hidden,
                in_dim,
                classes,
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

/// Parses GGUF bytes written by [`to_gguf`].
pub fn from_gguf(bytes: &[u8], expected: &Arch) -> Result<QuantizedModel> {
    let mut cur = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut cur).map_err(|e| mem(format!("not a readable GGUF file: {e}")))?;
    let arch_name = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok());
    if arch_name.map(String::as_str) != Some(GGUF_ARCH) {
        return Err(mem(format!(
            "GGUF general.architecture is {arch_name:?}, expected {GGUF_ARCH}"
        )));
    }
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
    let hidden: Vec<usize> = match content.metadata.get("fedistill.hidden").map(|v| v.to_vec()) {
        Some(Ok(v)) => v
            .iter()
            .map(|x| x.to_u64().map(|x| x as usize))
            .collect::<candle_core::Result<_>>()?,
        _ => return Err(mem("GGUF metadata fedistill.hidden missing")),
    };
    let arch = Arch {
        hidden,
        in_dim: meta_u64(&content, "fedistill.in_dim")? as usize,
        classes: meta_u64(&content, "fedistill.classes")? as usize,
    };
    if &arch != expected {
        return Err(mem(format!(
            "wrong architecture: file has {arch:?}, expected {expected:?}"
        )));
    }
    let pdims = arch.padded_dims();
    let n = pdims.len();
    if content.tensor_infos.len() != 2 * n {
        return Err(mem(format!(
            "{} tensors, expected {}",
            content.tensor_infos.len(),
            2 * n
        )));
    }
    let mut layers = Vec::with_capacity(n);
    for (i, &(pin, pout)) in pdims.iter().enumerate() {
        let format = profile.layer_format(i, n);
        let w = read_tensor(
            &content,
            &mut cur,
            &format!("layers.{i}.weight"),
            format.ggml(),
            &[pout, pin],
        )?;
        let b = read_tensor(&content, &mut cur, &format!("layers.{i}.bias"), GgmlDType::F32, &[pout])?;
        let b = b.dequantize(&Device::Cpu)?;
        check_finite(&b, &format!("layers.{i}.bias"))?;
        let layer = QLayer::from_stored(format, w, b)?;
        check_finite(layer.weight_f32()?, &format!("layers.{i}.weight"))?;
        layers.push(layer);
    }
    Ok(QuantizedModel::from_layers(profile, arch, layers))
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

/// Parses f16 safetensors bytes written by [`to_f16_safetensors`].
pub fn from_f16_safetensors(bytes: &[u8], expected: &Arch) -> Result<QuantizedModel> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| mem(format!("not safetensors: {e}")))?;
    let dims = expected.layer_dims();
    let pdims = expected.padded_dims();
    if st.len() != 2 * dims.len() {
        return Err(mem(format!(
            "{} tensors, expected {} (wrong architecture?)",
            st.len(),
            2 * dims.len()
        )));
    }
    let mut layers = Vec::with_capacity(dims.len());
    for (i, (&(inp, out), &(pin, pout))) in dims.iter().zip(&pdims).enumerate() {
        let wname = format!("layers.{i}.weight");
        let bname = format!("layers.{i}.bias");
        let w = st.tensor(&wname).map_err(|_| mem(format!("missing tensor {wname}")))?;
        if w.dtype() != safetensors::Dtype::F16 {
            return Err(mem(format!("tensor {wname} has dtype {:?}, expected F16", w.dtype())));
        }
        if w.shape() != [out, inp] {
            return Err(mem(format!(
                "tensor {wname} has shape {:?}, expected {:?}",
                w.shape(),
                [out, inp]
            )));
        }
        let b = st.tensor(&bname).map_err(|_| mem(format!("missing tensor {bname}")))?;
        if b.dtype() != safetensors::Dtype::F32 {
            return Err(mem(format!("tensor {bname} has dtype {:?}, expected F32", b.dtype())));
        }
        if b.shape() != [out] {
            return Err(mem(format!(
                "tensor {bname} has shape {:?}, expected {:?}",
                b.shape(),
                [out]
            )));
        }
        let wv: Vec<f32> = w
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let bv: Vec<f32> = b
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if wv.iter().chain(&bv).any(|x| !x.is_finite()) {
            return Err(mem(format!("layer {i} holds NaN or Inf")));
        }
        let mut pw = vec![0f32; pout * pin];
        for o in 0..out {
            pw[o * pin..o * pin + inp].copy_from_slice(&wv[o * inp..(o + 1) * inp]);
        }
        let mut pb = vec![0f32; pout];
        pb[..out].copy_from_slice(&bv);
        let wq = QTensor::quantize(&Tensor::from_vec(pw, (pout, pin), &Device::Cpu)?, GgmlDType::F16)?;
        layers.push(QLayer::from_stored(
            LayerFormat::F16,
            wq,
            Tensor::from_vec(pb, pout, &Device::Cpu)?,
        )?);
    }
    Ok(QuantizedModel::from_layers(Profile::F16, expected.clone(), layers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn student() -> (Model, Arch, Vec<f32>) {
        let cfg = ModelConfig::Mlp { hidden: vec![48, 20] };
        let m = Model::new(&cfg, 70, 5, 5).expect("model");
        let x: Vec<f32> = (0..10 * 70).map(|i| ((i * 31) % 17) as f32 / 17.0).collect();
        m.fit_input_normalization(&x, 10, false).expect("norm");
        let arch = Arch::from_config(&cfg, 70, 5).expect("arch");
        (m, arch, x)
    }

    #[test]
    fn every_profile_round_trips_with_identical_logits() {
        let (m, arch, x) = student();
        let dir = tempfile::tempdir().expect("tmp");
        for p in Profile::ALL {
            let q = QuantizedModel::from_model(&m, p).expect("quantize");
            let (path, card) = export_student(&q, &m, dir.path(), p.name(), &CardInfo::default()).expect("export");
            let back = load_student(&path, &arch).expect("load");
            assert_eq!(back.profile(), p);
            for kernel in [true, false] {
                let want = q.logits_with(&x, 10, kernel).expect("logits");
                let got = back.logits_with(&x, 10, kernel).expect("logits");
                assert_eq!(want, got, "profile {p}");
            }
            let bytes = std::fs::read(&path).expect("read");
            assert_eq!(card.file_sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(card.file_bytes, bytes.len() as u64);
            let card_back: ModelCard = serde_json::from_slice(
                &std::fs::read(dir.path().join(format!("{}.card.json", card.file))).expect("card"),
            )
            .expect("json");
            assert_eq!(card_back.weights_sha256, card.weights_sha256);
            if p != Profile::F32 {
                assert_eq!(
                    hex::encode(stored_weights_digest(&back).expect("digest")),
                    card.weights_sha256
                );
            }
        }
    }

    fn load_err(bytes: &[u8], arch: &Arch) -> String {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("bad.gguf");
        std::fs::write(&p, bytes).expect("write");
        match load_student(&p, arch) {
            Ok(_) => panic!("loaded a bad file"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn recorded_arch_is_read_from_file_or_card() {
        let (m, arch, _) = student();
        let dir = tempfile::tempdir().expect("tmp");
        for p in Profile::ALL {
            let q = QuantizedModel::from_model(&m, p).expect("quantize");
            let (path, _) = export_student(&q, &m, dir.path(), p.name(), &CardInfo::default()).expect("export");
            assert_eq!(recorded_arch(&path).expect("arch"), Some(arch.clone()), "{p}");
        }
        let bare = dir.path().join("bare.safetensors");
        m.save(&bare).expect("save");
        assert_eq!(recorded_arch(&bare).expect("arch"), None);
    }

    #[test]
    fn truncated_gguf_names_the_tensor() {
        let (m, arch, _) = student();
        let good = to_gguf(&QuantizedModel::from_model(&m, Profile::Int8).expect("q")).expect("gguf");
        // Cutting into the tensor data leaves the header intact: the error names the last tensor.
        let err = load_err(&good[..good.len() - 40], &arch);
        assert!(err.contains("layers.2."), "{err}");
        // Cutting into the header is reported as an unreadable GGUF file.
        let err = load_err(&good[..30], &arch);
        assert!(err.contains("not a readable GGUF"), "{err}");
    }

    #[test]
    fn wrong_architecture_is_refused() {
        let (m, _, _) = student();
        let good = to_gguf(&QuantizedModel::from_model(&m, Profile::Int8).expect("q")).expect("gguf");
        let other = Arch {
            hidden: vec![48, 21],
            in_dim: 70,
            classes: 5,
        };
        let err = load_err(&good, &other);
        assert!(err.contains("wrong architecture"), "{err}");
    }

    #[test]
    fn wrong_dtype_and_shape_name_the_tensor() {
        let (m, arch, _) = student();
        let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
        // Re-write the file with layers.1.weight stored as F32 instead of Q8_0.
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        for (i, l) in q.layers.iter().enumerate() {
            let w = if i == 1 {
                QTensor::quantize(l.weight_f32().expect("w"), GgmlDType::F32).expect("f32")
            } else {
                l.stored_weight().expect("w")
            };
            tensors.push((format!("layers.{i}.weight"), w));
            tensors.push((format!("layers.{i}.bias"), bias_qtensor(l).expect("b")));
        }
        let bytes = rewrite(&q, &tensors);
        let err = load_err(&bytes, &arch);
        assert!(err.contains("layers.1.weight") && err.contains("dtype"), "{err}");
        // And layers.2.bias with the wrong length.
        tensors[5] = (
            "layers.2.bias".into(),
            QTensor::quantize(&Tensor::zeros(4, DType::F32, &Device::Cpu).expect("z"), GgmlDType::F32).expect("q"),
        );
        tensors[2] = ("layers.1.weight".into(), q.layers[1].stored_weight().expect("w"));
        let err = load_err(&rewrite(&q, &tensors), &arch);
        assert!(err.contains("layers.2.bias") && err.contains("shape"), "{err}");
    }

    fn rewrite(q: &QuantizedModel, tensors: &[(String, QTensor)]) -> Vec<u8> {
        let good = to_gguf(q).expect("gguf");
        let content = gguf_file::Content::read(&mut Cursor::new(&good[..])).expect("read");
        let meta: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut cur = Cursor::new(Vec::new());
        gguf_file::write(&mut cur, &meta, &refs).expect("write");
        cur.into_inner()
    }

    #[test]
    fn f16_safetensors_with_wrong_shape_names_the_tensor() {
        let (m, _, _) = student();
        let q = QuantizedModel::from_model(&m, Profile::F16).expect("q");
        let bytes = to_f16_safetensors(&q).expect("st");
        let other = Arch {
            hidden: vec![40, 20],
            in_dim: 70,
            classes: 5,
        };
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("s.safetensors");
        std::fs::write(&p, &bytes).expect("write");
        let err = load_student(&p, &other).expect_err("wrong arch").to_string();
        assert!(err.contains("layers.0.weight") && err.contains("shape"), "{err}");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
        assert!(matches!(load_student(&p, &other), Err(MlError::Checkpoint { .. })));
    }
}
