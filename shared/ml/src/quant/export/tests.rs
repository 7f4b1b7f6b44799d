//! Round trips and bad-input tests of the export formats, for MLP and CNN students.

use super::*;
use crate::model::ModelConfig;
use crate::quant::arch::Conv1dArch;

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
        let card_back: ModelCard =
            serde_json::from_slice(&std::fs::read(dir.path().join(format!("{}.card.json", card.file))).expect("card"))
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
        channels: Vec::new(),
        conv1d: None,
        fused: None,
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
        channels: Vec::new(),
        conv1d: None,
        fused: None,
    };
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("s.safetensors");
    std::fs::write(&p, &bytes).expect("write");
    let err = load_student(&p, &other).expect_err("wrong arch").to_string();
    assert!(err.contains("layers.0.weight") && err.contains("shape"), "{err}");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    assert!(matches!(load_student(&p, &other), Err(MlError::Checkpoint { .. })));
}

/// A two-block CNN on 8x8 images with a per-pixel standardization, its architecture and 10 inputs.
fn cnn_student() -> (Model, Arch, Vec<f32>) {
    let cfg = ModelConfig::Cnn {
        channels: vec![4, 6],
        hidden: 12,
    };
    let m = Model::new(&cfg, 64, 5, 8).expect("model");
    let x: Vec<f32> = (0..10 * 64).map(|i| ((i * 37) % 23) as f32 / 23.0).collect();
    m.fit_input_normalization(&x, 10, true).expect("norm");
    let arch = Arch::from_config(&cfg, 64, 5).expect("arch");
    (m, arch, x)
}

#[test]
fn every_cnn_profile_round_trips_with_identical_logits() {
    let (m, arch, x) = cnn_student();
    let dir = tempfile::tempdir().expect("tmp");
    for (p, card) in crate::quant::assert_every_profile_round_trips(&m, &arch, &x, 10, dir.path()) {
        assert_eq!(card.layer_formats.len(), 4, "{p}");
    }
    let gguf = to_gguf(&QuantizedModel::from_model(&m, Profile::Int8).expect("q")).expect("gguf");
    let content = gguf_file::Content::read(&mut Cursor::new(&gguf[..])).expect("read");
    let meta = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    assert_eq!(meta("general.architecture").as_deref(), Some(GGUF_ARCH_CNN));
    assert_eq!(meta("fedistill.conv_layout").as_deref(), Some(CONV_LAYOUT));
    // The conv blocks as stored: [out, pad32(in * 9)] in Q8_0.
    let info = &content.tensor_infos["convs.1.weight"];
    assert_eq!(
        (info.ggml_dtype, info.shape.dims()),
        (GgmlDType::Q8_0, &[6usize, 64][..])
    );
}

/// GGUF bytes with `q`'s metadata less `drop_key`, holding `tensors`.
fn rewrite_without(q: &QuantizedModel, tensors: &[(String, QTensor)], drop_key: &str) -> Vec<u8> {
    let good = to_gguf(q).expect("gguf");
    let content = gguf_file::Content::read(&mut Cursor::new(&good[..])).expect("read");
    let meta: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| k.as_str() != drop_key)
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut cur = Cursor::new(Vec::new());
    gguf_file::write(&mut cur, &meta, &refs).expect("write");
    cur.into_inner()
}

