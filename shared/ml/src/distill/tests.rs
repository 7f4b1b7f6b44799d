//! Unit tests of distillation from soft labels.

use super::*;
use crate::model::ModelConfig;

fn close(a: f32, b: f32) {
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
}

/// A tiny fixture: 40 samples of 4 features, teacher = a fixed random MLP.
fn fixture() -> Result<(Vec<f32>, Model)> {
    let x: Vec<f32> = (0..160).map(|i| ((i * 7919 % 97) as f32 / 97.0) - 0.5).collect();
    let teacher = Model::new(&ModelConfig::Mlp { hidden: vec![8] }, 4, 3, 11)?;
    Ok((x, teacher))
}

fn cfg() -> DistillConfig {
    DistillConfig {
        epochs_per_round: 3,
        batch_size: 8,
        replay_capacity: 16,
        seed: 3,
        ..DistillConfig::default()
    }
}

fn student() -> Result<Model> {
    Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 4, 3, 1)
}

#[test]
fn temperature_schedules_hand_values() {
    let lin = TemperatureSchedule::Linear { start: 5.0, end: 1.0 };
    close(lin.at(0.0), 5.0);
    close(lin.at(0.5), 3.0);
    close(lin.at(1.0), 1.0);
    close(lin.at(2.0), 1.0); // clamped
    let cos = TemperatureSchedule::Cosine { start: 5.0, end: 1.0 };
    close(cos.at(0.0), 5.0);
    close(cos.at(0.5), 3.0);
    // 1 + 4 * (1 + cos(pi/4)) / 2 = 4.414213562
    close(cos.at(0.25), 4.414_213_5);
    close(cos.at(1.0), 1.0);
    close(TemperatureSchedule::Constant { t: 2.5 }.at(0.7), 2.5);
    assert_eq!(TemperatureSchedule::default(), lin);
}

#[test]
fn schedule_is_spread_over_rounds_and_epochs() -> Result<()> {
    let (x, teacher) = fixture()?;
    let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
    let mut d = Distiller::new(
        student()?,
        DistillConfig {
            epochs_per_round: 2,
            replay_capacity: 0,
            ..cfg()
        },
    );
    // 2 rounds x 2 epochs: progress 0, 1/3 | 2/3, 1 -> T = 5, 3.667 | 2.333, 1 (linear 5 -> 1).
    let s0 = d.distill_round(&x, 40, &targets, None, 0, 2)?;
    let s1 = d.distill_round(&x, 40, &targets, None, 1, 2)?;
    close(s0.temperature_start, 5.0);
    close(s0.temperature_end, 5.0 - 4.0 / 3.0);
    close(s1.temperature_start, 5.0 - 8.0 / 3.0);
    close(s1.temperature_end, 1.0);
    Ok(())
}

#[test]
fn non_positive_temperature_is_rejected_before_training() -> Result<()> {
    let (x, teacher) = fixture()?;
    let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
    for schedule in [
        TemperatureSchedule::Constant { t: 0.0 },
        TemperatureSchedule::Linear { start: 5.0, end: -1.0 },
        TemperatureSchedule::Cosine {
            start: f32::NAN,
            end: 1.0,
        },
    ] {
        let s = student()?;
        let before = s.weights_digest();
        let mut d = Distiller::new(s, DistillConfig { schedule, ..cfg() });
        assert!(matches!(
            d.distill_round(&x, 40, &targets, None, 0, 1),
            Err(MlError::InvalidHyperParameter(_))
        ));
        assert_eq!(d.student().weights_digest(), before, "weights must not change");
    }
    Ok(())
}

#[test]
fn confidence_weights_hand_values() {
    let p = [
        0.7f32,
        0.2,
        0.1,
        1.0 / 3.0,
        1.0 / 3.0,
        1.0 / 3.0,
        0.5,
        0.5,
        0.0,
        1.0,
        0.0,
        0.0,
    ];
    assert_eq!(confidence_weights(&p, 3, ConfidenceWeighting::None), vec![1.0; 4]);
    let m = confidence_weights(&p, 3, ConfidenceWeighting::MaxProb);
    for (a, b) in m.iter().zip([0.7, 1.0 / 3.0, 0.5, 1.0]) {
        close(*a, b);
    }
    // 1 - H/ln 3: H(0.7,0.2,0.1) = 0.8018185 -> 0.2701608; uniform -> 0; (0.5,0.5,0) -> 1 - ln2/ln3
    // = 0.3690702; one-hot -> 1.
    let e = confidence_weights(&p, 3, ConfidenceWeighting::Entropy);
    for (a, b) in e.iter().zip([0.270_160_8, 0.0, 0.369_070_2, 1.0]) {
        close(*a, b);
    }
}

