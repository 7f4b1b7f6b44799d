//! The fused model: config checks, exact masking of absent blocks, the attention's sums, seeded modality
//! dropout, checkpoints, training and distillation on a task where either block alone tells the class, and
//! the refusals (DP-SGD).

use super::*;
use crate::distill::{DistillConfig, Distiller, InputNorm, SoftTargets, TemperatureSchedule};
use crate::model::{argmax, Model, ModelConfig, INPUT_SCALE, INPUT_SHIFT};
use crate::train::{train_teacher, TrainConfig};

/// Block A of 6 inputs, block B of 4, then the two presence inputs.
const WA: usize = 6;
const WB: usize = 4;
const D: usize = WA + WB + 2;

fn fused(embed: usize, hidden: usize, dropout: f64) -> ModelConfig {
    ModelConfig::Fused {
        embed,
        hidden,
        blocks: vec![WA, WB],
        dropout: DropRate(dropout),
    }
}

fn invalid(cfg: &ModelConfig, in_dim: usize) -> String {
    match cfg.validate(in_dim, 2) {
        Err(MlError::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

fn dataset(x: Vec<f32>, y: Vec<u32>) -> Result<fedistill_data::Dataset> {
    fedistill_data::Dataset::new(
        "two-blocks",
        x,
        y,
        D,
        fedistill_data::DataKind::Tabular,
        vec!["a".into(), "b".into()],
    )
    .map_err(|e| MlError::InvalidInput(e.to_string()))
}

fn accuracy(m: &Model, x: &[f32], y: &[u32]) -> Result<f64> {
    let logits = m.logits(x, y.len())?;
    let right = logits
        .chunks_exact(m.classes())
        .zip(y)
        .filter(|(row, &label)| argmax(row) as u32 == label)
        .count();
    Ok(right as f64 / y.len() as f64)
}

#[test]
fn the_config_is_checked_against_the_input_naming_the_problem() {
    fused(8, 8, 0.2).validate(D, 2).expect("valid");
    let no_blocks = ModelConfig::Fused {
        embed: 8,
        hidden: 8,
        blocks: Vec::new(),
        dropout: DropRate(0.2),
    };
    assert!(invalid(&no_blocks, D).contains("fills them from the task card's [[modalities]]"));
    let one = ModelConfig::Fused {
        embed: 8,
        hidden: 8,
        blocks: vec![10],
        dropout: DropRate(0.2),
    };
    assert_eq!(invalid(&one, 11), "fused needs 2..=16 modality blocks, got 1");
    assert_eq!(
        invalid(&fused(8, 8, 0.2), 10),
        "fused blocks [6, 4] take 10 inputs and 2 presence inputs (12 in all), the data has 10: the blocks must be \
         the task card's modality blocks, in order"
    );
    for p in [1.0, -0.1, f64::NAN] {
        assert!(
            invalid(&fused(8, 8, p), D).contains("is not a probability in [0, 1)"),
            "{p}"
        );
    }
    assert!(invalid(&fused(0, 8, 0.2), D).contains("embed width 0"));
    // TOML: the dropout defaults to 0.2, blocks to "from the card"; unknown keys are refused.
    let cfg: ModelConfig =
        toml::from_str("kind = \"fused\"\nembed = 8\nhidden = 4\nblocks = [6, 4]\n").expect("parses");
    assert_eq!(cfg, fused(8, 4, FUSED_DEFAULT_DROPOUT));
    assert!(toml::from_str::<ModelConfig>("kind = \"fused\"\nembed = 8\nhidden = 4\ngate = 3\n").is_err());
    let json = serde_json::to_string(&fused(8, 4, 0.25)).expect("json");
    assert_eq!(
        json,
        r#"{"kind":"fused","embed":8,"hidden":4,"blocks":[6,4],"dropout":0.25}"#
    );
}

#[test]
fn an_absent_block_is_masked_exactly_and_the_attention_sums_to_one_over_present_blocks() -> Result<()> {
    let m = Model::new(&fused(8, 6, 0.2), D, 2, 3)?;
    let (x, _) = two_block_task(64, WA, WB, (1.0, 1.0), 4);
    m.fit_input_normalization(&x, 64, true)?;
    // Both blocks present: positive weights summing to 1.
    let att = m.modality_attention(&x, 64)?;
    for row in att.chunks_exact(2) {
        assert!(row.iter().all(|&a| a > 0.0), "{row:?}");
        assert!((row[0] + row[1] - 1.0).abs() < 1e-6, "{row:?}");
    }
    // Block B absent: all the weight on A, and whatever B's inputs hold, the logits do not move.
    let absent = without_block_b(&x, WA, WB);
    let att = m.modality_attention(&absent, 64)?;
    assert!(att.chunks_exact(2).all(|r| r == [1.0, 0.0]), "{att:?}");
    let base = m.logits(&absent, 64)?;
    let mut noisy = absent.clone();
    for (i, row) in noisy.chunks_exact_mut(D).enumerate() {
        for (j, v) in row[WA..WA + WB].iter_mut().enumerate() {
            *v = ((i * 7 + j * 13) % 17) as f32 * 3.0 - 20.0;
        }
    }
    assert_eq!(
        m.logits(&noisy, 64)?,
        base,
        "an absent block's inputs never reach the output"
    );
    // A present block's inputs do.
    let mut moved = absent.clone();
    moved[0] += 5.0;
    assert_ne!(m.logits(&moved, 64)?[..2], base[..2]);
    // Only a fused model has modality attention.
    let mlp = Model::new(&ModelConfig::Mlp { hidden: vec![4] }, D, 2, 1)?;
    assert!(mlp.modality_attention(&x, 64).is_err());
    Ok(())
}

#[test]
fn presence_inputs_are_never_standardized_and_blocks_are_fitted_on_the_rows_that_hold_them() -> Result<()> {
    let m = Model::new(&fused(4, 4, 0.2), D, 2, 1)?;
    let (x, _) = two_block_task(40, WA, WB, (1.0, 1.0), 2);
    // Half the rows lack block B (zeros, presence 0).
    let mut mixed = x.clone();
    for row in mixed.chunks_exact_mut(D).take(20) {
        row[WA..WA + WB].fill(0.0);
        row[D - 1] = 0.0;
    }
    for per_feature in [true, false] {
        m.fit_input_normalization(&mixed, 40, per_feature)?;
        let (shift, scale) = m.input_standardization();
        let (shift, scale) = (shift.to_vec1::<f32>()?, scale.to_vec1::<f32>()?);
        assert_eq!(shift[WA + WB..], [0.0, 0.0], "per_feature {per_feature}");
        assert_eq!(scale[WA + WB..], [1.0, 1.0], "per_feature {per_feature}");
        if per_feature {
            // Block B's first column: the mean over the 20 rows that hold it.
            let held: f32 = x.chunks_exact(D).skip(20).map(|r| r[WA]).sum::<f32>() / 20.0;
            assert!((shift[WA] - held).abs() < 1e-5, "{} vs {held}", shift[WA]);
        }
    }
    Ok(())
}

#[test]
fn checkpoints_round_trip_and_refuse_standardized_presence_inputs() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| MlError::InvalidInput(e.to_string()))?;
    let cfg = fused(8, 4, 0.2);
    let m = Model::new(&cfg, D, 2, 5)?;
    let (x, _) = two_block_task(30, WA, WB, (1.0, 1.0), 6);
    m.fit_input_normalization(&x, 30, true)?;
    let path = dir.path().join("m.safetensors");
    m.save(&path)?;
    let back = Model::load(&cfg, D, 2, &path)?;
    assert_eq!(back.weights_digest(), m.weights_digest());
    assert_eq!(back.logits(&x, 30)?, m.logits(&x, 30)?);
    // Tensor names: the encoders, the gate, the head.
    let names: Vec<String> = m.trainable_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "encoders.0.bias",
            "encoders.0.weight",
            "encoders.1.bias",
            "encoders.1.weight",
            "gate.u.bias",
            "gate.u.weight",
            "gate.v.bias",
            "gate.v.weight",
            "gate.w.weight",
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.bias",
            "layers.1.weight",
        ]
    );
    // Encoders, gate (V, U with biases; w), hidden layer, classifier.
    assert_eq!(
        m.params(),
        (8 * WA + 8) + (8 * WB + 8) + 2 * (8 * 8 + 8) + 8 + (4 * 8 + 4) + (2 * 4 + 2)
    );
    // A checkpoint whose standardization touches a presence input is not one of ours.
    {
        let data = m
            .varmap()
            .data()
            .lock()
            .map_err(|_| MlError::InvalidConfig("lock".into()))?;
        let mut shift = vec![0f32; D];
        shift[D - 1] = 0.5;
        data[INPUT_SHIFT].set(&Tensor::from_vec(shift, D, &candle_core::Device::Cpu)?)?;
    }
    m.save(&path)?;
    let err = Model::load(&cfg, D, 2, &path)
        .expect_err("standardized presence")
        .to_string();
    assert!(err.contains("changes the presence inputs"), "{err}");
    assert!(err.contains(INPUT_SHIFT) && !err.contains(INPUT_SCALE), "{err}");
    Ok(())
}

