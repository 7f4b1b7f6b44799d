use super::*;
use crate::model::ModelConfig;
use crate::quant::model::{Profile, QuantizedModel};

/// `n` rows of 3 inputs in [-2, 2] from a seeded LCG, and `f` of each row.
fn data(n: usize, f: impl Fn(&[f32]) -> f32) -> (Vec<f32>, Vec<f32>) {
    let mut state = 0x1234_5678u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
    };
    let x: Vec<f32> = (0..n * 3).map(|_| next()).collect();
    let y = x.chunks_exact(3).map(&f).collect();
    (x, y)
}

fn mlp(seed: u64) -> Model {
    Model::new(&ModelConfig::Mlp { hidden: vec![32, 16] }, 3, 1, seed).expect("model")
}

#[test]
fn error_metrics_match_the_definitions() {
    // Targets 1, 2, 3 (mean 2, SST 2); predictions 1, 3, 3: errors 0, 1, 0.
    let (mae, rmse, r2) = error_metrics(&[1.0, 3.0, 3.0], &[1.0, 2.0, 3.0]);
    assert!((mae - 1.0 / 3.0).abs() < 1e-12);
    assert!((rmse - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert!((r2 - 0.5).abs() < 1e-12);
    assert!(
        error_metrics(&[1.0, 1.0], &[2.0, 2.0]).2.is_nan(),
        "constant targets: R² undefined"
    );
}

#[test]
fn huber_is_quadratic_inside_delta_and_linear_beyond() -> Result<()> {
    let pred = Tensor::new(&[0.0f32, 0.0, 0.0], &Device::Cpu)?;
    let y = Tensor::new(&[0.5f32, -2.0, 3.0], &Device::Cpu)?;
    let h = fit_term(&pred, &y, RegressionLoss::Huber { delta: 1.0 })?.to_scalar::<f32>()?;
    // 0.5 * 0.25, then 1 * (2 - 0.5), then 1 * (3 - 0.5).
    assert!((h - (0.125 + 1.5 + 2.5) / 3.0).abs() < 1e-6, "{h}");
    let m = fit_term(&pred, &y, RegressionLoss::Mse)?.to_scalar::<f32>()?;
    assert!((m - (0.25 + 4.0 + 9.0) / 3.0).abs() < 1e-6, "{m}");
    Ok(())
}

#[test]
fn a_fitted_regressor_explains_a_smooth_target_and_int8_follows_it() -> Result<()> {
    let f = |r: &[f32]| 0.8 * r[0] - 0.5 * r[1] + 0.3 * r[2] * r[2];
    let (x, y) = data(600, f);
    let (tx, ty) = (x[..300 * 3].to_vec(), y[..300].to_vec());
    let (vx, vy) = (&x[300 * 3..], &y[300..]);
    let m = mlp(1);
    m.fit_input_normalization(&tx, 300, true)?;
    let before = regression_metrics(
        &|x, n| predict(&m, x, n),
        vx,
        vy,
        3,
        &|z| f64::from(z),
        &Constraints::default(),
        0.5,
    )?;
    let cfg = RegressionConfig {
        epochs: 80,
        ..RegressionConfig::default()
    };
    let stats = fit_regressor(&m, &tx, &ty, 300, &cfg, &Constraints::default())?;
    assert!(stats.fit < 0.05 && stats.constraint == 0.0, "{stats:?}");
    let after = regression_metrics(
        &|x, n| predict(&m, x, n),
        vx,
        vy,
        3,
        &|z| f64::from(z),
        &Constraints::default(),
        0.5,
    )?;
    assert!(
        after.r2 > 0.9 && after.rmse < before.rmse / 3.0,
        "{before:?} -> {after:?}"
    );
    assert!(after.violation_rate.is_nan() && after.bound_violation_rate.is_nan());
    // The INT8 student of a regressor predicts within a small error of the float one.
    let q = QuantizedModel::from_model(&m, Profile::Int8)?;
    let qm = regression_metrics(
        &|x, n| q.logits(x, n),
        vx,
        vy,
        3,
        &|z| f64::from(z),
        &Constraints::default(),
        0.5,
    )?;
    assert!(
        (qm.rmse - after.rmse).abs() < 0.05 && qm.r2 > 0.85,
        "float {after:?} int8 {qm:?}"
    );
    Ok(())
}

/// A target that falls with input 0 over half its range: the plain fit learns the dip, the constrained
/// one (monotone increasing in input 0, bounded above) is pushed to keep the constraint; both are measured.
#[test]
fn the_constraint_loss_cuts_the_violation_rate() -> Result<()> {
    let f = |r: &[f32]| (2.0 * r[0]).sin() + 0.5 * r[1];
    let (x, y) = data(400, f);
    let c = Constraints {
        monotone: vec![(0, 1.0)],
        min: None,
        max: Some(1.0),
    };
    let run = |weight: f32| -> Result<(RegressionMetrics, FitStats)> {
        let m = mlp(3);
        m.fit_input_normalization(&x, 400, true)?;
        let cfg = RegressionConfig {
            epochs: 60,
            constraint_weight: weight,
            step: 0.25,
            ..RegressionConfig::default()
        };
        let s = fit_regressor(&m, &x, &y, 400, &cfg, &c)?;
        let r = regression_metrics(&|x, n| predict(&m, x, n), &x, &y, 3, &|z| f64::from(z), &c, 0.25)?;
        Ok((r, s))
    };
    let (free, free_stats) = run(0.0)?;
    let (kept, kept_stats) = run(10.0)?;
    assert_eq!(free_stats.constraint, 0.0);
    assert!(kept_stats.constraint.is_finite());
    assert!(
        free.violation_rate > 0.2,
        "the dip violates the constraint on ~half the rows: {free:?}"
    );
    assert!(
        kept.violation_rate < free.violation_rate / 4.0,
        "free {free:?} constrained {kept:?}"
    );
    assert!(
        kept.bound_violation_rate <= free.bound_violation_rate,
        "free {free:?} constrained {kept:?}"
    );
    // Keeping the constraint costs fit on a target that breaks it.
    assert!(kept.rmse > free.rmse, "free {free:?} constrained {kept:?}");
    Ok(())
}

#[test]
fn violation_rate_counts_pairs_that_move_the_wrong_way() -> Result<()> {
    // A fixed predictor: z = x0 - x1 (so increasing in 0, decreasing in 1).
    let lin = |x: &[f32], _n: usize| -> Result<Vec<f32>> { Ok(x.chunks_exact(2).map(|r| r[0] - r[1]).collect()) };
    let x = vec![0.0, 0.0, 1.0, 1.0];
    let keep = Constraints {
        monotone: vec![(0, 1.0), (1, -1.0)],
        ..Constraints::default()
    };
    assert_eq!(violation_rate(&lin, &x, 2, 2, &keep, 0.5)?, 0.0);
    let wrong = Constraints {
        monotone: vec![(0, 1.0), (1, 1.0)],
        ..Constraints::default()
    };
    assert_eq!(violation_rate(&lin, &x, 2, 2, &wrong, 0.5)?, 0.5);
    assert!(violation_rate(&lin, &x, 2, 2, &Constraints::default(), 0.5)?.is_nan());
    let bounded = Constraints {
        min: Some(-0.5),
        max: Some(0.5),
        ..Constraints::default()
    };
    assert_eq!(bound_violation_rate(&[-1.0, 0.0, 0.2, 0.9], &bounded), 0.5);
    assert!(violation_rate(
        &lin,
        &x,
        2,
        2,
        &Constraints {
            monotone: vec![(2, 1.0)],
            ..Constraints::default()
        },
        0.5
    )
    .is_err());
    Ok(())
}

#[test]
fn bad_settings_and_shapes_are_refused() {
    let m = mlp(1);
    let (x, y) = data(10, |r| r[0]);
    let fit = |cfg: RegressionConfig| fit_regressor(&m, &x, &y, 10, &cfg, &Constraints::default());
    for cfg in [
        RegressionConfig {
            epochs: 0,
            ..RegressionConfig::default()
        },
        RegressionConfig {
            lr: f64::NAN,
            ..RegressionConfig::default()
        },
        RegressionConfig {
            constraint_weight: -1.0,
            ..RegressionConfig::default()
        },
        RegressionConfig {
            step: 0.0,
            ..RegressionConfig::default()
        },
        RegressionConfig {
            loss: RegressionLoss::Huber { delta: 0.0 },
            ..RegressionConfig::default()
        },
    ] {
        assert!(
            matches!(fit(cfg.clone()), Err(MlError::InvalidHyperParameter(_))),
            "{cfg:?}"
        );
    }
    assert!(fit_regressor(
        &m,
        &x,
        &y[..9],
        10,
        &RegressionConfig::default(),
        &Constraints::default()
    )
    .is_err());
    let mut bad_y = y.clone();
    bad_y[3] = f32::NAN;
    assert!(fit_regressor(
        &m,
        &x,
        &bad_y,
        10,
        &RegressionConfig::default(),
        &Constraints::default()
    )
    .is_err());
    let classifier = Model::new(&ModelConfig::Mlp { hidden: vec![4] }, 3, 2, 1).expect("model");
    assert!(predict(&classifier, &x, 10).is_err());
    let far = Constraints {
        monotone: vec![(7, 1.0)],
        ..Constraints::default()
    };
    assert!(fit_regressor(&m, &x, &y, 10, &RegressionConfig::default(), &far).is_err());
}
