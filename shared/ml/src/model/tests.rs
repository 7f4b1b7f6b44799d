//! Unit tests of the model architectures, their seeded init and checkpoints.

use super::*;

fn mlp(h: &[usize]) -> ModelConfig {
    ModelConfig::Mlp { hidden: h.to_vec() }
}

#[test]
fn impossible_shapes_are_rejected() {
    let cnn = |c: &[usize], h| ModelConfig::Cnn {
        channels: c.to_vec(),
        hidden: h,
    };
    let cases: Vec<(ModelConfig, usize, usize)> = vec![
        (mlp(&[0]), 4, 2),
        (mlp(&[8]), 0, 2),
        (mlp(&[8]), 4, 0), // no output (one output is a regressor)
        (mlp(&[MAX_WIDTH + 1]), 4, 2),
        (mlp(&[1; MAX_DEPTH + 1]), 4, 2),
        (cnn(&[8], 16), 30, 10),        // 30 is not a square
        (cnn(&[8, 8, 8], 16), 100, 10), // side 10 not divisible by 8
        (cnn(&[], 16), 784, 10),
        (cnn(&[8], 0), 784, 10),
    ];
    for (cfg, d, c) in cases {
        assert!(
            matches!(Model::new(&cfg, d, c, 0), Err(MlError::InvalidConfig(_))),
            "{cfg:?} {d} {c}"
        );
    }
}

#[test]
fn config_toml_round_trip_and_unknown_kind() {
    let c: ModelConfig = toml::from_str("kind = \"cnn\"\nchannels = [16, 32]\nhidden = 128").unwrap_or(mlp(&[]));
    assert_eq!(
        c,
        ModelConfig::Cnn {
            channels: vec![16, 32],
            hidden: 128
        }
    );
    assert!(toml::from_str::<ModelConfig>("kind = \"transformer\"").is_err());
    assert!(toml::from_str::<ModelConfig>("kind = \"mlp\"\nhidden = [4]\nwidth = 3").is_err());
}

#[test]
fn parameter_count_and_layer_names() -> Result<()> {
    // Hand count: 3*4+4 + 4*2+2 = 26.
    let m = Model::new(&mlp(&[4]), 3, 2, 0)?;
    assert_eq!(m.params(), 26);
    let names: Vec<String> = m.trainable_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight"]
    );
    let data = m
        .varmap()
        .data()
        .lock()
        .map_err(|_| MlError::InvalidConfig("lock".into()))?;
    assert_eq!(data.get("layers.0.weight").map(|v| v.dims().to_vec()), Some(vec![4, 3]));
    drop(data);
    // CNN on 4x4 images, one block of 2 channels, hidden 3, 2 classes (hand count):
    // conv 2*1*9+2 = 20; flatten 2*2*2 = 8 -> 8*3+3 = 27; 3*2+2 = 8; total 55.
    let c = Model::new(
        &ModelConfig::Cnn {
            channels: vec![2],
            hidden: 3,
        },
        16,
        2,
        0,
    )?;
    assert_eq!(c.params(), 55);
    let out = c.logits(&[0.5; 32], 2)?;
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn seeded_init_is_deterministic() -> Result<()> {
    let a = Model::new(&mlp(&[16, 8]), 10, 3, 42)?;
    let b = Model::new(&mlp(&[16, 8]), 10, 3, 42)?;
    let c = Model::new(&mlp(&[16, 8]), 10, 3, 43)?;
    assert_eq!(a.weights_digest(), b.weights_digest());
    assert_ne!(a.weights_digest(), c.weights_digest());
    Ok(())
}

#[test]
fn save_load_round_trip() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| MlError::Io {
        path: "tempdir".into(),
        source: e,
    })?;
    let path = dir.path().join("m.safetensors");
    let m = Model::new(&mlp(&[8]), 5, 3, 9)?;
    m.fit_input_normalization(&[1.0, 2.0, 3.0, 4.0, 5.0, 2.0, 2.0, 2.0, 2.0, 9.0], 2, true)?;
    m.save(&path)?;
    let l = Model::load(&mlp(&[8]), 5, 3, &path)?;
    assert_eq!(m.weights_digest(), l.weights_digest());
    let x = [0.1f32, -0.2, 0.3, 0.4, 0.5];
    assert_eq!(m.logits(&x, 1)?, l.logits(&x, 1)?);
    assert_eq!(
        std::fs::metadata(&path).map(|md| md.len() as usize).ok(),
        Some(m.serialized_size()?)
    );
    Ok(())
}

#[test]
fn bad_checkpoints_are_rejected() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| MlError::Io {
        path: "tempdir".into(),
        source: e,
    })?;
    let path = dir.path().join("m.safetensors");
    Model::new(&mlp(&[8]), 5, 3, 9)?.save(&path)?;
    assert!(matches!(
        Model::load(&mlp(&[16]), 5, 3, &path),
        Err(MlError::Checkpoint { .. })
    ));
    assert!(matches!(
        Model::load(&mlp(&[8, 4]), 5, 3, &path),
        Err(MlError::Checkpoint { .. })
    ));
    std::fs::write(&path, b"not a checkpoint").map_err(|e| MlError::Io {
        path: "w".into(),
        source: e,
    })?;
    assert!(matches!(
        Model::load(&mlp(&[8]), 5, 3, &path),
        Err(MlError::Checkpoint { .. })
    ));
    assert!(matches!(
        Model::load(&mlp(&[8]), 5, 3, &dir.path().join("none")),
        Err(MlError::Io { .. })
    ));
    Ok(())
}

#[test]
fn bad_features_and_temperatures_are_rejected() -> Result<()> {
    let m = Model::new(&mlp(&[4]), 3, 2, 0)?;
    assert!(matches!(m.logits(&[0.0; 5], 2), Err(MlError::InvalidInput(_))));
    assert!(matches!(
        m.logits(&[0.0, f32::NAN, 0.0], 1),
        Err(MlError::InvalidInput(_))
    ));
    assert!(matches!(
        m.logits(&[0.0, f32::INFINITY, 0.0], 1),
        Err(MlError::InvalidInput(_))
    ));
    for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            m.probabilities(&[0.0; 3], 1, t),
            Err(MlError::InvalidHyperParameter(_))
        ));
    }
    let p = m.probabilities(&[0.3, 0.1, -0.4], 1, 2.0)?;
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    Ok(())
}

#[test]
fn module_forward_equals_logits() -> Result<()> {
    let m = Model::new(&mlp(&[5]), 3, 2, 4)?;
    m.fit_input_normalization(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0], 2, true)?;
    let x = [0.5f32, -1.0, 2.0];
    let t = Tensor::from_slice(&x, (1, 3), &Device::Cpu)?;
    let via_module = Module::forward(&m, &t)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(via_module, m.logits(&x, 1)?);
    Ok(())
}

#[test]
fn softmax_with_temperature_matches_hand_values() {
    // softmax([0, ln 3] / 1) = [0.25, 0.75]; at T = 2: [1, sqrt 3] / (1 + sqrt 3).
    let l = [0.0f32, 3f32.ln()];
    let p = softmax_rows(&l, 2, 1.0);
    assert!((p[1] - 0.75).abs() < 1e-6);
    let p2 = softmax_rows(&l, 2, 2.0);
    assert!((p2[1] - 3f32.sqrt() / (1.0 + 3f32.sqrt())).abs() < 1e-6);
    let p3 = softmax_rows(&[0.0, f32::NEG_INFINITY], 2, 1.0);
    assert_eq!(p3, vec![1.0, 0.0]);
}
