//! Unit tests of the privacy settings, the soft-label mechanism and the participant's budget.

use super::*;
use crate::protocol::softlabels::validate_distributions;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn toml(extra: &str) -> Result<Option<PrivacyConfig>, PrivacyError> {
    let text = format!("delta = 1e-5\nbudget_epsilon = 8.0\n{extra}");
    let t: PrivacyToml = toml::from_str(&text).map_err(|e| PrivacyError::BadSetting(e.to_string()))?;
    t.validate()
}

#[test]
fn refuses_bad_settings() {
    let cases = [
        ("noise_multiplier = 0.0", "noise_multiplier 0 must be > 0"),
        ("noise_multiplier = -1.0", "must be > 0"),
        ("epsilon_per_round = 0.0", "epsilon_per_round 0 must be"),
        ("epsilon_per_round = -2.0", "epsilon_per_round -2 must be"),
        ("", "neither noise_multiplier nor epsilon_per_round"),
        ("noise_multiplier = 1.0\nepsilon_per_round = 1.0", "not both"),
        ("noise_multiplier = 1.0\nclip = 0.0", "clip 0 must be in (0, 1]"),
        ("noise_multiplier = 1e9", "exceeds"),
    ];
    for (extra, needle) in cases {
        let err = toml(extra).unwrap_err().to_string();
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    for delta in ["0.0", "1.0", "-1e-5", "2.0"] {
        let t = PrivacyToml {
            enabled: true,
            mode: PrivacyMode::Soft,
            noise_multiplier: Some(1.0),
            epsilon_per_round: None,
            delta: delta.parse().unwrap(),
            clip: 1.0,
            budget_epsilon: 1.0,
            teacher: None,
        };
        assert!(t.validate().unwrap_err().to_string().contains("delta"), "{delta}");
    }
    let mut t: PrivacyToml = toml::from_str("delta = 1e-5\nbudget_epsilon = 0.0\nnoise_multiplier = 1.0").unwrap();
    assert!(t.validate().unwrap_err().to_string().contains("budget_epsilon"));
    // Disabled: nothing is checked beyond the syntax, the mechanism is off.
    t.enabled = false;
    assert_eq!(t.validate(), Ok(None));
    assert!(toml("noise_multiplier = 1.0\nbogus = 1").is_err());
}

#[test]
fn epsilon_per_round_calibrates_the_noise() {
    let c = toml("epsilon_per_round = 2.0").unwrap().unwrap();
    let m = SoftLabelMechanism::new(c);
    let spent = m.accountant(10).record_round().epsilon_total;
    assert!(spent <= 2.0 + 1e-9 && spent > 1.99, "{spent}");
}

#[test]
fn budget_stops_releases_and_resends_cost_nothing() {
    // z = 2: one round is rho = 1/8-zCDP; at delta 1e-5 (numpy, same conversion and orders) one round
    // costs 2.17, two 3.19, three 4.01: a budget of 3.5 allows two rounds.
    let cfg = PrivacyConfig {
        mode: PrivacyMode::Soft,
        noise_multiplier: 2.0,
        delta: 1e-5,
        clip: 1.0,
        budget_epsilon: 3.5,
    };
    let mut st = ParticipantPrivacy::new(cfg, 2, 0);
    let p = [0.9f32, 0.1];
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let Ok(Release::Send { labels: first, spend }) = st.handle_round(1, &p, 1, 2, &mut rng) else {
        panic!("round 1")
    };
    assert_eq!(spend.rounds, 1);
    // The same round again: identical labels, no extra spend.
    let Ok(Release::Send { labels: again, .. }) = st.handle_round(1, &p, 1, 2, &mut rng) else {
        panic!("resend")
    };
    assert_eq!(first, again);
    assert_eq!(st.rounds_released(), 1);
    assert!(matches!(
        st.handle_round(2, &p, 1, 2, &mut rng),
        Ok(Release::Send { .. })
    ));
    match st.handle_round(3, &p, 1, 2, &mut rng) {
        Ok(Release::BudgetExhausted {
            would_reach,
            budget,
            spent,
        }) => {
            assert!(
                would_reach > 4.0 && budget == 3.5 && (spent - 3.189).abs() < 0.01,
                "{would_reach} {spent}"
            );
        }
        other => panic!("expected the budget to stop round 3: {other:?}"),
    }
    assert_eq!(st.rounds_released(), 2);
    let m = st.report_metrics(2);
    assert_eq!(
        m.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "dp_delta",
            "dp_epsilon_round",
            "dp_epsilon_total",
            "dp_noise_multiplier"
        ]
    );
    assert!(st.report_metrics(3).is_empty());
    // The typed spend the report carries holds the same figures as the metrics people read.
    let spend = st.report_spend(2).expect("round 2 was released");
    let metric = |name: &str| m.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(metric("dp_epsilon_round"), Some(spend.epsilon_round));
    assert_eq!(metric("dp_epsilon_total"), Some(spend.epsilon_total));
    assert_eq!(metric("dp_delta"), Some(spend.delta));
    assert_eq!(spend.check(), Ok(()));
    assert_eq!(st.report_spend(3), None);
    // Restored after a restart with 2 rounds released: still refuses.
    let mut restored = ParticipantPrivacy::new(cfg, 2, 2);
    assert!(matches!(
        restored.handle_round(3, &p, 1, 2, &mut rng),
        Ok(Release::BudgetExhausted { .. })
    ));
    assert!(os_rng().is_ok());
}

