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

/// `n` copies of one row of the worked example's eight inputs, every target `target`.
fn same_row(n: usize, target: f32) -> Dataset {
    Dataset {
        name: "t".into(),
        features: [0.2f32, -0.4, 0.1, 0.3, -0.2, 0.5, 0.0, -0.1].repeat(n),
        labels: vec![0; n],
        n,
        dim: 8,
        num_classes: 1,
        kind: fedistill_shared::data::DataKind::Tabular,
        class_names: vec!["target".into()],
        targets: vec![target; n],
    }
}

/// Like the classifier, the regression learner's guard and its reported figures see the validation rows
/// and its test rows are measured for the final reports only. The validation and test rows are one input
/// under two targets: one at the card's mean (where the consensus, 0 standardized, puts the student within a
/// few deviations) and one a hundred deviations above it. Against a serving RMSE of fifty deviations the
/// guard accepts exactly when the near target is the validation one.
#[test]
fn the_regression_guard_and_reported_figures_use_the_validation_rows_not_the_test_rows() {
    let task = RegressionTask::from_card(&card())
        .expect("maps")
        .expect("a regression card");
    let spec = task.spec.clone();
    let near = spec.destandardize(0.0) as f32;
    let far = spec.destandardize(100.0) as f32;
    let serving = BTreeMap::from([("rmse".to_string(), 50.0 * spec.std)]);
    let public = Dataset {
        features: (0..64).map(|i| (i as f32 * 0.37).sin()).collect(),
        ..same_row(8, near)
    };
    let ids: Vec<u64> = (0..8).collect();
    let consensus = vec![0.0f32; 8];
    let cfg = ModelConfig::Mlp { hidden: vec![8] };
    for (validation_target, test_target, accepted) in [(near, far, true), (far, near, false)] {
        let dir = tempfile::tempdir().expect("tmp");
        let teacher = Model::new(&cfg, 8, 1, 5).expect("teacher");
        // As many rows as the guard needs to compare (fewer are accepted unjudged).
        let validation = same_row(fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS, validation_target);
        let local_only = metrics_of(&|x, n| predict(&teacher, x, n), &validation, &task, 0.5).expect("metrics");
        let mut learner = RegressionLearner {
            public: Arc::new(public.clone()),
            public_digest: Digest([1; 32]),
            public_labelled: false,
            test: Arc::new(same_row(fedistill_shared::ml::lifecycle::MIN_GUARD_ROWS, test_target)),
            validation: Arc::new(validation),
            shard: Arc::new(public.clone()),
            teacher,
            student: Model::new(&cfg, 8, 1, 6).expect("student"),
            task: task.clone(),
            student_fit: RegressionSettings::default().configs(6).expect("fits").1,
            guard: GuardConfig::new(vec!["rmse".into()], 0.05).expect("guard"),
            workdir: dir.path().to_path_buf(),
            local_only,
            absent: AbsentBlocks::default(),
        };
        let d = learner
            .distill(RoundId(2), &ids, &consensus, 3, AggregationRule::Mean, &serving)
            .expect("distilled");
        let (v, t) = (d.metrics["rmse"], d.test_metrics["rmse"]);
        let (small, large) = if accepted { (v, t) } else { (t, v) };
        assert!(
            small < 10.0 * spec.std && large > 90.0 * spec.std,
            "validation rmse {v}, test rmse {t}"
        );
        assert_eq!(d.accepted, accepted, "{}", d.guard_reason);
        assert_eq!(d.metrics["int8_rmse"] < 50.0 * spec.std, accepted);
        assert_eq!(d.test_metrics["int8_rmse"] < 50.0 * spec.std, !accepted);
    }
}