#[test]
fn cnn_gguf_with_missing_or_misshapen_tensors_names_them() {
    let (m, arch, _) = cnn_student();
    let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
    let tensors = stored_tensors(&q).expect("tensors");
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "input.shift",
            "input.scale",
            "convs.0.weight",
            "convs.0.bias",
            "convs.1.weight",
            "convs.1.bias",
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias"
        ]
    );
    for missing in ["convs.1.weight", "input.scale", "convs.0.bias"] {
        let kept: Vec<(String, QTensor)> = stored_tensors(&q)
            .expect("tensors")
            .into_iter()
            .filter(|(n, _)| n != missing)
            .collect();
        let err = load_err(&rewrite_without(&q, &kept, ""), &arch);
        assert!(err.contains(&format!("missing tensor {missing}")), "{err}");
    }
    // A conv kernel of another block's width: [6, 32] where [6, 64] (4 input channels * 9) is stored.
    let mut bad = stored_tensors(&q).expect("tensors");
    let narrow = Tensor::zeros((6, 32), DType::F32, &Device::Cpu).expect("z");
    bad[4].1 = QTensor::quantize(&narrow, GgmlDType::Q8_0).expect("q");
    let err = load_err(&rewrite_without(&q, &bad, ""), &arch);
    assert!(err.contains("convs.1.weight") && err.contains("shape"), "{err}");
    // A NaN in the standardization.
    let mut bad = stored_tensors(&q).expect("tensors");
    bad[0].1 = f32_qtensor(&[f32::NAN; 64]).expect("nan");
    let err = load_err(&rewrite_without(&q, &bad, ""), &arch);
    assert!(err.contains("input.shift") && err.contains("NaN"), "{err}");
    // Metadata that claims a CNN but lists no channels, or another conv layout.
    let all = stored_tensors(&q).expect("tensors");
    let err = load_err(&rewrite_without(&q, &all, "fedistill.channels"), &arch);
    assert!(err.contains("fedistill.channels"), "{err}");
    let err = load_err(&rewrite_without(&q, &all, "fedistill.conv_layout"), &arch);
    assert!(err.contains("fedistill.conv_layout"), "{err}");
    // An MLP file where a CNN is expected, and the other way round.
    let (mlp, mlp_arch, _) = student();
    let mlp_gguf = to_gguf(&QuantizedModel::from_model(&mlp, Profile::Int8).expect("q")).expect("gguf");
    let err = load_err(&mlp_gguf, &arch);
    assert!(err.contains("wrong architecture"), "{err}");
    let err = load_err(&to_gguf(&q).expect("gguf"), &mlp_arch);
    assert!(err.contains("wrong architecture"), "{err}");
}

#[test]
fn cnn_checkpoints_and_f16_files_that_disagree_with_the_config_name_the_tensor() {
    let (m, arch, _) = cnn_student();
    let dir = tempfile::tempdir().expect("tmp");
    // A bare f32 checkpoint whose first block has 4 channels, read as a CNN of 5.
    let path = dir.path().join("student.safetensors");
    m.save(&path).expect("save");
    let five = Arch {
        channels: vec![5, 6],
        ..arch.clone()
    };
    let err = load_student(&path, &five).expect_err("wrong channels").to_string();
    assert!(err.contains("convs.0.weight") && err.contains("shape"), "{err}");
    // The same with the f16 export.
    let f16 = to_f16_safetensors(&QuantizedModel::from_model(&m, Profile::F16).expect("q")).expect("f16");
    let p = dir.path().join("s.safetensors");
    std::fs::write(&p, &f16).expect("write");
    let err = load_student(&p, &five).expect_err("wrong channels").to_string();
    assert!(err.contains("convs.0.weight") && err.contains("shape"), "{err}");
    // An architecture a CNN cannot have (two hidden layers) is refused before any tensor is read.
    let deep = Arch {
        hidden: vec![12, 12],
        ..arch
    };
    let err = load_student(&p, &deep).expect_err("two hidden layers").to_string();
    assert!(err.contains("one hidden"), "{err}");
}

/// A two-block 1-D CNN on 3 channels of 21 steps (odd: pooled with floor) with kernel 7 and a per-value
/// standardization, its architecture and 10 inputs.
fn cnn1d_student() -> (Model, Arch, Vec<f32>) {
    let cfg = ModelConfig::Cnn1d {
        in_channels: 3,
        channels: vec![4, 6],
        hidden: 12,
        kernel: 7,
    };
    let m = Model::new(&cfg, 63, 5, 8).expect("model");
    let x: Vec<f32> = (0..10 * 63).map(|i| ((i * 37) % 23) as f32 / 23.0).collect();
    m.fit_input_normalization(&x, 10, true).expect("norm");
    let arch = Arch::from_config(&cfg, 63, 5).expect("arch");
    (m, arch, x)
}