#[test]
fn projection_onto_the_simplex() {
    // Hand-computed: (0.5, 0.5) stays; (2, 0) -> (1, 0); (0.6, 0.6, -1) -> (0.5, 0.5, 0).
    assert_eq!(project_to_simplex(&[0.5, 0.5]), vec![0.5, 0.5]);
    assert_eq!(project_to_simplex(&[2.0, 0.0]), vec![1.0, 0.0]);
    let p = project_to_simplex(&[0.6, 0.6, -1.0]);
    assert!((p[0] - 0.5).abs() < 1e-12 && (p[1] - 0.5).abs() < 1e-12 && p[2] == 0.0);
    // Shifting by a constant does not change the projection.
    let a = project_to_simplex(&[0.1, 0.7, 0.4]);
    let b = project_to_simplex(&[5.1, 5.7, 5.4]);
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9));
}

#[test]
fn clipping_bounds_the_row_norm() {
    let mut q = vec![60_000i64, 5_536, 0];
    clip_integer_row(&mut q, 0.5 * QUANT_SCALE);
    let n = q.iter().map(|&v| (v * v) as f64).sum::<f64>().sqrt();
    assert!(n <= 0.5 * QUANT_SCALE && n > 0.5 * QUANT_SCALE - 3.0, "{n}");
    assert!(q.iter().all(|&v| v >= 0));
}

#[test]
fn released_rows_are_distributions_and_noise_has_the_right_scale() {
    let cfg = PrivacyConfig {
        mode: PrivacyMode::Soft,
        noise_multiplier: 0.05,
        delta: 1e-5,
        clip: 1.0,
        budget_epsilon: 100.0,
    };
    let m = SoftLabelMechanism::new(cfg);
    let rows = 2000;
    let p: Vec<f32> = (0..rows).flat_map(|_| [0.7f32, 0.2, 0.1, 0.0]).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let out = m.privatize(&p, rows, 4, &mut rng).unwrap();
    validate_distributions(&out, rows, 4).unwrap();
    // Noise sd per coordinate = 0.05 * sqrt(2) = 0.0707; the projection shifts every coordinate by
    // the same theta, so the mean released value of the top class stays near 0.7.
    let mean0 = out.chunks_exact(4).map(|r| f64::from(r[0])).sum::<f64>() / rows as f64;
    assert!((mean0 - 0.7).abs() < 0.02, "{mean0}");
    // Deterministic for a seed, different across seeds.
    let again = m.privatize(&p, rows, 4, &mut ChaCha20Rng::seed_from_u64(5)).unwrap();
    assert_eq!(out, again);
    let other = m.privatize(&p, rows, 4, &mut ChaCha20Rng::seed_from_u64(6)).unwrap();
    assert_ne!(out, other);
    assert!(m.privatize(&p[..7], rows, 4, &mut rng).is_err());
    assert!(m.privatize(&[f32::NAN, 1.0], 1, 2, &mut rng).is_err());
}

#[test]
fn noisy_argmax_flips_votes_at_the_expected_rate() {
    let cfg = PrivacyConfig {
        mode: PrivacyMode::NoisyArgmax,
        noise_multiplier: 1.0,
        delta: 1e-5,
        clip: 1.0,
        budget_epsilon: 100.0,
    };
    let m = SoftLabelMechanism::new(cfg);
    let rows = 4000;
    let p: Vec<f32> = (0..rows).flat_map(|_| [0.1f32, 0.6, 0.3]).collect();
    let out = m.privatize(&p, rows, 3, &mut ChaCha20Rng::seed_from_u64(8)).unwrap();
    validate_distributions(&out, rows, 3).unwrap();
    let kept = out.chunks_exact(3).filter(|r| r[1] == 1.0).count() as f64 / rows as f64;
    // Integer noise with variance ceil(2) = 2 on votes (0, 1, 0): the vote survives more often than
    // chance (1/3) and less than always.
    assert!(kept > 0.45 && kept < 0.9, "{kept}");
    assert!(m.rho_per_round(3) > 0.5 && m.rho_per_round(3) < 0.5001);
}

