//! Unit tests of the distillation stages: the losses against hand-computed values, the finite-difference
//! Jacobian against a linear model's exact one, one training step of each stage, the schedule's validation
//! (one bad input each) and the whole schedule end to end on a tiny seeded problem.

use super::*;
use crate::distill::TemperatureSchedule;
use candle_core::{Device, Tensor};

fn mlp(hidden: &[usize]) -> ModelConfig {
    ModelConfig::Mlp {
        hidden: hidden.to_vec(),
    }
}

fn cnn(channels: &[usize], hidden: usize) -> ModelConfig {
    ModelConfig::Cnn {
        channels: channels.to_vec(),
        hidden,
    }
}

fn tensor(v: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).expect("shape matches the values")
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().expect("a scalar loss")
}

/// Seeded features in [-1, 1].
fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * d)
        .map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0))
        .collect()
}

/// A projector that reproduces the teacher's features exactly gives a zero hint loss; moving one weight
/// makes it positive.
#[test]
fn hint_loss_is_zero_when_the_projector_maps_exactly() -> Result<()> {
    let kind = ProjectorKind::Linear { from: 3, to: 2 };
    let w = tensor(vec![0.5, -1.0, 2.0, 1.5, 0.0, -0.25], &[2, 3]);
    let b = tensor(vec![0.1, -0.2], &[2]);
    let hs = tensor(features(5, 3, 1), &[5, 3]);
    let ht = hs.matmul(&w.t()?)?.broadcast_add(&b)?;
    let exact = Projector::from_tensors(kind, &w, &b)?;
    assert!(scalar(&hint_loss(&exact.forward(&hs)?, &ht)?) < 1e-12);
    let off = Projector::from_tensors(kind, &w.affine(1.0, 0.1)?, &b)?;
    assert!(scalar(&hint_loss(&off.forward(&hs)?, &ht)?) > 1e-3);
    // The 1x1 convolution: the same channel map at every position of a 2x2 map.
    let conv = ProjectorKind::Conv1x1 { from: 3, to: 2 };
    let hs4 = tensor(features(5 * 3 * 4, 1, 2), &[5, 3, 2, 2]);
    let ht4 = hs4
        .permute((0, 2, 3, 1))?
        .reshape((20, 3))?
        .matmul(&w.t()?)?
        .broadcast_add(&b)?
        .reshape((5, 2, 2, 2))?
        .permute((0, 3, 1, 2))?;
    let exact = Projector::from_tensors(conv, &w.reshape((2, 3, 1, 1))?, &b)?;
    assert!(scalar(&hint_loss(&exact.forward(&hs4)?, &ht4)?) < 1e-12);
    Ok(())
}

