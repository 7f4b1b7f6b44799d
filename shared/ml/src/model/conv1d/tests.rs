//! Unit tests of the 1-D CNN: its config and validation, shapes and layout, checkpoints, pooling, and that
//! it learns a series task through the ordinary training and distillation code.

use candle_core::{Device, Tensor};

use super::*;
use crate::distill::{DistillConfig, Distiller, InputNorm, SoftTargets, TemperatureSchedule};
use crate::model::{argmax, bump_task, bump_teacher, FeatureShape, Model, ModelConfig};

fn cnn1d(in_channels: usize, channels: &[usize], hidden: usize, kernel: usize) -> ModelConfig {
    ModelConfig::Cnn1d {
        in_channels,
        channels: channels.to_vec(),
        hidden,
        kernel,
    }
}

fn message(r: Result<Model>) -> String {
    match r {
        Ok(_) => String::from("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cnn1d_toml_has_defaults_and_refuses_unknown_keys() {
    let c: ModelConfig = toml::from_str("kind = \"cnn1d\"\nchannels = [16, 32]\nhidden = 64").expect("valid");
    assert_eq!(c, cnn1d(1, &[16, 32], 64, 5));
    let c: ModelConfig =
        toml::from_str("kind = \"cnn1d\"\nin_channels = 3\nchannels = [16]\nhidden = 64\nkernel = 7").expect("valid");
    assert_eq!(c, cnn1d(3, &[16], 64, 7));
    let e = toml::from_str::<ModelConfig>("kind = \"cnn1d\"\nchannels = [16]\nhidden = 64\nkernels = 7");
    assert!(e.is_err_and(|e| e.to_string().contains("unknown field")));
    assert!(toml::from_str::<ModelConfig>("kind = \"cnn1d\"\nchannels = [16]").is_err());
    // And back: the kind is spelt `cnn1d`.
    let json = serde_json::to_string(&cnn1d(2, &[4], 8, 3)).expect("json");
    assert_eq!(
        json,
        r#"{"kind":"cnn1d","in_channels":2,"channels":[4],"hidden":8,"kernel":3}"#
    );
}

#[test]
fn cnn1d_refuses_each_impossible_shape_with_its_reason() {
    let cases: Vec<(ModelConfig, usize, &str)> = vec![
        (cnn1d(1, &[], 8, 5), 64, "cnn1d needs 1..=4 conv blocks, got 0"),
        (cnn1d(1, &[4; 5], 8, 5), 64, "cnn1d needs 1..=4 conv blocks, got 5"),
        (cnn1d(1, &[4, 0], 8, 5), 64, "channels width 0 out of range"),
        (cnn1d(1, &[4], 0, 5), 64, "hidden width 0 out of range"),
        (cnn1d(0, &[4], 8, 5), 64, "cnn1d in_channels 0 out of range 1..=65536"),
        (
            cnn1d(3, &[4], 8, 5),
            64,
            "cnn1d with 3 input channels needs an input dimension divisible by 3",
        ),
        (cnn1d(1, &[4], 8, 4), 64, "cnn1d kernel 4 must be odd and in 3..=15"),
        (cnn1d(1, &[4], 8, 1), 64, "cnn1d kernel 1 must be odd and in 3..=15"),
        (cnn1d(1, &[4], 8, 17), 64, "cnn1d kernel 17 must be odd and in 3..=15"),
        (
            cnn1d(2, &[4, 4, 4], 8, 3),
            14,
            "cnn1d with 3 pooling blocks needs a length of at least 8 steps, got 7 (14 values in 2 channels)",
        ),
    ];
    for (cfg, d, want) in cases {
        let got = message(Model::new(&cfg, d, 2, 0));
        assert!(got.contains(want), "{cfg:?} on {d}: {got}");
        assert!(got.starts_with("invalid model config"), "{got}");
    }
    // The edges that are fine: kernels 3 and 15, a length of exactly 2^blocks.
    for cfg in [cnn1d(1, &[4], 8, 3), cnn1d(1, &[4], 8, 15), cnn1d(2, &[4, 4, 4], 8, 3)] {
        assert!(Model::new(&cfg, 16, 2, 0).is_ok(), "{cfg:?}");
    }
}

#[test]
fn cnn1d_shapes_with_one_and_three_channels_and_an_odd_length() -> Result<()> {
    // 25 steps pool to 12, then 6.
    for (in_channels, d) in [(1, 25), (3, 75)] {
        let cfg = cnn1d(in_channels, &[4, 6], 8, 5);
        let m = Model::new(&cfg, d, 3, 1)?;
        // Hand count: conv 4*C*5+4, conv 6*4*5+6 = 126, linear 6*6 = 36 -> 36*8+8 = 296, 8*3+3 = 27.
        assert_eq!(m.params(), 4 * in_channels * 5 + 4 + 126 + 296 + 27, "{cfg:?}");
        let data = m.varmap().data().lock().expect("lock");
        let dims = |n: &str| data.get(n).map(|v| v.dims().to_vec());
        assert_eq!(dims("convs.0.weight"), Some(vec![4, in_channels, 5]));
        assert_eq!(dims("convs.1.weight"), Some(vec![6, 4, 5]));
        assert_eq!(dims("layers.0.weight"), Some(vec![8, 36]));
        drop(data);
        let x: Vec<f32> = (0..5 * d).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let logits = m.logits(&x, 5)?;
        assert_eq!(logits.len(), 15);
        assert!(logits.iter().all(|v| v.is_finite()));
        assert_eq!(
            m.feature_shapes(),
            vec![
                FeatureShape::Sequence {
                    channels: 4,
                    length: 12
                },
                FeatureShape::Sequence { channels: 6, length: 6 },
                FeatureShape::Flat { width: 8 },
            ]
        );
        let t = Tensor::from_slice(&x, (5, d), &Device::Cpu)?;
        let (feats, out) = m.forward_features(&t)?;
        let got: Vec<Vec<usize>> = feats.iter().map(|f| f.dims().to_vec()).collect();
        assert_eq!(got, vec![vec![5, 4, 12], vec![5, 6, 6], vec![5, 8]]);
        assert_eq!(out.flatten_all()?.to_vec1::<f32>()?, logits);
    }
    Ok(())
}

/// The layout is channel-major and the conv is a cross-correlation with padding `kernel / 2`: a hand-set
/// model whose logits are its pooled block output.
#[test]
fn cnn1d_by_hand_is_channel_major_with_same_padding() -> Result<()> {
    // Two channels of 6 steps; one block of 2 channels, kernel 3; an identity head (6 features -> 6).
    let m = Model::new(&cnn1d(2, &[2], 6, 3), 12, 6, 1)?;
    let eye: Vec<f32> = (0..36).map(|i| if i % 7 == 0 { 1.0 } else { 0.0 }).collect();
    let set = |name: &str, v: Vec<f32>, dims: &[usize]| -> Result<()> {
        let data = m.varmap().data().lock().expect("lock");
        let var = data.get(name).expect("the tensor exists");
        var.set(&Tensor::from_vec(v, dims, &Device::Cpu)?)?;
        Ok(())
    };
    // Out 0: the box sum of channel 0; out 1: the next step of channel 1, plus 10.
    set(
        "convs.0.weight",
        vec![1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 1.],
        &[2, 2, 3],
    )?;
    set("convs.0.bias", vec![0., 10.], &[2])?;
    set("layers.0.weight", eye.clone(), &[6, 6])?;
    set("layers.0.bias", vec![0.; 6], &[6])?;
    set("layers.1.weight", eye, &[6, 6])?;
    set("layers.1.bias", vec![0.; 6], &[6])?;
    let x = [1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 50., 60.];
    // Box sums of 1..6 (zero padded): 3 6 9 12 15 11 -> pooled 6 12 15.
    // Next step of channel 1, + 10: 30 40 50 60 70 10 -> pooled 40 60 70.
    assert_eq!(m.logits(&x, 1)?, [6., 12., 15., 40., 60., 70.]);
    Ok(())
}

#[test]
fn max_pool1d_floors_and_sends_gradients_to_the_maxima() -> Result<()> {
    let v = candle_core::Var::from_vec(vec![1f32, 5., 2., 0., 3., 9., 4.], (1, 1, 7), &Device::Cpu)?;
    let p = max_pool1d(v.as_tensor())?;
    assert_eq!(p.flatten_all()?.to_vec1::<f32>()?, [5., 2., 9.]);
    // The gradient of the sum reaches each window's maximum; the dropped 7th step gets none.
    let grads = p.sum_all()?.backward()?;
    let g = grads.get(&v).expect("a gradient").flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(g, [0., 1., 1., 0., 0., 1., 0.]);
    Ok(())
}

#[test]
fn cnn1d_save_load_round_trip() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| MlError::Io {
        path: "tempdir".into(),
        source: e,
    })?;
    let path = dir.path().join("m.safetensors");
    let cfg = cnn1d(3, &[4, 5], 7, 7);
    let m = Model::new(&cfg, 3 * 21, 4, 9)?;
    let (x, _) = bump_task(6, 3, 21, 1);
    m.fit_input_normalization(&x, 6, true)?;
    m.save(&path)?;
    let l = Model::load(&cfg, 63, 4, &path)?;
    assert_eq!(m.weights_digest(), l.weights_digest());
    assert_eq!(m.logits(&x, 6)?, l.logits(&x, 6)?);
    // Another kernel width names the tensor whose shape differs.
    let err = Model::load(&cnn1d(3, &[4, 5], 7, 5), 63, 4, &path).map(|_| ());
    assert!(
        matches!(&err, Err(MlError::Checkpoint { reason, .. }) if reason.contains("convs.0.weight")),
        "{err:?}"
    );
    // The same seed gives the same weights, another seed others.
    assert_eq!(
        Model::new(&cfg, 63, 4, 9)?.weights_digest(),
        Model::new(&cfg, 63, 4, 9)?.weights_digest()
    );
    assert_ne!(Model::new(&cfg, 63, 4, 10)?.weights_digest(), m.weights_digest());
    Ok(())
}