#[test]
fn teacher_settings_are_validated_and_costed() {
    let teacher = "[teacher]\nnoise_multiplier = 1.12\nclip = 1.0\nbatch = 256\n";
    let only: PrivacyToml = toml::from_str(&format!("delta = 1e-5\nbudget_epsilon = 8.0\n{teacher}")).unwrap();
    let s = only.validate_settings().unwrap().unwrap();
    assert!(s.labels.is_none() && s.teacher.is_some());
    assert_eq!(only.validate(), Ok(None));
    // TF Privacy's example (N = 60000, batch 256, sigma 1.12, 60 epochs): 2.92 with the old conversion,
    // below 2.53 with ours.
    let cost = s.teacher_cost(60_000, 60).unwrap().unwrap();
    assert_eq!(cost.steps, 14_063);
    assert!(cost.epsilon > 2.0 && cost.epsilon < 2.53, "{cost:?}");
    let tight = PrivacySettings {
        budget_epsilon: 1.0,
        ..s
    };
    let e = tight.teacher_cost(60_000, 60).unwrap_err().to_string();
    assert!(
        e.contains("costs epsilon 2.") && e.contains("more than budget_epsilon 1"),
        "{e}"
    );
    assert!(s
        .teacher_cost(100, 1)
        .unwrap_err()
        .to_string()
        .contains("exceeds the 100 private samples"));
    for (bad, needle) in [
        (
            "noise_multiplier = 0.0\nclip = 1.0\nbatch = 8",
            "noise_multiplier 0 must be",
        ),
        (
            "noise_multiplier = -1.0\nclip = 1.0\nbatch = 8",
            "noise_multiplier -1 must be",
        ),
        ("noise_multiplier = 1.0\nclip = 0.0\nbatch = 8", "clip 0 must be"),
        ("noise_multiplier = 1.0\nclip = 1.0\nbatch = 0", "batch must be >= 1"),
    ] {
        let t: PrivacyToml = toml::from_str(&format!("delta = 1e-5\nbudget_epsilon = 8.0\n[teacher]\n{bad}")).unwrap();
        let e = t.validate_settings().unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    assert!(toml::from_str::<PrivacyToml>(&format!("delta = 1e-5\nbudget_epsilon = 8.0\n{teacher}bogus = 1")).is_err());
}

#[test]
fn first_release_carries_the_teachers_spend() {
    let s = PrivacySettings {
        labels: None,
        teacher: Some(TeacherDp {
            noise_multiplier: 1.12,
            clip: 1.0,
            batch: 256,
        }),
        delta: 1e-5,
        budget_epsilon: 3.0,
    };
    let cost = s.teacher_cost(60_000, 60).unwrap();
    let mut st = ParticipantPrivacy::with_settings(&s, cost, 2, 0);
    assert_eq!(st.epsilon_spent(), 0.0);
    let p = [0.9f32, 0.1, 0.3, 0.7];
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let Ok(Release::Send { labels, spend }) = st.handle_round(1, &p, 2, 2, &mut rng) else {
        panic!("round 1")
    };
    // No label noise: the labels go out as computed (post-processing of the DP teacher).
    assert_eq!(labels, p.to_vec());
    let teacher_eps = cost.map(|c| c.epsilon).unwrap_or(0.0);
    assert!((spend.epsilon_round - teacher_eps).abs() < 1e-9 && spend.epsilon_total == spend.epsilon_round);
    let Ok(Release::Send { spend: second, .. }) = st.handle_round(2, &p, 2, 2, &mut rng) else {
        panic!("round 2")
    };
    assert!(second.epsilon_round.abs() < 1e-9);
    let names: Vec<String> = st.report_metrics(1).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "dp_delta",
            "dp_epsilon_round",
            "dp_epsilon_total",
            "dp_teacher_epsilon",
            "dp_teacher_noise_multiplier"
        ]
    );
    // With label noise too, the first round costs more than either part alone, and the budget counts
    // both: z = 2 rounds (2.17 each alone) on top of the teacher exceed 3 at the first round.
    let both = PrivacySettings {
        labels: Some(PrivacyConfig {
            mode: PrivacyMode::Soft,
            noise_multiplier: 2.0,
            delta: 1e-5,
            clip: 1.0,
            budget_epsilon: 3.0,
        }),
        ..s
    };
    let mut st2 = ParticipantPrivacy::with_settings(&both, cost, 2, 0);
    match st2.handle_round(1, &p, 2, 2, &mut rng) {
        Ok(Release::BudgetExhausted { would_reach, spent, .. }) => {
            assert!(
                would_reach > teacher_eps && would_reach > 2.17 && spent == 0.0,
                "{would_reach}"
            )
        }
        other => panic!("expected the budget to refuse: {other:?}"),
    }
}