#[test]
fn replay_buffer_is_bounded_and_reservoir_sampled() {
    let mut r = ReplayBuffer::new(10, 2, 2, 1);
    for i in 0..1000 {
        let v = i as f32;
        r.offer(&[v, v], &[v, -v]);
    }
    assert_eq!(r.len(), 10);
    assert_eq!(r.seen(), 1000);
    let (x, l) = r.contents();
    assert_eq!((x.len(), l.len()), (20, 20));
    // Pairs stay aligned, and a reservoir over 1000 keeps mostly late items (P(any of first 10 kept) small).
    for (xr, lr) in x.chunks(2).zip(l.chunks(2)) {
        assert_eq!(xr[0], lr[0]);
    }
    assert!(x.chunks(2).filter(|r| r[0] >= 10.0).count() >= 8);
    let mut empty = ReplayBuffer::new(0, 2, 2, 1);
    empty.offer(&[1.0, 1.0], &[0.0, 0.0]);
    assert!(empty.is_empty());
}

#[test]
fn replay_is_mixed_into_later_rounds() -> Result<()> {
    let (x, teacher) = fixture()?;
    let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
    let mut d = Distiller::new(student()?, cfg());
    let s0 = d.distill_round(&x, 40, &targets, None, 0, 3)?;
    assert_eq!(s0.replayed, 0);
    let s1 = d.distill_round(&x, 40, &targets, None, 1, 3)?;
    assert_eq!(s1.replayed, 16);
    assert_eq!(d.replay().len(), 16);
    Ok(())
}

#[test]
fn distillation_is_deterministic_and_learns() -> Result<()> {
    let (x, teacher) = fixture()?;
    let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
    let c = DistillConfig {
        epochs_per_round: 60,
        lr: 1e-2,
        ..cfg()
    };
    let mut a = Distiller::new(student()?, c.clone());
    let mut b = Distiller::new(student()?, c.clone());
    let sa = a.distill_round(&x, 40, &targets, None, 0, 1)?;
    b.distill_round(&x, 40, &targets, None, 0, 1)?;
    assert_eq!(a.student().weights_digest(), b.student().weights_digest());
    let mut other = Distiller::new(student()?, DistillConfig { seed: 4, ..c });
    other.distill_round(&x, 40, &targets, None, 0, 1)?;
    assert_ne!(a.student().weights_digest(), other.student().weights_digest());
    let tp = teacher.probabilities(&x, 40, 1.0)?;
    let before = crate::metrics::mean_kl(&tp, &student()?.logits(&x, 40)?, 3);
    let after = crate::metrics::mean_kl(&tp, &a.student().logits(&x, 40)?, 3);
    assert!(after < before * 0.5, "KL to teacher {before} -> {after}");
    assert!(sa.final_loss.is_finite());
    Ok(())
}

#[test]
fn probabilities_and_logits_take_the_same_path() -> Result<()> {
    let (x, teacher) = fixture()?;
    let logits = teacher.logits(&x, 40)?;
    let probs = softmax_rows(&logits, 3, 1.0);
    let mut a = Distiller::new(student()?, cfg());
    let mut b = Distiller::new(student()?, cfg());
    a.distill_round(&x, 40, &SoftTargets::Logits(logits), None, 0, 1)?;
    b.distill_round(&x, 40, &SoftTargets::Probabilities(probs), None, 0, 1)?;
    let (la, lb) = (a.student().logits(&x, 40)?, b.student().logits(&x, 40)?);
    for (p, q) in la.iter().zip(&lb) {
        assert!((p - q).abs() < 1e-3, "{p} vs {q}");
    }
    Ok(())
}

#[test]
fn bad_soft_labels_are_rejected() -> Result<()> {
    let (x, teacher) = fixture()?;
    let good = teacher.logits(&x, 40)?;
    let probs = softmax_rows(&good, 3, 1.0);
    let mut nan = good.clone();
    nan[5] = f32::NAN;
    let mut inf = good.clone();
    inf[7] = f32::INFINITY;
    let mut not_dist = probs.clone();
    not_dist[0] += 0.1;
    let mut negative = probs.clone();
    negative[0] = -0.1;
    negative[1] += 0.1;
    let mut above_one = probs.clone();
    above_one[0] = 1.5;
    let mut nan_p = probs.clone();
    nan_p[2] = f32::NAN;
    type Check = fn(&MlError) -> bool;
    let cases: Vec<(SoftTargets, Check)> = vec![
        (SoftTargets::Logits(good[..good.len() - 1].to_vec()), |e| {
            matches!(e, MlError::InvalidInput(_))
        }),
        (SoftTargets::Logits(nan), |e| matches!(e, MlError::InvalidInput(_))),
        (SoftTargets::Logits(inf), |e| matches!(e, MlError::InvalidInput(_))),
        (SoftTargets::Probabilities(probs[..probs.len() - 3].to_vec()), |e| {
            matches!(e, MlError::InvalidInput(_))
        }),
        (SoftTargets::Probabilities(not_dist), |e| {
            matches!(e, MlError::InvalidProbabilities(_))
        }),
        (SoftTargets::Probabilities(negative), |e| {
            matches!(e, MlError::InvalidProbabilities(_))
        }),
        (SoftTargets::Probabilities(above_one), |e| {
            matches!(e, MlError::InvalidProbabilities(_))
        }),
        (SoftTargets::Probabilities(nan_p), |e| {
            matches!(e, MlError::InvalidProbabilities(_))
        }),
    ];
    for (targets, is_expected) in cases {
        let s = student()?;
        let before = s.weights_digest();
        let mut d = Distiller::new(s, cfg());
        match d.distill_round(&x, 40, &targets, None, 0, 1) {
            Err(e) => assert!(is_expected(&e), "unexpected error {e}"),
            Ok(_) => panic!("accepted bad soft labels"),
        }
        assert_eq!(d.student().weights_digest(), before);
    }
    Ok(())
}