fn accuracy(m: &Model, x: &[f32], y: &[u32]) -> Result<f64> {
    let c = m.classes();
    let logits = m.logits(x, y.len())?;
    let right = logits
        .chunks_exact(c)
        .zip(y)
        .filter(|(row, &label)| argmax(row) as u32 == label)
        .count();
    Ok(right as f64 / y.len() as f64)
}

#[test]
fn a_trained_cnn1d_learns_where_the_bump_is_and_distills() -> Result<()> {
    let (teacher, tx, ty) = bump_teacher()?;
    let cfg = teacher.config().clone();
    let untrained = accuracy(&Model::new(&cfg, teacher.in_dim(), 2, 3)?, &tx, &ty)?;
    let trained = accuracy(&teacher, &tx, &ty)?;
    assert!(trained >= 0.95, "trained accuracy {trained} (untrained {untrained})");
    assert!(untrained <= 0.7, "untrained accuracy {untrained}");
    // Distillation: a smaller 1-D student learns the task from the teacher's soft labels on unlabelled
    // series alone.
    let (px, _) = bump_task(400, 2, 33, 9);
    let targets = SoftTargets::from_teacher(&teacher, &px, 400)?;
    let student = Model::new(&cnn1d(2, &[4], 8, 3), 66, 2, 4)?;
    let before = accuracy(&student, &tx, &ty)?;
    let mut d = Distiller::new(
        student,
        DistillConfig {
            epochs_per_round: 15,
            batch_size: 32,
            lr: 5e-3,
            schedule: TemperatureSchedule::Constant { t: 2.0 },
            replay_capacity: 0,
            input_norm: InputNorm::PerFeature,
            seed: 5,
            ..DistillConfig::default()
        },
    );
    let stats = d.distill_round(&px, 400, &targets, None, 0, 1)?;
    assert!(stats.final_loss.is_finite(), "{stats:?}");
    let after = accuracy(d.student(), &tx, &ty)?;
    eprintln!("bump task: untrained {untrained:.3}, trained {trained:.3}, student {before:.3} -> {after:.3}");
    assert!(
        after >= 0.9 && after > before + 0.2,
        "student accuracy {before} -> {after}"
    );
    Ok(())
}

/// DP-SGD clips per-sample gradients of MLPs only: a 1-D CNN teacher is refused as a 2-D one is.
#[test]
fn dp_sgd_refuses_a_cnn1d_teacher() -> Result<()> {
    use rand::SeedableRng;
    let (x, y) = bump_task(4, 1, 16, 2);
    let ds = fedistill_data::Dataset::new(
        "bumps",
        x,
        y,
        16,
        fedistill_data::DataKind::Tabular,
        vec!["a".into(), "b".into()],
    )
    .map_err(|e| MlError::InvalidInput(e.to_string()))?;
    let dp = crate::DpSgdConfig {
        noise_multiplier: 1.0,
        clip: 1.0,
        batch: 2,
    };
    let tc = crate::TrainConfig {
        epochs: 1,
        ..crate::TrainConfig::default()
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
    let r = crate::train_teacher_dp(
        &cnn1d(1, &[2], 3, 3),
        &ds,
        &tc,
        &dp,
        None,
        &mut rng,
        &crate::Progress::hidden(),
    );
    let e = r.err().map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|e| e.contains("MLP teachers only")), "{e:?}");
    Ok(())
}