#[test]
fn every_cnn1d_profile_round_trips_with_identical_logits() {
    let (m, arch, x) = cnn1d_student();
    assert_eq!(arch.model_config().expect("cfg"), m.config().clone());
    let dir = tempfile::tempdir().expect("tmp");
    for (p, card) in crate::quant::assert_every_profile_round_trips(&m, &arch, &x, 10, dir.path()) {
        assert_eq!(card.layer_formats.len(), 4, "{p}");
    }
    let gguf = to_gguf(&QuantizedModel::from_model(&m, Profile::Int8).expect("q")).expect("gguf");
    let content = gguf_file::Content::read(&mut Cursor::new(&gguf[..])).expect("read");
    let meta = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    let num = |k: &str| content.metadata.get(k).and_then(|v| v.to_u64().ok());
    assert_eq!(meta("general.architecture").as_deref(), Some(GGUF_ARCH_CNN1D));
    assert_eq!(meta("fedistill.conv_layout").as_deref(), Some(CONV1D_LAYOUT));
    assert_eq!(
        (num("fedistill.in_channels"), num("fedistill.kernel")),
        (Some(3), Some(7))
    );
    // The conv blocks as stored: [out, pad32(in * kernel)] in Q8_0 (3 * 7 = 21 -> 32, 4 * 7 = 28 -> 32).
    for (name, dims) in [("convs.0.weight", [4usize, 32]), ("convs.1.weight", [6, 32])] {
        let info = &content.tensor_infos[name];
        assert_eq!((info.ggml_dtype, info.shape.dims()), (GgmlDType::Q8_0, &dims[..]));
    }
    // The f16 file keeps the kernels unpadded, [out, in, kernel].
    let f16 = to_f16_safetensors(&QuantizedModel::from_model(&m, Profile::F16).expect("q")).expect("f16");
    let st = safetensors::SafeTensors::deserialize(&f16).expect("st");
    assert_eq!(st.tensor("convs.1.weight").expect("conv").shape(), [6, 4, 7]);
}

#[test]
fn cnn1d_files_that_disagree_with_the_config_are_refused() {
    let (m, arch, _) = cnn1d_student();
    let q = QuantizedModel::from_model(&m, Profile::Int8).expect("q");
    let all = stored_tensors(&q).expect("tensors");
    // Another kernel: wrong architecture.
    let gguf = to_gguf(&q).expect("gguf");
    let kernel5 = Arch {
        conv1d: Some(Conv1dArch {
            in_channels: 3,
            kernel: 5,
        }),
        ..arch.clone()
    };
    let err = load_err(&gguf, &kernel5);
    assert!(err.contains("wrong architecture"), "{err}");
    // A 2-D file where a 1-D one is expected, and the other way round.
    let (cnn, cnn_arch, _) = cnn_student();
    let cnn_gguf = to_gguf(&QuantizedModel::from_model(&cnn, Profile::Int8).expect("q")).expect("gguf");
    assert!(load_err(&cnn_gguf, &arch).contains("wrong architecture"));
    assert!(load_err(&gguf, &cnn_arch).contains("wrong architecture"));
    // Metadata without the kernel, or with the 2-D layout.
    let err = load_err(&rewrite_without(&q, &all, "fedistill.kernel"), &arch);
    assert!(err.contains("fedistill.kernel"), "{err}");
    let err = load_err(&rewrite_without(&q, &all, "fedistill.conv_layout"), &arch);
    assert!(err.contains("fedistill.conv_layout"), "{err}");
    // A conv kernel of the wrong stored width.
    let mut bad = stored_tensors(&q).expect("tensors");
    let wide = Tensor::zeros((6, 64), DType::F32, &Device::Cpu).expect("z");
    bad[4].1 = QTensor::quantize(&wide, GgmlDType::Q8_0).expect("q");
    let err = load_err(&rewrite_without(&q, &bad, ""), &arch);
    assert!(err.contains("convs.1.weight") && err.contains("shape"), "{err}");
    // The bare f32 checkpoint and the f16 file read with another kernel name the conv tensor.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("student.safetensors");
    m.save(&path).expect("save");
    let err = load_student(&path, &kernel5).expect_err("wrong kernel").to_string();
    assert!(err.contains("convs.0.weight") && err.contains("shape"), "{err}");
    let f16 = to_f16_safetensors(&QuantizedModel::from_model(&m, Profile::F16).expect("q")).expect("f16");
    let p = dir.path().join("s.safetensors");
    std::fs::write(&p, &f16).expect("write");
    let err = load_student(&p, &kernel5).expect_err("wrong kernel").to_string();
    assert!(err.contains("convs.0.weight") && err.contains("shape"), "{err}");
}