/// The attention map is the channel mean of the squares, flattened and of unit L2 norm per sample; attention
/// transfer is 0 between maps that differ by a positive scale and the L2 distance otherwise.
#[test]
fn attention_maps_are_channel_means_of_squares_with_unit_norm() -> Result<()> {
    // One sample, 2 channels, 2x2: squares (1,4,0,0) and (1,0,0,4); channel mean (1,2,0,2); norm 3.
    let a = tensor(vec![1.0, 2.0, 0.0, 0.0, -1.0, 0.0, 0.0, 2.0], &[1, 2, 2, 2]);
    let q = attention_map(&a)?.flatten_all()?.to_vec1::<f32>()?;
    let expect = [1.0 / 3.0, 2.0 / 3.0, 0.0, 2.0 / 3.0];
    for (x, e) in q.iter().zip(expect) {
        assert!((x - e).abs() < 1e-6, "{q:?}");
    }
    let many = tensor(features(4 * 3 * 16, 1, 3), &[4, 3, 4, 4]);
    for row in attention_map(&many)?.to_vec2::<f32>()? {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    assert!(scalar(&attention_loss(&many, &many.affine(2.0, 0.0)?)?) < 1e-5);
    let other = tensor(features(4 * 5 * 16, 1, 4), &[4, 5, 4, 4]);
    let l = scalar(&attention_loss(&many, &other)?);
    assert!(l > 0.05 && l <= 2.0, "AT loss {l}");
    // Blocks of different sides cannot be compared.
    let small = tensor(features(4 * 3 * 4, 1, 5), &[4, 3, 2, 2]);
    assert!(attention_loss(&many, &small).is_err());
    Ok(())
}

/// For a linear model (an MLP without hidden layers) the central difference of the logits along v is exactly
/// W (scale * v): the input standardization scales each feature before W.
#[test]
fn finite_difference_jacobian_of_a_linear_model_is_w_v() -> Result<()> {
    let (d, c, n) = (6, 3, 4);
    let model = Model::new(&mlp(&[]), d, c, 9)?;
    let x = features(50, d, 10);
    model.fit_input_normalization(&x, 50, true)?;
    let xb = tensor(features(n, d, 11), &[n, d]);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let v = unit_directions(&mut rng, n, d);
    for row in v.chunks(d) {
        assert!((row.iter().map(|a| a * a).sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let vt = tensor(v.clone(), &[n, d]);
    let jv = directional_jacobian(&model, &xb, &vt, 0.01, JacobianOf::Logits)?.to_vec2::<f32>()?;
    let layers = model.mlp_layers().expect("an MLP");
    let w = layers[0].0.to_vec2::<f32>()?;
    let (_, scale) = model.input_standardization();
    let scale = scale.to_vec1::<f32>()?;
    for (i, row) in jv.iter().enumerate() {
        for (k, got) in row.iter().enumerate() {
            let want: f32 = (0..d).map(|j| w[k][j] * scale[j] * v[i * d + j]).sum();
            assert!(
                (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                "sample {i} class {k}: {got} vs {want}"
            );
        }
    }
    // Through the softmax at T: the chain rule (diag p - p p^T) / T applied to W v.
    let t = 2.0f32;
    let js = directional_jacobian(&model, &xb, &vt, 1e-2, JacobianOf::Softmax { temperature: t })?.to_vec2::<f32>()?;
    let probs = model.probabilities(&xb.flatten_all()?.to_vec1::<f32>()?, n, t)?;
    for i in 0..n {
        let p = &probs[i * c..(i + 1) * c];
        let dz = &jv[i];
        let mean: f32 = p.iter().zip(dz).map(|(a, b)| a * b).sum();
        for k in 0..c {
            let want = p[k] * (dz[k] - mean) / t;
            assert!((js[i][k] - want).abs() < 2e-3, "softmax jv {} vs {want}", js[i][k]);
        }
    }
    assert!(directional_jacobian(&model, &xb, &vt, 0.0, JacobianOf::Logits).is_err());
    Ok(())
}

/// The Jacobian-matching loss is 0 for derivatives pointing the same way (whatever their lengths), 4 for
/// opposite ones, and ignores a teacher that is flat along v.
#[test]
fn jacobian_matching_loss_compares_directions() -> Result<()> {
    let s = tensor(vec![1.0, 2.0, -1.0, 0.5, 0.5, 0.0], &[2, 3]);
    assert!(scalar(&jacobian_matching_loss(&s, &s.affine(3.0, 0.0)?)?) < 1e-6);
    assert!((scalar(&jacobian_matching_loss(&s, &s.affine(-1.0, 0.0)?)?) - 4.0).abs() < 1e-4);
    let flat = tensor(vec![0.0; 6], &[2, 3]);
    assert!((scalar(&jacobian_matching_loss(&s, &flat)?) - 1.0).abs() < 1e-4);
    assert!(jacobian_matching_loss(&s, &tensor(vec![0.0; 4], &[2, 2])).is_err());
    Ok(())
}

/// `forward_features` returns one activation per hidden layer, shaped as `feature_shapes`, and the same
/// logits as `forward`.
#[test]
fn forward_features_match_the_feature_shapes_and_the_logits() -> Result<()> {
    for cfg in [mlp(&[7, 5]), cnn(&[3, 4], 6)] {
        let model = Model::new(&cfg, 64, 4, 1)?;
        let x = tensor(features(3, 64, 2), &[3, 64]);
        let (feats, logits) = model.forward_features(&x)?;
        let shapes = model.feature_shapes();
        assert_eq!(feats.len(), shapes.len(), "{cfg:?}");
        for (f, s) in feats.iter().zip(&shapes) {
            let want = match *s {
                FeatureShape::Flat { width } => vec![3, width],
                FeatureShape::Spatial { channels, side } => vec![3, channels, side, side],
                FeatureShape::Sequence { channels, length } => vec![3, channels, length],
            };
            assert_eq!(f.dims(), want.as_slice(), "{cfg:?}");
        }
        let plain = model.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(logits.flatten_all()?.to_vec1::<f32>()?, plain);
    }
    assert_eq!(
        cnn(&[3, 4], 6).feature_shapes(64),
        vec![
            FeatureShape::Spatial { channels: 3, side: 4 },
            FeatureShape::Spatial { channels: 4, side: 2 },
            FeatureShape::Flat { width: 6 },
        ]
    );
    Ok(())
}

/// A 1-D CNN's blocks are series: a 1x1 projector between blocks of the same length (the same channel map
/// at every step), attention maps over the steps, pairs of equal length; blocks of different lengths are
/// refused for a 1x1 projector with the reason.
#[test]
fn cnn1d_blocks_align_as_series() -> Result<()> {
    let cnn1d = |channels: &[usize], hidden| ModelConfig::Cnn1d {
        in_channels: 2,
        channels: channels.to_vec(),
        hidden,
        kernel: 3,
    };
    // The projector on [n, c, length]: the channel map at every step.
    let w = tensor(vec![0.5, -1.0, 2.0, 1.5, 0.0, -0.25], &[2, 3]);
    let b = tensor(vec![0.1, -0.2], &[2]);
    let hs = tensor(features(5 * 3 * 4, 1, 2), &[5, 3, 4]);
    let ht = hs
        .permute((0, 2, 1))?
        .reshape((20, 3))?
        .matmul(&w.t()?)?
        .broadcast_add(&b)?
        .reshape((5, 4, 2))?
        .permute((0, 2, 1))?;
    let conv = Projector::from_tensors(ProjectorKind::Conv1x1 { from: 3, to: 2 }, &w.reshape((2, 3, 1, 1))?, &b)?;
    let out = conv.forward(&hs)?;
    assert_eq!(out.dims(), [5, 2, 4]);
    assert!(scalar(&hint_loss(&out, &ht)?) < 1e-12);
    // Attention over steps: squares (1, 4, 0) and (1, 0, 4), channel mean (1, 2, 2), norm 3.
    let a = tensor(vec![1.0, 2.0, 0.0, -1.0, 0.0, 2.0], &[1, 2, 3]);
    let q = attention_map(&a)?.flatten_all()?.to_vec1::<f32>()?;
    for (x, e) in q.iter().zip([1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]) {
        assert!((x - e).abs() < 1e-6, "{q:?}");
    }
    // Plans: 2 channels of 16 steps; the teacher's blocks have 8 and 4 steps, the student's 8.
    let (tcfg, scfg) = (cnn1d(&[6, 8], 10), cnn1d(&[3], 5));
    let d = small_distill(1);
    let fa = FeatureAlignment {
        teacher_layer: Some(0),
        student_layer: Some(0),
        attention_weight: 1.0,
        ..FeatureAlignment::default()
    };
    let stages = StagesConfig {
        feature_alignment: fa.clone(),
        ..StagesConfig::default()
    };
    let plan = stages.plan(&tcfg, &scfg, 32, &d)?.expect("feature alignment is on");
    assert_eq!(plan.projector, ProjectorKind::Conv1x1 { from: 3, to: 6 });
    assert_eq!(plan.attention_pairs, vec![(0, 0)]);
    let other = StagesConfig {
        feature_alignment: FeatureAlignment {
            teacher_layer: Some(1),
            ..fa.clone()
        },
        ..StagesConfig::default()
    };
    let m = config_error(other.validate(&tcfg, &scfg, 32, &d));
    assert!(
        m.contains("projector cannot match") && m.contains("8 vs 4 steps"),
        "{m}"
    );
    // One stage-1 step lowers the feature loss.
    let (teacher, student) = (Model::new(&tcfg, 32, 3, 1)?, Model::new(&scfg, 32, 3, 2)?);
    let projector = Projector::new(plan.projector, 3)?;
    let mut vars: Vec<candle_core::Var> = student.trainable_vars().into_iter().map(|(_, v)| v).collect();
    vars.extend(projector.vars());
    let mut opt = optimizer(vars, &d)?;
    let xb = tensor(features(32, 32, 4), &[32, 32]);
    let before = feature_loss(&teacher, &student, &projector, &plan, &fa, &xb)?;
    opt.step(&before.backward()?)?;
    let after = scalar(&feature_loss(&teacher, &student, &projector, &plan, &fa, &xb)?);
    assert!(after < scalar(&before), "{after} not below {}", scalar(&before));
    Ok(())
}

fn small_distill(epochs: usize) -> DistillConfig {
    DistillConfig {
        epochs_per_round: epochs,
        batch_size: 16,
        lr: 5e-3,
        schedule: TemperatureSchedule::Linear { start: 3.0, end: 1.0 },
        seed: 5,
        ..DistillConfig::default()
    }
}

/// One stage-1 step on a batch lowers the hint loss on that batch (student MLP and CNN).
#[test]
fn one_feature_alignment_step_lowers_the_hint_loss() -> Result<()> {
    for (tcfg, scfg, attention) in [(mlp(&[12, 8]), mlp(&[5]), 0.0), (cnn(&[4], 8), cnn(&[2], 4), 1.0)] {
        let teacher = Model::new(&tcfg, 16, 3, 1)?;
        let student = Model::new(&scfg, 16, 3, 2)?;
        let fa = FeatureAlignment {
            attention_weight: attention,
            ..FeatureAlignment::default()
        };
        let stages = StagesConfig {
            feature_alignment: fa.clone(),
            ..StagesConfig::default()
        };
        let distill = small_distill(1);
        let plan = stages
            .plan(&tcfg, &scfg, 16, &distill)?
            .expect("feature alignment is on");
        assert_eq!(plan.attention_pairs.len(), usize::from(attention > 0.0));
        let projector = Projector::new(plan.projector, 3)?;
        let mut vars: Vec<candle_core::Var> = student.trainable_vars().into_iter().map(|(_, v)| v).collect();
        vars.extend(projector.vars());
        let mut opt = optimizer(vars, &distill)?;
        let xb = tensor(features(32, 16, 4), &[32, 16]);
        let before = feature_loss(&teacher, &student, &projector, &plan, &fa, &xb)?;
        let head_before = student
            .trainable_vars()
            .last()
            .map(|(_, v)| v.flatten_all().and_then(|t| t.to_vec1::<f32>()));
        opt.step(&before.backward()?)?;
        let after = scalar(&feature_loss(&teacher, &student, &projector, &plan, &fa, &xb)?);
        assert!(
            after < scalar(&before),
            "{scfg:?}: {after} not below {}",
            scalar(&before)
        );
        // The classifier (sorted last: layers.1.*) is beyond the hint layer and stays as it was.
        let head_after = student
            .trainable_vars()
            .last()
            .map(|(_, v)| v.flatten_all().and_then(|t| t.to_vec1::<f32>()));
        assert_eq!(format!("{head_before:?}"), format!("{head_after:?}"));
    }
    Ok(())
}

/// A student that is a copy of the teacher has Jacobian loss ~0; one stage-2 epoch lowers a fresh student's
/// Jacobian loss on a fixed set of directions.
/// The MLP's backward pass written in candle operations gives the same input gradients as candle's backprop
/// (and as a central difference of the output), for the logits and through the softmax; and it stays attached
/// to the weights: autograd through it reaches the first layer.
#[test]
fn mlp_input_gradients_equal_candles_backprop_and_train_the_weights() -> Result<()> {
    let (d, c, n) = (5, 3, 6);
    let model = Model::new(&mlp(&[7, 4]), d, c, 21)?;
    let x = features(40, d, 22);
    model.fit_input_normalization(&x, 40, true)?;
    let xs = features(n, d, 23);
    let xb = tensor(xs.clone(), &[n, d]);
    let logits = model.logits(&xs, n)?;
    let u = jacobian::top_class_onehot(&logits, c, &(0..n).collect::<Vec<_>>())?;
    for of in [JacobianOf::Logits, JacobianOf::Softmax { temperature: 2.0 }] {
        let by_backprop = input_gradient(&model, &xb, &u, of)?.to_vec2::<f32>()?;
        let written = mlp_input_gradient(&model, &xb, &u, of)?
            .expect("an MLP")
            .to_vec2::<f32>()?;
        for (a, b) in by_backprop.iter().flatten().zip(written.iter().flatten()) {
            assert!(
                (a - b).abs() < 1e-5 * (1.0 + a.abs()),
                "{of:?}: backprop {a} vs written {b}"
            );
        }
        // Against a central difference, one input at a time.
        let h = 1e-3f32;
        let uv = u.to_vec2::<f32>()?;
        for j in 0..d {
            let mut e = vec![0f32; n * d];
            for i in 0..n {
                e[i * d + j] = 1.0;
            }
            let fd = directional_jacobian(&model, &xb, &tensor(e, &[n, d]), h, of)?.to_vec2::<f32>()?;
            for i in 0..n {
                let want: f32 = (0..c).map(|k| uv[i][k] * fd[i][k]).sum();
                let got = written[i][j];
                assert!(
                    (got - want).abs() < 2e-2 * (1.0 + want.abs()),
                    "input {j} sample {i}: {got} vs {want}"
                );
            }
        }
    }
    let g = mlp_input_gradient(&model, &xb, &u, JacobianOf::Softmax { temperature: 2.0 })?.expect("an MLP");
    let first = &model.mlp_layers().expect("an MLP")[0].0;
    let grads = g.sqr()?.sum_all()?.backward()?;
    let dw = grads.get(first).expect("the first layer's weights receive a gradient");
    assert!(dw.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    // A CNN has no written backward; the backprop gradient works for it (the teacher's side).
    let conv = Model::new(&cnn(&[2], 4), 16, c, 24)?;
    let xc = tensor(features(2, 16, 25), &[2, 16]);
    let uc = jacobian::top_class_onehot(&conv.logits(&features(2, 16, 25), 2)?, c, &[0, 1])?;
    assert!(mlp_input_gradient(&conv, &xc, &uc, JacobianOf::Logits)?.is_none());
    assert_eq!(input_gradient(&conv, &xc, &uc, JacobianOf::Logits)?.dims(), &[2, 16]);
    // Output weights of the wrong width are refused.
    assert!(input_gradient(&model, &xb, &tensor(vec![1.0; n * 2], &[n, 2]), JacobianOf::Logits).is_err());
    Ok(())
}

/// Stage 2 on an MLP student pulls its input gradients (of the teacher's top class) towards the teacher's.
#[test]
fn gradient_guidance_aligns_an_mlp_students_input_gradients() -> Result<()> {
    let cfg = mlp(&[10]);
    let teacher = Model::new(&cfg, 8, 4, 31)?;
    let x = features(64, 8, 32);
    let xb = tensor(x.clone(), &[64, 8]);
    let logits = teacher.logits(&x, 64)?;
    let u = jacobian::top_class_onehot(&logits, 4, &(0..64).collect::<Vec<_>>())?;
    let of = JacobianOf::Softmax { temperature: 2.0 };
    let jt = input_gradient(&teacher, &xb, &u, of)?;
    let student = Model::new(&cfg, 8, 4, 33)?;
    let loss_of = |m: &Model| -> Result<f32> {
        Ok(scalar(&jacobian_matching_loss(
            &mlp_input_gradient(m, &xb, &u, of)?.expect("an MLP"),
            &jt,
        )?))
    };
    let before = loss_of(&student)?;
    let gg = GradientGuidance {
        epochs: 20,
        weight: 5.0,
        epsilon: 0.05,
    };
    let mut distill = small_distill(1);
    distill.schedule = TemperatureSchedule::Constant { t: 2.0 };
    distill.input_norm = InputNorm::Keep;
    let data = Transfer { x: &x, n: 64, dim: 8 };
    let loss = guide_gradients(&teacher, &student, &data, &logits, &gg, &distill, &Progress::hidden())?;
    assert!(loss.is_finite());
    let after = loss_of(&student)?;
    assert!(after < before * 0.7, "input-gradient loss {before} -> {after}");
    Ok(())
}

/// The fallback for a student that is not an MLP (here a CNN): stage 2 lowers the directional
/// finite-difference Jacobian loss.
#[test]
fn gradient_guidance_lowers_the_jacobian_loss() -> Result<()> {
    let cfg = cnn(&[4], 8);
    let teacher = Model::new(&cfg, 16, 4, 1)?;
    let twin = Model::new(&cfg, 16, 4, 2)?;
    twin.copy_weights_from(&teacher)?;
    let x = features(64, 16, 3);
    let xb = tensor(x.clone(), &[64, 16]);
    let v = jacobian::directions_tensor(&mut ChaCha8Rng::seed_from_u64(4), 64, 16)?;
    let of = JacobianOf::Softmax { temperature: 2.0 };
    let jt = directional_jacobian(&teacher, &xb, &v, 0.05, of)?;
    assert!(
        scalar(&jacobian_matching_loss(
            &directional_jacobian(&twin, &xb, &v, 0.05, of)?,
            &jt
        )?) < 1e-4
    );
    let student = Model::new(&cfg, 16, 4, 5)?;
    let before = scalar(&jacobian_matching_loss(
        &directional_jacobian(&student, &xb, &v, 0.05, of)?,
        &jt,
    )?);
    let gg = GradientGuidance {
        epochs: 60,
        weight: 5.0,
        epsilon: 0.05,
    };
    let mut distill = small_distill(1);
    distill.schedule = TemperatureSchedule::Constant { t: 2.0 };
    distill.input_norm = InputNorm::Keep;
    let data = Transfer { x: &x, n: 64, dim: 16 };
    let logits = teacher.logits(&x, 64)?;
    let loss = guide_gradients(&teacher, &student, &data, &logits, &gg, &distill, &Progress::hidden())?;
    assert!(loss.is_finite());
    let after = scalar(&jacobian_matching_loss(
        &directional_jacobian(&student, &xb, &v, 0.05, of)?,
        &jt,
    )?);
    assert!(after < before * 0.8, "Jacobian loss {before} -> {after}");
    Ok(())
}

/// The message of an `InvalidConfig` error; panics on anything else.
fn config_error(r: Result<()>) -> String {
    match r {
        Err(MlError::InvalidConfig(m)) => m,
        other => panic!("not an InvalidConfig: {other:?}"),
    }
}

/// One test per bad input of the schedule: each fails with a message naming the key.
#[test]
fn bad_schedules_fail_with_the_key_named() {
    let (t, s) = (mlp(&[16, 8]), mlp(&[4]));
    let d = small_distill(3);
    let on = |fa: FeatureAlignment, gg: GradientGuidance| StagesConfig {
        feature_alignment: fa,
        gradient_guidance: gg,
    };
    let fa = FeatureAlignment::default();
    let gg = GradientGuidance::default();
    let check =
        |c: &StagesConfig, t: &ModelConfig, s: &ModelConfig, d: &DistillConfig| config_error(c.validate(t, s, 64, d));
    // The defaults and a full schedule pass.
    assert!(StagesConfig::default().validate(&t, &s, 64, &d).is_ok());
    assert!(on(fa.clone(), gg.clone()).validate(&t, &s, 64, &d).is_ok());
    // Hint layers that do not exist.
    let m = check(
        &on(
            FeatureAlignment {
                teacher_layer: Some(2),
                ..fa.clone()
            },
            gg.clone(),
        ),
        &t,
        &s,
        &d,
    );
    assert!(
        m.contains("teacher_layer 2 does not exist") && m.contains("0..=1"),
        "{m}"
    );
    let m = check(
        &on(
            FeatureAlignment {
                student_layer: Some(1),
                ..fa.clone()
            },
            gg.clone(),
        ),
        &t,
        &s,
        &d,
    );
    assert!(m.contains("student_layer 1 does not exist"), "{m}");
    let m = check(&on(fa.clone(), gg.clone()), &t, &mlp(&[]), &d);
    assert!(m.contains("student") && m.contains("no hidden layer"), "{m}");
    // Two conv blocks of different sides: no 1x1 projector.
    let (tc, sc) = (cnn(&[4, 8], 16), cnn(&[2, 4], 8));
    let m = check(
        &on(
            FeatureAlignment {
                teacher_layer: Some(1),
                student_layer: Some(0),
                ..fa.clone()
            },
            gg.clone(),
        ),
        &tc,
        &sc,
        &d,
    );
    assert!(
        m.contains("projector cannot match") && m.contains("spatial size"),
        "{m}"
    );
    // The same blocks pair up for a hint of equal side and for attention transfer.
    let same = FeatureAlignment {
        teacher_layer: Some(1),
        student_layer: Some(1),
        attention_weight: 0.5,
        ..fa.clone()
    };
    assert!(on(same.clone(), gg.clone()).validate(&tc, &sc, 64, &d).is_ok());
    // Attention transfer without conv blocks on both sides.
    let m = check(
        &on(
            FeatureAlignment {
                attention_weight: 1.0,
                ..fa.clone()
            },
            gg.clone(),
        ),
        &t,
        &sc,
        &d,
    );
    assert!(m.contains("attention_weight") && m.contains("same spatial size"), "{m}");
    // Weights: negative, NaN, infinite; both feature weights 0.
    for w in [-1.0, f32::NAN, f32::INFINITY] {
        let m = check(
            &on(
                FeatureAlignment {
                    weight: w,
                    ..fa.clone()
                },
                gg.clone(),
            ),
            &t,
            &s,
            &d,
        );
        assert!(m.contains("feature_alignment.weight must be finite and >= 0"), "{m}");
        let m = check(
            &on(
                fa.clone(),
                GradientGuidance {
                    weight: w,
                    ..gg.clone()
                },
            ),
            &t,
            &s,
            &d,
        );
        assert!(m.contains("gradient_guidance.weight must be finite and >= 0"), "{m}");
        let m = check(
            &on(
                FeatureAlignment {
                    attention_weight: w,
                    ..fa.clone()
                },
                gg.clone(),
            ),
            &t,
            &s,
            &d,
        );
        assert!(m.contains("attention_weight must be finite"), "{m}");
    }
    let m = check(
        &on(
            FeatureAlignment {
                weight: 0.0,
                ..fa.clone()
            },
            gg.clone(),
        ),
        &t,
        &s,
        &d,
    );
    assert!(m.contains("nothing to align"), "{m}");
    let m = check(
        &on(
            fa.clone(),
            GradientGuidance {
                weight: 0.0,
                ..gg.clone()
            },
        ),
        &t,
        &s,
        &d,
    );
    assert!(m.contains("gradient_guidance.weight is 0"), "{m}");
    // Epsilon <= 0 or not finite.
    for e in [0.0, -0.1, f32::NAN] {
        let m = check(
            &on(
                fa.clone(),
                GradientGuidance {
                    epsilon: e,
                    ..gg.clone()
                },
            ),
            &t,
            &s,
            &d,
        );
        assert!(m.contains("gradient_guidance.epsilon must be finite and > 0"), "{m}");
    }
    // A schedule that does not add up.
    let off = StagesConfig::default();
    let m = check(&off, &t, &s, &small_distill(0));
    assert!(m.contains("no epochs anywhere"), "{m}");
    let only_features = on(
        fa.clone(),
        GradientGuidance {
            epochs: 0,
            ..gg.clone()
        },
    );
    let m = check(&only_features, &t, &s, &small_distill(0));
    assert!(m.contains("classifier is never trained"), "{m}");
    let m = check(
        &on(
            FeatureAlignment {
                epochs: 100_001,
                ..fa.clone()
            },
            gg.clone(),
        ),
        &t,
        &s,
        &d,
    );
    assert!(m.contains("feature_alignment.epochs 100001"), "{m}");
    // Stage 3 off is fine when stage 2 trains the classifier; a bad [distill] still fails.
    assert!(on(fa.clone(), gg.clone())
        .validate(&t, &s, 64, &small_distill(0))
        .is_ok());
    let mut bad_lr = small_distill(0);
    bad_lr.lr = -1.0;
    assert!(matches!(
        on(fa, gg).validate(&t, &s, 64, &bad_lr),
        Err(MlError::InvalidHyperParameter(_))
    ));
}

/// TOML: absent tables take the defaults, a table's missing keys its own defaults, unknown keys fail.
#[test]
fn stages_toml_defaults_and_unknown_keys() {
    let c: StagesConfig = toml::from_str("").expect("empty is the default");
    assert_eq!(c, StagesConfig::default());
    let c: StagesConfig = toml::from_str("gradient_guidance = { weight = 2.0 }").expect("valid");
    assert_eq!(c.gradient_guidance.epochs, GradientGuidance::default().epochs);
    assert_eq!(c.gradient_guidance.weight, 2.0);
    assert_eq!(c.feature_alignment.epochs, 0);
    let e = toml::from_str::<StagesConfig>("feature_alignment = { epoch = 3 }").map(|_| ());
    assert!(e.is_err_and(|e| e.to_string().contains("unknown field")));
}

/// The whole schedule on a tiny seeded problem: every stage reports, the student learns the teacher, and the
/// same seed gives the same weights.
#[test]
fn distill_in_stages_runs_every_stage_and_is_seeded() -> Result<()> {
    let (d, c, n) = (10, 3, 96);
    let teacher = Model::new(&mlp(&[16]), d, c, 1)?;
    let x = features(n, d, 2);
    let stages = StagesConfig {
        feature_alignment: FeatureAlignment {
            epochs: 2,
            ..FeatureAlignment::default()
        },
        gradient_guidance: GradientGuidance {
            epochs: 2,
            ..GradientGuidance::default()
        },
    };
    let distill = small_distill(20);
    let run = || {
        distill_in_stages(
            &teacher,
            Model::new(&mlp(&[6]), d, c, 3)?,
            &x,
            n,
            &stages,
            &distill,
            &Progress::hidden(),
        )
    };
    let (a, reports) = run()?;
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["feature_alignment", "gradient_guidance", "temperature_kd"]);
    for r in &reports {
        assert!(r.enabled && r.final_loss.is_some_and(f32::is_finite), "{r:?}");
    }
    assert_eq!(reports[2].epochs, 20);
    let (b, _) = run()?;
    assert_eq!(a.weights_digest(), b.weights_digest());
    // The student learnt the teacher: it agrees with it far more often than before distillation.
    let agreement = |m: &Model| -> Result<usize> {
        let (ta, sa) = (teacher.logits(&x, n)?, m.logits(&x, n)?);
        Ok(ta
            .chunks(c)
            .zip(sa.chunks(c))
            .filter(|(p, q)| crate::model::argmax(p) == crate::model::argmax(q))
            .count())
    };
    let (before, after) = (agreement(&Model::new(&mlp(&[6]), d, c, 3)?)?, agreement(&a)?);
    assert!(
        after * 10 >= n * 8 && after > before,
        "agreement {before}/{n} -> {after}/{n}"
    );
    // Disabled stages report no loss; a mismatched teacher is refused before training.
    let (_, off) = distill_in_stages(
        &teacher,
        Model::new(&mlp(&[6]), d, c, 3)?,
        &x,
        n,
        &StagesConfig::default(),
        &distill,
        &Progress::hidden(),
    )?;
    assert_eq!(off.iter().map(|r| r.enabled).collect::<Vec<_>>(), [false, false, true]);
    assert!(off[0].final_loss.is_none() && off[1].final_loss.is_none());
    let other = Model::new(&mlp(&[6]), d, c + 1, 3)?;
    assert!(matches!(
        distill_in_stages(&teacher, other, &x, n, &stages, &distill, &Progress::hidden()),
        Err(MlError::InvalidInput(_))
    ));
    Ok(())
}