#[test]
fn bad_features_labels_and_rounds_are_rejected() -> Result<()> {
    let (x, teacher) = fixture()?;
    let t = SoftTargets::from_teacher(&teacher, &x, 40)?;
    let mut d = Distiller::new(student()?, cfg());
    let mut xn = x.clone();
    xn[0] = f32::NAN;
    assert!(matches!(
        d.distill_round(&xn, 40, &t, None, 0, 1),
        Err(MlError::InvalidInput(_))
    ));
    assert!(matches!(
        d.distill_round(&x[..100], 40, &t, None, 0, 1),
        Err(MlError::InvalidInput(_))
    ));
    assert!(matches!(
        d.distill_round(&x, 40, &t, Some(&[5; 40]), 0, 1),
        Err(MlError::InvalidInput(_))
    ));
    assert!(matches!(
        d.distill_round(&x, 40, &t, Some(&[0; 39]), 0, 1),
        Err(MlError::InvalidInput(_))
    ));
    assert!(matches!(
        d.distill_round(&x, 40, &t, None, 1, 1),
        Err(MlError::InvalidHyperParameter(_))
    ));
    assert!(matches!(
        d.distill_round(&[], 0, &SoftTargets::Logits(vec![]), None, 0, 1),
        Err(MlError::InvalidInput(_))
    ));
    let mut bad = Distiller::new(
        student()?,
        DistillConfig {
            w_kd: 0.0,
            w_ce: 0.0,
            ..cfg()
        },
    );
    assert!(matches!(
        bad.distill_round(&x, 40, &t, None, 0, 1),
        Err(MlError::InvalidHyperParameter(_))
    ));
    Ok(())
}

#[test]
fn validate_probabilities_cases() {
    assert!(validate_probabilities(&[0.2, 0.8, 1.0, 0.0], 2, 2).is_ok());
    assert!(validate_probabilities(&[0.2, 0.8005], 1, 2).is_ok()); // within 1e-3
    assert!(matches!(
        validate_probabilities(&[0.2, 0.81], 1, 2),
        Err(MlError::InvalidProbabilities(_))
    ));
    assert!(matches!(
        validate_probabilities(&[0.2, 0.8, 0.5], 1, 2),
        Err(MlError::InvalidInput(_))
    ));
    assert!(matches!(
        validate_probabilities(&[f32::INFINITY, 0.0], 1, 2),
        Err(MlError::InvalidProbabilities(_))
    ));
}

#[test]
fn diverging_distillation_names_epoch_and_step() -> Result<()> {
    let (x, teacher) = fixture()?;
    let t = SoftTargets::from_teacher(&teacher, &x, 40)?;
    let mut d = Distiller::new(
        student()?,
        DistillConfig {
            lr: 1e30,
            weight_decay: 0.0,
            ..cfg()
        },
    );
    match d.distill_round(&x, 40, &t, None, 0, 1) {
        Err(e @ MlError::Diverged { .. }) => assert!(e.to_string().contains("epoch 0, step"), "{e}"),
        other => panic!("expected divergence, got {other:?}"),
    }
    Ok(())
}

#[test]
fn learning_rate_decays_with_a_cosine_to_lr_final_over_the_run() -> Result<()> {
    let (x, teacher) = fixture()?;
    let targets = SoftTargets::from_teacher(&teacher, &x, 40)?;
    let lr = 4e-3;
    let run = |lr_final: f64| -> Result<Vec<f64>> {
        let mut d = Distiller::new(
            student()?,
            DistillConfig {
                epochs_per_round: 2,
                lr,
                lr_final,
                ..cfg()
            },
        );
        // The learning rate of each round's last epoch (progress 1/3 and 1 over 2 rounds x 2 epochs).
        let mut seen = Vec::new();
        for round in 0..2 {
            d.distill_round(&x, 40, &targets, None, round, 2)?;
            seen.push(d.opt.as_ref().map(|o| o.learning_rate()).unwrap_or(f64::NAN));
        }
        Ok(seen)
    };
    // lr * (f + (1 - f) * (1 + cos(pi p)) / 2): p = 1/3 -> lr * (0.1 + 0.9 * 0.75); p = 1 -> lr * 0.1.
    let decayed = run(0.1)?;
    assert!((decayed[0] - lr * (0.1 + 0.9 * 0.75)).abs() < 1e-12, "{decayed:?}");
    assert!((decayed[1] - lr * 0.1).abs() < 1e-12, "{decayed:?}");
    // 1.0 keeps it constant (the default).
    assert_eq!(DistillConfig::default().lr_final, 1.0);
    assert_eq!(run(1.0)?, vec![lr, lr]);
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        let c = DistillConfig { lr_final: bad, ..cfg() };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("lr_final"), "{bad}: {err}");
    }
    Ok(())
}