#[test]
fn modality_dropout_is_seeded_never_drops_every_block_and_spares_single_block_rows() -> Result<()> {
    let (x, _) = two_block_task(400, WA, WB, (1.0, 1.0), 8);
    let mut x = x;
    // The last 100 rows hold block A only.
    for row in x.chunks_exact_mut(D).skip(300) {
        row[D - 1] = 0.0;
    }
    let t = Tensor::from_slice(&x, (400, D), &candle_core::Device::Cpu)?;
    let draw = |p: f64, seed: u64| -> Result<Vec<f32>> {
        let m = Model::new(&fused(4, 4, p), D, 2, seed)?;
        Ok(m.training_batch(&t)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let a = draw(0.4, 1)?;
    assert_eq!(a, draw(0.4, 1)?, "the same seed drops the same blocks");
    assert_ne!(a, draw(0.4, 2)?);
    assert_eq!(draw(0.0, 1)?, x, "no dropout: the batch as it is");
    let mut dropped = 0;
    for (i, (row, orig)) in a.chunks_exact(D).zip(x.chunks_exact(D)).enumerate() {
        assert_eq!(row[..WA + WB], orig[..WA + WB], "only presence inputs change");
        assert!(row[D - 2] + row[D - 1] >= 1.0, "row {i} kept no block");
        if i >= 300 {
            assert_eq!(row, orig, "a row with one block keeps it");
        }
        dropped += (D - 2..D).filter(|&k| orig[k] == 1.0 && row[k] == 0.0).count();
    }
    // Each of 600 present blocks drawn with p = 0.4, both-drawn rows (p^2 = 16 %) keep one: about 0.4 * 600 -
    // 0.16 * 300 = 192 drops.
    assert!((150..240).contains(&dropped), "{dropped} blocks dropped");
    // The generator advances: a second batch draws differently.
    let m = Model::new(&fused(4, 4, 0.4), D, 2, 1)?;
    let first = m.training_batch(&t)?.flatten_all()?.to_vec1::<f32>()?;
    assert_ne!(first, m.training_batch(&t)?.flatten_all()?.to_vec1::<f32>()?);
    Ok(())
}

/// The separations of the training task: block B tells the class almost surely, block A alone about 80 %
/// of the time (the Bayes accuracy of a shift of +-0.6 on two N(0, 1) inputs), so a model trained on rows
/// that always hold both can ignore A.
const SEP: (f32, f32) = (0.6, 2.5);

/// A fused teacher trained on 600 rows of the two-block task with modality dropout `p`, seed 11.
fn teacher(p: f64) -> Result<Model> {
    let (x, y) = two_block_task(600, WA, WB, SEP, 21);
    let tc = TrainConfig {
        epochs: 25,
        batch_size: 32,
        lr: 3e-3,
        patience: 25,
        seed: 11,
        ..TrainConfig::default()
    };
    train_teacher(&fused(8, 8, p), &dataset(x, y)?, &tc, &crate::Progress::hidden())
}

#[test]
fn a_fused_teacher_learns_and_with_modality_dropout_keeps_working_without_a_block() -> Result<()> {
    let (tx, ty) = two_block_task(400, WA, WB, SEP, 22);
    let tx_a = without_block_b(&tx, WA, WB);
    let with = teacher(FUSED_DEFAULT_DROPOUT)?;
    let without = teacher(0.0)?;
    assert_eq!(
        teacher(FUSED_DEFAULT_DROPOUT)?.weights_digest(),
        with.weights_digest(),
        "seeded"
    );
    let (both_d, a_d) = (accuracy(&with, &tx, &ty)?, accuracy(&with, &tx_a, &ty)?);
    let (both_n, a_n) = (accuracy(&without, &tx, &ty)?, accuracy(&without, &tx_a, &ty)?);
    eprintln!("two blocks: dropout {both_d:.3} (A only {a_d:.3}), none {both_n:.3} (A only {a_n:.3})");
    // Measured: 1.000 / 1.000 with both blocks; 0.762 with dropout and 0.585 without on block A alone.
    assert!(both_d >= 0.97 && both_n >= 0.97, "both blocks: {both_d} / {both_n}");
    assert!(a_d >= 0.7, "block A alone with dropout: {a_d}");
    assert!(a_d > a_n + 0.1, "dropout {a_d} vs none {a_n} with block B absent");
    Ok(())
}

#[test]
fn a_fused_student_distills_from_a_fused_teacher_and_exposes_its_features() -> Result<()> {
    let t = teacher(FUSED_DEFAULT_DROPOUT)?;
    let (tx, ty) = two_block_task(300, WA, WB, SEP, 23);
    // Unlabelled public rows, a third of them without block B.
    let (px, _) = two_block_task(450, WA, WB, SEP, 24);
    let mut px = px;
    for row in px.chunks_exact_mut(D).step_by(3) {
        row[WA..WA + WB].fill(0.0);
        row[D - 1] = 0.0;
    }
    let targets = SoftTargets::from_teacher(&t, &px, 450)?;
    let student = Model::new(&fused(4, 4, 0.3), D, 2, 6)?;
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
    d.distill_round(&px, 450, &targets, None, 0, 1)?;
    let after = accuracy(d.student(), &tx, &ty)?;
    let after_a = accuracy(d.student(), &without_block_b(&tx, WA, WB), &ty)?;
    eprintln!("fused student: {before:.3} -> {after:.3} (A only {after_a:.3})");
    assert!(
        after >= 0.97 && after > before + 0.2 && after_a >= 0.65,
        "student {before} -> {after}, A only {after_a}"
    );
    // forward_features: the fused embedding and the hidden layer, logits as forward's.
    let s = d.student();
    assert_eq!(
        s.feature_shapes(),
        [
            crate::model::FeatureShape::Flat { width: 4 },
            crate::model::FeatureShape::Flat { width: 4 }
        ]
    );
    let xt = Tensor::from_slice(&tx[..10 * D], (10, D), &candle_core::Device::Cpu)?;
    let (feats, logits) = s.forward_features(&xt)?;
    assert_eq!(
        feats.iter().map(|f| f.dims().to_vec()).collect::<Vec<_>>(),
        [vec![10, 4], vec![10, 4]]
    );
    assert_eq!(
        logits.flatten_all()?.to_vec1::<f32>()?,
        s.forward(&xt)?.flatten_all()?.to_vec1::<f32>()?
    );
    assert!(s.mlp_layers().is_none());
    Ok(())
}

/// DP-SGD clips per-sample gradients of MLPs only: a fused teacher is refused as a CNN is.
#[test]
fn dp_sgd_refuses_a_fused_teacher() -> Result<()> {
    use rand::SeedableRng;
    let (x, y) = two_block_task(4, WA, WB, (1.0, 1.0), 2);
    let dp = crate::DpSgdConfig {
        noise_multiplier: 1.0,
        clip: 1.0,
        batch: 2,
    };
    let tc = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
    let r = crate::train_teacher_dp(
        &fused(4, 4, 0.2),
        &dataset(x, y)?,
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
