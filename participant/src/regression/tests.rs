use super::*;

fn card() -> TaskCard {
    TaskCard::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/concrete-plants/task.toml"))
        .expect("the worked example's card")
}

#[test]
fn the_cards_constraints_land_on_the_model_inputs_with_standardized_bounds() {
    let task = RegressionTask::from_card(&card())
        .expect("maps")
        .expect("a regression card");
    // cement is input 0, water 3, age 7; increasing, increasing, decreasing in the card's order.
    assert_eq!(task.constraints.monotone, vec![(0, 1.0), (7, 1.0), (3, -1.0)]);
    let (lo, hi) = (task.constraints.min.expect("min"), task.constraints.max.expect("max"));
    assert!((task.spec.destandardize(lo) - 0.0).abs() < 1e-4, "{lo}");
    assert!((task.spec.destandardize(hi) - 120.0).abs() < 1e-3, "{hi}");
    let mut classes = card();
    classes.regression = None;
    classes.label.classes = vec!["weak".into(), "strong".into()];
    assert!(RegressionTask::from_card(&classes).expect("reads").is_none());
}

#[test]
fn regression_settings_parse_with_defaults_and_refuse_bad_values() {
    let s: RegressionSettings = toml::from_str("loss = \"mse\"\nconstraint_weight = 0.0\n").expect("parses");
    let (teacher, student) = s.configs(7).expect("valid");
    assert_eq!(teacher.loss, RegressionLoss::Mse);
    assert_eq!((teacher.constraint_weight, student.constraint_weight), (0.0, 0.0));
    assert_eq!((teacher.epochs, student.epochs), (150, 20));
    let (_, student) = RegressionSettings::default().configs(7).expect("defaults");
    assert_eq!(student.loss, RegressionLoss::Huber { delta: 1.0 });
    assert_eq!(student.constraint_weight, 1.0);
    for (text, want) in [
        ("loss = \"l1\"", "expected \"mse\" or \"huber\""),
        ("constraint_weight = -1.0", "constraint_weight"),
        ("huber_delta = 0.0", "huber delta"),
        ("epochs_per_round = 0", "epochs"),
        ("constraint_step = 0.0", "step"),
    ] {
        let s: RegressionSettings = toml::from_str(text).expect("parses");
        let e = s.configs(0).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    assert!(
        toml::from_str::<RegressionSettings>("weight = 1.0").is_err(),
        "unknown fields are refused"
    );
}

/// Settings with `extra` lines at the top level (`guard_metrics`, `guard_max_relative_drop`).
fn settings(extra: &str) -> ParticipantSettings {
    let text = format!(
        "kit = \"kit\"\nworkdir = \"work\"\nshard = 1\n{extra}\n[data]\ndataset = \"mnist-10k\"\nparticipants = 3\n"
    );
    ParticipantSettings::parse(&text, std::path::Path::new("/srv")).expect("settings")
}

/// A regression card's guard: the classification default becomes `rmse`, regression metrics are kept, a
/// classification-only metric is refused naming it and what to use, and a candidate whose RMSE is worse than
/// the tolerance is rejected.
#[test]
fn the_regression_guard_watches_rmse_by_default_and_refuses_classification_metrics() {
    let guard = regression_guard(&settings("")).expect("the default guard");
    assert_eq!(guard.metrics(), ["rmse"]);
    assert_eq!(guard.max_relative_drop(), 0.05);
    let chosen = regression_guard(&settings(
        "guard_metrics = [\"r2\", \"violation_rate\"]\nguard_max_relative_drop = 0.1",
    ))
    .expect("regression metrics");
    assert_eq!(chosen.metrics(), ["r2", "violation_rate"]);
    assert_eq!(chosen.max_relative_drop(), 0.1);
    for metrics in ["[\"accuracy\"]", "[\"rmse\", \"macro_f1\"]"] {
        let e = regression_guard(&settings(&format!("guard_metrics = {metrics}")))
            .expect_err(metrics)
            .to_string();
        assert!(
            e.contains("which a regression task does not measure")
                && e.contains("use r2, rmse, mae, violation_rate, bound_violation_rate"),
            "{metrics}: {e}"
        );
        assert!(e.contains("\"accuracy\"") || e.contains("\"macro_f1\""), "{e}");
    }
    // RMSE is lower-is-better: 5.0 serving, a candidate at 6.0 is 20% worse (rejected), 5.2 is 4% worse
    // (within 5%) and 4.0 better (both accepted).
    let serving = BTreeMap::from([("rmse".to_string(), 5.0)]);
    let candidate = |rmse: f64| BTreeMap::from([("rmse".to_string(), rmse), ("r2".to_string(), 0.9)]);
    let worse = guard.decide(&serving, &candidate(6.0));
    assert!(!worse.accepted && worse.reason.contains("rmse"), "{worse:?}");
    assert!(guard.decide(&serving, &candidate(5.2)).accepted);
    assert!(guard.decide(&serving, &candidate(4.0)).accepted);
    // A candidate without a finite RMSE fails closed.
    assert!(!guard.decide(&serving, &candidate(f64::NAN)).accepted);
}
